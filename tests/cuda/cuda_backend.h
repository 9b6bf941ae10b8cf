// cuda_backend.h — GPU rows of the test table: one CudaBackend per variant class. Each method
// copies the host inputs of the op to the device, runs dsa::cuda::<op>, copies outputs back, and
// checks guard regions around every device output. Methods are defined in
// tests/cuda/cuda_backend_*.cu next to the ops they wrap.
#pragma once

#include "backend.h"
#include "dsa/cuda_ops.h"

namespace dsa::test {

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(cuda::Variant cls) : class_(cls) {}
  std::string name() const override { return std::string("cuda_") + cuda::variant_name(class_); }
  bool host_memory() const override { return true; }
  void synchronize() override {}
  std::string skip_reason(const std::string& op) const override;
  Arith arith(const std::string& op) const override;
  // The variant this backend runs `op` with: its class where the op has that variant, else kExact.
  cuda::Variant variant(const char* op) const;

  void fp8_block_quantize(const Fp8BlockQuantizeParams& p) override;
  void fp8_block_dequantize(const Fp8BlockDequantizeParams& p) override;
  void mla_cache_pack(const MlaCacheParams& p) override;
  void mla_cache_unpack(const MlaCacheParams& p) override;
  void indexer_cache_pack(const IndexerCacheParams& p) override;
  void indexer_cache_unpack(const IndexerCacheParams& p) override;
  void hadamard_transform(float* x, int64_t N, int D) override;
  void rope_forward(const RopeParams& p) override;
  void rope_backward(const RopeParams& p) override;
  void indexer_quantize_fp8(const IndexerQuantizeParams& p) override;
  void indexer_logits(const IndexerParams& p, float* logits) override;
  void topk_select(const TopkParams& p) override;
  void indexer_topk(const IndexerParams& p, int K, int32_t* indices) override;
  void indexer_backward(const IndexerBackwardParams& p) override;
  void sparse_attention_forward(const AttentionParams& p, const AttentionForwardOut& o) override;
  void sparse_attention_backward(const AttentionParams& p, const AttentionBackwardArgs& b) override;
  void dense_attention_forward(const AttentionParams& p, const AttentionForwardOut& o) override;
  void dense_attention_backward(const AttentionParams& p, const AttentionBackwardArgs& b) override;
  void indexer_kl_forward(const IndexerKlParams& p, float* loss) override;
  void indexer_kl_backward(const IndexerKlParams& p, const float* dloss, float* d_index_logits) override;
  void indexer_logits_paged(const PagedIndexerParams& p, float* logits) override;
  void paged_to_physical(int B, int next_n, int K, const int32_t* block_table, int max_blocks, int num_pages,
                         int32_t* indices) override;
  void sparse_attention_decode(const SparseDecodeParams& p) override;
  // 12. model layers (tests/cuda/cuda_backend_layers.cu)
  void linear_forward(const float* x, const float* w, float* y, int64_t N, int I, int O) override;
  void linear_backward(const float* x, const float* w, const float* dy, float* dx, float* dw, int64_t N, int I, int O,
                       bool accumulate_dx) override;
  void rmsnorm_forward(const float* x, const float* w, float* y, float* rstd, int64_t N, int C, float eps) override;
  void rmsnorm_backward(const float* x, const float* w, const float* rstd, const float* dy, float* dx, float* dw,
                        int64_t N, int C) override;
  void layernorm_forward(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd, int64_t N,
                         int C, float eps) override;
  void layernorm_backward(const float* x, const float* w, const float* mean, const float* rstd, const float* dy,
                          float* dx, float* dw, float* db, int64_t N, int C) override;
  void swiglu_forward(const float* g, const float* u, float* a, int64_t N) override;
  void swiglu_backward(const float* g, const float* u, const float* da, float* dg, float* du, int64_t N) override;
  void embedding_forward(const int32_t* tokens, const float* table, float* out, int64_t N, int V, int C) override;
  void embedding_backward(const int32_t* tokens, const float* dout, float* dtable, int64_t N, int V, int C) override;
  double cross_entropy_forward(const float* logits, const int32_t* targets, float* loss, int64_t N, int V) override;
  void cross_entropy_backward(const float* logits, const int32_t* targets, float dloss, float* dlogits, int64_t N,
                              int V) override;

 private:
  cuda::Variant class_;
};

}  // namespace dsa::test
