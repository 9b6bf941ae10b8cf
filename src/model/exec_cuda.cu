// exec_cuda.cu — the GPU executor of the model's passes (src/model/exec.h): the ops run on a CUDA
// backend (dsa::cuda::make_backend) on this executor's stream, the glue is four small kernels and
// cudaMemcpy2DAsync. Memory comes from the device's stream-ordered pool (cudaMallocAsync), kept
// cached between passes, so a training step allocates nothing from the driver after the first.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cuda/common.cuh"
#include "dsa/cuda_ops.h"
#include "dsa/model_cuda.h"
#include "model/exec.h"

namespace dsa::cuda {
namespace {

constexpr int kGlueThreads = 256;

__global__ void add_kernel(float* __restrict__ y, const float* __restrict__ x, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    y[i] += x[i];
}

__global__ void scale_kernel(float* __restrict__ x, float a, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    x[i] *= a;
}

__global__ void window_kernel(const int32_t* __restrict__ ks, const int32_t* __restrict__ ke, int64_t T, int K,
                              int32_t* __restrict__ idx) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < T * K;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = i / K;
    const int j = static_cast<int>(i % K);
    const int32_t s = ke[t] - 1 - j;
    idx[i] = s >= ks[t] ? s : kInvalidIndex;
  }
}

__global__ void gather_kernel(const float* __restrict__ logits, int64_t S, const int32_t* __restrict__ idx, int64_t T,
                              int K, float* __restrict__ out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < T * K;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int32_t s = idx[i];
    out[i] = s >= 0 && s < S ? logits[(i / K) * S + s] : -INFINITY;
  }
}

__global__ void to_bf16_kernel(const float* __restrict__ x, uint16_t* __restrict__ y, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    y[i] = __bfloat16_as_ushort(__float2bfloat16_rn(x[i]));
}

__global__ void round_bf16_kernel(float* __restrict__ x, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    x[i] = __bfloat162float(__float2bfloat16_rn(x[i]));
}

// One thread per 16-byte piece of a key (8 per key) plus one per scale: token i of the logical order
// lives at slot i % 64 of page block_table[i / 64].
constexpr int kKeyPieces = kIndexerKeyDim / 16;
__global__ void gather_indexer_keys_kernel(const uint8_t* __restrict__ cache, const int32_t* __restrict__ table, int64_t n,
                                           uint8_t* __restrict__ k_fp8, float* __restrict__ k_scale) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n * (kKeyPieces + 1);
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = i / (kKeyPieces + 1);
    const int piece = static_cast<int>(i % (kKeyPieces + 1));
    const uint8_t* page = cache + static_cast<int64_t>(table[t / kCachePageTokens]) * kIndexerPageBytes;
    const int64_t off = t % kCachePageTokens;
    if (piece < kKeyPieces)
      reinterpret_cast<uint4*>(k_fp8 + t * kIndexerKeyDim)[piece] =
          reinterpret_cast<const uint4*>(page + off * kIndexerKeyDim)[piece];
    else
      k_scale[t] = reinterpret_cast<const float*>(page + kIndexerPageScaleOffset)[off];
  }
}

// y [rows, cols] (contiguous) = bf16 of x [rows, cols] with row stride ldx.
__global__ void rows_to_bf16_kernel(const float* __restrict__ x, int64_t ldx, int64_t rows, int cols, uint16_t* __restrict__ y) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < rows * cols;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    y[i] = __bfloat16_as_ushort(__float2bfloat16_rn(x[(i / cols) * ldx + i % cols]));
}

// Grid of a grid-stride loop over n elements (capped: the loops stride).
int glue_blocks(int64_t n) {
  constexpr int64_t kMaxBlocks = 4096;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(kMaxBlocks, (n + kGlueThreads - 1) / kGlueThreads)));
}

