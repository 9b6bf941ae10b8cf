// model_moe.cpp — DeepSeekMoE layers in the model: parameters (HF names, count = Config's), the
// router's choice (group masking, the bias steering the choice but not the weights, ties, softmax,
// greedy and group_limited_greedy) and its backward, gradients by finite differences, the training
// stages, checkpoints, and the inference session's bitwise equivalences. The logits against a float64
// reference are in tests/model_reference.cpp.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "dsa/model.h"
#include "dsa/safetensors.h"
#include "model/moe.h"
#include "model_util.h"

namespace {

namespace fs = std::filesystem;
namespace st = dsa::safetensors;
using dsa::model::AttentionMode;
using dsa::model::Config;
using dsa::model::Model;
using dsa::model::MoeRouting;
using dsa::model::Stage;
using dsa::test_model::init_moe_model;
using dsa::test_model::moe_config;
using dsa::test_model::random_batch;
using dsa::test_model::random_tokens;

const dsa::model::Tensor& param(const Model& m, const std::string& name) {
  for (const auto& t : m.params())
    if (t.name == name) return t;
  throw std::runtime_error("no param " + name);
}
size_t param_index(const Model& m, const std::string& name) {
  for (size_t i = 0; i < m.params().size(); ++i)
    if (m.params()[i].name == name) return i;
  throw std::runtime_error("no param " + name);
}

// Routing of one row with the given logits [E] (and bias), on config c.
MoeRouting route(const Config& c, const std::vector<float>& z, const std::vector<float>& bias = {}) {
  return dsa::model::moe_route(c, z.data(), bias.empty() ? nullptr : bias.data(), 1);
}
std::vector<int32_t> experts(const MoeRouting& r) { return r.expert; }
float sigmoid(float z) { return static_cast<float>(1.0 / (1.0 + std::exp(-static_cast<double>(z)))); }

TEST(ModelMoe, ParametersHaveHfNamesAndConfigCount) {
  for (const char* method : {"noaux_tc", "group_limited_greedy"})
    for (const int shared : {1, 0}) {
      Config c = moe_config();
      c.topk_method = method;
      c.n_shared_experts = shared;
      const Model m(c);
      int64_t n = 0;
      for (const auto& t : m.params()) n += t.numel();
      EXPECT_EQ(n, c.num_params()) << method << " shared " << shared;
      EXPECT_EQ(param(m, "model.layers.1.mlp.gate.weight").shape, (std::vector<int64_t>{8, c.hidden_size}));
      EXPECT_EQ(param(m, "model.layers.2.mlp.experts.7.down_proj.weight").shape, (std::vector<int64_t>{c.hidden_size, 7}));
      EXPECT_EQ(param(m, "model.layers.2.mlp.experts.3.up_proj.weight").shape, (std::vector<int64_t>{7, c.hidden_size}));
      EXPECT_EQ(param(m, "model.layers.0.mlp.gate_proj.weight").shape, (std::vector<int64_t>{c.intermediate_size, c.hidden_size}));
      const auto has = [&](const std::string& name) {
        return std::any_of(m.params().begin(), m.params().end(), [&](const auto& t) { return t.name == name; });
      };
      EXPECT_EQ(has("model.layers.1.mlp.gate.e_score_correction_bias"), c.topk_method == "noaux_tc");
      EXPECT_EQ(has("model.layers.1.mlp.shared_experts.gate_proj.weight"), shared > 0);
      EXPECT_FALSE(has("model.layers.1.mlp.gate_proj.weight"));   // a MoE layer has no dense MLP
    }
  // init: the bias starts at 0, the router and experts are random
  Model m(moe_config());
  m.init_random(3);
  for (const float v : param(m, "model.layers.1.mlp.gate.e_score_correction_bias").data) EXPECT_EQ(v, 0.0f);
  EXPECT_NE(param(m, "model.layers.1.mlp.gate.weight").data[0], 0.0f);
}

TEST(ModelMoe, GroupMaskingExcludesExpertsOfDroppedGroups) {
  const Config c = moe_config();   // 8 experts in 4 groups of 2, 2 groups kept, 2 experts per token
  // expert 0 has the best score, but its group (0, 1) sums to less than groups (2, 3) and (4, 5)
  const std::vector<float> z = {3.0f, -5.0f, 2.0f, 2.0f, 1.5f, 1.5f, -1.0f, -1.0f};
  EXPECT_EQ(experts(route(c, z)), (std::vector<int32_t>{2, 3}));
  // group_limited_greedy scores a group by its best expert: group 0 (3.0) is kept, then group 1
  Config g = c;
  g.topk_method = "group_limited_greedy";
  g.topk_group = 1;
  EXPECT_EQ(experts(route(g, z)), (std::vector<int32_t>{0, 1}));
  // greedy ignores the groups
  g.topk_method = "greedy";
  EXPECT_EQ(experts(route(g, z)), (std::vector<int32_t>{0, 2}));
}

TEST(ModelMoe, BiasSteersTheChoiceNotTheWeights) {
  Config c = moe_config();
  c.n_group = 1;
  c.topk_group = 1;
  const std::vector<float> z = {1.0f, 0.5f, -2.0f, -2.0f, -2.0f, -2.0f, -2.0f, -2.0f};
  const MoeRouting plain = route(c, z, std::vector<float>(8, 0.0f));
  EXPECT_EQ(experts(plain), (std::vector<int32_t>{0, 1}));
  std::vector<float> bias(8, 0.0f);
  bias[5] = 1.0f;   // expert 5's biased score sigmoid(-2) + 1 = 1.12 beats expert 0's 0.73
  const MoeRouting r = route(c, z, bias);
  ASSERT_EQ(experts(r), (std::vector<int32_t>{5, 0}));
  // weights: the unbiased scores of the chosen, renormalised, x routed_scaling_factor
  const float s5 = sigmoid(-2.0f), s0 = sigmoid(1.0f);
  EXPECT_FLOAT_EQ(r.weight[0], s5 / (s5 + s0) * 2.5f);
  EXPECT_FLOAT_EQ(r.weight[1], s0 / (s5 + s0) * 2.5f);
  // without norm_topk_prob: the scores themselves, scaled
  c.norm_topk_prob = false;
  const MoeRouting u = route(c, z, bias);
  EXPECT_FLOAT_EQ(u.weight[0], s5 * 2.5f);
  EXPECT_FLOAT_EQ(u.weight[1], s0 * 2.5f);
}

TEST(ModelMoe, TiesGoToTheSmallerIndex) {
  const Config c = moe_config();
  const std::vector<float> flat(8, 0.25f);
  EXPECT_EQ(experts(route(c, flat)), (std::vector<int32_t>{0, 1}));   // groups 0, 1 kept; experts 0, 1
  Config g = c;
  g.topk_method = "greedy";
  EXPECT_EQ(experts(route(g, flat)), (std::vector<int32_t>{0, 1}));
  // groups 1 and 3 tie for the one group kept: group 1 wins, then its experts in index order
  Config one = c;
  one.topk_group = 1;
  const std::vector<float> z = {0.0f, 0.0f, 1.0f, 1.0f, 0.0f, 0.0f, 1.0f, 1.0f};
  EXPECT_EQ(experts(route(one, z)), (std::vector<int32_t>{2, 3}));
}

TEST(ModelMoe, NonFiniteRouterLogitIsRefused) {
  std::vector<float> z(8, 0.0f);
  z[3] = std::nanf("");
  try {
    route(moe_config(), z);
    FAIL() << "routed a NaN logit";
  } catch (const dsa::Error& e) {
    EXPECT_NE(std::string(e.what()).find("row 0 for expert 3 is not finite"), std::string::npos) << e.what();
  }
}

TEST(ModelMoe, SoftmaxScoring) {
  Config c = moe_config();
  c.scoring_func = "softmax";
  c.topk_method = "greedy";
  c.norm_topk_prob = false;
  c.routed_scaling_factor = 1.0;
  const std::vector<float> z = {0.1f, 2.0f, -1.0f, 0.5f, 1.5f, 0.0f, -0.3f, 0.2f};
  const MoeRouting r = route(c, z);
  ASSERT_EQ(experts(r), (std::vector<int32_t>{1, 4}));
  double sum = 0;
  for (const float v : z) sum += std::exp(static_cast<double>(v));
  EXPECT_NEAR(r.weight[0], std::exp(2.0) / sum, 1e-6);
  EXPECT_NEAR(r.weight[1], std::exp(1.5) / sum, 1e-6);
  double total = 0;
  for (int e = 0; e < 8; ++e) total += r.score[e];
  EXPECT_NEAR(total, 1.0, 1e-6);
}

// d logits of the weights against central differences of the routing (fp64 differences of fp32
// weights: step 1e-3, the weights are smooth away from choice changes; 1e-3 absolute).
TEST(ModelMoe, RouteBackwardMatchesFiniteDifferences) {
  for (const char* scoring : {"sigmoid", "softmax"}) {
    Config c = moe_config();
    c.scoring_func = scoring;
    std::mt19937_64 g(7);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    const int T = 3, E = c.n_routed_experts, k = c.num_experts_per_tok;
    std::vector<float> z(static_cast<size_t>(T * E)), dw(static_cast<size_t>(T * k));
    for (float& v : z) v = nd(g);
    for (float& v : dw) v = nd(g);
    const MoeRouting r = dsa::model::moe_route(c, z.data(), nullptr, T);
    const std::vector<float> dz = dsa::model::moe_route_backward(c, r, dw);
    constexpr float kH = 1e-3f;
    for (int i = 0; i < T * E; ++i) {
      const auto loss = [&](float delta) {
        std::vector<float> zz = z;
        zz[i] += delta;
        const MoeRouting q = dsa::model::moe_route(c, zz.data(), nullptr, T);
        EXPECT_EQ(q.expert, r.expert) << "the step changed the choice; pick another seed";
        double l = 0;
        for (int j = 0; j < T * k; ++j) l += static_cast<double>(dw[j]) * q.weight[j];
        return l;
      };
      EXPECT_NEAR(dz[i], (loss(kH) - loss(-kH)) / (2 * kH), 1e-3) << scoring << " logit " << i;
    }
  }
}

// Finite differences of the fp32 model, as in tests/model_core.cpp (h = 2e-3 on O(0.5) weights:
// 2e-3 absolute + 3 % relative). A routing decision that flips inside [-h, h] makes the loss jump:
// the differences at h and h/2 then disagree, and the test says so instead of comparing.
constexpr float kFdH = 2e-3f;
constexpr double kFdAbs = 2e-3, kFdRel = 3e-2;

TEST(ModelMoe, PretrainGradientsMatchFiniteDifferences) {
  Model m(moe_config());
  init_moe_model(m, 11);
  const auto b = random_batch(m.config(), {6, 5}, 12);
  m.forward_backward(b, Stage::kPretrain);
  const std::vector<dsa::model::Tensor> grads = m.grads();
  // the expert that layer 1 uses most: its rows carry gradient
  std::string used;
  for (int e = 0; e < m.config().n_routed_experts && used.empty(); ++e) {
    const std::string name = "model.layers.1.mlp.experts." + std::to_string(e) + ".down_proj.weight";
    const auto& gd = grads[param_index(m, name)].data;
    if (std::any_of(gd.begin(), gd.end(), [](float v) { return v != 0.0f; })) used = "model.layers.1.mlp.experts." + std::to_string(e) + ".";
  }
  ASSERT_FALSE(used.empty());
  const auto loss = [&] { return m.evaluate(b, AttentionMode::kDense).lm_loss; };
  int checked = 0;
  for (const std::string& name : {std::string("model.layers.1.mlp.gate.weight"), std::string("model.layers.2.mlp.gate.weight"),
                                  used + "gate_proj.weight", used + "up_proj.weight", used + "down_proj.weight",
                                  std::string("model.layers.1.mlp.shared_experts.gate_proj.weight"),
                                  std::string("model.layers.2.mlp.shared_experts.down_proj.weight")}) {
    const size_t p = param_index(m, name);
    auto& data = m.params()[p].data;
    std::mt19937_64 g(p);
    std::uniform_int_distribution<size_t> pick(0, data.size() - 1);
    for (int s = 0; s < 6; ++s) {
      const size_t i = pick(g);
      const float keep = data[i];
      const auto fd = [&](float h) {
        data[i] = keep + h;
        const double lp = loss();
        data[i] = keep - h;
        const double lm = loss();
        data[i] = keep;
        return (lp - lm) / (2.0 * h);
      };
      const double f1 = fd(kFdH), f2 = fd(kFdH / 2);
      ASSERT_LE(std::fabs(f1 - f2), kFdAbs + kFdRel * std::fabs(f2))
          << name << "[" << i << "]: a routing decision flips under the perturbation (differences " << f1 << " vs " << f2
          << "); pick another seed";
      const double an = grads[p].data[i];
      EXPECT_LE(std::fabs(an - f1), kFdAbs + kFdRel * std::fabs(f1)) << name << "[" << i << "] analytic " << an << " fd " << f1;
      ++checked;
    }
  }
  EXPECT_EQ(checked, 42);
  // the bias steers the choice only: no gradient
  for (const float v : grads[param_index(m, "model.layers.1.mlp.gate.e_score_correction_bias")].data) EXPECT_EQ(v, 0.0f);
}

TEST(ModelMoe, WarmupAndSparseStagesRun) {
  Model m(moe_config());
  init_moe_model(m, 13);
  const auto b = random_batch(m.config(), {9, 7}, 14);
  const auto nonzero = [](const dsa::model::Tensor& t) {
    return std::any_of(t.data.begin(), t.data.end(), [](float v) { return v != 0.0f; });
  };
  // warm-up: the indexer learns, every other parameter (the experts and the router too) gets exactly 0
  const auto w = m.forward_backward(b, Stage::kWarmup);
  EXPECT_GT(w.kl_loss, 0.0);
  bool indexer_grad = false;
  for (const auto& g : m.grads()) {
    if (Model::is_indexer_param(g.name)) indexer_grad = indexer_grad || nonzero(g);
    else EXPECT_FALSE(nonzero(g)) << g.name;
  }
  EXPECT_TRUE(indexer_grad);
  // sparse: the LM loss reaches the router, the shared experts and some routed experts; the bias stays 0
  const auto s = m.forward_backward(b, Stage::kSparse, 4);
  EXPECT_TRUE(std::isfinite(s.lm_loss));
  EXPECT_GT(s.kl_loss, 0.0);
  const auto& g = m.grads();
  EXPECT_TRUE(nonzero(g[param_index(m, "model.layers.2.mlp.gate.weight")]));
  EXPECT_TRUE(nonzero(g[param_index(m, "model.layers.2.mlp.shared_experts.up_proj.weight")]));
  EXPECT_FALSE(nonzero(g[param_index(m, "model.layers.2.mlp.gate.e_score_correction_bias")]));
  int used = 0;
  for (int e = 0; e < 8; ++e) used += nonzero(g[param_index(m, "model.layers.2.mlp.experts." + std::to_string(e) + ".gate_proj.weight")]);
  EXPECT_GT(used, 1);
  // reruns are bitwise
  const auto again = m.forward_backward(b, Stage::kSparse, 4);
  EXPECT_EQ(again.lm_loss, s.lm_loss);
}

TEST(ModelMoe, CheckpointRoundTripAndMissingExpert) {
  const fs::path dir = fs::temp_directory_path() / ("dsa_moe_ckpt_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  Model m(moe_config());
  init_moe_model(m, 17);
  m.save(dir.string());
  const Model r = Model::load(dir.string());
  ASSERT_EQ(r.params().size(), m.params().size());
  for (size_t i = 0; i < m.params().size(); ++i) {
    EXPECT_EQ(r.params()[i].name, m.params()[i].name);
    EXPECT_EQ(r.params()[i].data, m.params()[i].data) << m.params()[i].name;
  }
  // the same file without one expert's up_proj
  const std::string missing = "model.layers.2.mlp.experts.5.up_proj.weight";
  const fs::path w = dir / "model.safetensors";
  {
    const st::File full = st::File::open(w.string());
    std::vector<st::RawTensor> raw;
    for (const auto& t : full.tensors())
      if (t.name != missing) raw.push_back({t.name, t.dtype, t.shape, std::vector<uint8_t>(full.data(t), full.data(t) + (t.end - t.begin))});
    st::write_raw((dir / "x.tmp").string(), raw);
  }
  fs::rename(dir / "x.tmp", w);
  try {
    Model::load(dir.string());
    FAIL() << "loaded a checkpoint without " << missing;
  } catch (const dsa::Error& e) {
    EXPECT_NE(std::string(e.what()).find("'" + missing + "' is missing"), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

// The session routes each row on its own with row-invariant matmuls: chunked ≡ one-shot, decode ≡
// prefill row and a BatchSession's rows ≡ one Session per sequence hold bitwise (difference exactly 0),
// as for dense models (tests/model_session.cpp).
// Session vs the training-path forward: 1e-4 absolute on logits ≲ 10 (tests/model_session.cpp kRowTol).
constexpr double kTrainPathTol = 1e-4;

TEST(ModelMoe, SessionChunkedAndDecodeAreBitwise) {
  Model m(moe_config());
  init_moe_model(m, 19);
  const int n = 21, V = m.config().vocab_size;
  const auto toks = random_tokens(V, n, 20);
  for (const AttentionMode mode : {AttentionMode::kSparse, AttentionMode::kDense}) {
    dsa::model::SessionOptions o;
    o.mode = mode;
    o.max_tokens = 32;
    o.page_order_seed = 3;
    dsa::model::Session one(m, o);
    const auto all = one.prefill(toks, 0, true);
    ASSERT_EQ(all.size(), static_cast<size_t>(n * V));
    for (const int chunk : {1, 5}) {
      dsa::model::Session s(m, o);
      EXPECT_EQ(s.prefill(toks, chunk, true), all) << "chunk " << chunk;
    }
    // the training-path forward (BLAS matmuls): fp32 reassociation only, as in tests/model_session.cpp
    dsa::model::Batch batch;
    batch.tokens = toks;
    batch.targets.assign(toks.size(), -1);
    batch.seq_lens = {n};
    const auto train = m.logits(batch, mode);
    double diff = 0;
    for (size_t i = 0; i < all.size(); ++i) diff = std::max(diff, std::fabs(static_cast<double>(all[i]) - train[i]));
    EXPECT_LT(diff, kTrainPathTol);
    dsa::model::Session s(m, o);
    s.prefill(std::vector<int32_t>(toks.begin(), toks.begin() + 8), 3);
    for (int t = 8; t < n; ++t) {
      const auto row = s.decode(toks[t]);
      EXPECT_TRUE(std::equal(row.begin(), row.end(), all.begin() + static_cast<int64_t>(t) * V)) << "row " << t;
    }
    // a BatchSession step routes two sequences' rows together: each row equals its own Session's
    const auto other = random_tokens(V, n, 21);
    dsa::model::Session s2(m, o);
    const auto all2 = s2.prefill(other, 0, true);
    dsa::model::SessionOptions pool = o;
    pool.max_tokens = 2 * dsa::kCachePageTokens;   // one page per sequence
    dsa::model::BatchSession bs(m, pool);
    const int a = bs.add(), b = bs.add();
    bs.prefill(a, std::vector<int32_t>(toks.begin(), toks.begin() + 10));
    bs.prefill(b, std::vector<int32_t>(other.begin(), other.begin() + 6));
    const auto rows = bs.decode({a, b}, {toks[10], other[6]});
    EXPECT_TRUE(std::equal(rows.begin(), rows.begin() + V, all.begin() + 10LL * V));
    EXPECT_TRUE(std::equal(rows.begin() + V, rows.end(), all2.begin() + 6LL * V));
  }
}

}  // namespace
