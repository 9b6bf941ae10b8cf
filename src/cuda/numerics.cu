// numerics.cu — op family 1 on the GPU: FP8 block (de)quantisation and the two cache records.
//
// Contract: ops.h §1 bit for bit (dsa::cpu is the reference): the same amax (NaN never wins a max),
// the same scale (common.cuh fp8_block_scale), q = e4m3(x / s) with an IEEE division, the software
// e4m3/bf16 conversions of common.cuh. Everything is element-wise per 128-block, so the kernels are
// memory-bound: one warp per 128-element block, 4 consecutive elements per lane (16-byte loads).
//
// Kernels (one host dispatch point each):
//   block_quantize_kernel     x [rows, 128·blocks] → q, scales        (fp8_block_quantize, packs)
//   block_dequantize_kernel   q, scales → x                            (fp8_block_dequantize)
// The two record formats reuse these kernels through a "where does block b of row n live" functor.
// No shared memory: warp shuffles do the amax.
#include "common/op_checks.h"
#include "cuda/common.cuh"
#include "dsa/cuda_ops.h"

namespace dsa::cuda {
namespace {

using detail::kWarpSize;
constexpr int kElemsPerLane = kQuantBlock / kWarpSize;  // 4
static_assert(kElemsPerLane == 4, "one float4 per lane per 128-block");
constexpr int kWarpsPerBlock = 8;                       // 256 threads
constexpr int kThreads = kWarpsPerBlock * kWarpSize;

constexpr int kMlaBlocks = kMlaLatentDim / kQuantBlock;                          // 4
constexpr int kMlaScaleOffset = kMlaLatentDim;                                   // 512
constexpr int kMlaRopeOffset = kMlaScaleOffset + kMlaBlocks * int(sizeof(float)); // 528
constexpr int kMlaRowDim = kMlaLatentDim + kMlaRopeDim;                          // 576
static_assert(kMlaRopeOffset + 2 * kMlaRopeDim == kMlaRecordBytes, "656-byte MLA record");

// Where block b of row n lives, for the three layouts.
struct PlainLayout {       // x [N, C]; q [N, C]; scales [N, C/128]
  int blocks;
  __device__ int64_t x_off(int64_t n, int b) const { return (n * blocks + b) * kQuantBlock; }
  __device__ int64_t q_off(int64_t n, int b) const { return (n * blocks + b) * kQuantBlock; }
  __device__ int64_t s_off(int64_t n, int b) const { return (n * blocks + b) * int64_t(sizeof(float)); }
};
struct MlaLayout {         // kv [N, 576]; record n at n·656
  int blocks = kMlaBlocks;
  __device__ int64_t x_off(int64_t n, int b) const { return n * kMlaRowDim + b * kQuantBlock; }
  __device__ int64_t q_off(int64_t n, int b) const { return n * kMlaRecordBytes + b * kQuantBlock; }
  __device__ int64_t s_off(int64_t n, int b) const { return n * kMlaRecordBytes + kMlaScaleOffset + b * 4; }
};
struct IndexerLayout {     // k [N, 128]; paged 132-byte slots
  int blocks = 1;
  __device__ int64_t x_off(int64_t n, int) const { return n * kIndexerKeyDim; }
  __device__ int64_t q_off(int64_t n, int) const {
    return (n / kCachePageTokens) * kIndexerPageBytes + (n % kCachePageTokens) * kIndexerKeyDim;
  }
  __device__ int64_t s_off(int64_t n, int) const {
    return (n / kCachePageTokens) * kIndexerPageBytes + kIndexerPageScaleOffset + (n % kCachePageTokens) * 4;
  }
};

// One warp per (row, block). scale_bytes is the byte base of the scales (a float array for plain,
// the record bytes otherwise); scales are stored with a 4-byte aligned float store.
template <typename Layout>
__global__ void block_quantize_kernel(int64_t N, Layout L, ScaleFormat format, const float* __restrict__ x,
                                      uint8_t* __restrict__ q, uint8_t* __restrict__ scale_bytes) {
  const int64_t warp = (int64_t(blockIdx.x) * kThreads + threadIdx.x) / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  if (warp >= N * L.blocks) return;
  const int64_t n = warp / L.blocks;
  const int b = static_cast<int>(warp % L.blocks);
  const float4 v = *reinterpret_cast<const float4*>(x + L.x_off(n, b) + lane * kElemsPerLane);
  float amax = fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w)));  // fmaxf drops NaN
  amax = detail::warp_max(amax);
  const float s = detail::fp8_block_scale(amax, format);
  uchar4 out;
  out.x = detail::fp8_e4m3_encode(__fdiv_rn(v.x, s));
  out.y = detail::fp8_e4m3_encode(__fdiv_rn(v.y, s));
  out.z = detail::fp8_e4m3_encode(__fdiv_rn(v.z, s));
  out.w = detail::fp8_e4m3_encode(__fdiv_rn(v.w, s));
  *reinterpret_cast<uchar4*>(q + L.q_off(n, b) + lane * kElemsPerLane) = out;
  if (lane == 0) *reinterpret_cast<float*>(scale_bytes + L.s_off(n, b)) = s;
}

