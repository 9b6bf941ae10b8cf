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

  void linear_forward(const float* x, const float* w, float* y, int64_t N, int I, int O) override {
    cpu::linear_forward(x, w, y, N, I, O);
  }
  void linear_backward(const float* x, const float* w, const float* dy, float* dx, float* dw, int64_t N, int I, int O,
                       bool accumulate_dx) override {
    cpu::linear_backward(x, w, dy, dx, dw, N, I, O, accumulate_dx);
  }
  void rmsnorm_forward(const float* x, const float* w, float* y, float* rstd, int64_t N, int C, float eps) override {
    cpu::rmsnorm_forward(x, w, y, rstd, N, C, eps);
  }
  void rmsnorm_backward(const float* x, const float* w, const float* rstd, const float* dy, float* dx, float* dw,
                        int64_t N, int C) override {
    cpu::rmsnorm_backward(x, w, rstd, dy, dx, dw, N, C);
  }
  void layernorm_forward(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd, int64_t N,
                         int C, float eps) override {
    cpu::layernorm_forward(x, w, b, y, mean, rstd, N, C, eps);
  }
  void layernorm_backward(const float* x, const float* w, const float* mean, const float* rstd, const float* dy,
                          float* dx, float* dw, float* db, int64_t N, int C) override {
    cpu::layernorm_backward(x, w, mean, rstd, dy, dx, dw, db, N, C);
  }
  void swiglu_forward(const float* g, const float* u, float* a, int64_t N) override { cpu::swiglu_forward(g, u, a, N); }
  void swiglu_backward(const float* g, const float* u, const float* da, float* dg, float* du, int64_t N) override {
    cpu::swiglu_backward(g, u, da, dg, du, N);
  }
  void embedding_forward(const int32_t* tokens, const float* table, float* out, int64_t N, int V, int C) override {
    cpu::embedding_forward(tokens, table, out, N, V, C);
  }
  void embedding_backward(const int32_t* tokens, const float* dout, float* dtable, int64_t N, int V, int C) override {
    cpu::embedding_backward(tokens, dout, dtable, N, V, C);
  }
  double cross_entropy_forward(const float* logits, const int32_t* targets, int64_t N, int V) override {
    return cpu::cross_entropy_forward(logits, targets, nullptr, N, V);
  }
  void cross_entropy_backward(const float* logits, const int32_t* targets, float dloss, float* dlogits, int64_t N,
                              int V) override {
    cpu::cross_entropy_backward(logits, targets, dloss, dlogits, N, V);
  }
  void rope_forward(const RopeParams& p) override { cpu::rope_forward(p); }
  void rope_backward(const RopeParams& p) override { cpu::rope_backward(p); }
  void hadamard_transform(float* x, int64_t N, int D) override { cpu::hadamard_transform(x, N, D); }
  void indexer_logits(const IndexerParams& p, float* logits) override { cpu::indexer_logits(p, logits); }
  void topk_select(const TopkParams& p) override { cpu::topk_select(p); }
  void indexer_backward(const IndexerBackwardParams& p) override { cpu::indexer_backward(p); }
  void indexer_kl_forward(const IndexerKlParams& p, float* loss) override { cpu::indexer_kl_forward(p, loss); }
  void indexer_kl_backward(const IndexerKlParams& p, const float* dloss, float* d_index_logits) override {
    cpu::indexer_kl_backward(p, dloss, d_index_logits);
  }
  void sparse_attention_forward(const AttentionParams& p, const AttentionForwardOut& o) override {
    cpu::sparse_attention_forward(p, o);
  }
  void sparse_attention_backward(const AttentionParams& p, const AttentionBackwardArgs& b) override {
    cpu::sparse_attention_backward(p, b);
  }
  void dense_attention_forward(const AttentionParams& p, const AttentionForwardOut& o) override {
    cpu::dense_attention_forward(p, o);
  }
  void dense_attention_backward(const AttentionParams& p, const AttentionBackwardArgs& b) override {
    cpu::dense_attention_backward(p, b);
  }

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
