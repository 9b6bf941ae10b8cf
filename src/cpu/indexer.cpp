// indexer.cpp — ops 3 and 5 of the catalogue, plus the fp8 preparation of their inputs:
//   I[t,s] = k_scale[s] · Σ_h w[t,h] · ReLU(q[t,h,:]·k[s,:])   for s in [ks[t], ke[t]), −inf elsewhere.
//
// indexer_logits (unfused, [T,S] out) and indexer_topk (fused, never holds [T,S]) run the SAME
// driver (for_each_logit_block_group, groups of kRowGroup rows) and the SAME non-inlined kernel of
// this process's ISA path (a key-tile kernel of indexer_tiles.cpp on AVX2 / AVX-512, else
// logits_block_generic); a
// logit never depends on the group or block it is computed in. They differ only in who
// consumes a block of logits: a memcpy into the [T,S] row, or the shared top-k stream
// (topk_stream.h) that topk_select also uses. Every logit is therefore produced by the same machine
// code in both paths (fused ≡ topk_select(indexer_logits) bitwise, whatever the compiler contracts).
//
// Precision of the arithmetic: each dot q[t,h]·k[s] is accumulated in fp32, sequentially over d.
//   * kBf16 / kFp8: every product is exact in fp32 (8- resp. 4-bit significands), so the only
//     rounding is the DI-term sum — the same fp32 accumulation DeepGEMM's fp8_mqa_logits does.
//   * kFp32: a DI-term fp32 sum has a relative error ≤ DI·2^-24 of Σ|q_d·k_d| (DI ≤ 128 here), well
//     below the noise of the fp8 path the indexer was trained for, while fp64 would halve the
//     throughput of the dominant DSA cost (≈ HI·DI·2 FLOP per causal pair).
//   * The head sum (HI ≤ 64 terms) runs in fp32 in the fixed order h = 0..HI−1 (ops.h).
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "common/check.h"
#include "common/op_checks.h"
#include "cpu/indexer_common.h"
#include "cpu/indexer_tiles.h"
#include "dsa/cpu_isa.h"
#include "cpu/topk_stream.h"

namespace dsa::cpu {

namespace detail {

void validate_indexer_params(const IndexerParams& p, const char* op) {
  using ::dsa::detail::fail;
  ::dsa::detail::require_non_negative(p.T, op, "T");
  ::dsa::detail::require_non_negative(p.S, op, "S");
  ::dsa::detail::require_positive(p.HI, op, "HI");
  ::dsa::detail::require_positive(p.DI, op, "DI");
  if (p.precision != Precision::kFp32 && p.precision != Precision::kBf16 && p.precision != Precision::kFp8)
    fail(op, "precision = ", static_cast<int>(p.precision), " is not a Precision");
  ::dsa::detail::require_ptr(p.q, op, "q");
  ::dsa::detail::require_ptr(p.k, op, "k");
  ::dsa::detail::require_ptr(p.w, op, "w");
  if (p.precision == Precision::kFp8 && p.k_scale == nullptr)
    fail(op, "k_scale is null (required when precision = kFp8)");
  if (p.precision != Precision::kFp8 && p.k_scale != nullptr)
    fail(op, "k_scale must be null unless precision = kFp8");
  ::dsa::detail::require_ranges(p.ks, p.ke, p.T, p.S, op);
}

}  // namespace detail

namespace {

constexpr int kKeyBlock = 128;  // keys per block: ≤ 128·DI fp32 of converted keys per thread
constexpr int kKeyGroup = 8;    // keys computed together: 8 independent accumulators hide the add
                                // latency and reuse each q load 8 times
constexpr int kHeadPad = 16;    // heads are padded to a multiple of the widest vector (16 lanes)
constexpr int kRowGroup = 4;    // query rows per task: the tile kernel reads each key block once for all of them
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

int padded_heads(int HI) { return (HI + kHeadPad - 1) / kHeadPad * kHeadPad; }

// e4m3 byte → fp32 (exact), tabulated once from numerics.cpp's conversion.
const std::array<float, 256>& fp8_table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int b = 0; b < 256; ++b) t[b] = fp8_e4m3_to_float(static_cast<uint8_t>(b));
    return t;
  }();
  return table;
}

