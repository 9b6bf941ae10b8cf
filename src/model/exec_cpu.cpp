// exec_cpu.cpp — the CPU executor: the model's tensors in place, every op the dsa::cpu op (the
// specification), the glue as plain loops.
#include <cmath>
#include <cstring>
#include <limits>

#include "common/blas.h"
#include "model/exec.h"

namespace dsa::model {
namespace {

class CpuExec final : public Exec {
 public:
  CpuExec(bool exact, std::shared_ptr<HostPool> pool) : exact_(exact), pool_(std::move(pool)) {}
  bool host_memory() const override { return true; }

  void begin_run(const Model::Impl& m, std::vector<Tensor>* grads) override {
    m_ = &m;
    grads_ = grads;
  }
  void end_run(std::vector<Tensor>*) override {}
  const float* param(int i) const override { return m_->P(i); }
  float* grad(int i) override {
    if (!grads_) throw Error("model: a gradient was asked for in a forward-only pass");
    return (*grads_)[static_cast<size_t>(i)].data.data();
  }
  const float* inv_freq() const override { return m_->inv_freq.data(); }

  FBuf zeros(int64_t n) override {
    return FBuf(HostPool::take(pool_, static_cast<size_t>(std::max<int64_t>(n, 1))), n);
  }
  IBuf upload(const std::vector<int32_t>& v) override {
    IBuf b(std::shared_ptr<int32_t>(new int32_t[std::max<size_t>(v.size(), 1)](), std::default_delete<int32_t[]>()),
           static_cast<int64_t>(v.size()));
    std::memcpy(b.data(), v.data(), sizeof(int32_t) * v.size());
    return b;
  }
  FBuf upload(const std::vector<float>& v) override {
    FBuf b = zeros(static_cast<int64_t>(v.size()));
    std::memcpy(b.data(), v.data(), sizeof(float) * v.size());
    return b;
  }
  std::vector<float> download(const FBuf& b) override { return std::vector<float>(b.data(), b.data() + b.size()); }
  std::vector<int32_t> download(const IBuf& b) override { return std::vector<int32_t>(b.data(), b.data() + b.size()); }

  void upload_bytes(void* dst, const void* host, int64_t n) override { std::memcpy(dst, host, static_cast<size_t>(n)); }
  void copy_bytes(void* dst, const void* src, int64_t n) override { std::memcpy(dst, src, static_cast<size_t>(n)); }
  void download_bytes(void* host, const void* src, int64_t n) override { std::memcpy(host, src, static_cast<size_t>(n)); }
  void to_bf16(const float* x, uint16_t* y, int64_t n) override {
    for (int64_t i = 0; i < n; ++i) y[i] = cpu::bf16_from_float(x[i]);
  }
  void round_bf16(float* x, int64_t n) override {
    for (int64_t i = 0; i < n; ++i) x[i] = cpu::bf16_to_float(cpu::bf16_from_float(x[i]));
  }
  void gather_indexer_keys(const uint8_t* cache, const int32_t* block_table, int64_t n, uint8_t* k_fp8,
                           float* k_scale) override {
    for (int64_t i = 0; i < n; ++i) {
      const uint8_t* page = cache + static_cast<int64_t>(block_table[i / kCachePageTokens]) * kIndexerPageBytes;
      const int64_t off = i % kCachePageTokens;
      std::memcpy(k_fp8 + i * kIndexerKeyDim, page + off * kIndexerKeyDim, kIndexerKeyDim);
      std::memcpy(k_scale + i, page + kIndexerPageScaleOffset + off * sizeof(float), sizeof(float));
    }
  }
  void check_fits(int64_t held, int64_t more, const std::string& what) override { check_memory(held + more, what); }
  std::string device_name() const override { return "cpu"; }
  int64_t param_mirror_bytes(const Model::Impl&) const override { return 0; }

