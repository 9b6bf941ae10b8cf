// numerics.cpp — op family 1 of dsa/ops.h: bit-exact fp8 e4m3 "fn" and bf16 conversions, FP8 block
// quantisation (V3.2 act_quant), and the two cache records (FlashMLA 656-byte MLA record, DeepGEMM
// paged indexer-K page). Everything here is element-wise; rows are independent (OpenMP over rows).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "common/check.h"
#include "common/op_checks.h"
#include "dsa/ops.h"

namespace dsa::cpu {
namespace {

constexpr uint32_t kF32SignBit = 0x80000000u;
constexpr uint32_t kF32AbsMask = 0x7FFFFFFFu;
constexpr uint8_t kE4m3SignBit = 0x80;
constexpr uint8_t kE4m3Nan = 0x7F;           // S.1111.111 is NaN in the "fn" variant
constexpr uint8_t kE4m3MaxCode = 0x7E;        // S.1111.110 = 448
constexpr int kE4m3Bias = 7;
constexpr int kE4m3MantBits = 3;
constexpr int kF32MantBits = 23;
constexpr int kF32Bias = 127;
constexpr float kE4m3MinNormal = 0.015625f;   // 2^-6 (exponent field 1)
constexpr double kE4m3SubnormalStep = 512.0;  // subnormals are m · 2^-9, m = 0..7
constexpr int kBf16Shift = 16;

uint32_t float_bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
}
float bits_float(uint32_t u) {
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

// 2^ceil(log2(r)) for r > 0, exactly (frexp gives r = m·2^e with m in [0.5, 1); r is a power of two
// iff m == 0.5, and then log2 r = e − 1 is already an integer).
float pow2_ceil(float r) {
  int e = 0;
  const float m = std::frexp(r, &e);
  return std::ldexp(1.0f, m == 0.5f ? e - 1 : e);
}

// The scale of one block from its amax (ops.h ScaleFormat): amax floored at kQuantAmaxFloor as in
// V3.2 act_quant, then amax/448 (fp32 division) or its ue8m0 rounding up to a power of two.
float block_scale(float amax, ScaleFormat format) {
  const float a = std::max(amax, kQuantAmaxFloor);
  const float r = a / kFp8E4m3Max;
  return format == ScaleFormat::kUe8m0 ? pow2_ceil(r) : r;
}

// Quantises one block of kQuantBlock floats: returns its scale and writes q = e4m3(x / s).
float quantize_block(const float* x, uint8_t* q, ScaleFormat format) {
  float amax = 0.0f;
  for (int i = 0; i < kQuantBlock; ++i) amax = std::max(amax, std::fabs(x[i]));
  const float s = block_scale(amax, format);
  for (int i = 0; i < kQuantBlock; ++i) q[i] = fp8_e4m3_from_float(x[i] / s);
  return s;
}

void dequantize_block(const uint8_t* q, float s, float* x) {
  for (int i = 0; i < kQuantBlock; ++i) x[i] = fp8_e4m3_to_float(q[i]) * s;
}

// Byte-level stores/loads of record fields (records are unaligned byte arrays; little-endian host).
void store_f32(uint8_t* dst, float v) { std::memcpy(dst, &v, sizeof v); }
float load_f32(const uint8_t* src) {
  float v;
  std::memcpy(&v, src, sizeof v);
  return v;
}
void store_u16(uint8_t* dst, uint16_t v) { std::memcpy(dst, &v, sizeof v); }
uint16_t load_u16(const uint8_t* src) {
  uint16_t v;
  std::memcpy(&v, src, sizeof v);
  return v;
}

// MLA record field offsets (ops.h MlaCacheParams).
constexpr int kMlaScaleOffset = kMlaLatentDim;                                  // 512
constexpr int kMlaBlocks = kMlaLatentDim / kQuantBlock;                         // 4
constexpr int kMlaRopeOffset = kMlaScaleOffset + kMlaBlocks * int(sizeof(float));  // 528
constexpr int kMlaRowDim = kMlaLatentDim + kMlaRopeDim;                         // 576
static_assert(kMlaRopeOffset + kMlaRopeDim * 2 == kMlaRecordBytes, "MLA record is 656 bytes");

// Indexer page layout (ops.h IndexerCacheParams).
static_assert(kIndexerKeyDim == kQuantBlock, "one scale per indexer key");
static_assert(kIndexerRecordBytes == kIndexerKeyDim + int(sizeof(float)), "132-byte indexer slot");

int64_t indexer_fp8_offset(int64_t slot) {
  return (slot / kCachePageTokens) * kIndexerPageBytes + (slot % kCachePageTokens) * kIndexerKeyDim;
}
int64_t indexer_scale_offset(int64_t slot) {
  return (slot / kCachePageTokens) * kIndexerPageBytes + kIndexerPageScaleOffset +
         (slot % kCachePageTokens) * int64_t(sizeof(float));
}


}  // namespace

// ── scalar conversions ────────────────────────────────────────────────────────────────────────
uint8_t fp8_e4m3_from_float(float x) {
  const uint32_t u = float_bits(x);
  const uint8_t sign = (u & kF32SignBit) ? kE4m3SignBit : 0;
  const uint32_t a = u & kF32AbsMask;
  const float ax = bits_float(a);
  if (std::isnan(ax)) return sign | kE4m3Nan;
  // Saturation: 448 is the largest code; RNE would send (448, 464) to 448 and [464, inf] beyond the
  // format, which "satfinite" clamps to 448 as well, so every |x| > 448 (inf included) gives ±448.
  if (ax > kFp8E4m3Max) return sign | kE4m3MaxCode;
  if (ax < kE4m3MinNormal) {
    // Subnormal range: code = round_half_even(|x| · 2^9) in 0..8 (8 is the smallest normal, code
    // 0x08 = 2^-6, so the codes continue seamlessly). |x| · 512 is exact in double.
    const double v = static_cast<double>(ax) * kE4m3SubnormalStep;
    double m = std::floor(v);
    const double frac = v - m;
    if (frac > 0.5 || (frac == 0.5 && std::fmod(m, 2.0) != 0.0)) m += 1.0;
    return sign | static_cast<uint8_t>(m);
  }
  // Normal range [2^-6, 448]: round the fp32 mantissa to 3 bits, half to even, on the bit pattern
  // (a carry out of the mantissa correctly bumps the exponent), then rebias 127 → 7.
  const int drop = kF32MantBits - kE4m3MantBits;                        // 20 bits dropped
  const uint32_t lsb = (a >> drop) & 1u;
  const uint32_t rounded = (a + ((1u << (drop - 1)) - 1u) + lsb) >> drop;  // exp:mant, 8+3 bits
  const int exp = static_cast<int>(rounded >> kE4m3MantBits) - kF32Bias + kE4m3Bias;
  const uint32_t mant = rounded & ((1u << kE4m3MantBits) - 1u);
  return sign | static_cast<uint8_t>((exp << kE4m3MantBits) | mant);
}

float fp8_e4m3_to_float(uint8_t bits) {
  const bool neg = (bits & kE4m3SignBit) != 0;
  const int exp = (bits >> kE4m3MantBits) & 0xF;
  const int mant = bits & ((1 << kE4m3MantBits) - 1);
  float v;
  if ((bits & kE4m3Nan) == kE4m3Nan) {
    v = std::numeric_limits<float>::quiet_NaN();
  } else if (exp == 0) {
    v = std::ldexp(static_cast<float>(mant), 1 - kE4m3Bias - kE4m3MantBits);     // m · 2^-9
  } else {
    v = std::ldexp(static_cast<float>(8 + mant), exp - kE4m3Bias - kE4m3MantBits);  // 1.m · 2^(e−7)
  }
  return neg ? -v : v;
}

uint16_t bf16_from_float(float x) {
  const uint32_t u = float_bits(x);
  if (std::isnan(x)) return static_cast<uint16_t>((u >> kBf16Shift) | 0x0040u);  // keep sign, force quiet
  const uint32_t lsb = (u >> kBf16Shift) & 1u;
  return static_cast<uint16_t>((u + 0x7FFFu + lsb) >> kBf16Shift);  // RNE; overflow rounds to ±inf
}

float bf16_to_float(uint16_t bits) { return bits_float(static_cast<uint32_t>(bits) << kBf16Shift); }

// ── block quantisation ────────────────────────────────────────────────────────────────────────
void fp8_block_quantize(const Fp8BlockQuantizeParams& p) {
  detail::validate_fp8_block_args(p.N, p.C, p.x, p.q, p.scales, "fp8_block_quantize");
  const int blocks = p.C / kQuantBlock;
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < p.N; ++n)
    for (int b = 0; b < blocks; ++b) {
      const int64_t off = n * p.C + int64_t(b) * kQuantBlock;
      p.scales[n * blocks + b] = quantize_block(p.x + off, p.q + off, p.format);
    }
}

