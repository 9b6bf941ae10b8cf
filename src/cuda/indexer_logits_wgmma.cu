// indexer_logits_wgmma.cu — indexer_logits variant kWgmma: FP8 e4m3 Hopper tensor cores
// (wgmma.mma_async m64n256k32, sm_90a only). Runs kFp8 with HI == 64, DI == 128 on an sm_90 device
// running this file's sm_90a code; asked for anything else it is a dsa::Error naming the reason
// (variants.cu decides with use_logits_wgmma; indexer_logits.cu dispatches).
//
// Contract: ops.h §3 (DeepGEMM fp8_mqa_logits, cleaned logits):
//   logits[t,s] = k_scale[s] · Σ_h w[t,h] · ReLU(q[t,h]·k[s])   for s in [ks[t], ke[t])
//   logits[t,s] = −inf                                           elsewhere in [0, S)
// Per-element arithmetic of v3 (fixed; equal to v2 up to summation order and the MMA's
// accumulation):
//   u[h, s]  = the e4m3 wgmma dot over d (fp32 accumulate; k-steps of 32 dims in order 0..3; the
//              accumulation inside the tensor core is the hardware's, deterministic);
//   per query, quad lane c (0..3) of an accumulator row holds heads h = 8·j + 2·c + e (j = 0..7,
//              e = 0..1): p_c = fmaf chain over (j, e) in order of w[t,h] · ReLU(u[h, s]) from 0
//              (ReLU = max.NaN: NaN propagates, −0 → +0);
//   logit    = (p_c + p_{c^2}) + (p_{c^1} + p_{c^3}) (a two-round shuffle transpose; fp32 addition
//              commutes, so every lane order gives the same bits), then · k_scale[s].
//
// Plan (DeepGEMM's structure): a CTA owns kQueries = 4 consecutive queries (their q rows, 4 × 64
// heads × 128 B = the wgmma B operand, N = 256, kept in shared memory) and a span of keys (all of
// [0, S) unless T is small, then the keys are split over CTAs so the grid fills the GPU). Its two
// warpgroups take alternate 64-key tiles (the wgmma A operand, M = 64) of the span: per tile, the
// wgmmas (4 k-steps of m64n256k32, or of m64n128k32 per query pair in the default configuration,
// see the configurations above the kernel) give the 64 keys × 256 (query, head) scores in 128 fp32
// registers per thread; the epilogue reduces over heads in registers plus two shuffle rounds. Tiles
// stream through a per-warpgroup ring of kStages cp.async stages (no producer warp). Only tiles
// inside the hull of the 4 queries' ranges are computed; the rest of the span is written as −inf
// without loads or MMAs.
//
// Measured (H200, 2026-11-28, dsa_bench_gpu logits_full, T = 4096 × S = 131072, HI 64, DI 128):
// 834–884 TFLOP/s full ranges, 840–874 causal (v2: 174), after k_scale was staged with each key tile
// and the weights kept in registers (610 before: docs/kernels/indexer_logits.md). ncu: the epilogue
// now waits mostly for the MMAs; the next levers are a TMA producer warp + setmaxnreg so a third
// consumer warpgroup fits, and 2-CTA clusters sharing q by multicast.
//
// Phases, in order:
//   1. stage q (128B-swizzled rows), w (permuted for 16-byte loads) and the 4 clamped ranges;
//   2. write −inf over the span outside the hull tiles (all threads, coalesced);
//   3. per warpgroup: pipelined loop over its hull tiles: wait stage → barrier → prefetch (keys + k_scale of) the tile
//      kStages−1 ahead → 4 wgmmas → epilogue → stores (−inf outside each query's range).
//
// Shared-memory plan (dynamic, from a 1024-byte aligned base; the 128-byte swizzle pattern is a
// function of address bits 4..9, so every operand tile starts on a 1024-byte boundary):
//   q      256 rows × 128 B                      32768 B   (row n = query·64 + head, K-major)
//   k      2 warpgroups × kStages × 64 × 128 B   65536 B   (row = key, K-major)
//   w      4 queries × 64 fp32                    1024 B
//   kscale 2 warpgroups × kStages × 64 fp32        2048 B   (k_scale of the staged key tiles)
//   ranges 4 lo + 4 hi                              32 B
//   + 1024 B slack for the alignment                    → kSmemBytes (static_assert below).
// Requirements checked on the host (else the variant cannot run): q and k 16-byte aligned (cp.async).
//
// Summation-order note: Hopper's fp8 tensor-core accumulation is narrower than fp32 (DeepSeek-V3
// report §3.3.2: about 14 bits kept per addition), so v3 differs from v2 by more than reordering
// alone; the test table's indexer_logits__cuda_wgmma row bounds it against the fp64 reference.
#include <algorithm>
#include <cmath>

