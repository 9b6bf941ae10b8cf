// indexer_logits_paged_wgmma.cuh — variant kWgmma of indexer_logits_paged (FP8 wgmma, sm_90a), host
// side. Defined in indexer_logits_paged_wgmma.cu; dispatched from indexer_logits_paged.cu.
#pragma once

#include "dsa/cuda_ops.h"

namespace dsa::cuda::detail {

// True when the kWgmma variant runs p: HI == 64, next_n ∈ {1, 2}, q_fp8 and cache 16-byte aligned, an
// sm_90 device, and the binary carries this file's sm_90a code (probed once). The probe (first call
// only) launches a one-thread kernel and copies 4 bytes back: it allocates and synchronizes once, so
// make the first kWgmma call outside CUDA-graph capture.
bool use_paged_logits_wgmma(const PagedIndexerParams& p);
void indexer_logits_paged_wgmma(const PagedIndexerParams& p, float* logits, cudaStream_t stream);

}  // namespace dsa::cuda::detail
