// op_attention.cpp — rows 6–8 of the test table: sparse and dense MQA attention, forward and
// backward, against the float64 references of attention_ref.h, plus the sparse ≡ dense invariant.
#include <algorithm>
#include <cstring>
#include <numeric>

#include "attention_ref.h"
#include "table.h"

namespace dsa::test {
namespace {

// ── tolerances ──────────────────────────────────────────────────────────────────────────────────
// The op computes each score as an fp32 dot over Dqk (error ≲ √Dqk·ε₃₂·|q||k|·scale, ~1e-6 for the
// N(0,1) inputs here with Dqk ≤ 576), one fp32 exp per score (1 ulp), fp32 sums inside a tile of
// 64 keys (≤ 64·ε₃₂ ≈ 8e-6 relative, typically √64·ε₃₂) and fp64 sums across tiles. Outputs are
// O(1); the largest error observed over these cases is 2.5e-6 (V3.2 shape, H = 128), so 2e-5
// absolute + 2e-5 relative leaves an ~8× margin.
constexpr double kFwdAtol = 2e-5, kFwdRtol = 2e-5;
// Backward: dq/dkv sum dZ·k over up to a few thousand (query, head, key) terms with |dkv| up to
// ~25, each carrying the fp32 score error above; observed max 8.9e-6 → 5e-5 abs + 2e-5 rel.
constexpr double kBwdAtol = 5e-5, kBwdRtol = 2e-5;
// Finite differences of the fp64 loss with step 1e-6: truncation h²·|f'''| ≈ 1e-12, rounding
// ε₆₄·|L|/h ≈ 1e-9 for |L| ≲ 10 → 1e-6 leaves three orders of margin.
constexpr double kFdStep = 1e-6, kFdAtol = 1e-6, kFdRtol = 1e-6;
// Tensor-core variants (Arith::kTensor: the kMma / kWgmma forwards, the kCublas backward) round q and
// kv to bf16 (relative 2^-9 each, round to nearest even), so a score z = scale·q·k (|z| up to ~10 for
// the N(0,1) inputs here at scale 0.135) is off by up to ~|z|·2^-8 ≈ 0.04 → lse and max_logits within
// 5e-2 absolute. P is rounded to bf16 too and out = Σ P·v averages those per-key errors: the relative
// L2 error of out stays ≤ 2e-2 (measured ~2.4e-3 at the V3.2 shape on H100,
// docs/kernels/sparse_attention.md). wgmma and mma.sync differ only in the fp32 accumulation order.
constexpr double kBf16LseAtol = 5e-2, kBf16OutRelL2 = 2e-2;
// The kCublas backward rounds P and dS = scale·P(dP − Δ) to bf16 again before its GEMMs, and dS is a
// difference that amplifies the relative error of dP where dP ≈ Δ: relative L2 error of dq and dkv
// ≤ 3e-2 (the forward's 2e-2 plus the two extra roundings; measured values in
// docs/kernels/sparse_attention.md). dq = scale·Σ P·dP·k − scale·Δ·Σ P·k cancels where the softmax
// has little freedom (exactly at K = 1), so its error is measured against the size of the first
// term where that is larger than dq itself.
constexpr double kBf16BwdRelL2 = 3e-2;
// V3.2's softmax scale: 192^-0.5 · mscale², mscale = 1.3689 (YaRN).
constexpr float kV32Scale = 0.13524f;
// Sparse ≡ dense: the same fp32 arithmetic in a different key order and tiling; only the fp32
// intra-tile sums and the fp64 carry differ (observed max 8.6e-6 on dkv of magnitude ~10).
constexpr double kInvAtol = 2e-5, kInvRtol = 1e-5;

// ── problem builders ────────────────────────────────────────────────────────────────────────────
// Row t: a random subset of [0, S) (min(K, S) distinct keys), then each slot becomes −1 with
// probability invalid_frac or a copy of an earlier slot's key with probability dup_frac.
void random_indices(AttnProblem& pr, int K, uint64_t seed, double invalid_frac = 0.0, double dup_frac = 0.0) {
  Rng rng(seed);
  pr.sparse = true;
  pr.K = K;
  pr.indices.assign(static_cast<size_t>(pr.T) * K, kInvalidIndex);
  std::vector<int32_t> perm(pr.S);
  for (int t = 0; t < pr.T; ++t) {
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng.engine());
    int32_t* row = pr.indices.data() + static_cast<size_t>(t) * K;
    for (int k = 0; k < std::min(K, pr.S); ++k) row[k] = perm[k];
    for (int k = 0; k < K; ++k) {
      const float u = rng.uniform(0.0f, 1.0f);
      if (u < invalid_frac) row[k] = kInvalidIndex;
      else if (u < invalid_frac + dup_frac && k > 0) row[k] = row[rng.integer(0, k - 1)];
    }
  }
}

void dense_ranges(AttnProblem& pr, const std::vector<int32_t>& ks, const std::vector<int32_t>& ke) {
  pr.sparse = false;
  pr.ks = ks;
  pr.ke = ke;
}

// Causal ranges for a packed batch; T = S = Σ lens.
AttnProblem causal_problem(uint64_t seed, const std::vector<int>& lens, int H, int Dqk, int Dv) {
  const int L = std::accumulate(lens.begin(), lens.end(), 0);
  AttnProblem pr = make_problem(seed, L, L, H, Dqk, Dv);
  std::vector<int32_t> ks, ke;
  packed_causal_ranges(lens, ks, ke);
  dense_ranges(pr, ks, ke);
  return pr;
}

// ── running the ops ─────────────────────────────────────────────────────────────────────────────
struct FwdBuffers {
  Guarded<float> out, lse, max_logits;
  explicit FwdBuffers(const AttnProblem& pr)
      : out(static_cast<size_t>(pr.T) * pr.H * pr.Dv), lse(static_cast<size_t>(pr.T) * pr.H),
        max_logits(static_cast<size_t>(pr.T) * pr.H) {}
  AttentionForwardOut view(bool with_max = true) { return {out.data(), lse.data(), with_max ? max_logits.data() : nullptr}; }
};

void forward(Backend& be, const AttnProblem& pr, const AttentionForwardOut& o) {
  if (pr.sparse) be.sparse_attention_forward(pr.params(), o);
  else be.dense_attention_forward(pr.params(), o);
}

struct BwdBuffers {
  std::vector<float> dout;
  Guarded<float> dq, dkv;
  BwdBuffers(const AttnProblem& pr, uint64_t seed)
      : dout(Rng(seed).normal_vec(static_cast<size_t>(pr.T) * pr.H * pr.Dv)),
        dq(static_cast<size_t>(pr.T) * pr.H * pr.Dqk), dkv(static_cast<size_t>(pr.S) * pr.Dqk) {}
};

void backward(Backend& be, const AttnProblem& pr, const FwdBuffers& f, BwdBuffers& b) {
  const AttentionBackwardArgs args{b.dout.data(), f.out.data(), f.lse.data(), b.dq.data(), b.dkv.data()};
  if (pr.sparse) be.sparse_attention_backward(pr.params(), args);
  else be.dense_attention_backward(pr.params(), args);
}

// ── forward check: reference, guards, empty-row conventions, determinism, max_logits optional ───
// ‖got − want‖ / max(‖want‖, √floor_sq) over all elements, after inf/NaN parity.
double rel_l2(const float* got, const std::vector<double>& want, double floor_sq = 0.0) {
  const Diff d = compare(got, want.data(), want.size());
  EXPECT_FALSE(d.special_mismatch) << d.where;
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (!std::isfinite(want[i])) continue;
    num += (got[i] - want[i]) * (got[i] - want[i]);
    den += want[i] * want[i];
  }
  den = std::max(den, floor_sq);
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

void check_forward_case(Backend& be, const AttnProblem& pr, const std::string& label) {
  SCOPED_TRACE(label);
  FwdBuffers f(pr);
  forward(be, pr, f.view());
  const RefForward ref = ref_attention_forward(to_f64(pr.q), to_f64(pr.kv), pr.sets(), pr.H, pr.Dqk, pr.Dv, pr.scale);
  const char* op = pr.sparse ? "sparse_attention_forward" : "dense_attention_forward";
  if (be.arith(op) == Arith::kTensor) {
    EXPECT_TRUE(all_close(f.lse.data(), ref.lse.data(), f.lse.size(), kBf16LseAtol, 0.0)) << "lse";
    EXPECT_TRUE(all_close(f.max_logits.data(), ref.max_logits.data(), f.max_logits.size(), kBf16LseAtol, 0.0))
        << "max_logits";
    EXPECT_LE(rel_l2(f.out.data(), ref.out), kBf16OutRelL2) << "out relative L2 error";
  } else {
    EXPECT_TRUE(all_close(f.out.data(), ref.out.data(), f.out.size(), kFwdAtol, kFwdRtol)) << "out";
    EXPECT_TRUE(all_close(f.lse.data(), ref.lse.data(), f.lse.size(), kFwdAtol, kFwdRtol)) << "lse";
    EXPECT_TRUE(all_close(f.max_logits.data(), ref.max_logits.data(), f.max_logits.size(), kFwdAtol, kFwdRtol))
        << "max_logits";
  }
  EXPECT_GUARDS(f.out);
  EXPECT_GUARDS(f.lse);
  EXPECT_GUARDS(f.max_logits);
  // Rows with no valid key: exactly out 0, lse +inf, max_logits −inf (all_close only checks parity).
  const KeySets sets = pr.sets();
  for (int t = 0; t < pr.T; ++t) {
    if (!sets[t].empty()) continue;
    for (int h = 0; h < pr.H; ++h) {
      const size_t th = static_cast<size_t>(t) * pr.H + h;
      EXPECT_EQ(f.lse[th], std::numeric_limits<float>::infinity()) << "t=" << t;
      EXPECT_EQ(f.max_logits[th], -std::numeric_limits<float>::infinity()) << "t=" << t;
      for (int d = 0; d < pr.Dv; ++d) ASSERT_EQ(f.out[th * pr.Dv + d], 0.0f) << "t=" << t;
    }
  }
  // Determinism: a rerun (on one thread) is bitwise equal; max_logits = null changes nothing else.
  FwdBuffers g(pr);
  with_one_thread([&] { forward(be, pr, g.view(/*with_max=*/false)); });
  EXPECT_TRUE(bitwise_equal(f.out.data(), g.out.data(), f.out.size())) << "rerun out";
  EXPECT_TRUE(bitwise_equal(f.lse.data(), g.lse.data(), f.lse.size())) << "rerun lse";
  EXPECT_TRUE(g.max_logits.untouched()) << "max_logits = null was written";
}

// ── backward check: backend vs fp64 reference backward, zero rows, guards, determinism ──────────
// ‖scale·Σ_j P_j·dP_j·k_j‖² over all (t, h) in fp64: the size of dq's first term (see kBf16BwdRelL2).
double dq_first_term_sq(const AttnProblem& pr, const std::vector<float>& dout) {
  const KeySets sets = pr.sets();
  const RefForward f = ref_attention_forward(to_f64(pr.q), to_f64(pr.kv), sets, pr.H, pr.Dqk, pr.Dv, pr.scale);
  double sum = 0;
  for (int t = 0; t < pr.T; ++t)
    for (int h = 0; h < pr.H; ++h) {
      const size_t th = static_cast<size_t>(t) * pr.H + h;
      std::vector<double> term(pr.Dqk, 0.0);
      for (int s : sets[t]) {
        const float* k = &pr.kv[static_cast<size_t>(s) * pr.Dqk];
        double z = 0, dp = 0;
        for (int d = 0; d < pr.Dqk; ++d) z += double(pr.q[th * pr.Dqk + d]) * k[d];
        for (int d = 0; d < pr.Dv; ++d) dp += double(dout[th * pr.Dv + d]) * k[d];
        const double w = pr.scale * std::exp(pr.scale * z - f.lse[th]) * dp;
        for (int d = 0; d < pr.Dqk; ++d) term[d] += w * k[d];
      }
      for (double v : term) sum += v * v;
    }
  return sum;
}

void check_backward_case(Backend& be, const AttnProblem& pr, const std::string& label, uint64_t seed) {
  SCOPED_TRACE(label);
  FwdBuffers f(pr);
  forward(be, pr, f.view());
  BwdBuffers b(pr, seed);
  backward(be, pr, f, b);
  const KeySets sets = pr.sets();
  const RefBackward ref =
      ref_attention_backward(to_f64(pr.q), to_f64(pr.kv), to_f64(b.dout), sets, pr.S, pr.H, pr.Dqk, pr.Dv, pr.scale);
  if (be.arith(pr.sparse ? "sparse_attention_backward" : "dense_attention_backward") == Arith::kTensor) {
    EXPECT_LE(rel_l2(b.dq.data(), ref.dq, dq_first_term_sq(pr, b.dout)), kBf16BwdRelL2) << "dq relative L2 error";
    EXPECT_LE(rel_l2(b.dkv.data(), ref.dkv), kBf16BwdRelL2) << "dkv relative L2 error";
  } else {
    EXPECT_TRUE(all_close(b.dq.data(), ref.dq.data(), b.dq.size(), kBwdAtol, kBwdRtol)) << "dq";
    EXPECT_TRUE(all_close(b.dkv.data(), ref.dkv.data(), b.dkv.size(), kBwdAtol, kBwdRtol)) << "dkv";
  }
  EXPECT_GUARDS(b.dq);
  EXPECT_GUARDS(b.dkv);
  // A row with no valid key has dq exactly 0; a key nobody selected has dkv exactly 0.
  std::vector<char> used(pr.S, 0);
  for (int t = 0; t < pr.T; ++t) {
    for (int s : sets[t]) used[s] = 1;
    if (!sets[t].empty()) continue;
    for (size_t i = 0; i < static_cast<size_t>(pr.H) * pr.Dqk; ++i)
      ASSERT_EQ(b.dq[static_cast<size_t>(t) * pr.H * pr.Dqk + i], 0.0f) << "empty row t=" << t;
  }
  for (int s = 0; s < pr.S; ++s)
    if (!used[s]) {
      for (int d = 0; d < pr.Dqk; ++d) ASSERT_EQ(b.dkv[static_cast<size_t>(s) * pr.Dqk + d], 0.0f) << "unused key " << s;
    }
  BwdBuffers b2(pr, seed);
  with_one_thread([&] { backward(be, pr, f, b2); });   // rerun on one thread: bitwise equal
  EXPECT_TRUE(bitwise_equal(b.dq.data(), b2.dq.data(), b.dq.size())) << "rerun dq";
  EXPECT_TRUE(bitwise_equal(b.dkv.data(), b2.dkv.data(), b.dkv.size())) << "rerun dkv";
}

// fp64 reference backward vs central differences of L = Σ dout∘out (every element of q and kv).
void check_reference_gradient(const AttnProblem& pr, uint64_t seed) {
  std::vector<double> q = to_f64(pr.q), kv = to_f64(pr.kv);
  const std::vector<double> dout = to_f64(Rng(seed).normal_vec(static_cast<size_t>(pr.T) * pr.H * pr.Dv));
  const KeySets sets = pr.sets();
  auto loss = [&] {
    const RefForward f = ref_attention_forward(q, kv, sets, pr.H, pr.Dqk, pr.Dv, pr.scale);
    double l = 0;
    for (size_t i = 0; i < f.out.size(); ++i) l += dout[i] * f.out[i];
    return l;
  };
  const RefBackward g = ref_attention_backward(q, kv, dout, sets, pr.S, pr.H, pr.Dqk, pr.Dv, pr.scale);
  std::vector<double> fd_q(q.size()), fd_kv(kv.size());
  for (size_t i = 0; i < q.size(); ++i) fd_q[i] = central_difference(q, i, loss, kFdStep);
  for (size_t i = 0; i < kv.size(); ++i) fd_kv[i] = central_difference(kv, i, loss, kFdStep);
  EXPECT_TRUE(all_close(g.dq.data(), fd_q.data(), q.size(), kFdAtol, kFdRtol)) << "reference dq vs finite differences";
  EXPECT_TRUE(all_close(g.dkv.data(), fd_kv.data(), kv.size(), kFdAtol, kFdRtol)) << "reference dkv vs finite differences";
}

// ── case lists ──────────────────────────────────────────────────────────────────────────────────
std::vector<std::pair<std::string, AttnProblem>> sparse_cases() {
  std::vector<std::pair<std::string, AttnProblem>> c;
  auto add = [&](std::string name, AttnProblem pr) { c.emplace_back(std::move(name), std::move(pr)); };
  {  // T = 1 and S < K (the tail of every row is −1)
    AttnProblem pr = make_problem(101, 1, 10, 3, 20, 12);
    random_indices(pr, 16, 1);
    add("T=1, S<K", pr);
  }
  {  // K = 1
    AttnProblem pr = make_problem(102, 5, 9, 2, 16, 16);
    random_indices(pr, 1, 2);
    add("K=1", pr);
  }
  {  // sizes ±1 around 64 / 128 (H, K, S), odd Dqk/Dv to exercise the vector tails
    const int shapes[][4] = {{3, 63, 64, 65}, {3, 65, 63, 64}, {2, 129, 65, 127}, {2, 127, 1, 129}, {2, 128, 64, 128}};
    uint64_t seed = 110;
    for (const auto& s : shapes) {
      AttnProblem pr = make_problem(seed, s[0], s[1], s[2], 37, 33);
      random_indices(pr, s[3], seed + 1000, 0.1);
      add("T=" + std::to_string(s[0]) + " S=" + std::to_string(s[1]) + " H=" + std::to_string(s[2]) +
              " K=" + std::to_string(s[3]), pr);
      ++seed;
    }
  }
  {  // V3.2 MQA shape: Dqk = 576, Dv = 512, H = 128, V3.2 scale (192^-0.5 · mscale², mscale 1.3689)
    AttnProblem pr = make_problem(120, 2, 300, 128, kMlaLatentDim + kMlaRopeDim, kMlaLatentDim);
    pr.scale = kV32Scale;
    random_indices(pr, 256, 3, 0.05);
    add("V3.2 shape", pr);
  }
  {  // all-invalid rows (t = 0 and 2), topk_length (incl. 0 and K), duplicates, peaky softmax
    AttnProblem pr = make_problem(121, 6, 80, 4, 24, 16, 4.0);
    random_indices(pr, 40, 4, 0.2, 0.2);
    std::fill(pr.indices.begin(), pr.indices.begin() + 40, kInvalidIndex);
    std::fill(pr.indices.begin() + 80, pr.indices.begin() + 120, kInvalidIndex);
    pr.topk_length = {40, 0, 40, 17, 1, 40};
    add("empty rows, topk_length, duplicates", pr);
  }
  {  // every slot of a row the same key (duplicates only)
    AttnProblem pr = make_problem(122, 2, 5, 3, 16, 8);
    pr.sparse = true;
    pr.K = 7;
    pr.indices = {3, 3, 3, 3, 3, 3, 3, 0, 0, -1, 4, 4, -1, 0};
    add("duplicates only", pr);
  }
  {  // a long row: 2048 slots over S = 3000
    AttnProblem pr = make_problem(123, 2, 3000, 2, 64, 48);
    random_indices(pr, 2048, 5, 0.01);
    add("long row K=2048", pr);
  }
  // The shapes the tensor-core forwards take (Dqk 576, Dv 512, H ∈ {64, 128}) at the edges of their
  // 64-key tiles: K a multiple of the tile, ±1 around it, a tail; S < K with duplicates at T = 1;
  // K = 1; a long row (K = 640: ten tiles, the kWgmma key-id ring wraps); −1 slots, an all-invalid
  // row and topk_length (0, short, K).
  struct V32 {
    const char* name;
    int T, S, H, K;
    double invalid_frac, dup_frac;
  };
  const V32 v32[] = {
      {"V3.2 H=64 K=256 (4 whole tiles)", 3, 300, 64, 256, 0.05, 0.0},
      {"V3.2 H=128 K=63 (tile-1)", 2, 500, 128, 63, 0.05, 0.0},
      {"V3.2 T=1 S<K K=65 (tile+1), duplicates", 1, 40, 64, 65, 0.1, 0.3},
      {"V3.2 H=64 K=1", 2, 5, 64, 1, 0.0, 0.0},
      {"V3.2 long row K=640 (10 tiles)", 2, 2000, 64, 640, 0.02, 0.0},
  };
  uint64_t seed = 130;
  for (const V32& v : v32) {
    AttnProblem pr = make_problem(seed, v.T, v.S, v.H, kMlaLatentDim + kMlaRopeDim, kMlaLatentDim);
    pr.scale = kV32Scale;
    random_indices(pr, v.K, seed + 1000, v.invalid_frac, v.dup_frac);
    add(v.name, pr);
    ++seed;
  }
  {  // H = 128, K = 100 (a tile tail): row 1 all −1, topk_length 0 / K/3 / K
    AttnProblem pr = make_problem(140, 4, 257, 128, kMlaLatentDim + kMlaRopeDim, kMlaLatentDim);
    pr.scale = kV32Scale;
    random_indices(pr, 100, 1140, 0.1);
    std::fill(pr.indices.begin() + 100, pr.indices.begin() + 200, kInvalidIndex);
    pr.topk_length = {100, 100, 0, 33};
    add("V3.2 H=128 K=100 (tile tail), empty row, topk_length", pr);
  }
  return c;
}

std::vector<std::pair<std::string, AttnProblem>> dense_cases() {
  std::vector<std::pair<std::string, AttnProblem>> c;
  auto add = [&](std::string name, AttnProblem pr) { c.emplace_back(std::move(name), std::move(pr)); };
  add("T=S=1", causal_problem(201, {1}, 1, 8, 8));
  add("causal L=65 H=4", causal_problem(202, {65}, 4, 20, 12));
  add("causal L=129 H=1", causal_problem(203, {129}, 1, 19, 17));
  add("packed {5,64,1,70} H=3", causal_problem(204, {5, 64, 1, 70}, 3, 24, 16));
  add("H=63 L=64", causal_problem(205, {64}, 63, 16, 16));
  add("H=65 L=63", causal_problem(206, {63}, 65, 16, 9));
  {  // arbitrary (non-causal) ranges with empty rows, ks > 0, ranges crossing tiles
    AttnProblem pr = make_problem(207, 7, 200, 5, 32, 24, 3.0);
    dense_ranges(pr, {0, 10, 70, 199, 128, 3, 64}, {200, 10, 130, 200, 128, 67, 65});
    add("arbitrary ranges with empty rows", pr);
  }
  {  // all rows empty
    AttnProblem pr = make_problem(208, 3, 4, 2, 8, 8);
    dense_ranges(pr, {0, 2, 4}, {0, 2, 4});
    add("all rows empty", pr);
  }
  {  // V3.2 MQA shape
    AttnProblem pr = make_problem(209, 3, 200, 16, kMlaLatentDim + kMlaRopeDim, kMlaLatentDim);
    dense_ranges(pr, {0, 0, 50}, {1, 200, 190});
    add("V3.2 shape", pr);
  }
  {  // a long row
    AttnProblem pr = make_problem(210, 2, 5000, 2, 64, 48);
    dense_ranges(pr, {0, 1}, {5000, 4999});
    add("long row S=5000", pr);
  }
  return c;
}

// Small backward shapes (the fp64 reference backward costs T·H·|A|·(Dqk+Dv)).
std::vector<std::pair<std::string, AttnProblem>> sparse_backward_cases() {
  std::vector<std::pair<std::string, AttnProblem>> c;
  {
    AttnProblem pr = make_problem(301, 1, 10, 3, 20, 12);
    random_indices(pr, 16, 11);
    c.emplace_back("T=1, S<K", pr);
  }
  {
    AttnProblem pr = make_problem(302, 4, 9, 2, 16, 16);
    random_indices(pr, 1, 12);
    c.emplace_back("K=1", pr);
  }
  {
    AttnProblem pr = make_problem(303, 4, 130, 65, 37, 33);
    random_indices(pr, 129, 13, 0.1, 0.05);
    c.emplace_back("H=65 S=130 K=129", pr);
  }
  {
    AttnProblem pr = make_problem(304, 6, 80, 4, 24, 16, 4.0);
    random_indices(pr, 40, 14, 0.2, 0.2);
    std::fill(pr.indices.begin(), pr.indices.begin() + 40, kInvalidIndex);
    pr.topk_length = {40, 0, 40, 17, 1, 40};
    c.emplace_back("empty rows, topk_length, duplicates", pr);
  }
  {
    AttnProblem pr = make_problem(305, 2, 100, 16, kMlaLatentDim + kMlaRopeDim, kMlaLatentDim);
    pr.scale = kV32Scale;
    random_indices(pr, 64, 15);
    c.emplace_back("V3.2 dims", pr);
  }
  {  // the V3.2 shape at H = 64, K = 256: −1 slots, row 1 all −1, topk_length 0 / K/3 / K
    AttnProblem pr = make_problem(306, 4, 300, 64, kMlaLatentDim + kMlaRopeDim, kMlaLatentDim);
    random_indices(pr, 256, 16, 0.05);
    std::fill(pr.indices.begin() + 256, pr.indices.begin() + 512, kInvalidIndex);
    pr.topk_length = {85, 256, 0, 256};
    c.emplace_back("V3.2 H=64 K=256, empty row, topk_length", pr);
  }
  {
    AttnProblem pr = make_problem(307, 2, 257, 128, kMlaLatentDim + kMlaRopeDim, kMlaLatentDim);
    random_indices(pr, 100, 17, 0.05);
    c.emplace_back("V3.2 H=128 K=100", pr);
  }
  {  // S < K: every row lists all 40 keys, then −1 and duplicates
    AttnProblem pr = make_problem(308, 3, 40, 16, 64, 32);
    random_indices(pr, 96, 18, 0.3, 0.2);
    c.emplace_back("S<K with duplicates", pr);
  }
  {
    AttnProblem pr = make_problem(309, 1, 5, 8, 64, 64);
    random_indices(pr, 1, 19);
    c.emplace_back("T=1 K=1", pr);
  }
  return c;
}

std::vector<std::pair<std::string, AttnProblem>> dense_backward_cases() {
  std::vector<std::pair<std::string, AttnProblem>> c;
  c.emplace_back("T=S=1", causal_problem(401, {1}, 1, 8, 8));
  c.emplace_back("causal L=65 H=4", causal_problem(402, {65}, 4, 20, 12));
  c.emplace_back("packed {5,64,1,70} H=3", causal_problem(403, {5, 64, 1, 70}, 3, 24, 16));
  c.emplace_back("H=63 L=64", causal_problem(404, {64}, 63, 16, 16));
  AttnProblem pr = make_problem(405, 7, 200, 5, 32, 24, 3.0);
  dense_ranges(pr, {0, 10, 70, 199, 128, 3, 64}, {200, 10, 130, 200, 128, 67, 65});
  c.emplace_back("arbitrary ranges with empty rows", pr);
  AttnProblem v = make_problem(406, 2, 80, 8, kMlaLatentDim + kMlaRopeDim, kMlaLatentDim);
  dense_ranges(v, {0, 5}, {80, 70});
  c.emplace_back("V3.2 dims", v);
  return c;
}

// ── bad input ───────────────────────────────────────────────────────────────────────────────────
// Each mutation of a valid problem must throw naming the op and the argument, outputs untouched.
void check_bad_inputs(Backend& be, bool sparse) {
  const char* fwd_op = sparse ? "sparse_attention_forward" : "dense_attention_forward";
  const char* bwd_op = sparse ? "sparse_attention_backward" : "dense_attention_backward";
  AttnProblem base = make_problem(501, 3, 8, 2, 8, 4);
  if (sparse) {
    random_indices(base, 4, 6);
    base.topk_length = {4, 2, 0};
  } else {
    dense_ranges(base, {0, 1, 2}, {1, 5, 8});
  }
  struct Mutation {
    const char* arg;
    std::function<void(AttnProblem&)> apply;
  };
  std::vector<Mutation> ms = {
      {"scale", [](AttnProblem& p) { p.scale = 0.0f; }},
      {"scale", [](AttnProblem& p) { p.scale = -1.0f; }},
      {"q", [](AttnProblem& p) { p.q.clear(); }},
      {"kv", [](AttnProblem& p) { p.kv.clear(); }},
      {"Dv", [](AttnProblem& p) { p.Dv = p.Dqk + 1; }},
      {"H", [](AttnProblem& p) { p.H = 0; }},
  };
  if (sparse) {
    ms.push_back({"K", [](AttnProblem& p) { p.K = 0; }});
    ms.push_back({"indices", [](AttnProblem& p) { p.indices.clear(); }});
    ms.push_back({"topk_length", [](AttnProblem& p) { p.topk_length[1] = p.K + 1; }});
    ms.push_back({"topk_length", [](AttnProblem& p) { p.topk_length[2] = -1; }});
    ms.push_back({"indices[1,1]", [](AttnProblem& p) { p.indices[p.K + 1] = p.S; }});
    ms.push_back({"indices[2,3]", [](AttnProblem& p) { p.topk_length[2] = p.K; p.indices[2 * p.K + 3] = -2; }});
  } else {
    ms.push_back({"ke[1]", [](AttnProblem& p) { p.ks[1] = 6; }});  // ks > ke
    ms.push_back({"ke[2]", [](AttnProblem& p) { p.ke[2] = p.S + 1; }});
    ms.push_back({"ks", [](AttnProblem& p) { p.ks.clear(); }});
  }
  for (const Mutation& m : ms) {
    SCOPED_TRACE(m.arg);
    AttnProblem pr = base;
    m.apply(pr);
    // Empty vectors stand for null pointers (data() of an empty vector may be non-null).
    AttentionParams p = pr.params();
    if (pr.q.empty()) p.q = nullptr;
    if (pr.kv.empty()) p.kv = nullptr;
    if (pr.indices.empty()) p.indices = nullptr;
    if (!pr.sparse && pr.ks.empty()) p.ks = nullptr;
    FwdBuffers f(base);
    EXPECT_TRUE(throws_naming([&] { sparse ? be.sparse_attention_forward(p, f.view()) : be.dense_attention_forward(p, f.view()); },
                              {fwd_op, m.arg}));
    EXPECT_TRUE(f.out.untouched() && f.lse.untouched() && f.max_logits.untouched());
    BwdBuffers b(base, 7);
    const std::vector<float> out(f.out.size()), lse(f.lse.size());
    const AttentionBackwardArgs args{b.dout.data(), out.data(), lse.data(), b.dq.data(), b.dkv.data()};
    EXPECT_TRUE(throws_naming([&] { sparse ? be.sparse_attention_backward(p, args) : be.dense_attention_backward(p, args); },
                              {bwd_op, m.arg}));
    EXPECT_TRUE(b.dq.untouched() && b.dkv.untouched());
  }
  // Null outputs / backward inputs.
  const AttentionParams p = base.params();
  FwdBuffers f(base);
  auto fwd = [&](AttentionForwardOut o) { sparse ? be.sparse_attention_forward(p, o) : be.dense_attention_forward(p, o); };
  EXPECT_TRUE(throws_naming([&] { fwd({nullptr, f.lse.data(), f.max_logits.data()}); }, {fwd_op, "out"}));
  EXPECT_TRUE(throws_naming([&] { fwd({f.out.data(), nullptr, f.max_logits.data()}); }, {fwd_op, "lse"}));
  EXPECT_TRUE(f.out.untouched() && f.lse.untouched() && f.max_logits.untouched());
  BwdBuffers b(base, 8);
  const std::vector<float> out(f.out.size()), lse(f.lse.size());
  auto bwd = [&](AttentionBackwardArgs a) { sparse ? be.sparse_attention_backward(p, a) : be.dense_attention_backward(p, a); };
  EXPECT_TRUE(throws_naming([&] { bwd({nullptr, out.data(), lse.data(), b.dq.data(), b.dkv.data()}); }, {bwd_op, "dout"}));
  EXPECT_TRUE(throws_naming([&] { bwd({b.dout.data(), nullptr, lse.data(), b.dq.data(), b.dkv.data()}); }, {bwd_op, "out"}));
  EXPECT_TRUE(throws_naming([&] { bwd({b.dout.data(), out.data(), nullptr, b.dq.data(), b.dkv.data()}); }, {bwd_op, "lse"}));
  EXPECT_TRUE(throws_naming([&] { bwd({b.dout.data(), out.data(), lse.data(), nullptr, b.dkv.data()}); }, {bwd_op, "dq"}));
  EXPECT_TRUE(throws_naming([&] { bwd({b.dout.data(), out.data(), lse.data(), b.dq.data(), nullptr}); }, {bwd_op, "dkv"}));
  EXPECT_TRUE(b.dq.untouched() && b.dkv.untouched());
}

}  // namespace