// bf16 bits → fp32: ops.h defines bf16 as the upper 16 bits of an fp32, so this is exact.
inline float bf16_bits_to_float(uint16_t bits) {
  const uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// Element i of a q or k tensor of the given precision, as fp32 (exact in every precision).
inline float element(Precision precision, const void* base, int64_t i) {
  switch (precision) {
    case Precision::kBf16: return bf16_bits_to_float(static_cast<const uint16_t*>(base)[i]);
    case Precision::kFp8: return fp8_table()[static_cast<const uint8_t*>(base)[i]];
    case Precision::kFp32: break;
  }
  return static_cast<const float*>(base)[i];
}

// Per-thread working memory: O(HI·DI + kKeyBlock·DI), independent of T and S.
struct RowScratch {
  explicit RowScratch(const IndexerParams& p)
      : qT(static_cast<size_t>(p.DI) * padded_heads(p.HI), 0.0f),
        w(static_cast<size_t>(padded_heads(p.HI)), 0.0f),
        keys(p.precision == Precision::kFp32 ? 0 : static_cast<size_t>(kKeyBlock) * p.DI),
        tail(static_cast<size_t>(kKeyGroup) * p.DI),
        scores(kKeyBlock),
        qr(static_cast<size_t>(padded_heads(p.HI)) * p.DI, 0.0f) {}
  std::vector<float> qT;      // [DI, HIpad]  q[t] transposed; heads ≥ HI stay 0
  std::vector<float> w;       // [HIpad]      w[t]; heads ≥ HI stay 0
  std::vector<float> keys;    // [kKeyBlock, DI] keys converted to fp32 (kBf16 / kFp8 only)
  std::vector<float> tail;    // [kKeyGroup, DI] zero-padded copy of a partial key group
  std::vector<float> scores;  // [kKeyBlock] logits of the current block
  std::vector<float> qr;      // [HIpad, DI]  q[t] as fp32 (tile kernels; heads ≥ HI stay 0)
};

// scores[i] = kscale[i] · Σ_{h<HI} w[h] · ReLU(Σ_d qT[d,h] · kb[i,d])   for i in [0, n)
// (kscale null ≡ 1; qT [DI, HIpad] and w [HIpad] zero-padded beyond HI).
// Each dot is an fp32 sum in the order d = 0..DI−1 and each head sum runs h = 0..HI−1, so a logit
// depends only on (q[t], k[s], w[t]) and the kernel — never on the block it sits in. The key-tile
// kernels (indexer_tiles.h) fuse each dot term into an FMA, this one (SSE2) does not: see
// logits_block_generic below for what that means for the bits.
//
// Vectorisation: the accumulators of kKeyGroup keys × kLanes heads are GCC vector-extension
// values (Clang has the same syntax). Written as scalar loops, GCC 12 vectorised along d instead
// (with shuffles) and ran 5× slower.
// (A typedef inside a class template: GCC 12 drops vector_size on a dependent alias template.)
template <int kLanes>
struct VecF {
  typedef float type __attribute__((vector_size(4 * kLanes)));
  static_assert(sizeof(type) == 4 * kLanes);
};

template <int kLanes>
[[gnu::always_inline]] inline void logits_block_impl(const float* qT, const float* w, int HI, int HIpad, int DI,
                                                     const float* kb, int n, const float* kscale, float* tail,
                                                     float* scores) {
  using Vec = typename VecF<kLanes>::type;
  for (int i0 = 0; i0 < n; i0 += kKeyGroup) {
    const int m = std::min(kKeyGroup, n - i0);
    const float* group = kb + static_cast<int64_t>(i0) * DI;  // [kKeyGroup, DI]
    if (m < kKeyGroup) {  // partial group: pad with zero keys so the same loop runs
      std::fill(tail, tail + kKeyGroup * DI, 0.0f);
      std::copy(group, group + static_cast<int64_t>(m) * DI, tail);
      group = tail;
    }
    float head_sum[kKeyGroup] = {};
    for (int hg = 0; hg < HIpad; hg += kLanes) {
      Vec acc[kKeyGroup] = {};  // acc[r][l] = u[key i0 + r, head hg + l] = q·k (exact products for bf16/fp8)
      for (int d = 0; d < DI; ++d) {
        Vec qd;  // q[t, hg .. hg + kLanes, d]
        std::memcpy(&qd, qT + static_cast<int64_t>(d) * HIpad + hg, sizeof qd);
        for (int r = 0; r < kKeyGroup; ++r) acc[r] += qd * group[r * DI + d];
      }
      // ReLU and the w product lane-wise (one IEEE multiply per lane, as in scalar code) ...
      Vec wv;
      std::memcpy(&wv, w + hg, sizeof wv);
      float terms[kKeyGroup][kLanes];  // w[h] · ReLU(u[key, h]); padded heads have w = 0, u = 0
      for (int r = 0; r < kKeyGroup; ++r) {
        const Vec relu = acc[r] < 0.0f ? Vec{} : acc[r];  // ReLU; NaN propagates (NaN < 0 is false)
        const Vec term = wv * relu;
        std::memcpy(terms[r], &term, sizeof term);
      }
      // ... then the head sum, sequential in h (the fixed order of ops.h).
      const int heads = std::min(kLanes, HI - hg);
      for (int r = 0; r < kKeyGroup; ++r)
        for (int j = 0; j < heads; ++j) head_sum[r] += terms[r][j];
    }
    for (int r = 0; r < m; ++r) scores[i0 + r] = kscale ? kscale[i0 + r] * head_sum[r] : head_sum[r];
  }
}

// The kernel of the generic path (DSA_CPU_ISA=generic, or an x86-64 CPU without AVX2 + FMA):
// 4 lanes = SSE2, no FMA. The AVX2 and AVX-512 paths run the key-tile kernels of indexer_tiles.cpp.
// The generic kernel rounds each product before adding it: in kBf16/kFp8 mode the products are
// exact, so its logits equal the tile kernels' bitwise; in kFp32 mode they differ in the last bits
// (a machine without FMA cannot do the single rounding of an FMA cheaply). One process always runs
// one path for both indexer_logits and indexer_topk, so fused ≡ unfused holds on every path.
[[gnu::noinline, gnu::optimize("fp-contract=off")]]  // two roundings per term, even where FMA exists
void logits_block_generic(const float* qT, const float* w, int HI, int HIpad, int DI, const float* kb, int n,
                          const float* kscale, float* tail, float* scores) {
  logits_block_impl<4>(qT, w, HI, HIpad, DI, kb, n, kscale, tail, scores);
}

// ── The vector paths: keys in lanes (indexer_tiles.h) ──────────────────────────────────────────
// The keys of one call, as fp32 (exact in every precision: e4m3 and bf16 decoded once here, not
// once per query row), in tiles of kt.width keys: v[(tile·DI + d)·width + j] = k[width·tile + j, d];
// keys ≥ S are 0. Built once per call, S·DI floats (8 MiB at S = 32K, DI = 64; the fp32 k itself
// has that size), read by every row.
struct KeyTiles {
  int width = 0;  // 0: the generic path (no tiles)
  detail::LogitsTilesFn fn = nullptr;
  std::vector<float> v;
  bool active() const { return width > 0; }
};
static_assert(kKeyBlock % 16 == 0 && kKeyBlock % 8 == 0, "a key block is a whole number of tiles");

// Both paths (fused, unfused) build this the same way, so both run the same kernel.
KeyTiles prepare_key_tiles(const IndexerParams& p) {
  KeyTiles kt;
  const detail::TileKernel tk = detail::tile_kernel(isa());
  if (tk.width == 0) return kt;
  kt.width = tk.width;
  kt.fn = tk.fn;
  const int W = kt.width;
  const int64_t tiles = (static_cast<int64_t>(p.S) + W - 1) / W;
  kt.v.assign(static_cast<size_t>(tiles) * p.DI * W, 0.0f);
  const float* table = p.precision == Precision::kFp8 ? fp8_table().data() : nullptr;
#pragma omp parallel for schedule(static)
  for (int64_t tile = 0; tile < tiles; ++tile)
    for (int j = 0; j < W && tile * W + j < p.S; ++j) {
      const int64_t s = tile * W + j;
      float* dst = kt.v.data() + tile * p.DI * W + j;
      if (table) {  // e4m3 → fp32 through the 256-entry table (the hot case of V3.2's FP8 indexer)
        const uint8_t* src = static_cast<const uint8_t*>(p.k) + s * p.DI;
        for (int d = 0; d < p.DI; ++d) dst[d * W] = table[src[d]];
      } else {
        for (int d = 0; d < p.DI; ++d) dst[d * W] = element(p.precision, p.k, s * p.DI + d);
      }
    }
  return kt;
}

// Rows t0 .. t0 + nr − 1 with the tile kernel, together: the key axis is walked in blocks of
// kKeyBlock keys aligned to tiles, and each block (32 KiB at DI = 64) serves every row of the group
// whose range meets it while it is in L1/L2 — the rows of a causal prefill read nearly the same
// keys, so the group reads the tiled keys once instead of nr times (2 threads each streaming 8 MiB
// per row at S = 32K were bandwidth-bound). Only keys in [ks, ke) reach sink(r, first_key, n, scores)
// (the other lanes of a row's first and last tile are computed and dropped); each row's blocks
// come in increasing key order.
template <class Sink>
void for_each_logit_block_tiles(const IndexerParams& p, int t0, int nr, std::vector<RowScratch>& sc, const KeyTiles& kt,
                                Sink&& sink) {
  const int HI = p.HI, DI = p.DI, W = kt.width;
  const int kBlockTiles = kKeyBlock / W;
  int tile_begin = std::numeric_limits<int>::max(), tile_end = 0;
  for (int r = 0; r < nr; ++r) {
    const int t = t0 + r;
    const int64_t q_row = static_cast<int64_t>(t) * HI * DI;
    for (int64_t i = 0; i < static_cast<int64_t>(HI) * DI; ++i)
      sc[r].qr[static_cast<size_t>(i)] = element(p.precision, p.q, q_row + i);
    std::copy(p.w + static_cast<int64_t>(t) * HI, p.w + static_cast<int64_t>(t + 1) * HI, sc[r].w.begin());
    if (p.ks[t] < p.ke[t]) {
      tile_begin = std::min(tile_begin, p.ks[t] / W);
      tile_end = std::max(tile_end, (p.ke[t] + W - 1) / W);
    }
  }
  for (int b0 = tile_begin; b0 < tile_end; b0 += kBlockTiles) {
    const int b1 = std::min(tile_end, b0 + kBlockTiles);
    for (int r = 0; r < nr; ++r) {
      const int ks = p.ks[t0 + r], ke = p.ke[t0 + r];
      const int r0 = std::max(b0, ks / W), r1 = std::min(b1, (ke + W - 1) / W);
      if (ks >= ke || r0 >= r1) continue;
      float* out = sc[r].scores.data();
      kt.fn(sc[r].qr.data(), sc[r].w.data(), HI, DI, kt.v.data() + static_cast<int64_t>(r0) * DI * W, r1 - r0, out);
      const int first = r0 * W, lo = std::max(ks, first), hi = std::min(ke, r1 * W);
      float* scores = out + (lo - first);
      if (p.k_scale)
        for (int s = lo; s < hi; ++s) scores[s - lo] *= p.k_scale[s];  // k_scale[s] · head sum, as in logits_block_impl
      sink(r, lo, hi - lo, static_cast<const float*>(scores));
    }
  }
}

// Computes row t of the logits over [ks[t], ke[t]) in blocks of kKeyBlock keys starting at ks[t]
// and hands each block to sink(first_key, n, scores). The only producer of indexer logits.
template <class Sink>
void for_each_logit_block(const IndexerParams& p, int t, RowScratch& sc, Sink&& sink) {
  const int HI = p.HI, DI = p.DI, HIpad = padded_heads(HI);
  constexpr auto kernel = &logits_block_generic;
  const int64_t q_row = static_cast<int64_t>(t) * HI * DI;
  for (int h = 0; h < HI; ++h)
    for (int d = 0; d < DI; ++d) sc.qT[static_cast<size_t>(d) * HIpad + h] = element(p.precision, p.q, q_row + h * DI + d);
  std::copy(p.w + static_cast<int64_t>(t) * HI, p.w + static_cast<int64_t>(t + 1) * HI, sc.w.begin());

  for (int s0 = p.ks[t]; s0 < p.ke[t]; s0 += kKeyBlock) {
    const int n = std::min(kKeyBlock, p.ke[t] - s0);
    const int64_t first = static_cast<int64_t>(s0) * DI;
    const float* kb = nullptr;
    if (p.precision == Precision::kFp32) {
      kb = static_cast<const float*>(p.k) + first;
    } else {
      for (int64_t i = 0; i < static_cast<int64_t>(n) * DI; ++i) sc.keys[i] = element(p.precision, p.k, first + i);
      kb = sc.keys.data();
    }
    kernel(sc.qT.data(), sc.w.data(), HI, HIpad, DI, kb, n, p.k_scale ? p.k_scale + s0 : nullptr, sc.tail.data(),
                 sc.scores.data());
    sink(s0, n, static_cast<const float*>(sc.scores.data()));
  }
}

// Rows t0 .. t0 + nr − 1 (nr ≤ kRowGroup): the tile kernels walk them together; the generic
// kernel row by row. sink(r, first_key, n, scores) gets each row's blocks in key order.
template <class Sink>
void for_each_logit_block_group(const IndexerParams& p, int t0, int nr, std::vector<RowScratch>& sc, const KeyTiles& kt,
                                Sink&& sink) {
  if (kt.active()) return for_each_logit_block_tiles(p, t0, nr, sc, kt, sink);
  for (int r = 0; r < nr; ++r)
    for_each_logit_block(p, t0 + r, sc[r], [&](int s0, int n, const float* scores) { sink(r, s0, n, scores); });
}

}  // namespace

