// model_core.cpp — the DeepSeek-V3.2 model: config, gradients by finite differences, stage rules,
// and mode equivalences (MHA ≡ MQA, dense ≡ DSA and window at k ≥ context), indexer recall.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>

#include "dsa/model.h"
#include "model/exec.h"
#include "model_util.h"

namespace {

using dsa::model::AttentionMode;
using dsa::model::Batch;
using dsa::model::Config;
using dsa::model::Model;
using dsa::model::Stage;
using dsa::test_model::micro_config;
using dsa::test_model::random_batch;

// Finite differences of the fp32 model (step h on O(0.5) weights): loss differences carry fp32
// rounding of ~1e-7·|loss| / h ≈ 1e-4 absolute, plus O(h²) truncation; hence an absolute floor
// of 2e-3 and 3 % relative. The loss is only piecewise smooth (ReLU in the indexer, top-k
// boundaries): an entry whose ±h interval straddles a kink is retried with h/4 and h/16 and
// passes if any step agrees (at h/16 the fp32 noise is still ≲ 5e-4). Entries are sampled (6 per tensor) to keep the test fast.
constexpr float kFdH = 2e-3f;
constexpr double kFdAbs = 2e-3, kFdRel = 3e-2;
constexpr int kSamplesPerTensor = 6;

template <typename Loss>
void check_grads(Model& m, const std::vector<dsa::model::Tensor>& grads, Loss loss, bool indexer_only,
                 bool non_indexer_only, uint64_t seed) {
  std::mt19937_64 g(seed);
  int checked = 0;
  for (size_t p = 0; p < m.params().size(); ++p) {
    const std::string& name = m.params()[p].name;
    const bool idx = Model::is_indexer_param(name);
    if ((indexer_only && !idx) || (non_indexer_only && idx)) continue;
    auto& data = m.params()[p].data;
    std::uniform_int_distribution<size_t> pick(0, data.size() - 1);
    for (int s = 0; s < kSamplesPerTensor; ++s) {
      const size_t i = pick(g);
      const float keep = data[i];
      const double an = grads[p].data[i];
      double fd = 0.0;
      bool ok = false;
      for (const float h : {kFdH, kFdH / 4, kFdH / 16}) {
        data[i] = keep + h;
        const double lp = loss();
        data[i] = keep - h;
        const double lm = loss();
        data[i] = keep;
        fd = (lp - lm) / (2.0 * h);
        if (std::fabs(an - fd) <= kFdAbs + kFdRel * std::fabs(fd)) { ok = true; break; }
      }
      ASSERT_TRUE(ok) << name << "[" << i << "]: analytic " << an << " vs finite difference " << fd;
      ++checked;
    }
  }
  ASSERT_GT(checked, 0);
}

TEST(ModelConfig, JsonRoundTripAndValidation) {
  Config c = micro_config();
  c.has_rope_scaling = true;
  c.rope_scaling.factor = 4.0;
  c.rope_scaling.original_max_position = 16;
  c.tie_word_embeddings = true;
  const Config r = Config::from_json(c.to_json());
  EXPECT_EQ(r.to_json(), c.to_json());
  EXPECT_EQ(r.kv_lora_rank, 10);
  EXPECT_TRUE(r.tie_word_embeddings);
  EXPECT_DOUBLE_EQ(r.rope_scaling.factor, 4.0);
  // YaRN softmax scale: qk_head_dim^-0.5 · mscale², mscale = 0.1·ln(4) + 1
  const double ms = 0.1 * std::log(4.0) + 1.0;
  EXPECT_NEAR(r.softmax_scale(), std::pow(10.0, -0.5) * ms * ms, 1e-6);
  // MoE configs parse (tests/model_config_v32.cpp) and build (tests/model_moe.cpp).
  try {
    Config::from_json(R"({"hidden_size": "wide"})", "cfg.json");
    FAIL();
  } catch (const dsa::Error& e) {
    EXPECT_NE(std::string(e.what()).find("cfg.json: key 'hidden_size'"), std::string::npos) << e.what();
  }
  // A complete config with one key changed (or removed, value empty).
  const auto with = [&](const std::string& key, const std::string& value) {
    std::string text = micro_config().to_json();
    const size_t at = text.find("\"" + key + "\": ");
    EXPECT_NE(at, std::string::npos) << key;
    const size_t end = text.find_first_of(",\n", at);
    if (value.empty()) return text.erase(at, end + 1 - at);
    return text.replace(at, end - at, "\"" + key + "\": " + value);
  };
  EXPECT_NO_THROW(Config::from_json(with("vocab_size", "300")));
  EXPECT_THROW(Config::from_json(with("index_head_dim", "48")), dsa::Error);   // not a power of two
  EXPECT_THROW(Config::from_json(with("qk_rope_head_dim", "5")), dsa::Error);  // odd
  EXPECT_THROW(Config::from_json(with("vocab_size", "0")), dsa::Error);
  try {  // an architecture key is never filled in silently
    Config::from_json(with("hidden_size", ""), "cfg.json");
    FAIL() << "config without hidden_size accepted";
  } catch (const dsa::Error& e) {
    EXPECT_NE(std::string(e.what()).find("cfg.json: required key 'hidden_size' is missing"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(Config::from_json("{\"vocab_size\": 3"), dsa::Error);          // truncated JSON
  int64_t n = 0;
  Model m(micro_config());
  for (const auto& t : m.params()) n += t.numel();
  EXPECT_EQ(n, micro_config().num_params());
}

TEST(ModelCore, SharedEmbeddingInitAddsOneVectorToEveryEmbeddingRow) {
  constexpr double kShared = 1.5;
  Model plain(micro_config()), shared(micro_config());
  plain.init_random(9);
  shared.init_random(9, kShared);
  std::vector<double> first_row;
  for (size_t i = 0; i < plain.params().size(); ++i) {
    const auto& a = plain.params()[i];
    const auto& b = shared.params()[i];
    if (a.name != "model.embed_tokens.weight") {
      EXPECT_EQ(a.data, b.data) << a.name;   // drawn after everything else: the rest is unchanged
      continue;
    }
    const int64_t rows = a.shape[0], cols = a.shape[1];
    double sum_sq = 0;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < cols; ++j) {
        const double d = static_cast<double>(b.data[r * cols + j]) - a.data[r * cols + j];
        if (r == 0) {
          first_row.push_back(d);
          sum_sq += d * d;
        } else {
          ASSERT_NEAR(d, first_row[static_cast<size_t>(j)], 1e-6) << "row " << r << " col " << j;   // one shared vector
        }
      }
    // its entries are N(0, (kShared·initializer_range)²): the sample std is within 40 % of that
    const double std_dev = std::sqrt(sum_sq / static_cast<double>(cols));
    EXPECT_NEAR(std_dev, kShared * micro_config().initializer_range, 0.4 * kShared * micro_config().initializer_range);
  }
  ASSERT_FALSE(first_row.empty());   // the embedding was found
  try {
    shared.init_random(9, -1.0);
    FAIL() << "negative shared_embedding accepted";
  } catch (const dsa::Error& e) {
    EXPECT_NE(std::string(e.what()).find("shared_embedding"), std::string::npos) << e.what();
  }
}

TEST(ModelGrad, PretrainMatchesFiniteDifferences) {
  Model m(micro_config());
  m.init_random(1);
  const Batch b = random_batch(m.config(), {6, 4}, 2);
  const auto losses = m.forward_backward(b, Stage::kPretrain);
  EXPECT_GT(losses.tokens, 0);
  EXPECT_EQ(losses.kl_loss, 0.0);
  const auto grads = m.grads();
  for (const auto& g : grads) {
    if (!Model::is_indexer_param(g.name)) continue;
    for (float v : g.data) ASSERT_EQ(v, 0.0f) << g.name;   // pretrain never touches the indexer
  }
  check_grads(m, grads, [&] { return m.evaluate(b, AttentionMode::kDense).lm_loss; }, false, true, 3);
}

TEST(ModelGrad, WarmupFreezesModelAndMatchesDenseKl) {
  Model m(micro_config());
  m.init_random(4);
  const Batch b = random_batch(m.config(), {7, 3}, 5);
  const auto losses = m.forward_backward(b, Stage::kWarmup);
  EXPECT_GT(losses.kl_loss, 0.0);
  EXPECT_NEAR(losses.kl_loss, m.evaluate(b, AttentionMode::kDense).kl_loss, 1e-6);
  const auto grads = m.grads();
  bool any = false;
  for (const auto& g : grads)
    for (float v : g.data) {
      if (!Model::is_indexer_param(g.name)) ASSERT_EQ(v, 0.0f) << g.name << ": model must be frozen in warm-up";
      else any = any || v != 0.0f;
    }
  EXPECT_TRUE(any);
  check_grads(m, grads, [&] { return m.evaluate(b, AttentionMode::kDense).kl_loss; }, true, false, 6);
}

TEST(ModelGrad, SparseStageSeparatesLmAndKl) {
  Model m(micro_config());
  m.init_random(7);
  Batch b = random_batch(m.config(), {8, 5}, 8);   // index_topk 3 < sequence lengths: real selection
  const auto losses = m.forward_backward(b, Stage::kSparse);
  EXPECT_GT(losses.kl_loss, 0.0);
  const auto grads = m.grads();
  // non-indexer params: gradient of the sparse LM loss only
  check_grads(m, grads, [&] { return m.evaluate(b, AttentionMode::kSparse).lm_loss; }, false, true, 9);
  // indexer params: gradient of the selected-set KL only
  check_grads(m, grads, [&] { return m.evaluate(b, AttentionMode::kSparse).kl_loss; }, true, false, 10);
  // Detached indexer: removing the LM loss (no scored target) leaves the indexer grads bitwise equal.
  Batch unscored = b;
  std::fill(unscored.targets.begin(), unscored.targets.end(), -1);
  m.forward_backward(unscored, Stage::kSparse);
  for (size_t p = 0; p < grads.size(); ++p) {
    if (!Model::is_indexer_param(grads[p].name)) continue;
    ASSERT_EQ(0, std::memcmp(grads[p].data.data(), m.grads()[p].data.data(), grads[p].data.size() * sizeof(float)))
        << grads[p].name;
  }
}

// The second pass runs on the buffers the first one gave back to the model's host pool: a buffer handed
// out again without its zero fill would change the losses or gradients.
TEST(ModelGrad, DeterministicOverReruns) {
  Model m(micro_config());
  m.init_random(11);
  const Batch b = random_batch(m.config(), {9, 2}, 12);
  const auto l1 = m.forward_backward(b, Stage::kSparse);
  const auto g1 = m.grads();
  const auto l2 = m.forward_backward(b, Stage::kSparse);
  EXPECT_EQ(l1.lm_loss, l2.lm_loss);
  EXPECT_EQ(l1.kl_loss, l2.kl_loss);
  for (size_t p = 0; p < g1.size(); ++p)
    ASSERT_EQ(0, std::memcmp(g1[p].data.data(), m.grads()[p].data.data(), g1[p].data.size() * sizeof(float)));
}

TEST(ModelExecCpu, HostPoolReusesBuffersBySizeZeroFilled) {
  using dsa::model::HostPool;
  constexpr size_t kLen = 1000;
  auto pool = std::make_shared<HostPool>();
  float* first = nullptr;
  {
    const auto a = HostPool::take(pool, kLen);
    first = a.get();
    for (size_t i = 0; i < kLen; ++i) a.get()[i] = 1.0f + static_cast<float>(i);
  }
  const auto other_size = HostPool::take(pool, kLen + 1);   // another size: a new block
  EXPECT_NE(other_size.get(), first);
  const auto b = HostPool::take(pool, kLen);                  // the same size: the freed block, zeroed
  EXPECT_EQ(b.get(), first);
  for (size_t i = 0; i < kLen; ++i) ASSERT_EQ(b.get()[i], 0.0f) << i;
  const auto c = HostPool::take(pool, kLen);                  // the block is taken: a new one
  EXPECT_NE(c.get(), first);
  EXPECT_EQ(pool->pooled_bytes(), 0u);
  // Beyond the pool's byte cap a freed buffer goes back to the OS instead of the pool.
  const auto capped = std::make_shared<HostPool>(kLen * sizeof(float));
  {
    const auto big = HostPool::take(capped, kLen);
    const auto small = HostPool::take(capped, 1);
    (void)big;
    (void)small;
  }   // `small` is freed first and pooled; then `big` no longer fits under the cap
  EXPECT_EQ(capped->pooled_bytes(), sizeof(float));
  // A buffer may outlive every other owner of its pool: it keeps the pool alive and returns to it.
  auto late = HostPool::take(pool, kLen);
  pool.reset();
  late.get()[0] = 2.0f;
  late.reset();
}

TEST(ModelModes, MhaEqualsMqaAndDenseEqualsSparseAtFullK) {
  Config c = micro_config();
  c.tie_word_embeddings = true;
  c.has_rope_scaling = true;   // YaRN-scaled RoPE and softmax scale on both paths
  c.rope_scaling.factor = 2.0;
  c.rope_scaling.original_max_position = 8;
  Model m(c);
  m.init_random(13);
  const Batch b = random_batch(c, {11, 1, 6}, 14);
  const auto dense = m.logits(b, AttentionMode::kDense);
  const auto mha = m.logits(b, AttentionMode::kDense, 0, true);
  const auto sparse = m.logits(b, AttentionMode::kSparse, 11);
  const auto window = m.logits(b, AttentionMode::kWindow, 11);
  ASSERT_EQ(dense.size(), b.tokens.size() * static_cast<size_t>(c.vocab_size));
  // fp32 reassociation only (absorbed vs expanded products; attention sum order): 1e-4 absolute on
  // logits of magnitude ≲ 10.
  for (size_t i = 0; i < dense.size(); ++i) {
    ASSERT_NEAR(mha[i], dense[i], 1e-4) << i;
    ASSERT_NEAR(sparse[i], dense[i], 1e-4) << i;
    ASSERT_NEAR(window[i], dense[i], 1e-4) << i;
  }
  // With k below the context the modes differ (the selection matters).
  const auto small = m.logits(b, AttentionMode::kSparse, 2);
  double diff = 0;
  for (size_t i = 0; i < dense.size(); ++i) diff = std::max(diff, std::fabs(static_cast<double>(small[i]) - dense[i]));
  EXPECT_GT(diff, 1e-3);
}

TEST(ModelModes, IndexerRecall) {
  Model m(micro_config());
  m.init_random(15);
  const Batch b = random_batch(m.config(), {10, 4}, 16);
  const auto full = m.indexer_recall(b, 10);
  EXPECT_EQ(full.rows, 14);
  EXPECT_NEAR(full.mass_in_selected, 1.0, 1e-6);   // every key selected: all the mass
  EXPECT_NEAR(full.topk_overlap, 1.0, 1e-12);
  const auto part = m.indexer_recall(b, 2);
  EXPECT_GT(part.mass_in_selected, 0.0);
  EXPECT_LT(part.mass_in_selected, 1.0);
  EXPECT_GE(part.topk_overlap, 0.0);
  EXPECT_LE(part.topk_overlap, 1.0);
  // per layer: each mass within [0, its ceiling], and the totals are the layers' mean
  for (const auto* r : {&full, &part}) {
    ASSERT_EQ(r->layer_mass.size(), static_cast<size_t>(m.config().num_hidden_layers));
    ASSERT_EQ(r->layer_oracle.size(), r->layer_mass.size());
    double mass = 0, oracle = 0;
    for (size_t l = 0; l < r->layer_mass.size(); ++l) {
      EXPECT_GE(r->layer_mass[l], 0.0);
      EXPECT_LE(r->layer_mass[l], r->layer_oracle[l] + 1e-6);   // no k keys hold more than the best k (ranked in fp32)
      EXPECT_LE(r->layer_oracle[l], 1.0 + 1e-6);   // probabilities from an fp32 LSE
      mass += r->layer_mass[l] / static_cast<double>(r->layer_mass.size());
      oracle += r->layer_oracle[l] / static_cast<double>(r->layer_mass.size());
    }
    EXPECT_NEAR(mass, r->mass_in_selected, 1e-9);
    EXPECT_NEAR(oracle, r->oracle_mass, 1e-9);
  }
  EXPECT_NEAR(full.layer_mass[0], 1.0, 1e-6);
}

TEST(ModelModes, BadBatches) {
  Model m(micro_config());
  Batch b = random_batch(m.config(), {4}, 17);
  b.seq_lens = {3};
  EXPECT_THROW(m.evaluate(b, AttentionMode::kDense), dsa::Error);
  b.seq_lens = {4};
  b.tokens[2] = m.config().vocab_size;
  try {
    m.evaluate(b, AttentionMode::kDense);
    FAIL();
  } catch (const dsa::Error& e) {
    EXPECT_NE(std::string(e.what()).find("tokens[2]"), std::string::npos) << e.what();
  }
  EXPECT_THROW(m.logits(random_batch(m.config(), {4}, 1), AttentionMode::kSparse, 0, true), dsa::Error);
}

}  // namespace

namespace {
dsa::model::SelectionPolicy mass_policy(double p, int k_min = 1) {
  dsa::model::SelectionPolicy s;
  s.rule.kind = dsa::TopkPolicyKind::kMass;
  s.rule.p = p;
  s.rule.k_min = k_min;
  return s;
}
}  // namespace

// Per-row budgets (SelectionPolicy): p = 1 with the budget at the context ≡ dense; a fixed cap at the
// budget through topk_length ≡ the default path bit for bit; the k histogram counts what rows keep.
TEST(ModelSelection, MassAtOneIsDenseAndFixedCapIsTheDefaultPath) {
  Model m(micro_config());
  m.init_random(41);
  const Batch b = random_batch(m.config(), {11, 1, 6}, 42);
  const auto dense = m.logits(b, AttentionMode::kDense);
  const auto fixed = m.logits(b, AttentionMode::kSparse, 4);
  const auto fixed_losses = m.evaluate(b, AttentionMode::kSparse, 4);
  m.set_selection_policy(mass_policy(1.0));
  const auto all = m.logits(b, AttentionMode::kSparse, 11);
  for (size_t i = 0; i < dense.size(); ++i) ASSERT_NEAR(all[i], dense[i], 1e-4) << i;   // as MhaEqualsMqa…
  const auto hist = m.evaluate(b, AttentionMode::kSparse, 11).k_histogram;
  ASSERT_EQ(hist.size(), 2u);
  for (const auto& h : hist) {   // every row keeps its whole causal range: 1..11, 1, 1..6 keys
    std::vector<int64_t> want(12, 0);
    for (int len : {11, 1, 6})
      for (int n = 1; n <= len; ++n) ++want[static_cast<size_t>(n)];
    EXPECT_EQ(h, want);
  }
  dsa::model::SelectionPolicy cap;
  cap.rule.k_max = 4;
  m.set_selection_policy(cap);
  const auto capped = m.logits(b, AttentionMode::kSparse, 8);   // buffer 8, every row ≤ 4 keys
  EXPECT_EQ(0, std::memcmp(capped.data(), fixed.data(), fixed.size() * sizeof(float))) << "cap 4 of 8 != fixed 4";
  auto capped_hist = m.evaluate(b, AttentionMode::kSparse, 8).k_histogram;   // [layer][0..8]
  for (auto& h : capped_hist) {
    for (size_t k = 5; k < h.size(); ++k) EXPECT_EQ(h[k], 0) << "a row above the cap";
    h.resize(5);
  }
  EXPECT_EQ(capped_hist, fixed_losses.k_histogram);
  // A policy that cannot apply is refused when set.
  dsa::model::SelectionPolicy bad = mass_policy(0.9);
  bad.layer_k = {2, 3};
  EXPECT_THROW(m.set_selection_policy(bad), dsa::Error);
  bad = {};
  bad.layer_k = {2};
  EXPECT_THROW(m.set_selection_policy(bad), dsa::Error);
}

// Training with a ragged selection: the LM gradient through sparse attention over each row's own
// keys and the indexer's selected-set KL over those keys both match finite differences.
TEST(ModelSelection, RaggedSparseStageMatchesFiniteDifferences) {
  Model m(micro_config());
  m.init_random(43);
  m.set_selection_policy(mass_policy(0.7));
  const Batch b = random_batch(m.config(), {9, 6}, 44);
  const auto losses = m.forward_backward(b, Stage::kSparse, 5);
  EXPECT_GT(losses.kl_loss, 0.0);
  int64_t rows = 0, below_budget = 0;
  for (const auto& h : losses.k_histogram)
    for (size_t k = 0; k < h.size(); ++k) rows += h[k], below_budget += k < 5 ? h[k] : 0;
  EXPECT_EQ(rows, 2 * 15);
  EXPECT_GT(below_budget, 16);   // the policy cuts rows below the budget (beyond the 2 × 8 with fewer keys)
  const auto grads = m.grads();
  check_grads(m, grads, [&] { return m.evaluate(b, AttentionMode::kSparse, 5).lm_loss; }, false, true, 45);
  check_grads(m, grads, [&] { return m.evaluate(b, AttentionMode::kSparse, 5).kl_loss; }, true, false, 46);
}
