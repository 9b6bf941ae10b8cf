// topk.cu — op 4 on the GPU: topk_select by radix select, one thread block per row.
// Two kernels, one dispatch point (topk_select at the end), chosen by K alone: v1 = the multi-pass radix
// select below (K > 2048); v2 (K ≤ 2048) = a sampled threshold + one pass + shared-memory select (see
// topk_v2_kernel), falling back to v1's code per row. Both return the same (unique) answer. v2 has
// tuning configurations (kV2Configs), among them DENSE ones that handle the pass's hits through
// per-warp queues (see kQueue); all of them return that same answer.
//
// Contract (ops.h §4): indices[t, 0..K) = the min(K, L) keys of [ks[t], ke[t]) with the largest
// logits, descending, ties → smaller index, NaN ≡ −inf, then −1. Deterministic (the result is the
// unique top-K of a strict total order; no step depends on thread timing), no host sync, no
// allocation (workspace 0 bytes in both versions), so CUDA-graph safe. A malformed range is empty.
//
// Order key: common.cuh score_key maps a float to a uint32 whose unsigned order is the float order
// (NaN → −inf, −0 → +0); select_key appends (0x7FFFFFFF − index) so the K best are the K largest
// 64-bit keys.
//
// Phases (rows with L ≤ K skip 1–2: every key is selected):
//   1. radix select of the K-th largest score key τ: 3 passes over the row (digits of 12, 12 and 8
//      bits, high to low), each a shared-memory histogram of the keys that match the digits found
//      so far, then one warp finds the digit where the count from the top reaches K.
//   2. collect: one pass in index order; keys > τ go to the selection buffer through a shared
//      atomic counter (their order there is irrelevant: phase 3 sorts); keys == τ are ranked in index
//      order (ballot + per-warp offsets) and the first K − #(> τ) are kept — the tie-break rule.
//   3. bitonic sort of the K selected 64-bit keys (descending) in shared memory; write indices.
// Shared-memory plan: hist[4096] u32 (16 KB) + sel[next_pow2(K)] u64 (≤ 64 KB) = ≤ 80 KB
// (opt-in limit: sm_80 163 KB, sm_89 99 KB, sm_90 227 KB).
#include "common/topk_policy.h"
#include "cuda/indexer_common.cuh"

namespace dsa::cuda {
namespace detail {
void topk_apply_policy(const TopkParams& p, cudaStream_t stream);   // topk_policy.cu
}
namespace {

constexpr int kTopkThreads = 1024;
constexpr int kTopkWarps = kTopkThreads / detail::kWarpSize;
constexpr int kRadixPasses = 3;
constexpr int kHistBins = 4096;                       // 2^12, the widest digit
__constant__ int kDigitShift[kRadixPasses] = {20, 8, 0};
__constant__ int kDigitBits[kRadixPasses] = {12, 12, 8};
constexpr int kLoadUnroll = 4;
constexpr size_t kHistBytes = kHistBins * sizeof(uint32_t);
static_assert(kHistBytes + size_t(kMaxTopK) * sizeof(uint64_t) <= 99 * 1024, "fits sm_89's opt-in smem");

struct TopkShared {
  uint32_t bin, krem;
  int n_gt, eq_base;
  int warp_eq[kTopkWarps];
};

// One warp: the digit d (bins scanned from the top) where the running count first reaches krem.
// Writes sh.bin and sh.krem (krem minus the keys in the bins above d).
__device__ void find_digit(const uint32_t* hist, int nbins, uint32_t krem, TopkShared& sh) {
  const int lane = threadIdx.x % detail::kWarpSize;
  const int per_lane = nbins / detail::kWarpSize;     // contiguous bins, lane 0 owns the highest
  const int top = nbins - 1 - lane * per_lane;
  uint32_t mine = 0;
  for (int j = 0; j < per_lane; ++j) mine += hist[top - j];
  uint32_t incl = mine;                               // inclusive scan over lanes (top first)
  for (int o = 1; o < detail::kWarpSize; o *= 2) {
    const uint32_t v = __shfl_up_sync(detail::kFullMask, incl, o);
    if (lane >= o) incl += v;
  }
  const uint32_t before = incl - mine;
  if (before < krem && krem <= incl) {                // exactly one lane crosses
    uint32_t run = before;
    for (int j = 0; j < per_lane; ++j) {
      const uint32_t c = hist[top - j];
      if (run + c >= krem) {
        sh.bin = static_cast<uint32_t>(top - j);
        sh.krem = krem - run;
        break;
      }
      run += c;
    }
  }
}

// Every key of [lo, hi) is selected (L ≤ K): sort them, pad with −1.
__device__ void select_all(const float* row, int lo, int hi, int K, int32_t* out, uint64_t* sel) {
  const int L = hi - lo;
  const int n2 = detail::next_pow2(L > 0 ? L : 1);
  for (int i = threadIdx.x; i < n2; i += blockDim.x) sel[i] = i < L ? detail::select_key(row[lo + i], lo + i) : 0ull;
  __syncthreads();
  detail::bitonic_sort_desc(sel, n2);
  for (int j = threadIdx.x; j < K; j += blockDim.x) out[j] = j < L ? detail::select_key_index(sel[j]) : kInvalidIndex;
}

// The multi-pass radix select of phases 1–3 (file comment) over global memory; L > K.
__device__ void multipass_select(const float* row, int lo, int hi, int K, int32_t* out, uint32_t* hist,
                                 uint64_t* sel, TopkShared& sh) {
  // ── phase 1: radix select of τ ──
  uint32_t prefix = 0, mask = 0, krem = static_cast<uint32_t>(K);
  for (int pass = 0; pass < kRadixPasses; ++pass) {
    const int shift = kDigitShift[pass], nbins = 1 << kDigitBits[pass];
    for (int b = threadIdx.x; b < nbins; b += blockDim.x) hist[b] = 0;
    __syncthreads();
    for (int base = lo + threadIdx.x; base < hi; base += blockDim.x * kLoadUnroll) {
      float v[kLoadUnroll];
#pragma unroll
      for (int u = 0; u < kLoadUnroll; ++u) {
        const int i = base + u * blockDim.x;
        v[u] = i < hi ? __ldg(row + i) : 0.0f;
      }
#pragma unroll
      for (int u = 0; u < kLoadUnroll; ++u) {
        if (base + u * static_cast<int>(blockDim.x) >= hi) break;
        const uint32_t key = detail::score_key(v[u]);
        if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & (nbins - 1)], 1u);
      }
    }
    __syncthreads();
    if (threadIdx.x < detail::kWarpSize) find_digit(hist, nbins, krem, sh);
    __syncthreads();
    prefix |= sh.bin << shift;
    mask |= static_cast<uint32_t>(nbins - 1) << shift;
    krem = sh.krem;
    __syncthreads();  // hist is cleared by the next pass
  }
  const uint32_t tau = prefix;
  const int n_gt_total = K - static_cast<int>(krem);

