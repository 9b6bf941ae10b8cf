// sparse_attention_forward_wgmma.cu — op 6, variant kWgmma: the bf16 sparse prefill forward on Hopper
// tensor cores (wgmma.mma_async, sm_90a only); the default for bf16 q/kv on sm_90. Runs Dqk = 576,
// Dv = 512, H % 64 == 0 on an sm_90 device running this file's sm_90a code (probed once) with
// ≥ kSmemBytes of opt-in shared memory; asked for anything else it is a dsa::Error naming the reason
// (variants.cu decides with sparse_forward_wgmma_applies; sparse_attention_forward.cu dispatches).
//
// Contract: ops.h §6 (FlashMLA flash_mla_sparse_fwd): q [T,H,576], kv [S,576] shared by all heads,
// both fp32 or both bf16 (AttentionParams::dtype), V = kv[:, :512], indices [T,K] (−1, ≥ S or
// slot ≥ topk_length[t] → skipped), explicit scale; out [T,H,512], lse [T,H] natural log (+inf and
// out = 0 for an empty row), max_logits [T,H] or null (−inf for an empty row).
// Numerics (the same as v3 / v4 up to the MMA's accumulation order): q, kv and P rounded to bf16
// (round to nearest even; bf16 inputs are taken as they are, so a bf16 input holding the rounded
// values of an fp32 one gives bitwise the same output), scores and O accumulated in fp32 by the
// tensor cores, softmax statistics in fp32 in the base-2 domain (score·scale·log2 e), exp2 by
// ex2.approx.ftz (= exp2f except results below 2^−126, flushed to 0), the row sum kept as two
// partials (keys 0..31 and 32..63 of every tile, v3's key halves) over this thread's keys in tile
// order, then quad lanes (xor 1, xor 2), then partial 0 + partial 1. Fixed order: bitwise
// reproducible run to run (and, measured, bitwise equal to v3 at the bench shape).
//
// Plan: block = one query × 64 heads (grid T × H/64), 2 warpgroups (256 threads), 64-key tiles.
//   S phase : warpgroup 0 alone computes S[64 heads × 64 keys]: 36 × wgmma m64n64k16 (A = q, B = kv
//             rows, both K-major, 128-byte swizzle; 4 KB of shared-memory operands per 131 kFLOP,
//             against 3 KB per 65 kFLOP for two warpgroups' m64n32k16 halves). Warpgroup 1 has
//             no S work: it issues its share of the next tile's gathers and waits at the P barrier.
//   softmax : warpgroup 0 holds whole rows (no row-max exchange): running max m, P (bf16) written
//             to shared memory (128-byte swizzled, K-major: row = head, 64 keys = 128 B), the new
//             m to shared memory for warpgroup 1; each warpgroup rescales its O by exp2(m_old −
//             m_new) (skipped by a warp whose factors are all 1).
//   PV phase: warpgroup w accumulates O[64 heads × dims 256w..256w+255] += P[64 × 64] · V[64 × 256]:
//             4 × wgmma m64n256k16 (A = P, K-major; B = the same kv tile read MN-major, i.e. the
//             transposed-B form of bf16 wgmma), 128 fp32 accumulators per thread.
//   kv is read as bf16: fp32 kv is converted once into the caller's workspace (S·1152 bytes, the
//   v4 conversion), bf16 kv is gathered where it lies (no workspace); tile j+1 is gathered by
//   cp.async (16 B, rows through indices, invalid slots → zero rows and −inf scores) while tile j is
//   computed (2 stages).
//
// Phases, in order:
//   1. key ids of tiles 0, 1 → barrier → issue tile 0's gathers; stage q (fp32 → bf16, or bf16
//      16-byte chunks copied as they are; 128-byte swizzled) with plain stores;
//   2. per tile j: issue tile j−1's PV wgmmas (commit, no wait: no wgmma group stays in flight
//      across the loop's back edge, which ptxas would answer by serialising) → wait for tile j's
//      gathers → fence.proxy.async → barrier → warpgroup 0: S wgmmas (commit), queued behind the PV
//      → wait for the PV (warpgroup 0: wait 1, warpgroup 1: wait 0) → barrier (the other stage and P
//      are free) → issue tile j+1's gathers (ids from shared memory) and start loading tile j+2's
//      ids (stored before the P barrier) → wait 0 → warpgroup 0: mask / scale / row max / P / l / m
//      → fence.proxy.async → barrier → warpgroup 1 reads m → O rescale; after the loop, the last
//      tile's PV and wait 0;
//   3. barrier → warpgroup 0's two row-sum partials through shared memory → out = O / l,
//      lse = (m + log2 l)·ln 2.
//
// Shared-memory plan (dynamic, from a 1024-byte aligned base: the 128-byte swizzle is a function of
// address bits 4..9, so every operand tile starts on a 1024-byte boundary). A "column block" is
// 64 bf16 = 128 B of every row; row r's 16-byte chunk c of a block lies at r·128 + ((c ^ (r & 7))·16).
//   q     9 column blocks × [64 heads × 128 B]          73,728 B
//   kv    2 stages × 9 column blocks × [64 keys × 128 B] 147,456 B
//   P     [64 heads × 128 B] (64 keys)                    8,192 B
//   keys  3 tiles × 64 int32 (ring: masks j, gathers j+1, loads j+2)  768 B
//   running maxima (per tile), then the two row-sum partials (at the end): 2 × 64 fp32   512 B
//   + 1,024 B alignment slack                            = 231,680 B ≤ 227 KiB (static_assert below).
// Descriptors: K-major operands (q, kv for S, P): SBO = 1024 B (8-row groups), LBO unused (1), the
// k-step ks (16 dims / keys = 32 B) starts at column block ks / 4, byte (ks % 4)·32 of the 128-byte
// row (the hardware applies the swizzle to the final address). MN-major V (B of the PV phase): the canonical 128-byte-swizzle MN-major
// layout ((64 dims, m), (8 keys, k)) : ((1, LBO), (128 B, SBO)) with LBO = 8192 B (next column
// block = next 64 dims) and SBO = 1024 B (next 8 keys); a k-step of 16 keys advances 2048 B.
// Host-side requirements (else the variant cannot run: a named error): q and kv (q_bf16 and kv_bf16 for
// bf16 inputs) 16-byte aligned (float4 / 16-byte loads, cp.async gathers); for fp32 inputs the
// workspace 16-byte aligned (cp.async) and ≥ S·1152 bytes.
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>

