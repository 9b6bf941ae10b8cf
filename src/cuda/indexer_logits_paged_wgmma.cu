// indexer_logits_paged_wgmma.cu — indexer_logits_paged variant kWgmma: the paged decode logits on
// FP8 e4m3 Hopper tensor cores (wgmma.mma_async m64n{64,128}k32, sm_90a only). Runs HI == 64 with
// q_fp8 and cache 16-byte aligned on an sm_90 device running this file's sm_90a code; asked for
// anything else it is a dsa::Error naming the reason (variants.cu decides with
// use_paged_logits_wgmma; indexer_logits_paged.cu dispatches).
//
// Contract: ops.h §11 (DeepGEMM fp8_paged_mqa_logits, 2-D context_lens, logits always cleaned):
//   row r = b·next_n + n; logical key j of request b is slot block_table[b, j/64]·64 + j%64;
//   logits[r, j] = k_scale[slot] · Σ_h w[r,h] · ReLU(q[r,h]·k[slot])   j < context_lens[r]
//   logits[r, j] = −inf                                                context_lens[r] ≤ j < max_context_len
// Device-side data rules of the kExact kernel (indexer_logits_paged.cu), so both variants write −inf
// at the same places: a length is clamped into [0, min(max_context_len, 64·max_blocks)], a page id
// outside [0, num_pages) gives −inf for its keys (its bytes are never read).
//
// Per-element arithmetic: the contiguous kWgmma kernel's (indexer_wgmma_tile.cuh): u[h, j] from e4m3
// wgmma (the tensor core's fp8 accumulation, ≈ 14 bits kept per k32 step), p_c = the fmaf chain of
// w·ReLU(u) over quad lane c's 16 heads, logit = ((p_c + p_{c^2}) + (p_{c^1} + p_{c^3})) · k_scale.
// So on the same keys the paged logits equal kWgmma indexer_logits of the gathered rows up to the
// tensor core's accumulation (the same m64n128 shape for next_n = 2: expected bitwise).
//
// Plan: one logical page (64 keys) is one wgmma M tile, next_n·64 (query row, head) pairs the N
// side (m64n128k32 for next_n = 2, m64n64k32 for next_n = 1; 4 k-steps over DI = 128). A CTA owns
// request b and a span of chunk_blocks consecutive logical pages (the host picks the span so the grid
// fills the GPU several times over; the split does not change any bit). Its two warpgroups take
// alternate pages of the span; each streams its pages through a kStages-deep cp.async ring: the
// block-table lookup gives the physical page, whose 64 × 128 B of keys (128-byte swizzled rows) and
// 64 fp32 scales are contiguous in the cache (IndexerCacheParams layout). Pages past the request's
// longest row are written as −inf without loads or MMAs.
//
// Phases, in order:
//   1. stage q (next_n·64 swizzled rows), w (permuted for 16-byte loads), the clamped lengths;
//   2. write −inf over the span's pages past the longest row (all threads, coalesced);
//   3. per warpgroup: pipelined loop over its active pages: wait stage → barrier → prefetch the page
//      kStages−1 ahead → 4 wgmmas → epilogue (w·ReLU head sums, quad reduction, · k_scale) → stores
//      (−inf where j ≥ context_lens[r] or the page id is invalid; nothing at j ≥ max_context_len).
//
// Shared-memory plan (dynamic, from a 1024-byte aligned base: the 128-byte swizzle is a function of
// address bits 4..9, so every operand tile starts on a 1024-byte boundary), next_n = 2:
//   q      128 rows × 128 B                      16384 B   (row = n·64 + head, K-major)
//   k      2 warpgroups × kStages × 64 × 128 B   65536 B   (row = key of the page, K-major)
//   kscale 2 warpgroups × kStages × 64 fp32       2048 B   (the page's scales, same cp.async group)
//   w      2 rows × 64 fp32                         512 B
//   lens   2 int                                      8 B
//   + 1024 B slack for the alignment                    → kSmemBytes ≈ 85.5 KB: two CTAs per SM.
// docs/kernels/indexer_logits_paged.md has the napkin math.
#include <algorithm>
#include <cmath>

#include "cuda/indexer_common.cuh"
#include "cuda/indexer_logits_paged_wgmma.cuh"
#include "cuda/indexer_wgmma_tile.cuh"
#include "cuda/wgmma.cuh"