  // ── phase 2: collect ──
  const int sel_n = detail::next_pow2(K);
  for (int i = K + threadIdx.x; i < sel_n; i += blockDim.x) sel[i] = 0ull;
  if (threadIdx.x == 0) {
    sh.n_gt = 0;
    sh.eq_base = 0;
  }
  __syncthreads();
  const int warp = threadIdx.x / detail::kWarpSize, lane = threadIdx.x % detail::kWarpSize;
  for (int base = lo; base < hi; base += blockDim.x) {
    const int i = base + threadIdx.x;
    const float v = i < hi ? __ldg(row + i) : 0.0f;
    const uint32_t key = detail::score_key(v);
    const bool in = i < hi;
    const bool gt = in && key > tau, eq = in && key == tau;
    if (gt) sel[atomicAdd(&sh.n_gt, 1)] = detail::select_key(v, i);
    const int n_eq = __syncthreads_count(eq);
    if (n_eq > 0 && sh.eq_base < static_cast<int>(krem)) {   // block-uniform
      const unsigned ballot = __ballot_sync(detail::kFullMask, eq);
      if (lane == 0) sh.warp_eq[warp] = __popc(ballot);
      __syncthreads();
      if (eq) {
        int rank = sh.eq_base + __popc(ballot & ((1u << lane) - 1u));
        for (int w = 0; w < warp; ++w) rank += sh.warp_eq[w];
        if (rank < static_cast<int>(krem)) sel[n_gt_total + rank] = detail::select_key(v, i);
      }
      __syncthreads();
      if (threadIdx.x == 0) sh.eq_base += n_eq;
      __syncthreads();
    }
  }
  __syncthreads();

  // ── phase 3: sort and write ──
  detail::bitonic_sort_desc(sel, sel_n);
  for (int j = threadIdx.x; j < K; j += blockDim.x) out[j] = detail::select_key_index(sel[j]);
}

__global__ void __launch_bounds__(kTopkThreads) topk_v1_kernel(TopkParams p) {
  extern __shared__ __align__(16) unsigned char smem[];
  uint32_t* hist = reinterpret_cast<uint32_t*>(smem);
  uint64_t* sel = reinterpret_cast<uint64_t*>(smem + kHistBytes);
  __shared__ TopkShared sh;
  const int t = blockIdx.x;
  const float* row = p.logits + int64_t(t) * p.S;
  int32_t* out = p.indices + int64_t(t) * p.K;
  int lo, hi;
  detail::clamp_range(p.ks[t], p.ke[t], p.S, lo, hi);
  if (hi - lo <= p.K) select_all(row, lo, hi, p.K, out, sel);
  else multipass_select(row, lo, hi, p.K, out, hist, sel, sh);
}