// bf16 inputs: an op given q / kv as bf16 (dtype kBF16) computes what it computes from fp32 arrays
// holding the same values, bit for bit, forward and backward: exact variants widen bf16 exactly and
// run the same arithmetic after the load; the tensor-core variants round fp32 q / kv to bf16 (round
// to nearest even) before any arithmetic, which leaves bf16-valued inputs unchanged. v32: the V3.2
// shape the tensor-core variants take (H = 64, K = 100 with −1 slots, an all-invalid row and
// topk_length), sparse only.
void expect_same_bits(const Guarded<float>& a, const Guarded<float>& b, const char* what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float))) << what << " differs bitwise";
}

void check_bf16_inputs(Backend& be, bool sparse, uint64_t seed, bool v32 = false) {
  SCOPED_TRACE(std::string("bf16 inputs, ") + (sparse ? "sparse" : "dense") + (v32 ? ", V3.2 shape" : ""));
  AttnProblem pr = sparse ? make_problem(seed, 9, 70, 3, 40, 24, 0.125) : causal_problem(seed, {5, 9}, 3, 40, 24);
  if (sparse) random_indices(pr, 33, seed + 1, 0.1, 0.1);
  if (v32) {
    constexpr int kK = 100;
    pr = make_problem(seed, 4, 257, 64, kMlaLatentDim + kMlaRopeDim, kMlaLatentDim);
    pr.scale = kV32Scale;
    random_indices(pr, kK, seed + 1, 0.1);
    std::fill(pr.indices.begin() + kK, pr.indices.begin() + 2 * kK, kInvalidIndex);
    pr.topk_length = {kK, kK, 0, kK / 3};
  }
  std::vector<uint16_t> q16(pr.q.size()), kv16(pr.kv.size());
  for (size_t i = 0; i < pr.q.size(); ++i) pr.q[i] = cpu::bf16_to_float(q16[i] = cpu::bf16_from_float(pr.q[i]));
  for (size_t i = 0; i < pr.kv.size(); ++i) pr.kv[i] = cpu::bf16_to_float(kv16[i] = cpu::bf16_from_float(pr.kv[i]));
  AttentionParams p16 = pr.params();
  p16.dtype = DType::kBF16;
  p16.q = p16.kv = nullptr;
  p16.q_bf16 = q16.data();
  p16.kv_bf16 = kv16.data();
  FwdBuffers f32(pr), f16(pr);
  forward(be, pr, f32.view());
  if (sparse) be.sparse_attention_forward(p16, f16.view());
  else be.dense_attention_forward(p16, f16.view());
  expect_same_bits(f16.out, f32.out, "out");
  expect_same_bits(f16.lse, f32.lse, "lse");
  BwdBuffers b32(pr, seed + 2), b16(pr, seed + 2);
  backward(be, pr, f32, b32);
  const AttentionBackwardArgs args{b16.dout.data(), f32.out.data(), f32.lse.data(), b16.dq.data(), b16.dkv.data()};
  if (sparse) be.sparse_attention_backward(p16, args);
  else be.dense_attention_backward(p16, args);
  expect_same_bits(b16.dq, b32.dq, "dq");
  expect_same_bits(b16.dkv, b32.dkv, "dkv");
  // The pointer pair must match the dtype, named in the error.
  AttentionParams bad = p16;
  bad.q_bf16 = nullptr;
  FwdBuffers g(pr);
  EXPECT_TRUE(throws_naming([&] { if (sparse) be.sparse_attention_forward(bad, g.view()); else be.dense_attention_forward(bad, g.view()); },
                            {"q_bf16"}));
}

