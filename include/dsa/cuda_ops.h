// dsa/cuda_ops.h — the CUDA backend: the ops of dsa/ops.h on NVIDIA GPUs (sm_80 … sm_90a).
//
// Same parameter structs, shapes, math and conventions as dsa::cpu (ops.h is the contract); every
// pointer in a params struct is a DEVICE pointer, every call is asynchronous on `stream`, does no
// host synchronisation and no allocation (ops that need scratch memory take a workspace sized by
// their *_workspace_bytes query), so every op is CUDA-graph safe.
// Host-side validation covers what the host can see (null pointers, shapes, K range) and throws
// dsa::Error naming the argument before any launch. Data-dependent checks the CPU backend makes
// (ks > ke, indices outside [0, S)) cannot be made without a sync: the kernels treat such a key
// range as empty and such an index as invalid (FlashMLA's convention), never reading out of bounds.
#pragma once

#include "dsa/ops.h"

typedef struct CUstream_st* cudaStream_t;

namespace dsa::cuda {

// Kernel versions: every op with several implementations takes a trailing `int version`
// (kDefaultVersion = the fastest that runs on this device). An op with a single kernel ignores it.
// Every version is a row of the test table (tests/cuda/cuda_backend.cu registers one per entry).
inline constexpr int kDefaultVersion = 0;
inline constexpr int kKernelVersions[] = {1, 2};

// Declarations are added op by op by src/cuda/<op>.cu owners (see README "adding an op").
// Layout of this header: one block per op family, in ops.h catalogue order, each naming its file.
// Workspace convention: `size_t <op>_workspace_bytes(...)` returns the scratch bytes the op needs
// (possibly 0); the op takes (void* workspace, size_t workspace_bytes) and throws dsa::Error
// ("<op>: workspace_bytes ...") when the buffer is null or too small while bytes are needed.

// ── 1. numerics and cache records (src/cuda/numerics.cu) ─────────────────────────────────────
void fp8_block_quantize(const Fp8BlockQuantizeParams& p, cudaStream_t stream);
void fp8_block_dequantize(const Fp8BlockDequantizeParams& p, cudaStream_t stream);
void mla_cache_pack(const MlaCacheParams& p, cudaStream_t stream);
void mla_cache_unpack(const MlaCacheParams& p, cudaStream_t stream);
void indexer_cache_pack(const IndexerCacheParams& p, cudaStream_t stream);
void indexer_cache_unpack(const IndexerCacheParams& p, cudaStream_t stream);

// ── 2. rotations (src/cuda/rotations.cu) ──────────────────────────────────────────────────────
void hadamard_transform(float* x, int64_t N, int D, cudaStream_t stream);
void rope_forward(const RopeParams& p, cudaStream_t stream);
void rope_backward(const RopeParams& p, cudaStream_t stream);

// ── 3. indexer quantisation and logits (src/cuda/indexer_quantize.cu, indexer_logits.cu) ───────
void indexer_quantize_fp8(const IndexerQuantizeParams& p, cudaStream_t stream);
// Per-element arithmetic (identical in indexer_logits and indexer_topk of the same version):
//   v1: dot_h = fp32 fmaf chain over d = 0..DI−1; acc = fp32 fmaf(w[t,h], max(dot_h, 0), acc) for
//       h = 0..HI−1 in order; logit = acc · k_scale[s] (kFp8) or acc.
//   v2 (kFp8, DI == 128, HI % 16 == 0 ≤ 128, sm_89+; anything else falls back to v1): dot_h from
//       e4m3 mma.sync (fp32 accumulate), then a fixed per-warp butterfly over 16-head groups and an
//       in-order sum of the groups (src/cuda/indexer_logits_mma.cu documents the exact order).
//   v3 = kIndexerWgmmaVersion (opt-in, not a kKernelVersions row; kFp8, HI == 64, DI == 128, sm_90a
//       code on an sm_90 device; else it runs as v2): dot_h from e4m3 wgmma (fp32 accumulate, the
//       tensor core's narrower fp8 accumulation), a fixed in-register + quad-shuffle head sum
//       (src/cuda/indexer_logits_wgmma.cu documents the order). indexer_topk v3 uses it (op 5).
// kDefaultVersion picks v2 where it applies.
inline constexpr int kIndexerWgmmaVersion = 3;
void indexer_logits(const IndexerParams& p, float* logits, cudaStream_t stream, int version = kDefaultVersion);

// ── 4. top-k (src/cuda/topk.cu): radix select, deterministic, no allocation, no host sync ─────
size_t topk_select_workspace_bytes(int T, int S, int K, int version = kDefaultVersion);
void topk_select(const TopkParams& p, void* workspace, size_t workspace_bytes, cudaStream_t stream,
                 int version = kDefaultVersion);

// ── 5. fused indexer + top-k (src/cuda/indexer_topk.cu) ───────────────────────────────────────
// v1: never writes logits, O(T·K) memory. v2 (where indexer_logits v2 applies): v2 logits of
// ≤ 128 MiB of rows at a time in the workspace + topk_select (O(chunk·S) memory). v3 =
// kIndexerWgmmaVersion: the same chunked pipeline with the v3 (wgmma) logits where they apply, else
// exactly v2 (then v1); ≡ topk_select(indexer_logits v3) bit for bit. Pass the version to the query.
// v2/v3 given more workspace than the query asks for run chunks of workspace_bytes / (4·S) rows
// (same indices; fewer, larger logits launches).
size_t indexer_topk_workspace_bytes(const IndexerParams& p, int K, int version = kDefaultVersion);
void indexer_topk(const IndexerParams& p, int K, int32_t* indices, void* workspace, size_t workspace_bytes,
                  cudaStream_t stream, int version = kDefaultVersion);

// ── 10. indexer backward (src/cuda/indexer_backward.cu): deterministic, no float atomics ───────
size_t indexer_backward_workspace_bytes(const IndexerBackwardParams& p);
void indexer_backward(const IndexerBackwardParams& p, void* workspace, size_t workspace_bytes,
                      cudaStream_t stream);

// ── 11. decode-time indexer (src/cuda/indexer_logits_paged.cu) ─────────────────────────────────
void indexer_logits_paged(const PagedIndexerParams& p, float* logits, cudaStream_t stream);
void paged_to_physical(int B, int next_n, int K, const int32_t* block_table, int max_blocks, int num_pages,
                       int32_t* indices, cudaStream_t stream);

// ── 6–9, 11. attention side (h6b appends below) ───────────────────────────────────────────────
// Index / range data the host cannot see without a sync: an index outside [0, S) is invalid (as
// −1), a malformed key range (ks > ke, outside [0, S]) is empty; topk_length is clamped to [0, K].
// v1 of every op below: fp32 CUDA-core kernels, bitwise deterministic, every arch (sm_80+).
// kDefaultVersion and the kKernelVersions rows run v1 for these ops (exact fp32, the table's
// tolerances); the bf16 tensor-core versions below are opt-in (docs/kernels/sparse_attention.md).

// 6. sparse_attention_forward.cu — FlashMLA flash_mla_sparse_fwd semantics, any H / Dqk / Dv.
//    version == kSparseAttentionBf16Version: bf16 tensor cores (mma.sync, sm_80+) for the V3.2 shape
//    (Dqk 576, Dv 512, H % 64 == 0; other shapes run v1). Opt-in, not a kKernelVersions row: its
//    bf16 rounding (relative error ~1e-3..1e-2 vs fp64) is outside the table's fp32 tolerances, so
//    tests/cuda/attention_bf16_test.cu checks it with a bf16 tolerance.
inline constexpr int kSparseAttentionBf16Version = 3;
//    version == kSparseAttentionPipelinedVersion: the same bf16 MMAs, kv converted to bf16 once into
//    the workspace (S·1152 bytes) and gathered by cp.async, double-buffered (same tolerance, opt-in).
//    Every version but this one needs no workspace (workspace_bytes query → 0).
inline constexpr int kSparseAttentionPipelinedVersion = 4;
//    version == kSparseAttentionWgmmaVersion: Hopper bf16 wgmma (sparse_attention_forward_wgmma.cu),
//    same numerics and tolerance, same workspace (S·1152 bytes, 16-byte aligned), opt-in. Applies to
//    Dqk 576, Dv 512, H % 64 == 0 on an sm_90 device when the binary carries sm_90a code; anything
//    else asked for v5 runs as v4 (then v3, then v1), with the same workspace query.
//    sparse_attention_forward_wgmma_available says whether v5 itself runs (its first call probes the
//    binary once: a tiny launch + copy, keep it outside CUDA-graph capture).
inline constexpr int kSparseAttentionWgmmaVersion = 5;
bool sparse_attention_forward_wgmma_available(const AttentionParams& p);
size_t sparse_attention_forward_workspace_bytes(const AttentionParams& p, int version = kDefaultVersion);
void sparse_attention_forward(const AttentionParams& p, const AttentionForwardOut& o, void* workspace,
                              size_t workspace_bytes, cudaStream_t stream, int version = kDefaultVersion);
void sparse_attention_forward(const AttentionParams& p, const AttentionForwardOut& o, cudaStream_t stream,
                              int version = kDefaultVersion);
// 7. sparse_attention_backward.cu — deterministic: a stable radix sort of the selection gives each
//    key its (t, slot) entries in ascending order; dkv is summed key-major in that order.
//    Workspace ≈ 16·T·K + 4·T·H + 4·S bytes (+ cub's sort storage).
//    version == kSparseAttentionBf16Version (opt-in, sm_80+, any shape; sparse_attention_backward_bf16.cu):
//    cuBLAS bf16 tensor-core GEMMs over query chunks, dkv reduced key-major in the same sorted order
//    (bitwise reproducible for fixed shapes, workspace size and device; same bf16 tolerance as the
//    forward). Its workspace query (pass the version) sizes the default chunk (≤ ~4 GiB); a smaller
//    workspace, down to the one-query size, runs smaller chunks. Its first call on a device creates a
//    cached cuBLAS handle (allocates: keep that call out of CUDA-graph capture).
size_t sparse_attention_backward_workspace_bytes(const AttentionParams& p, int version = kDefaultVersion);
void sparse_attention_backward(const AttentionParams& p, const AttentionBackwardArgs& b, void* workspace,
                               size_t workspace_bytes, cudaStream_t stream, int version = kDefaultVersion);
// 8. dense_attention_forward.cu / dense_attention_backward.cu — MQA over key ranges.
//    Backward workspace: Δ, 4·T·H bytes.
void dense_attention_forward(const AttentionParams& p, const AttentionForwardOut& o, cudaStream_t stream,
                             int version = kDefaultVersion);
size_t dense_attention_backward_workspace_bytes(const AttentionParams& p);
void dense_attention_backward(const AttentionParams& p, const AttentionBackwardArgs& b, void* workspace,
                              size_t workspace_bytes, cudaStream_t stream, int version = kDefaultVersion);
// 9. indexer_kl.cu — no workspace (the backward parks p̃ in d_index_logits before rewriting it).
void indexer_kl_forward(const IndexerKlParams& p, float* loss, cudaStream_t stream, int version = kDefaultVersion);
void indexer_kl_backward(const IndexerKlParams& p, const float* dloss, float* d_index_logits, cudaStream_t stream,
                         int version = kDefaultVersion);
// 11. sparse_attention_decode.cu — split-KV over the K slots + combine; the split count depends on
//     the shapes only. Workspace: splits·B·next_n·H·513 floats (0 when one split suffices).
//     version == kSparseAttentionBf16Version: the bf16 tensor-core tile over the cache (H % 64 == 0),
//     one block per row × 64 heads, no split-KV, no workspace (same bf16 tolerance, opt-in).
size_t sparse_attention_decode_workspace_bytes(const SparseDecodeParams& p);
void sparse_attention_decode(const SparseDecodeParams& p, void* workspace, size_t workspace_bytes, cudaStream_t stream,
                             int version = kDefaultVersion);

// ── 12. model layers (src/cuda/layers.cu, src/cuda/layers_norm.cu) ─────────────────────────────
// ops.h §12 with device pointers: same math, same write/accumulate rules (every backward
// ACCUMULATES into dw/db/dtable and WRITES dx; linear adds into dx when accumulate_dx), same
// host-side argument checks. Bitwise deterministic over reruns, no float atomics: row sums are fixed
// block trees (fp64), the column sums of dw/db loop over rows in a fixed order, embedding_backward
// sorts (token, row) stably in its workspace and adds each token's rows in row order (the CPU's
// float sequence). Data the host cannot see: a token outside [0, V) embeds as a zero row and gets no
// gradient; a target outside [−1, V) counts as −1 (loss 0, zero gradient row).
// cuBLAS: the first gemm / linear call on a device creates a cached handle (allocates: keep that
// call out of CUDA-graph capture).
// Row-major sgemm on the device (cuBLAS, fp32 math — no TF32 —, one cached handle per device, stream set
// per call): C[M,N] = op(A)·op(B) + beta·C with leading dimensions as for dsa's CPU blas::sgemm
// (ta: A is stored [K,M] and read transposed; tb likewise for B [N,K]). Deterministic.
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
          int64_t ldb, float beta, float* C, int64_t ldc, cudaStream_t stream);
