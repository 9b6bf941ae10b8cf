// indexer_logits_paged_mma.cu — indexer_logits_paged variant kMma: the paged decode logits on FP8
// e4m3 tensor cores through mma.sync m16n8k32 (sm_89+). Runs HI a multiple of 16 with next_n·HI ≤ 128
// and q_fp8 / cache 16-byte aligned on an sm_89+ device running this file's sm_89+ code; asked for
// anything else it is a dsa::Error naming the reason (variants.cu decides with use_paged_logits_mma;
// indexer_logits_paged.cu dispatches). The tensor-core path of Ada and the second tensor-core oracle of
// the kWgmma variant on Hopper.
//
// Contract: ops.h §11, with the device-side data rules of the kExact kernel (indexer_logits_paged.cu):
// a length is clamped into [0, min(max_context_len, 64·max_blocks)], a page id outside [0, num_pages)
// gives −inf for its 64 keys (its bytes are never read); −inf for context_lens[r] ≤ j < max_context_len.
//
// Per-element arithmetic: indexer_logits kMma's (indexer_mma_tile.cuh): u from the e4m3 MMA, the
// per-warp 16-head partial (fmaf pair + butterfly), the head groups summed in order, then · k_scale.
// The operands and the order are those of kMma indexer_logits on the gathered keys, so the two agree
// bit for bit (tests/cuda/indexer_paged_wgmma_test.cu checks it).
//
// Plan: a CTA = request b × a span of chunk_blocks logical pages; warp w holds the q fragments of row
// n = w / (HI/16), heads 16·(w mod HI/16) … (next_n·HI/16 ≤ 8 warps; the other warps run on zero
// fragments and their partials are never read). Per page: block-table lookup → the page's 64 keys
// (8 KB) staged in shared memory with a 144-byte row pitch and its 64 scales → 32 MMAs per warp →
// partials → the head-group sums and the masks, stored coalesced. Pages past the request's longest row
// are written −inf without loads. No cp.async pipeline: several CTAs per SM (11.5 KB of shared memory
// each) keep pages in flight.
//
// Phases, in order:
//   1. q fragments and weights of this warp into registers, the clamped lengths into shared memory;
//   2. −inf over the span's pages past the longest row;
//   3. per active page: stage keys + scales → barrier → MMAs + warp partials → barrier → sums, masks,
//      stores → barrier.
// Shared-memory plan: key tile 64 × 144 B (9216 B) + partials 8 warps × 64 fp32 (2048 B) + scales 64
// fp32 (256 B) + lengths 2 int = 11528 B (static; static_assert below). ptxas: 80 registers on sm_89,
// 128 on sm_90a, with a 12- / 4-byte spill.
#include <algorithm>
#include <cmath>

#include "cuda/indexer_common.cuh"
#include "cuda/indexer_logits_paged_mma.cuh"
#include "cuda/indexer_mma_tile.cuh"

namespace dsa::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * detail::kWarpSize;
constexpr int kHeadTile = mma_tile::kHeadTile;          // 16 heads per warp (MMA M)
constexpr int kPageKeys = kCachePageTokens;             // one page = one 64-key tile
constexpr int kRowPitch = mma_tile::kRowPitch;          // 144 B
constexpr int kMaxRows = 2;                             // next_n ∈ {1, 2}
constexpr int kMaxPairs = kWarps * kHeadTile;           // next_n·HI ≤ 128 (row, head) pairs
constexpr int kChunk = 16;                              // uint4 loads
constexpr int kChunksPerRow = kIndexerKeyDim / kChunk;  // 8
constexpr int64_t kPageBytes = int64_t(kPageKeys) * kIndexerRecordBytes;   // 8448
constexpr int kPageScaleOffset = kPageKeys * kIndexerKeyDim;                // 8192
constexpr int kMinSmVersion = 89;
// Grid: ~16 CTAs per SM of work (2–3 resident at a time by registers, each with one page in flight).
constexpr int kTargetCtasPerSm = 16;
constexpr size_t kSmemBytes = size_t(kPageKeys) * kRowPitch + size_t(kWarps) * kPageKeys * sizeof(float) +
                              kPageKeys * sizeof(float) + kMaxRows * sizeof(int);
