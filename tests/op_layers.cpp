// op_layers.cpp — the §12 rows of the test table (model layers: linear, rmsnorm, layernorm, swiglu,
// embedding, cross_entropy), run on every backend. Each row checks the forward against a float64
// reference, the backward against central finite differences of that reference (loss = Σ r ∘ y with
// random r) on small shapes and against the fp64 analytic gradient on larger ones, accumulation into
// non-zero dw / db / dtable / dx, bad arguments (dsa::Error naming the argument, nothing written), and
// bitwise determinism over two runs. Shapes that break kernels: N = 1, C not a multiple of 32 / 128
// (1, 33, 127, 129), rows wider than one column tile, V = 50 000, many repeated tokens with V > N.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <omp.h>
#include <tuple>
#include <vector>

#include "table.h"

namespace dsa::test {
namespace {

using D64 = std::vector<double>;
using F32 = std::vector<float>;

// Tolerances: fp32 forward vs fp64 reference on O(1) values with ≤ a few thousand-term sums
// (fp64 or fp32 accumulation): 1e-5 relative to the largest entry. Backward vs central differences
// (h = 1e-6 on the fp64 reference, truncation O(h²)) or vs the fp64 analytic gradient: 1e-4
// relative to the largest gradient entry.
constexpr double kFwdTol = 1e-5;
constexpr double kGradTol = 1e-4;
constexpr double kFdStep = 1e-6;
constexpr float kEps = 1e-6f;
constexpr float kPoison = std::numeric_limits<float>::quiet_NaN();   // "must be written" outputs
// The backend's Σ loss: the CPU sums fp64 per-row losses, a GPU sums the fp32-rounded ones.
constexpr double kLossSumRel = 1e-6;

F32 randn(size_t n, uint64_t seed, float s = 1.0f) { return Rng(seed).normal_vec(n, s); }
D64 to64(const F32& v) { return D64(v.begin(), v.end()); }

// Central differences of f at every entry of x (x restored afterwards).
D64 fd_grad(D64& x, const std::function<double()>& f) {
  D64 g(x.size());
  for (size_t i = 0; i < x.size(); ++i) g[i] = central_difference(x, i, f, kFdStep);
  return g;
}

// |got − want| ≤ tol · max(1, max |want|) elementwise (NaN in got fails).
void expect_close(const F32& got, const D64& want, double tol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double scale = 1.0;
  for (double w : want) scale = std::max(scale, std::fabs(w));
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_NEAR(got[i], want[i], tol * scale) << what << " at " << i;
}
// got − base (the increment an accumulating op added) vs want.
void expect_added(const F32& got, const F32& base, const D64& want, double tol, const std::string& what) {
  F32 inc(got.size());
  for (size_t i = 0; i < got.size(); ++i) inc[i] = got[i] - base[i];
  expect_close(inc, want, tol, what);
}
void expect_bitwise(const F32& a, const F32& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size());
  EXPECT_TRUE(bitwise_equal(a.data(), b.data(), a.size())) << what << " differs between two runs";
}
void expect_untouched(const F32& v, float value, const char* what) {
  for (float x : v) ASSERT_TRUE(x == value || (std::isnan(x) && std::isnan(value))) << what << " written before a throw";
}
double dot(const D64& a, const F32& r) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * r[i];
  return s;
}
std::string shape(const char* op, int64_t N, int C) { return std::string(op) + " N=" + std::to_string(N) + " C=" + std::to_string(C); }