// ── version 2: sampled threshold, one vectorised pass, exact select + sort in shared memory ─────
// 1. sample kSample keys evenly over [lo, hi); a radix select over the sample (below) gives a
//    threshold τ0 ≤ the r-th largest sampled key, r = ceil(kSampleMargin·K·kSample/L), so ≈
//    kSampleMargin·K keys of the row are expected ≥ τ0;
// 2. one pass over the row, float4 loads (head/tail scalar): a float compare against τ0's float (the
//    same order as the key compare, see key_float) filters in registers; the rare keys ≥ τ0 go to a
//    shared candidate buffer (cap CAP) through a shared counter, and the block learns their max score
//    (DENSE: float4s with a hit are queued per warp and appended 32 at a time, see kQueue);
// 3. if K ≤ count ≤ CAP, the top K of the row are all candidates (≥ K keys are ≥ τ0, so the K-th best
//    is ≥ τ0): a radix select over the candidates finds a threshold θ with exactly K keys ≥ θ (digits
//    of kV2DigitBits bits over the *relative* key (score − τ0, hi − 1 − index), whose width is known
//    from the max score, so the first digit already spreads the candidates; it stops as soon as the
//    bin holding the K-th key is taken whole — typically after 1–2 digits). Otherwise (an unlucky
//    sample: rare) the row runs v1's multi-pass select. The output never depends on the sample or on
//    the order of the candidate buffer (a set), only the time does;
// 4. the K selected keys (padded with 0, the smallest key, to kSortWidth) are sorted by a bitonic
//    network whose steps with partner distance < 32·kSortWidth/NT run in registers (shuffles and
//    in-thread swaps, no barrier) and only the wide ones in shared memory (10 barriers instead of
//    66), and the indices are written straight from registers.
// Shared memory: cand[CAP] u64 + a kSortWidth·8 = 16 KB region that holds the histogram (4096 × u32)
// during the selects, the warps' float4 queues during a DENSE pass and the sort buffer after them
// (+ the queues' indices, DENSE only). CAP and the block size set how many rows an SM
// runs at once (kV2Configs; the first is the default).
constexpr int kSample = 1024;
constexpr int kSampleMargin = 2;
constexpr int kSampledMaxK = 2048;
constexpr int kSortWidth = kSampledMaxK;
constexpr int kLogSortWidth = 11;
constexpr int kSampledMinRow = 4 * kSample;    // shorter rows: the multi-pass is cheap anyway
constexpr int kV2DigitBits = 12;
constexpr int kV2Bins = 1 << kV2DigitBits;
constexpr uint32_t kNegInfKey = 0x007FFFFFu;   // score_key(−inf) = score_key(NaN): the smallest score key
static_assert(1 << kLogSortWidth == kSortWidth, "sort width is a power of two");
static_assert(kV2Bins * sizeof(uint32_t) <= kSortWidth * sizeof(uint64_t), "the histogram fits the sort buffer");
static_assert(kHistBins * sizeof(uint32_t) <= kSortWidth * sizeof(uint64_t), "fallback histogram fits");

template <int NT>
struct V2Shared {
  uint32_t wsum[NT / detail::kWarpSize];
  uint32_t bin, krem, bin_count;
  int n_cand, n_sel;
  uint32_t max_score;
};

// The float whose score_key is k, for k in (kNegInfKey, score_key(+inf)]: keys ≥ k ⇔ floats ≥ it
// (NaN fails both; −0 and +0 compare equal in both).
__device__ inline float key_float(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k ^ 0x80000000u) : ~k);
}

// Block-wide: the bin (scanned from the top of nb bins) where the running count reaches krem; writes
// sh.bin, sh.krem (krem minus the keys above that bin) and sh.bin_count, and clears the histogram.
// Each thread reads and clears only the bins it owns, so one barrier orders the clear before the next
// accumulation; sh.wsum is rewritten only after the next call's first barrier.
template <int NT>
__device__ void block_find_digit(uint32_t* hist, int nb, uint32_t krem, V2Shared<NT>& sh) {
  const int lane = threadIdx.x % detail::kWarpSize, warp = threadIdx.x / detail::kWarpSize;
  const int per = nb >= NT ? nb / NT : 1;
  const int top = nb - 1 - static_cast<int>(threadIdx.x) * per;  // owns bins top, top − 1, …, top − per + 1
  uint32_t mine = 0;
  for (int j = 0; j < per && top - j >= 0; ++j) mine += hist[top - j];
  uint32_t incl = mine;
  for (int o = 1; o < detail::kWarpSize; o *= 2) {
    const uint32_t v = __shfl_up_sync(detail::kFullMask, incl, o);
    if (lane >= o) incl += v;
  }
  if (lane == detail::kWarpSize - 1) sh.wsum[warp] = incl;
  __syncthreads();
  uint32_t before = incl - mine;
  for (int w = 0; w < warp; ++w) before += sh.wsum[w];
  if (before < krem && krem <= before + mine) {  // exactly one thread crosses
    uint32_t run = before;
    for (int j = 0; j < per && top - j >= 0; ++j) {
      const uint32_t c = hist[top - j];
      if (run + c >= krem) {
        sh.bin = static_cast<uint32_t>(top - j);
        sh.krem = krem - run;
        sh.bin_count = c;
        break;
      }
      run += c;
    }
  }
  for (int j = 0; j < per && top - j >= 0; ++j) hist[top - j] = 0;
  __syncthreads();
}

