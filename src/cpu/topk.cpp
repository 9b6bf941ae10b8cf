// topk.cpp — op 4, topk_select: the K best keys of every row of precomputed logits.
// The selection rule lives in topk_stream.h and is shared with the fused indexer_topk (op 5).
#include <algorithm>
#include <cmath>
#include <limits>

#include "common/check.h"
#include "common/topk_policy.h"
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
  ::dsa::detail::validate_topk_policy(p.policy, p.K, op);
  ::dsa::detail::require_ptr(p.logits, op, "logits");
  ::dsa::detail::require_ptr(p.indices, op, "indices");
  ::dsa::detail::require_ranges(p.ks, p.ke, p.T, p.S, op);
  // The stream selects the cap best keys (cap = K for the default policy: today's rule, unchanged);
  // a policy then keeps a prefix of them.
  const int cap = ::dsa::detail::topk_policy_cap(p.policy, p.K);
  const bool stats = ::dsa::detail::topk_policy_needs_stats(p.policy);

#pragma omp parallel
  {
    detail::TopkStream stream(cap);  // one O(cap) buffer per thread
#pragma omp for schedule(dynamic, 16)
    for (int t = 0; t < p.T; ++t) {
      const int n = p.ke[t] - p.ks[t];
      const float* row = p.logits + static_cast<int64_t>(t) * p.S + p.ks[t];
      int32_t* out = p.indices + static_cast<int64_t>(t) * p.K;
      stream.reset();
      // Only [ks, ke) is read (ops.h: entries outside the range are never read).
      stream.offer_block(row, n, p.ks[t]);
      stream.finish(out);
      int k = std::min(cap, n);
      if (stats && n > 0) k = detail::topk_policy_length(p.policy, cap, row, n, out, k, p.ks[t]);
      if (stats || cap < p.K) std::fill(out + k, out + p.K, kInvalidIndex);   // (finish filled [n, cap))
      if (p.topk_length != nullptr) p.topk_length[t] = k;
    }
  }
}

}  // namespace dsa::cpu
