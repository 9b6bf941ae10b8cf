// indexer_logits_mma.cuh — variant kMma of indexer_logits (FP8 tensor cores), host side.
// Defined in indexer_logits_mma.cu; dispatched from indexer_logits.cu / indexer_topk.cu.
#pragma once

#include "dsa/cuda_ops.h"

namespace dsa::cuda::detail {

// True when `version` selects the tensor-core path and it applies (kFp8, DI == 128, sm_89+).
bool use_logits_mma(const IndexerParams& p);
void indexer_logits_mma(const IndexerParams& p, float* logits, cudaStream_t stream);
void indexer_logits_v1(const IndexerParams& p, float* logits, cudaStream_t stream);

}  // namespace dsa::cuda::detail
