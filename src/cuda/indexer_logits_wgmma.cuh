// indexer_logits_wgmma.cuh — variant kWgmma of indexer_logits (FP8 wgmma, sm_90a), host side.
// Defined in indexer_logits_wgmma.cu; dispatched from indexer_logits.cu.
#pragma once

#include "dsa/cuda_ops.h"

namespace dsa::cuda::detail {

// True when the kWgmma variant runs p: kFp8, HI == 64, DI == 128, q and k
// 16-byte aligned, an sm_90 device, and the binary carries this file's sm_90a code (probed once).
// The probe (first call only) launches a one-thread kernel and copies 4 bytes back: it allocates and
// synchronizes once, so make the first kWgmma call outside CUDA-graph capture.
bool use_logits_wgmma(const IndexerParams& p);
void indexer_logits_wgmma(const IndexerParams& p, float* logits, cudaStream_t stream);
// Tuning hook (bench, tests): runs v3 configuration `config` (0 = the default) with no applicability
// check (the caller checks use_logits_wgmma), returns its name, or nullptr past the last one.
const char* run_logits_wgmma_config(const IndexerParams& p, float* logits, cudaStream_t stream, int config);

}  // namespace dsa::cuda::detail
