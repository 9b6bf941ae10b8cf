// topk_stream.h — the ONE top-k selection rule of the CPU backend, shared by topk_select (op 4)
// and the fused indexer_topk (op 5), so both return bit-identical indices by construction.
//
// Order (ops.h): larger score first, ties → smaller key index, NaN ≡ −inf (still selectable).
// This is a strict total order on (score, index), so "the K best" is unique.
//
// Streaming with a threshold-partition buffer of 2K candidates (O(K) memory per row):
//   * keys are offered in increasing index order;
//   * while fewer than 2K candidates are buffered, every key is kept;
//   * when the buffer holds 2K, nth_element keeps the K best and the K-th best score becomes the
//     threshold θ. A later key (larger index than every kept one) can only displace the K-th best
//     if its score is STRICTLY greater than θ (a tie loses on the index), so most keys of a long row
//     are rejected by one comparison, without touching the buffer;
//   * finish() sorts the survivors and writes min(K, offered) indices, then −1.
// Each compaction costs O(K) and happens at most once per K accepted keys: O(1) amortised.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <vector>

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
  u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);  // IEEE order → unsigned order
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
  explicit TopkStream(int K) : K_(K) { buf_.reserve(2 * static_cast<size_t>(K)); }

  void reset() {
    buf_.clear();
    has_threshold_ = false;
    threshold_ = -std::numeric_limits<float>::infinity();
  }

  // Offers a block of consecutive keys first_index, first_index+1, ... (indices must increase from
  // call to call within a row).
  void offer_block(const float* scores, int n, int32_t first_index) {
    for (int i = 0; i < n; ++i) {
      // Fast path: one float comparison rejects the key without touching the buffer. It is the
      // key order restricted to a larger index: NaN and ties with θ (−0 == +0) are rejected.
      if (has_threshold_ && !(scores[i] > threshold_)) continue;
      buf_.push_back(topk_key(scores[i], first_index + i));
      if (buf_.size() == 2 * static_cast<size_t>(K_)) compact();
    }
  }

  // Writes the selection to out[0..K): best first, then kInvalidIndex.
  void finish(int32_t* out) {
    const size_t n = std::min(buf_.size(), static_cast<size_t>(K_));
    const auto kept = buf_.begin() + static_cast<std::ptrdiff_t>(n);
    if (n < buf_.size()) std::nth_element(buf_.begin(), kept - 1, buf_.end(), std::greater<>());
    std::sort(buf_.begin(), kept, std::greater<>());  // (nth_element + sort beats partial_sort's heap)
    for (size_t i = 0; i < n; ++i) out[i] = topk_key_index(buf_[i]);
    for (size_t i = n; i < static_cast<size_t>(K_); ++i) out[i] = kInvalidIndex;
  }

 private:
  void compact() {
    std::nth_element(buf_.begin(), buf_.begin() + (K_ - 1), buf_.end(), std::greater<>());
    buf_.resize(static_cast<size_t>(K_));
    // buf_[K−1] is the K-th best; every kept candidate is at least as good.
    threshold_ = topk_key_score(buf_[K_ - 1]);
    has_threshold_ = true;
  }

  int K_;
  std::vector<uint64_t> buf_;  // topk_key values
  bool has_threshold_ = false;
  float threshold_ = -std::numeric_limits<float>::infinity();
};

}  // namespace dsa::cpu::detail
