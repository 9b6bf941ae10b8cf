// op_rotations.cpp — rows hadamard_transform and rope (ops.h family 2), against fp64 references:
// the explicit Sylvester matrix product, an fp64 pair rotation, and DeepSeek-V3's YaRN table
// (precompute_freqs_cis) recomputed in fp64.
#include <algorithm>
#include <bit>
#include <cmath>
#include <numbers>

#include "table.h"

namespace dsa::test {
namespace {

constexpr double kU32 = 0x1p-24;  // unit roundoff of fp32

// ── Hadamard reference ────────────────────────────────────────────────────────────────────────
// (H_D)_{ij} = (−1)^popcount(i & j) for the Sylvester construction H_2k = [[H_k, H_k], [H_k, −H_k]].
std::vector<double> hadamard_ref(const std::vector<float>& x, int64_t N, int D) {
  std::vector<double> y(x.size());
  const double norm = 1.0 / std::sqrt(double(D));
  for (int64_t n = 0; n < N; ++n)
    for (int i = 0; i < D; ++i) {
      double acc = 0;
      for (int j = 0; j < D; ++j)
        acc += (std::popcount(unsigned(i & j)) % 2 ? -1.0 : 1.0) * x[size_t(n) * D + j];
      y[size_t(n) * D + i] = acc * norm;
    }
  return y;
}

double row_norm(const float* v, int D) {
  double s = 0;
  for (int i = 0; i < D; ++i) s += double(v[i]) * v[i];
  return std::sqrt(s);
}

// ── RoPE reference ────────────────────────────────────────────────────────────────────────────
std::vector<double> rope_ref(const std::vector<float>& x, const RopeParams& p, const std::vector<float>& inv_freq,
                             double sign) {
  std::vector<double> y(x.begin(), x.end());
  const int half = p.R / 2;
  for (int t = 0; t < p.T; ++t)
    for (int h = 0; h < p.H; ++h)
      for (int i = 0; i < half; ++i) {
        const size_t base = (size_t(t) * p.H + h) * p.D;
        const size_t ia = base + (p.layout == RopeLayout::kInterleaved ? p.offset + 2 * i : p.offset + i);
        const size_t ib = base + (p.layout == RopeLayout::kInterleaved ? p.offset + 2 * i + 1 : p.offset + i + half);
        const double ang = sign * double(p.pos[t]) * double(inv_freq[i]);
        const double a = x[ia], b = x[ib];
        y[ia] = a * std::cos(ang) - b * std::sin(ang);
        y[ib] = a * std::sin(ang) + b * std::cos(ang);
      }
  return y;
}

// Elementwise tolerance of a rotated pair (a, b): an fp64 evaluation rounds once on store
// (2^-24·|y| ≤ 2^-24·(|a|+|b|)); an fp32 kernel with an accurately reduced angle adds a few ulps from
// sin/cos and two roundings per product sum — 2^-22·(|a|+|b|) allows about four such errors.
constexpr double kRopeRel = 4 * kU32;

// DeepSeek-V3 YaRN inverse frequencies in fp64 (find_correction_dim / range, linear ramp blend).
std::vector<double> yarn_ref(int R, double theta, const YarnScaling& y, double* low_out = nullptr,
                             double* high_out = nullptr) {
  std::vector<double> f(R / 2);
  for (int i = 0; i < R / 2; ++i) f[i] = 1.0 / std::pow(theta, double(2 * i) / R);
  if (y.factor <= 1.0) return f;
  auto dim_of = [&](double rot) {
    return R * std::log(y.original_max_position / (rot * 2 * std::numbers::pi)) / (2 * std::log(theta));
  };
  const double low = std::max(std::floor(dim_of(y.beta_fast)), 0.0);
  double high = std::min(std::ceil(dim_of(y.beta_slow)), double(R - 1));
  if (low == high) high += 0.001;
  for (int i = 0; i < R / 2; ++i) {
    const double w_interp = std::clamp((i - low) / (high - low), 0.0, 1.0);
    f[i] = f[i] * (1 - w_interp) + f[i] / y.factor * w_interp;
  }
  if (low_out) *low_out = low;
  if (high_out) *high_out = high;
  return f;
}

YarnScaling v32_yarn() {  // DeepSeek-V3.2 ModelArgs: rope_factor 40, original_seq_len 4096, β 32 / 1
  YarnScaling y;
  y.factor = 40.0;
  y.original_max_position = 4096;
  y.beta_fast = 32.0;
  y.beta_slow = 1.0;
  y.mscale = 1.0;
  return y;
}
constexpr double kRopeTheta = 10000.0;

}  // namespace

// ═════════════════════════════════════ hadamard_transform ══════════════════════════════════
void check_hadamard_transform(Backend& be) {
  std::vector<std::pair<int64_t, int>> cases;
  for (int D = 1; D <= 256; D *= 2) cases.push_back({3, D});
  cases.push_back({1, 4096});
  uint64_t seed = 300;
  for (const auto& [N, D] : cases) {
    SCOPED_TRACE("N=" + std::to_string(N) + " D=" + std::to_string(D));
    Rng rng(seed++);
    const auto x = rng.normal_vec(size_t(N) * D);
    const auto ref = hadamard_ref(x, N, D);
    Guarded<float> y(x.size());
    std::copy(x.begin(), x.end(), y.data());
    be.hadamard_transform(y.data(), N, D);
    EXPECT_GUARDS(y);
    for (int64_t n = 0; n < N; ++n) {
      // Every output is (±x_0 ± … ± x_{D−1})/√D; an fp32 butterfly network rounds log2(D) times at
      // magnitudes ≤ ‖x‖₁/√D ≤ ‖x‖₂, so |y − y_ref| ≤ (log2 D + 1)·2u·‖x‖₂ (u = 2^-24, factor 2 slack).
      const double nx = row_norm(x.data() + n * D, D);
      const double tol = (std::log2(double(D)) + 1) * 2 * kU32 * nx;
      for (int i = 0; i < D; ++i) {
        const size_t k = size_t(n) * D + i;
        ASSERT_LE(std::fabs(y[k] - ref[k]), tol) << "row " << n << " element " << i;
      }
      // Orthonormal: the norm is preserved up to the elementwise error (‖δ‖ ≤ √D·tol).
      EXPECT_NEAR(row_norm(y.data() + n * D, D), nx, std::sqrt(double(D)) * tol);
    }
    // Self-inverse: applying it twice returns x (two applications, so twice the bound).
    std::vector<float> z(y.data(), y.data() + y.size());
    be.hadamard_transform(z.data(), N, D);
    for (int64_t n = 0; n < N; ++n) {
      const double tol = 2 * (std::log2(double(D)) + 1) * 2 * kU32 * row_norm(x.data() + n * D, D);
      for (int i = 0; i < D; ++i) ASSERT_NEAR(z[size_t(n) * D + i], x[size_t(n) * D + i], tol);
    }
    // Deterministic.
    std::vector<float> y2(x);
    be.hadamard_transform(y2.data(), N, D);
    EXPECT_TRUE(bitwise_equal(y.data(), y2.data(), y2.size()));
  }
  // The Sylvester sign pattern itself: H_4 · e_1 = (1, −1, 1, −1)/2.
  {
    std::vector<float> e(4, 0.0f);
    e[1] = 1.0f;
    be.hadamard_transform(e.data(), 1, 4);
    EXPECT_EQ(e, (std::vector<float>{0.5f, -0.5f, 0.5f, -0.5f}));
  }
  // N = 0 writes nothing.
  {
    Guarded<float> y(8, 1.0f);
    be.hadamard_transform(y.data(), 0, 8);
    EXPECT_TRUE(y.untouched(1.0f));
  }
  // Bad D (named, with its value), bad N, null x: dsa::Error and x untouched.
  {
    Guarded<float> y(256, 1.0f);
    for (const int D : {0, 3, 96, -8, 65536}) {
      const std::string frag = "D = " + std::to_string(D);
      EXPECT_TRUE(throws_naming([&] { be.hadamard_transform(y.data(), 1, D); }, {"hadamard_transform", frag.c_str()}));
    }
    EXPECT_TRUE(throws_naming([&] { be.hadamard_transform(y.data(), -1, 8); }, {"hadamard_transform", "N"}));
    EXPECT_TRUE(throws_naming([&] { be.hadamard_transform(nullptr, 1, 8); }, {"hadamard_transform", "x"}));
    EXPECT_TRUE(y.untouched(1.0f));
  }
}

// ═════════════════════════════════════ rope ════════════════════════════════════════════════
void check_rope(Backend& be) {
  // ── the YaRN table (a CPU function) vs the fp64 recomputation ──
  const YarnScaling yarn = v32_yarn();
  std::vector<float> inv_freq(kMlaRopeDim / 2);
  cpu::rope_inv_freq(kMlaRopeDim, kRopeTheta, yarn, inv_freq.data());
  {
    double low = 0, high = 0;
    const auto ref = yarn_ref(kMlaRopeDim, kRopeTheta, yarn, &low, &high);
    // V3.2 numbers, by hand: dim(32 rotations) = 64·ln(4096/(64π))/(2·ln 1e4) = 10.47 → floor 10;
    // dim(1 rotation) = 64·ln(4096/(2π))/(2·ln 1e4) = 22.51 → ceil 23.
    EXPECT_EQ(low, 10.0);
    EXPECT_EQ(high, 23.0);
    for (size_t i = 0; i < ref.size(); ++i) {
      EXPECT_NEAR(inv_freq[i], ref[i], ref[i] * kU32) << "inv_freq[" << i << "]";  // one fp32 rounding
      const double plain = std::pow(kRopeTheta, -2.0 * double(i) / kMlaRopeDim);
      if (double(i) <= low) {
        EXPECT_NEAR(inv_freq[i], plain, plain * kU32) << "high-frequency dim " << i << " kept";
      }
      if (double(i) >= high) {
        EXPECT_NEAR(inv_freq[i], plain / yarn.factor, plain / yarn.factor * kU32) << "dim " << i;
      }
      if (i > 0) {
        EXPECT_LT(inv_freq[i], inv_freq[i - 1]);
      }
    }
    EXPECT_EQ(inv_freq[0], 1.0f);
    // factor ≤ 1 disables YaRN: plain θ^(−2i/R).
    std::vector<float> plain(8);
    YarnScaling off;
    off.factor = 1.0;
    cpu::rope_inv_freq(16, 500.0, off, plain.data());
    for (int i = 0; i < 8; ++i) EXPECT_NEAR(plain[i], std::pow(500.0, -2.0 * i / 16), std::pow(500.0, -2.0 * i / 16) * kU32);
    // mscale: 0.1·ln(40) + 1, and the V3.2 softmax scale 192^-0.5 · mscale² ≈ 0.13524 (dsa-spec §2.4).
    EXPECT_DOUBLE_EQ(cpu::yarn_softmax_mscale(yarn), 0.1 * std::log(40.0) + 1.0);
    EXPECT_NEAR(std::pow(192.0, -0.5) * std::pow(cpu::yarn_softmax_mscale(yarn), 2), 0.13524, 1e-5);
    EXPECT_EQ(cpu::yarn_softmax_mscale(off), 1.0);
    EXPECT_TRUE(throws_naming([&] { cpu::rope_inv_freq(63, kRopeTheta, yarn, plain.data()); }, {"rope_inv_freq", "R = 63"}));
    EXPECT_TRUE(throws_naming([&] { cpu::rope_inv_freq(64, kRopeTheta, yarn, nullptr); }, {"rope_inv_freq", "inv_freq"}));
  }

  // ── rotations vs the fp64 reference ──
  struct Case {
    const char* name;
    int T, H, D, offset, R;
    RopeLayout layout;
    std::vector<int32_t> pos;
    bool yarn;
  };
  const std::vector<Case> cases = {
      // the indexer: rotate-half on the FIRST 64 of 128 dims
      {"indexer", 7, 3, kIndexerKeyDim, 0, kMlaRopeDim, RopeLayout::kRotateHalf, {0, 1, 2, 4095, 4096, 65536, 131071}, true},
      // main MLA q: interleaved on the LAST 64 of 192 (128 NoPE + 64 RoPE) dims
      {"mla_q", 5, 4, 192, 128, kMlaRopeDim, RopeLayout::kInterleaved, {0, 7, 100, 131071, 2048}, true},
      // absorbed MQA latent row: the last 64 of 576
      {"mla_latent", 2, 2, kMlaLatentDim + kMlaRopeDim, kMlaLatentDim, kMlaRopeDim, RopeLayout::kInterleaved, {3, 99999}, true},
      // small shapes, both layouts, an offset in the middle, T = 1
      {"small_interleaved", 1, 1, 8, 2, 4, RopeLayout::kInterleaved, {5}, false},
      {"small_rotate_half", 3, 2, 8, 2, 4, RopeLayout::kRotateHalf, {0, 5, 17}, false},
  };
  uint64_t seed = 400;
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    std::vector<float> freq(c.R / 2);
    YarnScaling none;
    none.factor = 1.0;
    cpu::rope_inv_freq(c.R, kRopeTheta, c.yarn ? yarn : none, freq.data());
    Rng rng(seed++);
    const size_t n = size_t(c.T) * c.H * c.D;
    const auto x = rng.normal_vec(n);
    const auto g = rng.normal_vec(n);
    RopeParams p{c.T, c.H, c.D, c.offset, c.R, c.layout, c.pos.data(), freq.data(), nullptr};
    const auto ref_f = rope_ref(x, p, freq, +1.0);
    const auto ref_b = rope_ref(g, p, freq, -1.0);

    Guarded<float> y(n), gb(n);
    std::copy(x.begin(), x.end(), y.data());
    std::copy(g.begin(), g.end(), gb.data());
    p.x = y.data();
    be.rope_forward(p);
    p.x = gb.data();
    be.rope_backward(p);
    EXPECT_GUARDS(y);
    EXPECT_GUARDS(gb);

    const int half = c.R / 2;
    for (int t = 0; t < c.T; ++t)
      for (int h = 0; h < c.H; ++h) {
        const size_t base = (size_t(t) * c.H + h) * c.D;
        for (int d = 0; d < c.D; ++d) {
          const size_t k = base + d;
          if (d < c.offset || d >= c.offset + c.R) {  // outside the rotated span: bitwise unchanged
            ASSERT_EQ(y[k], x[k]) << "t " << t << " dim " << d;
            ASSERT_EQ(gb[k], g[k]) << "t " << t << " dim " << d;
            continue;
          }
          const int j = d - c.offset;  // partner index inside the span
          const int partner = c.layout == RopeLayout::kInterleaved ? (j ^ 1) : (j < half ? j + half : j - half);
          const size_t kp = base + c.offset + partner;
          ASSERT_LE(std::fabs(y[k] - ref_f[k]), kRopeRel * (std::fabs(x[k]) + std::fabs(x[kp]))) << "fwd t " << t << " dim " << d;
          ASSERT_LE(std::fabs(gb[k] - ref_b[k]), kRopeRel * (std::fabs(g[k]) + std::fabs(g[kp]))) << "bwd t " << t << " dim " << d;
        }
      }

    // Backward is the exact transpose: ⟨R x, g⟩ = ⟨x, Rᵀ g⟩ (fp64 dot products of the fp32
    // outputs; each side carries the elementwise error above, hence 2·kRopeRel·Σ(|x|+|x'|)|g|-ish,
    // bounded by 4·kRopeRel·‖x‖‖g‖).
    double lhs = 0, rhs = 0, nx = 0, ng = 0;
    for (size_t k = 0; k < n; ++k) {
      lhs += double(y[k]) * g[k];
      rhs += double(x[k]) * gb[k];
      nx += double(x[k]) * x[k];
      ng += double(g[k]) * g[k];
    }
    EXPECT_NEAR(lhs, rhs, 4 * kRopeRel * std::sqrt(nx * ng)) << "backward is not the transpose";

    // backward(forward(x)) = x, and determinism.
    std::vector<float> z(y.data(), y.data() + n);
    p.x = z.data();
    be.rope_backward(p);
    for (size_t k = 0; k < n; ++k) ASSERT_NEAR(z[k], x[k], 4 * kRopeRel * (std::sqrt(nx) + 1)) << k;
    std::vector<float> y2(x);
    p.x = y2.data();
    be.rope_forward(p);
    EXPECT_TRUE(bitwise_equal(y.data(), y2.data(), n)) << "rope_forward not deterministic";
  }

