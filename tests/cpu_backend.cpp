// cpu_backend.cpp — the "cpu" row of every test: forwards straight to dsa::cpu.
#include "backend.h"

namespace dsa::test {
namespace {

class CpuBackend final : public Backend {
 public:
  std::string name() const override { return "cpu"; }
  void fp8_block_quantize(const Fp8BlockQuantizeParams& p) override { cpu::fp8_block_quantize(p); }
  void fp8_block_dequantize(const Fp8BlockDequantizeParams& p) override { cpu::fp8_block_dequantize(p); }
  void mla_cache_pack(const MlaCacheParams& p) override { cpu::mla_cache_pack(p); }
  void mla_cache_unpack(const MlaCacheParams& p) override { cpu::mla_cache_unpack(p); }
  void indexer_cache_pack(const IndexerCacheParams& p) override { cpu::indexer_cache_pack(p); }
  void indexer_cache_unpack(const IndexerCacheParams& p) override { cpu::indexer_cache_unpack(p); }
  void hadamard_transform(float* x, int64_t N, int D) override { cpu::hadamard_transform(x, N, D); }
  void rope_forward(const RopeParams& p) override { cpu::rope_forward(p); }
  void rope_backward(const RopeParams& p) override { cpu::rope_backward(p); }
  void indexer_quantize_fp8(const IndexerQuantizeParams& p) override { cpu::indexer_quantize_fp8(p); }
  void indexer_logits(const IndexerParams& p, float* logits) override { cpu::indexer_logits(p, logits); }
  void topk_select(const TopkParams& p) override { cpu::topk_select(p); }
  void indexer_topk(const IndexerParams& p, int K, int32_t* idx) override { cpu::indexer_topk(p, K, idx); }
  void indexer_backward(const IndexerBackwardParams& p) override { cpu::indexer_backward(p); }
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
  void indexer_kl_forward(const IndexerKlParams& p, float* loss) override { cpu::indexer_kl_forward(p, loss); }
  void indexer_kl_backward(const IndexerKlParams& p, const float* dloss, float* d) override {
    cpu::indexer_kl_backward(p, dloss, d);
  }
  void indexer_logits_paged(const PagedIndexerParams& p, float* logits) override { cpu::indexer_logits_paged(p, logits); }
  void paged_to_physical(int B, int next_n, int K, const int32_t* bt, int max_blocks, int num_pages,
                         int32_t* idx) override {
    cpu::paged_to_physical(B, next_n, K, bt, max_blocks, num_pages, idx);
  }
  void sparse_attention_decode(const SparseDecodeParams& p) override { cpu::sparse_attention_decode(p); }
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
  double cross_entropy_forward(const float* logits, const int32_t* targets, float* loss, int64_t N, int V) override {
    return cpu::cross_entropy_forward(logits, targets, loss, N, V);
  }
  void cross_entropy_backward(const float* logits, const int32_t* targets, float dloss, float* dlogits, int64_t N,
                              int V) override {
    cpu::cross_entropy_backward(logits, targets, dloss, dlogits, N, V);
  }
};

}  // namespace

#ifndef DSA_HAVE_CUDA
void append_gpu_backends(std::vector<std::shared_ptr<Backend>>&) {}
#endif

const std::vector<std::shared_ptr<Backend>>& backends() {
  static const std::vector<std::shared_ptr<Backend>> all = [] {
    std::vector<std::shared_ptr<Backend>> v{std::make_shared<CpuBackend>()};
    append_gpu_backends(v);
    return v;
  }();
  return all;
}

}  // namespace dsa::test
