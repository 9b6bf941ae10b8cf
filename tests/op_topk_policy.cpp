// op_topk_policy.cpp — row topk_policy of the test table: topk_select (op 4) with a per-row budget
// (ops.h §4 TopkPolicy: kFixed with a cap, kMass, kEntropy) on the Backend under test, against an
// independent float64 reference:
//   * order: a stable fp64 sort by (score desc, index asc), NaN ≡ −inf; row t must hold exactly the
//     first k_t keys of it, then −1, and topk_length[t] = k_t;
//   * k_t: recomputed in long double with libm's exp. The mass criterion is a threshold on a sum of
//     fp32 weights, so a backend may land on the neighbouring k where the prefix mass is within
//     rounding of p·Z; the check accepts exactly the k whose criterion holds up to kCutRelTol;
//   * invariants: the default policy ≡ today's op bit for bit (with and without topk_length); kMass
//     at p = 1 with k_max ≥ L selects every key, and sparse attention over it ≡ dense attention;
//     a cap keeps a prefix of the uncapped selection; reruns are bitwise equal.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "attention_ref.h"
#include "table.h"

namespace dsa::test {
namespace {

constexpr float kNanF = std::numeric_limits<float>::quiet_NaN();
constexpr float kInfF = std::numeric_limits<float>::infinity();
// Relative slack of the cut criteria. The op's weights are fp32: exp's own error ≲ 2^-22 relative,
// plus the rounding of x = s − m, ≲ 2^-24·|x| relative on a weight w = e^x; over the row
// Σ w·(2^-22 + 2^-24·|x|) ≤ Z·(2^-22 + 2^-24·H) with H ≤ ln 5000 ≈ 8.5 here: ≲ 8e-7 of Z (and of a
// prefix mass). The fp64 sums add ~1e-12. 1e-5 leaves a 10× margin and still pins k_t on all but
// rows whose mass sits on the threshold.
constexpr long double kCutRelTol = 1e-5L;
// sparse ≡ dense through the policy: the same keys in a different order, fp32 sums (op_attention.cpp).
constexpr double kAttnAtol = 1e-5, kAttnRtol = 1e-5;

struct PolicyCase {
  std::string name;
  int T = 0, S = 0, K = 0;
  std::vector<int32_t> ks, ke;
  std::vector<float> logits;
};

long double clean(float x) { return std::isnan(x) ? -std::numeric_limits<long double>::infinity() : static_cast<long double>(x); }

// The fixed-rule order of row t (absolute key ids), best first.
std::vector<int32_t> ref_order(const PolicyCase& c, int t) {
  std::vector<int32_t> keys(static_cast<size_t>(c.ke[t] - c.ks[t]));
  std::iota(keys.begin(), keys.end(), c.ks[t]);
  const float* row = c.logits.data() + static_cast<size_t>(t) * c.S;
  std::stable_sort(keys.begin(), keys.end(), [&](int32_t a, int32_t b) { return clean(row[a]) > clean(row[b]); });
  return keys;
}

// The k_t values a correct backend may return for row t (one, or two at a rounding boundary).
std::vector<int> allowed_lengths(const PolicyCase& c, int t, const TopkPolicy& pol) {
  const int n = c.ke[t] - c.ks[t];
  const int cap = pol.k_max > 0 ? pol.k_max : c.K;
  if (n == 0) return {0};
  if (pol.kind == TopkPolicyKind::kFixed) return {std::min(cap, n)};
  const float* row = c.logits.data() + static_cast<size_t>(t) * c.S;
  const long double inf = std::numeric_limits<long double>::infinity();
  long double m = -inf;
  for (int s = c.ks[t]; s < c.ke[t]; ++s) m = std::max(m, clean(row[s]));
  auto weight = [&](int32_t s) -> long double {  // ops.h: uniform if all −inf, +inf keys share the mass
    const long double x = clean(row[s]);
    if (m == -inf) return 1;
    if (m == inf) return x == inf ? 1 : 0;
    return x == -inf ? 0 : std::exp(x - m);
  };
  long double z = 0, e = 0;
  for (int s = c.ks[t]; s < c.ke[t]; ++s) {
    z += weight(s);
    if (std::isfinite(m) && clean(row[s]) != -inf) e += weight(s) * (clean(row[s]) - m);
  }
  auto clamp = [&](long double k) {
    const long double lo = pol.k_min;
    return static_cast<int>(std::min<long double>(n, std::min<long double>(cap, std::max(lo, k))));
  };
  std::vector<int> out;
  if (pol.kind == TopkPolicyKind::kEntropy) {
    const long double x = pol.a * std::exp(pol.b * (std::log(z) - e / z));
    out = {clamp(std::ceil(x * (1 - kCutRelTol))), clamp(std::ceil(x * (1 + kCutRelTol)))};
  } else if (pol.p >= 1.0) {
    out = {clamp(cap)};
  } else {
    // k qualifies when mass(k−1) < p·Z and mass(k) ≥ p·Z, each up to the slack; none within cap → cap.
    const auto order = ref_order(c, t);
    const long double target = pol.p * z;
    long double prev = 0;
    bool any = false;
    for (int k = 1; k <= std::min(cap, n); ++k) {
      const long double cur = prev + weight(order[static_cast<size_t>(k - 1)]);
      if (prev < target * (1 + kCutRelTol) && cur >= target * (1 - kCutRelTol)) out.push_back(clamp(k)), any = true;
      prev = cur;
    }
    if (!any || prev < target * (1 + kCutRelTol)) out.push_back(clamp(cap));
  }
  return out;
}

void check_case(Backend& b, const PolicyCase& c, const TopkPolicy& pol, const std::string& what) {
  SCOPED_TRACE(c.name + " / " + what);
  Guarded<int32_t> idx(size_t(c.T) * c.K), len(size_t(c.T));
  TopkParams p{c.T, c.S, c.K, c.logits.data(), c.ks.data(), c.ke.data(), idx.data(), pol, len.data()};
  b.topk_select(p);
  EXPECT_GUARDS(idx);
  EXPECT_GUARDS(len);
  for (int t = 0; t < c.T; ++t) {
    const int k = len[size_t(t)];
    const auto ok = allowed_lengths(c, t, pol);
    ASSERT_TRUE(std::find(ok.begin(), ok.end(), k) != ok.end()) << "row " << t << ": topk_length " << k << ", expected " << ok[0];
    const auto order = ref_order(c, t);
    const int32_t* row = idx.data() + size_t(t) * c.K;
    for (int j = 0; j < c.K; ++j)
      ASSERT_EQ(row[j], j < k ? order[size_t(j)] : kInvalidIndex) << "row " << t << ", slot " << j;
  }
  Guarded<int32_t> again(size_t(c.T) * c.K), len2(size_t(c.T));
  p.indices = again.data();
  p.topk_length = len2.data();
  b.topk_select(p);
  EXPECT_TRUE(bitwise_equal(idx.data(), again.data(), idx.size()) && bitwise_equal(len.data(), len2.data(), len.size()))
      << "rerun differs";
}

std::vector<PolicyCase> policy_cases() {
  std::vector<PolicyCase> v;
  Rng rng(9090);
  auto add = [&](std::string name, int T, int S, int K, auto&& value) {
    PolicyCase c{std::move(name), T, S, K, {}, {}, std::vector<float>(size_t(T) * S)};
    for (auto& x : c.logits) x = value();
    for (int t = 0; t < T; ++t) {   // whole rows, causal-like prefixes, an empty row, a short one
      int a = 0, e = S;
      if (t % 5 == 1) e = std::min(S, 1 + t * 3);
      if (t % 5 == 2) a = e = S / 2;
      if (t % 5 == 3) a = rng.integer(0, S / 2), e = std::min(S, a + K / 3 + 1);
      c.ks.push_back(a), c.ke.push_back(e);
    }
    v.push_back(std::move(c));
  };
  add("sharp", 10, 300, 64, [&] { return rng.normal(6.0f); });        // a few keys hold the mass
  add("flat", 10, 300, 64, [&] { return rng.normal(0.1f); });         // mass spread: k hits the cap
  add("ties", 10, 200, 40, [&] { return float(rng.integer(0, 2)); }); // equal weights: cut inside a tie
  add("nan_inf", 10, 120, 48, [&] {
    const int r = rng.integer(0, 11);
    return r == 0 ? kNanF : r == 1 ? kInfF : r == 2 ? -kInfF : rng.normal(2.0f);
  });
  add("all_neg_inf_or_nan", 5, 60, 16, [&] { return rng.integer(0, 1) ? kNanF : -kInfF; });
  add("S_lt_K", 5, 10, 32, [&] { return rng.normal(3.0f); });
  add("long_row", 3, 5000, 512, [&] { return rng.normal(4.0f); });
  return v;
}

}  // namespace

void check_topk_policy(Backend& b) {
  const auto cases = policy_cases();
  for (const PolicyCase& c : cases) {
    TopkPolicy fixed_cap;
    fixed_cap.k_max = std::max(1, c.K / 3);
    check_case(b, c, TopkPolicy{}, "fixed");
    check_case(b, c, fixed_cap, "fixed, k_max = K/3");
    for (double pm : {0.5, 0.9, 0.99, 1.0}) {
      TopkPolicy m;
      m.kind = TopkPolicyKind::kMass;
      m.p = pm;
      m.k_min = std::min(4, c.K);
      check_case(b, c, m, "mass p = " + std::to_string(pm));
    }
    TopkPolicy capped;
    capped.kind = TopkPolicyKind::kMass;
    capped.p = 0.95;
    capped.k_min = 2;
    capped.k_max = std::max(2, c.K / 2);
    check_case(b, c, capped, "mass p = 0.95 in [2, K/2]");
    for (double bb : {1.0, 0.5}) {
      TopkPolicy e;
      e.kind = TopkPolicyKind::kEntropy;
      e.a = 1.5;
      e.b = bb;
      e.k_min = 1;
      check_case(b, c, e, "entropy b = " + std::to_string(bb));
    }
  }

  // The default policy is today's op, bit for bit, with or without topk_length.
  for (const PolicyCase& c : cases) {
    Guarded<int32_t> today(size_t(c.T) * c.K), with_len(size_t(c.T) * c.K), len(size_t(c.T));
    b.topk_select({c.T, c.S, c.K, c.logits.data(), c.ks.data(), c.ke.data(), today.data()});
    b.topk_select({c.T, c.S, c.K, c.logits.data(), c.ks.data(), c.ke.data(), with_len.data(), TopkPolicy{}, len.data()});
    EXPECT_TRUE(bitwise_equal(today.data(), with_len.data(), today.size())) << c.name << ": default policy differs";
    for (int t = 0; t < c.T; ++t) EXPECT_EQ(len[size_t(t)], std::min(c.K, c.ke[t] - c.ks[t])) << c.name << " row " << t;
  }

  // kMass at p = 1 and k_max = K ≥ L keeps every causal key: sparse attention ≡ dense attention.
  {
    AttnProblem dense = make_problem(9191, 40, 40, 2, 16, 8);
    dense.sparse = false;
    packed_causal_ranges({25, 15}, dense.ks, dense.ke);
    Rng rng(9192);
    const std::vector<float> logits = rng.normal_vec(size_t(40) * 40, 5.0f);
    AttnProblem sparse = dense;
    sparse.sparse = true;
    sparse.K = 40;
    sparse.indices.assign(size_t(40) * 40, 0);
    sparse.topk_length.assign(40, 0);
    TopkPolicy all;
    all.kind = TopkPolicyKind::kMass;
    all.p = 1.0;
    b.topk_select({40, 40, 40, logits.data(), dense.ks.data(), dense.ke.data(), sparse.indices.data(), all, sparse.topk_length.data()});
    for (int t = 0; t < 40; ++t) ASSERT_EQ(sparse.topk_length[size_t(t)], dense.ke[t] - dense.ks[t]) << "p = 1 row " << t;
    std::vector<float> od(size_t(40) * 2 * 8), ld(80), os(od.size()), ls(80);
    b.dense_attention_forward(dense.params(), {od.data(), ld.data(), nullptr});
    b.sparse_attention_forward(sparse.params(), {os.data(), ls.data(), nullptr});
    EXPECT_TRUE(all_close(os.data(), od.data(), od.size(), kAttnAtol, kAttnRtol)) << "p = 1: sparse out != dense";
    EXPECT_TRUE(all_close(ls.data(), ld.data(), ld.size(), kAttnAtol, kAttnRtol)) << "p = 1: sparse lse != dense";
  }

  // ── bad policies: named, nothing written ──
  const PolicyCase& c = cases[0];
  Guarded<int32_t> idx(size_t(c.T) * c.K), len(size_t(c.T));
  auto expect_bad = [&](TopkPolicy pol, std::initializer_list<const char*> what) {
    const TopkParams p{c.T, c.S, c.K, c.logits.data(), c.ks.data(), c.ke.data(), idx.data(), pol, len.data()};
    EXPECT_TRUE(throws_naming([&] { b.topk_select(p); }, what));
    EXPECT_TRUE(idx.untouched() && len.untouched());
  };
  TopkPolicy bad;
  bad.k_max = c.K + 1;
  expect_bad(bad, {"topk_select", "fixed", "k_max"});
  bad = {};
  bad.kind = TopkPolicyKind::kMass;
  bad.p = 0.0;
  expect_bad(bad, {"topk_select", "mass", "p = 0"});
  bad.p = 1.5;
  expect_bad(bad, {"topk_select", "mass", "p = 1.5"});
  bad.p = 0.9;
  bad.k_min = 0;
  expect_bad(bad, {"topk_select", "mass", "k_min = 0"});
  bad.k_min = 10;
  bad.k_max = 5;
  expect_bad(bad, {"topk_select", "mass", "k_min = 10"});
  bad = {};
  bad.kind = TopkPolicyKind::kEntropy;
  bad.a = -1.0;
  expect_bad(bad, {"topk_select", "entropy", "a = -1"});
  bad.a = 1.0;
  bad.b = std::numeric_limits<double>::infinity();
  expect_bad(bad, {"topk_select", "entropy", "b = inf"});
  bad = {};
  bad.kind = static_cast<TopkPolicyKind>(7);
  expect_bad(bad, {"topk_select", "policy.kind = 7"});
}

}  // namespace dsa::test