#include "cuda/attention_common.cuh"
#include "cuda/sparse_attention_forward_wgmma.cuh"
#include "cuda/wgmma.cuh"
#include "dsa/cuda_ops.h"


namespace dsa::cuda::attn {
namespace {

constexpr int kDqk = kMlaLatentDim + kMlaRopeDim;              // 576
constexpr int kDv = kMlaLatentDim;                              // 512
constexpr int kHeads = 64;                                      // wgmma M: heads per block
constexpr int kKeys = 64;                                       // keys per tile
constexpr int kStages = 2;                                      // kv tiles in flight
constexpr int kKeyStages = 3;                                   // key-id tiles: j (masks), j+1 (gathers), j+2 (loading)
constexpr int kWarpGroups = 2;
constexpr int kWarpGroupThreads = 4 * detail::kWarpSize;        // 128
constexpr int kBlockThreads = kWarpGroups * kWarpGroupThreads;       // 256
constexpr int kKeysPerWg = kKeys / kWarpGroups;                 // 32: v3's key half per warp pair
[[maybe_unused]] constexpr int kLHalves = kKeys / kKeysPerWg;                    // 2: row-sum partials (v3's key halves)
constexpr int kDvPerWg = kDv / kWarpGroups;                     // 256: PV wgmma N
constexpr int kElemBytes = 2;                                   // bf16
constexpr int kSwizzleBytes = 128;                              // one swizzled row of a column block
constexpr int kBlockCols = kSwizzleBytes / kElemBytes;          // 64 bf16 per column block
constexpr int kChunk = 16;                                      // cp.async / swizzle unit (bytes)
constexpr int kChunksPerBlockRow = kSwizzleBytes / kChunk;      // 8
constexpr int kSwizzleAtom = 8 * kSwizzleBytes;                 // 1024 B: SBO of every operand
constexpr int kColBlocks = kDqk / kBlockCols;                   // 9
constexpr int kMmaK = 16;                                       // wgmma K for bf16
[[maybe_unused]] constexpr int kKStepBytes = kMmaK * kElemBytes;                 // 32
[[maybe_unused]] constexpr int kQkSteps = kDqk / kMmaK;                          // 36
[[maybe_unused]] constexpr int kPvSteps = kKeys / kMmaK;                         // 4
[[maybe_unused]] constexpr int kStepsPerBlock = kBlockCols / kMmaK;              // 4
constexpr int kGatherRowsPerPass = kBlockThreads / kChunksPerBlockRow;     // 32: 8 threads per kv row
constexpr int kSRegs = kHeads * kKeys / kWarpGroupThreads;      // 32 (warpgroup 0: S is 64 × 64)
constexpr int kORegs = kHeads * kDvPerWg / kWarpGroupThreads;   // 128
constexpr int kQLoadBatch = 12;                                 // float4 loads in flight per thread (fp32 q)
constexpr int kQChunkBatch = 9;                                 // 16-byte loads in flight per thread (bf16 q)
constexpr int kSmVersion = 90;
constexpr float kLog2e = 1.4426950408889634f;
[[maybe_unused]] constexpr float kLn2 = 0.6931471805599453f;

constexpr int kQBlockBytes = kHeads * kSwizzleBytes;            // 8192
constexpr int kKvBlockBytes = kKeys * kSwizzleBytes;            // 8192: also the MN-major LBO
constexpr int kQOff = 0;
constexpr int kQBytes = kColBlocks * kQBlockBytes;
constexpr int kKvTileBytes = kColBlocks * kKvBlockBytes;
constexpr int kKvOff = kQOff + kQBytes;
constexpr int kPOff = kKvOff + kStages * kKvTileBytes;
constexpr int kPBytes = kHeads * kKeys * kElemBytes;
constexpr int kKeyOff = kPOff + kPBytes;
constexpr int kKeyBytes = kKeyStages * kKeys * int(sizeof(int32_t));
constexpr int kStatOff = kKeyOff + kKeyBytes;                   // running maxima per tile, then row-sum partials
constexpr int kStatBytes = kWarpGroups * kHeads * int(sizeof(float));
constexpr int kSmemBytes = kStatOff + kStatBytes + kSwizzleAtom;  // + alignment slack

static_assert(kDqk % kBlockCols == 0 && kDv % kBlockCols == 0, "whole column blocks");
static_assert(kKeys * kElemBytes == kSwizzleBytes, "a P row (64 keys) is one 128-byte swizzled row");
static_assert(kQBlockBytes % kSwizzleAtom == 0 && kKvBlockBytes % kSwizzleAtom == 0 && kPOff % kSwizzleAtom == 0 &&
                  kKvOff % kSwizzleAtom == 0 && kKvTileBytes % kSwizzleAtom == 0,
              "operand tiles start on 1024-byte boundaries");
static_assert(kDvPerWg % kBlockCols == 0, "warpgroup value halves are whole column blocks");
static_assert((kMmaK * kSwizzleBytes) % kSwizzleAtom == 0, "a PV k-step (16 keys) keeps the swizzle phase");
static_assert(kKeys % 8 == 0 && kKeys <= 256 && kDvPerWg % 8 == 0 && kDvPerWg <= 256, "wgmma N");
static_assert(kKeysPerWg % 8 == 0, "a key half is whole 8-key accumulator column groups");
static_assert(kKeys % kGatherRowsPerPass == 0, "whole gather passes per tile");
static_assert(kSRegs == 32 && kORegs == 128, "accumulator registers per thread");
static_assert(kSmemBytes <= 227 * 1024, "fits Hopper's 227 KiB opt-in shared memory");
static_assert(kKvBlockBytes >> 4 < (1 << 14) && kSwizzleAtom >> 4 < (1 << 14), "descriptor offset fields are 14 bits");
static_assert((kHeads * (kDqk / 4)) % (kBlockThreads * kQLoadBatch) == 0, "whole q load batches per thread");
static_assert((kHeads * (kDqk * kElemBytes / kChunk)) % (kBlockThreads * kQChunkBatch) == 0,
              "whole bf16 q chunk batches per thread");

struct WgmmaArgs {
  SparseKeys keys;                 // kv unused here (kv16 is read)
  const __nv_bfloat16* kv16;       // [S, 576] bf16: the workspace copy (fp32 inputs) or kv_bf16
  int H;
  float scale_log2;                // scale · log2 e
  const float* q;                  // [T, H, 576] fp32 (kernel<false>)
  const uint16_t* q16;             // [T, H, 576] bf16 bits (kernel<true>)
  float *out, *lse, *max_logits;
};

#if DSA_WGMMA
using namespace ::dsa::cuda::wgmma;

// Byte offset of row `row`, 16-byte chunk `chunk` (0..7) inside a [rows × 128 B] swizzled block.
__device__ __forceinline__ uint32_t swizzled(int row, int chunk) {
  return uint32_t(row * kSwizzleBytes + ((chunk ^ (row & 7)) * kChunk));
}

// V as the transposed B operand: column blocks of 64 value dims kKvBlockBytes apart.
__device__ __forceinline__ uint64_t desc_v(uint32_t addr) { return desc_mn_major(addr, kKvBlockBytes); }

// ── the two wgmma shapes (raw PTX; operand order as the PTX ISA: d, a-desc, b-desc, scale-d,
// imm-scale-a, imm-scale-b, imm-trans-a, imm-trans-b) ──
// D (64 × 64 fp32, 32 registers per thread) = / += A (64 × 16 bf16, K-major smem) · B (64 × 16 bf16,
// K-major smem); scale-d = accumulate (0 overwrites D).
__device__ __forceinline__ void wgmma_m64n64k16(float (&d)[32], uint64_t desc_a, uint64_t desc_b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15,"
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
      "}, %32, %33, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "l"(desc_a), "l"(desc_b), "r"(accumulate));
}
// D (64 × 256 fp32, 128 registers per thread) = / += A (64 × 16 bf16, K-major smem) · B (256 × 16 bf16,
// MN-major (transposed) smem); scale-d = accumulate (0 overwrites D).
__device__ __forceinline__ void wgmma_m64n256k16_tb(float (&d)[128], uint64_t desc_a, uint64_t desc_b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15,"
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31,"
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47,"
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63,"
      "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79,"
      "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95,"
      "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111,"
      "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127"
      "}, %128, %129, p, 1, 1, 0, 1;\n}\n"
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

// 2^x by one MUFU instruction (ex2.approx.ftz): equal to exp2f wherever the result is a normal float
// (exp2f adds only a rescaling for results below 2^−126, here flushed to 0: a P that small
// vanishes next to the row maximum's 1 anyway), and exp2(−inf) = +0. ncu: exp2f's denormal handling
// was ~40 % of the softmax's instructions, on the critical path.
__device__ __forceinline__ float exp2_mufu(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// Key id of slot jj of query t: −1 past n (the tile tail, topk_length) or for an invalid index.
__device__ __forceinline__ int32_t slot_key(const WgmmaArgs& a, int64_t t, int jj, int n) {
  return jj < n ? static_cast<int32_t>(a.keys.key(t, jj)) : -1;
}

// cp.async gathers of one tile's 64 bf16 rows (ids in key_s, already in shared memory) into the 9
// swizzled column blocks at kv_dst; an id of −1 gives a zero row (src_bytes = 0). Thread layout: a
// group of 8 threads owns one row per pass and thread c of the group copies chunk c of every column
// block, so a row's swizzled position (c ^ (row & 7)) and its source pointer are computed once and its
// 9 copies differ by constant offsets. (The first version spread 16-byte chunks over threads with a
// divide by 72 per chunk: ≈ 37 instructions per cp.async, 45 % of the kernel's instructions, issued on
// the softmax's critical path — ncu, docs/kernels/sparse_attention.md.) A warp's copy moves 4 rows ×
// 128 contiguous bytes; its 4 shared-memory wavefronts are conflict-free (one swizzled 128-byte row each).
__device__ __forceinline__ void issue_tile(const WgmmaArgs& a, const int32_t* key_s, uint32_t kv_dst) {
  const int c = threadIdx.x % kChunksPerBlockRow, g = threadIdx.x / kChunksPerBlockRow;
#pragma unroll
  for (int r = g; r < kKeys; r += kGatherRowsPerPass) {
    const int32_t s = key_s[r];
    const __nv_bfloat16* src = a.kv16 + static_cast<int64_t>(s >= 0 ? s : 0) * kDqk + c * (kChunk / kElemBytes);
    const uint32_t dst = kv_dst + swizzled(r, c);
    const int bytes = s >= 0 ? kChunk : 0;
#pragma unroll
    for (int cb = 0; cb < kColBlocks; ++cb) cp_async16(dst + cb * kKvBlockBytes, src + cb * kBlockCols, bytes);
  }
  cp_async_commit();
}
#endif  // DSA_WGMMA

// kQBf16: q is read from a.q16 (bf16, copied as it is) instead of a.q (fp32, rounded to bf16).
template <bool kQBf16>
__global__ void __launch_bounds__(kBlockThreads, 1) sparse_attention_forward_wgmma_kernel(WgmmaArgs a) {
#if DSA_WGMMA
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const uint32_t raw = smem_u32(smem_raw);
  const uint32_t base = (raw + kSwizzleAtom - 1) & ~uint32_t(kSwizzleAtom - 1);
  unsigned char* smem = smem_raw + (base - raw);
  int32_t* key_s = reinterpret_cast<int32_t*>(smem + kKeyOff);
  float* stat_s = reinterpret_cast<float*>(smem + kStatOff);   // [2][64 heads]: running maxima, then row-sum partials

  const int64_t t = blockIdx.x;
  const int h0 = blockIdx.y * kHeads;
  const int tid = threadIdx.x;
  const int wg = tid / kWarpGroupThreads, warp = (tid % kWarpGroupThreads) / detail::kWarpSize;
  const int lane = tid % detail::kWarpSize, r = lane / 4, c = lane % 4;
  const int row0 = 16 * warp + r;   // this thread's accumulator rows (heads): row0, row0 + 8
  const int n = a.keys.count(t);
  const bool s_wg = wg == 0;   // warpgroup 0 computes S and the softmax (warpgroup-uniform)

  // Phase 1: key ids of tiles 0 and 1; tile 0's gathers fly while q is converted.
  if (tid < kKeys) {
    key_s[tid] = slot_key(a, t, tid, n);
    key_s[kKeys + tid] = slot_key(a, t, kKeys + tid, n);
  }
  __syncthreads();
  if (n > 0) issue_tile(a, key_s, base + kKvOff);
  if constexpr (kQBf16) {
    // 16-byte chunk i of the [64 heads × 72 chunks] tile lands at its swizzled place unchanged.
    const uint4* q = reinterpret_cast<const uint4*>(a.q16 + (t * a.H + h0) * kDqk);
    constexpr int kRowChunks = kDqk * kElemBytes / kChunk, kPerThread = kHeads * kRowChunks / kBlockThreads;
    for (int b0 = 0; b0 < kPerThread; b0 += kQChunkBatch) {
      uint4 v[kQChunkBatch];
#pragma unroll
      for (int u = 0; u < kQChunkBatch; ++u) v[u] = __ldg(q + tid + (b0 + u) * kBlockThreads);
#pragma unroll
      for (int u = 0; u < kQChunkBatch; ++u) {
        const int i = tid + (b0 + u) * kBlockThreads;
        const int h = i / kRowChunks, ch = i % kRowChunks;
        const uint32_t off = kQOff + (ch / kChunksPerBlockRow) * kQBlockBytes + swizzled(h, ch % kChunksPerBlockRow);
        *reinterpret_cast<uint4*>(smem + off) = v[u];
      }
    }
  } else {
    const float* q = a.q + (t * a.H + h0) * kDqk;
    constexpr int kPerRow = kDqk / 4, kPerThread = kHeads * kPerRow / kBlockThreads;
    for (int b0 = 0; b0 < kPerThread; b0 += kQLoadBatch) {
      float4 v[kQLoadBatch];
#pragma unroll
      for (int u = 0; u < kQLoadBatch; ++u)
        v[u] = __ldg(reinterpret_cast<const float4*>(q) + tid + (b0 + u) * kBlockThreads);
#pragma unroll
      for (int u = 0; u < kQLoadBatch; ++u) {
        const int i = tid + (b0 + u) * kBlockThreads;
        const int h = i / kPerRow, d = (i % kPerRow) * 4;
        const int ch = d / (kChunk / kElemBytes);                     // 16-byte chunk of the row (0..71)
        const uint32_t off = kQOff + (ch / kChunksPerBlockRow) * kQBlockBytes +
                             swizzled(h, ch % kChunksPerBlockRow) + (d % (kChunk / kElemBytes)) * kElemBytes;
        const __nv_bfloat162 lo = __floats2bfloat162_rn(v[u].x, v[u].y), hi = __floats2bfloat162_rn(v[u].z, v[u].w);
        uint2 packed;
        packed.x = *reinterpret_cast<const uint32_t*>(&lo);
        packed.y = *reinterpret_cast<const uint32_t*>(&hi);
        *reinterpret_cast<uint2*>(smem + off) = packed;
      }
    }
  }
  fence_proxy_async();   // q (plain stores) → wgmma; the first tile's barrier orders it for all

  float o[kORegs];
#pragma unroll
  for (int i = 0; i < kORegs; ++i) o[i] = 0.0f;
  // l[k][hf] (warpgroup 0): row sum over keys [32k, 32k+32) of every tile — the v3 key halves, so the
  // sums add in v3's order (bitwise equal output).
  float m[2] = {-kInf, -kInf}, l[kLHalves][2] = {};
  const uint32_t q_addr = base + kQOff, p_addr = base + kPOff;

  // Phase 2: tiles; tile j+1's gathers run during tile j.
  // Key-id ring (kKeyStages = 3): tile j's ids (masks) in slot j % 3, tile j+1's (gathers issued
  // now) in (j+1) % 3, tile j+2's loaded from global during tile j and stored into (j+2) % 3 before
  // the P barrier (that slot was last read by tile j−1's masks, before this tile's first barrier).
  // 2d (issued at the top of the next tile, so that no wgmma group stays in flight across the loop's
  // back edge): O[64 heads × dims 256·wg ..] += P[64 × 64 keys] · V[64 keys × 256 dims] of the tile in
  // the kv stage at kv_pv (o[4·jc + 2·hf + e] = (head row0 + 8·hf, dim 256·wg + 8·jc + 2·c + e)).
  auto issue_pv = [&](uint32_t kv_pv) {
    fence_operands(o);
    wgmma_fence();
    const uint64_t dp = desc_k_major(p_addr), dv = desc_v(kv_pv + (wg * kDvPerWg / kBlockCols) * kKvBlockBytes);
#pragma unroll
    for (int ks = 0; ks < kPvSteps; ++ks)
      wgmma_m64n256k16_tb(o, desc_advance(dp, ks * kKStepBytes), desc_advance(dv, ks * kMmaK * kSwizzleBytes), 1);
    wgmma_commit();
  };
  int stage = 0, kslot = 0;
  for (int c0 = 0; c0 < n; c0 += kKeys, stage ^= 1, kslot = kslot == kKeyStages - 1 ? 0 : kslot + 1) {
    const int kslot1 = kslot == kKeyStages - 1 ? 0 : kslot + 1;
    const int kslot2 = kslot1 == kKeyStages - 1 ? 0 : kslot1 + 1;
    if (c0 > 0) issue_pv(base + kKvOff + (stage ^ 1) * kKvTileBytes);   // tile j−1's PV
    cp_async_wait<0>();      // this thread's chunks of tile j landed (the only group in flight)
    fence_proxy_async();      // … visible to the async proxy
    __syncthreads();          // … everyone's (tile j−1's PV may still run: it reads the other stage and P)
    const uint32_t kv_addr = base + kKvOff + stage * kKvTileBytes;
    const int32_t* key = key_s + kslot * kKeys;

    // 2a (warpgroup 0): S[64 heads × 64 keys] = q · kᵀ over 36 k-steps, queued behind tile j−1's PV
    // (accumulator layout, m64n64k16 f32: s[4·jc + 2·hf + e] = (head row0 + 8·hf, key 8·jc + 2·c + e)).
    float s[kSRegs];
    if (s_wg) {
#pragma unroll
      for (int i = 0; i < kSRegs; ++i) s[i] = 0.0f;
      fence_operands(s);
      wgmma_fence();
      const uint64_t dq = desc_k_major(q_addr), dkv = desc_k_major(kv_addr);
#pragma unroll
      for (int ks = 0; ks < kQkSteps; ++ks) {
        const uint32_t koff = (ks / kStepsPerBlock) * kQBlockBytes + (ks % kStepsPerBlock) * kKStepBytes;
        const uint32_t kvoff = (ks / kStepsPerBlock) * kKvBlockBytes + (ks % kStepsPerBlock) * kKStepBytes;
        wgmma_m64n64k16(s, desc_advance(dq, koff), desc_advance(dkv, kvoff), ks > 0);
      }
      wgmma_commit();
      wgmma_wait<1>();        // tile j−1's PV done (S of tile j may still run)
    } else {
      wgmma_wait<0>();        // tile j−1's PV done
    }
    fence_operands(o);
    __syncthreads();          // every warpgroup's PV of tile j−1 done: the other stage and P are free
    // While the S wgmmas run: tile j+1's gathers (into the other stage) and the load of tile j+2's
    // key ids.
    if (c0 + kKeys < n) issue_tile(a, key_s + kslot1 * kKeys, base + kKvOff + (stage ^ 1) * kKvTileBytes);
    // Tile j+2's raw ids: checked only when stored after the softmax, so that no warp of warpgroup 0
    // waits for this load before its softmax (ncu: 2.4 % of the stall samples sat on that check).
    const int next_slot = c0 + 2 * kKeys + tid;
    const bool next_in = tid < kKeys && next_slot < n;
    int32_t next_raw = -1;
    if (next_in) next_raw = a.keys.indices[t * a.keys.K + next_slot];

    float alpha[2];
    wgmma_wait<0>();          // S of tile j (warpgroup 1 has none in flight: a no-op, but without it
                              // ptxas sees a group possibly in flight here and serialises the wgmmas)
    if (s_wg) {
      fence_operands(s);
      // 2b: scale into the base-2 domain, mask invalid slots, row maxima of the tile.
      float cmax[2] = {-kInf, -kInf};
#pragma unroll
      for (int jc = 0; jc < kKeys / 8; ++jc)
#pragma unroll
        for (int hf = 0; hf < 2; ++hf)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int i = 4 * jc + 2 * hf + e;
            const float v = key[8 * jc + 2 * c + e] >= 0 ? s[i] * a.scale_log2 : -kInf;
            s[i] = v;
            cmax[hf] = fmaxf(cmax[hf], v);
          }
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        cmax[hf] = fmaxf(cmax[hf], __shfl_xor_sync(detail::kFullMask, cmax[hf], 1));
        cmax[hf] = fmaxf(cmax[hf], __shfl_xor_sync(detail::kFullMask, cmax[hf], 2));
      }
      // 2c: running max, P = exp2(s − m) (bf16, swizzled), l. A row with no valid key so far keeps
      // m = −inf and subtracts 0 instead (−inf − −inf would be NaN): its P is exp2(−inf) = 0.
      float m_sub[2];
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        const float m_new = fmaxf(m[hf], cmax[hf]);
        alpha[hf] = m_new == -kInf ? 1.0f : exp2_mufu(m[hf] - m_new);
        m[hf] = m_new;
        m_sub[hf] = m_new == -kInf ? 0.0f : m_new;
        if (c == 0) stat_s[row0 + 8 * hf] = m_new;   // for warpgroup 1's rescale (read after the P barrier)
      }
#pragma unroll
      for (int k = 0; k < kLHalves; ++k)
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) l[k][hf] *= alpha[hf];
#pragma unroll
      for (int jc = 0; jc < kKeys / 8; ++jc)
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
          const int i = 4 * jc + 2 * hf;
          const float p0 = exp2_mufu(s[i] - m_sub[hf]);
          const float p1 = exp2_mufu(s[i + 1] - m_sub[hf]);
          float& lk = l[jc / (kKeysPerWg / 8)][hf];   // v3's key halves, each summed in v3's order
          lk += p0;
          lk += p1;
          const int row = row0 + 8 * hf;
          const int key_chunk = jc;    // 8 keys = one 16-byte chunk of the P row
          *reinterpret_cast<__nv_bfloat162*>(smem + kPOff + swizzled(row, key_chunk) + 2 * c * kElemBytes) =
              __floats2bfloat162_rn(p0, p1);
        }
    }
    if (tid < kKeys) key_s[kslot2 * kKeys + tid] = next_raw >= 0 && next_raw < a.keys.S ? next_raw : -1;
    fence_proxy_async();   // P (plain stores) → wgmma
    __syncthreads();       // P and the new maxima complete
    if (!s_wg) {           // warpgroup 1: the running max from warpgroup 0
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        const float m_new = stat_s[row0 + 8 * hf];
        alpha[hf] = m_new == -kInf ? 1.0f : exp2_mufu(m[hf] - m_new);
        m[hf] = m_new;
      }
    }
    // O rescale (skipped by a warp whose factors are all 1: x·1 = x exactly).
    if (__any_sync(detail::kFullMask, alpha[0] != 1.0f || alpha[1] != 1.0f)) {
#pragma unroll
      for (int jc = 0; jc < kDvPerWg / 8; ++jc)
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
          o[4 * jc + 2 * hf] *= alpha[hf];
          o[4 * jc + 2 * hf + 1] *= alpha[hf];
        }
    }
  }
  if (n > 0) issue_pv(base + kKvOff + (stage ^ 1) * kKvTileBytes);   // the last tile's PV
  wgmma_wait<0>();
  fence_operands(o);
  cp_async_wait<0>();   // nothing in flight here (the last tile issues none); kept for safety
  __syncthreads();       // warpgroup 1's last read of the maxima in stat_s precedes the sums below

  // Phase 3: row sums of both halves, normalise, store.
  float part[2][2];   // [key half][hf]
