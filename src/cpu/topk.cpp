// topk.cpp — op 4, topk_select: the K best keys of every row of precomputed logits.
// The selection rule lives in topk_stream.h and is shared with the fused indexer_topk (op 5).
#include "common/check.h"
#include "cpu/indexer_common.h"
#include "cpu/topk_stream.h"
#include "dsa/ops.h"

namespace dsa::cpu {

namespace detail {
// Shared by topk_select and indexer_topk: 1 ≤ K ≤ kMaxTopK.
void require_topk_budget(int K, const char* op) {
  if (K < 1 || K > kMaxTopK) ::dsa::detail::fail(op, "K = ", K, " must be in [1, kMaxTopK = ", kMaxTopK, "]");
}
}  // namespace detail

void topk_select(const TopkParams& p) {
  constexpr const char* op = "topk_select";
  ::dsa::detail::require_non_negative(p.T, op, "T");
  ::dsa::detail::require_non_negative(p.S, op, "S");
  detail::require_topk_budget(p.K, op);
  ::dsa::detail::require_ptr(p.logits, op, "logits");
  ::dsa::detail::require_ptr(p.indices, op, "indices");
  ::dsa::detail::require_ranges(p.ks, p.ke, p.T, p.S, op);

#pragma omp parallel
  {
    detail::TopkStream stream(p.K);  // one O(K) buffer per thread
#pragma omp for schedule(dynamic, 16)
    for (int t = 0; t < p.T; ++t) {
      const float* row = p.logits + static_cast<int64_t>(t) * p.S;
      stream.reset();
      // Only [ks, ke) is read (ops.h: entries outside the range are never read).
      stream.offer_block(row + p.ks[t], p.ke[t] - p.ks[t], p.ks[t]);
      stream.finish(p.indices + static_cast<int64_t>(t) * p.K);
    }
  }
}

}  // namespace dsa::cpu