void check_sparse_attention_forward(Backend& be) {
  for (const auto& [name, pr] : sparse_cases()) check_forward_case(be, pr, name);
  check_bad_inputs(be, /*sparse=*/true);
  check_bf16_inputs(be, /*sparse=*/true, 950);
  check_bf16_inputs(be, /*sparse=*/true, 970, /*v32=*/true);
}

void check_dense_attention_forward(Backend& be) {
  for (const auto& [name, pr] : dense_cases()) check_forward_case(be, pr, name);
  check_bad_inputs(be, /*sparse=*/false);
  check_bf16_inputs(be, /*sparse=*/false, 960);
}

void check_sparse_attention_backward(Backend& be) {
  {  // the fp64 reference backward itself, against finite differences (duplicates, −1, empty row)
    AttnProblem pr = make_problem(601, 4, 7, 2, 6, 4, 2.0);
    random_indices(pr, 5, 21, 0.2, 0.3);
    std::fill(pr.indices.begin() + 5, pr.indices.begin() + 10, kInvalidIndex);
    check_reference_gradient(pr, 22);
  }
  uint64_t seed = 700;
  for (const auto& [name, pr] : sparse_backward_cases()) check_backward_case(be, pr, name, seed++);
  check_bf16_inputs(be, /*sparse=*/true, 980, /*v32=*/true);   // the backward's bf16 path, at its V3.2 shape
}