#pragma unroll
  for (int hf = 0; hf < 2; ++hf)
#pragma unroll
    for (int k = 0; k < kLHalves; ++k) {
      l[k][hf] += __shfl_xor_sync(detail::kFullMask, l[k][hf], 1);
      l[k][hf] += __shfl_xor_sync(detail::kFullMask, l[k][hf], 2);
      part[k][hf] = l[k][hf];
    }
  if (c == 0 && s_wg)
#pragma unroll
    for (int hf = 0; hf < 2; ++hf)
#pragma unroll
      for (int k = 0; k < kLHalves; ++k) stat_s[k * kHeads + row0 + 8 * hf] = part[k][hf];
  __syncthreads();
  float inv[2], total[2];
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    const int row = row0 + 8 * hf;
    total[hf] = stat_s[row] + stat_s[kHeads + row];
    inv[hf] = total[hf] > 0.0f ? 1.0f / total[hf] : 0.0f;
  }
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    float* out_row = a.out + (t * a.H + h0 + row0 + 8 * hf) * kDv + kDvPerWg * wg + 2 * c;
#pragma unroll
    for (int jc = 0; jc < kDvPerWg / 8; ++jc)
      *reinterpret_cast<float2*>(out_row + 8 * jc) =
          make_float2(o[4 * jc + 2 * hf] * inv[hf], o[4 * jc + 2 * hf + 1] * inv[hf]);
  }
  if (wg == 0 && c == 0)
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      const int64_t row = t * a.H + h0 + row0 + 8 * hf;
      const bool empty = !(total[hf] > 0.0f);
      a.lse[row] = empty ? kInf : (m[hf] + log2f(total[hf])) * kLn2;
      if (a.max_logits) a.max_logits[row] = empty ? -kInf : m[hf] * kLn2;
    }
