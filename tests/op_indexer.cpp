// op_indexer.cpp — rows indexer_logits, topk_select, indexer_topk (ops 3, 4, 5 of dsa/ops.h), every op
// run through the Backend under test, against float64 references:
//   * logits: fp64 sums of the very operands the op sees (tight, a rigorous fp32 error bound), plus
//     for bf16/fp8 a second reference on the exact fp32 inputs with a bound derived from the
//     rounding of the inputs (DeepGEMM's two-reference scheme);
//   * top-k: a stable fp64 sort by (score desc, index asc), NaN ≡ −inf — exact index equality;
//   * fused indexer_topk ≡ topk_select(indexer_logits) bitwise (one shot, and in chunks on the GPU).
// A tensor-core class (Arith::kTensor) is held to the same bounds plus the fp8 accumulation term
// kFp8AccumRel on quantised inputs; on exact-dot inputs (kExactDotCodes) to the fp32 bound alone.
#include <algorithm>
#include <array>
#include <cstring>
#include <numeric>
#include <set>

#include "indexer_cases.h"
#include "table.h"

namespace dsa::test {
namespace {

constexpr double kU32 = 0x1p-24;    // unit roundoff of fp32 (round to nearest)
constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr float kNanF = std::numeric_limits<float>::quiet_NaN();
constexpr float kInfF = std::numeric_limits<float>::infinity();

// ── test-side numerics, independent of src/cpu/numerics.cpp ──────────────────────────────────
uint16_t bf16_bits(float x) {  // round to nearest even on the bit pattern (finite inputs)
  uint32_t u;
  std::memcpy(&u, &x, 4);
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
double bf16_value(uint16_t b) {
  const uint32_t u = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
double fp8_value(uint8_t b) {  // e4m3 "fn": bias 7, 3 mantissa bits, subnormals m·2^-9, 0x7F/0xFF NaN
  const int sign = b >> 7, e = (b >> 3) & 0xF, m = b & 7;
  if (e == 15 && m == 7) return std::numeric_limits<double>::quiet_NaN();
  const double mag = e == 0 ? m * 0x1p-9 : (1.0 + m / 8.0) * std::ldexp(1.0, e - 7);
  return sign ? -mag : mag;
}
// The block scale of ops.h ScaleFormat from a block's amax (fp32 division as specified).
double expected_scale(double amax, ScaleFormat f) {
  const float r = std::max(static_cast<float>(amax), kQuantAmaxFloor) / kFp8E4m3Max;
  return f == ScaleFormat::kFloat ? r : std::exp2(std::ceil(std::log2(double(r))));
}

// ── cases ─────────────────────────────────────────────────────────────────────────────────────

// Shapes: T = S = 1, sizes ±1 around 64 and 128, packed multi-sequence causal ranges, empty rows
// (at 0, inside, at S), a decode-like rectangle, DI not a multiple of the vector width.
std::vector<IndexerCase> indexer_cases() {
  std::vector<IndexerCase> v;
  v.push_back(packed("T1_S1", {1}, 1, 128));
  v.push_back(packed("causal63", {63}, 3, 128));
  v.push_back(packed("causal64_DI64", {64}, 16, 64));
  v.push_back(packed("causal65_DI65", {65}, 4, 65));
  v.push_back(packed("causal127", {127}, 1, 128));
  v.push_back(packed("causal128", {128}, 9, 128));
  v.push_back(packed("packed_40_1_88", {40, 1, 88}, 2, 128));
  IndexerCase e{"empty_rows", 9, 70, 5, 128, {}, {}};
  for (int t = 0; t < e.T; ++t) {
    const int a = (t * 13) % 60;
    e.ks.push_back(t == 0 ? 0 : t == e.T - 1 ? e.S : a);
    e.ke.push_back(t % 3 == 0 ? e.ks.back() : std::min(e.S, a + 7 * t + 1));
  }
  v.push_back(e);
  IndexerCase d{"decode_rect", 3, 200, 16, 128, {}, {}};
  for (int t = 0; t < d.T; ++t) {
    d.ks.push_back(0);
    d.ke.push_back(d.S - d.T + t + 1);
  }
  v.push_back(d);
  IndexerCase s{"DI1_HI7", 5, 7, 7, 1, {}, {}};
  for (int t = 0; t < s.T; ++t) {
    s.ks.push_back(t / 2);
    s.ke.push_back(t + 3);
  }
  v.push_back(s);
  return v;
}

// The V3.2 indexer shape (HI = 64, DI = 128: the heads the kWgmma variant takes, four 16-head groups
// of kMma) on e4m3 inputs, at the edges of the tensor-core kernels' tiles: T = 1 (idle query slots in
// a block), S = 1, S = 1000 (not a multiple of the 64-key tile) with full / empty / last-key /
// tile-aligned / almost-full ranges, causal rows, packed sequences whose 79 key tiles are split over
// blocks (T = 7, S = 5000), several query blocks (T = 66) with random, empty and full ranges.
inline constexpr int kV32IndexerHeads = 64;
inline constexpr int kV32TopK = 2048;   // V3.2's index_topk
std::vector<IndexerCase> v32_indexer_cases() {
  constexpr int HI = kV32IndexerHeads, DI = kIndexerKeyDim;
  std::vector<IndexerCase> v;
  v.push_back({"V32_T1_S1", 1, 1, HI, DI, {0}, {1}});
  v.push_back({"V32_T1_S200", 1, 200, HI, DI, {0}, {200}});
  v.push_back({"V32_S1000_ranges", 5, 1000, HI, DI, {0, 10, 999, 64, 1}, {1000, 10, 1000, 640, 999}});
  IndexerCase causal{"V32_causal_T9_S777", 9, 777, HI, DI, {}, {}};
  for (int t = 0; t < causal.T; ++t) causal.ks.push_back(0), causal.ke.push_back(causal.S - causal.T + t + 1);
  v.push_back(causal);
  v.push_back({"V32_packed_T7_S5000", 7, 5000, HI, DI, {0, 0, 0, 2000, 2000, 2000, 2000},
               {1000, 1250, 1500, 2700, 3400, 4100, 5000}});
  IndexerCase many{"V32_T66_S300", 66, 300, HI, DI, {}, {}};
  Rng rng(77);
  for (int t = 0; t < many.T; ++t) {
    int a = rng.integer(0, many.S), e = rng.integer(0, many.S);
    if (t % 11 == 3) e = a;                   // empty
    if (t % 13 == 5) a = 0, e = many.S;       // the whole row
    many.ks.push_back(std::min(a, e));
    many.ke.push_back(std::max(a, e));
  }
  v.push_back(many);
  return v;
}


// The operands of one precision mode: the buffers handed to the op, and their exact values.
struct ModeInputs {
  Precision precision = Precision::kFp32;
  std::vector<uint16_t> q16, k16;
  std::vector<uint8_t> q8, k8;
  std::vector<float> k_scale, w_folded;
  std::vector<double> qv, kv, wv, sv;  // values the op computes with (sv empty ≡ 1)
  IndexerParams params(const IndexerCase& c, const Fp32Inputs& in) const {
    IndexerParams p;
    p.T = c.T, p.S = c.S, p.HI = c.HI, p.DI = c.DI, p.precision = precision;
    p.ks = c.ks.data(), p.ke = c.ke.data();
    if (precision == Precision::kFp32) p.q = in.q.data(), p.k = in.k.data(), p.w = in.w.data();
    if (precision == Precision::kBf16) p.q = q16.data(), p.k = k16.data(), p.w = in.w.data();
    if (precision == Precision::kFp8) p.q = q8.data(), p.k = k8.data(), p.w = w_folded.data(), p.k_scale = k_scale.data();
    return p;
  }
};

// Quantises through the backend (indexer_quantize_fp8) and checks the result against the formulas
// of ops.h: scales from amax, |dequant − x| ≤ half an e4m3 ulp, w_folded = w·s_q.
ModeInputs make_fp8(Backend& b, const IndexerCase& c, const Fp32Inputs& in, ScaleFormat format) {
  ModeInputs m;
  m.precision = Precision::kFp8;
  Guarded<uint8_t> q8(in.q.size(), 0xA5), k8(in.k.size(), 0xA5);
  Guarded<float> ksc(size_t(c.S)), wf(in.w.size());
  IndexerQuantizeParams qp;
  qp.T = c.T, qp.S = c.S, qp.HI = c.HI, qp.DI = c.DI, qp.format = format;
  qp.q = in.q.data(), qp.k = in.k.data(), qp.w = in.w.data();
  qp.q_fp8 = q8.data(), qp.k_fp8 = k8.data(), qp.k_scale = ksc.data(), qp.w_folded = wf.data();
  b.indexer_quantize_fp8(qp);
  EXPECT_GUARDS(q8);
  EXPECT_GUARDS(k8);
  EXPECT_GUARDS(ksc);
  EXPECT_GUARDS(wf);
  // One 128-block per head of q and per token of k (DI == 128).
  auto check_block = [&](const float* x, const uint8_t* bytes, double s, const std::string& what) {
    for (int d = 0; d < c.DI; ++d) {
      // e4m3 RNE: relative error ≤ 2^-4 for normals, absolute ≤ 2^-10 (half the 2^-9 subnormal step).
      const double err = std::fabs(fp8_value(bytes[d]) * s - x[d]);
      const double bound = std::max(0x1p-4 * std::fabs(x[d]), 0x1p-10 * s);
      if (err > bound) {
        ADD_FAILURE() << c.name << ": " << what << " element " << d << " dequantises with error " << err << " > " << bound;
        return;
      }
    }
  };
  for (int i = 0; i < c.T * c.HI; ++i) {
    const float* x = in.q.data() + size_t(i) * c.DI;
    double amax = 0;
    for (int d = 0; d < c.DI; ++d) amax = std::max(amax, std::fabs(double(x[d])));
    const double s = expected_scale(amax, format);
    check_block(x, q8.data() + size_t(i) * c.DI, s, "q head " + std::to_string(i));
    EXPECT_EQ(wf[i], static_cast<float>(in.w[i] * static_cast<float>(s))) << c.name << ": w_folded[" << i << "] != w·s_q";
  }
  for (int s = 0; s < c.S; ++s) {
    const float* x = in.k.data() + size_t(s) * c.DI;
    double amax = 0;
    for (int d = 0; d < c.DI; ++d) amax = std::max(amax, std::fabs(double(x[d])));
    EXPECT_EQ(double(ksc[s]), expected_scale(amax, format)) << c.name << ": k_scale[" << s << "]";
    check_block(x, k8.data() + size_t(s) * c.DI, ksc[s], "k token " + std::to_string(s));
  }
  m.q8 = q8.vec(), m.k8 = k8.vec(), m.k_scale = ksc.vec(), m.w_folded = wf.vec();
  for (uint8_t v : m.q8) m.qv.push_back(fp8_value(v));
  for (uint8_t v : m.k8) m.kv.push_back(fp8_value(v));
  m.wv.assign(m.w_folded.begin(), m.w_folded.end());
  m.sv.assign(m.k_scale.begin(), m.k_scale.end());
  return m;
}

// Exact-dot e4m3 operands (kExactDotCodes, test_util.h): q and k codes drawn from {0, ±1/2, ±1, ±2},
// k_scale in [1/4, 2], w the case's fp32 w (as w_folded).
ModeInputs make_exact_dots(const IndexerCase& c, const Fp32Inputs& in, uint64_t seed) {
  Rng rng(seed);
  ModeInputs m;
  m.precision = Precision::kFp8;
  auto code = [&] { return kExactDotCodes[rng.integer(0, static_cast<int>(std::size(kExactDotCodes)) - 1)]; };
  m.q8.resize(in.q.size());
  m.k8.resize(in.k.size());
  for (auto& v : m.q8) v = code();
  for (auto& v : m.k8) v = code();
  m.k_scale = rng.uniform_vec(size_t(c.S), 0.25f, 2.0f);
  m.w_folded = in.w;
  for (uint8_t v : m.q8) m.qv.push_back(fp8_value(v));
  for (uint8_t v : m.k8) m.kv.push_back(fp8_value(v));
  m.wv.assign(m.w_folded.begin(), m.w_folded.end());
  m.sv.assign(m.k_scale.begin(), m.k_scale.end());
  return m;
}

ModeInputs make_mode(Backend& b, const IndexerCase& c, const Fp32Inputs& in, Precision precision,
                     ScaleFormat format = ScaleFormat::kUe8m0) {
  if (precision == Precision::kFp8) return make_fp8(b, c, in, format);
  ModeInputs m;
  m.precision = precision;
  m.wv.assign(in.w.begin(), in.w.end());
  if (precision == Precision::kFp32) {
    m.qv.assign(in.q.begin(), in.q.end());
    m.kv.assign(in.k.begin(), in.k.end());
  } else {
    for (float x : in.q) m.q16.push_back(bf16_bits(x)), m.qv.push_back(bf16_value(m.q16.back()));
    for (float x : in.k) m.k16.push_back(bf16_bits(x)), m.kv.push_back(bf16_value(m.k16.back()));
  }
  return m;
}

// ── logits reference ──────────────────────────────────────────────────────────────────────────
// ref[t,s] = sv[s]·Σ_h wv·ReLU(qv·kv) in fp64 (−inf outside [ks, ke)); mag[t,s] = the same with
// absolute values inside the dot (|sv|·Σ_h |w|·Σ_d |q_d k_d|), the scale of the rounding error.
struct LogitsRef {
  std::vector<double> ref, mag;
};
LogitsRef logits_ref(const IndexerCase& c, const std::vector<double>& qv, const std::vector<double>& kv,
                     const std::vector<double>& wv, const std::vector<double>& sv) {
  LogitsRef r{std::vector<double>(size_t(c.T) * c.S, -kInf), std::vector<double>(size_t(c.T) * c.S, 0.0)};
  for (int t = 0; t < c.T; ++t)
    for (int s = c.ks[t]; s < c.ke[t]; ++s) {
      double acc = 0, mag = 0;
      for (int h = 0; h < c.HI; ++h) {
        double u = 0, ua = 0;
        for (int d = 0; d < c.DI; ++d) {
          const double prod = qv[(size_t(t) * c.HI + h) * c.DI + d] * kv[size_t(s) * c.DI + d];
          u += prod;
          ua += std::fabs(prod);
        }
        acc += wv[size_t(t) * c.HI + h] * std::max(u, 0.0);
        mag += std::fabs(wv[size_t(t) * c.HI + h]) * ua;
      }
      const double scale = sv.empty() ? 1.0 : sv[s];
      r.ref[size_t(t) * c.S + s] = scale * acc;
      r.mag[size_t(t) * c.S + s] = std::fabs(scale) * mag;
    }
  return r;
}

// |got − ref| ≤ tol[i] everywhere, −inf exactly where ref is −inf.
::testing::AssertionResult within(const float* got, const LogitsRef& r, const std::vector<double>& tol) {
  for (size_t i = 0; i < r.ref.size(); ++i) {
    if (r.ref[i] == -kInf) {
      if (got[i] != -kInfF) return ::testing::AssertionFailure() << "element " << i << " = " << got[i] << ", want -inf";
      continue;
    }
    if (!(std::fabs(got[i] - r.ref[i]) <= tol[i]))
      return ::testing::AssertionFailure() << "element " << i << ": got " << got[i] << ", want " << r.ref[i]
                                           << " (tolerance " << tol[i] << ")";
  }
  return ::testing::AssertionSuccess();
}

std::vector<float> run_logits(Backend& b, const IndexerParams& p, const std::string& name) {
  Guarded<float> out(size_t(p.T) * p.S);
  b.indexer_logits(p, out.data());
  EXPECT_GUARDS(out) << name;
  Guarded<float> again(size_t(p.T) * p.S);
  b.indexer_logits(p, again.data());
  EXPECT_TRUE(bitwise_equal(out.data(), again.data(), out.size())) << name << ": rerun differs (determinism)";
  return out.vec();
}

// ── top-k reference ───────────────────────────────────────────────────────────────────────────
// Stable fp64 sort of the in-range keys by descending score (NaN → −inf): ties keep index order.
std::vector<int32_t> topk_ref(const float* row, int ks, int ke, int K) {
  std::vector<int32_t> idx(size_t(ke - ks));
  std::iota(idx.begin(), idx.end(), ks);
  auto key = [&](int32_t s) { return std::isnan(row[s]) ? -kInf : double(row[s]); };
  std::stable_sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return key(a) > key(b); });
  idx.resize(std::min<size_t>(idx.size(), size_t(K)));
  idx.resize(size_t(K), kInvalidIndex);
  return idx;
}

// Invariants of any selection, independent of the reference: valid prefix then −1s, indices in
// range, no duplicates, count = min(K, range length).
void expect_selection_invariants(const int32_t* idx, int T, int K, const std::vector<int32_t>& ks,
                                 const std::vector<int32_t>& ke, const std::string& name) {
  for (int t = 0; t < T; ++t) {
    const int32_t* row = idx + size_t(t) * K;
    const int want = std::min(K, ke[t] - ks[t]);
    std::set<int32_t> seen;
    for (int j = 0; j < K; ++j) {
      if (j < want) {
        ASSERT_TRUE(row[j] >= ks[t] && row[j] < ke[t]) << name << ": row " << t << " slot " << j << " = " << row[j];
        ASSERT_TRUE(seen.insert(row[j]).second) << name << ": row " << t << " duplicate index " << row[j];
      } else {
        ASSERT_EQ(row[j], kInvalidIndex) << name << ": row " << t << " slot " << j << " must be -1";
      }
    }
  }
}

}  // namespace

// ═══════════════════════════════ row: indexer_logits (+ indexer_quantize_fp8) ════════════════
void check_indexer_logits(Backend& b) {
  auto cases = indexer_cases();
  for (IndexerCase& c : v32_indexer_cases()) cases.push_back(std::move(c));
  uint64_t seed = 100;
  for (const auto& c : cases) {
    const Fp32Inputs in = make_inputs(c, ++seed);
    const LogitsRef exact = logits_ref(c, std::vector<double>(in.q.begin(), in.q.end()),
                                       std::vector<double>(in.k.begin(), in.k.end()),
                                       std::vector<double>(in.w.begin(), in.w.end()), {});
    struct Mode {
      Precision precision;
      ScaleFormat format;
      const char* name;
      bool exact_dots = false;
    };
    std::vector<Mode> modes = {{Precision::kFp32, ScaleFormat::kUe8m0, "fp32"}, {Precision::kBf16, ScaleFormat::kUe8m0, "bf16"}};
    if (c.DI == kIndexerKeyDim) {  // the fp8 preparation needs DI = 128 (one scale per head / token)
      modes.push_back({Precision::kFp8, ScaleFormat::kUe8m0, "fp8_ue8m0"});
      modes.push_back({Precision::kFp8, ScaleFormat::kFloat, "fp8_float"});
    }
    if (c.HI == kV32IndexerHeads)  // the tensor-core shape: the production fp8 path, and exact dots
      modes = {{Precision::kFp8, ScaleFormat::kUe8m0, "fp8_ue8m0"},
               {Precision::kFp8, ScaleFormat::kUe8m0, "fp8_exact_dots", true}};
    for (const Mode& mode : modes) {
      const std::string name = c.name + "/" + mode.name;
      const ModeInputs m = mode.exact_dots ? make_exact_dots(c, in, seed + 1000) : make_mode(b, c, in, mode.precision, mode.format);
      const std::vector<float> got = run_logits(b, m.params(c, in), name);

      // Tight reference on the operands the op sees. Rigorous fp32 bound: each of the DI products
      // and DI−1 sums of a dot, the w product, the HI head sums and the k_scale product round once
      // (≤ u each), so |err| ≤ (DI + HI + 3)·u·mag to first order (bf16/fp8 products are exact).
      // A tensor-core variant on e4m3 operands sums each dot in the fp8 tensor core's narrower
      // accumulator: + kFp8AccumRel·mag (test_util.h derives it); on exact dots that sum is exact.
      const LogitsRef tight = logits_ref(c, m.qv, m.kv, m.wv, m.sv);
      const bool fp8_accum = b.arith("indexer_logits") == Arith::kTensor && mode.precision == Precision::kFp8 &&
                             !mode.exact_dots;
      const double rel = (c.DI + c.HI + 3) * kU32 * (1 + 1e-6) + (fp8_accum ? kFp8AccumRel : 0.0);
      std::vector<double> tol(tight.mag.size());
      for (size_t i = 0; i < tol.size(); ++i) tol[i] = rel * tight.mag[i];
      EXPECT_TRUE(within(got.data(), tight, tol)) << name << " vs the fp64 reference on the op's operands";

      if (mode.precision == Precision::kFp32 || mode.exact_dots) continue;  // no fp32 originals to compare with
      // Loose reference on the exact fp32 inputs: add the input rounding, |q'k' − qk| ≤
      // |q'−q|·|k'| + |q|·|k'−k| with |x'−x| ≤ 2^-8|x| (bf16 RNE) or max(2^-4|x|, 2^-10·s) (e4m3),
      // plus u·|w|·|ReLU| for the rounding of w_folded = w·s_q.
      std::vector<double> loose(tol.size(), 0.0);
      for (int t = 0; t < c.T; ++t)
        for (int s = c.ks[t]; s < c.ke[t]; ++s) {
          double bound = 0;
          for (int h = 0; h < c.HI; ++h) {
            const size_t th = size_t(t) * c.HI + h;
            double amax = 0;
            for (int d = 0; d < c.DI; ++d) amax = std::max(amax, std::fabs(double(in.q[th * c.DI + d])));
            const double s_q = mode.precision == Precision::kFp8 ? expected_scale(amax, mode.format) : 0;
            const double s_k = mode.precision == Precision::kFp8 ? m.sv[s] : 0;
            double e = 0, dot = 0;
            for (int d = 0; d < c.DI; ++d) {
              const double q = in.q[th * c.DI + d], k = in.k[size_t(s) * c.DI + d];
              const double eq = mode.precision == Precision::kBf16 ? 0x1p-8 * std::fabs(q) : std::max(0x1p-4 * std::fabs(q), 0x1p-10 * s_q);
              const double ek = mode.precision == Precision::kBf16 ? 0x1p-8 * std::fabs(k) : std::max(0x1p-4 * std::fabs(k), 0x1p-10 * s_k);
              e += eq * (std::fabs(k) + ek) + std::fabs(q) * ek;
              dot += std::fabs(q) * (std::fabs(k) + ek) + eq * (std::fabs(k) + ek);
            }
            bound += std::fabs(in.w[th]) * (e + kU32 * dot);
          }
          const size_t i = size_t(t) * c.S + s;
          loose[i] = (bound + tol[i]) * (1 + 1e-6);
        }
      EXPECT_TRUE(within(got.data(), exact, loose)) << name << " vs the fp64 reference on exact fp32 inputs";
    }
  }

  // ── bad inputs: each throws naming the argument, the output untouched ──
  const IndexerCase c = packed("bad", {6, 4}, 2, 128);
  const Fp32Inputs in = make_inputs(c, 7);
  const ModeInputs m32 = make_mode(b, c, in, Precision::kFp32);
  Guarded<float> out(size_t(c.T) * c.S);
  auto expect_bad = [&](IndexerParams p, float* dst, std::initializer_list<const char*> what) {
    EXPECT_TRUE(throws_naming([&] { b.indexer_logits(p, dst); }, what));
    EXPECT_TRUE(out.untouched());
    EXPECT_GUARDS(out);
  };
  const IndexerParams good = m32.params(c, in);
  IndexerParams p = good;
  p.q = nullptr;
  expect_bad(p, out.data(), {"indexer_logits", "q is null"});
  p = good, p.k = nullptr;
  expect_bad(p, out.data(), {"indexer_logits", "k is null"});
  p = good, p.w = nullptr;
  expect_bad(p, out.data(), {"indexer_logits", "w is null"});
  p = good, p.ks = nullptr;
  expect_bad(p, out.data(), {"indexer_logits", "ks is null"});
  expect_bad(good, nullptr, {"indexer_logits", "logits is null"});
  p = good, p.HI = 0;
  expect_bad(p, out.data(), {"indexer_logits", "HI"});
  p = good, p.DI = -1;
  expect_bad(p, out.data(), {"indexer_logits", "DI"});
  p = good, p.T = -1;
  expect_bad(p, out.data(), {"indexer_logits", "T"});
  std::vector<int32_t> bad_ks = c.ks, bad_ke = c.ke;
  bad_ks[3] = bad_ke[3] + 1;  // ks > ke
  p = good, p.ks = bad_ks.data();
  expect_bad(p, out.data(), {"indexer_logits", "ke[3]"});
  bad_ke[5] = c.S + 1;  // ke > S
  p = good, p.ke = bad_ke.data();
  expect_bad(p, out.data(), {"indexer_logits", "ke[5]"});
  std::vector<int32_t> neg_ks = c.ks;
  neg_ks[0] = -1;
  p = good, p.ks = neg_ks.data();
  expect_bad(p, out.data(), {"indexer_logits", "ks[0]"});
  const std::vector<float> ones(size_t(c.S), 1.0f);
  p = good, p.k_scale = ones.data();  // k_scale with fp32 operands
  expect_bad(p, out.data(), {"indexer_logits", "k_scale"});
  p = good, p.precision = Precision::kFp8, p.k_scale = nullptr;  // fp8 without k_scale
  expect_bad(p, out.data(), {"indexer_logits", "k_scale"});

  // indexer_quantize_fp8: DI not a multiple of 128, DI ≠ 128, null pointers; all outputs untouched.
  Guarded<uint8_t> q8(in.q.size(), 0xA5), k8(in.k.size(), 0xA5);
  Guarded<float> ksc(size_t(c.S)), wf(in.w.size());
  IndexerQuantizeParams qgood;
  qgood.T = c.T, qgood.S = c.S, qgood.HI = c.HI, qgood.DI = c.DI;
  qgood.q = in.q.data(), qgood.k = in.k.data(), qgood.w = in.w.data();
  qgood.q_fp8 = q8.data(), qgood.k_fp8 = k8.data(), qgood.k_scale = ksc.data(), qgood.w_folded = wf.data();
  auto expect_bad_quant = [&](const IndexerQuantizeParams& qp, std::initializer_list<const char*> what) {
    EXPECT_TRUE(throws_naming([&] { b.indexer_quantize_fp8(qp); }, what));
    EXPECT_TRUE(q8.untouched(0xA5) && k8.untouched(0xA5) && ksc.untouched() && wf.untouched());
  };
  IndexerQuantizeParams qp = qgood;
  qp.DI = 64;  // (buffers are larger than needed: nothing may be written anyway)
  expect_bad_quant(qp, {"indexer_quantize_fp8", "DI = 64", "multiple of"});
  qp = qgood, qp.DI = 2 * kIndexerKeyDim;
  expect_bad_quant(qp, {"indexer_quantize_fp8", "DI = 256"});
  qp = qgood, qp.q = nullptr;
  expect_bad_quant(qp, {"indexer_quantize_fp8", "q is null"});
  qp = qgood, qp.k_scale = nullptr;
  expect_bad_quant(qp, {"indexer_quantize_fp8", "k_scale is null"});
  qp = qgood, qp.w_folded = nullptr;
  expect_bad_quant(qp, {"indexer_quantize_fp8", "w_folded is null"});
  qp = qgood, qp.HI = 0;
  expect_bad_quant(qp, {"indexer_quantize_fp8", "HI"});
}

// ═══════════════════════════════ row: topk_select ═════════════════════════════════════════════
void check_topk_select(Backend& b) {
  struct TopkCase {
    std::string name;
    int T, S, K;
    std::vector<int32_t> ks, ke;
    std::vector<float> logits;
  };
  std::vector<TopkCase> cases;
  Rng rng(4242);
  auto random_ranges = [&](TopkCase& c) {  // includes empty rows and rows shorter than K
    for (int t = 0; t < c.T; ++t) {
      int a = rng.integer(0, c.S), e = rng.integer(0, c.S);
      if (a > e) std::swap(a, e);
      if (t % 4 == 1) e = a;                                   // empty row
      if (t % 4 == 2) e = std::min(c.S, a + c.K / 2 + 1);      // shorter than K
      if (t % 4 == 3) a = 0, e = c.S;                          // the whole row
      c.ks.push_back(a), c.ke.push_back(e);
    }
  };
  auto add = [&](std::string name, int T, int S, int K, auto&& value) {
    TopkCase c{std::move(name), T, S, K, {}, {}, std::vector<float>(size_t(T) * S)};
    for (auto& x : c.logits) x = value();
    if (c.logits.empty()) c.logits.push_back(0.0f);  // S = 0: a valid (never read) pointer
    random_ranges(c);
    cases.push_back(std::move(c));
  };
  add("random", 8, 300, 64, [&] { return rng.normal(); });
  add("ties_3_values", 8, 200, 50, [&] { return float(rng.integer(0, 2)); });
  add("all_equal", 4, 130, 64, [] { return 0.5f; });
  add("signed_zeros", 6, 150, 40, [&] { return std::array<float, 3>{-0.0f, 0.0f, 1.0f}[size_t(rng.integer(0, 2))]; });  // −0 == +0: a tie
  add("nan_inf", 8, 100, 40, [&] {
    const int r = rng.integer(0, 9);
    return r == 0 ? kNanF : r == 1 ? kInfF : r == 2 ? -kInfF : r == 3 ? -kNanF : rng.normal();
  });
  add("all_nan_or_neg_inf", 4, 60, 16, [&] { return rng.integer(0, 1) ? kNanF : -kInfF; });
  add("S_lt_K", 3, 10, 16, [&] { return rng.normal(); });
  add("K1", 6, 77, 1, [&] { return float(rng.integer(-3, 3)); });
  add("S0_empty", 3, 0, 5, [] { return 0.0f; });
  add("K_max_small_S", 2, 65, kMaxTopK, [&] { return rng.normal(); });
  // One long case: K = kMaxTopK on a 20000-key row (plus a row shorter than K, and an empty one).
  TopkCase lng{"K8192_long_row", 3, 20000, kMaxTopK, {0, 100, 5}, {20000, 8000, 5}, std::vector<float>(3 * 20000)};
  for (auto& x : lng.logits) x = float(rng.integer(-20000, 20000)) * 0.25f;  // many exact ties
  cases.push_back(std::move(lng));
  // V3.2's K = 2048 on 60000-key rows of ~100 distinct values (heavy ties), with NaN, −0 and −inf
  // scattered in; rows shorter than K, of exactly K keys, near the end of S, and empty.
  TopkCase ties{"K2048_long_rows_ties_nan", 6, 60000, kV32TopK, {0, 0, 17, 1000, 59000, 5},
                {60000, 1500, 60000, 3048, 60000, 5}, std::vector<float>(size_t(6) * 60000)};
  for (auto& x : ties.logits) x = std::round(rng.normal() * 8.0f) / 8.0f;
  for (int i = 0; i < 500; ++i) ties.logits[size_t(rng.integer(0, 6 * 60000 - 1))] = kNanF;
  for (int i = 0; i < 500; ++i) ties.logits[size_t(rng.integer(0, 6 * 60000 - 1))] = -0.0f;
  for (int i = 0; i < 100; ++i) ties.logits[size_t(rng.integer(0, 6 * 60000 - 1))] = -kInfF;
  cases.push_back(std::move(ties));

  for (const auto& c : cases) {
    Guarded<int32_t> idx(size_t(c.T) * c.K);
    TopkParams p{c.T, c.S, c.K, c.logits.data(), c.ks.data(), c.ke.data(), idx.data()};
    b.topk_select(p);
    EXPECT_GUARDS(idx) << c.name;
    expect_selection_invariants(idx.data(), c.T, c.K, c.ks, c.ke, c.name);
    for (int t = 0; t < c.T; ++t) {
      const auto want = topk_ref(c.logits.data() + size_t(t) * c.S, c.ks[t], c.ke[t], c.K);
      ASSERT_TRUE(bitwise_equal(idx.data() + size_t(t) * c.K, want.data(), size_t(c.K))) << c.name << ": row " << t;
    }
    Guarded<int32_t> again(size_t(c.T) * c.K);
    p.indices = again.data();
    b.topk_select(p);
    EXPECT_TRUE(bitwise_equal(idx.data(), again.data(), idx.size())) << c.name << ": rerun differs";
  }

  // Entries outside [ks, ke) are never read: poison them with +inf and NaN, same answer.
  {
    const TopkCase& c = cases[0];
    std::vector<float> poisoned = c.logits;
    for (int t = 0; t < c.T; ++t)
      for (int s = 0; s < c.S; ++s)
        if (s < c.ks[t] || s >= c.ke[t]) poisoned[size_t(t) * c.S + s] = (s % 2) ? kInfF : kNanF;
    Guarded<int32_t> a(size_t(c.T) * c.K), bb(size_t(c.T) * c.K);
    b.topk_select({c.T, c.S, c.K, c.logits.data(), c.ks.data(), c.ke.data(), a.data()});
    b.topk_select({c.T, c.S, c.K, poisoned.data(), c.ks.data(), c.ke.data(), bb.data()});
    EXPECT_TRUE(bitwise_equal(a.data(), bb.data(), a.size())) << "values outside the ranges were read";
  }

  // ── bad inputs ──
  const TopkCase& c = cases[0];
  Guarded<int32_t> idx(size_t(c.T) * kMaxTopK);
  const TopkParams good{c.T, c.S, c.K, c.logits.data(), c.ks.data(), c.ke.data(), idx.data()};
  auto expect_bad = [&](const TopkParams& p, std::initializer_list<const char*> what) {
    EXPECT_TRUE(throws_naming([&] { b.topk_select(p); }, what));
    EXPECT_TRUE(idx.untouched());
    EXPECT_GUARDS(idx);
  };
  TopkParams p = good;
  p.K = 0;
  expect_bad(p, {"topk_select", "K = 0"});
  p.K = -3;
  expect_bad(p, {"topk_select", "K = -3"});
  p.K = kMaxTopK + 1;
  expect_bad(p, {"topk_select", "K = 8193"});
  p = good, p.logits = nullptr;
  expect_bad(p, {"topk_select", "logits is null"});
  p = good, p.indices = nullptr;
  expect_bad(p, {"topk_select", "indices is null"});
  p = good, p.ke = nullptr;
  expect_bad(p, {"topk_select", "ke is null"});
  std::vector<int32_t> bad_ke = c.ke;
  bad_ke[2] = c.ks[2] - 1;
  p = good, p.ke = bad_ke.data();
  expect_bad(p, {"topk_select", "ke[2]"});
  bad_ke = c.ke, bad_ke[4] = c.S + 1;
  p = good, p.ke = bad_ke.data();
  expect_bad(p, {"topk_select", "ke[4]"});
}

// ═══════════════════════════════ row: indexer_topk (fused) ═══════════════════════════════════
void check_indexer_topk(Backend& b) {
  struct TopkCase {
    IndexerCase c;
    std::vector<int> budgets;          // empty: {1, 5, 64, max_len, max_len + 3}
    std::vector<Precision> precisions; // empty: fp32, bf16, and fp8 where DI = 128
  };
  std::vector<TopkCase> cases;
  for (IndexerCase& c : indexer_cases()) cases.push_back({std::move(c), {}, {}});
  // A long-row case where the running top-K must compact many times (HI = 1: half of the logits
  // are exact-zero ties, as ReLU clips), with rows starting at odd offsets.
  cases.push_back({{"long_rows_HI1", 4, 3000, 1, 128, {0, 5, 1000, 2999}, {3000, 2000, 2999, 3000}}, {1, 16, 300, 3000}, {}});
  // The V3.2 shape on e4m3 inputs (the tensor-core variants' logits, then topk_select): S < K, K = S,
  // budgets around the tile and V3.2's K = 2048.
  const std::vector<IndexerCase> v32 = v32_indexer_cases();
  const std::vector<Precision> fp8 = {Precision::kFp8};
  cases.push_back({v32[0], {1, 4}, fp8});
  cases.push_back({v32[1], {1, 64, 199, 200, kV32TopK}, fp8});
  cases.push_back({v32[3], {1, 128, 777, kV32TopK}, fp8});
  cases.push_back({v32[4], {1, 300, kV32TopK}, fp8});
  cases.push_back({{"V32_long_rows_T3_S20000", 3, 20000, kV32IndexerHeads, kIndexerKeyDim, {0, 100, 0}, {20000, 15000, 1500}},
                   {kV32TopK},
                   fp8});
  if (b.device_scale()) {
    // T = 300 × S = 131071 causal rows: the GPU's chunked indexer_topk holds ⌊128 MiB / (4·S)⌋ = 256
    // rows of logits at a time, so its rows fall into two chunks [0, 256) and [256, 300); chunked
    // fused ≡ one-shot topk_select(indexer_logits) bit for bit, rows on both sides of the boundary.
    IndexerCase chunks{"V32_causal_T300_S131071_two_chunks", 300, 131071, kV32IndexerHeads, kIndexerKeyDim, {}, {}};
    for (int t = 0; t < chunks.T; ++t) chunks.ks.push_back(0), chunks.ke.push_back(chunks.S - chunks.T + t + 1);
    cases.push_back({chunks, {kV32TopK}, fp8});
  }
  uint64_t seed = 300;
  for (const auto& [c, case_budgets, case_precisions] : cases) {
    const Fp32Inputs in = make_inputs(c, ++seed);
    int max_len = 0;
    for (int t = 0; t < c.T; ++t) max_len = std::max(max_len, c.ke[t] - c.ks[t]);
    std::vector<int> budgets = case_budgets;
    if (budgets.empty()) budgets = {1, 5, 64, std::max(1, max_len), max_len + 3};
    std::vector<Precision> precisions = case_precisions;
    if (precisions.empty()) {
      precisions = {Precision::kFp32, Precision::kBf16};
      if (c.DI == kIndexerKeyDim) precisions.push_back(Precision::kFp8);
    }
    for (Precision prec : precisions) {
      const ModeInputs m = make_mode(b, c, in, prec);
      const IndexerParams p = m.params(c, in);
      Guarded<float> logits(size_t(c.T) * c.S);
      b.indexer_logits(p, logits.data());
      for (int K : budgets) {
        const std::string name = c.name + "/prec" + std::to_string(int(prec)) + "/K" + std::to_string(K);
        Guarded<int32_t> fused(size_t(c.T) * K), unfused(size_t(c.T) * K);
        b.indexer_topk(p, K, fused.data());
        b.topk_select({c.T, c.S, K, logits.data(), c.ks.data(), c.ke.data(), unfused.data()});
        EXPECT_GUARDS(fused) << name;
        ASSERT_TRUE(bitwise_equal(fused.data(), unfused.data(), fused.size()))
            << name << ": fused indexer_topk != topk_select(indexer_logits)";
        expect_selection_invariants(fused.data(), c.T, K, c.ks, c.ke, name);
        if (K >= max_len)  // the budget covers every row: exactly the causal/range set is selected
          for (int t = 0; t < c.T; ++t) {
            std::vector<int32_t> got(fused.data() + size_t(t) * K, fused.data() + size_t(t) * K + (c.ke[t] - c.ks[t]));
            std::sort(got.begin(), got.end());
            std::vector<int32_t> want(size_t(c.ke[t] - c.ks[t]));
            std::iota(want.begin(), want.end(), c.ks[t]);
            ASSERT_EQ(got, want) << name << ": row " << t << " does not select its whole range";
          }
        Guarded<int32_t> again(size_t(c.T) * K);
        b.indexer_topk(p, K, again.data());
        EXPECT_TRUE(bitwise_equal(fused.data(), again.data(), fused.size())) << name << ": rerun differs";
      }
    }
  }

  // ── bad inputs ──
  const IndexerCase c = packed("bad", {6, 4}, 2, 128);
  const Fp32Inputs in = make_inputs(c, 9);
  const IndexerParams good = make_mode(b, c, in, Precision::kFp32).params(c, in);
  Guarded<int32_t> idx(size_t(c.T) * kMaxTopK);
  auto expect_bad = [&](const IndexerParams& p, int K, int32_t* dst, std::initializer_list<const char*> what) {
    EXPECT_TRUE(throws_naming([&] { b.indexer_topk(p, K, dst); }, what));
    EXPECT_TRUE(idx.untouched());
    EXPECT_GUARDS(idx);
  };
  expect_bad(good, 0, idx.data(), {"indexer_topk", "K = 0"});
  expect_bad(good, kMaxTopK + 1, idx.data(), {"indexer_topk", "K = 8193"});
  expect_bad(good, 4, nullptr, {"indexer_topk", "indices is null"});
  IndexerParams p = good;
  p.precision = Precision::kFp8;
  expect_bad(p, 4, idx.data(), {"indexer_topk", "k_scale"});
  std::vector<int32_t> bad_ks = c.ks;
  bad_ks[1] = c.ke[1] + 1;
  p = good, p.ks = bad_ks.data();
  expect_bad(p, 4, idx.data(), {"indexer_topk", "ke[1]"});
  p = good, p.q = nullptr;
  expect_bad(p, 4, idx.data(), {"indexer_topk", "q is null"});
}

}  // namespace dsa::test
