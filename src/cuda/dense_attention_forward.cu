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
  attn::launch_forward_v1(p, attn::dense_keys(p), o, stream, kOp);
}

}  // namespace dsa::cuda