#else
  __trap();   // never launched: sparse_forward_wgmma_applies requires this file's sm_90a code
#endif
}

// Writes 1 where this file was compiled with wgmma (sm_90a), else 0.
__global__ void attention_wgmma_probe_kernel(int* out) { *out = DSA_WGMMA; }

bool kernel_has_wgmma() {
  int* d = nullptr;
  int h = 0;
  if (cudaMalloc(&d, sizeof(int)) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  attention_wgmma_probe_kernel<<<1, 1>>>(d);
  const bool ok = cudaGetLastError() == cudaSuccess &&
                  cudaMemcpy(&h, d, sizeof(int), cudaMemcpyDeviceToHost) == cudaSuccess;
  cudaFree(d);
  cudaGetLastError();
  return ok && h == 1;
}

}  // namespace

bool sparse_forward_wgmma_applies(const AttentionParams& p) {
  if (p.Dqk != kDqk || p.Dv != kDv || p.H <= 0 || p.H % kHeads != 0) return false;
  // 16-byte loads of q and of kv: float4 (fp32: q staging, the bf16 conversion), or 16-byte chunks
  // (bf16: q staging, the cp.async gathers straight from kv_bf16)
  const bool bf16 = p.dtype == DType::kBF16;
  const void* q = bf16 ? static_cast<const void*>(p.q_bf16) : static_cast<const void*>(p.q);
  const void* kv = bf16 ? static_cast<const void*>(p.kv_bf16) : static_cast<const void*>(p.kv);
  if (reinterpret_cast<uintptr_t>(q) % kChunk != 0 || reinterpret_cast<uintptr_t>(kv) % kChunk != 0) return false;
  if (detail::device_sm_version() != kSmVersion) return false;   // wgmma exists on sm_90 only
  if (detail::max_dynamic_smem_bytes() < kSmemBytes) return false;
  static const bool has_wgmma = kernel_has_wgmma();   // a binary without sm_90a code runs the trap body
  return has_wgmma;
}

