// op_indexer_kl.cpp — row 9 of the test table: the indexer KL loss (dense and sparse modes)
// against the float64 reference of attention_ref.h; the target p is recomputed from the lse of
// the matching attention op (dense lse for dense mode, sparse lse for sparse mode).
#include <algorithm>
#include <numeric>

#include "attention_ref.h"
#include "table.h"

namespace dsa::test {
namespace {

// The op and the reference share every input (q, kv, lse, logits); they differ only by the op's
// fp32 score dot products (relative error ≲ √Dqk·ε₃₂ ≈ 1e-6 of z, i.e. ~1e-6 relative on each P)
// — the fp64 sums after that are the same. Loss and dI are O(1): 2e-5 leaves a ~10× margin.
constexpr double kKlAtol = 2e-5, kKlRtol = 2e-5;
// Finite differences of the fp64 KL in the logits, step 1e-6 (see op_attention.cpp).
constexpr double kFdStep = 1e-6, kFdAtol = 1e-6, kFdRtol = 1e-6;
// Σ_h of per-head softmaxes over A(t) with an exact fp64 lse is H up to fp64 rounding.
constexpr double kMassTol = 1e-12;
constexpr float kNegInfF = -std::numeric_limits<float>::infinity();

// A KL problem: the attention problem, the lse of the matching attention op, the index logits.
struct KlProblem {
  AttnProblem attn;
  std::vector<float> lse;       // [T, H] from the backend's attention forward
  std::vector<float> logits;    // [T, S] dense or [T, K] sparse
  int64_t row() const { return attn.sparse ? attn.K : attn.S; }
  IndexerKlParams params() const { return {attn.params(), lse.data(), logits.data()}; }
  // Column of each element of A(t) in the logit row (slot in sparse mode, key in dense mode).
  std::vector<std::vector<int>> columns() const {
    std::vector<std::vector<int>> c(attn.T);
    for (int t = 0; t < attn.T; ++t) {
      if (attn.sparse) {
        const int len = attn.topk_length.empty() ? attn.K : attn.topk_length[t];
        for (int k = 0; k < len; ++k)
          if (attn.indices[static_cast<size_t>(t) * attn.K + k] != kInvalidIndex) c[t].push_back(k);
      } else {
        for (int s = attn.ks[t]; s < attn.ke[t]; ++s) c[t].push_back(s);
      }
    }
    return c;
  }
  std::vector<std::vector<double>> selected_logits() const {
    const auto cols = columns();
    std::vector<std::vector<double>> l(attn.T);
    for (int t = 0; t < attn.T; ++t)
      for (int c : cols[t]) l[t].push_back(logits[t * row() + c]);
    return l;
  }
};

// lse from the backend's attention op over the same A(t); logits N(0, 2²) inside A(t), NaN
// elsewhere (they must never be read).
KlProblem make_kl(Backend& be, AttnProblem attn, uint64_t seed) {
  KlProblem kp;
  kp.attn = std::move(attn);
  const AttnProblem& a = kp.attn;
  std::vector<float> out(static_cast<size_t>(a.T) * a.H * a.Dv);
  kp.lse.resize(static_cast<size_t>(a.T) * a.H);
  const AttentionForwardOut o{out.data(), kp.lse.data(), nullptr};
  if (a.sparse) be.sparse_attention_forward(a.params(), o);
  else be.dense_attention_forward(a.params(), o);
  Rng rng(seed);
  kp.logits.assign(a.T * kp.row(), std::numeric_limits<float>::quiet_NaN());
  const auto cols = kp.columns();
  for (int t = 0; t < a.T; ++t)
    for (int c : cols[t]) kp.logits[t * kp.row() + c] = rng.normal(2.0f);
  return kp;
}

void check_kl_case(Backend& be, const KlProblem& kp, const std::string& label, uint64_t seed) {
  SCOPED_TRACE(label);
  const AttnProblem& a = kp.attn;
  const IndexerKlParams p = kp.params();
  const RefKl ref = ref_indexer_kl(to_f64(a.q), to_f64(a.kv), to_f64(kp.lse), a.sets(), kp.selected_logits(), a.H,
                                   a.Dqk, a.scale);
  Guarded<float> loss(a.T);
  be.indexer_kl_forward(p, loss.data());
  EXPECT_TRUE(all_close(loss.data(), ref.loss.data(), a.T, kKlAtol, kKlRtol)) << "loss";
  EXPECT_GUARDS(loss);

  // dloss random; the expected dI = dloss·(π − p) on A(t), exactly 0 elsewhere.
  const std::vector<float> dloss = Rng(seed).uniform_vec(a.T, 0.5f, 2.0f);
  const auto cols = kp.columns();
  std::vector<double> want(a.T * kp.row(), 0.0), want_unit(a.T * kp.row(), 0.0);
  for (int t = 0; t < a.T; ++t)
    for (size_t j = 0; j < cols[t].size(); ++j) {
      want[t * kp.row() + cols[t][j]] = dloss[t] * ref.dI[t][j];
      want_unit[t * kp.row() + cols[t][j]] = ref.dI[t][j];
    }
  Guarded<float> dI(want.size());
  be.indexer_kl_backward(p, dloss.data(), dI.data());
  EXPECT_TRUE(all_close(dI.data(), want.data(), want.size(), kKlAtol, kKlRtol)) << "dI";
  std::vector<char> in_set(want.size(), 0);
  for (int t = 0; t < a.T; ++t)
    for (int c : cols[t]) in_set[t * kp.row() + c] = 1;
  for (size_t i = 0; i < want.size(); ++i)
    if (!in_set[i]) {
      ASSERT_EQ(dI[i], 0.0f) << "outside A(t), element " << i;
    }
  EXPECT_GUARDS(dI);

  // dloss = null ≡ 1, and determinism (bitwise reruns, on one thread).
  Guarded<float> dI_null(want.size()), dI_ones(want.size()), loss2(a.T);
  be.indexer_kl_backward(p, nullptr, dI_null.data());
  const std::vector<float> ones(a.T, 1.0f);
  be.indexer_kl_backward(p, ones.data(), dI_ones.data());
  EXPECT_TRUE(bitwise_equal(dI_null.data(), dI_ones.data(), want.size())) << "dloss null vs 1";
  EXPECT_TRUE(all_close(dI_null.data(), want_unit.data(), want.size(), kKlAtol, kKlRtol)) << "dI, dloss null";
  with_one_thread([&] { be.indexer_kl_forward(p, loss2.data()); });
  EXPECT_TRUE(bitwise_equal(loss.data(), loss2.data(), a.T)) << "rerun loss";
  Guarded<float> dI2(want.size());
  with_one_thread([&] { be.indexer_kl_backward(p, dloss.data(), dI2.data()); });
  EXPECT_TRUE(bitwise_equal(dI.data(), dI2.data(), want.size())) << "rerun dI";

  // Empty rows: loss exactly 0.
  const KeySets sets = a.sets();
  for (int t = 0; t < a.T; ++t)
    if (sets[t].empty()) {
      EXPECT_EQ(loss[t], 0.0f) << "empty row t=" << t;
    }
}

// dsa-spec §4: with lse computed over exactly A(t), Σ_s Σ_h P_h = H, so the L1-normalised
// head sum is (1/H)·Σ_h P_h: the reference mass is H, and the op's loss equals the reference
// loss computed with p = (1/H)·Σ_h P_h (fp64 lse of the exact attention).
void check_head_sum(Backend& be, const KlProblem& kp) {
  const AttnProblem& a = kp.attn;
  const auto q = to_f64(a.q), kv = to_f64(a.kv);
  const KeySets sets = a.sets();
  const RefForward f = ref_attention_forward(q, kv, sets, a.H, a.Dqk, a.Dv, a.scale);
  const RefKl by_h = ref_indexer_kl(q, kv, f.lse, sets, kp.selected_logits(), a.H, a.Dqk, a.scale, false);
  for (int t = 0; t < a.T; ++t)
    if (!sets[t].empty()) {
      EXPECT_NEAR(by_h.mass[t], a.H, kMassTol * a.H) << "t=" << t;
    }
  std::vector<float> loss(a.T);
  be.indexer_kl_forward(kp.params(), loss.data());
  EXPECT_TRUE(all_close(loss.data(), by_h.loss.data(), a.T, kKlAtol, kKlRtol)) << "op loss vs (1/H)·Σ_h P_h";
}

// The fp64 reference dI against central differences of the fp64 KL in each logit.
void check_reference_gradient(const KlProblem& kp) {
  const AttnProblem& a = kp.attn;
  const auto q = to_f64(a.q), kv = to_f64(a.kv), lse = to_f64(kp.lse);
  const KeySets sets = a.sets();
  auto logits = kp.selected_logits();
  const RefKl ref = ref_indexer_kl(q, kv, lse, sets, logits, a.H, a.Dqk, a.scale);
  for (int t = 0; t < a.T; ++t) {
    std::vector<double>& row = logits[t];
    auto loss_t = [&] { return ref_indexer_kl(q, kv, lse, sets, logits, a.H, a.Dqk, a.scale).loss[t]; };
    std::vector<double> fd(row.size());
    for (size_t j = 0; j < row.size(); ++j) fd[j] = central_difference(row, j, loss_t, kFdStep);
    EXPECT_TRUE(all_close(ref.dI[t].data(), fd.data(), fd.size(), kFdAtol, kFdRtol)) << "reference dI, t=" << t;
  }
}

AttnProblem sparse_problem(uint64_t seed, int T, int S, int H, int Dqk, int K, double invalid, double dup) {
  AttnProblem pr = make_problem(seed, T, S, H, Dqk, Dqk / 2);
  Rng rng(seed + 1);
  pr.sparse = true;
  pr.K = K;
  pr.indices.assign(static_cast<size_t>(T) * K, kInvalidIndex);
  for (int t = 0; t < T; ++t)
    for (int k = 0; k < K; ++k) {
      const float u = rng.uniform(0.0f, 1.0f);
      if (u < invalid) continue;
      pr.indices[static_cast<size_t>(t) * K + k] =
          (u < invalid + dup && k > 0) ? pr.indices[static_cast<size_t>(t) * K + k - 1] : rng.integer(0, S - 1);
    }
  return pr;
}

AttnProblem dense_problem(uint64_t seed, const std::vector<int>& lens, int H, int Dqk) {
  const int L = std::accumulate(lens.begin(), lens.end(), 0);
  AttnProblem pr = make_problem(seed, L, L, H, Dqk, Dqk / 2);
  pr.sparse = false;
  packed_causal_ranges(lens, pr.ks, pr.ke);
  return pr;
}

void check_bad_inputs(Backend& be, const KlProblem& sparse, const KlProblem& dense) {
  struct Mutation {
    const char* arg;
    bool on_sparse;
    std::function<void(IndexerKlParams&)> apply;
  };
  const std::vector<Mutation> ms = {
      {"scale", true, [](IndexerKlParams& p) { p.attn.scale = 0.0f; }},
      {"scale", false, [](IndexerKlParams& p) { p.attn.scale = -2.0f; }},
      {"q", true, [](IndexerKlParams& p) { p.attn.q = nullptr; }},
      {"kv", false, [](IndexerKlParams& p) { p.attn.kv = nullptr; }},
      {"lse", true, [](IndexerKlParams& p) { p.lse = nullptr; }},
      {"index_logits", false, [](IndexerKlParams& p) { p.index_logits = nullptr; }},
      {"K", true, [](IndexerKlParams& p) { p.attn.K = 0; }},
  };
  for (const Mutation& m : ms) {
    SCOPED_TRACE(m.arg);
    const KlProblem& kp = m.on_sparse ? sparse : dense;
    IndexerKlParams p = kp.params();
    m.apply(p);
    Guarded<float> loss(kp.attn.T), dI(kp.attn.T * kp.row());
    EXPECT_TRUE(throws_naming([&] { be.indexer_kl_forward(p, loss.data()); }, {"indexer_kl_forward", m.arg}));
    EXPECT_TRUE(throws_naming([&] { be.indexer_kl_backward(p, nullptr, dI.data()); }, {"indexer_kl_backward", m.arg}));
    EXPECT_TRUE(loss.untouched() && dI.untouched());
  }
  {  // out-of-range index and topk_length > K (sparse)
    KlProblem bad = sparse;
    bad.attn.indices[bad.attn.K + 2] = bad.attn.S;
    Guarded<float> loss(bad.attn.T);
    EXPECT_TRUE(throws_naming([&] { be.indexer_kl_forward(bad.params(), loss.data()); }, {"indexer_kl_forward", "indices[1,2]"}));
    bad = sparse;
    bad.attn.topk_length.assign(bad.attn.T, bad.attn.K);
    bad.attn.topk_length[1] = bad.attn.K + 1;
    EXPECT_TRUE(throws_naming([&] { be.indexer_kl_forward(bad.params(), loss.data()); }, {"indexer_kl_forward", "topk_length[1]"}));
    EXPECT_TRUE(loss.untouched());
    KlProblem bad_range = dense;   // ks > ke
    bad_range.attn.ks[3] = bad_range.attn.ke[3] + 1;
    Guarded<float> dloss_out(bad_range.attn.T * bad_range.row());
    EXPECT_TRUE(throws_naming([&] { be.indexer_kl_backward(bad_range.params(), nullptr, dloss_out.data()); },
                              {"indexer_kl_backward", "ke[3]"}));
    EXPECT_TRUE(dloss_out.untouched());
  }
  Guarded<float> dI(dense.attn.T * dense.row());
  EXPECT_TRUE(throws_naming([&] { be.indexer_kl_forward(dense.params(), nullptr); }, {"indexer_kl_forward", "loss"}));
  EXPECT_TRUE(throws_naming([&] { be.indexer_kl_backward(dense.params(), nullptr, nullptr); },
                            {"indexer_kl_backward", "d_index_logits"}));
  EXPECT_TRUE(dI.untouched());
}

// A ragged selection as topk_select writes it under a TopkPolicy (ops.h §4): row t holds k_t keys,
// then −1, and topk_length = k_t. The KL is over each row's own set: the reference gradient agrees
// with central differences, the op with the reference, and passing topk_length ≡ leaving it out
// (the −1 fill already ends each row) bit for bit.
void check_ragged(Backend& be) {
  const std::vector<int32_t> lengths = {7, 1, 0, 4, 7, 2};
  auto ragged = [&](AttnProblem a, bool with_length) {
    for (int t = 0; t < a.T; ++t)
      for (int k = lengths[size_t(t)]; k < a.K; ++k) a.indices[size_t(t) * a.K + k] = kInvalidIndex;
    if (with_length) a.topk_length = lengths;
    return a;
  };
  const AttnProblem base = sparse_problem(1011, 6, 16, 2, 8, 7, 0.0, 0.0);
  const KlProblem kp = make_kl(be, ragged(base, true), 27);
  check_kl_case(be, kp, "sparse ragged (policy selection)", 27);
  check_reference_gradient(kp);
  KlProblem no_len = kp;
  no_len.attn.topk_length.clear();
  Guarded<float> l1(kp.attn.T), l2(kp.attn.T), d1(kp.attn.T * kp.row()), d2(kp.attn.T * kp.row());
  be.indexer_kl_forward(kp.params(), l1.data());
  be.indexer_kl_forward(no_len.params(), l2.data());
  be.indexer_kl_backward(kp.params(), nullptr, d1.data());
  be.indexer_kl_backward(no_len.params(), nullptr, d2.data());
  EXPECT_TRUE(bitwise_equal(l1.data(), l2.data(), l1.size())) << "ragged KL loss: topk_length vs the -1 fill";
  EXPECT_TRUE(bitwise_equal(d1.data(), d2.data(), d1.size())) << "ragged KL dI: topk_length vs the -1 fill";
}

}  // namespace

void check_indexer_kl(Backend& be) {
  // Dense mode: packed causal batch {1, 65, 7} (row 0 has a single key: p = π = 1, loss 0).
  KlProblem dense = make_kl(be, dense_problem(1001, {1, 65, 7}, 4, 24), 11);
  // −inf logits inside A(t): one in row 10 (π = 0 there, loss +inf), all of row 20 (π ≡ 0).
  dense.logits[10 * dense.row() + 3] = kNegInfF;
  for (int s = dense.attn.ks[20]; s < dense.attn.ke[20]; ++s) dense.logits[20 * dense.row() + s] = kNegInfF;
  check_kl_case(be, dense, "dense packed causal", 21);

  {  // dense: arbitrary ranges with empty rows, H = 65, long-ish rows, peaky attention
    AttnProblem a = make_problem(1002, 5, 300, 65, 37, 16, 3.0);
    a.sparse = false;
    a.ks = {0, 7, 100, 300, 0};
    a.ke = {300, 7, 229, 300, 1};
    check_kl_case(be, make_kl(be, a, 12), "dense arbitrary ranges, empty rows", 22);
  }
  // Sparse mode: −1, duplicates, an all-invalid row, topk_length.
  KlProblem sparse = make_kl(be, [] {
    AttnProblem a = sparse_problem(1003, 6, 90, 3, 20, 33, 0.25, 0.15);
    std::fill(a.indices.begin() + 2 * 33, a.indices.begin() + 3 * 33, kInvalidIndex);
    a.topk_length = {33, 5, 33, 0, 1, 32};
    return a;
  }(), 13);
  check_kl_case(be, sparse, "sparse with -1, duplicates, topk_length", 23);
  {  // sparse: T = 1, K = 1 and S < K rows, V3.2 dims
    check_kl_case(be, make_kl(be, sparse_problem(1004, 1, 10, 2, 16, 1, 0.0, 0.0), 14), "sparse K=1 T=1", 24);
    check_kl_case(be, make_kl(be, sparse_problem(1005, 3, 10, 2, 16, 64, 0.1, 0.0), 15), "sparse S<K", 25);
    AttnProblem v = sparse_problem(1006, 2, 200, 16, kMlaLatentDim + kMlaRopeDim, 128, 0.05, 0.0);
    v.scale = 0.13524f;   // V3.2 softmax scale (192^-0.5 · mscale²)
    check_kl_case(be, make_kl(be, v, 16), "sparse V3.2 dims", 26);
  }
  // The fp64 reference gradient vs finite differences, both modes (finite logits only).
  check_reference_gradient(make_kl(be, dense_problem(1007, {2, 9}, 2, 8), 17));
  check_reference_gradient(make_kl(be, sparse_problem(1008, 4, 12, 2, 8, 7, 0.2, 0.2), 18));
  // dsa-spec §4: head-summed, L1-normalised p = (1/H)·Σ_h P_h when lse is over exactly A(t).
  check_head_sum(be, make_kl(be, dense_problem(1009, {40, 3}, 5, 16), 19));
  check_head_sum(be, make_kl(be, sparse_problem(1010, 5, 50, 4, 16, 20, 0.2, 0.2), 20));
  check_ragged(be);
  check_bad_inputs(be, sparse, dense);
}

}  // namespace dsa::test
