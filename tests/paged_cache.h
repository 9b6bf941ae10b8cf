// paged_cache.h — the paged caches of the decode-time rows (tests/op_indexer_paged.cpp,
// tests/op_decode.cpp): cache layout constants, independent e4m3 / bf16 decoders for the float64
// references, and the block table of a batch of requests drawn from a shuffled page pool.
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <vector>

#include "test_util.h"

namespace dsa::test {

inline constexpr int kDqk = kMlaLatentDim + kMlaRopeDim;     // 576
inline constexpr int kDv = kMlaLatentDim;                    // 512
inline constexpr int kPage = kCachePageTokens;               // 64
inline constexpr size_t kIdxPageBytes = static_cast<size_t>(kPage) * kIndexerRecordBytes;      // 8448
inline constexpr size_t kIdxScaleOffset = static_cast<size_t>(kPage) * kIndexerKeyDim;         // 8192
inline constexpr size_t kMlaScaleOffset = kMlaLatentDim;                                        // 512
inline constexpr size_t kMlaRopeOffset = kMlaLatentDim + (kMlaLatentDim / kQuantBlock) * 4;     // 528
inline constexpr double kU32 = 0x1p-24;                      // unit roundoff of fp32
inline constexpr uint8_t kNanByte = 0xFF;                    // NaN as e4m3, and every fp32/bf16 made of it
inline constexpr double kInf = std::numeric_limits<double>::infinity();

// ── independent decoders ────────────────────────────────────────────────────────────────────
inline double e4m3_value(uint8_t b) {
  const int e = (b >> 3) & 0xF, m = b & 7;
  if (e == 0xF && m == 7) return std::numeric_limits<double>::quiet_NaN();
  const double mag = e == 0 ? std::ldexp(m, -9) : std::ldexp(8 + m, e - 10);  // (1+m/8)·2^(e−7)
  return (b & 0x80) ? -mag : mag;
}
inline float bf16_value(uint16_t bits) {
  const uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
inline float f32_at(const uint8_t* p) {
  float f;
  std::memcpy(&f, p, sizeof f);
  return f;
}
inline const std::vector<double>& e4m3_values() {  // all 256 codes, for the hot loops of the references
  static const std::vector<double> t = [] {
    std::vector<double> v(256);
    for (int b = 0; b < 256; ++b) v[b] = e4m3_value(static_cast<uint8_t>(b));
    return v;
  }();
  return t;
}
inline uint8_t random_e4m3(Rng& rng) {  // any finite code, every binade and both signs
  int b;
  do b = rng.integer(0, 255);
  while ((b & 0x7F) == 0x7F);
  return static_cast<uint8_t>(b);
}

// Runs fn with OpenMP limited to one thread (then restores the count): results must not depend on it.
template <typename Fn>
void with_one_thread(Fn&& fn) {
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  fn();
  omp_set_num_threads(threads);
}

// ── paged layout: request b's logical token j lives in slot table[b, j/64]·64 + j%64 ─────────
struct PagedLayout {
  int num_pages = 0, max_blocks = 0;
  std::vector<int32_t> table;  // [B, max_blocks]; entries past a request's pages are −1 (never read)
  int32_t page(int b, int64_t j) const { return table[static_cast<size_t>(b) * max_blocks + j / kPage]; }
  int64_t slot(int b, int64_t j) const { return static_cast<int64_t>(page(b, j)) * kPage + j % kPage; }
};

inline PagedLayout make_layout(const std::vector<int>& lens, int spare_pages, int spare_blocks, Rng& rng) {
  PagedLayout l;
  int used = 0, widest = 0;
  for (int L : lens) {
    used += (L + kPage - 1) / kPage;
    widest = std::max(widest, (L + kPage - 1) / kPage);
  }
  l.num_pages = used + spare_pages;
  l.max_blocks = std::max(1, widest + spare_blocks);
  std::vector<int32_t> pool(l.num_pages);
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), rng.engine());
  l.table.assign(lens.size() * l.max_blocks, kInvalidIndex);
  size_t next = 0;
  for (size_t b = 0; b < lens.size(); ++b)
    for (int i = 0; i < (lens[b] + kPage - 1) / kPage; ++i) l.table[b * l.max_blocks + i] = pool[next++];
  return l;
}


}  // namespace dsa::test
