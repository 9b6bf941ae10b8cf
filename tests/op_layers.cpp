// op_layers.cpp — section 12 of ops.h (CPU-only model layers): forward vs a float64 reference,
// backward vs central finite differences of that reference (loss = Σ r ∘ y with random r), bad
// arguments, and determinism. Plain gtest TESTs (these ops are not in the backend table).
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <cstring>
#include <tuple>
#include <vector>

#include "dsa/ops.h"

namespace {

using D64 = std::vector<double>;
using F32 = std::vector<float>;

// Tolerances: fp32 forward vs fp64 reference on O(1) values with ≤ 200-term sums: 1e-5 relative.
// Backward vs central differences (h = 1e-6 on the fp64 reference, truncation O(h²)) of fp32
// analytic gradients: 1e-4 relative to the largest gradient entry.
constexpr double kFwdTol = 1e-5;
constexpr double kGradTol = 1e-4;
constexpr double kFdStep = 1e-6;

F32 randn(size_t n, uint64_t seed, float s = 1.0f) {
  std::mt19937_64 g(seed);
  std::normal_distribution<float> nd(0.0f, s);
  F32 v(n);
  for (auto& x : v) x = nd(g);
  return v;
}
D64 to64(const F32& v) { return D64(v.begin(), v.end()); }


// Central differences of f at every entry of x (x restored afterwards).
D64 fd_grad(D64& x, const std::function<double()>& f) {
  D64 g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double s = x[i];
    x[i] = s + kFdStep;
    const double fp = f();
    x[i] = s - kFdStep;
    const double fm = f();
    x[i] = s;
    g[i] = (fp - fm) / (2 * kFdStep);
  }
  return g;
}

void expect_close(const F32& got, const D64& want, double tol, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double scale = 1e-30;
  for (double w : want) scale = std::max(scale, std::fabs(w));
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_NEAR(got[i], want[i], tol * std::max(1.0, scale)) << what << " at " << i;
}

// ── references (float64) ──
D64 ref_rmsnorm(const D64& x, const D64& w, int N, int C, double eps) {
  D64 y(x.size());
  for (int n = 0; n < N; ++n) {
    double ss = 0;
    for (int c = 0; c < C; ++c) ss += x[n * C + c] * x[n * C + c];
    const double r = 1.0 / std::sqrt(ss / C + eps);
    for (int c = 0; c < C; ++c) y[n * C + c] = x[n * C + c] * r * w[c];
  }
  return y;
}
D64 ref_layernorm(const D64& x, const D64& w, const D64& b, int N, int C, double eps) {
  D64 y(x.size());
  for (int n = 0; n < N; ++n) {
    double mu = 0, v = 0;
    for (int c = 0; c < C; ++c) mu += x[n * C + c];
    mu /= C;
    for (int c = 0; c < C; ++c) v += (x[n * C + c] - mu) * (x[n * C + c] - mu);
    const double r = 1.0 / std::sqrt(v / C + eps);
    for (int c = 0; c < C; ++c) y[n * C + c] = (x[n * C + c] - mu) * r * w[c] + b[c];
  }
  return y;
}
double dot(const D64& a, const F32& r) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * r[i];
  return s;
}

TEST(OpLayers, LinearForwardBackward) {
  for (const auto& [N, I, O] : std::vector<std::tuple<int, int, int>>{{1, 1, 1}, {3, 7, 5}, {17, 65, 33}}) {
    F32 x = randn(N * I, 1), w = randn(O * I, 2), r = randn(N * O, 3);
    F32 y(N * O);
    dsa::cpu::linear_forward(x.data(), w.data(), y.data(), N, I, O);
    D64 x64 = to64(x), w64 = to64(w);
    auto ref = [&] {
      D64 out(N * O, 0.0);
      for (int n = 0; n < N; ++n)
        for (int o = 0; o < O; ++o)
          for (int i = 0; i < I; ++i) out[n * O + o] += x64[n * I + i] * w64[o * I + i];
      return out;
    };
    expect_close(y, ref(), kFwdTol, "linear y");
    F32 dx(N * I, 7.0f), dw(O * I, 0.0f);
    dsa::cpu::linear_backward(x.data(), w.data(), r.data(), dx.data(), dw.data(), N, I, O, false);
    auto loss = [&] { return dot(ref(), r); };
    expect_close(dx, fd_grad(x64, loss), kGradTol, "linear dx");
    expect_close(dw, fd_grad(w64, loss), kGradTol, "linear dw");
    // accumulate_dx adds to dx; dW always accumulates
    F32 dx2 = dx, dw2 = dw;
    dsa::cpu::linear_backward(x.data(), w.data(), r.data(), dx2.data(), dw2.data(), N, I, O, true);
    for (size_t i = 0; i < dx.size(); ++i) ASSERT_NEAR(dx2[i], 2 * dx[i], 1e-5 * (1 + std::fabs(dx[i])));
    for (size_t i = 0; i < dw.size(); ++i) ASSERT_NEAR(dw2[i], 2 * dw[i], 1e-5 * (1 + std::fabs(dw[i])));
  }
}

