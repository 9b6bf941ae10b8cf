// topk_policy.h — the per-row budget rule of topk_select (ops.h §4, TopkPolicy), written once for
// the CPU (src/cpu/topk.cpp) and the GPU (src/cuda/topk_policy.cu): the row's softmax statistics and
// the cut k_t they imply. Everything here is fp64 so that the only difference between backends is
// the order of one sum (ops.h: k_t may differ only where the mass sits within rounding of p).
// Not part of the public API.
#pragma once

#include <cmath>
#include <cstdint>

#include "dsa/ops.h"

#if defined(__CUDACC__)
#define DSA_HOST_DEVICE __host__ __device__
#else
#define DSA_HOST_DEVICE
#endif

namespace dsa::detail {

// Checks a policy against the op's budget K (host): kind known, 1 ≤ k_max ≤ K or 0, and per kind
// p ∈ (0, 1], 1 ≤ k_min ≤ cap, a > 0 and b finite. Throws dsa::Error naming the policy and field.
void validate_topk_policy(const TopkPolicy& policy, int K, const char* op);

// The largest k_t a row may get: k_max, or K when k_max = 0.
DSA_HOST_DEVICE inline int topk_policy_cap(const TopkPolicy& policy, int K) {
  return policy.k_max > 0 ? policy.k_max : K;
}

// Whether the row's scores must be read beyond the selection (kMass / kEntropy).
DSA_HOST_DEVICE inline bool topk_policy_needs_stats(const TopkPolicy& policy) {
  return policy.kind == TopkPolicyKind::kMass || policy.kind == TopkPolicyKind::kEntropy;
}

// A score as the softmax sees it: NaN ≡ −inf (ops.h top-k order).
DSA_HOST_DEVICE inline double topk_policy_score(float x) {
  return x != x ? -HUGE_VAL : static_cast<double>(x);
}

// The unnormalised softmax weight of a score given the row maximum m (m of topk_policy_score):
//   finite m: exp(s − m);  m = +inf: 1 for the +inf keys, 0 else (they share the whole mass);
//   m = −inf (every key −inf or NaN): 1 (uniform: nothing distinguishes the keys).
DSA_HOST_DEVICE inline double topk_policy_weight(double s, double m) {
  const double inf = HUGE_VAL;
  if (m == -inf) return 1.0;
  if (m == inf) return s == inf ? 1.0 : 0.0;
  return s == -inf ? 0.0 : exp(s - m);
}

// The weight's contribution to Σ w·(s − m), the entropy's second term (0 where w = 0 or m infinite:
// then every key with weight shares one score and the term vanishes).
DSA_HOST_DEVICE inline double topk_policy_weighted_logit(double s, double m) {
  const double inf = HUGE_VAL;
  if (m == -inf || m == inf || s == -inf) return 0.0;
  return exp(s - m) * (s - m);
}

// k_t of kEntropy from the row's Z = Σ w and E = Σ w·(s − m) (n ≥ 1 keys in range):
// H = log Z − E / Z, k = ceil(a · exp(b·H)), clamped to [k_min, cap] and to n.
DSA_HOST_DEVICE inline int topk_policy_entropy_length(const TopkPolicy& policy, int cap, int n, double z, double e) {
  const double h = log(z) - e / z;
  const double want = ceil(policy.a * exp(policy.b * h));
  // Compared in double first: a huge a·exp(b·H) (or +inf) must not overflow an int conversion.
  int k = want >= static_cast<double>(cap) ? cap : want <= static_cast<double>(policy.k_min) ? policy.k_min : static_cast<int>(want);
  return k < n ? k : n;
}

// k_t of kMass, the walk over the selection's weights: the smallest k whose prefix mass reaches
// p·Z; p ≥ 1 keeps every key (the exact limit, ops.h). `reached` = 0 when the walk over the cap
// selected keys never reached the target (then k = cap).
DSA_HOST_DEVICE inline int topk_policy_mass_clamp(const TopkPolicy& policy, int cap, int n, int reached) {
  int k = policy.p >= 1.0 || reached == 0 ? cap : reached;
  if (k < policy.k_min) k = policy.k_min;
  if (k > cap) k = cap;
  return k < n ? k : n;
}

}  // namespace dsa::detail
