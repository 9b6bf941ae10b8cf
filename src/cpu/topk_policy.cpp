// topk_policy.cpp — the per-row budget of topk_select on the CPU (ops.h §4 TopkPolicy): the row's
// softmax statistics and the cut k_t (the rule itself: src/common/topk_policy.h, shared with the GPU).
// Built with -fno-trapping-math (CMakeLists.txt): GCC then if-converts the comparisons of
// topk_policy_exp and vectorises the weight loop. The flag only lets the compiler assume that no one
// reads the floating-point exception flags (nothing does); every result is the scalar code's. Measured
// on one 8192-key row, K = 64, p = 0.9 (2-core EPYC, portable build, a loaded machine): topk_select
// 12–13 µs fixed, 41–50 µs with the mass policy (two runs; with libm's scalar exp: 15 µs vs 165 µs),
// 81 µs with the entropy policy (two sums).
#include <algorithm>
#include <cmath>
#include <limits>

#include "common/topk_policy.h"
#include "cpu/indexer_common.h"

namespace dsa::cpu::detail {
namespace {

constexpr int kLanes = 8;   // interleaved partial sums of the row statistics

// Z += Σ w (kTerm = kWeight) or E += Σ w·x (kTerm = kWeightedLogit) over n keys, w = topk_policy_exp(x),
// x = clean(s) − m, in kLanes fp64 partial sums (a fixed order: deterministic). One sum per loop: with
// both in one loop GCC no longer vectorises it (the entropy then costs two passes of exp, both
// vectorised, instead of one scalar pass). w·x is formed in fp32 (6e-8 relative, far inside the cut's
// slack) and is 0 where w = 0.
enum class RowTerm { kWeight, kWeightedLogit };
template <RowTerm kTerm>
void row_sum(const float* row, int n, float mx, double* lane) {
  for (int i = 0; i + kLanes <= n; i += kLanes) {
    float x[kLanes], w[kLanes];
    for (int j = 0; j < kLanes; ++j) x[j] = ::dsa::detail::topk_policy_clean(row[i + j]) - mx;   // −inf for −inf / NaN
    for (int j = 0; j < kLanes; ++j) w[j] = ::dsa::detail::topk_policy_exp(x[j]);
    for (int j = 0; j < kLanes; ++j) {
      const float term = kTerm == RowTerm::kWeight ? w[j] : (w[j] > 0.0f ? w[j] * x[j] : 0.0f);
      lane[j] += static_cast<double>(term);
    }
  }
}

}  // namespace

int topk_policy_length(const TopkPolicy& policy, int cap, const float* row, int n, const int32_t* sel, int count, int32_t ks) {
  namespace d = ::dsa::detail;
  float lane_max[kLanes];
  for (float& v : lane_max) v = -std::numeric_limits<float>::infinity();
  int i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) lane_max[j] = std::max(lane_max[j], d::topk_policy_clean(row[i + j]));
  float mx = lane_max[0];
  for (int j = 1; j < kLanes; ++j) mx = std::max(mx, lane_max[j]);
  for (; i < n; ++i) mx = std::max(mx, d::topk_policy_clean(row[i]));
  const bool entropy = policy.kind == TopkPolicyKind::kEntropy;
  double z = 0.0, e = 0.0;
  int done = 0;
  if (std::isfinite(mx)) {   // else every key −inf / NaN (uniform) or +inf keys sharing the mass: weights 0 or 1
    double lane_z[kLanes] = {}, lane_e[kLanes] = {};
    row_sum<RowTerm::kWeight>(row, n, mx, lane_z);
    if (entropy) row_sum<RowTerm::kWeightedLogit>(row, n, mx, lane_e);
    for (int j = 0; j < kLanes; ++j) z += lane_z[j], e += lane_e[j];
    done = n / kLanes * kLanes;
  }
  for (i = done; i < n; ++i) {
    z += static_cast<double>(d::topk_policy_weight(d::topk_policy_clean(row[i]), mx));
    if (entropy) e += d::topk_policy_weighted_logit(d::topk_policy_clean(row[i]), mx);
  }
  if (entropy) return d::topk_policy_entropy_length(policy, cap, n, z, e);
  const double target = policy.p * z;
  double mass = 0.0;
  int reached = 0;
  for (int j = 0; j < count && reached == 0; ++j) {
    mass += static_cast<double>(d::topk_policy_weight(d::topk_policy_clean(row[sel[j] - ks]), mx));
    if (mass >= target) reached = j + 1;
  }
  return d::topk_policy_mass_clamp(policy, cap, n, reached);
}

}  // namespace dsa::cpu::detail