TEST(OpLayers, RmsNormForwardBackward) {
  const float eps = 1e-6f;
  for (const auto& [N, C] : std::vector<std::pair<int, int>>{{1, 1}, {4, 63}, {3, 129}}) {
    F32 x = randn(N * C, 4), w = randn(C, 5), r = randn(N * C, 6);
    F32 y(N * C), rstd(N), dx(N * C), dw(C, 0.0f);
    dsa::cpu::rmsnorm_forward(x.data(), w.data(), y.data(), rstd.data(), N, C, eps);
    D64 x64 = to64(x), w64 = to64(w);
    expect_close(y, ref_rmsnorm(x64, w64, N, C, eps), kFwdTol, "rmsnorm y");
    dsa::cpu::rmsnorm_backward(x.data(), w.data(), rstd.data(), r.data(), dx.data(), dw.data(), N, C);
    auto loss = [&] { return dot(ref_rmsnorm(x64, w64, N, C, eps), r); };
    expect_close(dx, fd_grad(x64, loss), kGradTol, "rmsnorm dx");
    expect_close(dw, fd_grad(w64, loss), kGradTol, "rmsnorm dw");
  }
}

TEST(OpLayers, LayerNormForwardBackward) {
  const float eps = 1e-6f;
  for (const auto& [N, C] : std::vector<std::pair<int, int>>{{1, 2}, {5, 32}, {2, 129}}) {
    F32 x = randn(N * C, 7), w = randn(C, 8), b = randn(C, 9), r = randn(N * C, 10);
    F32 y(N * C), mean(N), rstd(N), dx(N * C), dw(C, 0.0f), db(C, 0.0f);
    dsa::cpu::layernorm_forward(x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), N, C, eps);
    D64 x64 = to64(x), w64 = to64(w), b64 = to64(b);
    expect_close(y, ref_layernorm(x64, w64, b64, N, C, eps), kFwdTol, "layernorm y");
    dsa::cpu::layernorm_backward(x.data(), w.data(), mean.data(), rstd.data(), r.data(), dx.data(), dw.data(), db.data(), N, C);
    auto loss = [&] { return dot(ref_layernorm(x64, w64, b64, N, C, eps), r); };
    expect_close(dx, fd_grad(x64, loss), kGradTol, "layernorm dx");
    expect_close(dw, fd_grad(w64, loss), kGradTol, "layernorm dw");
    expect_close(db, fd_grad(b64, loss), kGradTol, "layernorm db");
  }
}

TEST(OpLayers, SwigluForwardBackward) {
  const int N = 257;
  F32 g = randn(N, 11, 3.0f), u = randn(N, 12), r = randn(N, 13), a(N), dg(N), du(N);
  dsa::cpu::swiglu_forward(g.data(), u.data(), a.data(), N);
  D64 g64 = to64(g), u64 = to64(u);
  auto ref = [&] {
    D64 out(N);
    for (int i = 0; i < N; ++i) out[i] = g64[i] / (1 + std::exp(-g64[i])) * u64[i];
    return out;
  };
  expect_close(a, ref(), kFwdTol, "swiglu a");
  dsa::cpu::swiglu_backward(g.data(), u.data(), r.data(), dg.data(), du.data(), N);
  auto loss = [&] { return dot(ref(), r); };
  expect_close(dg, fd_grad(g64, loss), kGradTol, "swiglu dg");
  expect_close(du, fd_grad(u64, loss), kGradTol, "swiglu du");
}