void linear_forward(const float* x, const float* w, float* y, int64_t N, int I, int O, cudaStream_t stream);
void linear_backward(const float* x, const float* w, const float* dy, float* dx, float* dw, int64_t N, int I,
                     int O, bool accumulate_dx, cudaStream_t stream);      // dx may be null (then skipped)
void rmsnorm_forward(const float* x, const float* w, float* y, float* rstd, int64_t N, int C, float eps,
                     cudaStream_t stream);
void rmsnorm_backward(const float* x, const float* w, const float* rstd, const float* dy, float* dx, float* dw,
                      int64_t N, int C, cudaStream_t stream);
void layernorm_forward(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd,
                       int64_t N, int C, float eps, cudaStream_t stream);
void layernorm_backward(const float* x, const float* w, const float* mean, const float* rstd, const float* dy,
                        float* dx, float* dw, float* db, int64_t N, int C, cudaStream_t stream);
void swiglu_forward(const float* g, const float* u, float* a, int64_t N, cudaStream_t stream);
void swiglu_backward(const float* g, const float* u, const float* da, float* dg, float* du, int64_t N,
                     cudaStream_t stream);
void embedding_forward(const int32_t* tokens, const float* table, float* out, int64_t N, int V, int C,
                       cudaStream_t stream);
size_t embedding_backward_workspace_bytes(int64_t N, int V);
void embedding_backward(const int32_t* tokens, const float* dout, float* dtable, int64_t N, int V, int C,
                        void* workspace, size_t workspace_bytes, cudaStream_t stream);
// Unlike the CPU op (which returns Σ loss), writes loss[n] (required, device) and returns nothing: the
// caller sums (no host sync inside an op).
void cross_entropy_forward(const float* logits, const int32_t* targets, float* loss, int64_t N, int V,
                           cudaStream_t stream);
void cross_entropy_backward(const float* logits, const int32_t* targets, float dloss, float* dlogits, int64_t N,
                            int V, cudaStream_t stream);

}  // namespace dsa::cuda
