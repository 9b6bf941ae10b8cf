// rotations.cpp — op family 2 of dsa/ops.h: the orthonormal fast Walsh–Hadamard transform (V3.2
// rotate_activation), RoPE forward/backward in both pair layouts, and DeepSeek-V3's YaRN frequency
// table (precompute_freqs_cis) and softmax mscale. fp32 storage; every rotation is evaluated in fp64
// and rounded once on store.
#include <algorithm>
#include <cmath>
#include <numbers>
#include <vector>

#include "common/check.h"
#include "dsa/ops.h"

namespace dsa::cpu {
namespace {

constexpr int kMaxHadamardDim = 32768;

// (pair index i) → the two element offsets it rotates, inside one [D] vector.
struct PairLayout {
  int offset, half;
  RopeLayout layout;
  int first(int i) const { return layout == RopeLayout::kInterleaved ? offset + 2 * i : offset + i; }
  int second(int i) const { return layout == RopeLayout::kInterleaved ? offset + 2 * i + 1 : offset + i + half; }
};

void check_rope(const RopeParams& p, const char* op) {
  detail::require_non_negative(p.T, op, "T");
  detail::require_non_negative(p.H, op, "H");
  detail::require_positive(p.D, op, "D");
  detail::require_positive(p.R, op, "R");
  if (p.R % 2 != 0) detail::fail(op, "R = ", p.R, " must be even");
  detail::require_non_negative(p.offset, op, "offset");
  if (p.offset + p.R > p.D) detail::fail(op, "offset + R = ", p.offset + p.R, " exceeds D = ", p.D);
  detail::require_ptr(p.pos, op, "pos");
  detail::require_ptr(p.inv_freq, op, "inv_freq");
  detail::require_ptr(p.x, op, "x");
  for (int t = 0; t < p.T; ++t)
    if (p.pos[t] < 0) detail::fail(op, "pos[", t, "] = ", p.pos[t], " must be >= 0");
}

// sign = +1: forward rotation by +angle; sign = −1: its transpose (rotation by −angle).
void rope_apply(const RopeParams& p, double sign) {
  const int half = p.R / 2;
  const PairLayout pairs{p.offset, half, p.layout};
#pragma omp parallel for schedule(static)
  for (int t = 0; t < p.T; ++t) {
    for (int i = 0; i < half; ++i) {
      // The angle is formed in fp64: in fp32, pos·inv_freq at pos ≈ 1.3e5 is off by up to ~1e-2 rad.
      const double angle = sign * static_cast<double>(p.pos[t]) * static_cast<double>(p.inv_freq[i]);
      const double c = std::cos(angle), s = std::sin(angle);
      for (int h = 0; h < p.H; ++h) {
        float* v = p.x + (static_cast<int64_t>(t) * p.H + h) * p.D;
        const double a = v[pairs.first(i)], b = v[pairs.second(i)];
        v[pairs.first(i)] = static_cast<float>(a * c - b * s);
        v[pairs.second(i)] = static_cast<float>(a * s + b * c);
      }
    }
  }
}

}  // namespace

void hadamard_transform(float* x, int64_t N, int D) {
  constexpr const char* op = "hadamard_transform";
  detail::require_ptr(x, op, "x");
  detail::require_non_negative(N, op, "N");
  if (!detail::is_power_of_two(D) || D > kMaxHadamardDim)
    detail::fail(op, "D = ", D, " must be a power of two in [1, ", kMaxHadamardDim, "]");
  const double norm = 1.0 / std::sqrt(static_cast<double>(D));
#pragma omp parallel
  {
    std::vector<double> buf(D);
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      float* row = x + n * D;
      for (int i = 0; i < D; ++i) buf[i] = row[i];
      // Sylvester butterflies: after the stage of width len, buf holds H_{2·len} applied blockwise.
      for (int len = 1; len < D; len *= 2)
        for (int base = 0; base < D; base += 2 * len)
          for (int j = base; j < base + len; ++j) {
            const double a = buf[j], b = buf[j + len];
            buf[j] = a + b;
            buf[j + len] = a - b;
          }
      for (int i = 0; i < D; ++i) row[i] = static_cast<float>(buf[i] * norm);
    }
  }
}

void rope_forward(const RopeParams& p) {
  check_rope(p, "rope_forward");
  rope_apply(p, +1.0);
}

// Inverts rope_forward's "(a, b) ← (a·cos − b·sin, a·sin + b·cos)": the rotation matrix is
// orthogonal, so its transpose (angle → −angle) is both the inverse and the gradient map.
void rope_backward(const RopeParams& p) {
  check_rope(p, "rope_backward");
  rope_apply(p, -1.0);
}

void rope_inv_freq(int R, double theta, const YarnScaling& yarn, float* inv_freq) {
  constexpr const char* op = "rope_inv_freq";
  detail::require_positive(R, op, "R");
  if (R % 2 != 0) detail::fail(op, "R = ", R, " must be even");
  if (!(theta > 1.0)) detail::fail(op, "theta = ", theta, " must be > 1");
  detail::require_ptr(inv_freq, op, "inv_freq");
  const bool scaled = yarn.factor > 1.0;
  if (scaled) {
    detail::require_positive(yarn.original_max_position, op, "yarn.original_max_position");
    if (!(yarn.beta_fast > 0.0)) detail::fail(op, "yarn.beta_fast = ", yarn.beta_fast, " must be > 0");
    if (!(yarn.beta_slow > 0.0)) detail::fail(op, "yarn.beta_slow = ", yarn.beta_slow, " must be > 0");
  }
  const int half = R / 2;
  // YaRN "NTK-by-parts": the dimension index at which a frequency makes `rotations` full turns over
  // the original context is R·ln(L0 / (2π·rotations)) / (2·ln θ). Dims below floor(dim(beta_fast))
  // keep θ^(−2i/R); dims above ceil(dim(beta_slow)) are interpolated (÷ factor); a linear ramp
  // blends the two in between.
  double low = 0, high = 0;
  if (scaled) {
    auto correction_dim = [&](double rotations) {
      return R * std::log(yarn.original_max_position / (rotations * 2.0 * std::numbers::pi)) / (2.0 * std::log(theta));
    };
    low = std::max(std::floor(correction_dim(yarn.beta_fast)), 0.0);
    high = std::min(std::ceil(correction_dim(yarn.beta_slow)), static_cast<double>(R - 1));
    if (low == high) high += 0.001;  // as DeepSeek: avoid a zero-width ramp
  }
  for (int i = 0; i < half; ++i) {
    double f = std::pow(theta, -2.0 * i / R);
    if (scaled) {
      const double ramp = std::clamp((i - low) / (high - low), 0.0, 1.0);  // 0: keep, 1: interpolate
      const double smooth = 1.0 - ramp;
      f = f / yarn.factor * (1.0 - smooth) + f * smooth;
    }
    inv_freq[i] = static_cast<float>(f);
  }
}

double yarn_softmax_mscale(const YarnScaling& yarn) {
  return yarn.factor > 1.0 ? 0.1 * yarn.mscale * std::log(yarn.factor) + 1.0 : 1.0;
}

}  // namespace dsa::cpu