// ── references (float64) ──────────────────────────────────────────────────────────────────────
D64 ref_linear(const D64& x, const D64& w, int N, int I, int O) {
  D64 out(static_cast<size_t>(N) * O, 0.0);
  for (int n = 0; n < N; ++n)
    for (int o = 0; o < O; ++o)
      for (int i = 0; i < I; ++i) out[n * O + o] += x[n * I + i] * w[o * I + i];
  return out;
}
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
// Analytic fp64 gradients of Σ r∘y (the formulas of ops.h §12), for shapes too large for differences.
void ref_rmsnorm_grad(const D64& x, const D64& w, const F32& r, int N, int C, double eps, D64& dx, D64& dw) {
  dx.assign(x.size(), 0.0);
  dw.assign(C, 0.0);
  for (int n = 0; n < N; ++n) {
    double ss = 0, d = 0;
    for (int c = 0; c < C; ++c) ss += x[n * C + c] * x[n * C + c];
    const double rs = 1.0 / std::sqrt(ss / C + eps);
    for (int c = 0; c < C; ++c) d += r[n * C + c] * w[c] * x[n * C + c];
    for (int c = 0; c < C; ++c) {
      dx[n * C + c] = rs * r[n * C + c] * w[c] - x[n * C + c] * rs * rs * rs * d / C;
      dw[c] += r[n * C + c] * x[n * C + c] * rs;
    }
  }
}
void ref_layernorm_grad(const D64& x, const D64& w, const F32& r, int N, int C, double eps, D64& dx, D64& dw, D64& db) {
  dx.assign(x.size(), 0.0);
  dw.assign(C, 0.0);
  db.assign(C, 0.0);
  for (int n = 0; n < N; ++n) {
    double mu = 0, v = 0;
    for (int c = 0; c < C; ++c) mu += x[n * C + c];
    mu /= C;
    for (int c = 0; c < C; ++c) v += (x[n * C + c] - mu) * (x[n * C + c] - mu);
    const double rs = 1.0 / std::sqrt(v / C + eps);
    double sg = 0, sgx = 0;
    for (int c = 0; c < C; ++c) {
      const double g = r[n * C + c] * w[c], xh = (x[n * C + c] - mu) * rs;
      sg += g;
      sgx += g * xh;
      dw[c] += r[n * C + c] * xh;
      db[c] += r[n * C + c];
    }
    for (int c = 0; c < C; ++c) {
      const double xh = (x[n * C + c] - mu) * rs;
      dx[n * C + c] = rs * (r[n * C + c] * w[c] - sg / C - xh * sgx / C);
    }
  }
}
// Σ_n loss of softmax cross-entropy in fp64; per-row losses in `rows` when non-null.
double ref_cross_entropy(const D64& z, const std::vector<int32_t>& tgt, int N, int V, D64* rows = nullptr) {
  double s = 0;
  if (rows) rows->assign(N, 0.0);
  for (int n = 0; n < N; ++n) {
    if (tgt[n] < 0) continue;
    double m = -std::numeric_limits<double>::infinity(), e = 0;
    for (int v = 0; v < V; ++v) m = std::max(m, z[size_t(n) * V + v]);
    for (int v = 0; v < V; ++v) e += std::exp(z[size_t(n) * V + v] - m);
    const double l = std::log(e) + m - z[size_t(n) * V + tgt[n]];
    if (rows) (*rows)[n] = l;
    s += l;
  }
  return s;
}

}  // namespace

