// op_numerics.cpp — rows fp8_bf16_scalar, fp8_block_quantize, cache_records (ops.h family 1).
// References here are written independently of src/cpu/numerics.cpp: e4m3 by exhaustive
// nearest-of-all-codes in double with the even-code tie-break, bf16 by comparing the two neighbouring
// bf16 values in double, scales by the definition (smallest power of two ≥ amax/448 for ue8m0).
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "table.h"

namespace dsa::test {
namespace {

constexpr int kCodes = 256;
constexpr uint8_t kE4m3MaxPositiveCode = 0x7E;  // 448
constexpr uint8_t kE4m3NegBit = 0x80;
constexpr uint8_t kE4m3NanCode = 0x7F;
constexpr size_t kSweepValues = size_t(1) << 20;  // ≥ 1e6 values per sweep (brief)

uint32_t fbits(float x) { uint32_t u; std::memcpy(&u, &x, 4); return u; }
float bitsf(uint32_t u) { float x; std::memcpy(&x, &u, 4); return x; }

// ── e4m3 reference ────────────────────────────────────────────────────────────────────────────
// Value of a code from the format definition: (−1)^s · 2^(e−7) · (1 + m/8), e = 0: 2^−6 · m/8.
double e4m3_value_ref(uint8_t code) {
  if ((code & 0x7F) == kE4m3NanCode) return std::nan("");
  const int e = (code >> 3) & 0xF, m = code & 7;
  const double mag = e == 0 ? std::ldexp(m / 8.0, -6) : std::ldexp(1.0 + m / 8.0, e - 7);
  return (code & kE4m3NegBit) ? -mag : mag;
}

// Non-negative finite values, codes 0x00..0x7E (increasing; checked in the scalar row).
const std::vector<double>& e4m3_positive_values() {
  static const std::vector<double> v = [] {
    std::vector<double> r;
    for (int c = 0; c <= kE4m3MaxPositiveCode; ++c) r.push_back(e4m3_value_ref(uint8_t(c)));
    return r;
  }();
  return v;
}

// Nearest code of x (sign kept, saturating |x| > 448 to 448, ties → even code, NaN → 0x7F|sign).
uint8_t e4m3_ref(float x) {
  const uint8_t sign = std::signbit(x) ? kE4m3NegBit : 0;
  if (std::isnan(x)) return sign | kE4m3NanCode;
  const double a = std::fabs(static_cast<double>(x));
  const auto& v = e4m3_positive_values();
  if (a >= v.back()) return sign | kE4m3MaxPositiveCode;
  const size_t hi = std::upper_bound(v.begin(), v.end(), a) - v.begin();  // v[hi-1] ≤ a < v[hi]
  const size_t lo = hi - 1;
  const double dlo = a - v[lo], dhi = v[hi] - a;
  const size_t pick = dlo < dhi ? lo : dhi < dlo ? hi : (lo % 2 == 0 ? lo : hi);
  return sign | uint8_t(pick);
}

// ── bf16 reference ────────────────────────────────────────────────────────────────────────────
// Neighbours of finite x: the bf16 value toward zero and the next one away from zero (the code
// after 0x7F7F is inf, standing for 2^128 when measuring distance, as IEEE overflow does).
uint16_t bf16_ref(float x) {
  const uint32_t u = fbits(x);
  if (std::isinf(x)) return uint16_t(u >> 16);
  const uint16_t lo = uint16_t(u >> 16), hi = uint16_t(lo + 1);
  const double a = std::fabs(double(x));
  const double vlo = std::fabs(double(bitsf(uint32_t(lo) << 16)));
  const double vhi = (hi & 0x7FFF) == 0x7F80 ? std::ldexp(1.0, 128) : std::fabs(double(bitsf(uint32_t(hi) << 16)));
  const double dlo = a - vlo, dhi = vhi - a;
  return dlo < dhi ? lo : dhi < dlo ? hi : ((lo & 1) == 0 ? lo : hi);
}

bool is_quiet_nan_bf16(uint16_t b) { return (b & 0x7F80) == 0x7F80 && (b & 0x0040) != 0; }

// Random floats over all magnitudes: uniform bit patterns (huge/tiny/subnormal), e4m3-range values
// and values near e4m3 midpoints. NaN patterns are excluded (tested separately).
std::vector<float> sweep_values(uint64_t seed, size_t n, float max_abs = INFINITY) {
  Rng rng(seed);
  std::vector<float> v;
  v.reserve(n);
  const auto& pos = e4m3_positive_values();
  while (v.size() < n) {
    float x = 0;
    switch (v.size() % 4) {
      case 0: x = bitsf(uint32_t(rng.engine()())); break;                          // any magnitude
      case 1: x = std::ldexp(rng.uniform(-1.0f, 1.0f), rng.integer(-14, 10)); break;  // e4m3 range
      case 2: {                                                                    // near a midpoint
        const int c = rng.integer(0, kE4m3MaxPositiveCode - 1);
        const float mid = float((pos[c] + pos[c + 1]) / 2);
        x = std::nextafter(mid, rng.integer(0, 1) ? INFINITY : 0.0f);
        if (rng.integer(0, 2) == 0) x = mid;
        if (rng.integer(0, 1)) x = -x;
        break;
      }
      default: x = rng.uniform(-500.0f, 500.0f); break;
    }
    if (std::isnan(x) || !(std::fabs(x) <= max_abs)) continue;
    v.push_back(x);
  }
  return v;
}

// ── block-quantisation reference ──────────────────────────────────────────────────────────────
// Scale of a block: amax (exact in double) floored at kQuantAmaxFloor; r = amax/448 in double.
// kFloat: (float) r — equal to the fp32 division amax/448 because rounding a double quotient to
// float is innocuous (53 ≥ 2·24 + 2, Figueroa). kUe8m0: the smallest power of two ≥ r.
float scale_ref(const float* x, ScaleFormat f) {
  double amax = 0;
  for (int i = 0; i < kQuantBlock; ++i) amax = std::max(amax, std::fabs(double(x[i])));
  amax = std::max(amax, double(kQuantAmaxFloor));
  const double r = amax / kFp8E4m3Max;
  if (f == ScaleFormat::kFloat) return float(r);
  double s = 1.0;
  while (s < r) s *= 2;
  while (s / 2 >= r) s /= 2;
  return float(s);
}

struct QuantRef {
  std::vector<uint8_t> q;
  std::vector<float> s;
  std::vector<float> deq;  // e4m3 value · s, one fp32 rounding (exact product in double)
};

// x [N, C]: per-128 block scales and codes of x/s (the fp32 quotient, again exact via double).
QuantRef quantize_ref(const float* x, int64_t N, int C, ScaleFormat f) {
  QuantRef r;
  const int blocks = C / kQuantBlock;
  r.q.resize(size_t(N) * C);
  r.s.resize(size_t(N) * blocks);
  r.deq.resize(size_t(N) * C);
  for (int64_t n = 0; n < N; ++n)
    for (int b = 0; b < blocks; ++b) {
      const size_t off = size_t(n) * C + size_t(b) * kQuantBlock;
      const float s = scale_ref(x + off, f);
      r.s[size_t(n) * blocks + b] = s;
      for (int i = 0; i < kQuantBlock; ++i) {
        r.q[off + i] = e4m3_ref(float(double(x[off + i]) / s));
        r.deq[off + i] = float(e4m3_value_ref(r.q[off + i]) * s);
      }
    }
  return r;
}

// Round-trip bound of one element: e4m3 keeps 3 mantissa bits, so rounding to nearest errs by at
// most 2^-4 of |x| in the normal range and by half a subnormal step (2^-10 · s) below it; the fp32
// quotient x/s and product q·s add relative 2^-24 each (covered by the 2^-20 slack).
double e4m3_roundtrip_bound(double x, double s) {
  return std::max(std::ldexp(std::fabs(x), -4), std::ldexp(s, -10)) * (1 + std::ldexp(1.0, -20));
}

const char* format_name(ScaleFormat f) { return f == ScaleFormat::kFloat ? "kFloat" : "kUe8m0"; }

// Rows of deliberately varied magnitudes: normal data at 10^k, zeros, sub-floor values, one outlier.
std::vector<float> varied_rows(uint64_t seed, int64_t N, int C) {
  Rng rng(seed);
  std::vector<float> x(size_t(N) * C);
  for (int64_t n = 0; n < N; ++n) {
    float* row = x.data() + size_t(n) * C;
    const int kind = int(n % 5);
    const float mag = std::pow(10.0f, float(rng.integer(-3, 3)));
    for (int c = 0; c < C; ++c) {
      switch (kind) {
        case 0: row[c] = rng.normal(mag); break;
        case 1: row[c] = 0.0f; break;                          // amax floor, q = 0
        case 2: row[c] = rng.normal(1e-7f); break;             // below the amax floor
        case 3: row[c] = rng.normal(1.0f) * (c == 5 ? 1e4f : 1.0f); break;  // outlier
        default: row[c] = rng.uniform(-mag, mag); break;
      }
    }
  }
  return x;
}

}  // namespace

// ═════════════════════════════════════ fp8_bf16_scalar ═════════════════════════════════════
void check_fp8_bf16_scalar(Backend& be) {
  using cpu::bf16_from_float;
  using cpu::bf16_to_float;
  using cpu::fp8_e4m3_from_float;
  using cpu::fp8_e4m3_to_float;

  // Known codes of the e4m3 "fn" format (OCP FP8 spec table).
  const std::pair<uint8_t, double> known[] = {{0x00, 0.0},   {0x01, 0x1p-9},  {0x07, 7 * 0x1p-9}, {0x08, 0x1p-6},
                                              {0x38, 1.0},   {0x40, 2.0},     {0x7E, 448.0},     {0x80, -0.0},
                                              {0xB8, -1.0},  {0xFE, -448.0},  {0x77, 240.0},     {0x30, 0.5}};
  for (const auto& [code, value] : known) {
    EXPECT_EQ(e4m3_value_ref(code), value) << int(code);
    EXPECT_EQ(double(fp8_e4m3_to_float(code)), value) << "code " << int(code);
  }
  const auto& pos = e4m3_positive_values();
  for (size_t c = 1; c < pos.size(); ++c) ASSERT_LT(pos[c - 1], pos[c]) << "reference table not increasing";

  // All 256 codes: decode matches the definition; every non-NaN code round-trips bit-exactly.
  for (int c = 0; c < kCodes; ++c) {
    const uint8_t code = uint8_t(c);
    const float v = fp8_e4m3_to_float(code);
    if ((code & 0x7F) == kE4m3NanCode) {
      EXPECT_TRUE(std::isnan(v)) << c;
      EXPECT_EQ(fp8_e4m3_from_float(v) & 0x7F, kE4m3NanCode) << c;
      continue;
    }
    EXPECT_EQ(double(v), e4m3_value_ref(code)) << c;
    EXPECT_EQ(std::signbit(v), (code & kE4m3NegBit) != 0) << c;
    EXPECT_EQ(fp8_e4m3_from_float(v), code) << "round trip of code " << c;
  }

  // Exact midpoints between neighbours round to the even code; one ulp either side goes nearest.
  for (int c = 0; c < kE4m3MaxPositiveCode; ++c)
    for (const float sgn : {1.0f, -1.0f}) {
      const float mid = sgn * float((pos[c] + pos[c + 1]) / 2);  // ≤ 5 significant bits: exact
      const uint8_t sb = sgn < 0 ? kE4m3NegBit : 0;
      EXPECT_EQ(fp8_e4m3_from_float(mid), sb | uint8_t(c % 2 == 0 ? c : c + 1)) << "tie above code " << c;
      EXPECT_EQ(fp8_e4m3_from_float(std::nextafter(mid, sgn * INFINITY)), sb | uint8_t(c + 1)) << c;
      EXPECT_EQ(fp8_e4m3_from_float(std::nextafter(mid, 0.0f)), sb | uint8_t(c)) << c;
    }

  // Saturation: everything beyond 448 (the (448, 464) RNE band, 464 and up, FLT_MAX, inf) → ±448.
  for (const float big : {448.0f, 448.5f, 463.99f, 464.0f, 480.0f, 1e6f, FLT_MAX, INFINITY}) {
    EXPECT_EQ(fp8_e4m3_from_float(big), kE4m3MaxPositiveCode) << big;
    EXPECT_EQ(fp8_e4m3_from_float(-big), kE4m3NegBit | kE4m3MaxPositiveCode) << -big;
  }
  // NaN: 0x7F with the sign kept (quiet, signalling and negative NaN patterns).
  EXPECT_EQ(fp8_e4m3_from_float(std::nanf("")), kE4m3NanCode);
  EXPECT_EQ(fp8_e4m3_from_float(bitsf(0x7F800001u)), kE4m3NanCode);
  EXPECT_EQ(fp8_e4m3_from_float(bitsf(0xFFC00000u)), kE4m3NegBit | kE4m3NanCode);
  // Subnormals and underflow: 2^-9·m exactly; below 2^-10 (half the smallest step) → ±0.
  for (int m = 0; m < 8; ++m) EXPECT_EQ(fp8_e4m3_from_float(std::ldexp(float(m), -9)), uint8_t(m));
  EXPECT_EQ(fp8_e4m3_from_float(0x1p-10f), 0x00);                          // tie with 0 → even (0)
  EXPECT_EQ(fp8_e4m3_from_float(std::nextafter(0x1p-10f, 1.0f)), 0x01);
  EXPECT_EQ(fp8_e4m3_from_float(-1e-30f), kE4m3NegBit);
  EXPECT_EQ(fp8_e4m3_from_float(FLT_TRUE_MIN), 0x00);

  // Large sweep against the exhaustive-nearest reference.
  {
    const auto xs = sweep_values(11, kSweepValues);
    size_t bad = 0;
    for (const float x : xs)
      if (fp8_e4m3_from_float(x) != e4m3_ref(x) && bad++ < 5)
        ADD_FAILURE() << "e4m3(" << x << ") = " << int(fp8_e4m3_from_float(x)) << ", want " << int(e4m3_ref(x));
    EXPECT_EQ(bad, 0u);
  }

  // bf16: all 65536 codes decode to the upper half of an fp32 and round-trip; NaN stays quiet NaN.
  for (uint32_t c = 0; c < 65536; ++c) {
    const uint16_t code = uint16_t(c);
    const float v = bf16_to_float(code);
    ASSERT_EQ(fbits(v), c << 16) << c;
    if (std::isnan(v)) {
      const uint16_t r = bf16_from_float(v);
      EXPECT_TRUE(is_quiet_nan_bf16(r)) << c;
      EXPECT_EQ(r & 0x8000, code & 0x8000) << "NaN sign of " << c;
    } else {
      ASSERT_EQ(bf16_from_float(v), code) << "round trip of bf16 code " << c;
    }
  }
  EXPECT_TRUE(is_quiet_nan_bf16(bf16_from_float(bitsf(0x7F800001u))));  // signalling → quiet
  // Ties: the exact midpoint between code c and c+1 goes to the even one (0x7F7F's tie → inf).
  for (const uint16_t c : {uint16_t(0x0000), uint16_t(0x0001), uint16_t(0x3F80), uint16_t(0x3F81), uint16_t(0x7F7E),
                           uint16_t(0x7F7F), uint16_t(0x8001), uint16_t(0xC2F3)}) {
    const float mid = bitsf((uint32_t(c) << 16) | 0x8000u);
    EXPECT_EQ(bf16_from_float(mid), (c & 1) ? uint16_t(c + 1) : c) << "tie above bf16 " << c;
  }
  EXPECT_EQ(bf16_from_float(FLT_MAX), 0x7F80);  // above the last midpoint: overflows to +inf (RNE)
  {
    Rng rng(12);
    size_t bad = 0;
    for (size_t i = 0; i < kSweepValues; ++i) {
      const float x = bitsf(uint32_t(rng.engine()()));
      if (std::isnan(x)) continue;
      if (bf16_from_float(x) != bf16_ref(x) && bad++ < 5)
        ADD_FAILURE() << "bf16(" << x << ") = " << bf16_from_float(x) << ", want " << bf16_ref(x);
    }
    EXPECT_EQ(bad, 0u);
  }

  // The same conversion through the backend's block quantiser: ue8m0 with amax in (224, 448] gives
  // scale exactly 1 (2^ceil(log2(amax/448)) = 2^0), so q is the plain e4m3 conversion of x — a GPU
  // backend's hardware conversion must agree bit-exactly with the reference.
  {
    constexpr int64_t kRows = int64_t(kSweepValues / kQuantBlock);
    Rng rng(13);
    auto x = sweep_values(14, size_t(kRows) * kQuantBlock, 448.0f);
    for (int64_t n = 0; n < kRows; ++n) {
      float* row = x.data() + n * kQuantBlock;
      const float amax = rng.uniform(224.5f, 448.0f);
      for (int i = 0; i < kQuantBlock; ++i)
        if (std::fabs(row[i]) > amax) row[i] = std::copysign(amax, row[i]);
      row[rng.integer(0, kQuantBlock - 1)] = rng.integer(0, 1) ? amax : -amax;
    }
    Guarded<uint8_t> q(x.size());
    Guarded<float> s(static_cast<size_t>(kRows));
    Fp8BlockQuantizeParams p{kRows, kQuantBlock, ScaleFormat::kUe8m0, x.data(), q.data(), s.data()};
    be.fp8_block_quantize(p);
    EXPECT_GUARDS(q);
    EXPECT_GUARDS(s);
    size_t bad_s = 0, bad_q = 0;
    for (int64_t n = 0; n < kRows; ++n) bad_s += s[n] != 1.0f;
    for (size_t i = 0; i < x.size(); ++i)
      if (q[i] != e4m3_ref(x[i]) && bad_q++ < 5)
        ADD_FAILURE() << be.name() << ": e4m3(" << x[i] << ") = " << int(q[i]) << ", want " << int(e4m3_ref(x[i]));
    EXPECT_EQ(bad_s, 0u) << "scales not 1";
    EXPECT_EQ(bad_q, 0u);

    // And the decode: all 256 codes dequantised at scale 1 give the reference values bit-exactly.
    std::vector<uint8_t> codes(kCodes);
    for (int c = 0; c < kCodes; ++c) codes[c] = uint8_t(c);
    std::vector<float> ones(kCodes / kQuantBlock, 1.0f);
    Guarded<float> dq(kCodes);
    Fp8BlockDequantizeParams d{1, kCodes, codes.data(), ones.data(), dq.data()};
    be.fp8_block_dequantize(d);
    EXPECT_GUARDS(dq);
    for (int c = 0; c < kCodes; ++c) {
      const double want = e4m3_value_ref(uint8_t(c));
      if (std::isnan(want)) EXPECT_TRUE(std::isnan(dq[c])) << c;
      else EXPECT_EQ(fbits(dq[c]), fbits(float(want))) << be.name() << " decode of code " << c;
    }
  }
}

// ═════════════════════════════════════ fp8_block_quantize ══════════════════════════════════
void check_fp8_block_quantize(Backend& be) {
  struct Case { int64_t N; int C; };
  const Case cases[] = {{1, 128}, {1, 512}, {37, 128}, {5, 512}, {64, 384}};
  uint64_t seed = 100;
  for (const ScaleFormat f : {ScaleFormat::kFloat, ScaleFormat::kUe8m0})
    for (const auto& cs : cases) {
      SCOPED_TRACE(std::string(format_name(f)) + " N=" + std::to_string(cs.N) + " C=" + std::to_string(cs.C));
      const auto x = varied_rows(seed++, cs.N, cs.C);
      const size_t nq = size_t(cs.N) * cs.C, ns = size_t(cs.N) * (cs.C / kQuantBlock);
      const QuantRef ref = quantize_ref(x.data(), cs.N, cs.C, f);
      Guarded<uint8_t> q(nq);
      Guarded<float> s(ns);
      Fp8BlockQuantizeParams p{cs.N, cs.C, f, x.data(), q.data(), s.data()};
      be.fp8_block_quantize(p);
      EXPECT_GUARDS(q);
      EXPECT_GUARDS(s);
      EXPECT_TRUE(bitwise_equal(s.data(), ref.s.data(), ns)) << "scales differ from the fp64 reference";
      EXPECT_TRUE(bitwise_equal(q.data(), ref.q.data(), nq)) << "codes differ from the fp64 reference";
      for (size_t i = 0; i < ns; ++i) {
        if (f == ScaleFormat::kUe8m0) {  // a power of two, and the smallest one covering amax/448
          int e = 0;
          EXPECT_EQ(std::frexp(s[i], &e), 0.5f) << "ue8m0 scale not a power of two: " << s[i];
        }
        EXPECT_GE(double(s[i]) * kFp8E4m3Max, double(kQuantAmaxFloor) * (1 - 1e-7));  // amax floor holds
      }
      // Zero rows (kind 1 of varied_rows): floor scale and all-zero codes.
      for (int64_t n = 1; n < cs.N; n += 5) {
        for (int b = 0; b < cs.C / kQuantBlock; ++b)
          EXPECT_EQ(s[size_t(n) * (cs.C / kQuantBlock) + b], scale_ref(x.data() + n * cs.C, f)) << "zero row";
        for (int c = 0; c < cs.C; ++c) EXPECT_EQ(q[size_t(n) * cs.C + c], 0) << "zero row";
      }

      // Dequantise through the backend: exactly e4m3 · s, and within the round-trip bound of x.
      Guarded<float> xd(nq);
      Fp8BlockDequantizeParams d{cs.N, cs.C, q.data(), s.data(), xd.data()};
      be.fp8_block_dequantize(d);
      EXPECT_GUARDS(xd);
      EXPECT_TRUE(bitwise_equal(xd.data(), ref.deq.data(), nq)) << "dequantised values differ";
      for (size_t i = 0; i < nq; ++i) {
        const double sc = ref.s[i / kQuantBlock];
        ASSERT_LE(std::fabs(double(xd[i]) - x[i]), e4m3_roundtrip_bound(x[i], sc)) << "element " << i;
      }

      // Determinism: a second run is bitwise identical.
      Guarded<uint8_t> q2(nq);
      Guarded<float> s2(ns);
      Fp8BlockQuantizeParams p2{cs.N, cs.C, f, x.data(), q2.data(), s2.data()};
      be.fp8_block_quantize(p2);
      EXPECT_TRUE(bitwise_equal(q.data(), q2.data(), nq) && bitwise_equal(s.data(), s2.data(), ns));
    }

  // N = 0 is a valid empty call that writes nothing.
  {
    std::vector<float> x(kQuantBlock, 1.0f);
    Guarded<uint8_t> q(kQuantBlock);
    Guarded<float> s(1);
    be.fp8_block_quantize({0, kQuantBlock, ScaleFormat::kUe8m0, x.data(), q.data(), s.data()});
    EXPECT_TRUE(q.untouched() && s.untouched());
  }

  // Bad inputs: dsa::Error naming the op and argument, outputs untouched.
  {
    std::vector<float> x(4 * kQuantBlock, 1.0f);
    Guarded<uint8_t> q(x.size());
    Guarded<float> s(8);
    auto quant = [&](int64_t N, int C, const float* xp, uint8_t* qp, float* sp) {
      return [&be, N, C, xp, qp, sp] { be.fp8_block_quantize({N, C, ScaleFormat::kFloat, xp, qp, sp}); };
    };
    EXPECT_TRUE(throws_naming(quant(1, 100, x.data(), q.data(), s.data()), {"fp8_block_quantize", "C = 100"}));
    EXPECT_TRUE(throws_naming(quant(1, 0, x.data(), q.data(), s.data()), {"fp8_block_quantize", "C"}));
    EXPECT_TRUE(throws_naming(quant(-1, 128, x.data(), q.data(), s.data()), {"fp8_block_quantize", "N"}));
    EXPECT_TRUE(throws_naming(quant(1, 128, nullptr, q.data(), s.data()), {"fp8_block_quantize", "x"}));
    EXPECT_TRUE(throws_naming(quant(1, 128, x.data(), nullptr, s.data()), {"fp8_block_quantize", "q"}));
    EXPECT_TRUE(throws_naming(quant(1, 128, x.data(), q.data(), nullptr), {"fp8_block_quantize", "scales"}));
    EXPECT_TRUE(q.untouched() && s.untouched());

    Guarded<float> xd(x.size());
    std::vector<uint8_t> qc(x.size(), 0x38);
    std::vector<float> sc(4, 1.0f);
    auto deq = [&](int64_t N, int C) {
      return [&be, &xd, &qc, &sc, N, C] { be.fp8_block_dequantize({N, C, qc.data(), sc.data(), xd.data()}); };
    };
    EXPECT_TRUE(throws_naming(deq(1, 130), {"fp8_block_dequantize", "C = 130"}));
    EXPECT_TRUE(throws_naming(deq(-2, 128), {"fp8_block_dequantize", "N"}));
    EXPECT_TRUE(throws_naming([&] { be.fp8_block_dequantize({1, 128, qc.data(), nullptr, xd.data()}); },
                              {"fp8_block_dequantize", "scales"}));
    EXPECT_TRUE(throws_naming([&] { be.fp8_block_dequantize({1, 128, qc.data(), sc.data(), nullptr}); },
                              {"fp8_block_dequantize", "x"}));
    EXPECT_TRUE(xd.untouched());
  }
}

// ═════════════════════════════════════ cache_records ═══════════════════════════════════════
void check_cache_records(Backend& be) {
  constexpr int kRow = kMlaLatentDim + kMlaRopeDim;            // 576
  constexpr int kMlaBlocks = kMlaLatentDim / kQuantBlock;      // 4
  constexpr int kScaleAt = kMlaLatentDim;                      // byte 512
  constexpr int kRopeAt = kScaleAt + kMlaBlocks * 4;           // byte 528
  constexpr int64_t kPage = int64_t(kCachePageTokens) * kIndexerRecordBytes;  // 8448
  constexpr int64_t kPageScales = int64_t(kCachePageTokens) * kIndexerKeyDim;  // 8192
  static_assert(kRopeAt + 2 * kMlaRopeDim == kMlaRecordBytes);
  auto load_f32 = [](const uint8_t* p) { float v; std::memcpy(&v, p, 4); return v; };
  auto load_u16 = [](const uint8_t* p) { uint16_t v; std::memcpy(&v, p, 2); return v; };
  // bf16 keeps 8 significant bits (ulp = 2^-7 of the binade): RNE errs by at most 2^-8 of |x|.
  auto bf16_bound = [](double x) { return std::ldexp(std::fabs(x), -8); };

  // ── MLA record ──
  uint64_t seed = 200;
  for (const ScaleFormat f : {ScaleFormat::kFloat, ScaleFormat::kUe8m0})
    for (const int64_t N : {int64_t(1), int64_t(3), int64_t(65)}) {
      SCOPED_TRACE(std::string("mla ") + format_name(f) + " N=" + std::to_string(N));
      auto kv = varied_rows(seed++, N, kRow);
      Guarded<uint8_t> rec(size_t(N) * kMlaRecordBytes);
      be.mla_cache_pack({N, f, kv.data(), rec.data()});
      EXPECT_GUARDS(rec);
      // Layout: the 512 NoPE dims quantised in 4 blocks at bytes [0, 512), scales at [512, 528),
      // the 64 RoPE dims as little-endian bf16 at [528, 656).
      std::vector<float> nope(size_t(N) * kMlaLatentDim);
      for (int64_t n = 0; n < N; ++n)
        std::copy_n(kv.data() + n * kRow, kMlaLatentDim, nope.data() + n * kMlaLatentDim);
      const QuantRef ref = quantize_ref(nope.data(), N, kMlaLatentDim, f);
      for (int64_t n = 0; n < N; ++n) {
        const uint8_t* r = rec.data() + n * kMlaRecordBytes;
        EXPECT_TRUE(bitwise_equal(r, ref.q.data() + n * kMlaLatentDim, kMlaLatentDim)) << "fp8 bytes, row " << n;
        for (int b = 0; b < kMlaBlocks; ++b)
          EXPECT_EQ(fbits(load_f32(r + kScaleAt + 4 * b)), fbits(ref.s[n * kMlaBlocks + b])) << "scale " << b << " row " << n;
        for (int i = 0; i < kMlaRopeDim; ++i)
          EXPECT_EQ(load_u16(r + kRopeAt + 2 * i), bf16_ref(kv[n * kRow + kMlaLatentDim + i])) << "rope " << i << " row " << n;
      }
      // Unpack: exact dequantisation, and the round trip within the fp8 / bf16 bounds.
      Guarded<float> out(size_t(N) * kRow);
      be.mla_cache_unpack({N, f, out.data(), rec.data()});
      EXPECT_GUARDS(out);
      for (int64_t n = 0; n < N; ++n)
        for (int d = 0; d < kRow; ++d) {
          const size_t i = size_t(n) * kRow + d;
          if (d < kMlaLatentDim) {
            const size_t j = size_t(n) * kMlaLatentDim + d;
            ASSERT_EQ(fbits(out[i]), fbits(ref.deq[j])) << "row " << n << " dim " << d;
            ASSERT_LE(std::fabs(double(out[i]) - kv[i]), e4m3_roundtrip_bound(kv[i], ref.s[j / kQuantBlock]));
          } else {
            ASSERT_LE(std::fabs(double(out[i]) - kv[i]), bf16_bound(kv[i])) << "row " << n << " dim " << d;
          }
        }
      Guarded<uint8_t> rec2(rec.size());
      be.mla_cache_pack({N, f, kv.data(), rec2.data()});
      EXPECT_TRUE(bitwise_equal(rec.data(), rec2.data(), rec.size())) << "pack not deterministic";
    }

  // ── indexer K cache pages ──
  for (const ScaleFormat f : {ScaleFormat::kUe8m0, ScaleFormat::kFloat})
    for (const int64_t N : {int64_t(1), int64_t(63), int64_t(64), int64_t(65), int64_t(130)}) {
      SCOPED_TRACE(std::string("indexer ") + format_name(f) + " N=" + std::to_string(N));
      auto k = varied_rows(seed++, N, kIndexerKeyDim);
      const int64_t pages = (N + kCachePageTokens - 1) / kCachePageTokens;
      Guarded<uint8_t> cache(size_t(pages * kPage));
      be.indexer_cache_pack({N, f, k.data(), cache.data(), nullptr, nullptr});
      EXPECT_GUARDS(cache);
      const QuantRef ref = quantize_ref(k.data(), N, kIndexerKeyDim, f);
      for (int64_t slot = 0; slot < pages * kCachePageTokens; ++slot) {
        const int64_t p = slot / kCachePageTokens, o = slot % kCachePageTokens;
        const uint8_t* q = cache.data() + p * kPage + o * kIndexerKeyDim;   // slot-major fp8 block
        const uint8_t* s = cache.data() + p * kPage + kPageScales + o * 4;  // then 64 fp32 scales
        if (slot < N) {
          EXPECT_TRUE(bitwise_equal(q, ref.q.data() + slot * kIndexerKeyDim, kIndexerKeyDim)) << "fp8 of slot " << slot;
          EXPECT_EQ(fbits(load_f32(s)), fbits(ref.s[slot])) << "scale of slot " << slot;
        } else {  // the last page's unused slots are zeroed
          EXPECT_TRUE(std::all_of(q, q + kIndexerKeyDim, [](uint8_t b) { return b == 0; })) << "tail slot " << slot;
          EXPECT_EQ(fbits(load_f32(s)), 0u) << "tail scale " << slot;
        }
      }
      // Unpack with and without the optional raw outputs.
      Guarded<float> kd(size_t(N) * kIndexerKeyDim), kd2(size_t(N) * kIndexerKeyDim);
      Guarded<uint8_t> kq(size_t(N) * kIndexerKeyDim);
      Guarded<float> ksc(static_cast<size_t>(N));
      be.indexer_cache_unpack({N, f, kd.data(), cache.data(), kq.data(), ksc.data()});
      be.indexer_cache_unpack({N, f, kd2.data(), cache.data(), nullptr, nullptr});
      EXPECT_GUARDS(kd);
      EXPECT_GUARDS(kd2);
      EXPECT_GUARDS(kq);
      EXPECT_GUARDS(ksc);
      EXPECT_TRUE(bitwise_equal(kd.data(), ref.deq.data(), kd.size())) << "dequantised keys differ";
      EXPECT_TRUE(bitwise_equal(kd2.data(), ref.deq.data(), kd.size())) << "dequantised keys differ (no raw outputs)";
      EXPECT_TRUE(bitwise_equal(kq.data(), ref.q.data(), kq.size())) << "k_fp8 differs";
      EXPECT_TRUE(bitwise_equal(ksc.data(), ref.s.data(), ksc.size())) << "k_scale differs";
      for (size_t i = 0; i < kd.size(); ++i)
        ASSERT_LE(std::fabs(double(kd[i]) - k[i]), e4m3_roundtrip_bound(k[i], ref.s[i / kIndexerKeyDim])) << i;
    }

  // ── bad inputs: named errors, nothing written ──
  {
    std::vector<float> kv(kRow, 1.0f);
    Guarded<uint8_t> rec(kMlaRecordBytes);
    Guarded<float> out(kRow);
    std::vector<uint8_t> rec_in(kMlaRecordBytes, 0);
    EXPECT_TRUE(throws_naming([&] { be.mla_cache_pack({-1, ScaleFormat::kFloat, kv.data(), rec.data()}); }, {"mla_cache_pack", "N"}));
    EXPECT_TRUE(throws_naming([&] { be.mla_cache_pack({1, ScaleFormat::kFloat, nullptr, rec.data()}); }, {"mla_cache_pack", "kv"}));
    EXPECT_TRUE(throws_naming([&] { be.mla_cache_pack({1, ScaleFormat::kFloat, kv.data(), nullptr}); }, {"mla_cache_pack", "records"}));
    EXPECT_TRUE(throws_naming([&] { be.mla_cache_unpack({-3, ScaleFormat::kFloat, out.data(), rec_in.data()}); }, {"mla_cache_unpack", "N"}));
    EXPECT_TRUE(throws_naming([&] { be.mla_cache_unpack({1, ScaleFormat::kFloat, out.data(), nullptr}); }, {"mla_cache_unpack", "records"}));
    EXPECT_TRUE(rec.untouched() && out.untouched());

    std::vector<float> k(kIndexerKeyDim, 1.0f);
    Guarded<uint8_t> cache(static_cast<size_t>(kPage));
    Guarded<float> kd(kIndexerKeyDim);
    std::vector<uint8_t> cache_in(size_t(kPage), 0);
    EXPECT_TRUE(throws_naming([&] { be.indexer_cache_pack({-1, ScaleFormat::kUe8m0, k.data(), cache.data()}); }, {"indexer_cache_pack", "N"}));
    EXPECT_TRUE(throws_naming([&] { be.indexer_cache_pack({1, ScaleFormat::kUe8m0, nullptr, cache.data()}); }, {"indexer_cache_pack", "k"}));
    EXPECT_TRUE(throws_naming([&] { be.indexer_cache_pack({1, ScaleFormat::kUe8m0, k.data(), nullptr}); }, {"indexer_cache_pack", "cache"}));
    EXPECT_TRUE(throws_naming([&] { be.indexer_cache_unpack({-1, ScaleFormat::kUe8m0, kd.data(), cache_in.data()}); }, {"indexer_cache_unpack", "N"}));
    EXPECT_TRUE(throws_naming([&] { be.indexer_cache_unpack({1, ScaleFormat::kUe8m0, nullptr, cache_in.data()}); }, {"indexer_cache_unpack", "k"}));
    EXPECT_TRUE(cache.untouched() && kd.untouched());
  }
}

}  // namespace dsa::test
