// op_indexer_backward.cpp — row indexer_backward (op 10 of dsa/ops.h), run through the Backend under
// test against an fp64 backward, itself checked against central differences of the fp64 forward.
#include <algorithm>
#include <numeric>

#include "indexer_cases.h"
#include "table.h"

namespace dsa::test {
namespace {

constexpr double kU32 = 0x1p-24;    // unit roundoff of fp32 (round to nearest)
constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr float kNanF = std::numeric_limits<float>::quiet_NaN();

// The forward parameters of a case on its fp32 inputs (the backward takes fp32 operands only).
IndexerParams fp32_params(const IndexerCase& c, const Fp32Inputs& in) {
  IndexerParams p;
  p.T = c.T, p.S = c.S, p.HI = c.HI, p.DI = c.DI, p.precision = Precision::kFp32;
  p.ks = c.ks.data(), p.ke = c.ke.data();
  p.q = in.q.data(), p.k = in.k.data(), p.w = in.w.data();
  return p;
}

// One backward problem in fp64: dense dI [T,S] (K = 0) or sparse dI [T,K] at indices.
struct BackwardCase {
  std::string name;
  IndexerCase shape;
  int K = 0;
  std::vector<int32_t> indices;
  std::vector<float> d_logits;
};

// Pairs (t, s, dI) of the case in a fixed order.
template <class Fn>
void for_each_pair(const BackwardCase& bc, Fn&& fn) {
  const IndexerCase& c = bc.shape;
  for (int t = 0; t < c.T; ++t) {
    if (bc.K == 0) {
      for (int s = c.ks[t]; s < c.ke[t]; ++s) fn(t, s, double(bc.d_logits[size_t(t) * c.S + s]));
    } else {
      for (int j = 0; j < bc.K; ++j) {
        const int32_t s = bc.indices[size_t(t) * bc.K + j];
        if (s != kInvalidIndex) fn(t, s, double(bc.d_logits[size_t(t) * bc.K + j]));
      }
    }
  }
}

// f = Σ_pairs dI · I[t,s] in fp64 (the scalar whose gradient indexer_backward computes).
double forward_loss(const BackwardCase& bc, const std::vector<double>& q, const std::vector<double>& k,
                    const std::vector<double>& w) {
  const IndexerCase& c = bc.shape;
  double f = 0;
  for_each_pair(bc, [&](int t, int s, double g) {
    double I = 0;
    for (int h = 0; h < c.HI; ++h) {
      double u = 0;
      for (int d = 0; d < c.DI; ++d) u += q[(size_t(t) * c.HI + h) * c.DI + d] * k[size_t(s) * c.DI + d];
      I += w[size_t(t) * c.HI + h] * std::max(u, 0.0);
    }
    f += g * I;
  });
  return f;
}

// fp64 backward; mag_* = the same sums over |terms| (the scale of fp64 reordering error).
struct Grads {
  std::vector<double> dq, dk, dw, mag_dq, mag_dk, mag_dw;
};
Grads backward_ref(const BackwardCase& bc, const std::vector<double>& q, const std::vector<double>& k,
                   const std::vector<double>& w) {
  const IndexerCase& c = bc.shape;
  Grads g{std::vector<double>(q.size()), std::vector<double>(k.size()), std::vector<double>(w.size()),
          std::vector<double>(q.size()), std::vector<double>(k.size()), std::vector<double>(w.size())};
  for_each_pair(bc, [&](int t, int s, double dI) {
    for (int h = 0; h < c.HI; ++h) {
      const size_t th = size_t(t) * c.HI + h;
      double u = 0;
      for (int d = 0; d < c.DI; ++d) u += q[th * c.DI + d] * k[size_t(s) * c.DI + d];
      if (u <= 0) continue;
      g.dw[th] += dI * u, g.mag_dw[th] += std::fabs(dI * u);
      const double gg = dI * w[th];
      for (int d = 0; d < c.DI; ++d) {
        g.dq[th * c.DI + d] += gg * k[size_t(s) * c.DI + d], g.mag_dq[th * c.DI + d] += std::fabs(gg * k[size_t(s) * c.DI + d]);
        g.dk[size_t(s) * c.DI + d] += gg * q[th * c.DI + d], g.mag_dk[size_t(s) * c.DI + d] += std::fabs(gg * q[th * c.DI + d]);
      }
    }
  });
  return g;
}

BackwardCase make_backward_case(const std::string& name, IndexerCase shape, int K, uint64_t seed) {
  Rng rng(seed);
  BackwardCase bc{name, std::move(shape), K, {}, {}};
  const IndexerCase& c = bc.shape;
  if (K == 0) {
    // dI only over the ranges; NaN elsewhere proves those entries are never read.
    bc.d_logits.assign(size_t(c.T) * c.S, kNanF);
    for (int t = 0; t < c.T; ++t)
      for (int s = c.ks[t]; s < c.ke[t]; ++s) bc.d_logits[size_t(t) * c.S + s] = rng.normal();
  } else {
    // A random subset of each range (−1 for rows shorter than K), one −1 slot in the middle of
    // every row, and NaN dI at −1 slots (must be ignored).
    bc.indices.assign(size_t(c.T) * K, kInvalidIndex);
    bc.d_logits.assign(size_t(c.T) * K, kNanF);
    for (int t = 0; t < c.T; ++t) {
      std::vector<int32_t> range(size_t(c.ke[t] - c.ks[t]));
      std::iota(range.begin(), range.end(), c.ks[t]);
      std::shuffle(range.begin(), range.end(), rng.engine());
      for (int j = 0; j < K && j < int(range.size()); ++j) {
        if (j == K / 2) continue;
        bc.indices[size_t(t) * K + j] = range[size_t(j)];
        bc.d_logits[size_t(t) * K + j] = rng.normal();
      }
    }
  }
  return bc;
}

}  // namespace

void check_indexer_backward(Backend& b) {
  std::vector<BackwardCase> cases;
  IndexerCase small = packed("small", {7, 6}, 3, 5);
  small.ks[4] = small.ke[4];  // an empty row: its dq, dw must be 0
  cases.push_back(make_backward_case("small_dense", small, 0, 11));
  cases.push_back(make_backward_case("small_sparse_K4", small, 4, 12));
  const IndexerCase mid = packed("mid", {64, 1, 6}, 4, 64);
  cases.push_back(make_backward_case("mid_dense", mid, 0, 13));
  cases.push_back(make_backward_case("mid_sparse_K16", mid, 16, 14));
  {  // contention: 96 slots per row drawn from keys [−1, 40) of 300, so each of a few keys collects
     // hundreds of (t, h) terms and duplicates count twice (the reduction order must stay fixed)
    BackwardCase many = make_backward_case("contention_K96_duplicates", packed("contention", {1}, 8, 64), 96, 15);
    IndexerCase& c = many.shape;
    c.T = 40, c.S = 300;
    c.ks.assign(size_t(c.T), 0), c.ke.assign(size_t(c.T), c.S);
    Rng rng(503);
    many.indices.resize(size_t(c.T) * many.K);
    many.d_logits.resize(many.indices.size());
    for (size_t i = 0; i < many.indices.size(); ++i) {
      many.indices[i] = rng.integer(-1, 39);
      many.d_logits[i] = many.indices[i] == kInvalidIndex ? kNanF : rng.normal();
    }
    cases.push_back(many);
  }

  for (const auto& bc : cases) {
    const IndexerCase& c = bc.shape;
    const Fp32Inputs in = make_inputs(c, 500 + bc.K);
    std::vector<double> q(in.q.begin(), in.q.end()), k(in.k.begin(), in.k.end()), w(in.w.begin(), in.w.end());
    const Grads ref = backward_ref(bc, q, k, w);

    // 1. the fp64 reference backward vs central differences of the fp64 forward (small cases).
    //    f is piecewise linear in each single element, so the central difference is exact up to
    //    roundoff (~1e-16·|f|/h) unless the step crosses a ReLU kink: elements with any |u| < 1e-3
    //    are skipped.
    if (c.T * c.HI * c.DI <= 1000) {
      const double h = 1e-6;
      std::vector<double> u(size_t(c.T) * c.HI * c.S, kInf);  // |u| of every evaluated (t, h, s)
      for_each_pair(bc, [&](int t, int s, double) {
        for (int hh = 0; hh < c.HI; ++hh) {
          double acc = 0;
          for (int d = 0; d < c.DI; ++d) acc += q[(size_t(t) * c.HI + hh) * c.DI + d] * k[size_t(s) * c.DI + d];
          u[(size_t(t) * c.HI + hh) * c.S + s] = std::fabs(acc);
        }
      });
      auto f = [&] { return forward_loss(bc, q, k, w); };
      int checked = 0, skipped = 0;
      auto check = [&](std::vector<double>& x, size_t i, double want, bool near_kink, const char* what) {
        if (near_kink) return void(++skipped);
        ++checked;
        const double fd = central_difference(x, i, f, h);
        EXPECT_NEAR(fd, want, 1e-7 * (1 + std::fabs(want))) << bc.name << ": finite difference of " << what << "[" << i << "]";
      };
      for (size_t i = 0; i < q.size(); ++i) {
        const size_t th = i / c.DI;
        bool kink = false;
        for (int s = 0; s < c.S; ++s) kink |= u[th * c.S + s] < 1e-3;
        check(q, i, ref.dq[i], kink, "q");
      }
      for (size_t i = 0; i < k.size(); ++i) {
        const int s = int(i / c.DI);
        bool kink = false;
        for (size_t th = 0; th < size_t(c.T) * c.HI; ++th) kink |= u[th * c.S + s] < 1e-3;
        check(k, i, ref.dk[i], kink, "k");
      }
      for (size_t i = 0; i < w.size(); ++i) check(w, i, ref.dw[i], false, "w");  // linear in w: no kink
      EXPECT_GE(checked, 9 * (checked + skipped) / 10) << bc.name << ": too many elements near a ReLU kink";
    }

    // 2. the backend backward vs the fp64 reference. Both sum fp64 terms built from the same fp32
    //    inputs; they differ by reordering (≤ n·2^-53·mag) and the final fp32 rounding (≤ u·|ref|),
    //    so |got − ref| ≤ 2u·|ref| + 1e-12·mag leaves a 2× margin on both.
    Guarded<float> dq(q.size()), dk(k.size()), dw(w.size());
    IndexerBackwardParams p;
    p.fwd = fp32_params(c, in);
    p.K = bc.K;
    p.indices = bc.K ? bc.indices.data() : nullptr;
    p.d_logits = bc.d_logits.data();
    p.dq = dq.data(), p.dk = dk.data(), p.dw = dw.data();
    b.indexer_backward(p);
    EXPECT_GUARDS(dq) << bc.name;
    EXPECT_GUARDS(dk) << bc.name;
    EXPECT_GUARDS(dw) << bc.name;
    auto expect_close = [&](const Guarded<float>& got, const std::vector<double>& want, const std::vector<double>& mag,
                            const char* what) {
      for (size_t i = 0; i < want.size(); ++i) {
        const double tol = 2 * kU32 * std::fabs(want[i]) + 1e-12 * mag[i];
        if (!(std::fabs(got[i] - want[i]) <= tol)) {
          ADD_FAILURE() << bc.name << ": " << what << "[" << i << "] = " << got[i] << ", want " << want[i];
          return;
        }
      }
    };
    expect_close(dq, ref.dq, ref.mag_dq, "dq");
    expect_close(dk, ref.dk, ref.mag_dk, "dk");
    expect_close(dw, ref.dw, ref.mag_dw, "dw");
    // Determinism: dk is a reduction over (t, h); a rerun must match bitwise.
    Guarded<float> dq2(q.size()), dk2(k.size()), dw2(w.size());
    p.dq = dq2.data(), p.dk = dk2.data(), p.dw = dw2.data();
    b.indexer_backward(p);
    EXPECT_TRUE(bitwise_equal(dq.data(), dq2.data(), dq.size()) && bitwise_equal(dk.data(), dk2.data(), dk.size()) &&
                bitwise_equal(dw.data(), dw2.data(), dw.size()))
        << bc.name << ": rerun differs";
  }

  // ── bad inputs: outputs untouched ──
  const BackwardCase& bc = cases[1];  // sparse
  const IndexerCase& c = bc.shape;
  const Fp32Inputs in = make_inputs(c, 77);
  Guarded<float> dq(in.q.size()), dk(in.k.size()), dw(in.w.size());
  IndexerBackwardParams good;
  good.fwd = fp32_params(c, in);
  good.K = bc.K, good.indices = bc.indices.data(), good.d_logits = bc.d_logits.data();
  good.dq = dq.data(), good.dk = dk.data(), good.dw = dw.data();
  auto expect_bad = [&](const IndexerBackwardParams& p, std::initializer_list<const char*> what) {
    EXPECT_TRUE(throws_naming([&] { b.indexer_backward(p); }, what));
    EXPECT_TRUE(dq.untouched() && dk.untouched() && dw.untouched());
  };
  IndexerBackwardParams p = good;
  p.K = -1;
  expect_bad(p, {"indexer_backward", "K = -1"});
  p.K = kMaxTopK + 1;
  expect_bad(p, {"indexer_backward", "K = 8193"});
  p = good, p.indices = nullptr;
  expect_bad(p, {"indexer_backward", "indices is null"});
  p = good, p.K = 0;  // dense mode must not get indices
  expect_bad(p, {"indexer_backward", "indices"});
  std::vector<int32_t> bad_idx = bc.indices;
  bad_idx[size_t(2) * bc.K] = c.ke[2];  // one past the row's range
  p = good, p.indices = bad_idx.data();
  expect_bad(p, {"indexer_backward", "indices[2,0]"});
  bad_idx = bc.indices, bad_idx[1] = -2;
  p = good, p.indices = bad_idx.data();
  expect_bad(p, {"indexer_backward", "indices[0,1] = -2"});
  p = good, p.d_logits = nullptr;
  expect_bad(p, {"indexer_backward", "d_logits is null"});
  p = good, p.dq = nullptr;
  expect_bad(p, {"indexer_backward", "dq is null"});
  p = good, p.dk = nullptr;
  expect_bad(p, {"indexer_backward", "dk is null"});
  p = good, p.dw = nullptr;
  expect_bad(p, {"indexer_backward", "dw is null"});
  p = good, p.fwd.precision = Precision::kBf16;
  expect_bad(p, {"indexer_backward", "precision"});
  p = good, p.fwd.q = nullptr;
  expect_bad(p, {"indexer_backward", "q is null"});
  std::vector<int32_t> bad_ke = c.ke;
  bad_ke[0] = c.S + 1;
  p = good, p.fwd.ke = bad_ke.data();
  expect_bad(p, {"indexer_backward", "ke[0]"});
}

}  // namespace dsa::test
