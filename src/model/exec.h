// exec.h — where the model's passes run. src/model/forward.cpp writes the model's forward and backward
// ONCE against this interface. The ops run on the executor's dsa::Backend (ops(): the CPU backend on
// host memory for exec_cpu.cpp, a CUDA backend on device memory for exec_cuda.cu, built with the CUDA
// backend); the executor adds the memory, the parameter mirrors and the glue — the few loops the model
// writes inline (residual adds, strided copies, the window baseline's indices).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "dsa/backend.h"
#include "model/impl.h"

namespace dsa::model {

// n elements of the executor's memory (host or device), zero-filled at creation. Copies share the
// storage (clone() makes a deep copy); the storage lives until the last copy goes.
template <class T>
class Buf {
 public:
  Buf() = default;
  Buf(std::shared_ptr<T> p, int64_t n) : p_(std::move(p)), n_(n) {}
  T* data() const { return p_.get(); }
  int64_t size() const { return n_; }
  const std::shared_ptr<T>& storage() const { return p_; }

 private:
  std::shared_ptr<T> p_;
  int64_t n_ = 0;
};
using FBuf = Buf<float>;
using IBuf = Buf<int32_t>;

class Exec {
 public:
  virtual ~Exec() = default;
  virtual bool host_memory() const = 0;   // pointers are host pointers (the CPU executor)

  // ── a pass: begin_run makes the model's parameters current in this executor's memory (and zeroes
  // its gradients when `grads` is given); end_run waits for the pass and copies the gradients into
  // `grads` (when given) ──
  virtual void begin_run(const Model::Impl& m, std::vector<Tensor>* grads) = 0;
  virtual void end_run(std::vector<Tensor>* grads) = 0;
  virtual const float* param(int i) const = 0;
  virtual float* grad(int i) = 0;
  virtual const float* inv_freq() const = 0;

  // ── memory ──
  virtual FBuf zeros(int64_t n) = 0;
  virtual IBuf upload(const std::vector<int32_t>& v) = 0;
  virtual FBuf upload(const std::vector<float>& v) = 0;
  virtual std::vector<float> download(const FBuf& b) = 0;
  virtual std::vector<int32_t> download(const IBuf& b) = 0;
  FBuf clone(const FBuf& b) {
    FBuf c = zeros(b.size());
    copy(c.data(), b.data(), b.size());
    return c;
  }
  // n zero-filled int32 values / bytes of the same memory (a float buffer viewed as another type).
  IBuf izeros(int64_t n) { return view<int32_t>(zeros(n), n); }
  Buf<uint8_t> bytes(int64_t n) { return view<uint8_t>(zeros((n + 3) / 4), n); }
  // Byte copies: host → executor memory (the host bytes must stay unchanged until the next
  // download_bytes or end_run, which wait for the copies queued before them), executor → executor,
  // and executor → host (returns when the bytes are on the host).
  virtual void upload_bytes(void* dst, const void* host, int64_t n) = 0;
  virtual void copy_bytes(void* dst, const void* src, int64_t n) = 0;
  virtual void download_bytes(void* host, const void* src, int64_t n) = 0;
  // y[i] = bf16 bits of x[i], round to nearest even (cpu::bf16_from_float)
  virtual void to_bf16(const float* x, uint16_t* y, int64_t n) = 0;
  // x[i] = the fp32 value of x[i]'s bf16 rounding (round to nearest even): a bf16 tensor held in fp32
  virtual void round_bf16(float* x, int64_t n) = 0;
  // The first n logical positions of a paged FP8 indexer cache (IndexerCacheParams page layout, pages
  // block_table[0 …]) as contiguous keys: k_fp8 [n, 128] and k_scale [n] (what the contiguous-key
  // FP8 indexer ops take).
  virtual void gather_indexer_keys(const uint8_t* cache, const int32_t* block_table, int64_t n, uint8_t* k_fp8,
                                   float* k_scale) = 0;
  // Throws dsa::Error naming `what`, the bytes needed and the bytes available when `more` bytes on
  // top of the `held` bytes a caller already has would not fit this executor's memory (host:
  // check_memory(held + more); a GPU: `more` against its free device memory and pooled free blocks).
  virtual void check_fits(int64_t held, int64_t more, const std::string& what) = 0;
  virtual std::string device_name() const = 0;   // "cpu", "cuda:0 (NVIDIA H100 …)"
  // Bytes begin_run will allocate for m's parameters in this executor's memory (0 on the host: it
  // uses the model's own tensors).
  virtual int64_t param_mirror_bytes(const Model::Impl& m) const = 0;