static_assert(kSmemBytes <= 48 * 1024, "static shared memory under the default 48 KB");
static_assert(kPageKeys == mma_tile::kKeyTile, "one page = one mma key tile");
static_assert(kPageKeys * kChunksPerRow % kThreads == 0, "whole uint4 loads per thread");
static_assert(kPageKeys <= kThreads, "one scale per thread");

__global__ void __launch_bounds__(kThreads)
    indexer_logits_paged_mma_kernel(PagedIndexerParams p, int splits, int chunk_blocks, float* __restrict__ logits) {
  __shared__ __align__(16) uint8_t ktile[kPageKeys * kRowPitch];   // [64 keys, 128 B] at a 144-B pitch
  __shared__ float part[kWarps][kPageKeys];                        // warp's 16-head partial per key
  __shared__ float scale_s[kPageKeys];                             // the page's k_scale
  __shared__ int len_s[kMaxRows];                                  // clamped context lengths

  const int tid = threadIdx.x;
  const int b = blockIdx.x / splits, sp = blockIdx.x % splits;
  const int next_n = p.next_n, row0 = b * next_n;
  const int L = p.max_context_len;
  const int total_blocks = (L + kPageKeys - 1) / kPageKeys;
  const int span_lo = sp * chunk_blocks, span_hi = min(total_blocks, span_lo + chunk_blocks);
  const int32_t* table = p.block_table + int64_t(b) * p.max_blocks;
  const int tiles_per_row = p.HI / kHeadTile;

  // ── 1. this warp's q fragments and weights (row n, heads h0 … h0+15), lengths ──────────────────
  const int warp = tid / detail::kWarpSize, lane = tid % detail::kWarpSize, g = lane >> 2;
  const int n = warp / tiles_per_row, h0 = (warp % tiles_per_row) * kHeadTile;
  const bool valid = n < next_n;
  const int64_t qw_row = int64_t(row0 + (valid ? n : 0)) * p.HI + h0;   // row of (r, h0) in q / w
  uint32_t a[mma_tile::kKSteps][4];
  mma_tile::load_q_fragments(p.q_fp8 + qw_row * kIndexerKeyDim, valid, a);
  const float wA = valid ? __ldg(p.w + qw_row + g) : 0.0f;
  const float wB = valid ? __ldg(p.w + qw_row + g + 8) : 0.0f;
  if (tid < next_n) {
    // The kExact kernel's clamp: [0, min(max_context_len, 64·max_blocks)].
    const int64_t table_tokens = int64_t(p.max_blocks) * kPageKeys;
    int len = __ldg(p.context_lens + row0 + tid);
    len = len < 0 ? 0 : len;
    len = len > L ? L : len;
    len = int64_t(len) > table_tokens ? int(table_tokens) : len;
    len_s[tid] = len;
  }
  __syncthreads();
  int longest = 0;
  for (int i = 0; i < next_n; ++i) longest = max(longest, len_s[i]);
  const int active_hi = max(span_lo, min(span_hi, (longest + kPageKeys - 1) / kPageKeys));

  // ── 2. −inf over the span's pages past the longest row ───────────────────────────────────────
  {
    const int j_lo = active_hi * kPageKeys, j_hi = min(L, span_hi * kPageKeys);
    for (int i = 0; i < next_n; ++i) {
      float* out = logits + int64_t(row0 + i) * L;
      for (int j = j_lo + tid; j < j_hi; j += kThreads) out[j] = -INFINITY;
    }
  }

  // ── 3. active pages ──────────────────────────────────────────────────────────────────────────
  for (int blk = span_lo; blk < active_hi; ++blk) {
    const int32_t page = __ldg(table + blk);
    const bool ok = page >= 0 && page < p.num_pages;   // block-uniform
    if (ok) {
      // sk [64, 128] e4m3 ← the page's keys (8 KB contiguous), 16-byte loads; scales [64] fp32.
      const uint8_t* src = p.cache + int64_t(page) * kPageBytes;
#pragma unroll
      for (int i = tid; i < kPageKeys * kChunksPerRow; i += kThreads) {
        const int row = i / kChunksPerRow, col = i % kChunksPerRow;
        *reinterpret_cast<uint4*>(ktile + row * kRowPitch + col * kChunk) =
            __ldg(reinterpret_cast<const uint4*>(src + row * kIndexerKeyDim) + col);
      }
      if (tid < kPageKeys) scale_s[tid] = __ldg(reinterpret_cast<const float*>(src + kPageScaleOffset) + tid);
    }
    __syncthreads();
    // part[w][key] = Σ over warp w's 16 heads of w·ReLU(q·k) (32 MMAs + the butterfly).
    if (ok) mma_tile::tile_head_partials(a, ktile, wA, wB, part[warp]);
    __syncthreads();
    // logit = ((part_0 + part_1) + …) over the row's head groups in order, · k_scale; the masks.
    for (int i = tid; i < next_n * kPageKeys; i += kThreads) {
      const int rn = i / kPageKeys, key = i % kPageKeys;
      const int j = blk * kPageKeys + key;
      if (j >= L) continue;
      float v = -INFINITY;
      if (ok && j < len_s[rn]) {
        v = part[rn * tiles_per_row][key];
        for (int m = 1; m < tiles_per_row; ++m) v = __fadd_rn(v, part[rn * tiles_per_row + m][key]);
        v = __fmul_rn(v, scale_s[key]);
      }
      logits[int64_t(row0 + rn) * L + j] = v;
    }
    __syncthreads();  // the next page overwrites ktile, part and scale_s
  }
}

}  // namespace

