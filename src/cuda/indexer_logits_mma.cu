// indexer_logits_mma.cu — indexer_logits variant kMma: FP8 e4m3 tensor cores (mma.sync m16n8k32,
// sm_89+). Runs kFp8 with DI == 128 and HI a multiple of 16 up to 128 on an sm_89+ device; asked for
// anything else it is a dsa::Error naming the reason (variants.cu).
//
// Contract: ops.h §3 (fp8_mqa_logits semantics, cleaned −inf outside [ks, ke)). The per-element
// arithmetic of v2 (fixed; indexer_topk v2 reuses this kernel, so fused ≡ unfused):
//   u[h, s]  = the e4m3 MMA dot over d (fp32 accumulate; k-steps of 32 dims in order 0..3, the
//              summation inside one instruction is the hardware's, deterministic)
//   per warp (16 heads h0..h0+15): lane group g holds heads h0+g and h0+g+8:
//              p = fmaf(w[h0+g+8], relu(u[h0+g+8]), w[h0+g] · relu(u[h0+g])), then a butterfly sum
//              over g (xor 4, 8, 16) → the 16-head partial of the warp;
//   logit    = ((partial_0 + partial_1) + partial_2) + … over the HI/16 head groups in order, then
//              · k_scale[s].
// Plan: a block of kWarps warps covers kQueriesPerBlock = kWarps·16/HI queries (one 16-head tile
// per warp; the warp's q fragments stay in registers) and kKeysPerBlock keys, walked in tiles of
// kKeyTile keys staged in shared memory (row pitch 144 B: the 8 rows a B-fragment load touches fall
// in distinct banks). Per tile each warp issues 8 n-tiles × 4 k-steps = 32 MMAs. Tiles outside every
// query's range are written as −inf without MMAs.
// Shared-memory plan: key tile 64 × 144 B (9216 B) + partials kWarps × 64 fp32 (2 KB) + ranges.
// The MMA tile and its per-warp epilogue live in indexer_mma_tile.cuh (shared with the paged kMma
// kernel, so paged ≡ contiguous bit for bit on the same keys).
#include <cmath>

#include "cuda/indexer_common.cuh"
#include "cuda/indexer_logits_mma.cuh"
#include "cuda/indexer_mma_tile.cuh"

namespace dsa::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * detail::kWarpSize;
constexpr int kHeadTile = mma_tile::kHeadTile;   // MMA M
constexpr int kKeyTile = mma_tile::kKeyTile;     // keys per shared-memory tile (8 MMA n-tiles)
constexpr int kKSteps = mma_tile::kKSteps;       // 4 MMA k-steps of 32 dims
constexpr int kRowPitch = mma_tile::kRowPitch;   // bytes: conflict-free B-fragment loads
constexpr int kKeysPerBlock = 1024;
constexpr int kMaxQueriesPerBlock = kWarps;    // HI = 16
constexpr int kMinSmVersion = 89;
constexpr size_t kSmemBytes = size_t(kKeyTile) * kRowPitch + size_t(kWarps) * kKeyTile * sizeof(float) +
                              2 * kMaxQueriesPerBlock * sizeof(int);
static_assert(kSmemBytes <= 48 * 1024, "static shared memory under the default 48 KB");

