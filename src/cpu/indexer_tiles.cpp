// indexer_tiles.cpp — the key-tile kernels of the indexer logits (see indexer_tiles.h).
//
// AVX-512F: tiles of 16 keys, 8 heads × 2 tiles = 16 accumulators per pass (of 32 zmm registers).
// Kernel alone, one core of a 2-core Xeon (KVM), HI = 16, DI = 64, 128 keys in L1: 160 GFLOP/s,
// against 75 for a heads-in-lanes form that needed a scalar per-key epilogue.
// AVX2 + FMA: tiles of 8 keys, kAvx2Heads heads × kAvx2Tiles tiles of accumulators per pass in the
// 16 ymm registers (the choice and its measurement are noted at the constants).
// NEON (ARM64): tiles of 4 keys, kNeonHeads heads × kNeonTiles tiles of accumulators in the 32
// 128-bit registers.
// All run the operations of indexer_tiles.h in the same order, so their logits are bitwise equal in
// every precision (fp32 included); fp-contract=off keeps the epilogue's multiply and add separate
// (the dot product's FMAs are explicit intrinsics).
#include "cpu/indexer_tiles.h"

#include <algorithm>
#include <cstdint>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif
#if defined(__aarch64__) && defined(__GNUC__)
#include <arm_neon.h>
#endif

