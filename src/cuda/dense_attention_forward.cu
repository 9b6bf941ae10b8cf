// dense_attention_forward.cu — op 8 forward on the GPU: MQA attention of q [T,H,Dqk] over the key
// ranges [ks[t], ke[t]) of kv [S,Dqk] (V = first Dv dims). The dense warm-up target and the oracle
// of the sparse kernels (sparse with every key of the range selected ≡ dense).
//
// v1 (every arch): the sparse forward's tile (attention_common.cuh, forward_tile) over a DenseKeys
//   source: grid (T, ⌈H/kTileHeads⌉), fp32, deterministic, no workspace. A malformed range
//   (ks > ke or outside [0, S]) is treated as empty (cuda_ops.h: the device cannot throw on data).
#include "cuda/attention_common.cuh"
#include "dsa/cuda_ops.h"

namespace dsa::cuda {
namespace {

constexpr const char* kOp = "dense_attention_forward";

}  // namespace

void dense_attention_forward(const AttentionParams& p, const AttentionForwardOut& o, cudaStream_t stream) {
  attn::validate_params(p, false, kOp);
  ::dsa::detail::require_ptr(o.out, kOp, "out");
  ::dsa::detail::require_ptr(o.lse, kOp, "lse");
  const size_t smem = attn::forward_smem_bytes(p.Dqk, p.Dv);
  attn::set_smem(attn::forward_v1_kernel<attn::DenseKeys>, smem, kOp);
  if (p.T == 0) return;
  attn::ForwardArgs<attn::DenseKeys> a{{p.ks, p.ke, p.S, p.kv, p.Dqk}, p.T, p.H, p.Dqk, p.Dv, p.scale, p.q, o.out, o.lse, o.max_logits};
  const dim3 grid(p.T, detail::ceil_div(p.H, attn::kTileHeads));
  attn::forward_v1_kernel<<<grid, attn::kThreads, smem, stream>>>(a);
  DSA_CUDA_LAUNCH_CHECK(kOp);
}

}  // namespace dsa::cuda
