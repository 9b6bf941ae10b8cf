// test_util.h — the shared machinery of the test table: seeded random inputs, guarded output
// buffers (sentinels), error metrics with inf/NaN parity, finite differences, bad-input checks.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "backend.h"

namespace dsa::test {

// ── random inputs ──────────────────────────────────────────────────────────────────────────────
// Every case draws from its own seed so a failing case reproduces alone; a fresh seed per run is
// not used (reruns must be bitwise comparable).
class Rng {
 public:
  explicit Rng(uint64_t seed) : gen_(seed) {}
  float uniform(float lo = -1.0f, float hi = 1.0f) { return std::uniform_real_distribution<float>(lo, hi)(gen_); }
  float normal(float stddev = 1.0f) { return std::normal_distribution<float>(0.0f, stddev)(gen_); }
  int integer(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(gen_); }  // inclusive
  std::vector<float> normal_vec(size_t n, float stddev = 1.0f) {
    std::vector<float> v(n);
    for (auto& x : v) x = normal(stddev);
    return v;
  }
  std::vector<float> uniform_vec(size_t n, float lo = -1.0f, float hi = 1.0f) {
    std::vector<float> v(n);
    for (auto& x : v) x = uniform(lo, hi);
    return v;
  }
  std::mt19937_64& engine() { return gen_; }

 private:
  std::mt19937_64 gen_;
};

// ── FP8 tensor-core accumulation ─────────────────────────────────────────────────────────────
// |wgmma e4m3 logit − fp64| ≤ kFp8AccumRel · mag, mag = k_scale·Σ_h |w|·Σ_d |q·k|: each k32 wgmma step
// aligns its 32 products and the running sum to the largest exponent and keeps ≈ 14 bits (DeepSeek-V3
// §3.3.2) → ≤ ~2^-13 of Σ|q·k| per step; four steps → 2^-11; ×4 margin for the unpublished details
// of the alignment. Added to a tensor-core class's bound by the indexer_logits and indexer_logits_paged
// rows on quantised e4m3 inputs.
inline constexpr double kFp8AccumRel = 1.0 / (1 << 9);
// "Exact dots": e4m3 codes of {0, ±1/2, ±1, ±2}. Every product of two is a multiple of 1/4 and a
// 128-term dot stays within ±512, so every partial sum of a dot is exact in any accumulator of ≥ 12
// significant bits (the fp8 tensor core's included): on such data only the fp32 epilogue rounds, and
// a tensor-core variant is held to the exact variants' bound, with no kFp8AccumRel term.
inline constexpr uint8_t kExactDotCodes[] = {0x00, 0x30, 0xB0, 0x38, 0xB8, 0x40, 0xC0};

// ── guarded outputs ────────────────────────────────────────────────────────────────────────────
// An output buffer with kGuard sentinel elements on each side. The body is pre-filled with a
// "poison" value so that an op which forgets to write an element is caught too.
inline constexpr size_t kGuard = 64;

template <typename T>
T sentinel_value() {
  if constexpr (std::is_floating_point_v<T>) return std::numeric_limits<T>::quiet_NaN();
  else return static_cast<T>(0x5A5A5A5A5A5A5A5AULL);
}

template <typename T>
class Guarded {
 public:
  explicit Guarded(size_t n, T poison = sentinel_value<T>()) : n_(n), buf_(n + 2 * kGuard, sentinel_value<T>()) {
    std::fill(buf_.begin() + kGuard, buf_.begin() + kGuard + n, poison);
  }
  T* data() { return buf_.data() + kGuard; }
  const T* data() const { return buf_.data() + kGuard; }
  size_t size() const { return n_; }
  T& operator[](size_t i) { return data()[i]; }
  const T& operator[](size_t i) const { return data()[i]; }
  std::vector<T> vec() const { return std::vector<T>(data(), data() + n_); }
  // True when both guard regions still hold the sentinel (bitwise).
  bool guards_intact() const {
    const T s = sentinel_value<T>();
    for (size_t i = 0; i < kGuard; ++i) {
      if (std::memcmp(&buf_[i], &s, sizeof(T)) != 0) return false;
      if (std::memcmp(&buf_[kGuard + n_ + i], &s, sizeof(T)) != 0) return false;
    }
    return true;
  }
  // True when the body still holds the poison everywhere (nothing was written).
  bool untouched(T poison = sentinel_value<T>()) const {
    for (size_t i = 0; i < n_; ++i)
      if (std::memcmp(&data()[i], &poison, sizeof(T)) != 0) return false;
    return true;
  }