namespace dsa::cuda {
namespace {

constexpr int kHeads = wgmma::kIndexerHeads;            // HI this kernel supports (64)
constexpr int kMaxRows = 2;                             // next_n ∈ {1, 2}: query rows per request
constexpr int kPageKeys = kCachePageTokens;             // wgmma M = keys per tile = one page (64)
constexpr int kRowBytes = kIndexerKeyDim;               // one e4m3 key / q row (128 B)
constexpr int kChunk = 16;                              // cp.async / swizzle unit (bytes)
constexpr int kChunksPerRow = kRowBytes / kChunk;       // 8
constexpr int kKStepBytes = 32;                         // wgmma K for e4m3
constexpr int kKSteps = kRowBytes / kKStepBytes;        // 4
constexpr int kSwizzleAtom = wgmma::kSwizzleAtomBytes;  // 8 rows × 128 B = 1024 B (SBO)
constexpr int kWarpGroups = 2;
constexpr int kWarpGroupThreads = 4 * detail::kWarpSize;
constexpr int kThreads = kWarpGroups * kWarpGroupThreads;
constexpr int kStages = 4;                              // cp.async ring depth per warpgroup
constexpr int kCtasPerSm = 2;                           // the smem plan and ≤ 128 registers allow two
// Grid: enough CTAs for ~kTargetCtasPerSm per SM (≈ 4 waves at two resident CTAs per SM), so the
// last wave's tail and requests of different lengths are a small share.
constexpr int kTargetCtasPerSm = 8;
constexpr int kSmVersion = 90;

// Cache page layout (ops.h IndexerCacheParams): 64 keys × 128 B, then 64 fp32 scales.
constexpr int64_t kPageBytes = int64_t(kPageKeys) * kIndexerRecordBytes;   // 8448
constexpr int kPageScaleOffset = kPageKeys * kIndexerKeyDim;                // 8192
constexpr int kScaleChunks = kPageKeys * int(sizeof(float)) / kChunk;       // 16

constexpr int kKTileBytes = kPageKeys * kRowBytes;                          // 8192
constexpr int kScaleTileBytes = kPageKeys * int(sizeof(float));             // 256
constexpr int kQOff = 0;
constexpr int kQBytes = kMaxRows * kHeads * kRowBytes;                      // 16384
constexpr int kKOff = kQOff + kQBytes;
constexpr int kKBytes = kWarpGroups * kStages * kKTileBytes;                // 65536
constexpr int kScaleOff = kKOff + kKBytes;
constexpr int kScaleBytes = kWarpGroups * kStages * kScaleTileBytes;        // 2048
constexpr int kWOff = kScaleOff + kScaleBytes;
constexpr int kWBytes = kMaxRows * kHeads * int(sizeof(float));             // 512
constexpr int kLenOff = kWOff + kWBytes;
constexpr int kLenBytes = kMaxRows * int(sizeof(int));
constexpr int kSmemBytes = kLenOff + kLenBytes + kSwizzleAtom;              // + alignment slack
static_assert(kQBytes % kSwizzleAtom == 0 && kKTileBytes % kSwizzleAtom == 0 && kQOff % kSwizzleAtom == 0 &&
                  kKOff % kSwizzleAtom == 0,
              "operand tiles start 1024-B aligned");
static_assert(kHeads % (kSwizzleAtom / kRowBytes) == 0, "each query's 64 rows are whole 8-row swizzle atoms");
static_assert(kScaleOff % kChunk == 0 && kWOff % kChunk == 0 && kScaleTileBytes % kChunk == 0,
              "16-byte cp.async / float4 destinations");
static_assert(kPageScaleOffset % kChunk == 0 && kPageBytes % kChunk == 0, "page scales are 16-byte chunks");
static_assert(kPageKeys == 64, "one page = one wgmma M = 64 tile");
static_assert(kKSteps * kKStepBytes == kRowBytes, "4 k-steps of 32 B cover DI = 128");
static_assert(kPageKeys * kChunksPerRow % kWarpGroupThreads == 0, "whole key-tile chunks per thread");
static_assert(kScaleChunks <= kWarpGroupThreads, "one scale chunk per thread at most");
static_assert(kCtasPerSm * kSmemBytes <= 227 * 1024, "two CTAs fit Hopper's 227 KB of shared memory per SM");
static_assert(kWarpGroups == 2, "the page interleave and named barriers assume two warpgroups");

// kQ = next_n query rows of request b; blockIdx.x = b·splits + split.
template <int kQ>
__global__ void __launch_bounds__(kThreads, kCtasPerSm)
    indexer_logits_paged_wgmma_kernel(PagedIndexerParams p, int splits, int chunk_blocks, float* __restrict__ logits) {
#if DSA_WGMMA
  using namespace ::dsa::cuda::wgmma;
  constexpr int kN = kQ * kHeads;                 // wgmma N: (row n, head) columns
  constexpr int kAccRegs = kN / 2;                // m64nN f32: N/2 accumulators per thread
  extern __shared__ uint8_t smem_raw[];
  const uint32_t raw = smem_u32(smem_raw);
  const uint32_t base = (raw + kSwizzleAtom - 1) & ~uint32_t(kSwizzleAtom - 1);
  uint8_t* sm = smem_raw + (base - raw);
  float* w_s = reinterpret_cast<float*>(sm + kWOff);    // [kQ][64] permuted (permuted_head)
  int* len_s = reinterpret_cast<int*>(sm + kLenOff);    // [kQ] clamped context lengths

  const int tid = threadIdx.x;
  const int b = blockIdx.x / splits, sp = blockIdx.x % splits;
  const int row0 = b * kQ;                              // logits / q / w row of (b, n = 0)
  const int L = p.max_context_len;
  const int total_blocks = (L + kPageKeys - 1) / kPageKeys;
  const int span_lo = sp * chunk_blocks;                // logical pages [span_lo, span_hi) of request b
  const int span_hi = min(total_blocks, span_lo + chunk_blocks);
  const int32_t* table = p.block_table + int64_t(b) * p.max_blocks;

  // ── 1. stage q (swizzled: logical chunk c of row n at c ^ (n mod 8)), w, lengths ─────────────
  // gq [kQ·64, 128] e4m3 = q_fp8 rows (b, n, h), n·64 + h; sq the same, 128B-swizzled.
  for (int i = tid; i < kN * kChunksPerRow; i += kThreads) {
    const int n = i / kChunksPerRow, c = i % kChunksPerRow;
    cp_async16(base + kQOff + n * kRowBytes + ((c ^ (n & 7)) * kChunk),
               p.q_fp8 + (int64_t(row0) * kHeads + n) * kRowBytes + c * kChunk, kChunk);
  }
  cp_async_commit();
  for (int i = tid; i < kN; i += kThreads)
    w_s[i] = __ldg(p.w + int64_t(row0 + i / kHeads) * kHeads + permuted_head(i % kHeads));
  if (tid < kQ) {
    // The kExact kernel's clamp: [0, min(max_context_len, 64·max_blocks)].
    const int64_t table_tokens = int64_t(p.max_blocks) * kPageKeys;
    int len = __ldg(p.context_lens + row0 + tid);
    len = len < 0 ? 0 : len;
    len = len > L ? L : len;
    len = int64_t(len) > table_tokens ? int(table_tokens) : len;
    len_s[tid] = len;
  }
  cp_async_wait<0>();
  fence_proxy_async();
  __syncthreads();

  int longest = 0;
#pragma unroll
  for (int n = 0; n < kQ; ++n) longest = max(longest, len_s[n]);
  // Active pages: inside the span and holding a key some row sees (j < longest).
  const int active_hi = max(span_lo, min(span_hi, (longest + kPageKeys - 1) / kPageKeys));

  // ── 2. −inf over the span's pages past the longest row ───────────────────────────────────────
  {
    const int j_lo = active_hi * kPageKeys, j_hi = min(L, span_hi * kPageKeys);
    for (int n = 0; n < kQ; ++n) {
      float* out = logits + int64_t(row0 + n) * L;
      for (int j = j_lo + tid; j < j_hi; j += kThreads) out[j] = -INFINITY;
    }
  }

  // ── 3. per warpgroup: pages span_lo + wg, span_lo + wg + 2, … below active_hi ─────────────────
  const int wg = tid / kWarpGroupThreads, wtid = tid % kWarpGroupThreads;
  const int warp = wtid / detail::kWarpSize, lane = wtid % detail::kWarpSize;
  const int first = span_lo + wg;
  const int n_my = first < active_hi ? (active_hi - first + kWarpGroups - 1) / kWarpGroups : 0;
  const uint32_t k_ring = base + kKOff + wg * kStages * kKTileBytes;
  const uint32_t scale_ring = base + kScaleOff + wg * kStages * kScaleTileBytes;
  const float* scale_s = reinterpret_cast<const float*>(sm + kScaleOff + wg * kStages * kScaleTileBytes);

  // Physical page of logical page `blk`, or −1 when the id is outside [0, num_pages) (never read).
  auto physical_page = [&](int blk) {
    const int32_t page = __ldg(table + blk);
    return page >= 0 && page < p.num_pages ? page : -1;
  };
  // One page into ring stage (j mod kStages): keys [64, 128] swizzled, then the 64 scales. An invalid
  // page is zero-filled (src-size 0), so its MMAs see finite zeros; its keys are stored as −inf.
  auto load_tile = [&](int j) {
    const int page = physical_page(first + kWarpGroups * j);
    const bool ok = page >= 0;
    const uint8_t* src = ok ? p.cache + int64_t(page) * kPageBytes : p.cache;
    const uint32_t dst = k_ring + (j % kStages) * kKTileBytes;
#pragma unroll
    for (int i = wtid; i < kPageKeys * kChunksPerRow; i += kWarpGroupThreads) {
      const int row = i / kChunksPerRow, c = i % kChunksPerRow;
      cp_async16(dst + row * kRowBytes + ((c ^ (row & 7)) * kChunk), src + (ok ? row * kRowBytes + c * kChunk : 0),
                 ok ? kChunk : 0);
    }
    if (wtid < kScaleChunks)
      cp_async16(scale_ring + (j % kStages) * kScaleTileBytes + wtid * kChunk,
                 src + (ok ? kPageScaleOffset + wtid * kChunk : 0), ok ? kChunk : 0);
  };
#pragma unroll
  for (int j = 0; j < kStages - 1; ++j) {
    if (j < n_my) load_tile(j);
    cp_async_commit();  // always: uniform group counting
  }

  // This lane's output: quad lane qc writes row n = qc / 2 (next_n = 2) or n = 0 (qc < 2, next_n = 1),
  // and key offset o = 16·warp + r + 8·(qc & 1) of each page.
  const int qc = lane & 3, r = lane >> 2;
  const int out_n = kQ == 2 ? qc >> 1 : 0;
  const bool writer = kQ == 2 || qc < 2;
  const int out_o = 16 * warp + r + 8 * (qc & 1);
  const int out_len = len_s[out_n];
  float* out_row = logits + int64_t(row0 + out_n) * L;
  const uint64_t desc_b = desc_k_major(base + kQOff);
  // This lane's weights, in registers for the whole loop (the contiguous kernel's lesson: reloading
  // them per tile leaves the epilogue's FMA chains waiting). next_n = 2 lands at ptxas's 128-register
  // cap of two CTAs per SM with a 12-byte spill (reloading them per page doubles it).
  float4 w4[kQ][4];
  load_weights<kQ>(w_s, 0, qc, w4);
  float acc[kAccRegs];
#pragma unroll
  for (int i = 0; i < kAccRegs; ++i) acc[i] = 0.0f;

  for (int j = 0; j < n_my; ++j) {
    cp_async_wait<kStages - 2>();  // this thread's chunks of page j landed
    fence_proxy_async();
    named_barrier(1 + wg, kWarpGroupThreads);  // … everyone's; page j−1's wgmma and epilogue done by all
    if (j + kStages - 1 < n_my) load_tile(j + kStages - 1);  // into page j−1's stage
    cp_async_commit();

    // acc[64 keys, kN] = sk[64, 128] · sqᵀ (4 k-steps; descriptor addresses advance 32 B = 2 units).
    const uint64_t desc_a = desc_k_major(k_ring + (j % kStages) * kKTileBytes);
    fence_operands(acc);
    wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < kKSteps; ++ks)
      wgmma_heads<kQ>(acc, desc_advance(desc_a, ks * kKStepBytes), desc_advance(desc_b, ks * kKStepBytes), ks > 0);
    wgmma_commit();
    const int blk = first + kWarpGroups * j;
    const bool page_ok = physical_page(blk) >= 0;  // issued before the wait (an L1 hit: load_tile read it)
    const float k_scale = scale_s[(j % kStages) * kPageKeys + out_o];
    wgmma_wait<0>();
    fence_operands(acc);

    // Epilogue: part{0,1}[n] = this lane's 16-head partials of rows r and r + 8 for query row n.
    float part0[kQ], part1[kQ];
    head_partials<kQ>(acc, w4, 0, part0, part1);
    // Quad reduction (p_c + p_{c^2}) + (p_{c^1} + p_{c^3}); next_n = 2: round 1 (xor 2) keeps row
    // n = qc >> 1, so lanes 0, 1 end with row 0 and lanes 2, 3 with row 1.
    float v0, v1;
    if constexpr (kQ == 2) {
      const bool up = qc & 2;
      v0 = (up ? part0[1] : part0[0]) + __shfl_xor_sync(detail::kFullMask, up ? part0[0] : part0[1], 2);
      v1 = (up ? part1[1] : part1[0]) + __shfl_xor_sync(detail::kFullMask, up ? part1[0] : part1[1], 2);
    } else {
      v0 = part0[0] + __shfl_xor_sync(detail::kFullMask, part0[0], 2);
      v1 = part1[0] + __shfl_xor_sync(detail::kFullMask, part1[0], 2);
    }
    v0 += __shfl_xor_sync(detail::kFullMask, v0, 1);
    v1 += __shfl_xor_sync(detail::kFullMask, v1, 1);
    const float v = (qc & 1) ? v1 : v0;   // row r + 8 for odd lanes, r for even

    const int key = blk * kPageKeys + out_o;  // logical key j of this lane
    if (writer && key < L) out_row[key] = (page_ok && key < out_len) ? __fmul_rn(v, k_scale) : -INFINITY;
  }
  cp_async_wait<0>();  // no copy outlives the CTA (the tail groups are empty)
#else
  __trap();  // never launched: use_paged_logits_wgmma requires this file's sm_90a code (the probe below)
#endif
}

// Writes 1 where this file was compiled with wgmma (sm_90a), else 0.
__global__ void paged_wgmma_probe_kernel(int* out) { *out = DSA_WGMMA; }

bool kernel_has_wgmma() {
  int* d = nullptr;
  int h = 0;
  if (cudaMalloc(&d, sizeof(int)) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  paged_wgmma_probe_kernel<<<1, 1>>>(d);
  const bool ok = cudaGetLastError() == cudaSuccess && cudaMemcpy(&h, d, sizeof(int), cudaMemcpyDeviceToHost) == cudaSuccess;
  cudaFree(d);
  cudaGetLastError();
  return ok && h == 1;
}

}  // namespace

namespace detail {

bool use_paged_logits_wgmma(const PagedIndexerParams& p) {
  if (p.HI != kHeads || p.next_n < 1 || p.next_n > kMaxRows) return false;
  if (reinterpret_cast<uintptr_t>(p.q_fp8) % kChunk != 0 || reinterpret_cast<uintptr_t>(p.cache) % kChunk != 0)
    return false;
  if (device_sm_version() != kSmVersion) return false;  // wgmma exists on sm_90 only
  static const bool has_wgmma = kernel_has_wgmma();    // a binary without sm_90a code runs the trap body
  return has_wgmma;
}

void indexer_logits_paged_wgmma(const PagedIndexerParams& p, float* logits, cudaStream_t stream) {
  constexpr const char* op = "indexer_logits_paged";
  const int total_blocks = ceil_div(p.max_context_len, kPageKeys);
  int dev = 0, sms = 0;
  DSA_CUDA_CALL(op, cudaGetDevice(&dev));
  DSA_CUDA_CALL(op, cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  // Split each request's pages over CTAs only as far as the grid needs (an even page count per CTA:
  // the two warpgroups alternate pages).
  int splits = std::max(1, std::min(ceil_div(total_blocks, kWarpGroups), ceil_div(int64_t(kTargetCtasPerSm) * sms, p.B)));
  int chunk_blocks = ceil_div(total_blocks, splits);
  chunk_blocks = ceil_div(chunk_blocks, kWarpGroups) * kWarpGroups;
  splits = ceil_div(total_blocks, chunk_blocks);
  auto kernel = p.next_n == 2 ? indexer_logits_paged_wgmma_kernel<2> : indexer_logits_paged_wgmma_kernel<1>;
  DSA_CUDA_CALL(op, cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes));
  kernel<<<int64_t(p.B) * splits, kThreads, kSmemBytes, stream>>>(p, splits, chunk_blocks, logits);
  DSA_CUDA_LAUNCH_CHECK(op);
}

}  // namespace detail
}  // namespace dsa::cuda