TEST(OpLayers, EmbeddingForwardBackward) {
  const int N = 9, V = 5, C = 3;
  const std::vector<int32_t> tok = {0, 4, 4, 2, 0, 1, 4, 3, 0};
  F32 table = randn(V * C, 14), out(N * C), dout = randn(N * C, 15), dtab(V * C, 0.0f);
  dsa::cpu::embedding_forward(tok.data(), table.data(), out.data(), N, V, C);
  for (int n = 0; n < N; ++n)
    for (int c = 0; c < C; ++c) ASSERT_EQ(out[n * C + c], table[tok[n] * C + c]);
  dsa::cpu::embedding_backward(tok.data(), dout.data(), dtab.data(), N, V, C);
  for (int v = 0; v < V; ++v)
    for (int c = 0; c < C; ++c) {
      double want = 0;
      for (int n = 0; n < N; ++n) want += tok[n] == v ? dout[n * C + c] : 0.0;
      ASSERT_NEAR(dtab[v * C + c], want, 1e-6);
    }
  const std::vector<int32_t> bad = {0, 5};
  F32 out2(2 * C, -3.0f);
  try {
    dsa::cpu::embedding_forward(bad.data(), table.data(), out2.data(), 2, V, C);
    FAIL() << "no throw";
  } catch (const dsa::Error& e) {
    EXPECT_NE(std::string(e.what()).find("embedding_forward: tokens[1]"), std::string::npos) << e.what();
  }
  for (float v : out2) ASSERT_EQ(v, -3.0f);   // nothing written before the throw
}

TEST(OpLayers, CrossEntropyForwardBackward) {
  const int N = 6, V = 37;
  F32 z = randn(N * V, 16, 4.0f);
  z[2 * V + 5] = 80.0f;   // a large logit: the max-shift must keep it finite
  const std::vector<int32_t> tgt = {3, -1, 5, 0, 36, 17};
  F32 loss(N), dz(N * V);
  const double total = dsa::cpu::cross_entropy_forward(z.data(), tgt.data(), loss.data(), N, V);
  D64 z64 = to64(z);
  auto ref = [&] {
    double s = 0;
    for (int n = 0; n < N; ++n) {
      if (tgt[n] < 0) continue;
      double m = -1e300, e = 0;
      for (int v = 0; v < V; ++v) m = std::max(m, z64[n * V + v]);
      for (int v = 0; v < V; ++v) e += std::exp(z64[n * V + v] - m);
      s += std::log(e) + m - z64[n * V + tgt[n]];
    }
    return s;
  };
  EXPECT_NEAR(total, ref(), 1e-9 * std::max(1.0, std::fabs(ref())));
  EXPECT_EQ(loss[1], 0.0f);
  const float dl = 0.5f;
  dsa::cpu::cross_entropy_backward(z.data(), tgt.data(), dl, dz.data(), N, V);
  D64 want = fd_grad(z64, [&] { return dl * ref(); });
  expect_close(dz, want, kGradTol, "cross_entropy dz");
  for (int v = 0; v < V; ++v) ASSERT_EQ(dz[1 * V + v], 0.0f);
  const std::vector<int32_t> bad = {3, -2, 0, 0, 0, 0};
  EXPECT_THROW(dsa::cpu::cross_entropy_forward(z.data(), bad.data(), nullptr, N, V), dsa::Error);
}

TEST(OpLayers, BadArgumentsAndDeterminism) {
  F32 x = randn(12, 17), w = randn(4, 18), y(12, 1.5f), rstd(3, 1.5f);
  EXPECT_THROW(dsa::cpu::rmsnorm_forward(nullptr, w.data(), y.data(), rstd.data(), 3, 4, 1e-6f), dsa::Error);
  EXPECT_THROW(dsa::cpu::rmsnorm_forward(x.data(), w.data(), y.data(), rstd.data(), 3, 0, 1e-6f), dsa::Error);
  EXPECT_THROW(dsa::cpu::linear_forward(x.data(), w.data(), y.data(), 3, 4, -1), dsa::Error);
  for (float v : y) ASSERT_EQ(v, 1.5f);
  try {
    dsa::cpu::layernorm_forward(x.data(), w.data(), nullptr, y.data(), nullptr, nullptr, 3, 4, 1e-6f);
    FAIL();
  } catch (const dsa::Error& e) {
    EXPECT_NE(std::string(e.what()).find("layernorm_forward: b is null"), std::string::npos) << e.what();
  }
  // bitwise determinism of a backward over reruns
  F32 r = randn(12, 19), dx1(12), dx2(12), dw1(4, 0.0f), dw2(4, 0.0f);
  dsa::cpu::rmsnorm_forward(x.data(), w.data(), y.data(), rstd.data(), 3, 4, 1e-6f);
  dsa::cpu::rmsnorm_backward(x.data(), w.data(), rstd.data(), r.data(), dx1.data(), dw1.data(), 3, 4);
  dsa::cpu::rmsnorm_backward(x.data(), w.data(), rstd.data(), r.data(), dx2.data(), dw2.data(), 3, 4);
  EXPECT_EQ(0, std::memcmp(dx1.data(), dx2.data(), dx1.size() * sizeof(float)));
  EXPECT_EQ(0, std::memcmp(dw1.data(), dw2.data(), dw1.size() * sizeof(float)));
}

}  // namespace