// Radix select over keys key_of(0..n) < 2^bits_total (precondition: krem ≤ n, hist all zero; it is
// all zero again on return). Returns θ = (digits found) << shift, taken as soon as the bin holding
// the krem-th largest key is selected whole: #{keys ≥ θ} = krem when the keys are unique, ≥ krem
// (ties at the last digit) otherwise, and θ ≤ the krem-th largest key either way.
template <int NT, class KeyOf>
__device__ uint64_t radix_threshold(KeyOf key_of, int n, int bits_total, uint32_t krem, uint32_t* hist,
                                    V2Shared<NT>& sh) {
  uint64_t found = 0;  // the digits above `top`
  int top = bits_total;
  while (top > 0) {  // block-uniform
    const int bits = top < kV2DigitBits ? top : kV2DigitBits;
    const int shift = top - bits;
    const uint32_t digit_mask = (1u << bits) - 1u;
    for (int i = threadIdx.x; i < n; i += NT) {
      const uint64_t k = key_of(i);
      if ((k >> top) == found) atomicAdd(&hist[static_cast<uint32_t>(k >> shift) & digit_mask], 1u);
    }
    __syncthreads();
    block_find_digit<NT>(hist, 1 << bits, krem, sh);
    found = (found << bits) | sh.bin;
    krem = sh.krem;
    if (sh.bin_count == krem || shift == 0) return found << shift;
    top = shift;
  }
  return 0;
}

// Sorts buf[0, kSortWidth) descending (bitonic) and writes out[e] = index of key e for e < K. Thread
// layout in registers: key q of a thread is e = warp·kSpan + q·32 + lane, so partner distances j < 32
// are lane shuffles, 32 ≤ j < kSpan are swaps inside a thread, and only j ≥ kSpan go through shared
// memory. Every thread of the block calls it after a barrier that follows the writes to buf.
template <int NT>
__device__ void sort_write_desc(uint64_t* buf, int32_t* out, int K) {
  constexpr int kEpt = kSortWidth / NT;
  constexpr int kSpan = detail::kWarpSize * kEpt;
  static_assert(kEpt >= 1 && (kEpt & (kEpt - 1)) == 0, "power-of-two keys per thread");
  const int lane = threadIdx.x % detail::kWarpSize, warp = threadIdx.x / detail::kWarpSize;
  const int base = warp * kSpan + lane;
  uint64_t r[kEpt];
#pragma unroll
  for (int q = 0; q < kEpt; ++q) r[q] = buf[base + q * detail::kWarpSize];
#pragma unroll
  for (int lk = 1; lk <= kLogSortWidth; ++lk) {
    const int k = 1 << lk;
    if (k > kSpan) {  // wide steps through shared memory (each thread reloads only its own slots after)
#pragma unroll
      for (int q = 0; q < kEpt; ++q) buf[base + q * detail::kWarpSize] = r[q];
      __syncthreads();
#pragma unroll
      for (int lj = lk - 1; (1 << lj) >= kSpan; --lj) {
        const int j = 1 << lj;
        for (int pi = threadIdx.x; pi < kSortWidth / 2; pi += NT) {
          const int i = ((pi & ~(j - 1)) << 1) | (pi & (j - 1));
          const uint64_t a = buf[i], b = buf[i + j];
          const bool desc = (i & k) == 0;
          if (desc ? (a < b) : (a > b)) {
            buf[i] = b;
            buf[i + j] = a;
          }
        }
        __syncthreads();
      }
#pragma unroll
      for (int q = 0; q < kEpt; ++q) r[q] = buf[base + q * detail::kWarpSize];
    }
#pragma unroll
    for (int lj = lk - 1; lj >= 0; --lj) {
      const int j = 1 << lj;
      if (j >= kSpan) continue;  // done above
      if (j >= detail::kWarpSize) {  // partner inside this thread: q ^ (j / 32)
        const int qj = j / detail::kWarpSize;
#pragma unroll
        for (int q = 0; q < kEpt; ++q) {
          if (q & qj) continue;
          const int e = base + q * detail::kWarpSize;
          const uint64_t a = r[q], b = r[q | qj];
          const bool desc = (e & k) == 0;
          if (desc ? (a < b) : (a > b)) {
            r[q] = b;
            r[q | qj] = a;
          }
        }
      } else {  // partner in lane ^ j; the lower position keeps the larger key when descending
        const bool lower = (lane & j) == 0;
#pragma unroll
        for (int q = 0; q < kEpt; ++q) {
          const int e = base + q * detail::kWarpSize;
          const uint64_t o = __shfl_xor_sync(detail::kFullMask, r[q], j);
          const bool keep_max = lower == ((e & k) == 0);
          if (keep_max ? (o > r[q]) : (o < r[q])) r[q] = o;
        }
      }
    }
  }
#pragma unroll
  for (int q = 0; q < kEpt; ++q) {
    const int e = base + q * detail::kWarpSize;
    if (e < K) out[e] = detail::select_key_index(r[q]);
  }
}