void fp8_block_dequantize(const Fp8BlockDequantizeParams& p) {
  detail::validate_fp8_block_args(p.N, p.C, p.x, p.q, p.scales, "fp8_block_dequantize");
  const int blocks = p.C / kQuantBlock;
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < p.N; ++n)
    for (int b = 0; b < blocks; ++b) {
      const int64_t off = n * p.C + int64_t(b) * kQuantBlock;
      dequantize_block(p.q + off, p.scales[n * blocks + b], p.x + off);
    }
}

// ── MLA latent cache record ───────────────────────────────────────────────────────────────────
void mla_cache_pack(const MlaCacheParams& p) {
  constexpr const char* op = "mla_cache_pack";
  detail::require_non_negative(p.N, op, "N");
  detail::require_ptr(p.kv, op, "kv");
  detail::require_ptr(p.records, op, "records");
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < p.N; ++n) {
    const float* row = p.kv + n * kMlaRowDim;
    uint8_t* rec = p.records + n * kMlaRecordBytes;
    for (int b = 0; b < kMlaBlocks; ++b) {
      const float s = quantize_block(row + b * kQuantBlock, rec + b * kQuantBlock, p.format);
      store_f32(rec + kMlaScaleOffset + b * int(sizeof(float)), s);
    }
    for (int i = 0; i < kMlaRopeDim; ++i)
      store_u16(rec + kMlaRopeOffset + 2 * i, bf16_from_float(row[kMlaLatentDim + i]));
  }
}