// ── linear ────────────────────────────────────────────────────────────────────────────────────
void check_linear(Backend& be) {
  for (const auto& [N, I, O] : std::vector<std::tuple<int, int, int>>{{1, 1, 1}, {3, 7, 5}, {17, 65, 33}, {2, 129, 3}}) {
    const std::string what = "linear N=" + std::to_string(N) + " I=" + std::to_string(I) + " O=" + std::to_string(O);
    const F32 x = randn(N * I, 1), w = randn(O * I, 2), r = randn(N * O, 3);
    F32 y(N * O, kPoison);
    be.linear_forward(x.data(), w.data(), y.data(), N, I, O);
    D64 x64 = to64(x), w64 = to64(w);
    expect_close(y, ref_linear(x64, w64, N, I, O), kFwdTol, what + " y");
    // dx written over poison; dW accumulates onto a non-zero start
    const F32 dw0 = randn(O * I, 4);
    F32 dx(N * I, kPoison), dw = dw0;
    be.linear_backward(x.data(), w.data(), r.data(), dx.data(), dw.data(), N, I, O, false);
    auto loss = [&] { return dot(ref_linear(x64, w64, N, I, O), r); };
    const D64 gx = fd_grad(x64, loss), gw = fd_grad(w64, loss);
    expect_close(dx, gx, kGradTol, what + " dx");
    expect_added(dw, dw0, gw, kGradTol, what + " dw");
    // accumulate_dx adds onto dx; dx = null skips it (dW still accumulates)
    const F32 dx0 = randn(N * I, 5);
    F32 dx2 = dx0, dw2 = dw0;
    be.linear_backward(x.data(), w.data(), r.data(), dx2.data(), dw2.data(), N, I, O, true);
    expect_added(dx2, dx0, gx, kGradTol, what + " dx accumulated");
    F32 dw3 = dw0;
    be.linear_backward(x.data(), nullptr, r.data(), nullptr, dw3.data(), N, I, O, false);
    expect_added(dw3, dw0, gw, kGradTol, what + " dw (dx null)");
    expect_bitwise(dw2, dw3, what + " dw");
  }
  F32 x(12, 1.0f), w(4, 1.0f), y(12, 1.5f);
  EXPECT_TRUE(throws_naming([&] { be.linear_forward(x.data(), w.data(), y.data(), 3, 4, -1); }, {"linear_forward", "O"}));
  EXPECT_TRUE(throws_naming([&] { be.linear_forward(x.data(), nullptr, y.data(), 3, 4, 1); }, {"linear_forward", "w is null"}));
  EXPECT_TRUE(throws_naming([&] { be.linear_backward(x.data(), w.data(), nullptr, y.data(), nullptr, 3, 4, 1, false); },
                            {"linear_backward", "dy is null"}));
  expect_untouched(y, 1.5f, "linear y");
}