// Dense hit handling (DENSE configurations): during the pass each warp owns a ring queue of kQueue
// float4s (in the histogram/sort region, idle then) plus their float4 indices (an extra region after
// it). A float4 with any key ≥ τ0 (~12% of them) is appended by ballot rank; whenever 32 are pending
// the warp takes them with every lane busy — one float4 per lane: 4 compares, 4 ballots, ONE shared
// atomic, ≤ 4 stores — instead of running up to 4·UNROLL guarded appends per batch with ~1 lane active.
// kQueue = 2·32: at most 31 pending + 32 appended by one float4 step.
constexpr int kQueue = 2 * detail::kWarpSize;
template <int NT, int CAP, bool DENSE>
constexpr size_t v2_smem_bytes() {
  return (size_t(CAP) + kSortWidth) * sizeof(uint64_t) +
         (DENSE ? size_t(NT / detail::kWarpSize) * kQueue * sizeof(int) : 0);
}

template <int NT, int CAP, int MINB, int UNROLL, bool DENSE>
__global__ void __launch_bounds__(NT, MINB) topk_v2_kernel(TopkParams p) {
  static_assert(size_t(CAP) * sizeof(uint64_t) >= kHistBytes, "the fallback histogram fits the candidate buffer");
  static_assert(kSample % NT == 0 || NT % kSample == 0, "sample spread over the block");
  static_assert(!DENSE || size_t(NT / detail::kWarpSize) * kQueue * sizeof(float4) <= kSortWidth * sizeof(uint64_t),
                "the warps' float4 queues fit the histogram/sort region");
  static_assert(CAP % 2 == 0, "the sort region is 16-byte aligned (float4 queues)");
  extern __shared__ __align__(16) unsigned char smem[];
  uint64_t* cand = reinterpret_cast<uint64_t*>(smem);
  uint64_t* sel = reinterpret_cast<uint64_t*>(smem + size_t(CAP) * sizeof(uint64_t));
  uint32_t* hist = reinterpret_cast<uint32_t*>(sel);  // the selects' histogram; the sort buffer after
  __shared__ V2Shared<NT> sh;
  __shared__ TopkShared fsh;                          // the v1 fallback's
  const int t = blockIdx.x;
  const float* row = p.logits + int64_t(t) * p.S;
  int32_t* out = p.indices + int64_t(t) * p.K;
  int lo, hi;
  detail::clamp_range(p.ks[t], p.ke[t], p.S, lo, hi);
  const int L = hi - lo;
  if (L <= p.K) {
    select_all(row, lo, hi, p.K, out, sel);
    return;
  }
  if (L < kSampledMinRow) {
    multipass_select(row, lo, hi, p.K, out, reinterpret_cast<uint32_t*>(cand), sel, fsh);
    return;
  }
  // The pass's geometry: float4 body (16-byte aligned), scalar head and tail (< 4 keys each).
  const int lane = threadIdx.x % detail::kWarpSize;
  const float* rp = row + lo;
  const int misalign = static_cast<int>((reinterpret_cast<uintptr_t>(rp) & 15u) / sizeof(float));
  const int head = misalign == 0 ? 0 : (4 - misalign < L ? 4 - misalign : L);
  const int n4 = (L - head) / 4;
  const int tail = head + 4 * n4;
  const float4* rp4 = reinterpret_cast<const float4*>(rp + head);
  // The first batch of the pass is loaded now: its latency overlaps the sample's load and select.
  // Batches are warp-uniform (w0 = the warp's first float4) so the warp scan below runs converged.
  float4 v[UNROLL];
  auto load_batch = [&](int w0) {
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
      const int j = w0 + lane + u * NT;
      v[u] = j < n4 ? __ldg(rp4 + j) : make_float4(0.f, 0.f, 0.f, 0.f);
    }
  };
  const int first = static_cast<int>(threadIdx.x) - lane;
  if constexpr (!DENSE) load_batch(first);  // DENSE: after the sample (its registers would spill here)

  // 1. sample (kept in the candidate buffer until the pass) and threshold
  uint32_t* sample = reinterpret_cast<uint32_t*>(cand);
  for (int i = threadIdx.x; i < kSample; i += NT)
    sample[i] = detail::score_key(__ldg(row + lo + int64_t(i) * L / kSample));
  for (int b = threadIdx.x; b < kV2Bins; b += NT) hist[b] = 0;
  if (threadIdx.x == 0) {
    sh.n_cand = 0;
    sh.n_sel = 0;
    sh.max_score = 0;
  }
  __syncthreads();
  int r = static_cast<int>((int64_t(kSampleMargin) * p.K * kSample + L - 1) / L);
  r = r < 1 ? 1 : (r > kSample ? kSample : r);
  const uint32_t tau0 = static_cast<uint32_t>(
      radix_threshold<NT>([&](int i) { return static_cast<uint64_t>(sample[i]); }, kSample, 32, r, hist, sh));
  const bool take_all = tau0 <= kNegInfKey;  // then every key (NaN and −inf too) is ≥ τ0
  const float f0 = key_float(take_all ? kNegInfKey + 1 : tau0);
  if constexpr (DENSE) load_batch(first);

  // 2. one pass (the sample is dead: radix_threshold ended with a barrier). Appends are aggregated:
  //    one shared atomic per warp and batch instead of one per hit (~3% of keys are ≥ τ0, so nearly
  //    every warp-batch has hits). Measured on H200 (docs/kernels/topk.md): no change in time (1.285 vs
  //    1.278 ms with per-hit atomics) — the pass is instruction-issue bound (ncu: SM 73%, DRAM 31%,
  //    ~20 active lanes per warp: the hit handling below runs for nearly every warp, divergently).
  uint32_t my_max = 0;
  auto put = [&](float x, int i, int& pos) {
    const uint64_t key = detail::select_key(x, i);
    const uint32_t s = static_cast<uint32_t>(key >> 32);
    my_max = s > my_max ? s : my_max;
    if (pos < CAP) cand[pos] = key;
    ++pos;
  };
  if (static_cast<int>(threadIdx.x) < head && (take_all || __ldg(rp + threadIdx.x) >= f0)) {
    int pos = atomicAdd(&sh.n_cand, 1);
    put(__ldg(rp + threadIdx.x), lo + threadIdx.x, pos);
  }
  if (static_cast<int>(threadIdx.x) < L - tail && (take_all || __ldg(rp + tail + threadIdx.x) >= f0)) {
    int pos = atomicAdd(&sh.n_cand, 1);
    put(__ldg(rp + tail + threadIdx.x), lo + tail + threadIdx.x, pos);
  }
  if constexpr (DENSE) {
    // The queue: float4s in the (zero, idle) histogram/sort region, their float4 indices after it.
    // qtail counts the float4s appended so far (warp-uniform: a sum of ballots, so every branch on it
    // below is uniform); the pending ones are [qtail & ~31, qtail): a step appends ≤ 32, so when
    // qtail crosses a multiple of 32 the 32 from the previous multiple are taken at once, and at most
    // 31 + 32 = 63 < kQueue are pending.
    const int warp = threadIdx.x / detail::kWarpSize;
    float4* qv = reinterpret_cast<float4*>(sel) + warp * kQueue;
    int* qj = reinterpret_cast<int*>(smem + (size_t(CAP) + kSortWidth) * sizeof(uint64_t)) + warp * kQueue;
    const unsigned lt = (1u << lane) - 1u;  // the lanes below this one
    constexpr unsigned kFull = detail::kWarpSize;
    unsigned qtail = 0;
    auto put_at = [&](float x, int i, int pos) {
      const uint64_t key = detail::select_key(x, i);
      const uint32_t s = static_cast<uint32_t>(key >> 32);
      my_max = s > my_max ? s : my_max;
      if (pos < CAP) cand[pos] = key;
    };
    // Takes the `count` (1..32, warp-uniform) queued float4s from slot `from` on, one per lane. The
    // __syncwarp()s order the appends before these reads and these reads before the next appends
    // (which reuse the slots).
    auto flush = [&](unsigned from, unsigned count) {
      __syncwarp();
      float4 x = make_float4(0.f, 0.f, 0.f, 0.f);
      int j = 0;
      unsigned h = 0;  // bit c: component c of x is ≥ τ0
      if (static_cast<unsigned>(lane) < count) {
        const unsigned s = (from + lane) & (kQueue - 1u);
        x = qv[s];
        j = qj[s];
        h = (take_all || x.x >= f0 ? 1u : 0u) | (take_all || x.y >= f0 ? 2u : 0u) |
            (take_all || x.z >= f0 ? 4u : 0u) | (take_all || x.w >= f0 ? 8u : 0u);
      }
      __syncwarp();
      const unsigned total = __reduce_add_sync(detail::kFullMask, static_cast<unsigned>(__popc(h)));
      int pos = 0;
      if (lane == 0 && total > 0) pos = atomicAdd(&sh.n_cand, static_cast<int>(total));
      pos = __shfl_sync(detail::kFullMask, pos, 0);
      const int i = lo + head + 4 * j;
      const float xs[4] = {x.x, x.y, x.z, x.w};
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const bool hit = (h >> c) & 1u;
        const unsigned b = __ballot_sync(detail::kFullMask, hit);
        if (hit) put_at(xs[c], i + c, pos + __popc(b & lt));
        pos += __popc(b);
      }
    };
    for (int w0 = first; w0 < n4; w0 += NT * UNROLL) {  // warp-uniform trip count
      const int next = w0 + NT * UNROLL;
#pragma unroll
      for (int u = 0; u < UNROLL; ++u) {
        const int j = w0 + lane + u * NT;
        const float m = fmaxf(fmaxf(v[u].x, v[u].y), fmaxf(v[u].z, v[u].w));  // NaN-free max of the rest
        const bool any = j < n4 && (take_all || m >= f0);
        const unsigned b = __ballot_sync(detail::kFullMask, any);
        if (any) {
          const unsigned s = (qtail + __popc(b & lt)) & (kQueue - 1u);
          qv[s] = v[u];
          qj[s] = j;
        }
        const unsigned from = qtail & ~(kFull - 1u);
        qtail += __popc(b);
        if ((qtail & ~(kFull - 1u)) != from) flush(from, kFull);
        // v[u] is queued or dead: its next load starts now (after the flush, which then has v[u]'s
        // registers free). Past the end v[u] keeps stale values: `any` tests j < n4 first.
        const int jn = next + lane + u * NT;
        if (jn < n4) v[u] = __ldg(rp4 + jn);
      }
    }
    if ((qtail & (kFull - 1u)) != 0) flush(qtail & ~(kFull - 1u), qtail & (kFull - 1u));
    // The region must be zero again for the candidate select (radix_threshold's precondition): each
    // warp clears its own queue after its last reads; the barrier below orders that for the block.
    __syncwarp();
    for (int e = lane; e < kQueue; e += detail::kWarpSize) qv[e] = make_float4(0.f, 0.f, 0.f, 0.f);
  } else {
    for (int w0 = first; w0 < n4; w0 += NT * UNROLL) {  // warp-uniform trip count
      uint32_t hits = 0;                                 // bit 4u + c: component c of v[u] is ≥ τ0
#pragma unroll
      for (int u = 0; u < UNROLL; ++u) {
        const int j = w0 + lane + u * NT;
        const float m = fmaxf(fmaxf(v[u].x, v[u].y), fmaxf(v[u].z, v[u].w));  // NaN-free max of the rest
        if (j < n4 && (take_all || m >= f0)) {
          const uint32_t h = (take_all || v[u].x >= f0 ? 1u : 0u) | (take_all || v[u].y >= f0 ? 2u : 0u) |
                             (take_all || v[u].z >= f0 ? 4u : 0u) | (take_all || v[u].w >= f0 ? 8u : 0u);
          hits |= h << (4 * u);
        }
      }
      const int c = __popc(hits);
      int incl = c;  // inclusive warp scan of the hit counts
      for (int o = 1; o < detail::kWarpSize; o *= 2) {
        const int y = __shfl_up_sync(detail::kFullMask, incl, o);
        if (lane >= o) incl += y;
      }
      int wbase = 0;
      if (lane == detail::kWarpSize - 1 && incl > 0) wbase = atomicAdd(&sh.n_cand, incl);
      int pos = __shfl_sync(detail::kFullMask, wbase, detail::kWarpSize - 1) + incl - c;
      if (hits != 0) {
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
          const int i = lo + head + 4 * (w0 + lane + u * NT);
          if (hits & (1u << (4 * u))) put(v[u].x, i, pos);
          if (hits & (2u << (4 * u))) put(v[u].y, i + 1, pos);
          if (hits & (4u << (4 * u))) put(v[u].z, i + 2, pos);
          if (hits & (8u << (4 * u))) put(v[u].w, i + 3, pos);
        }
      }
      if (w0 + NT * UNROLL < n4) load_batch(w0 + NT * UNROLL);
    }
  }
  my_max = __reduce_max_sync(detail::kFullMask, my_max);
  if (lane == 0 && my_max != 0) atomicMax(&sh.max_score, my_max);
  __syncthreads();
  const int n = sh.n_cand;
  if (n < p.K || n > CAP) {  // block-uniform fallback
    multipass_select(row, lo, hi, p.K, out, reinterpret_cast<uint32_t*>(cand), sel, fsh);
    return;
  }

  // 3. exact select over the candidates' relative keys (score − τ0 ≥ 0, then hi − 1 − index ≥ 0)
  const uint32_t dmax = sh.max_score - tau0;
  const int low_bits = 32 - __clz(L - 1);
  const int bits_total = (32 - __clz(dmax)) + low_bits;  // ≤ 32 + 31
  const uint32_t low_base = 0x7FFFFFFFu - static_cast<uint32_t>(hi - 1);
  auto rel = [&](uint64_t key) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(key >> 32) - tau0) << low_bits) |
           (static_cast<uint32_t>(key) - low_base);
  };
  const uint64_t theta = radix_threshold<NT>([&](int i) { return rel(cand[i]); }, n, bits_total,
                                             static_cast<uint32_t>(p.K), hist, sh);

  // 4. collect the K keys ≥ θ (unique keys: exactly K) into the sort buffer, pad, sort, write
  for (int i = p.K + threadIdx.x; i < kSortWidth; i += NT) sel[i] = 0ull;
  for (int w0 = first; w0 < n; w0 += NT) {  // warp-uniform; one atomic per warp and step
    const int i = w0 + lane;
    const uint64_t key = i < n ? cand[i] : 0ull;
    const bool take = i < n && rel(key) >= theta;
    const unsigned ballot = __ballot_sync(detail::kFullMask, take);
    int wbase = 0;
    if (lane == 0 && ballot != 0) wbase = atomicAdd(&sh.n_sel, __popc(ballot));
    wbase = __shfl_sync(detail::kFullMask, wbase, 0);
    if (take) sel[wbase + __popc(ballot & ((1u << lane) - 1u))] = key;
  }
  __syncthreads();
  sort_write_desc<NT>(sel, out, p.K);
}