class CudaExec final : public model::Exec {
 public:
  // `what` names the caller in errors ("attach_model", "open_session"). bf16_weights: the matmuls of
  // mm_xwt / mm_xw read bf16 copies of the matrix parameters (made at the first pass) through cuBLAS's
  // bf16 GEMM; the fp32 mirror stays for everything else (norms, embeddings, gemm, the gradients).
  CudaExec(int device, const char* what, bool bf16_weights = false) : device_(device), bf16_weights_(bf16_weights) {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess) {
      cudaGetLastError();
      count = 0;
    }
    if (device < 0 || device >= count)
      throw Error(std::string(what) + ": CUDA device " + std::to_string(device) + " does not exist (" + std::to_string(count) +
                  " CUDA device(s) visible)");
    select();
    DSA_CUDA_CALL(what, cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    backend_ = make_backend(stream_);
    // Keep freed blocks in the pool between passes instead of returning them at every sync.
    DSA_CUDA_CALL(what, cudaDeviceGetDefaultMemPool(&pool_, device));
    uint64_t keep = std::numeric_limits<uint64_t>::max();
    DSA_CUDA_CALL(what, cudaMemPoolSetAttribute(pool_, cudaMemPoolAttrReleaseThreshold, &keep));
    cudaDeviceProp prop{};
    DSA_CUDA_CALL(what, cudaGetDeviceProperties(&prop, device));
    name_ = "cuda:" + std::to_string(device) + " (" + prop.name + ")";
  }
  ~CudaExec() override {
    params_.clear();
    grads_.clear();
    inv_freq_ = model::FBuf();
    backend_.reset();
    cudaStreamSynchronize(stream_);
    cudaStreamDestroy(stream_);
  }
  bool host_memory() const override { return false; }

  void begin_run(const model::Model::Impl& m, std::vector<model::Tensor>* grads) override {
    select();
    const bool first = params_.empty();
    if (first) {   // the first pass sizes the mirrors: parameters, RoPE table
      for (const model::Tensor& t : m.params) params_.push_back(zeros(t.numel()));
      inv_freq_ = upload(m.inv_freq);
    }
    if (grads && grads_.empty())   // gradients only once a pass asks for them (a Session never does)
      for (const model::Tensor& t : m.params) grads_.push_back(zeros(t.numel()));
    if (m.params.size() != params_.size()) throw Error("model exec: the model's parameter list changed since its first pass");
    for (size_t i = 0; i < params_.size(); ++i) {
      if (m.params[i].numel() != params_[i].size())
        throw Error("model exec: parameter " + m.params[i].name + " changed size since its first pass");
      DSA_CUDA_CALL("model exec", cudaMemcpyAsync(params_[i].data(), m.params[i].data.data(), sizeof(float) * params_[i].size(),
                                                  cudaMemcpyHostToDevice, stream_));
      if (grads)
        DSA_CUDA_CALL("model exec", cudaMemsetAsync(grads_[i].data(), 0, sizeof(float) * grads_[i].size(), stream_));
    }
    want_grads_ = grads != nullptr;
    if (bf16_weights_) {   // bf16 copies of the matrices, from the fp32 mirror just uploaded
      if (first)
        for (size_t i = 0; i < params_.size(); ++i)
          if (m.params[i].shape.size() == 2) {
            const int64_t n = params_[i].size();
            matrices_[params_[i].data()] = Bf16Matrix{n, view<uint16_t>(zeros((n + 1) / 2), n).storage()};
          }
      for (auto& [p, mat] : matrices_) to_bf16(p, mat.bf16.get(), mat.n);
    }
  }
  void end_run(std::vector<model::Tensor>* grads) override {
    if (grads)
      for (size_t i = 0; i < grads_.size(); ++i)
        DSA_CUDA_CALL("model exec", cudaMemcpyAsync((*grads)[i].data.data(), grads_[i].data(), sizeof(float) * grads_[i].size(),
                                                    cudaMemcpyDeviceToHost, stream_));
    sync();
  }
  const float* param(int i) const override { return params_[static_cast<size_t>(i)].data(); }
  float* grad(int i) override {
    if (!want_grads_) throw Error("model: a gradient was asked for in a forward-only pass");
    return grads_[static_cast<size_t>(i)].data();
  }
  const float* inv_freq() const override { return inv_freq_.data(); }

