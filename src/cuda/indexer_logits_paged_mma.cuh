// indexer_logits_paged_mma.cuh — variant kMma of indexer_logits_paged (FP8 mma.sync, sm_89+), host
// side. Defined in indexer_logits_paged_mma.cu; dispatched from indexer_logits_paged.cu.
#pragma once

#include "dsa/cuda_ops.h"

namespace dsa::cuda::detail {

// True when the kMma variant runs p: HI a multiple of 16 with next_n·HI ≤ 128, q_fp8 and cache
// 16-byte aligned, an sm_89+ device, and the binary carries sm_89+ code of the kernel.
bool use_paged_logits_mma(const PagedIndexerParams& p);
void indexer_logits_paged_mma(const PagedIndexerParams& p, float* logits, cudaStream_t stream);

}  // namespace dsa::cuda::detail
