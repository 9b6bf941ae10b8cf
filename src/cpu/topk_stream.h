// topk_stream.h — the ONE top-k selection rule of the CPU backend, shared by topk_select (op 4)
// and the fused indexer_topk (op 5), so both return bit-identical indices by construction.
//
// Order (ops.h): larger score first, ties → smaller key index, NaN ≡ −inf (still selectable).
// This is a strict total order on (score, index), so "the K best" is unique.
//
// Streaming with a threshold-partition buffer of 2K candidates (O(K) memory per row):
//   * keys are offered in increasing index order;
//   * while fewer than 2K candidates are buffered, every key is kept;
//   * when the buffer holds ≥ 2K (checked after each chunk of kChunk keys, so at most 2K + kChunk − 1),
//     a selection keeps the K best and the K-th best score becomes the threshold θ. A later key
//     (larger index than every kept one) can only displace the K-th best if its score is STRICTLY
//     greater than θ (a tie loses on the index), so most keys of a long row are rejected by one
//     comparison, without touching the buffer. Every rejected key is worse than K kept ones, so the
//     buffer always holds the K best keys offered so far (whenever the compactions happen);
//   * finish() sorts the survivors and writes min(K, offered) indices, then −1.
// Each compaction costs O(K) and happens at most once per K accepted keys: O(1) amortised.
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <vector>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include "dsa/ops.h"

namespace dsa::cpu::detail {

// A candidate is one 64-bit key whose unsigned order IS the selection order (larger = better):
//   high 32 bits: the score mapped monotonically to uint32 (after NaN → −inf and −0 → +0, so that
//                 equal scores get equal bits and tie);
//   low 32 bits:  0xFFFFFFFF − index (smaller index = larger key on a tie).
// Integer keys make the partitions and the final sort branch-light (no NaN-aware float compares).
inline uint64_t topk_key(float score, int32_t index) {
  if (std::isnan(score)) score = -std::numeric_limits<float>::infinity();
  if (score == 0.0f) score = 0.0f;  // −0 ≡ +0
  uint32_t u;
  std::memcpy(&u, &score, sizeof u);
  // IEEE order → unsigned order: negative → ~u, positive → u | sign bit. Written branch-free (an
  // arithmetic shift spreads the sign bit) because logits of both signs made the branch a coin flip.
  const uint32_t negative = static_cast<uint32_t>(static_cast<int32_t>(u) >> 31);
  u ^= negative | 0x80000000u;
  return (static_cast<uint64_t>(u) << 32) | (0xFFFFFFFFu - static_cast<uint32_t>(index));
}
inline int32_t topk_key_index(uint64_t key) { return static_cast<int32_t>(0xFFFFFFFFu - static_cast<uint32_t>(key)); }
inline float topk_key_score(uint64_t key) {
  uint32_t u = static_cast<uint32_t>(key >> 32);
  u = (u & 0x80000000u) ? (u & 0x7FFFFFFFu) : ~u;  // inverse of the map above
  float score;
  std::memcpy(&score, &u, sizeof score);
  return score;
}

class TopkStream {
 public:
  explicit TopkStream(int K) : K_(K), buf_(2 * static_cast<size_t>(K) + kChunk) {}

  void reset() {
    n_ = 0;
    has_threshold_ = false;
    threshold_ = -std::numeric_limits<float>::infinity();
  }