// ── rmsnorm ───────────────────────────────────────────────────────────────────────────────────
void check_rmsnorm(Backend& be) {
  // finite differences on small shapes
  for (const auto& [N, C] : std::vector<std::pair<int, int>>{{1, 1}, {4, 63}, {3, 129}, {1, 33}, {2, 127}}) {
    const std::string what = shape("rmsnorm", N, C);
    const F32 x = randn(N * C, 4), w = randn(C, 5), r = randn(N * C, 6), dw0 = randn(C, 7);
    F32 y(N * C, kPoison), rstd(N, kPoison), dx(N * C, kPoison), dw = dw0;
    be.rmsnorm_forward(x.data(), w.data(), y.data(), rstd.data(), N, C, kEps);
    D64 x64 = to64(x), w64 = to64(w);
    expect_close(y, ref_rmsnorm(x64, w64, N, C, kEps), kFwdTol, what + " y");
    be.rmsnorm_backward(x.data(), w.data(), rstd.data(), r.data(), dx.data(), dw.data(), N, C);
    auto loss = [&] { return dot(ref_rmsnorm(x64, w64, N, C, kEps), r); };
    expect_close(dx, fd_grad(x64, loss), kGradTol, what + " dx");
    expect_added(dw, dw0, fd_grad(w64, loss), kGradTol, what + " dw");
  }
  // many rows (column sums over N), a row wider than a block: fp64 analytic gradient, determinism
  for (const auto& [N, C] : std::vector<std::pair<int, int>>{{517, 33}, {40, 1100}}) {
    const std::string what = shape("rmsnorm", N, C);
    const F32 x = randn(N * C, 8), w = randn(C, 9), r = randn(N * C, 10), dw0 = randn(C, 11);
    F32 y(N * C, kPoison), rstd(N, kPoison), y2(N * C, kPoison), rstd2(N, kPoison);
    be.rmsnorm_forward(x.data(), w.data(), y.data(), rstd.data(), N, C, kEps);
    be.rmsnorm_forward(x.data(), w.data(), y2.data(), rstd2.data(), N, C, kEps);
    const D64 x64 = to64(x), w64 = to64(w);
    expect_close(y, ref_rmsnorm(x64, w64, N, C, kEps), kFwdTol, what + " y");
    expect_bitwise(y, y2, what + " y");
    expect_bitwise(rstd, rstd2, what + " rstd");
    F32 dx(N * C, kPoison), dw = dw0, dx2(N * C, kPoison), dw2 = dw0;
    be.rmsnorm_backward(x.data(), w.data(), rstd.data(), r.data(), dx.data(), dw.data(), N, C);
    be.rmsnorm_backward(x.data(), w.data(), rstd.data(), r.data(), dx2.data(), dw2.data(), N, C);
    D64 gx, gw;
    ref_rmsnorm_grad(x64, w64, r, N, C, kEps, gx, gw);
    expect_close(dx, gx, kGradTol, what + " dx");
    expect_added(dw, dw0, gw, kGradTol, what + " dw");
    expect_bitwise(dx, dx2, what + " dx");
    expect_bitwise(dw, dw2, what + " dw");
    F32 dx3(N * C, kPoison);   // dw = null: dx only
    be.rmsnorm_backward(x.data(), w.data(), rstd.data(), r.data(), dx3.data(), nullptr, N, C);
    expect_bitwise(dx, dx3, what + " dx (dw null)");
  }
  F32 x = randn(12, 17), w = randn(4, 18), y(12, 1.5f), rstd(3, 1.5f);
  EXPECT_TRUE(throws_naming([&] { be.rmsnorm_forward(nullptr, w.data(), y.data(), rstd.data(), 3, 4, kEps); },
                            {"rmsnorm_forward", "x is null"}));
  EXPECT_TRUE(throws_naming([&] { be.rmsnorm_forward(x.data(), w.data(), y.data(), rstd.data(), 3, 0, kEps); },
                            {"rmsnorm_forward", "C = 0"}));
  EXPECT_TRUE(throws_naming([&] { be.rmsnorm_forward(x.data(), w.data(), y.data(), rstd.data(), -1, 4, kEps); },
                            {"rmsnorm_forward", "N = -1"}));
  EXPECT_TRUE(throws_naming([&] { be.rmsnorm_forward(x.data(), w.data(), y.data(), rstd.data(), 3, 4, 0.0f); },
                            {"rmsnorm_forward", "eps"}));
  EXPECT_TRUE(throws_naming([&] { be.rmsnorm_backward(x.data(), w.data(), nullptr, x.data(), y.data(), nullptr, 3, 4); },
                            {"rmsnorm_backward", "rstd is null"}));
  expect_untouched(y, 1.5f, "rmsnorm y");
  expect_untouched(rstd, 1.5f, "rmsnorm rstd");
}