#include "cuda/indexer_common.cuh"
#include "cuda/indexer_logits_wgmma.cuh"
#include "cuda/indexer_wgmma_tile.cuh"
#include "cuda/wgmma.cuh"


namespace dsa::cuda {
namespace {

constexpr int kHeads = 64;                              // HI this kernel supports
constexpr int kQueries = 4;                             // queries per CTA
constexpr int kN = kQueries * kHeads;                   // wgmma N = 256 (query, head) columns
constexpr int kKeyTile = 64;                            // wgmma M = keys per tile
constexpr int kRowBytes = kIndexerKeyDim;               // one e4m3 row of DI = 128
constexpr int kChunk = 16;                              // cp.async / swizzle unit (bytes)
constexpr int kChunksPerRow = kRowBytes / kChunk;       // 8
constexpr int kKStepBytes = 32;                         // wgmma K for e4m3
[[maybe_unused]] constexpr int kKSteps = kRowBytes / kKStepBytes;        // 4
constexpr int kSwizzleAtom = 8 * kRowBytes;             // 8 rows × 128 B = 1024 B (SBO)
constexpr int kWarpGroups = 2;
constexpr int kWarpGroupThreads = 4 * detail::kWarpSize;
constexpr int kThreads = kWarpGroups * kWarpGroupThreads;
constexpr int kStages = 4;                              // cp.async ring depth per warpgroup
[[maybe_unused]] constexpr int kAccRegs = kKeyTile * kN / kWarpGroupThreads;  // 128 fp32 per thread
// Key split when T is small: enough CTAs for ~8 waves (one CTA fits an SM at a time: 234 registers ×
// 256 threads), so the last wave's tail is a small share. H200, 2026-11-28, T = 64 × S = 131072:
// 586 / 761 / 723 / 654 TFLOP/s with 2 / 4 / 8 / 16; the L = 128K layer (256-row fused chunks):
// indexer + top-k 241.2 / 219.4 / 221.8 ms with 2 / 8 / 16. Same logits bits for every split.
constexpr int kTargetCtasPerSm = 8;
constexpr int kSmVersion = 90;

constexpr int kQOff = 0;
constexpr int kQBytes = kN * kRowBytes;
constexpr int kKTileBytes = kKeyTile * kRowBytes;
constexpr int kKOff = kQOff + kQBytes;
constexpr int kKBytes = kWarpGroups * kStages * kKTileBytes;
constexpr int kWOff = kKOff + kKBytes;
constexpr int kWBytes = kN * int(sizeof(float));
constexpr int kScaleOff = kWOff + kWBytes;              // k_scale of every staged key tile
constexpr int kScaleTileBytes = kKeyTile * int(sizeof(float));
constexpr int kScaleBytes = kWarpGroups * kStages * kScaleTileBytes;
constexpr int kRangeOff = kScaleOff + kScaleBytes;
constexpr int kRangeBytes = 2 * kQueries * int(sizeof(int));
constexpr int kSmemBytes = kRangeOff + kRangeBytes + kSwizzleAtom;  // + alignment slack
static_assert(kQBytes % kSwizzleAtom == 0 && kKTileBytes % kSwizzleAtom == 0, "operand tiles stay 1024-B aligned");
static_assert(kN <= 256 && kN % 8 == 0 && kKeyTile == 64, "wgmma m64nNk32 shape");
static_assert(kSmemBytes <= 227 * 1024, "fits Hopper's 227 KB opt-in shared memory");
static_assert(kRowBytes == 128, "one 128-byte swizzle row per key / (query, head)");
static_assert(kKSteps * kKStepBytes == kRowBytes && kAccRegs == 128, "4 k-steps; 128 accumulators per thread");
static_assert(kKeyTile * kChunksPerRow % kWarpGroupThreads == 0, "whole k-tile chunks per thread");

#if DSA_WGMMA
using namespace ::dsa::cuda::wgmma;
// D (64 × N fp32, N/2 registers per thread) = / += A (64 × 32 e4m3, K-major smem) · B (N × 32 e4m3).
__device__ __forceinline__ void wgmma_m64n256k32(float (&d)[128], uint64_t desc_a, uint64_t desc_b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n256k32.f32.e4m3.e4m3 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15,"
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31,"
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47,"
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63,"
      "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79,"
      "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95,"
      "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111,"
      "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127"
      "}, %128, %129, p, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]),
        "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]),
        "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]),
        "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]),
        "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]),
        "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]),
        "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]),
        "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]),
        "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
      : "l"(desc_a), "l"(desc_b), "r"(accumulate));
}
#endif  // DSA_WGMMA

#if DSA_WGMMA
template <int kRegs>
__device__ __forceinline__ void fence_operands(float (&acc)[kRegs]) {
#pragma unroll
  for (int i = 0; i < kRegs; ++i) fence_operand(acc[i]);
}
#endif

// Configurations (run_logits_wgmma_config; the same per-element arithmetic in all, so the same bits):
//   0 "n256":      one m64n256 accumulator (4 queries) per tile, epilogue after all MMAs;
//   1 "n128x2":    two m64n128 accumulators (2 queries each) committed as two groups: the epilogue of
//                  the first half overlaps the MMAs of the second (the A tile is read twice);
// (A third, software-pipelined across tiles — the epilogue of one half overlapping the MMAs of the
// other half or of the next tile — ran 10–24 % slower than n128x2 in every measurement and made ptxas
// serialise its wgmmas (C7520); it was removed, docs/kernels/indexer_logits.md.)
constexpr int kConfigN256 = 0, kConfigN128x2 = 1;

template <int kConfig>
__global__ void __launch_bounds__(kThreads, 1)
    indexer_logits_wgmma_kernel(IndexerParams p, int splits, int chunk_tiles, float* __restrict__ logits) {
#if DSA_WGMMA
  extern __shared__ uint8_t smem_raw[];
  const uint32_t raw = smem_u32(smem_raw);
  const uint32_t base = (raw + kSwizzleAtom - 1) & ~uint32_t(kSwizzleAtom - 1);
  uint8_t* sm = smem_raw + (base - raw);
  float* w_s = reinterpret_cast<float*>(sm + kWOff);
  int* r_s = reinterpret_cast<int*>(sm + kRangeOff);  // lo[kQueries], hi[kQueries]

  const int tid = threadIdx.x;
  const int qb = blockIdx.x / splits, sp = blockIdx.x % splits;
  const int t0 = qb * kQueries;
  const int span_lo = sp * chunk_tiles * kKeyTile;
  const int span_hi = min(p.S, span_lo + chunk_tiles * kKeyTile);
  const auto* q8 = static_cast<const uint8_t*>(p.q);
  const auto* k8 = static_cast<const uint8_t*>(p.k);

  // ── 1. stage q (swizzled: logical chunk c of row n at c ^ (n mod 8)), w, ranges ──────────────
  for (int i = tid; i < kN * kChunksPerRow; i += kThreads) {
    const int n = i / kChunksPerRow, c = i % kChunksPerRow;
    const bool ok = t0 + n / kHeads < p.T;
    const uint8_t* src = ok ? q8 + (int64_t(t0) * kHeads + n) * kRowBytes + c * kChunk : q8;
    cp_async16(base + kQOff + n * kRowBytes + ((c ^ (n & 7)) * kChunk), src, ok ? kChunk : 0);
  }
  cp_async_commit();
  for (int i = tid; i < kN; i += kThreads) {
    // w_s[qq·64 + lane·16 + j·2 + e] = w[t0+qq, 8j + 2·lane + e]: a quad lane's 16 heads, contiguous.
    const int qq = i / kHeads, t = t0 + qq;
    w_s[i] = t < p.T ? __ldg(p.w + int64_t(t) * kHeads + permuted_head(i % kHeads)) : 0.0f;
  }
  if (tid < kQueries) {
    int lo = 0, hi = 0;
    if (t0 + tid < p.T) detail::clamp_range(__ldg(p.ks + t0 + tid), __ldg(p.ke + t0 + tid), p.S, lo, hi);
    r_s[tid] = lo;
    r_s[kQueries + tid] = hi;
  }
  cp_async_wait<0>();
  fence_proxy_async();
  __syncthreads();

  int u_lo = p.S, u_hi = 0;  // hull of the CTA's query ranges
#pragma unroll
  for (int i = 0; i < kQueries; ++i)
    if (r_s[i] < r_s[kQueries + i]) {
      u_lo = min(u_lo, r_s[i]);
      u_hi = max(u_hi, r_s[kQueries + i]);
    }
  const int span_tile_lo = span_lo / kKeyTile, span_tile_hi = (span_hi + kKeyTile - 1) / kKeyTile;
  int tlo = span_tile_lo, thi = span_tile_lo;  // hull tiles inside the span (empty by default)
  if (u_lo < u_hi) {
    tlo = max(span_tile_lo, u_lo / kKeyTile);
    thi = max(tlo, min(span_tile_hi, (u_hi + kKeyTile - 1) / kKeyTile));
  }

  // ── 2. −inf over the span outside the hull tiles ─────────────────────────────────────────────
  const int nq = min(kQueries, p.T - t0);
  const int a_end = min(span_hi, tlo * kKeyTile), b_begin = min(span_hi, thi * kKeyTile);  // hull may lie past the span
  for (int qq = 0; qq < nq; ++qq) {
    float* row = logits + int64_t(t0 + qq) * p.S;
    for (int s = span_lo + tid; s < a_end; s += kThreads) row[s] = -INFINITY;
    for (int s = b_begin + tid; s < span_hi; s += kThreads) row[s] = -INFINITY;
  }

  // ── 3. per warpgroup: pipelined hull tiles first, first + 2, … ───────────────────────────────
  const int wg = tid / kWarpGroupThreads, wtid = tid % kWarpGroupThreads;
  const int warp = wtid / detail::kWarpSize, lane = wtid % detail::kWarpSize;
  const int first = tlo + wg;
  const int n_my = first < thi ? (thi - first + kWarpGroups - 1) / kWarpGroups : 0;
  const uint32_t k_ring = base + kKOff + wg * kStages * kKTileBytes;
  const uint32_t scale_ring = base + kScaleOff + wg * kStages * kScaleTileBytes;
  const float* scale_s = reinterpret_cast<const float*>(sm + kScaleOff + wg * kStages * kScaleTileBytes);

  auto load_tile = [&](int j) {
    const int s0 = (first + kWarpGroups * j) * kKeyTile;
    const uint32_t dst = k_ring + (j % kStages) * kKTileBytes;
#pragma unroll
    for (int i = wtid; i < kKeyTile * kChunksPerRow; i += kWarpGroupThreads) {
      const int row = i / kChunksPerRow, c = i % kChunksPerRow;
      const bool ok = s0 + row < p.S;
      const uint8_t* src = ok ? k8 + int64_t(s0 + row) * kRowBytes + c * kChunk : k8;
      cp_async16(dst + row * kRowBytes + ((c ^ (row & 7)) * kChunk), src, ok ? kChunk : 0);
    }
    // The tile's k_scale rides in the same cp.async group (4-byte copies: k_scale needs no alignment
    // beyond a float's): the epilogue reads it from shared memory instead of waiting for a global
    // load (ncu: ~10–16 % of the stall samples sat on that load, even when issued before the MMAs).
    if (wtid < kKeyTile) {
      const bool ok = s0 + wtid < p.S;
      cp_async4(scale_ring + (j % kStages) * kScaleTileBytes + wtid * int(sizeof(float)),
                ok ? p.k_scale + s0 + wtid : p.k_scale, ok ? int(sizeof(float)) : 0);
    }
  };
#pragma unroll
  for (int j = 0; j < kStages - 1; ++j) {
    if (j < n_my) load_tile(j);
    cp_async_commit();  // always: uniform group counting
  }

  // This lane's output query and rows: quad lane c writes query t0 + c (after the transpose).
  const int qc = lane & 3, r = lane >> 2;
  const bool t_ok = t0 + qc < p.T;
  const int lo = r_s[qc], hi = r_s[kQueries + qc];
  float* out_row = logits + int64_t(t_ok ? t0 + qc : 0) * p.S;
  const uint64_t desc_b = desc_k_major(base + kQOff);
  // This lane's weights of the CTA's 4 queries, in registers for the whole loop (loading them per
  // tile from shared memory left the epilogue's FMA chains waiting: ~13–30 % of the stall samples).
  float4 w4[kQueries][4];
  load_weights<kQueries>(w_s, 0, qc, w4);
  constexpr int kHalves = kConfig == kConfigN256 ? 1 : 2;
  constexpr int kRegs = kAccRegs / kHalves;
  float acc[kHalves][kRegs];
#pragma unroll
  for (int hf = 0; hf < kHalves; ++hf)
#pragma unroll
    for (int i = 0; i < kRegs; ++i) acc[hf][i] = 0.0f;

  for (int j = 0; j < n_my; ++j) {
    cp_async_wait<kStages - 2>();  // this thread's chunks of tile j landed
    fence_proxy_async();
    named_barrier(1 + wg, kWarpGroupThreads);  // … everyone's; tile j−1's wgmma done by all
    if (j + kStages - 1 < n_my) load_tile(j + kStages - 1);  // into tile j−1's stage
    cp_async_commit();

    const uint64_t desc_a = desc_k_major(k_ring + (j % kStages) * kKTileBytes);
#pragma unroll
    for (int hf = 0; hf < kHalves; ++hf) fence_operands(acc[hf]);
    wgmma_fence();
    // Descriptor addresses advance by 32 B (>> 4 = 2) per k-step; half hf's B rows start at
    // hf·(N/kHalves) rows (a multiple of 8 rows: 1024-B aligned).
#pragma unroll
    for (int hf = 0; hf < kHalves; ++hf) {
#pragma unroll
      for (int ks = 0; ks < kKSteps; ++ks) {
        const uint64_t da = desc_a + uint64_t(ks * kKStepBytes >> 4);
        const uint64_t db = desc_b + uint64_t((hf * (kN / kHalves) * kRowBytes + ks * kKStepBytes) >> 4);
        if constexpr (kHalves == 1) wgmma_m64n256k32(acc[hf], da, db, ks > 0);
        else wgmma_m64n128k32(acc[hf], da, db, ks > 0);
      }
      wgmma_commit();
    }

    // This lane's two output keys and their k_scale (staged with the tile).
    const int sa = (first + kWarpGroups * j) * kKeyTile + 16 * warp + r, sb = sa + 8;
    const float ks_a = scale_s[(j % kStages) * kKeyTile + 16 * warp + r], ks_b = scale_s[(j % kStages) * kKeyTile + 16 * warp + r + 8];
    // Epilogue. Accumulator layout (m64nN f32): acc[4·jc + 2·half + e] = (row 16·warp + r + 8·half,
    // column 8·jc + 2·qc + e); column = query·64 + head within the accumulator block.
    float part0[kQueries], part1[kQueries];
    if constexpr (kHalves == 1) {
      wgmma_wait<0>();
      fence_operands(acc[0]);
      head_partials<kQueries>(acc[0], w4, 0, part0, part1);
    } else {
      constexpr int kQh = kQueries / 2;
      wgmma_wait<1>();
      fence_operands(acc[0]);
      head_partials<kQh>(acc[0], w4, 0, part0, part1);
      wgmma_wait<0>();
      fence_operands(acc[1]);
      head_partials<kQh>(acc[1], w4 + kQh, kQh, part0, part1);
    }
    // Transpose-reduce over the quad: round 1 (xor 2) keeps queries (qc & 2) + {0, 1}, round 2
    // (xor 1) keeps query qc.
    const bool up = qc & 2, odd = qc & 1;
    float a0 = up ? part0[2] : part0[0], b0 = up ? part0[3] : part0[1];
    float a1 = up ? part1[2] : part1[0], b1 = up ? part1[3] : part1[1];
    a0 += __shfl_xor_sync(detail::kFullMask, up ? part0[0] : part0[2], 2);
    b0 += __shfl_xor_sync(detail::kFullMask, up ? part0[1] : part0[3], 2);
    a1 += __shfl_xor_sync(detail::kFullMask, up ? part1[0] : part1[2], 2);
    b1 += __shfl_xor_sync(detail::kFullMask, up ? part1[1] : part1[3], 2);
    float v0 = odd ? b0 : a0, v1 = odd ? b1 : a1;
    v0 += __shfl_xor_sync(detail::kFullMask, odd ? a0 : b0, 1);
    v1 += __shfl_xor_sync(detail::kFullMask, odd ? a1 : b1, 1);

    if (t_ok) {
      if (sa < span_hi) out_row[sa] = (sa >= lo && sa < hi) ? __fmul_rn(v0, ks_a) : -INFINITY;
      if (sb < span_hi) out_row[sb] = (sb >= lo && sb < hi) ? __fmul_rn(v1, ks_b) : -INFINITY;
    }
  }
  cp_async_wait<0>();  // no copy outlives the CTA (the tail groups are empty)
#else
  __trap();  // never launched: use_logits_wgmma requires this file's sm_90a code (the probe below)
#endif
}

// Writes 1 where this file was compiled with wgmma (sm_90a), else 0.
__global__ void wgmma_probe_kernel(int* out) { *out = DSA_WGMMA; }

bool kernel_has_wgmma() {
  int* d = nullptr;
  int h = 0;
  if (cudaMalloc(&d, sizeof(int)) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  wgmma_probe_kernel<<<1, 1>>>(d);
  const bool ok = cudaGetLastError() == cudaSuccess &&
                  cudaMemcpy(&h, d, sizeof(int), cudaMemcpyDeviceToHost) == cudaSuccess;
  cudaFree(d);
  cudaGetLastError();
  return ok && h == 1;
}

}  // namespace

namespace detail {

bool use_logits_wgmma(const IndexerParams& p) {
  if (p.precision != Precision::kFp8 || p.DI != kIndexerKeyDim || p.HI != kHeads) return false;
  if (reinterpret_cast<uintptr_t>(p.q) % kChunk != 0 || reinterpret_cast<uintptr_t>(p.k) % kChunk != 0) return false;
  if (device_sm_version() != kSmVersion) return false;  // wgmma exists on sm_90 only
  static const bool has_wgmma = kernel_has_wgmma();    // a binary without sm_90a code runs the trap body
  return has_wgmma;
}

namespace {
// H200, 2026-11-28 04:38, T = 4096 × S = 131072 (dsa_bench_gpu logits_full): n256 808, n128x2 834–884,
// (n128x2_sw, since removed, 676) TFLOP/s (full ranges; causal the same within 1%) → n128x2.
constexpr int kDefaultConfig = kConfigN128x2;
const char* const kConfigNames[] = {"n256", "n128x2"};
}  // namespace

void indexer_logits_wgmma(const IndexerParams& p, float* logits, cudaStream_t stream) {
  run_logits_wgmma_config(p, logits, stream, kDefaultConfig);
}

const char* run_logits_wgmma_config(const IndexerParams& p, float* logits, cudaStream_t stream, int config) {
  if (config < 0 || config >= int(sizeof(kConfigNames) / sizeof(kConfigNames[0]))) return nullptr;
  const int q_blocks = ceil_div(p.T, kQueries), key_tiles = ceil_div(p.S, kKeyTile);
  if (q_blocks == 0 || key_tiles == 0) return kConfigNames[config];
  int dev = 0, sms = 0;
  cudaGetDevice(&dev);
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  // Split the keys over CTAs only when the query blocks alone would leave SMs idle.
  int splits = std::min(ceil_div(key_tiles, kWarpGroups),
                        std::max(1, ceil_div(int64_t(kTargetCtasPerSm) * sms, q_blocks)));
  int chunk_tiles = ceil_div(key_tiles, splits);
  chunk_tiles = ceil_div(chunk_tiles, kWarpGroups) * kWarpGroups;
  splits = ceil_div(key_tiles, chunk_tiles);
  auto kernel = config == kConfigN256 ? indexer_logits_wgmma_kernel<kConfigN256>
                                     : indexer_logits_wgmma_kernel<kConfigN128x2>;
  DSA_CUDA_CALL("indexer_logits",
                cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes));
  kernel<<<int64_t(q_blocks) * splits, kThreads, kSmemBytes, stream>>>(p, splits, chunk_tiles, logits);
  DSA_CUDA_LAUNCH_CHECK("indexer_logits");
  return kConfigNames[config];
}

}  // namespace detail
}  // namespace dsa::cuda
