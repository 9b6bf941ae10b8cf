// sparse_attention_forward_wgmma.cuh — variant kWgmma of sparse_attention_forward (bf16 wgmma,
// sm_90a), host side. Defined in sparse_attention_forward_wgmma.cu; dispatched from
// sparse_attention_forward.cu.
#pragma once

#include "dsa/cuda_ops.h"

namespace dsa::cuda::attn {

// Alignment kWgmma needs of its workspace (16-byte cp.async gathers from the bf16 kv copy).
inline constexpr size_t kWgmmaWorkspaceAlign = 16;

// True when v5 runs this shape here: Dqk 576, Dv 512, H % 64 == 0, an sm_90 device with enough
// opt-in shared memory, and a binary carrying this file's sm_90a code (probed once: the first call
// launches a one-thread kernel and copies 4 bytes back, so make it outside CUDA-graph capture).
bool sparse_forward_wgmma_applies(const AttentionParams& p);
// Bytes of the bf16 kv copy (S·576·2, the same as v4's workspace) for fp32 inputs; 0 for bf16
// inputs (kv_bf16 is gathered directly).
size_t sparse_forward_wgmma_workspace(const AttentionParams& p);
// fp32 inputs: converts kv to bf16 into `workspace` (16-byte aligned, ≥ sparse_forward_wgmma_workspace
// bytes); bf16 inputs: reads q_bf16 / kv_bf16 as they are (workspace unused, may be null). Then
// launches the kernel. The caller checked sparse_forward_wgmma_applies and p.S > 0.
void sparse_forward_wgmma(const AttentionParams& p, const AttentionForwardOut& o, void* workspace,
                          cudaStream_t stream, const char* op);

}  // namespace dsa::cuda::attn
