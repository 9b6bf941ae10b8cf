// op_decode.cpp — rows "indexer_logits_paged" and "sparse_attention_decode" (ops.h §11, docs §11).
//
// Each case builds a paged cache the way a server does: the pages of every request are drawn from
// a shuffled pool that also holds unused pages, and every unused byte is NaN (0xFF is NaN in e4m3,
// bf16 and fp32), so reading a slot the contract says is not read poisons the result. The float64
// references decode the cache bytes with their own e4m3/bf16 decoders (not op 1's). Oracles:
//   paged logits  ≡ indexer_logits (kFp8) on the gathered contiguous rows (bitwise on the CPU)
//   decode row t  ≡ dsa::cpu::sparse_attention_forward (prefill row t) on the dequantised kv,
//                   reached through paged_to_physical of the logical selection
#include <omp.h>

#include <algorithm>
#include <functional>
#include <numeric>

#include "table.h"

namespace dsa::test {
namespace {

constexpr int kDqk = kMlaLatentDim + kMlaRopeDim;     // 576
constexpr int kDv = kMlaLatentDim;                    // 512
constexpr int kPage = kCachePageTokens;               // 64
constexpr size_t kIdxPageBytes = static_cast<size_t>(kPage) * kIndexerRecordBytes;      // 8448
constexpr size_t kIdxScaleOffset = static_cast<size_t>(kPage) * kIndexerKeyDim;         // 8192
constexpr size_t kMlaScaleOffset = kMlaLatentDim;                                        // 512
constexpr size_t kMlaRopeOffset = kMlaLatentDim + (kMlaLatentDim / kQuantBlock) * 4;     // 528
constexpr double kU32 = 0x1p-24;                      // unit roundoff of fp32
constexpr uint8_t kNanByte = 0xFF;                    // NaN as e4m3, and every fp32/bf16 made of it
constexpr double kInf = std::numeric_limits<double>::infinity();

// ── independent decoders ────────────────────────────────────────────────────────────────────
double e4m3_value(uint8_t b) {
  const int e = (b >> 3) & 0xF, m = b & 7;
  if (e == 0xF && m == 7) return std::numeric_limits<double>::quiet_NaN();
  const double mag = e == 0 ? std::ldexp(m, -9) : std::ldexp(8 + m, e - 10);  // (1+m/8)·2^(e−7)
  return (b & 0x80) ? -mag : mag;
}
float bf16_value(uint16_t bits) {
  const uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
float f32_at(const uint8_t* p) {
  float f;
  std::memcpy(&f, p, sizeof f);
  return f;
}
const std::vector<double>& e4m3_values() {  // all 256 codes, for the hot loops of the references
  static const std::vector<double> t = [] {
    std::vector<double> v(256);
    for (int b = 0; b < 256; ++b) v[b] = e4m3_value(static_cast<uint8_t>(b));
    return v;
  }();
  return t;
}
uint8_t random_e4m3(Rng& rng) {  // any finite code, every binade and both signs
  int b;
  do b = rng.integer(0, 255);
  while ((b & 0x7F) == 0x7F);
  return static_cast<uint8_t>(b);
}

// Runs fn with OpenMP limited to one thread (then restores the count): results must not depend on it.
template <typename Fn>
void with_one_thread(Fn&& fn) {
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  fn();
  omp_set_num_threads(threads);
}

// ── paged layout: request b's logical token j lives in slot table[b, j/64]·64 + j%64 ─────────
struct PagedLayout {
  int num_pages = 0, max_blocks = 0;
  std::vector<int32_t> table;  // [B, max_blocks]; entries past a request's pages are −1 (never read)
  int32_t page(int b, int64_t j) const { return table[static_cast<size_t>(b) * max_blocks + j / kPage]; }
  int64_t slot(int b, int64_t j) const { return static_cast<int64_t>(page(b, j)) * kPage + j % kPage; }
};

PagedLayout make_layout(const std::vector<int>& lens, int spare_pages, int spare_blocks, Rng& rng) {
  PagedLayout l;
  int used = 0, widest = 0;
  for (int L : lens) {
    used += (L + kPage - 1) / kPage;
    widest = std::max(widest, (L + kPage - 1) / kPage);
  }
  l.num_pages = used + spare_pages;
  l.max_blocks = std::max(1, widest + spare_blocks);
  std::vector<int32_t> pool(l.num_pages);
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), rng.engine());
  l.table.assign(lens.size() * l.max_blocks, kInvalidIndex);
  size_t next = 0;
  for (size_t b = 0; b < lens.size(); ++b)
    for (int i = 0; i < (lens[b] + kPage - 1) / kPage; ++i) l.table[b * l.max_blocks + i] = pool[next++];
  return l;
}

// ═══════════════════════════════ indexer_logits_paged ════════════════════════════════════════
struct PagedLogitsCase {
  const char* name;
  int next_n, HI;
  std::vector<int> lens;       // tokens held in each request's cache (B = lens.size())
  bool mtp_rule;               // context_lens[b,n] = L − next_n + n + 1; else random in [0, L]
  bool packed;                 // keys from fp32 through indexer_cache_pack; else random e4m3 bytes
  int extra_ctx;               // max_context_len = max L + extra_ctx
  uint64_t seed;
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
    if (c.packed) {  // the model's path: fp32 keys → indexer_cache_pack → pages scattered into the pool
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
  for (auto& v : in.q) v = random_e4m3(rng);
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
  const bool tensor = be.arith("indexer_logits_paged") == Arith::kTensor;
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
      if (be.name() == "cpu") {
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

// ═══════════════════════════════ sparse_attention_decode ═════════════════════════════════════
struct DecodeCase {
  const char* name;
  KvCacheFormat format;
  int next_n, H, K;
  std::vector<int> lens;       // tokens in each request's cache; row (b, n) sits at L − next_n + n
  bool use_topk_length;        // random topk_length[r] in [0, K]; the tail holds unread entries
  bool duplicates;             // keys drawn with replacement (a duplicate counts twice)
  int empty_row;               // a row whose indices are all −1 (−1: none)
  uint64_t seed;
};

struct DecodeInputs {
  int B = 0, rows = 0;
  int64_t num_slots = 0, S = 0;
  float scale = 0;
  PagedLayout layout;
  std::vector<int64_t> offset;       // request b's first key in the contiguous kv
  std::vector<float> kv;             // [S, 576] the fp32 original
  std::vector<float> kv_deq;         // [S, 576] what the cache holds, dequantised (the prefill's kv)
  std::vector<float> cache_f32;      // [slots, 576]  (one of the three, by format)
  std::vector<uint16_t> cache_bf16;  // [slots, 576]
  std::vector<uint8_t> cache_fp8;    // [slots, 656]
  std::vector<float> q;              // [rows, H, 576]
  std::vector<int32_t> logical;      // [rows, K] positions inside the request
  std::vector<int32_t> physical;     // [rows, K] slots (paged_to_physical of logical)
  std::vector<int32_t> topk_length;  // [rows] or empty
  const void* cache(KvCacheFormat f) const {
    return f == KvCacheFormat::kFp32 ? static_cast<const void*>(cache_f32.data())
           : f == KvCacheFormat::kBf16 ? static_cast<const void*>(cache_bf16.data())
                                       : static_cast<const void*>(cache_fp8.data());
  }
  int len(int64_t r, int K) const { return topk_length.empty() ? K : topk_length[r]; }
  // The keys row r attends to, as contiguous-kv rows (duplicates kept, −1 dropped).
  std::vector<int64_t> selection(int64_t r, int K, int next_n) const {
    std::vector<int64_t> sel;
    for (int k = 0; k < len(r, K); ++k)
      if (logical[r * K + k] != kInvalidIndex) sel.push_back(offset[r / next_n] + logical[r * K + k]);
    return sel;
  }
};

DecodeInputs make_decode(Backend& be, const DecodeCase& c) {
  Rng rng(c.seed);
  DecodeInputs in;
  in.B = static_cast<int>(c.lens.size());
  in.rows = in.B * c.next_n;
  in.scale = static_cast<float>(1.0 / std::sqrt(192.0));  // V3.2's 192^-0.5 (no YaRN mscale here)
  in.layout = make_layout(c.lens, /*spare_pages=*/2, /*spare_blocks=*/1, rng);
  in.num_slots = static_cast<int64_t>(in.layout.num_pages) * kPage;
  for (int L : c.lens) {
    in.offset.push_back(in.S);
    in.S += L;
  }
  in.kv = rng.normal_vec(in.S * kDqk);
  in.kv_deq = in.kv;
  const size_t slots = static_cast<size_t>(in.num_slots);
  switch (c.format) {
    case KvCacheFormat::kFp32:
      in.cache_f32.assign(slots * kDqk, std::numeric_limits<float>::quiet_NaN());
      break;
    case KvCacheFormat::kBf16:
      in.cache_bf16.assign(slots * kDqk, 0xFFFF);
      break;
    case KvCacheFormat::kFp8Record:
      in.cache_fp8.assign(slots * kMlaRecordBytes, kNanByte);
      break;
  }
  for (int b = 0; b < in.B; ++b) {
    const int L = c.lens[b];
    std::vector<uint8_t> records;
    if (c.format == KvCacheFormat::kFp8Record) {  // the model's path: mla_cache_pack, then unpack
      records.resize(static_cast<size_t>(L) * kMlaRecordBytes);
      std::vector<float> rows(in.kv.begin() + in.offset[b] * kDqk, in.kv.begin() + (in.offset[b] + L) * kDqk);
      MlaCacheParams mp{.N = L, .format = ScaleFormat::kFloat, .kv = rows.data(), .records = records.data()};
      cpu::mla_cache_pack(mp);
      mp.kv = &in.kv_deq[in.offset[b] * kDqk];
      cpu::mla_cache_unpack(mp);
    }
    for (int64_t j = 0; j < L; ++j) {
      const int64_t slot = in.layout.slot(b, j), key = in.offset[b] + j;
      if (c.format == KvCacheFormat::kFp32) {
        std::copy_n(&in.kv[key * kDqk], kDqk, &in.cache_f32[slot * kDqk]);
      } else if (c.format == KvCacheFormat::kBf16) {
        // Truncation makes a valid bf16 without depending on op 1's rounding.
        for (int d = 0; d < kDqk; ++d) {
          uint32_t u;
          std::memcpy(&u, &in.kv[key * kDqk + d], 4);
          in.cache_bf16[slot * kDqk + d] = static_cast<uint16_t>(u >> 16);
          in.kv_deq[key * kDqk + d] = bf16_value(static_cast<uint16_t>(u >> 16));
        }
      } else {
        std::memcpy(&in.cache_fp8[slot * kMlaRecordBytes], &records[j * kMlaRecordBytes], kMlaRecordBytes);
      }
    }
  }
  in.q = rng.normal_vec(static_cast<size_t>(in.rows) * c.H * kDqk);
  in.logical.assign(static_cast<size_t>(in.rows) * c.K, kInvalidIndex);
  for (int r = 0; r < in.rows; ++r) {
    const int t = c.lens[r / c.next_n] - c.next_n + r % c.next_n;  // the row's position; keys ≤ t
    int32_t* row = &in.logical[static_cast<size_t>(r) * c.K];
    if (r == c.empty_row || t < 0) continue;
    const int count = std::min(c.K, t + 1);
    std::vector<int32_t> keys(t + 1);
    std::iota(keys.begin(), keys.end(), 0);
    std::shuffle(keys.begin(), keys.end(), rng.engine());
    for (int k = 0; k < count; ++k) row[k] = c.duplicates ? rng.integer(0, t) : keys[k];
    std::shuffle(row, row + c.K, rng.engine());  // −1 slots interspersed
    if (c.duplicates)  // besides the random repeats, some adjacent ones (a dedupe of runs shows)
      for (int k = 1; k < c.K; k += 4)
        if (row[k - 1] != kInvalidIndex && row[k] != kInvalidIndex) row[k] = row[k - 1];
  }
  if (c.use_topk_length)
    for (int r = 0; r < in.rows; ++r) in.topk_length.push_back(rng.integer(0, c.K));
  // Logical → physical through the op under test, checked against the layout.
  in.physical = in.logical;
  be.paged_to_physical(in.B, c.next_n, c.K, in.layout.table.data(), in.layout.max_blocks, in.layout.num_pages,
                       in.physical.data());
  for (size_t i = 0; i < in.physical.size(); ++i) {
    const int32_t j = in.logical[i];
    const int64_t want = j == kInvalidIndex ? kInvalidIndex : in.layout.slot(static_cast<int>(i / c.K / c.next_n), j);
    EXPECT_EQ(in.physical[i], want) << "paged_to_physical at " << i;
  }
  return in;
}

SparseDecodeParams decode_params(const DecodeCase& c, const DecodeInputs& in, float* out, float* lse) {
  return {.B = in.B, .next_n = c.next_n, .H = c.H, .K = c.K, .num_slots = in.num_slots, .scale = in.scale,
          .format = c.format, .q = in.q.data(), .cache = in.cache(c.format), .indices = in.physical.data(),
          .topk_length = in.topk_length.empty() ? nullptr : in.topk_length.data(), .out = out, .lse = lse};
}

// float64 attention of every row over `keys` [S, 576] (contiguous kv rows), plus the magnitudes
// the error bounds need.
struct AttnRef {
  std::vector<double> out, abs_out;  // [rows, H, 512]: Σ p·v and Σ p·|v|
  std::vector<double> lse, zmag;     // [rows, H]: lse and max_s scale·Σ_d |q_d·v_d|
  std::vector<double> vmax;          // [rows, 512]: max over the row's keys of |v_d|
};

AttnRef attention_ref(const DecodeCase& c, const DecodeInputs& in, const std::vector<double>& keys) {
  AttnRef ref;
  const size_t rh = static_cast<size_t>(in.rows) * c.H;
  ref.out.assign(rh * kDv, 0.0);
  ref.abs_out.assign(rh * kDv, 0.0);
  ref.lse.assign(rh, kInf);
  ref.zmag.assign(rh, 0.0);
  ref.vmax.assign(static_cast<size_t>(in.rows) * kDv, 0.0);
  for (int r = 0; r < in.rows; ++r) {
    const std::vector<int64_t> sel = in.selection(r, c.K, c.next_n);
    for (int64_t s : sel)
      for (int d = 0; d < kDv; ++d) ref.vmax[r * kDv + d] = std::max(ref.vmax[r * kDv + d], std::fabs(keys[s * kDqk + d]));
    if (sel.empty()) continue;
    for (int h = 0; h < c.H; ++h) {
      const size_t i = static_cast<size_t>(r) * c.H + h;
      const float* q = &in.q[i * kDqk];
      std::vector<double> z(sel.size());
      double m = -kInf;
      for (size_t k = 0; k < sel.size(); ++k) {
        double dot = 0, dot_abs = 0;
        for (int d = 0; d < kDqk; ++d) {
          dot += q[d] * keys[sel[k] * kDqk + d];
          dot_abs += std::fabs(q[d] * keys[sel[k] * kDqk + d]);
        }
        z[k] = in.scale * dot;
        ref.zmag[i] = std::max(ref.zmag[i], in.scale * dot_abs);
        m = std::max(m, z[k]);
      }
      double sum = 0;
      for (double zk : z) sum += std::exp(zk - m);
      ref.lse[i] = m + std::log(sum);
      for (size_t k = 0; k < sel.size(); ++k) {
        const double pk = std::exp(z[k] - ref.lse[i]);
        for (int d = 0; d < kDv; ++d) {
          ref.out[i * kDv + d] += pk * keys[sel[k] * kDqk + d];
          ref.abs_out[i * kDv + d] += pk * std::fabs(keys[sel[k] * kDqk + d]);
        }
      }
    }
  }
  return ref;
}

// Error model of an implementation, as relative errors: of its dequantised values (deq), of its
// logits w.r.t. Σ|q·v| (dot) and of its softmax normalisation / V sum (sum). Propagation (docs
// §11): logits off by ≤ E give |Δlse| ≤ E and |Δp| ≤ p·expm1(2E); with values off by ≤ δ,
// |Δout_d| ≤ expm1(2E)·Σp|v_d| + max δ_d. 2u covers the final fp32 rounding of out and lse.
struct ErrModel {
  double deq, dot, sum;
};
constexpr double kU64Slack = 1e-12;                              // fp64 accumulation noise, generous
constexpr ErrModel kFp64Accumulation{0, kU64Slack, kU64Slack};  // this CPU decode: fp64 z, softmax, sums
ErrModel fp32_accumulation(int K) {  // a backend summing in fp32 in any order: γ_n ≈ n·u (Higham)
  return {0, kDqk * kU32, (K + 4) * kU32};
}

struct Tol {
  std::vector<double> out, lse;
};
Tol tolerance(const DecodeCase& c, const AttnRef& ref, ErrModel m) {
  Tol t;
  t.out.assign(ref.out.size(), 0.0);
  t.lse.assign(ref.lse.size(), 0.0);
  for (size_t i = 0; i < ref.lse.size(); ++i) {
    if (std::isinf(ref.lse[i])) continue;  // empty row: exact 0 / +inf required
    const double E = (m.deq + m.dot + 2 * kU32) * ref.zmag[i] + m.sum + 4 * kU32;
    const double g = std::expm1(2 * E);
    for (int d = 0; d < kDv; ++d) {
      const double a = ref.abs_out[i * kDv + d], dv = m.deq * ref.vmax[(i / c.H) * kDv + d];
      t.out[i * kDv + d] = g * a + dv + (m.sum + 2 * kU32) * ((1 + g) * a + dv);
    }
    t.lse[i] = E + 2 * kU32 * std::fabs(ref.lse[i]);
  }
  return t;
}

using LseAt = std::function<double(int64_t r, int h)>;
// |got − want| ≤ tol (+ tol2) elementwise, with ±inf parity; `want` is either the fp64 reference
// (tol2 empty) or a second implementation (tolerances of both added).
void expect_attention_close(const char* what, const DecodeCase& c, int rows, const float* out, const LseAt& lse,
                            const std::function<double(size_t)>& want_out, const LseAt& want_lse,
                            const Tol& tol, const Tol* tol2 = nullptr) {
  SCOPED_TRACE(what);
  for (int64_t r = 0; r < rows; ++r)
    for (int h = 0; h < c.H; ++h) {
      const size_t i = static_cast<size_t>(r) * c.H + h;
      const double gl = lse(r, h), wl = want_lse(r, h);
      if (std::isinf(wl) || std::isinf(gl)) {
        ASSERT_EQ(gl, wl) << "lse row " << r << " head " << h;
      } else {
        ASSERT_LE(std::fabs(gl - wl), tol.lse[i] + (tol2 ? tol2->lse[i] : 0)) << "lse row " << r << " head " << h;
      }
      for (int d = 0; d < kDv; ++d) {
        const size_t e = i * kDv + d;
        ASSERT_LE(std::fabs(out[e] - want_out(e)), tol.out[e] + (tol2 ? tol2->out[e] : 0))
            << "out row " << r << " head " << h << " dim " << d << ": " << out[e] << " vs " << want_out(e);
      }
    }
}

void run_decode_case(Backend& be, const DecodeCase& c) {
  SCOPED_TRACE(c.name);
  const DecodeInputs in = make_decode(be, c);
  const size_t n_out = static_cast<size_t>(in.rows) * c.H * kDv, n_lse = static_cast<size_t>(in.rows) * c.H;
  Guarded<float> out(n_out), lse(n_lse);
  be.sparse_attention_decode(decode_params(c, in, out.data(), lse.data()));
  EXPECT_GUARDS(out);
  EXPECT_GUARDS(lse);
  const LseAt dec_lse = [&](int64_t r, int h) -> double { return lse[((r / c.next_n) * c.H + h) * c.next_n + r % c.next_n]; };

  // (1) vs float64 on the cache as stored, decoded here from the physical slots' bytes.
  std::vector<double> keys(in.S * kDqk);
  const std::vector<double>& e4m3 = e4m3_values();
  for (int b = 0; b < in.B; ++b)
    for (int64_t j = 0; j < c.lens[b]; ++j) {
      const int64_t slot = in.layout.slot(b, j);
      double* dst = &keys[(in.offset[b] + j) * kDqk];
      if (c.format == KvCacheFormat::kFp32) {
        for (int d = 0; d < kDqk; ++d) dst[d] = in.cache_f32[slot * kDqk + d];
      } else if (c.format == KvCacheFormat::kBf16) {
        for (int d = 0; d < kDqk; ++d) dst[d] = bf16_value(in.cache_bf16[slot * kDqk + d]);
      } else {
        const uint8_t* rec = &in.cache_fp8[slot * kMlaRecordBytes];
        for (int d = 0; d < kMlaLatentDim; ++d) dst[d] = e4m3[rec[d]] * f32_at(rec + kMlaScaleOffset + 4 * (d / kQuantBlock));
        for (int d = 0; d < kMlaRopeDim; ++d) {
          uint16_t bits;
          std::memcpy(&bits, rec + kMlaRopeOffset + 2 * d, 2);
          dst[kMlaLatentDim + d] = bf16_value(bits);
        }
      }
    }
  const AttnRef ref = attention_ref(c, in, keys);
  // The CPU decode's only non-fp64 steps are the fp32 product e4m3·scale (u) and the output
  // rounding; any other backend (GPU split-KV in fp32) is held to the fp32-accumulation bound.
  ErrModel dec_model = be.name() == "cpu" ? kFp64Accumulation : fp32_accumulation(c.K);
  if (c.format == KvCacheFormat::kFp8Record) dec_model.deq = kU32;
  const Tol dec_tol = tolerance(c, ref, dec_model);
  expect_attention_close("decode vs float64", c, in.rows, out.data(), dec_lse, [&](size_t e) { return ref.out[e]; },
                         [&](int64_t r, int h) { return ref.lse[r * c.H + h]; }, dec_tol);
  // Empty rows exactly: out = 0 (bitwise +0 or −0 both compare equal), lse = +inf.
  for (int r = 0; r < in.rows; ++r)
    if (in.selection(r, c.K, c.next_n).empty())
      for (int h = 0; h < c.H; ++h) {
        EXPECT_TRUE(std::isinf(dec_lse(r, h)) && dec_lse(r, h) > 0) << "empty row " << r;
        for (int d = 0; d < kDv; ++d) ASSERT_EQ(out[(static_cast<size_t>(r) * c.H + h) * kDv + d], 0.0f);
      }

  // (2) Determinism: a rerun on one thread is bitwise identical.
  Guarded<float> out2(n_out), lse2(n_lse);
  with_one_thread([&] { be.sparse_attention_decode(decode_params(c, in, out2.data(), lse2.data())); });
  EXPECT_TRUE(bitwise_equal(out.data(), out2.data(), n_out) && bitwise_equal(lse.data(), lse2.data(), n_lse))
      << "rerun differs";

  // (3) Decode row (b, n) ≡ prefill row t = L − next_n + n: op 6 over the dequantised contiguous kv
  // with the same keys (logical + request offset). Tolerance: this decode's bound plus the bound
  // of an fp32-accumulating prefill (reassociation only; same dequantised values).
  std::vector<int32_t> prefill_idx(in.logical);
  for (size_t i = 0; i < prefill_idx.size(); ++i)
    if (prefill_idx[i] != kInvalidIndex) prefill_idx[i] += static_cast<int32_t>(in.offset[i / c.K / c.next_n]);
  const AttentionParams ap{.T = in.rows, .S = static_cast<int>(in.S), .H = c.H, .Dqk = kDqk, .Dv = kDv,
                           .scale = in.scale, .q = in.q.data(), .kv = in.kv_deq.data(), .K = c.K,
                           .indices = prefill_idx.data(),
                           .topk_length = in.topk_length.empty() ? nullptr : in.topk_length.data()};
  std::vector<float> pre_out(n_out), pre_lse(n_lse);
  cpu::sparse_attention_forward(ap, {.out = pre_out.data(), .lse = pre_lse.data()});
  ErrModel pre_model = fp32_accumulation(c.K);
  pre_model.deq = dec_model.deq;  // mla_cache_unpack's e4m3·scale product
  const Tol pre_tol = tolerance(c, ref, pre_model);
  expect_attention_close("decode vs prefill", c, in.rows, out.data(), dec_lse, [&](size_t e) { return pre_out[e]; },
                         [&](int64_t r, int h) -> double { return pre_lse[r * c.H + h]; }, dec_tol, &pre_tol);

  // (4) FP8 record vs the fp32 original. Every stored value is within its format's half-ulp of
  // the original (e4m3 on x/s: 2^-4 relative, 2^-10·s in the subnormal range; bf16 RoPE: 2^-8
  // relative); the attention then moves by at most the propagation of the actual perturbation:
  // E = max_s scale·|q·(v' − v)|, |Δlse| ≤ E, |Δout_d| ≤ expm1(2E)·Σp|v_d| + max_s |v'_d − v_d|.
  if (c.format != KvCacheFormat::kFp8Record) return;
  std::vector<double> orig(in.kv.begin(), in.kv.end());
  for (int b = 0; b < in.B; ++b)
    for (int64_t j = 0; j < c.lens[b]; ++j) {
      const int64_t key = in.offset[b] + j;
      const uint8_t* rec = &in.cache_fp8[in.layout.slot(b, j) * kMlaRecordBytes];
      for (int d = 0; d < kDqk; ++d) {
        const double v = orig[key * kDqk + d], err = std::fabs(keys[key * kDqk + d] - v);
        const double bound = d < kMlaLatentDim
                                 ? (0x1p-4 + 4 * kU32) * std::fabs(v) +
                                       0x1p-10 * (1 + 4 * kU32) * f32_at(rec + kMlaScaleOffset + 4 * (d / kQuantBlock))
                                 : 0x1p-8 * std::fabs(v);
        ASSERT_LE(err, bound) << "key " << key << " dim " << d << ": record value " << keys[key * kDqk + d]
                              << " vs original " << v;
      }
    }
  const AttnRef ref_orig = attention_ref(c, in, orig);
  double worst_E = 0;
  for (int r = 0; r < in.rows; ++r) {
    const std::vector<int64_t> sel = in.selection(r, c.K, c.next_n);
    for (int h = 0; h < c.H; ++h) {
      const size_t i = static_cast<size_t>(r) * c.H + h;
      if (sel.empty()) continue;
      double E = 0;
      std::vector<double> dmax(kDv, 0.0);
      for (int64_t s : sel) {
        double dz = 0;
        for (int d = 0; d < kDqk; ++d) dz += in.q[i * kDqk + d] * (keys[s * kDqk + d] - orig[s * kDqk + d]);
        E = std::max(E, in.scale * std::fabs(dz) * (1 + kU64Slack));
        for (int d = 0; d < kDv; ++d) dmax[d] = std::max(dmax[d], std::fabs(keys[s * kDqk + d] - orig[s * kDqk + d]));
      }
      worst_E = std::max(worst_E, E);
      ASSERT_LE(std::fabs(dec_lse(r, h) - ref_orig.lse[i]), E + dec_tol.lse[i]) << "lse vs fp32 original, row " << r;
      for (int d = 0; d < kDv; ++d) {
        const size_t e = i * kDv + d;
        const double bound = std::expm1(2 * E) * ref_orig.abs_out[e] + dmax[d] * (1 + kU64Slack) + dec_tol.out[e];
        ASSERT_LE(std::fabs(out[e] - ref_orig.out[e]), bound) << "out vs fp32 original, row " << r << " dim " << d;
      }
    }
  }
  // The measured FP8 effect, for the record (nmse of out vs the fp32-original attention).
  const Diff diff = compare(out.data(), ref_orig.out.data(), n_out);
  ::testing::Test::RecordProperty(std::string("fp8_nmse_") + std::to_string(c.seed), std::to_string(diff.nmse));
  EXPECT_LT(diff.nmse, 1e-2) << "FP8 record attention far from the fp32 original (worst E " << worst_E << ")";
}

void decode_bad_inputs(Backend& be) {
  const DecodeCase c{"bad", KvCacheFormat::kFp32, 2, 2, 4, {70, 3}, true, false, -1, 902};
  const DecodeInputs in = make_decode(be, c);
  const size_t n_out = static_cast<size_t>(in.rows) * c.H * kDv, n_lse = static_cast<size_t>(in.rows) * c.H;
  constexpr const char* op = "sparse_attention_decode";
  auto expect_throw = [&](auto&& edit, std::initializer_list<const char*> names) {
    Guarded<float> out(n_out), lse(n_lse);
    std::vector<int32_t> idx = in.physical, len = in.topk_length;
    SparseDecodeParams p = decode_params(c, in, out.data(), lse.data());
    p.indices = idx.data();
    p.topk_length = len.data();
    edit(p, idx, len);
    EXPECT_TRUE(throws_naming([&] { be.sparse_attention_decode(p); }, names));
    EXPECT_TRUE(out.untouched() && lse.untouched()) << "an output was written before the throw";
    EXPECT_GUARDS(out);
    EXPECT_GUARDS(lse);
  };
  using Idx = std::vector<int32_t>;
  expect_throw([](auto& p, Idx&, Idx&) { p.next_n = 3; }, {op, "next_n"});
  expect_throw([](auto& p, Idx&, Idx&) { p.next_n = 0; }, {op, "next_n"});
  expect_throw([](auto& p, Idx&, Idx&) { p.H = 0; }, {op, "H = 0"});
  expect_throw([](auto& p, Idx&, Idx&) { p.K = 0; }, {op, "K = 0"});
  expect_throw([](auto& p, Idx&, Idx&) { p.B = -1; }, {op, "B = -1"});
  expect_throw([](auto& p, Idx&, Idx&) { p.num_slots = 0; }, {op, "num_slots"});
  expect_throw([](auto& p, Idx&, Idx&) { p.scale = 0.0f; }, {op, "scale"});
  expect_throw([](auto& p, Idx&, Idx&) { p.scale = std::numeric_limits<float>::quiet_NaN(); }, {op, "scale"});
  expect_throw([](auto& p, Idx&, Idx&) { p.format = static_cast<KvCacheFormat>(7); }, {op, "format"});
  expect_throw([](auto& p, Idx&, Idx&) { p.q = nullptr; }, {op, "q is null"});
  expect_throw([](auto& p, Idx&, Idx&) { p.cache = nullptr; }, {op, "cache is null"});
  expect_throw([](auto& p, Idx&, Idx&) { p.indices = nullptr; }, {op, "indices is null"});
  expect_throw([](auto& p, Idx&, Idx&) { p.out = nullptr; }, {op, "out is null"});
  expect_throw([](auto& p, Idx&, Idx&) { p.lse = nullptr; }, {op, "lse is null"});
  // A slot index ≥ num_slots, and −2, inside the read prefix; topk_length outside [0, K].
  expect_throw([&](auto&, Idx& idx, Idx& len) { len[3] = c.K, idx[3 * c.K + 1] = static_cast<int32_t>(in.num_slots); },
               {op, "indices[1,1,1]", "num_slots"});
  expect_throw([&](auto&, Idx& idx, Idx& len) { len[0] = c.K, idx[2] = -2; }, {op, "indices[0,0,2] = -2"});
  expect_throw([&](auto&, Idx&, Idx& len) { len[1] = c.K + 1; }, {op, "topk_length[1]"});
  expect_throw([&](auto&, Idx&, Idx& len) { len[2] = -1; }, {op, "topk_length[2]"});

  // paged_to_physical: bad arguments leave the indices untouched (they are rewritten in place).
  constexpr const char* p2p = "paged_to_physical";
  auto expect_p2p_throw = [&](int B, int next_n, int K, const int32_t* table, int max_blocks, int num_pages, Idx idx,
                              std::initializer_list<const char*> names) {
    const Idx before = idx;
    EXPECT_TRUE(throws_naming([&] { be.paged_to_physical(B, next_n, K, table, max_blocks, num_pages, idx.data()); },
                              names));
    EXPECT_EQ(idx, before) << "indices rewritten before the throw";
  };
  const PagedLayout& l = in.layout;
  const int32_t* t = l.table.data();
  expect_p2p_throw(in.B, 3, c.K, t, l.max_blocks, l.num_pages, in.logical, {p2p, "next_n"});
  expect_p2p_throw(in.B, c.next_n, 0, t, l.max_blocks, l.num_pages, in.logical, {p2p, "K = 0"});
  expect_p2p_throw(0, c.next_n, c.K, t, l.max_blocks, l.num_pages, in.logical, {p2p, "B = 0"});
  expect_p2p_throw(in.B, c.next_n, c.K, nullptr, l.max_blocks, l.num_pages, in.logical, {p2p, "block_table is null"});
  Idx beyond = in.logical;
  beyond[c.K * 2 + 3] = l.max_blocks * kPage;  // past the table row of request 1
  expect_p2p_throw(in.B, c.next_n, c.K, t, l.max_blocks, l.num_pages, beyond, {p2p, "indices[2,3]", "beyond"});
  Idx negative = in.logical;
  negative[1] = -5;
  expect_p2p_throw(in.B, c.next_n, c.K, t, l.max_blocks, l.num_pages, negative, {p2p, "indices[0,1] = -5"});
  Idx unused_page = in.logical;
  unused_page[c.K * 3] = kPage;  // request 1 (L = 3) owns one page; block 1 is −1 in its table row
  expect_p2p_throw(in.B, c.next_n, c.K, t, l.max_blocks, l.num_pages, unused_page, {p2p, "block_table[1,1] = -1"});
}

}  // namespace

void check_indexer_logits_paged(Backend& be) {
  const std::vector<PagedLogitsCase> cases = {
      // name                                   next_n HI  lens              mtp   packed extra seed
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
  };
  for (const auto& c : cases) run_paged_logits_case(be, c);
  paged_logits_bad_inputs(be);
}

void check_sparse_attention_decode(Backend& be) {
  using F = KvCacheFormat;
  const std::vector<DecodeCase> cases = {
      // name                                        format      next_n H  K   lens            topk_len dup  empty seed
      {"fp32 B=1 L=1 K=1", F::kFp32, 1, 2, 1, {1}, false, false, -1, 21},
      {"fp32 B=3 MTP, lens ±1 around 64", F::kFp32, 2, 4, 16, {63, 65, 130}, false, false, -1, 22},
      {"fp32 rows shorter than K, an all -1 row", F::kFp32, 1, 3, 64, {5, 1, 70}, false, false, 1, 23},
      {"fp32 duplicated keys", F::kFp32, 1, 2, 8, {20}, false, true, -1, 24},
      {"bf16 B=3 MTP, topk_length", F::kBf16, 2, 4, 32, {40, 129, 2}, true, false, -1, 25},
      {"fp8 record B=3 MTP (L=1: empty first row)", F::kFp8Record, 2, 8, 64, {200, 64, 1}, false, false, -1, 26},
      {"fp8 record topk_length, duplicates", F::kFp8Record, 1, 16, 128, {300, 129}, true, true, -1, 27},
      {"fp8 record V3.2 heads H=128, K=256", F::kFp8Record, 1, 128, 256, {600}, false, false, -1, 28},
  };
  for (const auto& c : cases) run_decode_case(be, c);
  decode_bad_inputs(be);
}

}  // namespace dsa::test