// The v2 configurations (threads, candidate cap, blocks per SM for __launch_bounds__, float4 loads in
// flight per thread, dense hit handling); kV2Configs[0] is what topk_select runs. The others stay for
// the tuning bench. The dense ones: 84 KiB of shared memory (+ 4 KiB of queue indices), 2 blocks/SM,
// no spills at 64 registers with 4 or 6 float4s per thread (8: spills).
template <int NT, int CAP, int MINB, int UNROLL, bool DENSE = false>
void launch_v2(const TopkParams& p, cudaStream_t stream) {
  constexpr const char* op = "topk_select";
  constexpr size_t smem = v2_smem_bytes<NT, CAP, DENSE>();
  auto* kernel = topk_v2_kernel<NT, CAP, MINB, UNROLL, DENSE>;
  DSA_CUDA_CALL(op, cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  DSA_CUDA_CALL(op, cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
                                         static_cast<int>(cudaSharedmemCarveoutMaxShared)));
  kernel<<<p.T, NT, smem, stream>>>(p);
  DSA_CUDA_LAUNCH_CHECK(op);
}

struct V2Config {
  const char* name;
  void (*launch)(const TopkParams&, cudaStream_t);
};
constexpr int kV2DefaultCap = 8192;
const V2Config kV2Configs[] = {
    // measured on an H200 (docs/kernels/topk.md), 4096 × 131072, K = 2048: 1157 / 1188 / 1297 µs
    {"t512_cap8192_b2_u4_dense", launch_v2<512, kV2DefaultCap, 2, 4, true>},   // dense hit handling (kQueue)
    {"t512_cap8192_b2_u6_dense", launch_v2<512, kV2DefaultCap, 2, 6, true>},
    {"t512_cap8192_b2_u8", launch_v2<512, kV2DefaultCap, 2, 8>},               // per-hit appends
};
static_assert(v2_smem_bytes<512, 8192, true>() <= 99 * 1024, "the dense configurations fit sm_89's opt-in smem");
static_assert((kSortWidth + kV2DefaultCap) * sizeof(uint64_t) <= 99 * 1024, "the default fits sm_89's opt-in smem");

}  // namespace

