// indexer_common.cuh — device pieces shared by the indexer kernels (indexer_logits, indexer_topk,
// indexer_logits_paged, indexer_backward) and top-k (topk_select, indexer_topk):
//   * the ONE per-element logit arithmetic of kernel version 1 (so fused ≡ unfused bitwise),
//   * host-side validation of IndexerParams that needs no device data,
//   * a block-wide bitonic sort of 64-bit selection keys (descending).
#pragma once

#include "cuda/common.cuh"
#include "dsa/cuda_ops.h"

namespace dsa::cuda::detail {

// ── element loads per precision ──────────────────────────────────────────────────────────────
template <Precision P>
__device__ __forceinline__ float load_elem(const void* base, int64_t i) {
  if constexpr (P == Precision::kFp32) return __ldg(static_cast<const float*>(base) + i);
  else if constexpr (P == Precision::kBf16) return bf16_decode(__ldg(static_cast<const uint16_t*>(base) + i));
  else return fp8_e4m3_decode(__ldg(static_cast<const uint8_t*>(base) + i));
}

// Version-1 logit of one (query row, key row) pair, the order fixed for every v1 kernel:
//   dot_h = fmaf chain over d = 0..DI−1 (fp32), acc = fmaf(w[h], max(dot_h, 0), acc) for h = 0..HI−1,
//   result = acc · k_scale (kFp8; the caller multiplies with __fmul_rn) or acc.
// q_row points at q[t, 0, 0], k_row at k[s, 0] (element offsets into the typed arrays).
template <Precision P>
__device__ __forceinline__ float logit_v1(const void* q, int64_t q_row, const void* k, int64_t k_row,
                                          const float* __restrict__ w_row, int HI, int DI) {
  float acc = 0.0f;
  for (int h = 0; h < HI; ++h) {
    float dot = 0.0f;
    const int64_t qh = q_row + int64_t(h) * DI;
    for (int d = 0; d < DI; ++d) dot = fmaf(load_elem<P>(q, qh + d), load_elem<P>(k, k_row + d), dot);
    acc = fmaf(__ldg(w_row + h), dot < 0.0f ? 0.0f : dot, acc);  // ReLU; NaN propagates as on the CPU
  }
  return acc;
}

// ── host-side validation (no device data is read) ────────────────────────────────────────────
inline void validate_indexer_host(const IndexerParams& p, const char* op) {
  ::dsa::detail::require_non_negative(p.T, op, "T");
  ::dsa::detail::require_non_negative(p.S, op, "S");
  ::dsa::detail::require_positive(p.HI, op, "HI");
  ::dsa::detail::require_positive(p.DI, op, "DI");
  ::dsa::detail::require_ptr(p.q, op, "q");
  ::dsa::detail::require_ptr(p.k, op, "k");
  ::dsa::detail::require_ptr(p.w, op, "w");
  ::dsa::detail::require_ptr(p.ks, op, "ks");
  ::dsa::detail::require_ptr(p.ke, op, "ke");
  if (p.precision == Precision::kFp8) ::dsa::detail::require_ptr(p.k_scale, op, "k_scale");
  else if (p.k_scale != nullptr) ::dsa::detail::fail(op, "k_scale must be null unless precision is kFp8");
}

inline void validate_topk_budget(int K, const char* op) {
  if (K < 1 || K > kMaxTopK) ::dsa::detail::fail(op, "K = ", K, " must be in [1, kMaxTopK = ", kMaxTopK, "]");
}

__host__ __device__ inline int next_pow2(int v) {
  int p = 1;
  while (p < v) p *= 2;
  return p;
}

// ── block-wide bitonic sort, descending, n a power of two; every thread of the block calls it ─
// buf may be shared or global memory (global: __syncthreads orders the block's own accesses).
__device__ inline void bitonic_sort_desc(uint64_t* buf, int n) {
  for (int k = 2; k <= n; k <<= 1) {
    for (int j = k >> 1; j > 0; j >>= 1) {
      for (int i = threadIdx.x; i < n; i += blockDim.x) {
        const int ixj = i ^ j;
        if (ixj > i) {
          const uint64_t a = buf[i], b = buf[ixj];
          const bool desc = (i & k) == 0;
          if (desc ? (a < b) : (a > b)) {
            buf[i] = b;
            buf[ixj] = a;
          }
        }
      }
      __syncthreads();
    }
  }
}

}  // namespace dsa::cuda::detail