 private:
  size_t n_;
  std::vector<T> buf_;
};

#define EXPECT_GUARDS(buf) EXPECT_TRUE((buf).guards_intact()) << "write outside " #buf

// ── error metrics ──────────────────────────────────────────────────────────────────────────────
struct Diff {
  double max_abs = 0, max_rel = 0, nmse = 0;   // nmse = Σ(a−b)² / Σ b²
  size_t worst = 0;
  bool special_mismatch = false;               // inf / −inf / NaN not at the same positions
  std::string where;                           // first special mismatch
};

template <typename A, typename B>
Diff compare(const A* got, const B* want, size_t n) {
  Diff d;
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    const double g = static_cast<double>(got[i]), w = static_cast<double>(want[i]);
    const bool gs = !std::isfinite(g), ws = !std::isfinite(w);
    if (gs || ws) {
      const bool same = (std::isnan(g) && std::isnan(w)) || (g == w);
      if (!same && !d.special_mismatch) {
        d.special_mismatch = true;
        d.where = "element " + std::to_string(i) + ": got " + std::to_string(g) + ", want " + std::to_string(w);
      }
      continue;
    }
    const double e = std::fabs(g - w);
    if (e > d.max_abs) { d.max_abs = e; d.worst = i; }
    d.max_rel = std::max(d.max_rel, e / std::max(std::fabs(w), 1e-30));
    num += e * e;
    den += w * w;
  }
  d.nmse = den > 0 ? num / den : num;
  return d;
}

// Asserts inf/NaN parity, then max |got − want| ≤ atol + rtol·|want| elementwise.
template <typename A, typename B>
::testing::AssertionResult all_close(const A* got, const B* want, size_t n, double atol, double rtol) {
  for (size_t i = 0; i < n; ++i) {
    const double g = static_cast<double>(got[i]), w = static_cast<double>(want[i]);
    if (!std::isfinite(w) || !std::isfinite(g)) {
      if ((std::isnan(g) && std::isnan(w)) || g == w) continue;
      return ::testing::AssertionFailure() << "element " << i << ": got " << g << ", want " << w << " (inf/NaN parity)";
    }
    if (std::fabs(g - w) > atol + rtol * std::fabs(w))
      return ::testing::AssertionFailure() << "element " << i << ": got " << g << ", want " << w
                                           << " (|diff| " << std::fabs(g - w) << " > " << atol + rtol * std::fabs(w) << ")";
  }
  return ::testing::AssertionSuccess();
}

template <typename T>
bool bitwise_equal(const T* a, const T* b, size_t n) { return std::memcmp(a, b, n * sizeof(T)) == 0; }

// ── finite differences ─────────────────────────────────────────────────────────────────────────
// Central difference of a scalar fp64 function f at x[i] (x is restored afterwards).
inline double central_difference(std::vector<double>& x, size_t i, const std::function<double()>& f, double h = 1e-6) {
  const double x0 = x[i];
  x[i] = x0 + h;
  const double fp = f();
  x[i] = x0 - h;
  const double fm = f();
  x[i] = x0;
  return (fp - fm) / (2 * h);
}

// ── bad input ──────────────────────────────────────────────────────────────────────────────────
// Runs fn, expects dsa::Error whose message contains every fragment (e.g. the op and the argument).
template <typename Fn>
::testing::AssertionResult throws_naming(Fn&& fn, std::initializer_list<const char*> fragments) {
  try {
    fn();
  } catch (const dsa::Error& e) {
    const std::string msg = e.what();
    for (const char* f : fragments)
      if (msg.find(f) == std::string::npos)
        return ::testing::AssertionFailure() << "message \"" << msg << "\" does not name \"" << f << "\"";
    return ::testing::AssertionSuccess();
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "threw a non-dsa::Error: " << e.what();
  }
  return ::testing::AssertionFailure() << "did not throw";
}

// Causal ranges for a packed batch: seq_lens = {L0, L1, ...}; T = S = Σ L. Row t of sequence j at
// position i gets [start_j, start_j + i + 1).
inline void packed_causal_ranges(const std::vector<int>& seq_lens, std::vector<int32_t>& ks, std::vector<int32_t>& ke) {
  ks.clear();
  ke.clear();
  int start = 0;
  for (int L : seq_lens) {
    for (int i = 0; i < L; ++i) {
      ks.push_back(start);
      ke.push_back(start + i + 1);
    }
    start += L;
  }
}

}  // namespace dsa::test