// ── layernorm ─────────────────────────────────────────────────────────────────────────────────
void check_layernorm(Backend& be) {
  for (const auto& [N, C] : std::vector<std::pair<int, int>>{{1, 2}, {5, 32}, {2, 129}, {1, 33}, {3, 127}, {1, 1}}) {
    const std::string what = shape("layernorm", N, C);
    const F32 x = randn(N * C, 7), w = randn(C, 8), b = randn(C, 9), r = randn(N * C, 10);
    const F32 dw0 = randn(C, 11), db0 = randn(C, 12);
    F32 y(N * C, kPoison), mean(N, kPoison), rstd(N, kPoison), dx(N * C, kPoison), dw = dw0, db = db0;
    be.layernorm_forward(x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), N, C, kEps);
    D64 x64 = to64(x), w64 = to64(w), b64 = to64(b);
    expect_close(y, ref_layernorm(x64, w64, b64, N, C, kEps), kFwdTol, what + " y");
    be.layernorm_backward(x.data(), w.data(), mean.data(), rstd.data(), r.data(), dx.data(), dw.data(), db.data(), N, C);
    auto loss = [&] { return dot(ref_layernorm(x64, w64, b64, N, C, kEps), r); };
    expect_close(dx, fd_grad(x64, loss), kGradTol, what + " dx");
    expect_added(dw, dw0, fd_grad(w64, loss), kGradTol, what + " dw");
    expect_added(db, db0, fd_grad(b64, loss), kGradTol, what + " db");
  }
  for (const auto& [N, C] : std::vector<std::pair<int, int>>{{517, 33}, {40, 1100}}) {
    const std::string what = shape("layernorm", N, C);
    const F32 x = randn(N * C, 13), w = randn(C, 14), b = randn(C, 15), r = randn(N * C, 16);
    const F32 dw0 = randn(C, 17), db0 = randn(C, 18);
    F32 y(N * C, kPoison), mean(N, kPoison), rstd(N, kPoison);
    be.layernorm_forward(x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), N, C, kEps);
    const D64 x64 = to64(x), w64 = to64(w), b64 = to64(b);
    expect_close(y, ref_layernorm(x64, w64, b64, N, C, kEps), kFwdTol, what + " y");
    F32 dx(N * C, kPoison), dw = dw0, db = db0, dx2(N * C, kPoison), dw2 = dw0, db2 = db0;
    be.layernorm_backward(x.data(), w.data(), mean.data(), rstd.data(), r.data(), dx.data(), dw.data(), db.data(), N, C);
    be.layernorm_backward(x.data(), w.data(), mean.data(), rstd.data(), r.data(), dx2.data(), dw2.data(), db2.data(), N,
                          C);
    D64 gx, gw, gb;
    ref_layernorm_grad(x64, w64, r, N, C, kEps, gx, gw, gb);
    expect_close(dx, gx, kGradTol, what + " dx");
    expect_added(dw, dw0, gw, kGradTol, what + " dw");
    expect_added(db, db0, gb, kGradTol, what + " db");
    expect_bitwise(dx, dx2, what + " dx");
    expect_bitwise(dw, dw2, what + " dw");
    expect_bitwise(db, db2, what + " db");
    // optional outputs: only db, then only dx
    F32 db3 = db0, dx3(N * C, kPoison);
    be.layernorm_backward(x.data(), w.data(), mean.data(), rstd.data(), r.data(), nullptr, nullptr, db3.data(), N, C);
    expect_bitwise(db, db3, what + " db alone");
    be.layernorm_backward(x.data(), w.data(), mean.data(), rstd.data(), r.data(), dx3.data(), nullptr, nullptr, N, C);
    expect_bitwise(dx, dx3, what + " dx alone");
  }
  F32 x = randn(12, 17), w = randn(4, 18), y(12, 1.5f);
  EXPECT_TRUE(throws_naming([&] { be.layernorm_forward(x.data(), w.data(), nullptr, y.data(), nullptr, nullptr, 3, 4, kEps); },
                            {"layernorm_forward", "b is null"}));
  EXPECT_TRUE(throws_naming([&] { be.layernorm_backward(x.data(), w.data(), nullptr, x.data(), x.data(), y.data(), nullptr,
                                                        nullptr, 3, 4); },
                            {"layernorm_backward", "mean is null"}));
  expect_untouched(y, 1.5f, "layernorm y");
}

