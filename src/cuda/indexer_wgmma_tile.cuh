// indexer_wgmma_tile.cuh — the FP8 wgmma tile of the indexer logits, shared by the contiguous
// (indexer_logits_wgmma.cu) and the paged (indexer_logits_paged_wgmma.cu) kernels, so that both run
// the same per-element arithmetic:
//   * the 64-head weight permutation of shared memory (a quad lane's 16 heads contiguous),
//   * the m64nNk32 e4m3 wgmma wrappers (N = 64 · queries),
//   * load_weights / head_partials: the in-register fmaf chain of w·ReLU over a quad lane's heads.
// The quad-lane sum that follows head_partials is (p_c + p_{c^2}) + (p_{c^1} + p_{c^3}) in both
// kernels (fp32 addition commutes, so every lane of the quad gets the same bits).
// Accumulator layout of m64nNk32 f32 (PTX ISA, wgmma "Matrix fragments for .m64nNk32"): thread
// (warp w of the warpgroup, lane = 4r + qc) holds acc[4·jc + 2·half + e] = D[row 16w + r + 8·half,
// column 8·jc + 2·qc + e]; column = query·64 + head within the accumulator block.
#pragma once

#include <cstdint>

#include "cuda/wgmma.cuh"

namespace dsa::cuda::wgmma {

constexpr int kIndexerHeads = 64;   // HI of the wgmma indexer kernels (DeepSeek-V3.2)

// Head of permuted weight slot `rest` (0..63) of one query: slot lane·16 + j·2 + e holds head
// 8j + 2·lane + e, so quad lane `lane` reads its 16 heads as four float4.
__host__ __device__ constexpr int permuted_head(int rest) {
  return 8 * ((rest % 16) / 2) + 2 * (rest / 16) + rest % 2;
}

#if DSA_WGMMA
__device__ __forceinline__ void named_barrier(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// ReLU with NaN propagation (PTX max.NaN), as v1/v2's `x < 0 ? 0 : x` up to the sign of zero.
__device__ __forceinline__ float relu(float x) {
  float y;
  asm("max.NaN.f32 %0, %1, 0f00000000;\n" : "=f"(y) : "f"(x));
  return y;
}

// D (64 × N fp32, N/2 registers per thread) = / += A (64 × 32 e4m3, K-major smem) · B (N × 32 e4m3).
__device__ __forceinline__ void wgmma_m64n128k32(float (&d)[64], uint64_t desc_a, uint64_t desc_b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15,"
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31,"
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47,"
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
      "}, %64, %65, p, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(desc_a), "l"(desc_b), "r"(accumulate));
}
__device__ __forceinline__ void wgmma_m64n64k32(float (&d)[32], uint64_t desc_a, uint64_t desc_b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k32.f32.e4m3.e4m3 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15,"
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
      "}, %32, %33, p, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "l"(desc_a), "l"(desc_b), "r"(accumulate));
}
// One m64nNk32 step with N = 64·kQ (kQ = 1 or 2 queries of 64 heads).
template <int kQ>
__device__ __forceinline__ void wgmma_heads(float (&d)[kQ * kIndexerHeads / 2], uint64_t desc_a, uint64_t desc_b,
                                            int accumulate) {
  static_assert(kQ == 1 || kQ == 2, "N = 64 or 128");
  if constexpr (kQ == 1) wgmma_m64n64k32(d, desc_a, desc_b, accumulate);
  else wgmma_m64n128k32(d, desc_a, desc_b, accumulate);
}

// This quad lane's weights of kQ queries (query_base …): w4[qq][v] = the 4 weights of heads
// 8·(2v) + 2qc + e and 8·(2v+1) + 2qc + e (w_s is permuted so they are contiguous). Loaded into
// registers before the MMAs are waited for, so that the epilogue's FMA chains do not wait for shared
// memory (ncu: short-scoreboard stalls on these loads were ~30 % of the kernel's stall samples).
template <int kQ>
__device__ __forceinline__ void load_weights(const float* w_s, int query_base, int qc, float4 (&w4)[kQ][4]) {
#pragma unroll
  for (int qq = 0; qq < kQ; ++qq)
#pragma unroll
    for (int v = 0; v < 4; ++v)
      w4[qq][v] = reinterpret_cast<const float4*>(w_s + (query_base + qq) * kIndexerHeads + qc * 16)[v];
}

// Weighted ReLU head sums of kQ queries (query_base …; their weights w4[0 .. kQ), from load_weights)
// from one accumulator block: for query qq and this quad lane qc, the fmaf chain over the 16 heads
// h = 8j + 2qc + e in (j, e) order, for the two accumulator rows (r and r + 8) of the thread.
// acc column = (qq − query_base)·64 + head.
template <int kQ, int kRegs>
__device__ __forceinline__ void head_partials(const float (&acc)[kRegs], const float4 (*w4)[4], int query_base,
                                              float* part0, float* part1) {
  static_assert(kRegs == kQ * kIndexerHeads / 2, "64 heads × kQ columns over a quad: 32·kQ registers");
#pragma unroll
  for (int qq = 0; qq < kQ; ++qq) {
    float s0 = 0.0f, s1 = 0.0f;
#pragma unroll
    for (int v = 0; v < 4; ++v) {
      const float4 w = w4[qq][v];
      const int i0 = (qq * 8 + 2 * v) * 4, i1 = i0 + 4;
      s0 = fmaf(w.x, relu(acc[i0]), s0);
      s0 = fmaf(w.y, relu(acc[i0 + 1]), s0);
      s1 = fmaf(w.x, relu(acc[i0 + 2]), s1);
      s1 = fmaf(w.y, relu(acc[i0 + 3]), s1);
      s0 = fmaf(w.z, relu(acc[i1]), s0);
      s0 = fmaf(w.w, relu(acc[i1 + 1]), s0);
      s1 = fmaf(w.z, relu(acc[i1 + 2]), s1);
      s1 = fmaf(w.w, relu(acc[i1 + 3]), s1);
    }
    part0[query_base + qq] = s0;
    part1[query_base + qq] = s1;
  }
}
#endif  // DSA_WGMMA

}  // namespace dsa::cuda::wgmma