// V3.2 Indexer.forward step 5 (act_quant of q per head and k per token, block 128) and step 7
// (w' = w · q_scale): produces exactly the inputs of the kFp8 logits.
void indexer_quantize_fp8(const IndexerQuantizeParams& p) {
  ::dsa::detail::validate_indexer_quantize_args(p);

  const int64_t heads = static_cast<int64_t>(p.T) * p.HI;
  std::vector<float> q_scale(static_cast<size_t>(heads));  // s_q[t,h]: DI == 128 → one block per head
  if (heads > 0)
    fp8_block_quantize({.N = heads, .C = p.DI, .format = p.format, .x = p.q, .q = p.q_fp8, .scales = q_scale.data()});
  if (p.S > 0)
    fp8_block_quantize({.N = p.S, .C = p.DI, .format = p.format, .x = p.k, .q = p.k_fp8, .scales = p.k_scale});
  for (int64_t i = 0; i < heads; ++i) p.w_folded[i] = p.w[i] * q_scale[static_cast<size_t>(i)];  // step 7
}

void indexer_logits(const IndexerParams& p, float* logits) {
  constexpr const char* op = "indexer_logits";
  detail::validate_indexer_params(p, op);
  ::dsa::detail::require_ptr(logits, op, "logits");
  if (p.precision == Precision::kFp8) (void)fp8_table();  // build (and let it throw) outside the parallel region
  const KeyTiles kt = prepare_key_tiles(p);

  const int groups = (p.T + kRowGroup - 1) / kRowGroup;
#pragma omp parallel
  {
    std::vector<RowScratch> sc(kRowGroup, RowScratch(p));
#pragma omp for schedule(dynamic, 1)  // causal rows differ in length
    for (int g = 0; g < groups; ++g) {
      const int t0 = g * kRowGroup, nr = std::min(kRowGroup, p.T - t0);
      for (int t = t0; t < t0 + nr; ++t) {
        float* row = logits + static_cast<int64_t>(t) * p.S;
        std::fill(row, row + p.ks[t], kNegInf);  // cleaned: −inf outside [ks, ke)
        std::fill(row + p.ke[t], row + p.S, kNegInf);
      }
      for_each_logit_block_group(p, t0, nr, sc, kt, [&](int r, int s0, int n, const float* scores) {
        std::copy(scores, scores + n, logits + static_cast<int64_t>(t0 + r) * p.S + s0);
      });
    }
  }
}

