// model_numerics.cpp — the session's activation rounding (SessionOptions::numerics): the reference
// numerics keep the session's guarantees (chunked prefill ≡ one-shot, decode ≡ prefill row, bitwise),
// stay close to fp32, kAuto follows the checkpoint's stored dtype, bad names are refused; the
// recorded per-layer selections (SessionOptions::record_selections); and the decode op's bf16
// probabilities (SparseDecodeParams::bf16_probs).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <random>
#include <vector>

#include "dsa/model.h"
#include "model_util.h"

namespace {

using dsa::model::AttentionMode;
using dsa::model::Model;
using dsa::model::Numerics;
using dsa::model::Session;
using dsa::model::SessionOptions;
using dsa::model::WeightDtype;
using dsa::test_model::max_diff;
using dsa::test_model::random_tokens;
using dsa::test_model::v32_record_config;

SessionOptions reference_options() {
  SessionOptions o;
  o.numerics = Numerics::kReference;
  o.indexer_precision = dsa::Precision::kFp8;
  o.max_tokens = 200;
  o.page_order_seed = 11;
  return o;
}

TEST(ModelNumerics, ReferenceKeepsChunkedAndDecodeBitwise) {
  const auto c = v32_record_config();   // K = 8 < 70 tokens: a real selection; two cache pages
  Model m(c);
  m.init_random(41);
  const int n = 70;
  const auto toks = random_tokens(c.vocab_size, n, 42);
  for (const AttentionMode mode : {AttentionMode::kSparse, AttentionMode::kDense}) {
    SessionOptions o = reference_options();
    o.mode = mode;
    Session one_shot(m, o);
    const auto one = one_shot.prefill(toks, 0, true);
    EXPECT_EQ(one_shot.options().numerics, Numerics::kReference);
    for (int chunk : {1, 9}) {
      Session s(m, o);
      EXPECT_EQ(max_diff(one, s.prefill(toks, chunk, true)), 0.0) << chunk;
    }
    Session s(m, o);
    s.prefill(std::vector<int32_t>(toks.begin(), toks.begin() + 60), 7);
    for (int t = 60; t < n - 2; ++t)
      EXPECT_EQ(max_diff(s.decode(toks[t]), one, 0, static_cast<size_t>(t) * c.vocab_size, c.vocab_size), 0.0) << t;
    EXPECT_EQ(max_diff(s.decode2(toks[n - 2], toks[n - 1]), one, 0, static_cast<size_t>(n - 2) * c.vocab_size), 0.0);
  }
}

// MoE layers (the experts' bf16 roundings) and the MTP module under the reference numerics: chunked
// prefill ≡ one-shot, decode ≡ prefill row, and a draft after either ≡ the one-shot session's draft.
TEST(ModelNumerics, ReferenceMoeAndDraftKeepChunkedAndDecodeBitwise) {
  auto c = v32_record_config();   // the V3.2 latent and indexer dims, with moe_config()'s MoE layers
  const auto moe = dsa::test_model::moe_config();
  c.first_k_dense_replace = 1;
  c.n_routed_experts = moe.n_routed_experts;
  c.n_shared_experts = moe.n_shared_experts;
  c.num_experts_per_tok = moe.num_experts_per_tok;
  c.moe_intermediate_size = moe.moe_intermediate_size;
  c.n_group = moe.n_group;
  c.topk_group = moe.topk_group;
  c.routed_scaling_factor = moe.routed_scaling_factor;
  c.norm_topk_prob = moe.norm_topk_prob;
  c.scoring_func = moe.scoring_func;
  c.topk_method = moe.topk_method;
  c.num_nextn_predict_layers = 1;
  Model m(c);
  dsa::test_model::init_moe_model(m, 45);
  const int n = 30, prefix = 20;
  const auto toks = random_tokens(c.vocab_size, n, 46);
  const int32_t next = toks[0];   // the token the final drafts take
  for (const AttentionMode mode : {AttentionMode::kSparse, AttentionMode::kDense}) {
    SessionOptions o = reference_options();
    o.mode = mode;
    o.mtp = true;
    o.max_tokens = c.max_position_embeddings;
    Session one_shot(m, o);
    const auto one = one_shot.prefill(toks, 0, true);
    const auto draft = one_shot.draft(next);
    for (int chunk : {1, 7}) {
      Session s(m, o);
      EXPECT_EQ(max_diff(one, s.prefill(toks, chunk, true)), 0.0) << chunk;
      EXPECT_EQ(max_diff(draft, s.draft(next)), 0.0) << chunk;
    }
    Session s(m, o);
    s.prefill(std::vector<int32_t>(toks.begin(), toks.begin() + prefix), 3);
    for (int t = prefix; t < n; ++t) {
      s.draft(toks[t]);   // the module catches up one position at a time
      EXPECT_EQ(max_diff(s.decode(toks[t]), one, 0, static_cast<size_t>(t) * c.vocab_size, c.vocab_size), 0.0) << t;
    }
    EXPECT_EQ(max_diff(draft, s.draft(next)), 0.0);
  }
}

TEST(ModelNumerics, ReferenceIsCloseToFp32AndNotEqual) {
  const auto c = v32_record_config();
  Model m(c);
  m.init_random(43);
  const auto toks = random_tokens(c.vocab_size, 40, 44);
  SessionOptions o = reference_options();
  o.mode = AttentionMode::kDense;   // precision is judged in dense mode (a flipped top-k choice is O(1))
  o.kv_format = dsa::KvCacheFormat::kBf16;   // the activations' rounding alone
  const auto ref = Session(m, o).prefill(toks, 0, true);
  o.numerics = Numerics::kFp32;
  const auto f32 = Session(m, o).prefill(toks, 0, true);
  // bf16 activations: 2^-9 relative per rounding over ~30 rounding points of 2 layers, logits ≲ 1
  // (initializer_range 0.05) → a few 1e-3; bound 2e-2.
  const double d = max_diff(ref, f32);
  EXPECT_GT(d, 0.0);
  EXPECT_LT(d, 2e-2);
}

TEST(ModelNumerics, AutoFollowsTheStoredWeights) {
  const auto c = v32_record_config();
  Model m(c);
  m.init_random(45);
  EXPECT_EQ(m.weight_dtype(), WeightDtype::kF32);
  SessionOptions o;
  o.max_tokens = 64;
  EXPECT_EQ(o.numerics, Numerics::kAuto);
  EXPECT_EQ(Session(m, o).options().numerics, Numerics::kFp32);
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / "dsa_numerics_auto";
  for (const auto& [save, stored, expect] :
       {std::tuple{Model::SaveDtype::kBf16, WeightDtype::kBF16, Numerics::kReference},
        std::tuple{Model::SaveDtype::kF32, WeightDtype::kF32, Numerics::kFp32}}) {
    m.save(dir.string(), save);
    const Model back = Model::load(dir.string());
    EXPECT_EQ(back.weight_dtype(), stored);
    const Session s(back, o);
    EXPECT_EQ(s.options().numerics, expect);
    // the V3.2 latent's cache: the reference's FP8 record with its numerics, else bf16
    EXPECT_EQ(*s.options().kv_format,
              expect == Numerics::kReference ? dsa::KvCacheFormat::kFp8Record : dsa::KvCacheFormat::kBf16);
    SessionOptions forced = o;
    forced.numerics = Numerics::kFp32;
    EXPECT_EQ(Session(back, forced).options().numerics, Numerics::kFp32);
  }
  std::filesystem::remove_all(dir);
}

TEST(ModelNumerics, NamesParseAndBadNamesAreRefused) {
  for (const Numerics n : {Numerics::kAuto, Numerics::kFp32, Numerics::kReference})
    EXPECT_EQ(dsa::model::parse_numerics(dsa::model::numerics_name(n)), n);
  try {
    dsa::model::parse_numerics("bf17");
    FAIL() << "bf17 was accepted";
  } catch (const dsa::Error& e) {
    EXPECT_NE(std::string(e.what()).find("bf17"), std::string::npos) << e.what();
  }
}

TEST(ModelNumerics, RecordedSelections) {
  const auto c = v32_record_config();
  Model m(c);
  m.init_random(47);
  const int n = 20;
  const auto toks = random_tokens(c.vocab_size, n, 48);
  SessionOptions o = reference_options();
  Session quiet(m, o);
  quiet.prefill(toks, 0);
  EXPECT_TRUE(quiet.last_selections().layers.empty());
  o.record_selections = true;
  Session s(m, o);
  const auto logits = s.prefill(toks, 0, true);
  const auto& sel = s.last_selections();
  ASSERT_EQ(sel.layers.size(), static_cast<size_t>(c.num_hidden_layers));
  EXPECT_EQ(sel.rows, n);
  EXPECT_EQ(sel.k, c.index_topk);
  for (const auto& layer : sel.layers)
    for (int64_t r = 0; r < n; ++r) {
      std::vector<int32_t> row(layer.begin() + r * sel.k, layer.begin() + (r + 1) * sel.k);
      const int valid = static_cast<int>(std::count_if(row.begin(), row.end(), [](int32_t p) { return p >= 0; }));
      EXPECT_EQ(valid, std::min<int64_t>(r + 1, sel.k)) << r;   // every causal key while they fit, else k
      for (const int32_t p : row) EXPECT_LE(p, r);
    }
  // a decode step records its one row
  s.decode(toks[0]);
  EXPECT_EQ(s.last_selections().rows, 1);
  // the same selections as a session that does not record them (recording changes nothing)
  EXPECT_EQ(max_diff(logits, Session(m, reference_options()).prefill(toks, 0, true)), 0.0);
}

// The CPU decode op's bf16 probabilities: out = Σ_i bf16(P_i) · v_i with P = softmax(scale · q·k), against
// a float64 computation of the same (summation order only: 1e-6 on outputs of magnitude ≲ 1), and
// different from the fp32-probability output.
TEST(ModelNumerics, DecodeOpRoundsProbabilitiesToBf16) {
  constexpr int kDim = dsa::kMlaLatentDim + dsa::kMlaRopeDim;   // 576
  constexpr int kSlots = 12, kHeads = 2;
  constexpr float kScale = 0.125f;
  std::mt19937_64 g(51);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> q(static_cast<size_t>(kHeads) * kDim), cache(static_cast<size_t>(kSlots) * kDim);
  for (float& v : q) v = nd(g);
  for (float& v : cache) v = nd(g);
  const std::vector<int32_t> idx = {3, 0, 7, 11, dsa::kInvalidIndex, 5};
  const int K = static_cast<int>(idx.size());
  std::vector<float> out(static_cast<size_t>(kHeads) * dsa::kMlaLatentDim), out32(out.size()), lse(kHeads);
  dsa::SparseDecodeParams p;
  p.B = 1;
  p.H = kHeads;
  p.K = K;
  p.num_slots = kSlots;
  p.scale = kScale;
  p.format = dsa::KvCacheFormat::kFp32;
  p.q = q.data();
  p.cache = cache.data();
  p.indices = idx.data();
  p.lse = lse.data();
  p.out = out32.data();
  dsa::cpu::sparse_attention_decode(p);
  p.bf16_probs = true;
  p.out = out.data();
  dsa::cpu::sparse_attention_decode(p);
  for (int h = 0; h < kHeads; ++h) {
    std::vector<double> z;
    std::vector<int32_t> slots;
    for (const int32_t s : idx)
      if (s >= 0) {
        double dot = 0;
        for (int d = 0; d < kDim; ++d) dot += static_cast<double>(q[h * kDim + d]) * cache[static_cast<size_t>(s) * kDim + d];
        z.push_back(kScale * dot);
        slots.push_back(s);
      }
    const double m = *std::max_element(z.begin(), z.end());
    double sum = 0;
    for (const double v : z) sum += std::exp(v - m);
    for (int d = 0; d < dsa::kMlaLatentDim; ++d) {
      double acc = 0;
      for (size_t i = 0; i < z.size(); ++i) {
        const float prob = static_cast<float>(std::exp(z[i] - m) / sum);
        acc += dsa::cpu::bf16_to_float(dsa::cpu::bf16_from_float(prob)) * cache[static_cast<size_t>(slots[i]) * kDim + d];
      }
      EXPECT_NEAR(out[h * dsa::kMlaLatentDim + d], acc, 1e-6) << h << "," << d;
    }
  }
  EXPECT_GT(max_diff(out, out32), 0.0);
}

}  // namespace
