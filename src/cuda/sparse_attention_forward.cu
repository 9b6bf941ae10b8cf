// sparse_attention_forward.cu — op 6 on the GPU: FlashMLA flash_mla_sparse_fwd semantics (q [T,H,Dqk],
// kv [S,Dqk] shared by all heads, indices [T,K] with −1 or ≥ S invalid, optional topk_length,
// natural-log lse, +inf lse / 0 out on empty rows, optional max_logits), any H, Dqk, Dv ≤ Dqk.
//
// The one dispatch point of the op's variants (cuda_ops.h §6): resolve_variant picks, this file runs it.
//   kExact (this file, every arch): fp32 CUDA cores, grid (T, ⌈H/kTileHeads⌉), one block = one query ×
//     8 heads; the 16-key chunks of its index row stream through shared memory (attention_common.cuh,
//     forward_tile). Deterministic, no workspace. Shared memory: forward_smem_bytes(Dqk, Dv)
//     (72.6 KiB at 576/512, within sm_89's 99 KiB opt-in limit).
//   kMma (sparse_attention_forward_pipelined.cu): bf16 mma.sync, kv gathered by cp.async, double-buffered.
//   kWgmma (sparse_attention_forward_wgmma.cu): Hopper wgmma.
#include "cuda/attention_common.cuh"
#include "cuda/sparse_attention_forward_wgmma.cuh"
#include "dsa/cuda_ops.h"

namespace dsa::cuda {
namespace {

constexpr const char* kOp = "sparse_attention_forward";

}  // namespace

size_t sparse_attention_forward_workspace_bytes(const AttentionParams& p, Variant variant) {
  attn::validate_params(p, true, kOp);
  switch (resolve_variant(p, variant, kOp)) {
    case Variant::kWgmma: return attn::sparse_forward_wgmma_workspace(p);
    case Variant::kMma: return attn::sparse_forward_pipelined_workspace(p);
    default: return 0;
  }
}

void sparse_attention_forward(const AttentionParams& p, const AttentionForwardOut& o, void* workspace,
                              size_t workspace_bytes, cudaStream_t stream, Variant variant) {
  attn::validate_params(p, true, kOp);
  ::dsa::detail::require_ptr(o.out, kOp, "out");
  ::dsa::detail::require_ptr(o.lse, kOp, "lse");
  const Variant v = resolve_variant(p, variant, kOp);
  if (v == Variant::kWgmma || v == Variant::kMma) {
    const size_t need = v == Variant::kWgmma ? attn::sparse_forward_wgmma_workspace(p)
                                             : attn::sparse_forward_pipelined_workspace(p);
    DSA_REQUIRE(need == 0 || (workspace != nullptr && workspace_bytes >= need), kOp, "workspace_bytes = ",
                workspace_bytes, " (workspace ", workspace ? "set" : "null", ") is smaller than the ", need,
                " B sparse_attention_forward_workspace_bytes asks for (variant ", variant_name(v), ")");
    DSA_REQUIRE(need == 0 || reinterpret_cast<uintptr_t>(workspace) % attn::kWgmmaWorkspaceAlign == 0, kOp,
                "workspace must be ", attn::kWgmmaWorkspaceAlign, "-byte aligned (cp.async gathers), variant ",
                variant_name(v));
    if (p.S > 0 && p.T > 0 && v == Variant::kWgmma) {
      attn::sparse_forward_wgmma(p, o, workspace, stream, kOp);
      return;
    }
    if (p.S > 0 && p.T > 0) {
      attn::sparse_forward_pipelined(p, o, workspace, stream, kOp);
      return;
    }
  }   // no key to gather: every row is empty, the exact kernel writes the empty-row convention
  attn::launch_forward_v1(p, attn::sparse_keys(p), o, stream, kOp);
}

}  // namespace dsa::cuda
