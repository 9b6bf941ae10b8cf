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

#include <string>

#include "dsa/backend.h"
#include "dsa/ops.h"

typedef struct CUstream_st* cudaStream_t;

namespace dsa::cuda {

// ── Kernel variants ───────────────────────────────────────────────────────────────────────────
// An op with several kernels takes a trailing `Variant` (default kAuto). Each variant declares the
// dtypes, shapes and architectures it serves (op_variants and the op's comment below); kAuto runs the
// fastest variant that can run for the call's dtypes and shape on the current device, and asking for
// a variant that cannot run is a dsa::Error saying why — there is no fallback from a named variant.
//   kExact : fp32 CUDA cores, every arch (sm_80+), any shape; fp32 math whatever the input dtype
//            (bf16 inputs are widened exactly): the GPU's oracle, bitwise deterministic.
//   kMma   : tensor cores through mma.sync (bf16 sm_80+, e4m3 sm_89+).
//   kWgmma : Hopper tensor cores (wgmma, sm_90a code on an sm_90 device).
//   kCublas: cuBLAS bf16 tensor-core GEMMs (sm_80+), deterministic reductions around them.
// The dtype rule of kAuto: fp32 inputs run kExact (fp32 stays the reference path: no op rounds a
// caller's fp32 tensors to bf16 unless a bf16 variant is named), bf16 / e4m3 inputs run the fastest
// tensor-core variant that applies. Named tensor-core variants accept fp32 inputs and round them
// (to bf16: q/kv; the conversion costs a pass and a workspace).
enum class Variant { kAuto, kExact, kMma, kWgmma, kCublas };
const char* variant_name(Variant v);                    // "auto", "exact", "mma", "wgmma", "cublas"
Variant parse_variant(const std::string& name);         // dsa::Error naming the bad name

// The ops with variants and, per op, its variants fastest first (kExact last).
struct OpVariants {
  const char* op;
  const Variant* variants;
  int count;
};
const OpVariants* op_variants(int* n_ops);
// Whether `op` lists variant v (kAuto: never).
bool op_has_variant(const char* op, Variant v);

// The current device in words ("NVIDIA H100 80GB HBM3 (sm_90)"), "" without one.
std::string device_description();

// The variant a call runs: `requested` itself when it can run here (else dsa::Error naming the op,
// the variant and the reason), or for kAuto the first variant of the op's list that can. Host-only
// (the first query probes the binary's code for the device once: keep it outside graph capture).
Variant resolve_variant(const IndexerParams& p, Variant requested, const char* op = "indexer_logits");
Variant resolve_variant(const AttentionParams& p, Variant requested, const char* op);
Variant resolve_variant(const SparseDecodeParams& p, Variant requested);
// The paged tensor-core variants of indexer_logits_paged (kWgmma, kMma) have not yet passed the GPU
// test table: until they do, kAuto keeps the exact variant for that op and they run only when named
// (the table's cuda_wgmma / cuda_mma classes name them). Set to true once the table and the
// benchmark's cross-check pass on a GPU.
inline constexpr bool kPagedTensorCoreDefault = false;
Variant resolve_variant(const PagedIndexerParams& p, Variant requested);

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
// Variants (per-element arithmetic identical in indexer_logits and indexer_topk of one variant):
//   kWgmma (kFp8, HI == 64, DI == 128, q/k 16-byte aligned, sm_90a): dot_h from e4m3 wgmma (fp32
//       accumulate, the tensor core's narrower fp8 accumulation), a fixed in-register + quad-shuffle
//       head sum (indexer_logits_wgmma.cu documents the order).
//   kMma (kFp8, DI == 128, HI % 16 == 0 ≤ 128, sm_89+): dot_h from e4m3 mma.sync (fp32 accumulate),
//       a fixed per-warp butterfly over 16-head groups and an in-order sum of the groups
//       (indexer_logits_mma.cu).
//   kExact (any precision and shape): dot_h = fp32 fmaf chain over d = 0..DI−1; acc = fp32
//       fmaf(w[t,h], max(dot_h, 0), acc) for h = 0..HI−1 in order; logit = acc · k_scale[s] (kFp8).
// kAuto: kWgmma, then kMma for e4m3 inputs; kExact for fp32 / bf16 inputs.
void indexer_logits(const IndexerParams& p, float* logits, cudaStream_t stream, Variant variant = Variant::kAuto);

// ── 4. top-k (src/cuda/topk.cu): radix select, deterministic, no allocation, no host sync ─────
// One kernel; the workspace query returns 0 (the argument pair is kept for a uniform call shape).
size_t topk_select_workspace_bytes(int T, int S, int K);
void topk_select(const TopkParams& p, void* workspace, size_t workspace_bytes, cudaStream_t stream);

// ── 5. fused indexer + top-k (src/cuda/indexer_topk.cu) ───────────────────────────────────────
// kExact: one fused kernel that never writes logits, O(T·K) memory (kExact indexer arithmetic).
// kMma / kWgmma: that variant's logits for ≤ 128 MiB of rows at a time in the workspace, then
// topk_select (O(chunk·S) memory); ≡ topk_select(indexer_logits of the same variant) bit for bit.
// Pass the variant to the query. Given more workspace than the query asks for, they run chunks of
// workspace_bytes / (4·S) rows (same indices; fewer, larger logits launches).
size_t indexer_topk_workspace_bytes(const IndexerParams& p, int K, Variant variant = Variant::kAuto);
void indexer_topk(const IndexerParams& p, int K, int32_t* indices, void* workspace, size_t workspace_bytes,
                  cudaStream_t stream, Variant variant = Variant::kAuto);

// ── 10. indexer backward (src/cuda/indexer_backward.cu): deterministic, no float atomics ───────
size_t indexer_backward_workspace_bytes(const IndexerBackwardParams& p);
void indexer_backward(const IndexerBackwardParams& p, void* workspace, size_t workspace_bytes,
                      cudaStream_t stream);

// ── 11. decode-time indexer (src/cuda/indexer_logits_paged.cu) ─────────────────────────────────
// Variants (both write −inf at the same places: j ≥ context_lens[r], and every key of a page id outside
// [0, num_pages)):
//   kWgmma (HI == 64, next_n 1 or 2, q_fp8 and cache 16-byte aligned, sm_90a): one 64-key page per
//       e4m3 wgmma tile against all next_n·64 (row, head) pairs; the per-element arithmetic of the
//       kWgmma indexer_logits (the tensor core's narrower fp8 accumulation, the same head-sum order),
//       so it equals kWgmma indexer_logits on the gathered keys (indexer_logits_paged_wgmma.cu).
//   kMma (HI % 16 == 0, next_n·HI ≤ 128, q_fp8 and cache 16-byte aligned, sm_89+): e4m3 mma.sync with
//       indexer_logits kMma's per-element arithmetic, bitwise equal to it on the gathered keys
//       (indexer_logits_paged_mma.cu).
//   kExact (any HI, every arch): indexer_logits kExact's arithmetic per (row, key), bitwise deterministic.
// kAuto: kWgmma, then kMma where they run, else kExact (the inputs are always e4m3).
void indexer_logits_paged(const PagedIndexerParams& p, float* logits, cudaStream_t stream,
                          Variant variant = Variant::kAuto);
void paged_to_physical(int B, int next_n, int K, const int32_t* block_table, int max_blocks, int num_pages,
                       int32_t* indices, cudaStream_t stream);

// ── 6–9, 11. attention side ───────────────────────────────────────────────────────────────────
// Index / range data the host cannot see without a sync: an index outside [0, S) is invalid (as
// −1), a malformed key range (ks > ke, outside [0, S]) is empty; topk_length is clamped to [0, K].
// q / kv come as fp32 or bf16 (AttentionParams::dtype). kExact kernels (every op below) widen bf16
// on load and compute in fp32, bitwise deterministic. The tensor-core variants round q, kv (when
// given fp32) and P to bf16 and accumulate in fp32 (relative error ~1e-3..1e-2 against fp64;
// docs/kernels/sparse_attention.md).

// 6. sparse_attention_forward — FlashMLA flash_mla_sparse_fwd semantics.
//    kWgmma (sparse_attention_forward_wgmma.cu): Dqk 576, Dv 512, H % 64 == 0, sm_90a, q/kv 16-byte
//      aligned. kMma (sparse_attention_forward_pipelined.cu): mma.sync + cp.async gathers, the same
//      shapes, sm_80+ with ≥ 156 KiB of shared memory per block. Both read bf16 q/kv as they are; given
//      fp32 they convert kv to bf16 once into the workspace (S·1152 bytes, 16-byte aligned).
//    kExact: any H / Dqk / Dv, no workspace.
size_t sparse_attention_forward_workspace_bytes(const AttentionParams& p, Variant variant = Variant::kAuto);
void sparse_attention_forward(const AttentionParams& p, const AttentionForwardOut& o, void* workspace,
                              size_t workspace_bytes, cudaStream_t stream, Variant variant = Variant::kAuto);
// 7. sparse_attention_backward — deterministic: a stable radix sort of the selection gives each key
//    its (t, slot) entries in ascending order; dkv is summed key-major in that order.
//    kExact workspace ≈ 16·T·K + 4·T·H + 4·S bytes (+ cub's sort storage).
//    kCublas (sparse_attention_backward_bf16.cu, sm_80+, any shape): bf16 GEMMs over query chunks, dkv
//      reduced key-major in the same sorted order (bitwise reproducible for fixed shapes, workspace
//      size and device). Its query sizes the default chunk (≤ ~4 GiB); a smaller workspace, down to
//      the one-query size, runs smaller chunks. Its first call on a device creates a cached cuBLAS
//      handle (allocates: keep that call out of CUDA-graph capture).
size_t sparse_attention_backward_workspace_bytes(const AttentionParams& p, Variant variant = Variant::kAuto);
void sparse_attention_backward(const AttentionParams& p, const AttentionBackwardArgs& b, void* workspace,
                               size_t workspace_bytes, cudaStream_t stream, Variant variant = Variant::kAuto);
// 8. dense_attention_forward / dense_attention_backward — MQA over key ranges (kExact only).
//    Backward workspace: Δ, 4·T·H bytes.
void dense_attention_forward(const AttentionParams& p, const AttentionForwardOut& o, cudaStream_t stream);
size_t dense_attention_backward_workspace_bytes(const AttentionParams& p);
void dense_attention_backward(const AttentionParams& p, const AttentionBackwardArgs& b, void* workspace,
                              size_t workspace_bytes, cudaStream_t stream);
// 9. indexer_kl.cu — kExact only, no workspace (the backward parks p̃ in d_index_logits first).
void indexer_kl_forward(const IndexerKlParams& p, float* loss, cudaStream_t stream);
void indexer_kl_backward(const IndexerKlParams& p, const float* dloss, float* d_index_logits, cudaStream_t stream);
// 11. sparse_attention_decode.cu — kExact: split-KV over the K slots + combine; the split count
//     depends on the shapes only; workspace splits·B·next_n·H·513 floats (0 when one split suffices).
//     kMma: the bf16 tensor-core tile over the cache (H % 64 == 0, sm_80+), one block per row × 64
//     heads, no split-KV, no workspace. kAuto: kMma for bf16 q, kExact for fp32 q.
size_t sparse_attention_decode_workspace_bytes(const SparseDecodeParams& p, Variant variant = Variant::kAuto);
void sparse_attention_decode(const SparseDecodeParams& p, void* workspace, size_t workspace_bytes, cudaStream_t stream,
                             Variant variant = Variant::kAuto);

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
// The same with A and B in bf16 (bit patterns), C fp32, fp32 accumulation (cuBLAS's bf16 tensor-core
// GEMM): the projections of a GPU session with bf16 weights.
void gemm_bf16(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const uint16_t* A, int64_t lda, const uint16_t* B,
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

// ── the CUDA backend of dsa/backend.h (src/cuda/backend.cu) ───────────────────────────────────
// Every op on device pointers, in call order on `stream` (null: a stream the backend creates), on
// the device current when make_backend is called. `variant` is a class: an op that has that variant
// runs it (a dsa::Error when it cannot run the call), every other op runs its kAuto choice. The backend owns
// one workspace, grown (stream-ordered) to the largest query seen, so a call allocates only when a
// shape needs more than any call before it.
std::unique_ptr<Backend> make_backend(cudaStream_t stream = nullptr, Variant variant = Variant::kAuto);

}  // namespace dsa::cuda