__global__ void __launch_bounds__(kThreads) indexer_logits_mma_kernel(IndexerParams p, int key_blocks,
                                                                      float* __restrict__ logits) {
  __shared__ __align__(16) uint8_t ktile[kKeyTile * kRowPitch];
  __shared__ float part[kWarps][kKeyTile];
  __shared__ int q_lo[kMaxQueriesPerBlock], q_hi[kMaxQueriesPerBlock];

  const int tiles_per_query = p.HI / kHeadTile;
  const int queries = kWarps / tiles_per_query;
  const int qg = blockIdx.x / key_blocks, kb = blockIdx.x % key_blocks;
  const int t0 = qg * queries;
  const int warp = threadIdx.x / detail::kWarpSize, lane = threadIdx.x % detail::kWarpSize;
  const int g = lane >> 2;
  const int qi = warp / tiles_per_query, h0 = (warp % tiles_per_query) * kHeadTile;
  const int t = t0 + qi;
  const bool valid_t = t < p.T;

  if (threadIdx.x < queries) {
    int lo = 0, hi = 0;
    if (t0 + static_cast<int>(threadIdx.x) < p.T)
      detail::clamp_range(p.ks[t0 + threadIdx.x], p.ke[t0 + threadIdx.x], p.S, lo, hi);
    q_lo[threadIdx.x] = lo;
    q_hi[threadIdx.x] = hi;
  }
  // q fragments of this warp's 16 heads, all 4 k-steps (16 registers, loaded once).
  uint32_t a[kKSteps][4];
  const auto* q8 = static_cast<const uint8_t*>(p.q);
  mma_tile::load_q_fragments(q8 + (int64_t(t) * p.HI + h0) * kIndexerKeyDim, valid_t, a);
  const float wA = valid_t ? __ldg(p.w + int64_t(t) * p.HI + h0 + g) : 0.0f;
  const float wB = valid_t ? __ldg(p.w + int64_t(t) * p.HI + h0 + g + 8) : 0.0f;
  __syncthreads();
  int u_lo = p.S, u_hi = 0;  // union of the block's query ranges
  for (int i = 0; i < queries; ++i)
    if (q_lo[i] < q_hi[i]) {
      u_lo = min(u_lo, q_lo[i]);
      u_hi = max(u_hi, q_hi[i]);
    }

  const auto* k8 = static_cast<const uint8_t*>(p.k);
  const int span_end = min(p.S, (kb + 1) * kKeysPerBlock);
  for (int base = kb * kKeysPerBlock; base < span_end; base += kKeyTile) {
    const bool active = base < u_hi && base + kKeyTile > u_lo;  // block-uniform
    if (active) {
      // Stage the key tile: 64 rows × 128 B as 16-byte loads (rows past S are zero).
      for (int i = threadIdx.x; i < kKeyTile * kIndexerKeyDim / 16; i += kThreads) {
        const int row = i / (kIndexerKeyDim / 16), col = i % (kIndexerKeyDim / 16);
        const int s = base + row;
        uint4 v = make_uint4(0, 0, 0, 0);
        if (s < p.S) v = __ldg(reinterpret_cast<const uint4*>(k8 + int64_t(s) * kIndexerKeyDim) + col);
        *reinterpret_cast<uint4*>(ktile + row * kRowPitch + col * 16) = v;
      }
      __syncthreads();
      mma_tile::tile_head_partials(a, ktile, wA, wB, part[warp]);
      __syncthreads();
    }
    // Head-group sum in order, the key scale, the range mask; coalesced stores.
    for (int i = threadIdx.x; i < queries * kKeyTile; i += kThreads) {
      const int qq = i / kKeyTile, key = i % kKeyTile;
      const int tt = t0 + qq, s = base + key;
      if (tt >= p.T || s >= p.S) continue;
      float v = -INFINITY;
      if (active && s >= q_lo[qq] && s < q_hi[qq]) {
        v = part[qq * tiles_per_query][key];
        for (int m = 1; m < tiles_per_query; ++m) v = __fadd_rn(v, part[qq * tiles_per_query + m][key]);
        v = __fmul_rn(v, __ldg(p.k_scale + s));
      }
      logits[int64_t(tt) * p.S + s] = v;
    }
    __syncthreads();
  }
}

}  // namespace

namespace detail {

bool use_logits_mma(const IndexerParams& p) {
  if (p.precision != Precision::kFp8 || p.DI != kIndexerKeyDim) return false;
  if (p.HI % kHeadTile != 0 || p.HI > kWarps * kHeadTile) return false;
  // Both the device AND the code that will run must be sm_89+: a binary built only for sm_80 runs
  // (JIT-compiled from compute_80 PTX) on a Hopper card, and there the kernel body is the trap.
  static const bool kernel_has_mma = [] {
    cudaFuncAttributes attr{};
    return cudaFuncGetAttributes(&attr, indexer_logits_mma_kernel) == cudaSuccess && attr.ptxVersion >= kMinSmVersion &&
           attr.binaryVersion >= kMinSmVersion;
  }();
  return kernel_has_mma && device_sm_version() >= kMinSmVersion;
}

void indexer_logits_mma(const IndexerParams& p, float* logits, cudaStream_t stream) {
  const int key_blocks = ceil_div(p.S, kKeysPerBlock);
  const int queries = kWarps / (p.HI / kHeadTile);
  const int64_t blocks = int64_t(key_blocks) * ceil_div(p.T, queries);
  if (blocks == 0) return;
  indexer_logits_mma_kernel<<<blocks, kThreads, 0, stream>>>(p, key_blocks, logits);
  DSA_CUDA_LAUNCH_CHECK("indexer_logits");
}

}  // namespace detail
}  // namespace dsa::cuda