size_t topk_select_workspace_bytes(int, int, int) { return 0; }

void topk_select(const TopkParams& p, void*, size_t, cudaStream_t stream) {
  constexpr const char* op = "topk_select";
  ::dsa::detail::require_non_negative(p.T, op, "T");
  ::dsa::detail::require_non_negative(p.S, op, "S");
  detail::validate_topk_budget(p.K, op);
  ::dsa::detail::validate_topk_policy(p.policy, p.K, op);
  ::dsa::detail::require_ptr(p.logits, op, "logits");
  ::dsa::detail::require_ptr(p.indices, op, "indices");
  ::dsa::detail::require_ptr(p.ks, op, "ks");
  ::dsa::detail::require_ptr(p.ke, op, "ke");
  if (p.T == 0) return;
  if (p.K <= kSampledMaxK) {  // v2
    kV2Configs[0].launch(p, stream);
  } else {
    const size_t smem = kHistBytes + size_t(detail::next_pow2(p.K)) * sizeof(uint64_t);
    DSA_CUDA_CALL(op, cudaFuncSetAttribute(topk_v1_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(smem)));
    topk_v1_kernel<<<p.T, kTopkThreads, smem, stream>>>(p);
    DSA_CUDA_LAUNCH_CHECK(op);
  }
  // A per-row budget (ops.h §4 TopkPolicy) cuts the K-selection afterwards (topk_policy.cu).
  detail::topk_apply_policy(p, stream);
}

// Tuning hook for bench/gpu/indexer_bench.cu (declared there; not part of the public API): runs v2
// configuration `config` of kV2Configs (0 = what topk_select runs) on well-formed p and returns its
// name, or nullptr (nothing launched) when config is out of range or K is outside [1, kSampledMaxK].
const char* topk_select_v2_config(const TopkParams& p, cudaStream_t stream, int config) {
  constexpr int n = static_cast<int>(sizeof(kV2Configs) / sizeof(kV2Configs[0]));
  if (config < 0 || config >= n || p.K < 1 || p.K > kSampledMaxK) return nullptr;
  if (p.T > 0) kV2Configs[config].launch(p, stream);
  return kV2Configs[config].name;
}

}  // namespace dsa::cuda
