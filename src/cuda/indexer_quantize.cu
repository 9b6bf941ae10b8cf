// indexer_quantize.cu — op 3a on the GPU: indexer_quantize_fp8 (V3.2 Indexer.forward steps 5 and 7).
//
// Contract (ops.h §3): q [T,HI,DI] fp32 → q_fp8 with one scale s_q per 128-block (DI == 128: one
// per head), k [S,DI] → k_fp8 with one scale per token, w_folded[t,h] = w[t,h]·s_q[t,h]. Bit-exact
// with the CPU (same amax, common.cuh scale and e4m3 conversion, IEEE division and product).
// One warp per 128-block, 4 elements per lane (16-byte loads); no shared memory. Two kernels:
// quantize_q_kernel (q blocks + the folded weight) and quantize_k_kernel (key rows).
#include "common/op_checks.h"
#include "cuda/common.cuh"
#include "dsa/cuda_ops.h"

namespace dsa::cuda {
namespace {

using detail::kWarpSize;
constexpr int kElemsPerLane = kQuantBlock / kWarpSize;  // 4
constexpr int kWarpsPerBlock = 8;
constexpr int kThreads = kWarpsPerBlock * kWarpSize;

// Quantises the 128 floats at x (one warp) into q; returns the block scale on every lane.
__device__ float quantize_block_warp(const float* __restrict__ x, uint8_t* __restrict__ q, ScaleFormat format) {
  const int lane = threadIdx.x % kWarpSize;
  const float4 v = *reinterpret_cast<const float4*>(x + lane * kElemsPerLane);
  float amax = fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w)));
  amax = detail::warp_max(amax);
  const float s = detail::fp8_block_scale(amax, format);
  uchar4 out;
  out.x = detail::fp8_e4m3_encode(__fdiv_rn(v.x, s));
  out.y = detail::fp8_e4m3_encode(__fdiv_rn(v.y, s));
  out.z = detail::fp8_e4m3_encode(__fdiv_rn(v.z, s));
  out.w = detail::fp8_e4m3_encode(__fdiv_rn(v.w, s));
  *reinterpret_cast<uchar4*>(q + lane * kElemsPerLane) = out;
  return s;
}

__global__ void quantize_q_kernel(IndexerQuantizeParams p) {
  const int64_t warp = (int64_t(blockIdx.x) * kThreads + threadIdx.x) / kWarpSize;
  if (warp >= int64_t(p.T) * p.HI) return;                      // warp = t·HI + h (DI == 128)
  const float s = quantize_block_warp(p.q + warp * kQuantBlock, p.q_fp8 + warp * kQuantBlock, p.format);
  if (threadIdx.x % kWarpSize == 0) p.w_folded[warp] = __fmul_rn(p.w[warp], s);
}

__global__ void quantize_k_kernel(IndexerQuantizeParams p) {
  const int64_t warp = (int64_t(blockIdx.x) * kThreads + threadIdx.x) / kWarpSize;
  if (warp >= p.S) return;
  const float s = quantize_block_warp(p.k + warp * kQuantBlock, p.k_fp8 + warp * kQuantBlock, p.format);
  if (threadIdx.x % kWarpSize == 0) p.k_scale[warp] = s;
}

}  // namespace

void indexer_quantize_fp8(const IndexerQuantizeParams& p, cudaStream_t stream) {
  constexpr const char* op = "indexer_quantize_fp8";
  ::dsa::detail::validate_indexer_quantize_args(p);
  const int64_t q_blocks = int64_t(p.T) * p.HI;
  if (q_blocks > 0) {
    quantize_q_kernel<<<detail::ceil_div(q_blocks, kWarpsPerBlock), kThreads, 0, stream>>>(p);
    DSA_CUDA_LAUNCH_CHECK(op);
  }
  if (p.S > 0) {
    quantize_k_kernel<<<detail::ceil_div(p.S, kWarpsPerBlock), kThreads, 0, stream>>>(p);
    DSA_CUDA_LAUNCH_CHECK(op);
  }
}

}  // namespace dsa::cuda