size_t sparse_forward_wgmma_workspace(const AttentionParams& p) {
  if (p.dtype == DType::kBF16) return 0;   // kv_bf16 is gathered where it lies
  return static_cast<size_t>(p.S) * kDqk * sizeof(__nv_bfloat16);
}

void sparse_forward_wgmma(const AttentionParams& p, const AttentionForwardOut& o, void* workspace,
                          cudaStream_t stream, const char* op) {
  const bool bf16 = p.dtype == DType::kBF16;
  const auto kernel = bf16 ? sparse_attention_forward_wgmma_kernel<true> : sparse_attention_forward_wgmma_kernel<false>;
  DSA_CUDA_CALL(op, cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes));
  if (p.T == 0) return;
  const __nv_bfloat16* kv16 = kv_to_bf16_workspace(p, workspace, stream, op);   // v4's conversion / kv_bf16
  const WgmmaArgs a{sparse_keys(p), kv16, p.H, p.scale * kLog2e, bf16 ? nullptr : p.q,
                    bf16 ? p.q_bf16 : nullptr, o.out, o.lse, o.max_logits};
  kernel<<<dim3(p.T, p.H / kHeads), kBlockThreads, kSmemBytes, stream>>>(a);
  DSA_CUDA_LAUNCH_CHECK(op);
}

}  // namespace dsa::cuda::attn

namespace dsa::cuda {
bool sparse_attention_forward_wgmma_available(const AttentionParams& p) { return attn::sparse_forward_wgmma_applies(p); }
}  // namespace dsa::cuda