  model::FBuf zeros(int64_t n) override { return model::FBuf(alloc<float>(n), n); }
  model::IBuf upload(const std::vector<int32_t>& v) override {
    model::IBuf b(alloc<int32_t>(static_cast<int64_t>(v.size())), static_cast<int64_t>(v.size()));
    DSA_CUDA_CALL("model exec", cudaMemcpyAsync(b.data(), v.data(), sizeof(int32_t) * v.size(), cudaMemcpyHostToDevice, stream_));
    return b;
  }
  model::FBuf upload(const std::vector<float>& v) override {
    model::FBuf b = zeros(static_cast<int64_t>(v.size()));
    DSA_CUDA_CALL("model exec", cudaMemcpyAsync(b.data(), v.data(), sizeof(float) * v.size(), cudaMemcpyHostToDevice, stream_));
    return b;
  }
  std::vector<float> download(const model::FBuf& b) override {
    std::vector<float> v(static_cast<size_t>(b.size()));
    DSA_CUDA_CALL("model exec", cudaMemcpyAsync(v.data(), b.data(), sizeof(float) * v.size(), cudaMemcpyDeviceToHost, stream_));
    sync();
    return v;
  }
  std::vector<int32_t> download(const model::IBuf& b) override {
    std::vector<int32_t> v(static_cast<size_t>(b.size()));
    DSA_CUDA_CALL("model exec", cudaMemcpyAsync(v.data(), b.data(), sizeof(int32_t) * v.size(), cudaMemcpyDeviceToHost, stream_));
    sync();
    return v;
  }

  void upload_bytes(void* dst, const void* host, int64_t n) override {
    if (n > 0) DSA_CUDA_CALL("model exec", cudaMemcpyAsync(dst, host, static_cast<size_t>(n), cudaMemcpyHostToDevice, stream_));
  }
  void copy_bytes(void* dst, const void* src, int64_t n) override {
    if (n > 0) DSA_CUDA_CALL("model exec", cudaMemcpyAsync(dst, src, static_cast<size_t>(n), cudaMemcpyDeviceToDevice, stream_));
  }
  void download_bytes(void* host, const void* src, int64_t n) override {
    if (n > 0) DSA_CUDA_CALL("model exec", cudaMemcpyAsync(host, src, static_cast<size_t>(n), cudaMemcpyDeviceToHost, stream_));
    sync();
  }
  void to_bf16(const float* x, uint16_t* y, int64_t n) override {
    if (n <= 0) return;
    to_bf16_kernel<<<glue_blocks(n), kGlueThreads, 0, stream_>>>(x, y, n);
    DSA_CUDA_LAUNCH_CHECK("model exec to_bf16");
  }
  void round_bf16(float* x, int64_t n) override {
    if (n <= 0) return;
    round_bf16_kernel<<<glue_blocks(n), kGlueThreads, 0, stream_>>>(x, n);
    DSA_CUDA_LAUNCH_CHECK("model exec round_bf16");
  }
  void gather_indexer_keys(const uint8_t* cache, const int32_t* block_table, int64_t n, uint8_t* k_fp8,
                           float* k_scale) override {
    if (n <= 0) return;
    gather_indexer_keys_kernel<<<glue_blocks(n * (kKeyPieces + 1)), kGlueThreads, 0, stream_>>>(cache, block_table, n, k_fp8,
                                                                                                   k_scale);
    DSA_CUDA_LAUNCH_CHECK("model exec gather_indexer_keys");
  }
  // Free device memory plus the blocks the stream-ordered pool holds unused.
  void check_fits(int64_t held, int64_t more, const std::string& what) override {
    (void)held;   // the device's own accounting already counts what is held
    select();
    size_t free_bytes = 0, total = 0;
    DSA_CUDA_CALL("model exec", cudaMemGetInfo(&free_bytes, &total));
    uint64_t reserved = 0, used = 0;
    DSA_CUDA_CALL("model exec", cudaMemPoolGetAttribute(pool_, cudaMemPoolAttrReservedMemCurrent, &reserved));
    DSA_CUDA_CALL("model exec", cudaMemPoolGetAttribute(pool_, cudaMemPoolAttrUsedMemCurrent, &used));
    const int64_t avail = static_cast<int64_t>(free_bytes) + static_cast<int64_t>(reserved - std::min(reserved, used));
    if (more > avail) {
      constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
      char buf[160];
      std::snprintf(buf, sizeof buf, ": %lld bytes (%.2f GiB) needed, more than the %lld bytes (%.2f GiB) free on ",
                    static_cast<long long>(more), more / kGiB, static_cast<long long>(avail), avail / kGiB);
      throw Error(what + buf + name_);
    }
  }
  std::string device_name() const override { return name_; }
  int64_t param_mirror_bytes(const model::Model::Impl& m) const override {
    int64_t bytes = static_cast<int64_t>(m.inv_freq.size()) * 4;
    for (const model::Tensor& t : m.params) bytes += t.numel() * (4 + (bf16_weights_ && t.shape.size() == 2 ? 2 : 0));
    return bytes;
  }