namespace dsa::cpu::detail {

#if defined(__x86_64__) && defined(__GNUC__)
namespace {

// ── AVX-512F ──────────────────────────────────────────────────────────────────────────────────
#define DSA_TILE_TARGET gnu::target("avx512f"), gnu::optimize("fp-contract=off")
constexpr int kAvx512Keys = 16, kAvx512Heads = 8;

template <int NT>
[[gnu::always_inline, DSA_TILE_TARGET]] inline void tile_group_avx512(const float* qr, const float* w, int HI, int DI,
                                                                      const float* tiles, float* out) {
  __m512 hs[NT];
  for (int i = 0; i < NT; ++i) hs[i] = _mm512_setzero_ps();
  const int64_t tile_floats = static_cast<int64_t>(DI) * kAvx512Keys;
  for (int h0 = 0; h0 < HI; h0 += kAvx512Heads) {
    __m512 acc[kAvx512Heads][NT];
    for (int h = 0; h < kAvx512Heads; ++h)
      for (int i = 0; i < NT; ++i) acc[h][i] = _mm512_setzero_ps();
    const float* qh = qr + static_cast<int64_t>(h0) * DI;
    for (int d = 0; d < DI; ++d) {
      __m512 kv[NT];
      for (int i = 0; i < NT; ++i)
        kv[i] = _mm512_loadu_ps(tiles + i * tile_floats + static_cast<int64_t>(d) * kAvx512Keys);
      for (int h = 0; h < kAvx512Heads; ++h) {
        const __m512 qb = _mm512_set1_ps(qh[h * DI + d]);
        for (int i = 0; i < NT; ++i) acc[h][i] = _mm512_fmadd_ps(qb, kv[i], acc[h][i]);
      }
    }
    // Padded heads are computed but never summed. The loop runs over the constant kAvx512Heads (a
    // bound of HI − h0 made GCC keep acc in memory, storing it at every step of the d loop).
    for (int h = 0; h < kAvx512Heads; ++h) {
      if (h0 + h >= HI) break;
      const __m512 wv = _mm512_set1_ps(w[h0 + h]);
      for (int i = 0; i < NT; ++i) {
        // ReLU: u < 0 → 0, else u (NaN and −0 pass through).
        const __mmask16 neg = _mm512_cmp_ps_mask(acc[h][i], _mm512_setzero_ps(), _CMP_LT_OQ);
        const __m512 relu = _mm512_mask_mov_ps(acc[h][i], neg, _mm512_setzero_ps());
        hs[i] = _mm512_add_ps(hs[i], _mm512_mul_ps(wv, relu));
      }
    }
  }
  for (int i = 0; i < NT; ++i) _mm512_storeu_ps(out + i * kAvx512Keys, hs[i]);
}

[[gnu::noinline, DSA_TILE_TARGET]]
void logits_tiles_avx512(const float* qr, const float* w, int HI, int DI, const float* tiles, int ntiles, float* out) {
  const int64_t tile_floats = static_cast<int64_t>(DI) * kAvx512Keys;
  int i = 0;
  for (; i + 2 <= ntiles; i += 2) tile_group_avx512<2>(qr, w, HI, DI, tiles + i * tile_floats, out + i * kAvx512Keys);
  if (i < ntiles) tile_group_avx512<1>(qr, w, HI, DI, tiles + i * tile_floats, out + i * kAvx512Keys);
}
#undef DSA_TILE_TARGET

// ── AVX2 + FMA ────────────────────────────────────────────────────────────────────────────────
#define DSA_TILE_TARGET gnu::target("avx2,fma"), gnu::optimize("fp-contract=off")
constexpr int kAvx2Keys = 8;
// Accumulators per pass: kAvx2Heads × kAvx2Tiles = 12 of the 16 ymm registers, plus 3 key rows and
// one broadcast: per d, 3 loads + 4 broadcasts feed 12 FMAs. Kernel alone on the AMD EPYC (Zen 3,
// KVM) dev box, HI = 16, DI = 64, 128 keys in L1, GFLOP/s per second of thread CPU time (the box
// was loaded): heads × tiles 4 × 3: 79.0; 4 × 2: 56.7; 8 × 1: 53.5; 4 × 1: 47.5; 2 × 4: 45.7;
// 2 × 5: 41.6 — 4 × 3 is at the FMA peak (2 × 8-lane FMA per cycle at ≈ 2.45 GHz ≈ 78).
constexpr int kAvx2Heads = 4, kAvx2Tiles = 3;

template <int NT>
[[gnu::always_inline, DSA_TILE_TARGET]] inline void tile_group_avx2(const float* qr, const float* w, int HI, int DI,
                                                                    const float* tiles, float* out) {
  __m256 hs[NT];
  for (int i = 0; i < NT; ++i) hs[i] = _mm256_setzero_ps();
  const int64_t tile_floats = static_cast<int64_t>(DI) * kAvx2Keys;
  for (int h0 = 0; h0 < HI; h0 += kAvx2Heads) {
    __m256 acc[kAvx2Heads][NT];
    for (int h = 0; h < kAvx2Heads; ++h)
      for (int i = 0; i < NT; ++i) acc[h][i] = _mm256_setzero_ps();
    const float* qh = qr + static_cast<int64_t>(h0) * DI;
    for (int d = 0; d < DI; ++d) {
      __m256 kv[NT];
      for (int i = 0; i < NT; ++i)
        kv[i] = _mm256_loadu_ps(tiles + i * tile_floats + static_cast<int64_t>(d) * kAvx2Keys);
      for (int h = 0; h < kAvx2Heads; ++h) {
        const __m256 qb = _mm256_broadcast_ss(qh + h * DI + d);
        for (int i = 0; i < NT; ++i) acc[h][i] = _mm256_fmadd_ps(qb, kv[i], acc[h][i]);
      }
    }
    for (int h = 0; h < kAvx2Heads; ++h) {  // as in tile_group_avx512
      if (h0 + h >= HI) break;
      const __m256 wv = _mm256_set1_ps(w[h0 + h]);
      for (int i = 0; i < NT; ++i) {
        const __m256 neg = _mm256_cmp_ps(acc[h][i], _mm256_setzero_ps(), _CMP_LT_OQ);
        const __m256 relu = _mm256_blendv_ps(acc[h][i], _mm256_setzero_ps(), neg);
        hs[i] = _mm256_add_ps(hs[i], _mm256_mul_ps(wv, relu));
      }
    }
  }
  for (int i = 0; i < NT; ++i) _mm256_storeu_ps(out + i * kAvx2Keys, hs[i]);
}

[[gnu::noinline, DSA_TILE_TARGET]]
void logits_tiles_avx2(const float* qr, const float* w, int HI, int DI, const float* tiles, int ntiles, float* out) {
  const int64_t tile_floats = static_cast<int64_t>(DI) * kAvx2Keys;
  int i = 0;
  for (; i + kAvx2Tiles <= ntiles; i += kAvx2Tiles)
    tile_group_avx2<kAvx2Tiles>(qr, w, HI, DI, tiles + i * tile_floats, out + i * kAvx2Keys);
  if (i + 2 <= ntiles) {
    tile_group_avx2<2>(qr, w, HI, DI, tiles + i * tile_floats, out + i * kAvx2Keys);
    i += 2;
  }
  for (; i < ntiles; ++i) tile_group_avx2<1>(qr, w, HI, DI, tiles + i * tile_floats, out + i * kAvx2Keys);
}
#undef DSA_TILE_TARGET

}  // namespace
#endif

#if defined(__aarch64__) && defined(__GNUC__)
namespace {

// ── NEON ──────────────────────────────────────────────────────────────────────────────────────
#define DSA_TILE_TARGET gnu::optimize("fp-contract=off")
constexpr int kNeonKeys = 4;
// Accumulators per pass: kNeonHeads × kNeonTiles = 24 of the 32 q registers, plus 3 key rows and one
// broadcast: per d, 3 loads + 8 broadcasts feed 24 FMAs. Not timed on ARM hardware (the build is
// checked under qemu-user emulation, scripts/arm64_check.sh); the shape follows the AVX2 kernel's
// measured choice (most accumulators that fit beside the key rows).
constexpr int kNeonHeads = 8, kNeonTiles = 3;

template <int NT>
[[gnu::always_inline, DSA_TILE_TARGET]] inline void tile_group_neon(const float* qr, const float* w, int HI, int DI,
                                                                    const float* tiles, float* out) {
  float32x4_t hs[NT];
  for (int i = 0; i < NT; ++i) hs[i] = vdupq_n_f32(0.0f);
  const int64_t tile_floats = static_cast<int64_t>(DI) * kNeonKeys;
  for (int h0 = 0; h0 < HI; h0 += kNeonHeads) {
    float32x4_t acc[kNeonHeads][NT];
    for (int h = 0; h < kNeonHeads; ++h)
      for (int i = 0; i < NT; ++i) acc[h][i] = vdupq_n_f32(0.0f);
    const float* qh = qr + static_cast<int64_t>(h0) * DI;
    for (int d = 0; d < DI; ++d) {
      float32x4_t kv[NT];
      for (int i = 0; i < NT; ++i) kv[i] = vld1q_f32(tiles + i * tile_floats + static_cast<int64_t>(d) * kNeonKeys);
      for (int h = 0; h < kNeonHeads; ++h) {
        const float32x4_t qb = vdupq_n_f32(qh[h * DI + d]);
        for (int i = 0; i < NT; ++i) acc[h][i] = vfmaq_f32(acc[h][i], qb, kv[i]);   // acc + qb·kv, one rounding
      }
    }
    for (int h = 0; h < kNeonHeads; ++h) {  // as in tile_group_avx512
      if (h0 + h >= HI) break;
      const float32x4_t wv = vdupq_n_f32(w[h0 + h]);
      for (int i = 0; i < NT; ++i) {
        const uint32x4_t neg = vcltq_f32(acc[h][i], vdupq_n_f32(0.0f));
        const float32x4_t relu = vbslq_f32(neg, vdupq_n_f32(0.0f), acc[h][i]);
        hs[i] = vaddq_f32(hs[i], vmulq_f32(wv, relu));
      }
    }
  }
  for (int i = 0; i < NT; ++i) vst1q_f32(out + i * kNeonKeys, hs[i]);
}

[[gnu::noinline, DSA_TILE_TARGET]]
void logits_tiles_neon(const float* qr, const float* w, int HI, int DI, const float* tiles, int ntiles, float* out) {
  const int64_t tile_floats = static_cast<int64_t>(DI) * kNeonKeys;
  int i = 0;
  for (; i + kNeonTiles <= ntiles; i += kNeonTiles)
    tile_group_neon<kNeonTiles>(qr, w, HI, DI, tiles + i * tile_floats, out + i * kNeonKeys);
  for (; i < ntiles; ++i) tile_group_neon<1>(qr, w, HI, DI, tiles + i * tile_floats, out + i * kNeonKeys);
}
#undef DSA_TILE_TARGET

}  // namespace
#endif

TileKernel tile_kernel(Isa isa) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (isa == Isa::kAvx512) return {kAvx512Keys, &logits_tiles_avx512};
  if (isa == Isa::kAvx2) return {kAvx2Keys, &logits_tiles_avx2};
#endif
#if defined(__aarch64__) && defined(__GNUC__)
  if (isa == Isa::kNeon) return {kNeonKeys, &logits_tiles_neon};
#endif
  (void)isa;
  return {};
}

}  // namespace dsa::cpu::detail
