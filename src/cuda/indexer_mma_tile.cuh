// indexer_mma_tile.cuh — the FP8 mma.sync tile of the indexer logits (sm_89+), shared by the
// contiguous (indexer_logits_mma.cu) and the paged (indexer_logits_paged_mma.cu) kernels, so both run
// the same per-element arithmetic:
//   u[h, s] = the e4m3 MMA dot over d (m16n8k32, fp32 accumulate, k-steps of 32 dims in order 0..3);
//   per warp (16 heads h0..h0+15): lane group g holds heads h0+g and h0+g+8:
//     p = fmaf(w[h0+g+8], relu(u[h0+g+8]), w[h0+g] · relu(u[h0+g])), then a butterfly sum over g
//     (xor 4, 8, 16) → the warp's 16-head partial of each key.
// The caller sums the warps' partials of one query in head-group order and multiplies by k_scale.
// Fragment layouts (PTX ISA, mma.m16n8k32 with .e4m3): A (16 × 32, row) register i of lane (g, c) holds
// row g + 8·(i & 1), columns 4c + 16·(i >> 1) .. +3; B (32 × 8, col) registers 0 / 1 hold column g,
// rows 4c .. 4c+3 / 16 + 4c ..; C/D c0, c1 = (row g, columns 2c, 2c+1), c2, c3 = (row g + 8, same).
#pragma once

#include <cstdint>

#include "cuda/common.cuh"
#include "dsa/ops.h"

namespace dsa::cuda::mma_tile {

constexpr int kHeadTile = 16;                    // MMA M: heads per warp
constexpr int kKeyTile = 64;                     // keys per shared-memory tile (8 MMA n-tiles)
constexpr int kNTiles = kKeyTile / 8;
constexpr int kKSteps = kIndexerKeyDim / 32;     // 4 MMA k-steps of 32 dims
constexpr int kRowPitch = kIndexerKeyDim + 16;   // bytes: conflict-free B-fragment loads
static_assert(kRowPitch % 16 == 0, "16-byte aligned tile rows");

__device__ __forceinline__ void mma_e4m3(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
  __trap();  // never launched below sm_89 (the host checks the device and the binary)
#endif
}

__device__ __forceinline__ float relu(float x) { return x < 0.0f ? 0.0f : x; }

// The A fragments of 16 heads for all 4 k-steps (16 registers): q16 points at the first head's 128-byte
// e4m3 row, the heads 128 B apart; zeros where !valid.
__device__ __forceinline__ void load_q_fragments(const uint8_t* q16, bool valid, uint32_t (&a)[kKSteps][4]) {
  const int lane = threadIdx.x % detail::kWarpSize, g = lane >> 2, c = lane & 3;
#pragma unroll
  for (int ks = 0; ks < kKSteps; ++ks) {
    const int d = ks * 32 + 4 * c;
    a[ks][0] = valid ? __ldg(reinterpret_cast<const uint32_t*>(q16 + int64_t(g) * kIndexerKeyDim + d)) : 0u;
    a[ks][1] = valid ? __ldg(reinterpret_cast<const uint32_t*>(q16 + int64_t(g + 8) * kIndexerKeyDim + d)) : 0u;
    a[ks][2] = valid ? __ldg(reinterpret_cast<const uint32_t*>(q16 + int64_t(g) * kIndexerKeyDim + d + 16)) : 0u;
    a[ks][3] = valid ? __ldg(reinterpret_cast<const uint32_t*>(q16 + int64_t(g + 8) * kIndexerKeyDim + d + 16)) : 0u;
  }
}

// One warp on one 64-key shared-memory tile (rows kRowPitch bytes apart): 8 n-tiles × 4 k-steps = 32
// MMAs, then the weighted ReLU of the lane's two heads (weights wA of head h0+g, wB of h0+g+8) and the
// butterfly over the 8 lane groups; lanes with g == 0 write part_row[key] for the 64 keys.
__device__ __forceinline__ void tile_head_partials(const uint32_t (&a)[kKSteps][4], const uint8_t* ktile, float wA,
                                                   float wB, float* part_row) {
  const int lane = threadIdx.x % detail::kWarpSize, g = lane >> 2, c = lane & 3;
  float acc[kNTiles][4];
#pragma unroll
  for (int j = 0; j < kNTiles; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;
#pragma unroll
  for (int ks = 0; ks < kKSteps; ++ks) {
#pragma unroll
    for (int j = 0; j < kNTiles; ++j) {
      const uint8_t* row = ktile + (j * 8 + g) * kRowPitch + ks * 32 + 4 * c;
      mma_e4m3(acc[j], a[ks], *reinterpret_cast<const uint32_t*>(row), *reinterpret_cast<const uint32_t*>(row + 16));
    }
  }
#pragma unroll
  for (int j = 0; j < kNTiles; ++j) {
    float p0 = fmaf(wB, relu(acc[j][2]), wA * relu(acc[j][0]));
    float p1 = fmaf(wB, relu(acc[j][3]), wA * relu(acc[j][1]));
#pragma unroll
    for (int o = 4; o < detail::kWarpSize; o *= 2) {
      p0 += __shfl_xor_sync(detail::kFullMask, p0, o);
      p1 += __shfl_xor_sync(detail::kFullMask, p1, o);
    }
    if (g == 0) {
      part_row[j * 8 + 2 * c] = p0;
      part_row[j * 8 + 2 * c + 1] = p1;
    }
  }
}

}  // namespace dsa::cuda::mma_tile
