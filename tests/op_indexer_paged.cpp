// op_indexer_paged.cpp — row "indexer_logits_paged" (ops.h §11, docs §11).
//
// Each case builds a paged indexer cache the way a server does: the pages of every request are
// drawn from a shuffled pool that also holds unused pages, and every unused byte is NaN (0xFF is NaN
// in e4m3 and fp32), so reading a slot the contract says is not read poisons the result. The float64
// reference decodes the cache bytes with its own e4m3 decoder (not op 1's). Oracle:
//   paged logits ≡ indexer_logits (kFp8) on the gathered contiguous rows (bitwise on the CPU, and on
//                  every backend for exact-dot data)
#include <algorithm>
#include <functional>
#include <numeric>

#include "paged_cache.h"
#include "table.h"

namespace dsa::test {
namespace {

// ═══════════════════════════════ indexer_logits_paged ════════════════════════════════════════
struct PagedLogitsCase {
  const char* name;
  int next_n, HI;
  std::vector<int> lens;       // tokens held in each request's cache (B = lens.size())
  bool mtp_rule;               // context_lens[b,n] = L − next_n + n + 1; else random in [0, L]
  bool packed;                 // keys from fp32 through indexer_cache_pack; else random e4m3 bytes
  int extra_ctx;               // max_context_len = max L + extra_ctx
  uint64_t seed;
  bool exact_dots = false;     // q and keys from kExactDotCodes (test_util.h), scales in [1/4, 2]
};

struct PagedLogitsInputs {
  int B = 0, rows = 0, max_ctx = 0;
  PagedLayout layout;
  std::vector<uint8_t> cache, q;
  std::vector<float> w;
  std::vector<int32_t> context_lens;
  PagedIndexerParams params() const {
    return {.B = B, .next_n = rows / B, .HI = static_cast<int>(w.size() / rows), .num_pages = layout.num_pages,
            .max_blocks = layout.max_blocks, .max_context_len = max_ctx, .q_fp8 = q.data(), .cache = cache.data(),
            .w = w.data(), .context_lens = context_lens.data(), .block_table = layout.table.data()};
  }
};

PagedLogitsInputs make_paged_logits(const PagedLogitsCase& c) {
  Rng rng(c.seed);
  PagedLogitsInputs in;
  in.B = static_cast<int>(c.lens.size());
  in.rows = in.B * c.next_n;
  in.max_ctx = *std::max_element(c.lens.begin(), c.lens.end()) + c.extra_ctx;
  in.layout = make_layout(c.lens, /*spare_pages=*/3, /*spare_blocks=*/1, rng);
  in.cache.assign(in.layout.num_pages * kIdxPageBytes, kNanByte);
  for (int b = 0; b < in.B; ++b) {
    const int L = c.lens[b];
    if (c.exact_dots) {
      for (int64_t j = 0; j < L; ++j) {
        uint8_t* page = &in.cache[in.layout.page(b, j) * kIdxPageBytes];
        for (int d = 0; d < kIndexerKeyDim; ++d)
          page[(j % kPage) * kIndexerKeyDim + d] = kExactDotCodes[rng.integer(0, std::size(kExactDotCodes) - 1)];
        const float s = rng.uniform(0.25f, 2.0f);
        std::memcpy(page + kIdxScaleOffset + (j % kPage) * 4, &s, 4);
      }
    } else if (c.packed) {  // the model's path: fp32 keys → indexer_cache_pack → pages scattered into the pool
      std::vector<float> k = rng.normal_vec(static_cast<size_t>(L) * kIndexerKeyDim);
      std::vector<uint8_t> own(((L + kPage - 1) / kPage) * kIdxPageBytes);
      cpu::indexer_cache_pack({.N = L, .format = ScaleFormat::kUe8m0, .k = k.data(), .cache = own.data()});
      for (int i = 0; i < (L + kPage - 1) / kPage; ++i)
        std::memcpy(&in.cache[in.layout.page(b, int64_t{i} * kPage) * kIdxPageBytes], &own[i * kIdxPageBytes],
                    kIdxPageBytes);
    } else {
      for (int64_t j = 0; j < L; ++j) {
        uint8_t* page = &in.cache[in.layout.page(b, j) * kIdxPageBytes];
        for (int d = 0; d < kIndexerKeyDim; ++d) page[(j % kPage) * kIndexerKeyDim + d] = random_e4m3(rng);
        const float s = rng.uniform(1e-3f, 1e-2f);
        std::memcpy(page + kIdxScaleOffset + (j % kPage) * 4, &s, 4);
      }
    }
  }
  in.q.resize(static_cast<size_t>(in.rows) * c.HI * kIndexerKeyDim);
  for (auto& v : in.q)
    v = c.exact_dots ? kExactDotCodes[rng.integer(0, std::size(kExactDotCodes) - 1)] : random_e4m3(rng);
  in.w = rng.normal_vec(static_cast<size_t>(in.rows) * c.HI);
  in.context_lens.resize(in.rows);
  for (int b = 0; b < in.B; ++b)
    for (int n = 0; n < c.next_n; ++n)
      in.context_lens[b * c.next_n + n] =
          c.mtp_rule ? std::max(0, c.lens[b] - c.next_n + n + 1) : rng.integer(0, c.lens[b]);
  return in;
}

void run_paged_logits_case(Backend& be, const PagedLogitsCase& c) {
  SCOPED_TRACE(c.name);
  const PagedLogitsInputs in = make_paged_logits(c);
  const PagedIndexerParams p = in.params();
  const size_t n_out = static_cast<size_t>(in.rows) * in.max_ctx;
  Guarded<float> logits(n_out);
  be.indexer_logits_paged(p, logits.data());
  EXPECT_GUARDS(logits);

  // float64 reference on the dequantised cache; mag = s·Σ_h |w|·Σ_d |q·k| (the error scale).
  std::vector<double> ref(n_out, -kInf), mag(n_out, 0.0);
  for (int r = 0; r < in.rows; ++r) {
    const int b = r / c.next_n;
    for (int64_t j = 0; j < in.context_lens[r]; ++j) {
      const uint8_t* page = &in.cache[in.layout.page(b, j) * kIdxPageBytes];
      const uint8_t* k = page + (j % kPage) * kIndexerKeyDim;
      const double s = f32_at(page + kIdxScaleOffset + (j % kPage) * 4);
      const std::vector<double>& e4m3 = e4m3_values();
      double acc = 0, acc_abs = 0;
      for (int h = 0; h < c.HI; ++h) {
        const uint8_t* qh = &in.q[(static_cast<size_t>(r) * c.HI + h) * kIndexerKeyDim];
        double dot = 0, dot_abs = 0;
        for (int d = 0; d < kIndexerKeyDim; ++d) {
          dot += e4m3[qh[d]] * e4m3[k[d]];
          dot_abs += std::fabs(e4m3[qh[d]] * e4m3[k[d]]);
        }
        const double wv = in.w[static_cast<size_t>(r) * c.HI + h];
        acc += wv * std::max(dot, 0.0);
        acc_abs += std::fabs(wv) * dot_abs;
      }
      ref[r * in.max_ctx + j] = s * acc;
      mag[r * in.max_ctx + j] = s * acc_abs;
    }
  }
  // −inf exactly where j ≥ context_lens[r] (always cleaned); with the MTP rule this is DeepGEMM's
  // 1-D causal rule "key j visible to row (b, n) iff j ≤ L − next_n + n".
  for (int r = 0; r < in.rows; ++r)
    for (int64_t j = 0; j < in.max_ctx; ++j) {
      const float g = logits[r * in.max_ctx + j];
      const bool visible = c.mtp_rule ? j <= c.lens[r / c.next_n] - c.next_n + r % c.next_n : j < in.context_lens[r];
      if (!visible) {
        ASSERT_TRUE(std::isinf(g) && g < 0) << "row " << r << " key " << j << " = " << g << " must be -inf";
      } else {
        ASSERT_TRUE(std::isfinite(g)) << "row " << r << " key " << j << " = " << g << " (a NaN page was read?)";
      }
    }
  // fp32 arithmetic as in op 3 (products exact): the 128-term dot sum (γ_128 of Σ|q·k|, ReLU is
  // 1-Lipschitz), the w product (u), the HI-term head sum (γ_HI) and the k-scale product (u), with
  // mag = s·Σ_h |w|·Σ_d |q·k|: |got − ref| ≤ (128 + HI + 4)·u·mag (first order, Higham §3).
  // A tensor-core backend (the kWgmma variant) accumulates each dot in the fp8 tensor core's narrower
  // adder instead: + kFp8AccumRel·mag (test_util.h derives it); its epilogue stays within the fp32 term.
  // On exact-dot data (kExactDotCodes) the accumulation is exact in every variant: no such term.
  const bool tensor = be.arith("indexer_logits_paged") == Arith::kTensor && !c.exact_dots;
  const double rel = (kIndexerKeyDim + c.HI + 4) * kU32 + (tensor ? kFp8AccumRel : 0.0);
  for (size_t i = 0; i < n_out; ++i) {
    if (!std::isfinite(ref[i])) continue;
    ASSERT_LE(std::fabs(logits[i] - ref[i]), rel * mag[i] + 1e-30) << "element " << i;
  }
  // Determinism: a rerun on one thread is bitwise identical (every logit has one owner).
  Guarded<float> again(n_out);
  with_one_thread([&] { be.indexer_logits_paged(p, again.data()); });
  EXPECT_TRUE(bitwise_equal(logits.data(), again.data(), n_out)) << "rerun differs";

  // Oracle: op 3 in kFp8 mode on each request's gathered contiguous rows. On the CPU bitwise
  // (dsa::cpu::indexer_logits: the same fp32 dot order d = 0..127, fixed head order and k-scale
  // placement — ops.h §3, docs §11). Another backend's kernels may order or fuse (FMA) the dot
  // differently: there the two need only agree within the sum of their bounds above (a tensor-core
  // class runs both ops with its variant where it takes the case: kWgmma for HI = 64).
  for (int b = 0; b < in.B; ++b) {
    const int L = c.lens[b];
    std::vector<uint8_t> kg(static_cast<size_t>(L) * kIndexerKeyDim);
    std::vector<float> sg(L);
    for (int64_t j = 0; j < L; ++j) {
      const uint8_t* page = &in.cache[in.layout.page(b, j) * kIdxPageBytes];
      std::memcpy(&kg[j * kIndexerKeyDim], page + (j % kPage) * kIndexerKeyDim, kIndexerKeyDim);
      sg[j] = f32_at(page + kIdxScaleOffset + (j % kPage) * 4);
    }
    std::vector<int32_t> ks(c.next_n, 0), ke(in.context_lens.begin() + b * c.next_n,
                                              in.context_lens.begin() + (b + 1) * c.next_n);
    const IndexerParams ip{.T = c.next_n, .S = L, .HI = c.HI, .DI = kIndexerKeyDim, .precision = Precision::kFp8,
                           .q = in.q.data() + static_cast<size_t>(b) * c.next_n * c.HI * kIndexerKeyDim,
                           .k = kg.data(), .k_scale = sg.data(), .w = in.w.data() + static_cast<size_t>(b) * c.next_n * c.HI,
                           .ks = ks.data(), .ke = ke.data()};
    std::vector<float> flat(static_cast<size_t>(c.next_n) * L);
    be.indexer_logits(ip, flat.data());
    for (int n = 0; n < c.next_n; ++n) {
      const size_t row = (static_cast<size_t>(b) * c.next_n + n) * in.max_ctx;
      // Exact dots: every variant sums the same exact dots and runs its contiguous twin's epilogue
      // (cuda_ops.h §11: kExact, kMma and kWgmma paged share the per-element arithmetic of
      // indexer_logits of the same variant), so the two agree bit for bit on every backend.
      if (be.name() == "cpu" || c.exact_dots) {
        ASSERT_TRUE(bitwise_equal(flat.data() + n * L, logits.data() + row, L))
            << "paged != indexer_logits on gathered rows, request " << b << " row " << n;
        continue;
      }
      for (int j = 0; j < L; ++j) {
        const float a = flat[static_cast<size_t>(n) * L + j], g = logits[row + j];
        if (std::isinf(a) || std::isinf(g)) {
          ASSERT_EQ(a, g) << "request " << b << " row " << n << " key " << j;
        } else {
          ASSERT_LE(std::fabs(a - g), 2 * rel * mag[row + j] + 1e-30)
              << "paged vs indexer_logits, request " << b << " row " << n << " key " << j;
        }
      }
    }
  }
}

void paged_logits_bad_inputs(Backend& be) {
  const PagedLogitsCase c{"bad", 2, 4, {70, 5}, true, false, 3, 901};
  const PagedLogitsInputs in = make_paged_logits(c);
  const size_t n_out = static_cast<size_t>(in.rows) * in.max_ctx;
  auto expect_throw = [&](PagedIndexerParams p, std::initializer_list<const char*> names, bool null_out = false) {
    Guarded<float> logits(n_out);
    EXPECT_TRUE(throws_naming([&] { be.indexer_logits_paged(p, null_out ? nullptr : logits.data()); }, names));
    EXPECT_TRUE(logits.untouched());
    EXPECT_GUARDS(logits);
  };
  constexpr const char* op = "indexer_logits_paged";
  PagedIndexerParams p = in.params();
  for (int bad : {0, 3, -1}) {
    p.next_n = bad;
    expect_throw(p, {op, "next_n"});
  }
  const auto mutated = [&](auto&& edit) {
    PagedIndexerParams m = in.params();
    edit(m);
    return m;
  };
  expect_throw(mutated([](auto& m) { m.HI = 0; }), {op, "HI"});
  expect_throw(mutated([](auto& m) { m.HI = -4; }), {op, "HI"});
  expect_throw(mutated([](auto& m) { m.B = 0; }), {op, "B = 0"});
  expect_throw(mutated([](auto& m) { m.q_fp8 = nullptr; }), {op, "q_fp8"});
  expect_throw(mutated([](auto& m) { m.cache = nullptr; }), {op, "cache"});
  expect_throw(mutated([](auto& m) { m.w = nullptr; }), {op, "w is null"});
  expect_throw(mutated([](auto& m) { m.context_lens = nullptr; }), {op, "context_lens"});
  expect_throw(mutated([](auto& m) { m.block_table = nullptr; }), {op, "block_table"});
  expect_throw(in.params(), {op, "logits"}, /*null_out=*/true);
  {  // a context length above max_context_len, one above the table's max_blocks·64, a negative one
    PagedLogitsInputs bad = in;
    bad.context_lens[1] = in.max_ctx + 1;
    expect_throw(bad.params(), {op, "context_lens[0,1]", "max_context_len"});
    bad = in;
    bad.max_ctx = bad.layout.max_blocks * kPage + 10;
    bad.context_lens[2] = bad.layout.max_blocks * kPage + 1;
    expect_throw(bad.params(), {op, "context_lens[1,0]", "max_blocks"});
    bad = in;
    bad.context_lens[3] = -1;
    expect_throw(bad.params(), {op, "context_lens[1,1]"});
  }
  {  // a bad page id in a page that request 0 reads (L = 70: blocks 0 and 1). The −1 padding past
     // a request's last page (make_layout) is never read, so every valid case also checks that
     // it does not throw.
    PagedLogitsInputs bad = in;
    bad.layout.table[1] = bad.layout.num_pages;
    expect_throw(bad.params(), {op, "block_table[0,1]", "num_pages"});
    bad.layout.table[1] = -1;
    expect_throw(bad.params(), {op, "block_table[0,1]"});
  }
}


}  // namespace

void check_indexer_logits_paged(Backend& be) {
  std::vector<PagedLogitsCase> cases = {
      // name                                   next_n HI  lens              mtp   packed extra seed [exact dots]
      {"B=1 context_len 1", 1, 4, {1}, true, false, 0, 11},
      {"B=1 one full page", 1, 3, {64}, true, false, 5, 12},
      {"B=3 lens ±1 around 64/128", 1, 5, {63, 65, 129}, true, false, 7, 13},
      {"B=3 MTP next_n=2", 2, 4, {65, 1, 130}, true, false, 2, 14},
      {"B=3 2-D lens (DeepGEMM HEAD)", 2, 3, {100, 64, 7}, false, false, 64, 15},
      {"B=3 packed fp32 keys, MTP", 2, 8, {200, 37, 128}, true, true, 1, 16},
      {"B=1 long row, V3.2 HI=64", 2, 64, {1000}, true, true, 24, 17},
      // HI = 64: the shapes the tensor-core classes run (one 64-key page per MMA tile). Each
      // breaks one thing: a one-key context; rows of length 0 (MTP with L = 1) and lengths ±1 around
      // the page; 2-D random lengths (keys past a row's length inside a read page must be −inf) with
      // max_context_len well past the last page; long rows whose pages the kernel splits over CTAs;
      // many requests of mixed lengths (pages past a short request's length never read: NaN).
      {"V3.2 HI=64 context_len 1", 1, 64, {1}, true, false, 0, 31},
      {"V3.2 HI=64 MTP, lens ±1 around pages", 2, 64, {63, 65, 1, 128, 129}, true, false, 3, 32},
      {"V3.2 HI=64 2-D lens next_n=1, padded rows", 1, 64, {300, 64, 7, 191}, false, true, 130, 33},
      {"V3.2 HI=64 2-D lens next_n=2", 2, 64, {700, 2, 450}, false, true, 64, 34},
      {"V3.2 HI=64 long rows split over CTAs", 2, 64, {4100, 1, 2500, 3333}, true, true, 0, 35},
      {"V3.2 HI=64 24 requests of mixed lengths", 1, 64,
       {17, 64, 65, 127, 128, 129, 1, 200, 255, 256, 257, 33, 640, 5, 63, 1000, 2, 191, 192, 193, 77, 320, 96, 1},
       false, false, 9, 36},
      // Other head counts of the kMma class (HI a multiple of 16, next_n·HI ≤ 128): 8 head groups of one
      // row; one head group per row.
      {"HI=128 next_n=1, 2-D lens", 1, 128, {150, 64, 1}, false, true, 10, 37},
      {"HI=16 MTP next_n=2", 2, 16, {90, 200, 2}, true, false, 0, 38},
      // Exact dots at HI = 64: only the fp32 epilogue rounds, so every variant is held to the fp32
      // bound and equals indexer_logits of its variant on the gathered keys bit for bit — this pins
      // the tensor-core kernels' operand layouts, swizzles and head order.
      {"exact dots HI=64 context_len 1", 1, 64, {1}, true, false, 0, 41, true},
      {"exact dots HI=64 MTP, lens ±1 around pages", 2, 64, {63, 64, 65, 1, 129}, true, false, 2, 42, true},
      {"exact dots HI=64 2-D lens, rows padded past the last page", 1, 64, {300, 7, 191, 128}, false, false, 200, 43,
       true},
      {"exact dots HI=64 long rows split over CTAs", 2, 64, {5000, 1, 2600}, true, false, 5, 45, true},
  };
  {  // a decode batch: 32 requests × next_n 2 of mixed lengths (MTP rule), many CTAs per request and
     // short requests that finish early
    PagedLogitsCase batch{"V3.2 HI=64 decode batch, 32 requests of 1..1000 keys", 2, 64, {}, true, true, 17, 47};
    Rng rng(46);
    for (int b = 0; b < 32; ++b) batch.lens.push_back(b % 9 == 0 ? rng.integer(1, 70) : rng.integer(1, 1000));
    cases.push_back(batch);
  }
  for (const auto& c : cases) run_paged_logits_case(be, c);
  paged_logits_bad_inputs(be);
}


}  // namespace dsa::test
