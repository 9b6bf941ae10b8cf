// op_decode.cpp — row "sparse_attention_decode" (ops.h §11, docs §11).
//
// Each case builds a paged MLA cache the way a server does: the pages of every request are drawn from
// a shuffled pool that also holds unused pages, and every unused byte is NaN (0xFF is NaN in e4m3,
// bf16 and fp32), so reading a slot the contract says is not read poisons the result. The float64
// reference decodes the cache bytes with its own e4m3/bf16 decoders (not op 1's). Oracle:
//   decode row t  ≡ dsa::cpu::sparse_attention_forward (prefill row t) on the dequantised kv,
//                   reached through paged_to_physical of the logical selection
#include <algorithm>
#include <functional>
#include <numeric>

#include "paged_cache.h"
#include "table.h"

namespace dsa::test {
namespace {

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

// The bf16 tensor-core decode (Arith::kTensor: kMma) rounds q and the cache rows to bf16 and P to
// bf16 before the V sum, with fp32 accumulation: the same operand roundings as the tensor-core
// prefill forward (tests/op_attention.cpp derives the bounds): lse within 5e-2 absolute, out within
// 2e-2 relative L2 of the float64 reference; against a second implementation the bounds add.
constexpr double kBf16LseAtol = 5e-2, kBf16OutRelL2 = 2e-2;

// ‖got − want‖ / ‖want‖ over the finite elements of want (inf parity is checked separately).
double rel_l2(const float* got, const std::function<double(size_t)>& want, size_t n) {
  double num = 0, den = 0;
  for (size_t e = 0; e < n; ++e) {
    const double w = want(e);
    num += (got[e] - w) * (got[e] - w);
    den += w * w;
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
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
  const bool tensor = be.arith("sparse_attention_decode") == Arith::kTensor;
  // The CPU decode's only non-fp64 steps are the fp32 product e4m3·scale (u) and the output
  // rounding; any other backend (GPU split-KV in fp32) is held to the fp32-accumulation bound.
  ErrModel dec_model = be.name() == "cpu" ? kFp64Accumulation : fp32_accumulation(c.K);
  if (c.format == KvCacheFormat::kFp8Record) dec_model.deq = kU32;
  const Tol dec_tol = tolerance(c, ref, dec_model);
  if (tensor) {
    for (int64_t r = 0; r < in.rows; ++r)
      for (int h = 0; h < c.H; ++h) {
        const double gl = dec_lse(r, h), wl = ref.lse[r * c.H + h];
        if (std::isinf(wl) || std::isinf(gl)) ASSERT_EQ(gl, wl) << "lse row " << r << " head " << h;
        else ASSERT_LE(std::fabs(gl - wl), kBf16LseAtol) << "lse row " << r << " head " << h;
      }
    EXPECT_TRUE(std::none_of(out.data(), out.data() + n_out, [](float x) { return std::isnan(x); })) << "out unwritten";
    EXPECT_LE(rel_l2(out.data(), [&](size_t e) { return ref.out[e]; }, n_out), kBf16OutRelL2) << "decode vs float64";
  } else {
    expect_attention_close("decode vs float64", c, in.rows, out.data(), dec_lse, [&](size_t e) { return ref.out[e]; },
                           [&](int64_t r, int h) { return ref.lse[r * c.H + h]; }, dec_tol);
  }
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

  // (2b) bf16 q (q_dtype kBF16) ≡ fp32 q holding the same values, bit for bit: exact kernels widen
  // bf16 exactly, the bf16 tensor-core tile rounds fp32 q to bf16 first (a no-op on bf16 values).
  {
    std::vector<uint16_t> q16(in.q.size());
    std::vector<float> q_rounded(in.q.size());
    for (size_t i = 0; i < in.q.size(); ++i) q_rounded[i] = bf16_value(q16[i] = cpu::bf16_from_float(in.q[i]));
    Guarded<float> out32(n_out), lse32(n_lse), out16(n_out), lse16(n_lse);
    SparseDecodeParams p32 = decode_params(c, in, out32.data(), lse32.data());
    p32.q = q_rounded.data();
    SparseDecodeParams p16 = decode_params(c, in, out16.data(), lse16.data());
    p16.q = nullptr;
    p16.q_dtype = DType::kBF16;
    p16.q_bf16 = q16.data();
    be.sparse_attention_decode(p32);
    be.sparse_attention_decode(p16);
    EXPECT_TRUE(bitwise_equal(out32.data(), out16.data(), n_out) && bitwise_equal(lse32.data(), lse16.data(), n_lse))
        << "bf16 q != fp32 q holding the same values";
  }

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
  if (tensor) {  // the bf16 bounds of this decode plus the prefill's fp32 bound (far smaller)
    for (int64_t r = 0; r < in.rows; ++r)
      for (int h = 0; h < c.H; ++h) {
        const double gl = dec_lse(r, h), wl = pre_lse[r * c.H + h];
        if (std::isinf(wl) || std::isinf(gl)) ASSERT_EQ(gl, wl) << "decode vs prefill, lse row " << r;
        else ASSERT_LE(std::fabs(gl - wl), kBf16LseAtol + pre_tol.lse[r * c.H + h]) << "decode vs prefill, lse row " << r;
      }
    EXPECT_LE(rel_l2(out.data(), [&](size_t e) { return double(pre_out[e]); }, n_out), kBf16OutRelL2)
        << "decode vs prefill";
    return;  // (4) bounds the fp32 decode's elementwise error; the bf16 bound above already covers it
  }
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
      // H = 64: the heads the bf16 tensor-core tile takes (one block per row × 64 heads), every cache
      // format, K a multiple of the 64-key chunk and not, MTP with topk_length, an all −1 row.
      {"fp8 record H=64 MTP, topk_length, K=100", F::kFp8Record, 2, 64, 100, {200, 150}, true, false, -1, 29},
      {"bf16 H=64 K=64, an all -1 row", F::kBf16, 1, 64, 64, {70, 129}, false, false, 1, 30},
      {"fp32 H=64 K=130, duplicates", F::kFp32, 1, 64, 130, {300, 140, 2}, false, true, -1, 31},
  };
  for (const auto& c : cases) run_decode_case(be, c);
  decode_bad_inputs(be);
}

}  // namespace dsa::test
