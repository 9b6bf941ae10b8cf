// indexer_common.h — internal helpers shared by the indexer ops (indexer.cpp, indexer_backward.cpp)
// and topk.cpp. Not part of the public API.
#pragma once

#include "dsa/ops.h"

namespace dsa::cpu::detail {

// Checks every field of an IndexerParams (shapes, pointers, ranges, k_scale vs precision).
// Throws dsa::Error "<op>: <argument> ..." before anything is written.
void validate_indexer_params(const IndexerParams& p, const char* op);

// indexer_backward (indexer_backward.cpp) up to its output pointers: the forward params (as above),
// fp32 precision, 0 ≤ K ≤ kMaxTopK, indices null iff K = 0, every selected key −1 or in
// [ks[t], ke[t]). Reads ks, ke and indices, so they must be in host memory (the GPU test wrapper runs
// it on its host copy).
void validate_indexer_backward_inputs(const IndexerBackwardParams& p, const char* op);

// 1 ≤ K ≤ kMaxTopK (topk.cpp).
void require_topk_budget(int K, const char* op);

// k_t of a kMass / kEntropy row of n ≥ 1 keys (topk_policy.cpp): the row's max, Z = Σ w and
// E = Σ w·(s − m) in fp64, then the cut over sel[0, count), the row's selection best first (absolute
// key ids; row points at key ks).
int topk_policy_length(const TopkPolicy& policy, int cap, const float* row, int n, const int32_t* sel, int count, int32_t ks);

}  // namespace dsa::cpu::detail
