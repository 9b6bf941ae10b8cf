// dsa/backend.h — one interface over every backend: the op list of ops.h, once.
//
// A Backend runs the ops of dsa/ops.h on pointers in its own memory (host memory for the CPU
// backend, device memory for a CUDA backend, include/dsa/cuda_ops.h: dsa::cuda::make_backend). The
// model's passes (src/model/forward.cpp) and the test table (tests/ops_test.cpp) both call ops
// through it; nothing else keeps a list of op signatures. Each op has the signature of its ops.h
// declaration, with two uniformisations a device backend needs:
//   * no op returns a value: cross_entropy_forward writes loss[n] (required) and the caller sums;
//   * workspaces are the backend's business (a CUDA backend keeps one growing buffer per backend).
// Calls are ordered: a device backend runs them asynchronously on its one stream, in call order;
// synchronize() waits for them (and reports a failed kernel as dsa::Error).
//
// Adding an op: one DSA_OPS line here (name, parameter list, argument list); the CPU backend picks it
// up by itself, the CUDA backend (src/cuda/backend.cu) gets one method.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "dsa/ops.h"

namespace dsa {

// X(name, (parameters), (arguments)) for every op of ops.h, in catalogue order.
#define DSA_OPS(X)                                                                                              \
  /* 1. numerics and cache records */                                                                          \
  X(fp8_block_quantize, (const Fp8BlockQuantizeParams& p), (p))                                                 \
  X(fp8_block_dequantize, (const Fp8BlockDequantizeParams& p), (p))                                             \
  X(mla_cache_pack, (const MlaCacheParams& p), (p))                                                             \
  X(mla_cache_unpack, (const MlaCacheParams& p), (p))                                                           \
  X(indexer_cache_pack, (const IndexerCacheParams& p), (p))                                                     \
  X(indexer_cache_unpack, (const IndexerCacheParams& p), (p))                                                   \
  /* 2. rotations */                                                                                           \
  X(hadamard_transform, (float* x, int64_t N, int D), (x, N, D))                                               \
  X(rope_forward, (const RopeParams& p), (p))                                                                   \
  X(rope_backward, (const RopeParams& p), (p))                                                                  \
  /* 3-5, 10. lightning indexer and top-k */                                                                   \
  X(indexer_quantize_fp8, (const IndexerQuantizeParams& p), (p))                                                \
  X(indexer_logits, (const IndexerParams& p, float* logits), (p, logits))                                      \
  X(topk_select, (const TopkParams& p), (p))                                                                    \
  X(indexer_topk, (const IndexerParams& p, int K, int32_t* indices), (p, K, indices))                         \
  X(indexer_backward, (const IndexerBackwardParams& p), (p))                                                    \
  /* 6-8. attention */                                                                                         \
  X(sparse_attention_forward, (const AttentionParams& p, const AttentionForwardOut& o), (p, o))                 \
  X(sparse_attention_backward, (const AttentionParams& p, const AttentionBackwardArgs& b), (p, b))              \
  X(dense_attention_forward, (const AttentionParams& p, const AttentionForwardOut& o), (p, o))                  \
  X(dense_attention_backward, (const AttentionParams& p, const AttentionBackwardArgs& b), (p, b))               \
  /* 9. indexer KL */                                                                                          \
  X(indexer_kl_forward, (const IndexerKlParams& p, float* loss), (p, loss))                                     \
  X(indexer_kl_backward, (const IndexerKlParams& p, const float* dloss, float* d_index_logits),                 \
    (p, dloss, d_index_logits))                                                                                 \
  /* 11. decode over paged caches */                                                                           \
  X(indexer_logits_paged, (const PagedIndexerParams& p, float* logits), (p, logits))                            \
  X(paged_to_physical,                                                                                          \
    (int B, int next_n, int K, const int32_t* block_table, int max_blocks, int num_pages, int32_t* indices),    \
    (B, next_n, K, block_table, max_blocks, num_pages, indices))                                                \
  X(sparse_attention_decode, (const SparseDecodeParams& p), (p))                                                \
  /* 12. model layers */                                                                                       \
  X(linear_forward, (const float* x, const float* w, float* y, int64_t N, int I, int O), (x, w, y, N, I, O))   \
  X(linear_backward,                                                                                            \
    (const float* x, const float* w, const float* dy, float* dx, float* dw, int64_t N, int I, int O,           \
     bool accumulate_dx),                                                                                       \
    (x, w, dy, dx, dw, N, I, O, accumulate_dx))                                                                 \
  X(rmsnorm_forward, (const float* x, const float* w, float* y, float* rstd, int64_t N, int C, float eps),     \
    (x, w, y, rstd, N, C, eps))                                                                                 \
  X(rmsnorm_backward,                                                                                           \
    (const float* x, const float* w, const float* rstd, const float* dy, float* dx, float* dw, int64_t N, int C), \
    (x, w, rstd, dy, dx, dw, N, C))                                                                             \
  X(layernorm_forward,                                                                                          \
    (const float* x, const float* w, const float* b, float* y, float* mean, float* rstd, int64_t N, int C,     \
     float eps),                                                                                                \
    (x, w, b, y, mean, rstd, N, C, eps))                                                                        \
  X(layernorm_backward,                                                                                         \
    (const float* x, const float* w, const float* mean, const float* rstd, const float* dy, float* dx,         \
     float* dw, float* db, int64_t N, int C),                                                                   \
    (x, w, mean, rstd, dy, dx, dw, db, N, C))                                                                   \
  X(swiglu_forward, (const float* g, const float* u, float* a, int64_t N), (g, u, a, N))                       \
  X(swiglu_backward, (const float* g, const float* u, const float* da, float* dg, float* du, int64_t N),       \
    (g, u, da, dg, du, N))                                                                                      \
  X(embedding_forward, (const int32_t* tokens, const float* table, float* out, int64_t N, int V, int C),       \
    (tokens, table, out, N, V, C))                                                                              \
  X(embedding_backward, (const int32_t* tokens, const float* dout, float* dtable, int64_t N, int V, int C),    \
    (tokens, dout, dtable, N, V, C))                                                                            \
  X(cross_entropy_forward, (const float* logits, const int32_t* targets, float* loss, int64_t N, int V),       \
    (logits, targets, loss, N, V))                                                                              \
  X(cross_entropy_backward,                                                                                     \
    (const float* logits, const int32_t* targets, float dloss, float* dlogits, int64_t N, int V),              \
    (logits, targets, dloss, dlogits, N, V))

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;     // "cpu", "cuda:0", …
  virtual bool host_memory() const = 0;     // op pointers are host pointers
  virtual void synchronize() = 0;           // waits for every op called so far

#define DSA_DECLARE_OP(name, params, args) virtual void name params = 0;
  DSA_OPS(DSA_DECLARE_OP)
#undef DSA_DECLARE_OP
};

// The CPU backend: the dsa::cpu ops (the specification) on host memory; synchronous.
Backend& cpu_backend();

}  // namespace dsa