// ── swiglu ────────────────────────────────────────────────────────────────────────────────────
void check_swiglu(Backend& be) {
  for (int N : {1, 257, 5000}) {
    const std::string what = "swiglu N=" + std::to_string(N);
    const F32 g = randn(N, 11, 3.0f), u = randn(N, 12), r = randn(N, 13);
    F32 a(N, kPoison), dg(N, kPoison), du(N, kPoison);
    be.swiglu_forward(g.data(), u.data(), a.data(), N);
    D64 g64 = to64(g), u64 = to64(u);
    // element i of Σ r∘a depends on g[i], u[i] only: the differences of a[i]·r[i] give the gradients
    D64 ref(N), gg(N), gu(N);
    for (int i = 0; i < N; ++i) {
      auto a_of = [](double gi, double ui) { return gi / (1 + std::exp(-gi)) * ui; };
      ref[i] = a_of(g64[i], u64[i]);
      gg[i] = r[i] * (a_of(g64[i] + kFdStep, u64[i]) - a_of(g64[i] - kFdStep, u64[i])) / (2 * kFdStep);
      gu[i] = r[i] * (a_of(g64[i], u64[i] + kFdStep) - a_of(g64[i], u64[i] - kFdStep)) / (2 * kFdStep);
    }
    expect_close(a, ref, kFwdTol, what + " a");
    be.swiglu_backward(g.data(), u.data(), r.data(), dg.data(), du.data(), N);
    expect_close(dg, gg, kGradTol, what + " dg");
    expect_close(du, gu, kGradTol, what + " du");
    F32 dg2(N, kPoison), du2(N, kPoison);
    be.swiglu_backward(g.data(), u.data(), r.data(), dg2.data(), du2.data(), N);
    expect_bitwise(dg, dg2, what + " dg");
    expect_bitwise(du, du2, what + " du");
  }
  F32 g(4, 1.0f), a(4, 1.5f);
  EXPECT_TRUE(throws_naming([&] { be.swiglu_forward(g.data(), nullptr, a.data(), 4); }, {"swiglu_forward", "u is null"}));
  EXPECT_TRUE(throws_naming([&] { be.swiglu_backward(g.data(), g.data(), g.data(), a.data(), nullptr, 4); },
                            {"swiglu_backward", "du is null"}));
  expect_untouched(a, 1.5f, "swiglu a");
}

// ── embedding ─────────────────────────────────────────────────────────────────────────────────
void check_embedding(Backend& be) {
  struct EmbedCase {
    int N, V, C;
    std::vector<int32_t> tokens;
  };
  std::vector<EmbedCase> cases;
  cases.push_back({9, 5, 3, {0, 4, 4, 2, 0, 1, 4, 3, 0}});
  cases.push_back({1, 1, 1, {0}});
  // V > N, a few hot tokens repeated hundreds of times among rare ones; a row wider than a tile
  for (const auto& [N, V, C] : std::vector<std::tuple<int, int, int>>{{2000, 5000, 33}, {64, 300, 1100}}) {
    EmbedCase c{N, V, C, std::vector<int32_t>(N)};
    Rng rng(N + C);
    const int32_t hot[] = {0, 7, V - 1};
    for (auto& t : c.tokens) t = rng.integer(0, 2) == 0 ? rng.integer(0, V - 1) : hot[rng.integer(0, 2)];
    cases.push_back(std::move(c));
  }
  for (const EmbedCase& c : cases) {
    const std::string what = "embedding N=" + std::to_string(c.N) + " V=" + std::to_string(c.V) + " C=" + std::to_string(c.C);
    const size_t NC = size_t(c.N) * c.C, VC = size_t(c.V) * c.C;
    const F32 table = randn(VC, 14), dout = randn(NC, 15), dt0 = randn(VC, 16);
    F32 out(NC, kPoison);
    be.embedding_forward(c.tokens.data(), table.data(), out.data(), c.N, c.V, c.C);
    for (int n = 0; n < c.N; ++n)
      for (int k = 0; k < c.C; ++k) ASSERT_EQ(out[size_t(n) * c.C + k], table[size_t(c.tokens[n]) * c.C + k]) << what;
    D64 want(VC, 0.0);
    for (int n = 0; n < c.N; ++n)
      for (int k = 0; k < c.C; ++k) want[size_t(c.tokens[n]) * c.C + k] += dout[size_t(n) * c.C + k];
    F32 dt = dt0, dt2 = dt0;
    be.embedding_backward(c.tokens.data(), dout.data(), dt.data(), c.N, c.V, c.C);
    be.embedding_backward(c.tokens.data(), dout.data(), dt2.data(), c.N, c.V, c.C);
    // fp32 sums of ≤ ~700 unit terms: 1e-5 of the largest entry is a few hundred ulps of margin
    expect_added(dt, dt0, want, kFwdTol, what + " dtable");
    expect_bitwise(dt, dt2, what + " dtable");
  }
  const int V = 5, C = 3;
  const std::vector<int32_t> bad = {0, 5};
  const F32 table = randn(V * C, 14), dout = randn(2 * C, 15);
  F32 out(2 * C, -3.0f), dt(V * C, -3.0f);
  EXPECT_TRUE(throws_naming([&] { be.embedding_forward(bad.data(), table.data(), out.data(), 2, V, C); },
                            {"embedding_forward: tokens[1] = 5"}));
  EXPECT_TRUE(throws_naming([&] { be.embedding_backward(bad.data(), dout.data(), dt.data(), 2, V, C); },
                            {"embedding_backward: tokens[1] = 5"}));
  EXPECT_TRUE(throws_naming([&] { be.embedding_forward(bad.data(), table.data(), out.data(), 2, 0, C); },
                            {"embedding_forward", "V = 0"}));
  EXPECT_TRUE(throws_naming([&] { be.embedding_backward(bad.data(), nullptr, dt.data(), 2, V, C); },
                            {"embedding_backward", "dout is null"}));
  expect_untouched(out, -3.0f, "embedding out");
  expect_untouched(dt, -3.0f, "embedding dtable");
}

