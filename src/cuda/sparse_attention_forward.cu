// sparse_attention_forward.cu — op 6 on the GPU: FlashMLA flash_mla_sparse_fwd semantics (q [T,H,Dqk],
// kv [S,Dqk] shared by all heads, indices [T,K] with −1 or ≥ S invalid, optional topk_length,
// natural-log lse, +inf lse / 0 out on empty rows, optional max_logits), any H, Dqk, Dv ≤ Dqk.
//
// v1 (this file, every arch): fp32 CUDA cores, grid (T, ⌈H/kTileHeads⌉), one block = one query ×
//   8 heads; the 16-key chunks of its index row stream through shared memory (attention_common.cuh,
//   forward_tile). Deterministic, no workspace. Shared memory: forward_smem_bytes(Dqk, Dv)
//   (72.6 KiB at 576/512, within sm_89's 99 KiB opt-in limit).
// kSparseAttentionBf16Version (opt-in, sparse_attention_forward_bf16.cu): bf16 mma.sync tensor cores
//   for Dqk = 576, Dv = 512, H % 64 == 0 on devices with ≥ 156 KiB of shared memory per block;
//   any other shape / device runs v1.
// kSparseAttentionPipelinedVersion (opt-in, sparse_attention_forward_pipelined.cu): the same MMAs with
//   kv converted to bf16 once into the workspace and gathered by cp.async, double-buffered.
// kSparseAttentionWgmmaVersion (opt-in, sparse_attention_forward_wgmma.cu): Hopper wgmma (sm_90a code on
//   an sm_90 device), Dqk = 576, Dv = 512, H % 64 == 0, the v4 workspace; otherwise it runs as v4.
// Every other version number runs v1.
#include "cuda/attention_common.cuh"
#include "cuda/sparse_attention_forward_wgmma.cuh"
#include "dsa/cuda_ops.h"

namespace dsa::cuda {
namespace {

constexpr const char* kOp = "sparse_attention_forward";

}  // namespace

size_t sparse_attention_forward_workspace_bytes(const AttentionParams& p, int version) {
  attn::validate_params(p, true, kOp);
  if (version == kSparseAttentionWgmmaVersion)   // v5, or v4 where v5 does not apply (same bytes)
    return attn::sparse_forward_wgmma_applies(p) ? attn::sparse_forward_wgmma_workspace(p)
                                                 : attn::sparse_forward_pipelined_workspace(p);
  return version == kSparseAttentionPipelinedVersion ? attn::sparse_forward_pipelined_workspace(p) : 0;
}

void sparse_attention_forward(const AttentionParams& p, const AttentionForwardOut& o, cudaStream_t stream, int version) {
  sparse_attention_forward(p, o, nullptr, 0, stream, version);
}

void sparse_attention_forward(const AttentionParams& p, const AttentionForwardOut& o, void* workspace,
                              size_t workspace_bytes, cudaStream_t stream, int version) {
  attn::validate_params(p, true, kOp);
  ::dsa::detail::require_ptr(o.out, kOp, "out");
  ::dsa::detail::require_ptr(o.lse, kOp, "lse");
  if (version == kSparseAttentionWgmmaVersion) {
    if (attn::sparse_forward_wgmma_applies(p) && p.S > 0) {
      const size_t need = attn::sparse_forward_wgmma_workspace(p);
      DSA_REQUIRE(workspace != nullptr && workspace_bytes >= need, kOp, "workspace_bytes = ", workspace_bytes,
                  " (workspace ", workspace ? "set" : "null", ") is smaller than the ", need,
                  " B sparse_attention_forward_workspace_bytes asks for (version ", version, ")");
      DSA_REQUIRE(reinterpret_cast<uintptr_t>(workspace) % attn::kWgmmaWorkspaceAlign == 0, kOp,
                  "workspace must be ", attn::kWgmmaWorkspaceAlign, "-byte aligned (cp.async gathers), version ",
                  version);
      attn::sparse_forward_wgmma(p, o, workspace, stream, kOp);
      return;
    }
    version = kSparseAttentionPipelinedVersion;   // v5 does not apply: v4, then v3, then v1
  }
  if (version == kSparseAttentionPipelinedVersion && attn::sparse_forward_pipelined_fits(p) && p.S > 0) {
    const size_t need = attn::sparse_forward_pipelined_workspace(p);
    DSA_REQUIRE(workspace != nullptr && workspace_bytes >= need, kOp, "workspace_bytes = ", workspace_bytes,
                " (workspace ", workspace ? "set" : "null", ") is smaller than the ", need,
                " B sparse_attention_forward_workspace_bytes asks for (version ", version, ")");
    attn::sparse_forward_pipelined(p, o, workspace, stream, kOp);
    return;
  }
  if (version == kSparseAttentionBf16Version && attn::sparse_forward_bf16_fits(p)) {
    attn::sparse_forward_bf16(p, o, stream, kOp);
    return;
  }
  const size_t smem = attn::forward_smem_bytes(p.Dqk, p.Dv);
  attn::set_smem(attn::forward_v1_kernel<attn::SparseKeys>, smem, kOp);
  if (p.T == 0) return;
  attn::ForwardArgs<attn::SparseKeys> a{{p.indices, p.topk_length, p.K, p.S, p.kv, p.Dqk}, p.T, p.H, p.Dqk, p.Dv, p.scale, p.q, o.out,
                      o.lse, o.max_logits};
  const dim3 grid(p.T, detail::ceil_div(p.H, attn::kTileHeads));
  attn::forward_v1_kernel<<<grid, attn::kThreads, smem, stream>>>(a);
  DSA_CUDA_LAUNCH_CHECK(kOp);
}

}  // namespace dsa::cuda