template <typename Layout>
__global__ void block_dequantize_kernel(int64_t N, Layout L, const uint8_t* __restrict__ q,
                                        const uint8_t* __restrict__ scale_bytes, float* __restrict__ x) {
  const int64_t warp = (int64_t(blockIdx.x) * kThreads + threadIdx.x) / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  if (warp >= N * L.blocks) return;
  const int64_t n = warp / L.blocks;
  const int b = static_cast<int>(warp % L.blocks);
  const float s = *reinterpret_cast<const float*>(scale_bytes + L.s_off(n, b));
  const uchar4 c = *reinterpret_cast<const uchar4*>(q + L.q_off(n, b) + lane * kElemsPerLane);
  float4 v;
  v.x = __fmul_rn(detail::fp8_e4m3_decode(c.x), s);
  v.y = __fmul_rn(detail::fp8_e4m3_decode(c.y), s);
  v.z = __fmul_rn(detail::fp8_e4m3_decode(c.z), s);
  v.w = __fmul_rn(detail::fp8_e4m3_decode(c.w), s);
  *reinterpret_cast<float4*>(x + L.x_off(n, b) + lane * kElemsPerLane) = v;
}

// MLA RoPE tail: 64 floats ↔ 64 bf16, one thread per element.
__global__ void mla_rope_pack_kernel(int64_t N, const float* __restrict__ kv, uint8_t* __restrict__ rec) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= N * kMlaRopeDim) return;
  const int64_t n = i / kMlaRopeDim;
  const int d = static_cast<int>(i % kMlaRopeDim);
  reinterpret_cast<uint16_t*>(rec + n * kMlaRecordBytes + kMlaRopeOffset)[d] =
      detail::bf16_encode(kv[n * kMlaRowDim + kMlaLatentDim + d]);
}
__global__ void mla_rope_unpack_kernel(int64_t N, const uint8_t* __restrict__ rec, float* __restrict__ kv) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= N * kMlaRopeDim) return;
  const int64_t n = i / kMlaRopeDim;
  const int d = static_cast<int>(i % kMlaRopeDim);
  kv[n * kMlaRowDim + kMlaLatentDim + d] =
      detail::bf16_decode(reinterpret_cast<const uint16_t*>(rec + n * kMlaRecordBytes + kMlaRopeOffset)[d]);
}

// Zeroes the unused slots [N, padded) of the last indexer page (fp8 bytes and scale).
__global__ void indexer_tail_zero_kernel(int64_t N, int64_t padded, uint8_t* __restrict__ cache) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;   // one byte of fp8 per thread
  const int64_t slots = padded - N;
  if (i >= slots * (kIndexerKeyDim + 4)) return;
  const IndexerLayout L;
  const int64_t slot = N + i / (kIndexerKeyDim + 4);
  const int within = static_cast<int>(i % (kIndexerKeyDim + 4));
  if (within < kIndexerKeyDim) cache[L.q_off(slot, 0) + within] = 0;
  else cache[L.s_off(slot, 0) + (within - kIndexerKeyDim)] = 0;
}

// Indexer unpack extras: raw fp8 bytes and scales (one thread per byte / scale).
__global__ void indexer_extract_kernel(int64_t N, const uint8_t* __restrict__ cache, uint8_t* __restrict__ k_fp8,
                                       float* __restrict__ k_scale) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= N * kIndexerKeyDim) return;
  const IndexerLayout L;
  const int64_t n = i / kIndexerKeyDim;
  const int d = static_cast<int>(i % kIndexerKeyDim);
  if (k_fp8) k_fp8[i] = cache[L.q_off(n, 0) + d];
  if (k_scale && d == 0) k_scale[n] = *reinterpret_cast<const float*>(cache + L.s_off(n, 0));
}

constexpr int kElementwiseThreads = 256;

template <typename Layout>
void launch_quantize(const char* op, int64_t N, Layout L, ScaleFormat f, const float* x, uint8_t* q, uint8_t* s,
                     cudaStream_t st) {
  const int64_t warps = N * L.blocks;
  if (warps == 0) return;
  block_quantize_kernel<<<detail::ceil_div(warps, kWarpsPerBlock), kThreads, 0, st>>>(N, L, f, x, q, s);
  DSA_CUDA_LAUNCH_CHECK(op);
}
template <typename Layout>
void launch_dequantize(const char* op, int64_t N, Layout L, const uint8_t* q, const uint8_t* s, float* x,
                       cudaStream_t st) {
  const int64_t warps = N * L.blocks;
  if (warps == 0) return;
  block_dequantize_kernel<<<detail::ceil_div(warps, kWarpsPerBlock), kThreads, 0, st>>>(N, L, q, s, x);
  DSA_CUDA_LAUNCH_CHECK(op);
}

}  // namespace