void check_dense_attention_backward(Backend& be) {
  {  // the fp64 reference backward against finite differences (packed ranges, an empty row)
    AttnProblem pr = make_problem(602, 6, 6, 2, 6, 4, 2.0);
    dense_ranges(pr, {0, 0, 2, 2, 2, 1}, {1, 2, 2, 4, 5, 6});
    check_reference_gradient(pr, 23);
  }
  uint64_t seed = 800;
  for (const auto& [name, pr] : dense_backward_cases()) check_backward_case(be, pr, name, seed++);
}

// Sparse attention with indices = the causal set (shuffled, padded with −1, K ≥ every row length)
// equals dense causal attention, forward and backward.
void check_sparse_equals_dense(Backend& be) {
  struct Shape {
    std::vector<int> lens;
    int H, Dqk, Dv, pad;
  };
  const std::vector<Shape> shapes = {{{70}, 4, 40, 32, 3}, {{3, 129, 1}, 2, 19, 17, 0}, {{100}, 16, 576, 512, 28}};
  uint64_t seed = 900;
  for (const Shape& sh : shapes) {
    SCOPED_TRACE("lens[0] = " + std::to_string(sh.lens[0]) + ", H = " + std::to_string(sh.H));
    const AttnProblem dense = causal_problem(seed, sh.lens, sh.H, sh.Dqk, sh.Dv);
    AttnProblem sparse = dense;
    sparse.sparse = true;
    sparse.K = *std::max_element(sh.lens.begin(), sh.lens.end()) + sh.pad;
    sparse.indices.assign(static_cast<size_t>(dense.T) * sparse.K, kInvalidIndex);
    Rng rng(seed + 1);
    for (int t = 0; t < dense.T; ++t) {
      std::vector<int32_t> row(sparse.K, kInvalidIndex);
      std::iota(row.begin(), row.begin() + (dense.ke[t] - dense.ks[t]), dense.ks[t]);
      std::shuffle(row.begin(), row.end(), rng.engine());   // any order, −1 anywhere
      std::copy(row.begin(), row.end(), sparse.indices.begin() + static_cast<size_t>(t) * sparse.K);
    }
    FwdBuffers fd(dense), fs(sparse);
    forward(be, dense, fd.view());
    forward(be, sparse, fs.view());
    EXPECT_TRUE(all_close(fs.out.data(), fd.out.data(), fd.out.size(), kInvAtol, kInvRtol)) << "out";
    EXPECT_TRUE(all_close(fs.lse.data(), fd.lse.data(), fd.lse.size(), kInvAtol, kInvRtol)) << "lse";
    EXPECT_TRUE(all_close(fs.max_logits.data(), fd.max_logits.data(), fd.max_logits.size(), kInvAtol, kInvRtol));
    BwdBuffers bd(dense, seed + 2), bs(sparse, seed + 2);
    backward(be, dense, fd, bd);
    backward(be, sparse, fd, bs);   // same out / lse for both, so only the op differs
    EXPECT_TRUE(all_close(bs.dq.data(), bd.dq.data(), bd.dq.size(), kInvAtol, kInvRtol)) << "dq";
    EXPECT_TRUE(all_close(bs.dkv.data(), bd.dkv.data(), bd.dkv.size(), kInvAtol, kInvRtol)) << "dkv";
    seed += 10;
  }
}

}  // namespace dsa::test
