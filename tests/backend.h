// backend.h — what the test table runs an op on. Every method has the signature of the op in
// dsa/ops.h and takes HOST pointers; the CPU backend forwards them, a GPU backend copies inputs to
// the device, runs its kernel version, and copies outputs back (checking its own guard regions).
// Each backend/kernel version registers itself once in backends(); every table row runs on all.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "dsa/ops.h"

namespace dsa::test {

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;

  // 1. numerics and cache records
  virtual void fp8_block_quantize(const Fp8BlockQuantizeParams& p) = 0;
  virtual void fp8_block_dequantize(const Fp8BlockDequantizeParams& p) = 0;
  virtual void mla_cache_pack(const MlaCacheParams& p) = 0;
  virtual void mla_cache_unpack(const MlaCacheParams& p) = 0;
  virtual void indexer_cache_pack(const IndexerCacheParams& p) = 0;
  virtual void indexer_cache_unpack(const IndexerCacheParams& p) = 0;
  // 2. rotations
  virtual void hadamard_transform(float* x, int64_t N, int D) = 0;
  virtual void rope_forward(const RopeParams& p) = 0;
  virtual void rope_backward(const RopeParams& p) = 0;
  // 3-5, 10. indexer
  virtual void indexer_quantize_fp8(const IndexerQuantizeParams& p) = 0;
  virtual void indexer_logits(const IndexerParams& p, float* logits) = 0;
  virtual void topk_select(const TopkParams& p) = 0;
  virtual void indexer_topk(const IndexerParams& p, int K, int32_t* indices) = 0;
  virtual void indexer_backward(const IndexerBackwardParams& p) = 0;
  // 6-8. attention
  virtual void sparse_attention_forward(const AttentionParams& p, const AttentionForwardOut& o) = 0;
  virtual void sparse_attention_backward(const AttentionParams& p, const AttentionBackwardArgs& b) = 0;
  virtual void dense_attention_forward(const AttentionParams& p, const AttentionForwardOut& o) = 0;
  virtual void dense_attention_backward(const AttentionParams& p, const AttentionBackwardArgs& b) = 0;
  // 9. indexer KL
  virtual void indexer_kl_forward(const IndexerKlParams& p, float* loss) = 0;
  virtual void indexer_kl_backward(const IndexerKlParams& p, const float* dloss, float* d_index_logits) = 0;
  // 11. decode over paged caches
  virtual void indexer_logits_paged(const PagedIndexerParams& p, float* logits) = 0;
  virtual void paged_to_physical(int B, int next_n, int K, const int32_t* block_table, int max_blocks,
                                 int num_pages, int32_t* indices) = 0;
  virtual void sparse_attention_decode(const SparseDecodeParams& p) = 0;
  // 12. model layers (the CPU signatures; cross_entropy_forward returns the fp64 Σ of the losses)
  virtual void linear_forward(const float* x, const float* w, float* y, int64_t N, int I, int O) = 0;
  virtual void linear_backward(const float* x, const float* w, const float* dy, float* dx, float* dw, int64_t N,
                               int I, int O, bool accumulate_dx) = 0;
  virtual void rmsnorm_forward(const float* x, const float* w, float* y, float* rstd, int64_t N, int C, float eps) = 0;
  virtual void rmsnorm_backward(const float* x, const float* w, const float* rstd, const float* dy, float* dx,
                                float* dw, int64_t N, int C) = 0;
  virtual void layernorm_forward(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd,
                                 int64_t N, int C, float eps) = 0;
  virtual void layernorm_backward(const float* x, const float* w, const float* mean, const float* rstd,
                                  const float* dy, float* dx, float* dw, float* db, int64_t N, int C) = 0;
  virtual void swiglu_forward(const float* g, const float* u, float* a, int64_t N) = 0;
  virtual void swiglu_backward(const float* g, const float* u, const float* da, float* dg, float* du, int64_t N) = 0;
  virtual void embedding_forward(const int32_t* tokens, const float* table, float* out, int64_t N, int V, int C) = 0;
  virtual void embedding_backward(const int32_t* tokens, const float* dout, float* dtable, int64_t N, int V,
                                  int C) = 0;
  virtual double cross_entropy_forward(const float* logits, const int32_t* targets, float* loss, int64_t N,
                                       int V) = 0;
  virtual void cross_entropy_backward(const float* logits, const int32_t* targets, float dloss, float* dlogits,
                                      int64_t N, int V) = 0;
};

// Every backend present in this build: "cpu" always, GPU kernel versions when a device is found.
const std::vector<std::shared_ptr<Backend>>& backends();

// GPU backends register through this hook (defined in tests/cuda/ when CUDA is built).
void append_gpu_backends(std::vector<std::shared_ptr<Backend>>& out);

}  // namespace dsa::test