  void copy(float* dst, const float* src, int64_t n) override { std::memcpy(dst, src, sizeof(float) * static_cast<size_t>(n)); }
  void add(float* y, const float* x, int64_t n) override {
    for (int64_t i = 0; i < n; ++i) y[i] += x[i];
  }
  void scale(float* x, float a, int64_t n) override {
    for (int64_t i = 0; i < n; ++i) x[i] *= a;
  }
  void copy_cols(float* dst, int64_t ldd, const float* src, int64_t lds, int64_t rows, int width) override {
    for (int64_t r = 0; r < rows; ++r) std::memcpy(dst + r * ldd, src + r * lds, sizeof(float) * static_cast<size_t>(width));
  }
  void window_indices(const int32_t* ks, const int32_t* ke, int64_t T, int K, int32_t* idx) override {
    for (int64_t t = 0; t < T; ++t)
      for (int j = 0; j < K; ++j) idx[t * K + j] = ke[t] - 1 - j >= ks[t] ? ke[t] - 1 - j : kInvalidIndex;
  }
  void gather_selected(const float* logits, int64_t S, const int32_t* idx, int64_t T, int K, float* out) override {
    for (int64_t t = 0; t < T; ++t)
      for (int j = 0; j < K; ++j) {
        const int32_t s = idx[t * K + j];
        out[t * K + j] = s >= 0 ? logits[t * S + s] : -std::numeric_limits<float>::infinity();
      }
  }
  double sum(const float* x, int64_t n) override {
    double s = 0.0;
    for (int64_t i = 0; i < n; ++i) s += x[i];
    return s;
  }

  void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb,
            float beta, float* C, int64_t ldc) override {
    blas::sgemm(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
  }
  void mm_xwt(int64_t N, int I, int O, const float* x, int64_t ldx, const float* W, int64_t ldw, float* y,
              int64_t ldy) override {
    model::mm_xwt(exact_, N, I, O, x, ldx, W, ldw, y, ldy);
  }
  void mm_xw(int64_t N, int I, int O, const float* x, int64_t ldx, const float* W, int64_t ldw, float* y,
             int64_t ldy) override {
    model::mm_xw(exact_, N, I, O, x, ldx, W, ldw, y, ldy);
  }

  Backend& ops() override { return cpu_backend(); }

 private:
  bool exact_;
  std::shared_ptr<HostPool> pool_;
  const Model::Impl* m_ = nullptr;
  std::vector<Tensor>* grads_ = nullptr;
};

}  // namespace

std::unique_ptr<Exec> make_cpu_exec(bool exact, std::shared_ptr<HostPool> pool) {
  if (!pool) pool = std::make_shared<HostPool>();
  return std::make_unique<CpuExec>(exact, std::move(pool));
}

HostPool::~HostPool() {
  for (auto& [len, p] : free_) ::operator delete[](p);
}

std::shared_ptr<float> HostPool::take(const std::shared_ptr<HostPool>& pool, size_t len) {
  float* p = nullptr;
  {
    std::lock_guard<std::mutex> lock(pool->mu_);
    const auto it = pool->free_.find(len);
    if (it != pool->free_.end()) {
      p = it->second;
      pool->free_.erase(it);
      pool->bytes_ -= len * sizeof(float);
    }
  }
  if (!p) p = static_cast<float*>(::operator new[](len * sizeof(float)));
  std::memset(p, 0, len * sizeof(float));
  return std::shared_ptr<float>(p, [pool, len](float* q) { pool->give_back(len, q); });
}

// Runs inside a shared_ptr deleter, so it must not throw: a free-list node that cannot be allocated
// means the block goes back to the OS instead.
void HostPool::give_back(size_t len, float* p) noexcept {
  try {
    std::lock_guard<std::mutex> lock(mu_);
    if (bytes_ + len * sizeof(float) <= max_bytes_) {
      free_.emplace(len, p);
      bytes_ += len * sizeof(float);
      return;
    }
  } catch (...) {
  }
  ::operator delete[](p);
}

size_t HostPool::pooled_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return bytes_;
}

}  // namespace dsa::model