  // ── glue ──
  virtual void copy(float* dst, const float* src, int64_t n) = 0;  // dst[i] = src[i]
  virtual void add(float* y, const float* x, int64_t n) = 0;       // y[i] += x[i]
  virtual void scale(float* x, float a, int64_t n) = 0;            // x[i] *= a
  // dst[r·ldd + j] = src[r·lds + j] for r < rows, j < width
  virtual void copy_cols(float* dst, int64_t ldd, const float* src, int64_t lds, int64_t rows, int width) = 0;
  // the sliding-window baseline: idx[t, j] = ke[t]−1−j while ≥ ks[t] (newest first), else −1
  virtual void window_indices(const int32_t* ks, const int32_t* ke, int64_t T, int K, int32_t* idx) = 0;
  // out[t, j] = logits[t, idx[t, j]] (−inf for −1): the indexer logits of the selected set
  virtual void gather_selected(const float* logits, int64_t S, const int32_t* idx, int64_t T, int K, float* out) = 0;
  virtual double sum(const float* x, int64_t n) = 0;               // fp64, in index order

  // ── matmuls: gemm as blas::sgemm (row-major, beta), mm_xwt / mm_xw as in impl.h ──
  virtual void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
                    int64_t ldb, float beta, float* C, int64_t ldc) = 0;
  virtual void mm_xwt(int64_t N, int I, int O, const float* x, int64_t ldx, const float* W, int64_t ldw, float* y,
                      int64_t ldy) = 0;
  virtual void mm_xw(int64_t N, int I, int O, const float* x, int64_t ldx, const float* W, int64_t ldw, float* y,
                     int64_t ldy) = 0;

  // ── the ops of dsa/backend.h, on this executor's memory ──
  virtual Backend& ops() = 0;

 protected:
  // n elements of type T over the storage of a float buffer (shared ownership)
  template <class T>
  static Buf<T> view(const FBuf& f, int64_t n) {
    return Buf<T>(std::shared_ptr<T>(f.storage(), reinterpret_cast<T*>(f.data())), n);
  }
};

// Host buffers of CPU passes: freed ones come back here and are handed out again by size. A training
// step allocates the same few hundred buffers every pass, and fresh memory from the OS costs a page
// fault and a zeroed page per 4 KB (measured: 15 % of a demo pretraining step); reused memory costs one
// memset. A model's passes share one pool (Model::Impl::host_pool). With passes of one shape (training)
// it holds the buffers of one pass; passes of many shapes would keep a set per shape, so at most
// max_bytes are kept and a buffer freed beyond that goes back to the OS. Thread-safe.
class HostPool {
 public:
  static constexpr size_t kDefaultMaxBytes = size_t{1} << 30;
  explicit HostPool(size_t max_bytes = kDefaultMaxBytes) : max_bytes_(max_bytes) {}
  HostPool(const HostPool&) = delete;
  HostPool& operator=(const HostPool&) = delete;
  ~HostPool();
  // len zero-filled floats; the buffer returns to `pool` when its last copy goes
  static std::shared_ptr<float> take(const std::shared_ptr<HostPool>& pool, size_t len);
  size_t pooled_bytes() const;

 private:
  void give_back(size_t len, float* p) noexcept;
  const size_t max_bytes_;
  mutable std::mutex mu_;
  std::multimap<size_t, float*> free_;
  size_t bytes_ = 0;   // Σ len·sizeof(float) over free_
};

// The CPU executor over the model's host tensors. exact = true runs the projections' matmuls with
// mm_xwt/mm_xw's row-invariant order (the Session); false uses BLAS (training, evaluation). Buffers
// come from `pool` (a new one when null).
std::unique_ptr<Exec> make_cpu_exec(bool exact, std::shared_ptr<HostPool> pool = nullptr);

}  // namespace dsa::model