void fp8_block_quantize(const Fp8BlockQuantizeParams& p, cudaStream_t stream) {
  constexpr const char* op = "fp8_block_quantize";
  ::dsa::detail::validate_fp8_block_args(p.N, p.C, p.x, p.q, p.scales, op);
  launch_quantize(op, p.N, PlainLayout{p.C / kQuantBlock}, p.format, p.x, p.q, reinterpret_cast<uint8_t*>(p.scales),
                  stream);
}

void fp8_block_dequantize(const Fp8BlockDequantizeParams& p, cudaStream_t stream) {
  constexpr const char* op = "fp8_block_dequantize";
  ::dsa::detail::validate_fp8_block_args(p.N, p.C, p.x, p.q, p.scales, op);
  launch_dequantize(op, p.N, PlainLayout{p.C / kQuantBlock}, p.q, reinterpret_cast<const uint8_t*>(p.scales), p.x,
                    stream);
}

void mla_cache_pack(const MlaCacheParams& p, cudaStream_t stream) {
  constexpr const char* op = "mla_cache_pack";
  ::dsa::detail::require_non_negative(p.N, op, "N");
  ::dsa::detail::require_ptr(p.kv, op, "kv");
  ::dsa::detail::require_ptr(p.records, op, "records");
  if (p.N == 0) return;
  launch_quantize(op, p.N, MlaLayout{}, p.format, p.kv, p.records, p.records, stream);
  mla_rope_pack_kernel<<<detail::ceil_div(p.N * kMlaRopeDim, kElementwiseThreads), kElementwiseThreads, 0, stream>>>(
      p.N, p.kv, p.records);
  DSA_CUDA_LAUNCH_CHECK(op);
}

void mla_cache_unpack(const MlaCacheParams& p, cudaStream_t stream) {
  constexpr const char* op = "mla_cache_unpack";
  ::dsa::detail::require_non_negative(p.N, op, "N");
  ::dsa::detail::require_ptr(p.kv, op, "kv");
  ::dsa::detail::require_ptr(p.records, op, "records");
  if (p.N == 0) return;
  launch_dequantize(op, p.N, MlaLayout{}, p.records, p.records, p.kv, stream);
  mla_rope_unpack_kernel<<<detail::ceil_div(p.N * kMlaRopeDim, kElementwiseThreads), kElementwiseThreads, 0,
                           stream>>>(p.N, p.records, p.kv);
  DSA_CUDA_LAUNCH_CHECK(op);
}

void indexer_cache_pack(const IndexerCacheParams& p, cudaStream_t stream) {
  constexpr const char* op = "indexer_cache_pack";
  ::dsa::detail::require_non_negative(p.N, op, "N");
  ::dsa::detail::require_ptr(p.k, op, "k");
  ::dsa::detail::require_ptr(p.cache, op, "cache");
  if (p.N == 0) return;
  launch_quantize(op, p.N, IndexerLayout{}, p.format, p.k, p.cache, p.cache, stream);
  const int64_t padded = (p.N + kCachePageTokens - 1) / kCachePageTokens * kCachePageTokens;
  const int64_t tail_bytes = (padded - p.N) * (kIndexerKeyDim + 4);
  if (tail_bytes > 0) {
    indexer_tail_zero_kernel<<<detail::ceil_div(tail_bytes, kElementwiseThreads), kElementwiseThreads, 0, stream>>>(
        p.N, padded, p.cache);
    DSA_CUDA_LAUNCH_CHECK(op);
  }
}

void indexer_cache_unpack(const IndexerCacheParams& p, cudaStream_t stream) {
  constexpr const char* op = "indexer_cache_unpack";
  ::dsa::detail::require_non_negative(p.N, op, "N");
  ::dsa::detail::require_ptr(p.k, op, "k");
  ::dsa::detail::require_ptr(p.cache, op, "cache");
  if (p.N == 0) return;
  launch_dequantize(op, p.N, IndexerLayout{}, p.cache, p.cache, p.k, stream);
  if (p.k_fp8 || p.k_scale) {
    indexer_extract_kernel<<<detail::ceil_div(p.N * kIndexerKeyDim, kElementwiseThreads), kElementwiseThreads, 0,
                             stream>>>(p.N, p.cache, p.k_fp8, p.k_scale);
    DSA_CUDA_LAUNCH_CHECK(op);
  }
}

}  // namespace dsa::cuda