// ── cross-entropy ─────────────────────────────────────────────────────────────────────────────
// The backend op writes loss[n]; the total is their fp64 sum in row order (what the model sums).
double ce_total(Backend& be, const float* z, const int32_t* tgt, float* loss, int N, int V) {
  F32 own;
  if (loss == nullptr) {
    own.assign(size_t(N), 0.0f);
    loss = own.data();
  }
  be.cross_entropy_forward(z, tgt, loss, N, V);
  double total = 0.0;
  for (int n = 0; n < N; ++n) total += loss[n];
  return total;
}

void check_cross_entropy(Backend& be) {
  {  // small: finite differences, a large logit (the max shift must keep it finite), a −1 target
    const int N = 6, V = 37;
    F32 z = randn(N * V, 16, 4.0f);
    z[2 * V + 5] = 80.0f;
    const std::vector<int32_t> tgt = {3, -1, 5, 0, 36, 17};
    F32 loss(N, kPoison), dz(N * V, kPoison);
    const double total = ce_total(be, z.data(), tgt.data(), loss.data(), N, V);
    D64 z64 = to64(z), rows;
    const double want = ref_cross_entropy(z64, tgt, N, V, &rows);
    EXPECT_NEAR(total, want, kLossSumRel * std::max(1.0, std::fabs(want)));
    expect_close(loss, rows, kFwdTol, "cross_entropy loss");
    EXPECT_EQ(loss[1], 0.0f);
    const float dl = 0.5f;
    be.cross_entropy_backward(z.data(), tgt.data(), dl, dz.data(), N, V);
    expect_close(dz, fd_grad(z64, [&] { return dl * ref_cross_entropy(z64, tgt, N, V); }), kGradTol,
                 "cross_entropy dz");
    for (int v = 0; v < V; ++v) ASSERT_EQ(dz[1 * V + v], 0.0f);
  }
  // large V, N = 1 and N = 3 (with masked −inf logits in a row): fp64 analytic softmax − onehot
  for (const auto& [N, V] : std::vector<std::pair<int, int>>{{1, 50000}, {3, 50000}, {4, 129}}) {
    const std::string what = "cross_entropy N=" + std::to_string(N) + " V=" + std::to_string(V);
    F32 z = randn(size_t(N) * V, 20 + N, 3.0f);
    for (int v = 0; v < V; v += 7) z[v] = -std::numeric_limits<float>::infinity();
    std::vector<int32_t> tgt(N);
    for (int n = 0; n < N; ++n) tgt[n] = (n * 7919 + 1) % V;   // 7919: a prime spreading targets
    if (N > 2) tgt[N - 1] = kInvalidIndex;
    F32 loss(N, kPoison), dz(size_t(N) * V, kPoison), dz2(size_t(N) * V, kPoison);
    const D64 z64 = to64(z);
    D64 rows;
    const double want = ref_cross_entropy(z64, tgt, N, V, &rows);
    const double total = ce_total(be, z.data(), tgt.data(), loss.data(), N, V);
    EXPECT_NEAR(total, want, kLossSumRel * std::max(1.0, std::fabs(want))) << what;
    expect_close(loss, rows, kFwdTol, what + " loss");
    const float dl = 1.25f;
    be.cross_entropy_backward(z.data(), tgt.data(), dl, dz.data(), N, V);
    be.cross_entropy_backward(z.data(), tgt.data(), dl, dz2.data(), N, V);
    D64 g(size_t(N) * V, 0.0);
    for (int n = 0; n < N; ++n) {
      if (tgt[n] < 0) continue;
      double m = -std::numeric_limits<double>::infinity(), e = 0;
      for (int v = 0; v < V; ++v) m = std::max(m, z64[size_t(n) * V + v]);
      for (int v = 0; v < V; ++v) e += std::exp(z64[size_t(n) * V + v] - m);
      for (int v = 0; v < V; ++v) g[size_t(n) * V + v] = dl * std::exp(z64[size_t(n) * V + v] - m) / e;
      g[size_t(n) * V + tgt[n]] -= dl;
    }
    expect_close(dz, g, kGradTol, what + " dz");
    expect_bitwise(dz, dz2, what + " dz");
  }
  {  // the fp64 total is bitwise the same over reruns with many threads (an OpenMP reduction's
     // combine order is not: it changed the total's last bits at ≥ 3 threads); the CPU op's own total
     // (cpu::cross_entropy_forward returns it) and the backend's row losses both
    const int N = 4099, V = 37, kThreads = 7, kReruns = 8;
    const F32 z = randn(size_t(N) * V, 40, 3.0f);
    std::vector<int32_t> tgt(N);
    for (int n = 0; n < N; ++n) tgt[n] = n % 11 == 3 ? kInvalidIndex : (n * 31) % V;
    const int threads = omp_get_max_threads();
    omp_set_num_threads(kThreads);
    const bool on_cpu = be.host_memory() && be.name() == "cpu";
    const auto total = [&] {
      return on_cpu ? cpu::cross_entropy_forward(z.data(), tgt.data(), nullptr, N, V)
                    : ce_total(be, z.data(), tgt.data(), nullptr, N, V);
    };
    const double first = total();
    for (int r = 1; r < kReruns; ++r) {
      const double again = total();
      EXPECT_EQ(0, std::memcmp(&first, &again, sizeof first)) << "cross_entropy total, rerun " << r;
    }
    omp_set_num_threads(threads);
  }
  const int N = 2, V = 4;
  const F32 z = randn(N * V, 30);
  const std::vector<int32_t> bad = {3, -2};
  F32 loss(N, 1.5f), dz(N * V, 1.5f);
  EXPECT_TRUE(throws_naming([&] { be.cross_entropy_forward(z.data(), bad.data(), loss.data(), N, V); },
                            {"cross_entropy_forward: targets[1] = -2"}));
  EXPECT_TRUE(throws_naming([&] { be.cross_entropy_backward(z.data(), bad.data(), 1.0f, dz.data(), N, V); },
                            {"cross_entropy_backward: targets[1] = -2"}));
  EXPECT_TRUE(throws_naming([&] { be.cross_entropy_backward(z.data(), bad.data(), 1.0f, nullptr, N, V); },
                            {"cross_entropy_backward", "dlogits is null"}));
  expect_untouched(loss, 1.5f, "cross_entropy loss");
  expect_untouched(dz, 1.5f, "cross_entropy dlogits");
}

}  // namespace dsa::test
