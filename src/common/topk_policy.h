// topk_policy.h — the per-row budget rule of topk_select (ops.h §4, TopkPolicy), written once for
// the CPU (src/cpu/topk.cpp) and the GPU (src/cuda/topk_policy.cu): the row's softmax statistics and
// the cut k_t they imply: fp32 weights exp(s − m) from one formula (topk_policy_exp), fp64 sums. The
// backends differ only in the order of the sums and in fused multiply-adds, so k_t may differ only
// where the mass criterion sits within ~1e-6 relative of its threshold (ops.h).
// Not part of the public API.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

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
DSA_HOST_DEVICE inline float topk_policy_clean(float x) { return x != x ? -HUGE_VALF : x; }

// exp(x) for x ≤ 0 in fp32 (Cephes expf: Cody–Waite reduction by ln 2 split in two, a degree-6
// polynomial, 2^n through the exponent bits), relative error ≲ 2^-22; x below kExpFloor counts as 0
// (a weight < 2^-125 of the row's largest, far below the fp64 sums' rounding). Plain arithmetic
// without calls, so a CPU loop over it vectorises and both backends evaluate one formula: the
// row's fp64 softmax statistics cost about as much as the selection itself instead of ~8× (libm exp).
DSA_HOST_DEVICE inline float topk_policy_exp(float x) {
  constexpr float kExpFloor = -87.0f;
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;   // ln 2 = hi + lo, hi exact in 9 bits
  const float xc = x < kExpFloor ? kExpFloor : x;
  // n = round(xc·log2 e) ≤ 0, by truncation of a positive value (vectorises without SSE4.1's round)
  const int32_t n = -static_cast<int32_t>(0.5f - xc * kLog2e);
  const float nf = static_cast<float>(n);
  const float r = (xc - nf * kLn2Hi) - nf * kLn2Lo;   // |r| ≤ ln2 / 2
  float poly = 1.9875691500e-4f;
  poly = poly * r + 1.3981999507e-3f;
  poly = poly * r + 8.3334519073e-3f;
  poly = poly * r + 4.1665795894e-2f;
  poly = poly * r + 1.6666665459e-1f;
  poly = poly * r + 5.0000001201e-1f;
  const float er = poly * (r * r) + r + 1.0f;
  const uint32_t bits = static_cast<uint32_t>(n + 127) << 23;   // 2^n, n ∈ [−125, 0]: a normal float
  float two_n;
  memcpy(&two_n, &bits, sizeof two_n);
  return x < kExpFloor ? 0.0f : er * two_n;
}

// The unnormalised softmax weight of a cleaned score s given the row maximum m:
//   finite m: exp(s − m) (topk_policy_exp);  m = +inf: 1 for the +inf keys, 0 else (they share the
//   whole mass);  m = −inf (every key −inf or NaN): 1 (uniform: nothing distinguishes the keys).
DSA_HOST_DEVICE inline float topk_policy_weight(float s, float m) {
  if (m == -HUGE_VALF) return 1.0f;
  if (m == HUGE_VALF) return s == HUGE_VALF ? 1.0f : 0.0f;
  return topk_policy_exp(s - m);   // s = −inf: exp(−inf) = 0
}

// The entropy's second term w·(s − m), 0 where w = 0 or m is infinite (then every key with weight
// shares one score and the term vanishes).
DSA_HOST_DEVICE inline double topk_policy_weighted_logit(float s, float m) {
  if (m == -HUGE_VALF || m == HUGE_VALF || s == -HUGE_VALF) return 0.0;
  const float x = s - m;
  return static_cast<double>(topk_policy_exp(x)) * static_cast<double>(x);
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