  void copy(float* dst, const float* src, int64_t n) override {
    DSA_CUDA_CALL("model exec", cudaMemcpyAsync(dst, src, sizeof(float) * static_cast<size_t>(n), cudaMemcpyDeviceToDevice, stream_));
  }
  void add(float* y, const float* x, int64_t n) override {
    add_kernel<<<glue_blocks(n), kGlueThreads, 0, stream_>>>(y, x, n);
    DSA_CUDA_LAUNCH_CHECK("model exec add");
  }
  void scale(float* x, float a, int64_t n) override {
    scale_kernel<<<glue_blocks(n), kGlueThreads, 0, stream_>>>(x, a, n);
    DSA_CUDA_LAUNCH_CHECK("model exec scale");
  }
  void copy_cols(float* dst, int64_t ldd, const float* src, int64_t lds, int64_t rows, int width) override {
    if (rows <= 0 || width <= 0) return;
    DSA_CUDA_CALL("model exec", cudaMemcpy2DAsync(dst, sizeof(float) * ldd, src, sizeof(float) * lds, sizeof(float) * width,
                                                  static_cast<size_t>(rows), cudaMemcpyDeviceToDevice, stream_));
  }
  void window_indices(const int32_t* ks, const int32_t* ke, int64_t T, int K, int32_t* idx) override {
    window_kernel<<<glue_blocks(T * K), kGlueThreads, 0, stream_>>>(ks, ke, T, K, idx);
    DSA_CUDA_LAUNCH_CHECK("model exec window_indices");
  }
  void gather_selected(const float* logits, int64_t S, const int32_t* idx, int64_t T, int K, float* out) override {
    gather_kernel<<<glue_blocks(T * K), kGlueThreads, 0, stream_>>>(logits, S, idx, T, K, out);
    DSA_CUDA_LAUNCH_CHECK("model exec gather_selected");
  }
  double sum(const float* x, int64_t n) override {
    std::vector<float> v(static_cast<size_t>(n));
    DSA_CUDA_CALL("model exec", cudaMemcpyAsync(v.data(), x, sizeof(float) * v.size(), cudaMemcpyDeviceToHost, stream_));
    sync();
    double s = 0.0;
    for (const float f : v) s += f;
    return s;
  }

