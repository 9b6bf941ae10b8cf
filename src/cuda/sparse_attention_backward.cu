// sparse_attention_backward.cu — op 7 on the GPU: dq [T,H,Dqk] and dkv [S,Dqk] of the sparse MQA
// attention (ops.h §6–8, FlashAttention-2 algebra), DETERMINISTIC: no float atomics anywhere.
//
// v1 (every arch), five launches on `stream`, all scratch in the caller's workspace:
//   1. delta     Δ[t,h] = out·dout                            (one warp per row)
//   2–4. the key-major transposition (key_major.cuh, shared with v3): key = indices[t,j] if slot j
//      is valid (j < len, 0 ≤ idx < S) else S, value = t·K+j; a stable radix sort leaves every key's
//      entries contiguous and in ascending (t, j) order; offsets[s] = its first entry, s ∈ [0, S]
//   5. dq        query-major tiles (attention_common.cuh dq_tile), grid (T, ⌈H/8⌉)
//   6. dkv       key-major: block s walks its entries in sorted order and sums, per entry, all H
//                heads (dkv_key); each dkv row is therefore summed in one fixed order.
// Workspace: Δ (T·H floats) + 4 int32 arrays of T·K (sort keys/values in and out) + (S+1) offsets
// + cub's temp storage; ≈ 16·T·K bytes (128 MiB at T = 4096, K = 2048).
// kCublas (sm_80+, any shape): the bf16 tensor-core backward of sparse_attention_backward_bf16.cu
// (cuBLAS GEMMs over query chunks, same determinism, its own workspace size); this file is the one
// dispatch point of the op (resolve_variant picks), and the code above is kExact.
// The key-major pass recomputes the scores (as FlashAttention-2's dkv pass does); its cost is the
// re-read of q[t] and dout[t] per entry (docs/kernels/sparse_attention.md has the numbers).
#include "cuda/attention_common.cuh"
#include "cuda/key_major.cuh"
#include "dsa/cuda_ops.h"

namespace dsa::cuda {
namespace {

constexpr const char* kOp = "sparse_attention_backward";

struct Workspace {
  float* delta;
  attn::KeyMajorBuffers km;   // the transposed index list (key_major.cuh)
  size_t total;
};

Workspace plan(const AttentionParams& p, void* base) {
  detail::WorkspaceCarver ws(base);
  Workspace w{};
  w.delta = ws.take<float>(static_cast<size_t>(p.T) * p.H);
  w.km = attn::carve_key_major(ws, p.T * p.K, p.S, kOp);
  w.total = ws.used();
  return w;
}

void validate_shape(const AttentionParams& p) {
  attn::validate_params(p, true, kOp);
  DSA_REQUIRE(static_cast<long long>(p.T) * p.K <= INT32_MAX, kOp, "T·K = ", static_cast<long long>(p.T) * p.K,
              " must fit in int32 (the transposed index list is int32)");
}

void validate(const AttentionParams& p, const AttentionBackwardArgs& b) {
  validate_shape(p);
  ::dsa::detail::require_ptr(b.dout, kOp, "dout");
  ::dsa::detail::require_ptr(b.out, kOp, "out");
  ::dsa::detail::require_ptr(b.lse, kOp, "lse");
  ::dsa::detail::require_ptr(b.dq, kOp, "dq");
  ::dsa::detail::require_ptr(b.dkv, kOp, "dkv");
}

// ── kernels ──────────────────────────────────────────────────────────────────────────────────
__global__ void sparse_bwd_delta(const float* out, const float* dout, int64_t rows, int Dv, float* delta) {
  attn::row_delta(out, dout, rows, Dv, delta);
}

}  // namespace

size_t sparse_attention_backward_workspace_bytes(const AttentionParams& p, Variant variant) {
  attn::validate_params(p, true, kOp);
  if (resolve_variant(p, variant, kOp) == Variant::kCublas) return attn::sparse_backward_bf16_workspace(p, kOp);
  validate_shape(p);
  return plan(p, nullptr).total;
}

void sparse_attention_backward(const AttentionParams& p, const AttentionBackwardArgs& b, void* workspace,
                               size_t workspace_bytes, cudaStream_t stream, Variant variant) {
  validate(p, b);
  if (resolve_variant(p, variant, kOp) == Variant::kCublas) {
    attn::sparse_backward_bf16(p, b, workspace, workspace_bytes, stream, kOp);
    return;
  }
  Workspace w = plan(p, nullptr);
  DSA_REQUIRE(workspace != nullptr && workspace_bytes >= w.total, kOp, "workspace_bytes = ", workspace_bytes,
              " (workspace ", workspace ? "set" : "null", ") is smaller than the ", w.total,
              " B sparse_attention_backward_workspace_bytes asks for");
  w = plan(p, workspace);
  const attn::SparseKeys keys = attn::sparse_keys(p);
  attn::set_backward_v1_smem<attn::SparseKeys>(p, kOp);
  const int n = p.T * p.K;
  const int64_t rows = static_cast<int64_t>(p.T) * p.H;
  if (rows > 0) {
    const int64_t threads = rows * detail::kWarpSize;
    sparse_bwd_delta<<<detail::ceil_div(threads, attn::kThreads), attn::kThreads, 0, stream>>>(b.out, b.dout, rows,
                                                                                              p.Dv, w.delta);
    DSA_CUDA_LAUNCH_CHECK(kOp);
  }
  attn::key_major_fill(keys, 0, p.T, w.km, stream, kOp);
  attn::key_major_sort(n, p.S, w.km, stream, kOp);
  attn::launch_dq_v1(p, keys, b, w.delta, stream, kOp);
  attn::launch_dkv_v1(p, keys, b, w.delta, w.km.vals_out, w.km.offsets, stream, kOp);
}

}  // namespace dsa::cuda