  // The two layouts are different rotations (dsa-spec §8.1: the indexer's rotate-half is not the
  // main MLA's interleaved layout) — applying the wrong one must change the result visibly.
  {
    Rng rng(450);
    const int T = 2, H = 1, D = kIndexerKeyDim;
    const std::vector<int32_t> pos = {1000, 50000};
    const auto x = rng.normal_vec(size_t(T) * H * D);
    std::vector<float> a(x), b(x);
    RopeParams p{T, H, D, 0, kMlaRopeDim, RopeLayout::kRotateHalf, pos.data(), inv_freq.data(), a.data()};
    be.rope_forward(p);
    p.layout = RopeLayout::kInterleaved;
    p.x = b.data();
    be.rope_forward(p);
    double max_diff = 0;
    for (size_t k = 0; k < x.size(); ++k) max_diff = std::max(max_diff, double(std::fabs(a[k] - b[k])));
    EXPECT_GT(max_diff, 0.1) << "interleaved and rotate-half layouts agree; one of them is wrong";
  }

  // Bad input: named dsa::Error, x untouched.
  {
    const int T = 2, H = 1, D = 128;
    std::vector<int32_t> pos = {0, 1}, neg = {0, -1};
    Guarded<float> x(size_t(T) * H * D, 1.0f);
    auto run = [&](RopeParams p, const char* op_frag, const char* arg_frag) {
      EXPECT_TRUE(throws_naming([&] { be.rope_forward(p); }, {"rope_forward", arg_frag})) << op_frag;
      EXPECT_TRUE(throws_naming([&] { be.rope_backward(p); }, {"rope_backward", arg_frag})) << op_frag;
    };
    const RopeParams ok{T, H, D, 0, kMlaRopeDim, RopeLayout::kRotateHalf, pos.data(), inv_freq.data(), x.data()};
    RopeParams p = ok;
    p.R = 63;
    run(p, "odd R", "R = 63");
    p = ok;
    p.offset = 100;
    run(p, "span past D", "offset + R");
    p = ok;
    p.pos = nullptr;
    run(p, "null pos", "pos");
    p = ok;
    p.pos = neg.data();
    run(p, "negative position", "pos[1] = -1");
    p = ok;
    p.inv_freq = nullptr;
    run(p, "null inv_freq", "inv_freq");
    p = ok;
    p.T = -1;
    run(p, "negative T", "T");
    p = ok;
    p.x = nullptr;
    run(p, "null x", "x");
    EXPECT_TRUE(x.untouched(1.0f));
  }
}

}  // namespace dsa::test