  void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb,
            float beta, float* C, int64_t ldc) override {
    cuda::gemm(ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc, stream_);
  }
  void mm_xwt(int64_t N, int I, int O, const float* x, int64_t ldx, const float* W, int64_t ldw, float* y,
              int64_t ldy) override {
    if (N <= 0) return;
    if (const uint16_t* wb = bf16_of(W)) {
      cuda::gemm_bf16(false, true, N, O, I, x_bf16(x, ldx, N, I), I, wb, ldw, 0.0f, y, ldy, stream_);
      return;
    }
    cuda::gemm(false, true, N, O, I, x, ldx, W, ldw, 0.0f, y, ldy, stream_);
  }
  void mm_xw(int64_t N, int I, int O, const float* x, int64_t ldx, const float* W, int64_t ldw, float* y,
             int64_t ldy) override {
    if (N <= 0) return;
    if (const uint16_t* wb = bf16_of(W)) {
      cuda::gemm_bf16(false, false, N, O, I, x_bf16(x, ldx, N, I), I, wb, ldw, 0.0f, y, ldy, stream_);
      return;
    }
    cuda::gemm(false, false, N, O, I, x, ldx, W, ldw, 0.0f, y, ldy, stream_);
  }

  Backend& ops() override { return *backend_; }

 private:
  void select() const { DSA_CUDA_CALL("model exec", cudaSetDevice(device_)); }
  void sync() const { DSA_CUDA_CALL("model exec", cudaStreamSynchronize(stream_)); }

  // n zero-filled elements from the stream-ordered pool, freed on the same stream (so a buffer is
  // reused only by work queued after everything that used it).
  template <class T>
  std::shared_ptr<T> alloc(int64_t n) {
    const size_t bytes = sizeof(T) * static_cast<size_t>(std::max<int64_t>(n, 1));
    void* p = nullptr;
    DSA_CUDA_CALL("model exec", cudaMallocAsync(&p, bytes, stream_));
    DSA_CUDA_CALL("model exec", cudaMemsetAsync(p, 0, bytes, stream_));
    cudaStream_t s = stream_;
    return std::shared_ptr<T>(static_cast<T*>(p), [s](T* q) { cudaFreeAsync(q, s); });
  }

  // The bf16 copy of the matrix parameter W points into (W may point inside it: a head's block of
  // kv_b), or null when W is not inside a matrix parameter or the weights are fp32.
  const uint16_t* bf16_of(const float* W) const {
    if (matrices_.empty()) return nullptr;
    auto it = matrices_.upper_bound(W);
    if (it == matrices_.begin()) return nullptr;
    --it;
    const int64_t off = W - it->first;
    return off < it->second.n ? it->second.bf16.get() + off : nullptr;
  }
  // x [N, I] (row stride ldx) in bf16, in a scratch buffer reused by every matmul (stream-ordered).
  const uint16_t* x_bf16(const float* x, int64_t ldx, int64_t N, int I) {
    const int64_t n = N * I;
    if (x_scratch_n_ < n) {
      x_scratch_ = view<uint16_t>(zeros((n + 1) / 2), n).storage();
      x_scratch_n_ = n;
    }
    rows_to_bf16_kernel<<<glue_blocks(n), kGlueThreads, 0, stream_>>>(x, ldx, N, I, x_scratch_.get());
    DSA_CUDA_LAUNCH_CHECK("model exec x_bf16");
    return x_scratch_.get();
  }

  struct Bf16Matrix {
    int64_t n = 0;
    std::shared_ptr<uint16_t> bf16;
  };
  int device_;
  bool bf16_weights_ = false;
  std::map<const float*, Bf16Matrix> matrices_;   // by the fp32 mirror's address
  std::shared_ptr<uint16_t> x_scratch_;
  int64_t x_scratch_n_ = 0;
  std::string name_;
  cudaMemPool_t pool_ = nullptr;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<Backend> backend_;
  bool want_grads_ = false;
  std::vector<model::FBuf> params_, grads_;
  model::FBuf inv_freq_;
};

}  // namespace

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();   // clear the sticky "no device" so later calls start clean
    return 0;
  }
  return n;
}

void attach_model(model::Model& m, int device) { m.set_exec(std::make_shared<CudaExec>(device, "attach_model")); }

std::unique_ptr<model::Session> open_session(const model::Model& m, const model::SessionOptions& options, int device,
                                             DType weights) {
  return std::make_unique<model::Session>(m, options, std::make_shared<CudaExec>(device, "open_session", weights == DType::kBF16));
}

std::unique_ptr<model::BatchSession> open_batch_session(const model::Model& m, const model::SessionOptions& options,
                                                        int device, DType weights) {
  return std::make_unique<model::BatchSession>(m, options,
                                               std::make_shared<CudaExec>(device, "open_batch_session", weights == DType::kBF16));
}

}  // namespace dsa::cuda
