// dense_attention_backward.cu — op 8 backward on the GPU: dq [T,H,Dqk] and dkv [S,Dqk] of the dense
// MQA attention over key ranges [ks[t], ke[t]). Deterministic: no float atomics.
//
// v1 (every arch), three launches on `stream`:
//   1. delta  Δ[t,h] = out·dout                       (one warp per row, into the workspace)
//   2. dq     query-major tiles over the row's range   (attention_common.cuh dq_tile)
//   3. dkv    key-major: block s visits every query t (ascending) whose clamped range holds s and
//             sums all H heads of it (dkv_key) — one fixed order per dkv row. The visit test is
//             O(T) per key: fine for the warm-up / oracle sizes this op serves; a tiled
//             FlashAttention-2 dkv pass is the v2 item (docs/kernels/dense_attention.md).
// Workspace: Δ, T·H floats.
#include "cuda/attention_common.cuh"
#include "dsa/cuda_ops.h"

namespace dsa::cuda {
namespace {

constexpr const char* kOp = "dense_attention_backward";

__global__ void dense_bwd_delta(const float* out, const float* dout, int64_t rows, int Dv, float* delta) {
  attn::row_delta(out, dout, rows, Dv, delta);
}

void validate(const AttentionParams& p, const AttentionBackwardArgs& b) {
  attn::validate_params(p, false, kOp);
  ::dsa::detail::require_ptr(b.dout, kOp, "dout");
  ::dsa::detail::require_ptr(b.out, kOp, "out");
  ::dsa::detail::require_ptr(b.lse, kOp, "lse");
  ::dsa::detail::require_ptr(b.dq, kOp, "dq");
  ::dsa::detail::require_ptr(b.dkv, kOp, "dkv");
}

}  // namespace

size_t dense_attention_backward_workspace_bytes(const AttentionParams& p) {
  attn::validate_params(p, false, kOp);
  return sizeof(float) * static_cast<size_t>(p.T) * p.H;
}

void dense_attention_backward(const AttentionParams& p, const AttentionBackwardArgs& b, void* workspace,
                              size_t workspace_bytes, cudaStream_t stream) {
  validate(p, b);
  const size_t need = sizeof(float) * static_cast<size_t>(p.T) * p.H;
  DSA_REQUIRE(need == 0 || (workspace != nullptr && workspace_bytes >= need), kOp, "workspace_bytes = ",
              workspace_bytes, " (workspace ", workspace ? "set" : "null", ") is smaller than the ", need,
              " B dense_attention_backward_workspace_bytes asks for");
  float* delta = static_cast<float*>(workspace);
  const attn::DenseKeys keys = attn::dense_keys(p);
  attn::set_backward_v1_smem<attn::DenseKeys>(p, kOp);
  const int64_t rows = static_cast<int64_t>(p.T) * p.H;
  if (rows > 0) {
    const int64_t threads = rows * detail::kWarpSize;
    dense_bwd_delta<<<detail::ceil_div(threads, attn::kThreads), attn::kThreads, 0, stream>>>(b.out, b.dout, rows,
                                                                                             p.Dv, delta);
    DSA_CUDA_LAUNCH_CHECK(kOp);
  }
  attn::launch_dq_v1(p, keys, b, delta, stream, kOp);
  attn::launch_dkv_v1(p, keys, b, delta, nullptr, nullptr, stream, kOp);
}

}  // namespace dsa::cuda