  // Offers a block of consecutive keys first_index, first_index+1, ... (indices must increase from
  // call to call within a row).
  void offer_block(const float* scores, int n, int32_t first_index) {
    for (int c0 = 0; c0 < n; c0 += kChunk) {
      const int c1 = std::min(n, c0 + kChunk);
      size_t m = n_;  // room: n_ < 2K before the chunk
      if (has_threshold_) {
        // Once θ exists, only keys with score > θ are kept: the key order restricted to a larger
        // index (NaN and ties with θ, −0 == +0, are rejected). The test runs branch-free over the
        // chunk into a bit mask (the compiler vectorises it), then only the passing keys are
        // visited — a per-key branch was a coin flip early in a row and cost ≈ 20 % of the fused
        // indexer at L = 12K.
        const float theta = threshold_;
        uint32_t mask = 0;
        int i0 = c0;
#if defined(__SSE2__)
        // 4 keys per compare (SSE is in every x86-64 build; a portable build did not vectorise the
        // loop below and spent ≈ 10 % of the fused indexer in it). cmpgt is false on NaN, as `>`.
        const __m128 th = _mm_set1_ps(theta);
        for (; i0 + 4 <= c1; i0 += 4)
          mask |= static_cast<uint32_t>(_mm_movemask_ps(_mm_cmpgt_ps(_mm_loadu_ps(scores + i0), th))) << (i0 - c0);
#endif
        for (int i = i0; i < c1; ++i) mask |= (scores[i] > theta ? 1u : 0u) << (i - c0);
        for (; mask != 0; mask &= mask - 1) {
          const int i = c0 + std::countr_zero(mask);
          buf_[m++] = topk_key(scores[i], first_index + i);
        }
      } else {
        for (int i = c0; i < c1; ++i) buf_[m++] = topk_key(scores[i], first_index + i);
      }
      n_ = m;
      if (n_ >= 2 * static_cast<size_t>(K_)) compact();
    }
  }

  // Writes the selection to out[0..K): best first, then kInvalidIndex.
  void finish(int32_t* out) {
    const size_t n = std::min(n_, static_cast<size_t>(K_));
    const auto kept = buf_.begin() + static_cast<std::ptrdiff_t>(n);
    if (n < n_) select_best(buf_.data(), n_, n);
    std::sort(buf_.begin(), kept, std::greater<>());  // (select + sort beats partial_sort's heap)
    for (size_t i = 0; i < n; ++i) out[i] = topk_key_index(buf_[i]);
    for (size_t i = n; i < static_cast<size_t>(K_); ++i) out[i] = kInvalidIndex;
  }

 private:
  void compact() {
    select_best(buf_.data(), n_, static_cast<size_t>(K_));
    n_ = static_cast<size_t>(K_);
    // The K-th best is the smallest kept key; every kept candidate is at least as good.
    uint64_t kth = buf_[0];
    for (size_t i = 1; i < n_; ++i) kth = std::min(kth, buf_[i]);
    threshold_ = topk_key_score(kth);
    has_threshold_ = true;
  }

  // Moves the k largest of a[0, n) (distinct keys: the index is part of the key) to a[0, k), in
  // any order. Quickselect with a branch-free partition: random scores make the branches of
  // std::nth_element's partition unpredictable (it was ≈ 20 % of the fused indexer at L = 12K).
  // Invariant: a[0, lo) are among the k largest, a[hi, n) are not, lo ≤ k ≤ hi.
  static void select_best(uint64_t* a, size_t n, size_t k) {
    constexpr size_t kSmall = 32;  // below this, std::nth_element finishes the range
    size_t lo = 0, hi = n;
    while (hi - lo > kSmall) {
      const uint64_t x = a[lo], y = a[lo + (hi - lo) / 2], z = a[hi - 1];
      const uint64_t pivot = std::max(std::min(x, y), std::min(std::max(x, y), z));  // median of 3
      size_t j = lo;  // a[lo, j) > pivot, a[j, i) ≤ pivot
      for (size_t i = lo; i < hi; ++i) {
        const uint64_t v = a[i];
        a[i] = a[j];
        a[j] = v;
        j += v > pivot ? 1 : 0;
      }
      // Distinct keys and a median of 3 distinct positions: lo < j < hi − 1, so both sides shrink.
      if (j == k) return;
      if (j > k) hi = j;
      else lo = j;
    }
    if (k > lo) std::nth_element(a + lo, a + (k - 1), a + hi, std::greater<>());
  }

  static constexpr int kChunk = 32;  // keys per threshold test (the bits of one uint32_t mask)
  int K_;
  std::vector<uint64_t> buf_;  // topk_key values: [0, n_) the candidates, capacity 2K + kChunk
  size_t n_ = 0;
  bool has_threshold_ = false;
  float threshold_ = -std::numeric_limits<float>::infinity();
};

}  // namespace dsa::cpu::detail