void mla_cache_unpack(const MlaCacheParams& p) {
  constexpr const char* op = "mla_cache_unpack";
  detail::require_non_negative(p.N, op, "N");
  detail::require_ptr(p.kv, op, "kv");
  detail::require_ptr(p.records, op, "records");
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < p.N; ++n) {
    float* row = p.kv + n * kMlaRowDim;
    const uint8_t* rec = p.records + n * kMlaRecordBytes;
    for (int b = 0; b < kMlaBlocks; ++b)
      dequantize_block(rec + b * kQuantBlock, load_f32(rec + kMlaScaleOffset + b * int(sizeof(float))),
                       row + b * kQuantBlock);
    for (int i = 0; i < kMlaRopeDim; ++i) row[kMlaLatentDim + i] = bf16_to_float(load_u16(rec + kMlaRopeOffset + 2 * i));
  }
}

// ── indexer K cache (DeepGEMM paged layout) ───────────────────────────────────────────────────
void indexer_cache_pack(const IndexerCacheParams& p) {
  constexpr const char* op = "indexer_cache_pack";
  detail::require_non_negative(p.N, op, "N");
  detail::require_ptr(p.k, op, "k");
  detail::require_ptr(p.cache, op, "cache");
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < p.N; ++n) {
    const float s = quantize_block(p.k + n * kIndexerKeyDim, p.cache + indexer_fp8_offset(n), p.format);
    store_f32(p.cache + indexer_scale_offset(n), s);
  }
  // The unused tail slots of the last page hold zeros (fp8 zero, scale 0), never stale bytes.
  const int64_t padded = (p.N + kCachePageTokens - 1) / kCachePageTokens * kCachePageTokens;
  for (int64_t n = p.N; n < padded; ++n) {
    std::memset(p.cache + indexer_fp8_offset(n), 0, kIndexerKeyDim);
    std::memset(p.cache + indexer_scale_offset(n), 0, sizeof(float));
  }
}

void indexer_cache_unpack(const IndexerCacheParams& p) {
  constexpr const char* op = "indexer_cache_unpack";
  detail::require_non_negative(p.N, op, "N");
  detail::require_ptr(p.k, op, "k");
  detail::require_ptr(p.cache, op, "cache");
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < p.N; ++n) {
    const uint8_t* q = p.cache + indexer_fp8_offset(n);
    const float s = load_f32(p.cache + indexer_scale_offset(n));
    dequantize_block(q, s, p.k + n * kIndexerKeyDim);
    if (p.k_fp8) std::memcpy(p.k_fp8 + n * kIndexerKeyDim, q, kIndexerKeyDim);
    if (p.k_scale) p.k_scale[n] = s;
  }
}

}  // namespace dsa::cpu