namespace detail {

bool use_paged_logits_mma(const PagedIndexerParams& p) {
  if (p.HI < kHeadTile || p.HI % kHeadTile != 0 || p.next_n < 1 || p.next_n > kMaxRows ||
      int64_t(p.next_n) * p.HI > kMaxPairs)
    return false;
  if (reinterpret_cast<uintptr_t>(p.q_fp8) % kChunk != 0 || reinterpret_cast<uintptr_t>(p.cache) % kChunk != 0)
    return false;
  // Both the device AND the code that will run must be sm_89+: a binary built only for sm_80 runs
  // (JIT-compiled from compute_80 PTX) on a newer card, and there the MMA is the trap.
  static const bool kernel_has_mma = [] {
    cudaFuncAttributes attr{};
    return cudaFuncGetAttributes(&attr, indexer_logits_paged_mma_kernel) == cudaSuccess &&
           attr.ptxVersion >= kMinSmVersion && attr.binaryVersion >= kMinSmVersion;
  }();
  return kernel_has_mma && device_sm_version() >= kMinSmVersion;
}

void indexer_logits_paged_mma(const PagedIndexerParams& p, float* logits, cudaStream_t stream) {
  constexpr const char* op = "indexer_logits_paged";
  const int total_blocks = ceil_div(p.max_context_len, kPageKeys);
  int dev = 0, sms = 0;
  DSA_CUDA_CALL(op, cudaGetDevice(&dev));
  DSA_CUDA_CALL(op, cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  // Split each request's pages over CTAs only as far as the grid needs; the split changes no bit.
  int splits = std::max(1, std::min(total_blocks, ceil_div(int64_t(kTargetCtasPerSm) * sms, p.B)));
  const int chunk_blocks = ceil_div(total_blocks, splits);
  splits = ceil_div(total_blocks, chunk_blocks);
  indexer_logits_paged_mma_kernel<<<int64_t(p.B) * splits, kThreads, 0, stream>>>(p, splits, chunk_blocks, logits);
  DSA_CUDA_LAUNCH_CHECK(op);
}

}  // namespace detail
}  // namespace dsa::cuda