void indexer_topk(const IndexerParams& p, int K, int32_t* indices) {
  constexpr const char* op = "indexer_topk";
  detail::validate_indexer_params(p, op);
  detail::require_topk_budget(K, op);
  ::dsa::detail::require_ptr(indices, op, "indices");
  if (p.precision == Precision::kFp8) (void)fp8_table();
  const KeyTiles kt = prepare_key_tiles(p);  // O(S·DI): the keys in tile layout (AVX2 / AVX-512 paths)

  const int groups = (p.T + kRowGroup - 1) / kRowGroup;
#pragma omp parallel
  {
    std::vector<RowScratch> sc(kRowGroup, RowScratch(p));                    // O(HI·DI + kKeyBlock·DI) per row
    std::vector<detail::TopkStream> streams(kRowGroup, detail::TopkStream(K));  // O(K): the running top-K per row
#pragma omp for schedule(dynamic, 1)
    for (int g = 0; g < groups; ++g) {
      const int t0 = g * kRowGroup, nr = std::min(kRowGroup, p.T - t0);
      for (int r = 0; r < nr; ++r) streams[r].reset();
      for_each_logit_block_group(p, t0, nr, sc, kt,
                                 [&](int r, int s0, int n, const float* scores) { streams[r].offer_block(scores, n, s0); });
      for (int r = 0; r < nr; ++r) streams[r].finish(indices + static_cast<int64_t>(t0 + r) * K);
    }
  }
}

}  // namespace dsa::cpu
