// train_recipe.cpp — the training recipe's invariants on a tiny model (include/dsa/train.h):
// warm-up freezes the model bitwise, the LM loss never reaches the indexer in the sparse stage,
// loss falls, kill-and-resume is bitwise identical, an interrupted checkpoint write leaves the
// previous checkpoint loadable, the loader is a pure function of the step, bad options name the flag
// and a stage that cannot start is refused before anything is written; the evaluation fills every table.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "dsa/model.h"
#include "dsa/ops.h"
#include "dsa/tokenizer.h"
#include "dsa/train.h"

namespace fs = std::filesystem;
using dsa::model::Stage;

namespace {

// A model small enough that a step takes milliseconds; seq_len 48 > 8·topk keeps top-k selective.
dsa::model::Config tiny_config() {
  dsa::model::Config c = dsa::model::Config::tiny();
  c.vocab_size = dsa::kByteVocab + 1;
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.num_hidden_layers = 2;
  c.first_k_dense_replace = 2;
  c.num_attention_heads = 2;
  c.q_lora_rank = 16;
  c.kv_lora_rank = 16;
  c.qk_nope_head_dim = 8;
  c.qk_rope_head_dim = 8;
  c.v_head_dim = 8;
  c.index_n_heads = 2;
  c.index_head_dim = 16;
  c.index_topk = 6;
  c.max_position_embeddings = 256;
  return c;
}

dsa::train::Corpus tiny_corpus(const dsa::Tokenizer& tok) {
  dsa::train::Corpus c;
  c.vocab_size = tok.vocab_size();
  c.bos_id = tok.bos_id();
  const char* words[] = {"the ", "quick ", "brown ", "fox ", "jumps ", "over ", "a ", "lazy ", "dog. "};
  for (int d = 0; d < 4; ++d) {
    std::string text;
    for (int i = 0; i < 400; ++i) text += words[(i * (d + 2) + i / 9) % 9];
    (d == 3 ? c.val : c.train).push_back({"doc" + std::to_string(d), tok.encode(text)});
  }
  return c;
}

struct TrainRecipe : ::testing::Test {
  std::unique_ptr<dsa::Tokenizer> tok = dsa::make_byte_tokenizer();
  dsa::train::Corpus corpus = tiny_corpus(*tok);
  fs::path root;
  void SetUp() override {
    root = fs::temp_directory_path() / ("dsa_train_recipe_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root);
  }
  void TearDown() override { fs::remove_all(root); }

  dsa::train::TrainOptions options(const std::string& run, Stage stage, int64_t steps) const {
    dsa::train::TrainOptions o;
    o.run_dir = (root / run).string();
    o.stage = stage;
    o.config = tiny_config();
    o.loader.batch_size = 2;
    o.loader.seq_len = 48;
    o.loader.synthetic_share = 0.0;
    o.model_group.lr = 1e-2;
    o.indexer_group.lr = 1e-2;
    o.steps = steps;
    o.warmup_steps = 1;
    o.checkpoint_every = 2;
    o.progress = false;
    o.plots = false;
    o.val_sequences = 2;
    return o;
  }
};

bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

TEST_F(TrainRecipe, WarmupLeavesEveryNonIndexerParameterBitwiseUnchanged) {
  dsa::train::train_stage(options("run", Stage::kPretrain, 2), corpus, *tok);
  const auto r = dsa::train::train_stage(options("run", Stage::kWarmup, 3), corpus, *tok);
  const auto before = dsa::model::Model::load(dsa::train::final_checkpoint((root / "run/pretrain").string()));
  const auto after = dsa::model::Model::load(r.final_checkpoint);
  int indexer_changed = 0, frozen = 0;
  for (size_t i = 0; i < before.params().size(); ++i) {
    const auto& a = before.params()[i];
    const auto& b = after.params()[i];
    ASSERT_EQ(a.name, b.name);
    if (dsa::model::Model::is_indexer_param(a.name)) {
      indexer_changed += bitwise_equal(a.data, b.data) ? 0 : 1;
    } else {
      EXPECT_TRUE(bitwise_equal(a.data, b.data)) << a.name << " changed during the warm-up";
      ++frozen;
    }
  }
  EXPECT_GT(frozen, 0);
  EXPECT_GT(indexer_changed, 0) << "the warm-up did not train the indexer";
  for (const auto& rec : r.records) EXPECT_GT(rec.kl_loss, 0.0);
}

TEST_F(TrainRecipe, SparseLmLossGivesZeroGradientToTheIndexer) {
  // Same inputs, different LM targets: the indexer's gradient (selected-set KL only) must not move
  // by a single bit, while the model's gradient does.
  dsa::model::Model m(tiny_config());
  m.init_random(3);
  dsa::train::LoaderOptions lo;
  lo.batch_size = 2;
  lo.seq_len = 48;
  const dsa::train::Loader loader(corpus, *tok, lo);
  dsa::model::Batch a = loader.batch(0);
  dsa::model::Batch b = a;
  for (size_t i = 0; i < b.targets.size(); ++i) b.targets[i] = (b.targets[i] * 7 + 3) % tok->vocab_size();
  m.forward_backward(a, Stage::kSparse);
  const auto grads_a = m.grads();
  m.forward_backward(b, Stage::kSparse);
  const auto& grads_b = m.grads();
  int model_differs = 0, indexer_nonzero = 0;
  for (size_t i = 0; i < grads_a.size(); ++i) {
    if (dsa::model::Model::is_indexer_param(grads_a[i].name)) {
      EXPECT_TRUE(bitwise_equal(grads_a[i].data, grads_b[i].data)) << grads_a[i].name << " depends on the LM targets";
      for (float g : grads_a[i].data) indexer_nonzero += g != 0.0f;
    } else {
      model_differs += bitwise_equal(grads_a[i].data, grads_b[i].data) ? 0 : 1;
    }
  }
  EXPECT_GT(model_differs, 0);
  EXPECT_GT(indexer_nonzero, 0) << "the indexer got no KL gradient";
}

TEST_F(TrainRecipe, LossFallsOverAFewSteps) {
  auto o = options("run", Stage::kPretrain, 16);
  o.checkpoint_every = 16;
  const auto r = dsa::train::train_stage(o, corpus, *tok);
  ASSERT_EQ(r.records.size(), 16u);
  double first = 0, last = 0;
  for (int i = 0; i < 4; ++i) first += r.records[i].lm_loss / 4;
  for (int i = 12; i < 16; ++i) last += r.records[i].lm_loss / 4;
  // A repetitive 9-word text is easy: the mean of the last 4 losses must be well below the first 4
  // (ln 257 ≈ 5.55 at init; the margin 1 nat is far above step-to-step noise at batch 2).
  EXPECT_LT(last, first - 1.0) << "first " << first << " last " << last;
}

TEST_F(TrainRecipe, KillAndResumeIsBitwiseIdentical) {
  // Reference: pretrain → warm-up → sparse, uninterrupted.
  for (const char* run : {"a", "b"}) {
    dsa::train::train_stage(options(run, Stage::kPretrain, 2), corpus, *tok);
    dsa::train::train_stage(options(run, Stage::kWarmup, 2), corpus, *tok);
  }
  const auto full = dsa::train::train_stage(options("a", Stage::kSparse, 6), corpus, *tok);
  // Killed after 3 steps (last checkpoint at step 2), then resumed.
  auto o = options("b", Stage::kSparse, 6);
  o.stop_after = 3;
  const auto part = dsa::train::train_stage(o, corpus, *tok);
  EXPECT_TRUE(part.final_checkpoint.empty());
  EXPECT_EQ(part.records.size(), 3u);
  o.stop_after = 0;
  const auto resumed = dsa::train::train_stage(o, corpus, *tok);
  EXPECT_EQ(resumed.start_step, 2);
  ASSERT_EQ(resumed.records.size(), 4u);
  for (size_t i = 0; i < resumed.records.size(); ++i) {
    const auto& x = full.records[i + 2];
    const auto& y = resumed.records[i];
    EXPECT_EQ(x.step, y.step);
    EXPECT_EQ(std::memcmp(&x.lm_loss, &y.lm_loss, sizeof(double)), 0) << "step " << x.step;
    EXPECT_EQ(std::memcmp(&x.kl_loss, &y.kl_loss, sizeof(double)), 0) << "step " << x.step;
    EXPECT_EQ(std::memcmp(&x.model_grad_norm, &y.model_grad_norm, sizeof(double)), 0) << "step " << x.step;
  }
  const auto ma = dsa::model::Model::load(full.final_checkpoint);
  const auto mb = dsa::model::Model::load(resumed.final_checkpoint);
  for (size_t i = 0; i < ma.params().size(); ++i)
    EXPECT_TRUE(bitwise_equal(ma.params()[i].data, mb.params()[i].data)) << ma.params()[i].name;
}

TEST_F(TrainRecipe, InterruptedCheckpointWriteLeavesThePreviousOneLoadable) {
  auto o = options("run", Stage::kPretrain, 4);
  int writes = 0;
  o.on_checkpoint_phase = [&](const std::string& phase) {
    // The second checkpoint (step 4) dies after its model files, before the optimizer state.
    if (phase == "model" && ++writes == 2) throw std::runtime_error("simulated crash");
  };
  EXPECT_THROW(dsa::train::train_stage(o, corpus, *tok), std::runtime_error);
  const std::string stage_dir = (root / "run/pretrain").string();
  const std::string latest = dsa::train::latest_checkpoint(stage_dir);
  ASSERT_FALSE(latest.empty());
  EXPECT_EQ(fs::path(latest).filename(), "ckpt-00000002");
  EXPECT_NO_THROW(dsa::model::Model::load(latest));
  EXPECT_THROW(dsa::train::final_checkpoint(stage_dir), dsa::Error);
  // Resuming completes the stage from step 2 and cleans the debris.
  o.on_checkpoint_phase = nullptr;
  const auto r = dsa::train::train_stage(o, corpus, *tok);
  EXPECT_EQ(r.start_step, 2);
  EXPECT_EQ(fs::path(r.final_checkpoint).filename(), "ckpt-00000004");
  for (const auto& e : fs::directory_iterator(stage_dir)) EXPECT_NE(e.path().filename().string().rfind(".tmp-", 0), 0u) << e.path();
}

TEST_F(TrainRecipe, LoaderIsAPureFunctionOfTheStep) {
  dsa::train::LoaderOptions lo;
  lo.batch_size = 3;
  lo.seq_len = 160;   // room for the synthetic tasks' needles in bytes
  lo.synthetic_share = 0.5;
  lo.seed = 11;
  const dsa::train::Loader a(corpus, *tok, lo), b(corpus, *tok, lo);
  const auto x = a.batch(7), y = b.batch(7), z = a.batch(8);
  EXPECT_EQ(x.tokens, y.tokens);
  EXPECT_EQ(x.targets, y.targets);
  EXPECT_NE(x.tokens, z.tokens);
  ASSERT_EQ(x.seq_lens, std::vector<int>({160, 160, 160}));
  for (size_t i = 0; i + 1 < 160; ++i) EXPECT_EQ(x.targets[i], x.tokens[i + 1]);   // next-token targets
  // Some sequences of a few steps are synthetic tasks (their text carries the needle phrases).
  int synthetic = 0;
  for (int64_t step = 0; step < 8; ++step) {
    const std::string text = tok->decode(a.batch(step).tokens);
    for (size_t at = 0; (at = text.find("The pass key is", at)) != std::string::npos; ++at) ++synthetic;
    for (size_t at = 0; (at = text.find("Recall: [", at)) != std::string::npos; ++at) ++synthetic;
  }
  EXPECT_GT(synthetic, 0);
}

TEST_F(TrainRecipe, SyntheticCurriculumPacksShortTasksThenGrowsThem) {
  using dsa::train::SyntheticTask;
  // Every task fits at its minimum length (the tokenizer here is byte-level: long needles).
  const dsa::train::Loader plain(corpus, *tok, {});
  for (uint64_t seed = 0; seed < 10; ++seed) {
    const int p = dsa::train::synthetic_min_length(SyntheticTask::kPasskey, *tok);
    const int k = dsa::train::synthetic_min_length(SyntheticTask::kKvRecall, *tok);
    const int c = dsa::train::synthetic_min_length(SyntheticTask::kCopy, *tok);
    EXPECT_EQ(dsa::train::make_passkey(*tok, plain.train_stream(), p, 0.5, dsa::train::PasskeySplit::kTrain, seed).tokens.size(), size_t(p));
    EXPECT_EQ(dsa::train::make_kv_recall(*tok, plain.train_stream(), k, seed).tokens.size(), size_t(k));
    EXPECT_EQ(dsa::train::make_copy(plain.train_stream(), c, seed).tokens.size(), size_t(c));
  }
  const int pk_min = dsa::train::synthetic_min_length(SyntheticTask::kPasskey, *tok);
  dsa::train::LoaderOptions lo;
  lo.batch_size = 4;
  lo.seq_len = 8 * pk_min;
  lo.synthetic_share = 1.0;
  lo.synthetic_mix = {1.0, 0.0, 0.0};   // passkeys only
  lo.synthetic_min_len = pk_min;
  lo.synthetic_ramp_steps = 10;          // the cap doubles every 10 steps: 8·min at step 30
  const dsa::train::Loader a(corpus, *tok, lo), b(corpus, *tok, lo);
  auto check = [&](int64_t step, int longest_allowed) -> std::pair<int, int> {
    const auto x = a.batch(step);
    EXPECT_EQ(x.tokens, b.batch(step).tokens);                         // still a pure function of the step
    EXPECT_EQ(x.tokens.size(), size_t(lo.batch_size * lo.seq_len));   // the token budget is unchanged
    EXPECT_EQ(x.targets.size(), x.tokens.size());
    size_t at = 0;
    int longest = 0, passkeys = 0;
    for (const int len : x.seq_lens) {
      EXPECT_EQ(x.tokens[at], corpus.bos_id);                          // every packed sequence starts with BOS
      for (int i = 0; i + 1 < len; ++i) EXPECT_EQ(x.targets[at + i], x.tokens[at + i + 1]);
      const std::string text = tok->decode({x.tokens.begin() + int64_t(at), x.tokens.begin() + int64_t(at + len)});
      passkeys += text.find("The pass key is") != std::string::npos;
      longest = std::max(longest, len);
      at += size_t(len);
    }
    EXPECT_EQ(at, x.tokens.size());
    EXPECT_LE(longest, longest_allowed) << "step " << step;
    return std::make_pair(passkeys, static_cast<int>(x.seq_lens.size()));
  };
  const auto [early_passkeys, early_sequences] = check(0, pk_min);        // step 0: all at the minimum
  EXPECT_EQ(early_sequences, 4 * 8);
  EXPECT_EQ(early_passkeys, 4 * 8);
  int late_sequences = 0;
  for (int64_t step = 30; step < 34; ++step) late_sequences += check(step, lo.seq_len).second;
  EXPECT_LT(late_sequences, 4 * early_sequences);                          // longer tasks, fewer of them
  // --synthetic-first: synthetic only before step N, the configured share (here none) from N on.
  lo.synthetic_share = 0.0;
  lo.synthetic_first_steps = 5;
  const dsa::train::Loader first(corpus, *tok, lo);
  EXPECT_NE(tok->decode(first.batch(4).tokens).find("The pass key is"), std::string::npos);
  EXPECT_EQ(tok->decode(first.batch(5).tokens).find("The pass key is"), std::string::npos);
  // Without the curriculum the default mix and one task per sequence are what they were.
  dsa::train::LoaderOptions off;
  off.seq_len = 160;
  off.synthetic_share = 1.0;
  EXPECT_EQ(dsa::train::Loader(corpus, *tok, off).batch(3).seq_lens, std::vector<int>(4, 160));
}

TEST_F(TrainRecipe, PasskeyAnswerIsTheNeedleAndEvalKeysAreUnseen) {
  const dsa::train::Loader loader(corpus, *tok, {});
  for (double depth : {0.0, 0.5, 1.0}) {
    const auto s = dsa::train::make_passkey(*tok, loader.val_stream(), 200, depth, dsa::train::PasskeySplit::kEval, 5);
    ASSERT_EQ(s.tokens.size(), 200u);
    ASSERT_EQ(s.answer_begin + s.answer_len, 200);
    const std::string text = tok->decode(s.tokens);
    const std::string key = text.substr(text.size() - static_cast<size_t>(s.answer_len));
    EXPECT_NE(text.find("The pass key is " + key + ". Remember it."), std::string::npos);
    EXPECT_EQ(std::stoi(key) % 7, 0);   // eval keys: multiples of 7
  }
  for (uint64_t seed = 0; seed < 50; ++seed) {
    const auto s = dsa::train::make_passkey(*tok, loader.train_stream(), 120, 0.3, dsa::train::PasskeySplit::kTrain, seed);
    const std::string text = tok->decode(s.tokens);
    EXPECT_NE(std::stoi(text.substr(text.size() - 5)) % 7, 0);   // training keys never are
  }
  EXPECT_THROW(dsa::train::make_passkey(*tok, loader.val_stream(), 10, 0.5, dsa::train::PasskeySplit::kEval, 1), dsa::Error);
}

TEST_F(TrainRecipe, CopyTaskRepeatsASegmentLaterInTheSequence) {
  const dsa::train::Loader loader(corpus, *tok, {});
  for (uint64_t seed = 0; seed < 20; ++seed) {
    const auto s = dsa::train::make_copy(loader.train_stream(), 257, seed);
    ASSERT_EQ(s.tokens.size(), 257u);
    ASSERT_GE(s.answer_len, 2);
    ASSERT_LE(s.answer_begin + s.answer_len, 257);
    const std::vector<int32_t> repeat(s.tokens.begin() + s.answer_begin, s.tokens.begin() + s.answer_begin + s.answer_len);
    // the repeat's first copy ends at or before the repeat begins
    bool found = false;
    for (int a = 0; a + s.answer_len <= s.answer_begin && !found; ++a)
      found = std::equal(repeat.begin(), repeat.end(), s.tokens.begin() + a);
    EXPECT_TRUE(found) << "seed " << seed;
    EXPECT_EQ(s.tokens, dsa::train::make_copy(loader.train_stream(), 257, seed).tokens);   // seeded
  }
  EXPECT_THROW(dsa::train::make_copy(loader.train_stream(), 4, 1), dsa::Error);
}

TEST_F(TrainRecipe, BadOptionsNameTheFlag) {
  auto expect_error = [](auto&& fn, const std::string& needle) {
    try {
      fn();
      FAIL() << "expected dsa::Error mentioning " << needle;
    } catch (const dsa::Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error([] { dsa::train::parse_stage("finetune"); }, "--stage");
  auto o = options("run", Stage::kPretrain, 0);
  expect_error([&] { dsa::train::train_stage(o, corpus, *tok); }, "--steps");
  o.steps = 2;
  o.loader.seq_len = 1000;   // > max_position_embeddings 256
  expect_error([&] { dsa::train::train_stage(o, corpus, *tok); }, "--seq-len");
  o.loader.seq_len = 16;
  o.shared_embedding = -0.5;
  expect_error([&] { dsa::train::train_stage(o, corpus, *tok); }, "--shared-embedding = -0.5");
  o = options("run", Stage::kWarmup, 2);
  o.shared_embedding = 1.0;   // only a fresh pretraining init has an embedding to shape
  expect_error([&] { dsa::train::train_stage(o, corpus, *tok); }, "--shared-embedding shapes a fresh initialisation");
  o = options("run", Stage::kWarmup, 2);   // no pretrain stage has run
  expect_error([&] { dsa::train::train_stage(o, corpus, *tok); }, "final checkpoint");
  o.init = (root / "nowhere").string();
  expect_error([&] { dsa::train::train_stage(o, corpus, *tok); }, "--init");
  // The corpus-free checks run on their own, so the CLI refuses a bad line before writing anything.
  o = options("run", Stage::kPretrain, 2);
  o.loader.synthetic_ramp_steps = 5;
  expect_error([&] { dsa::train::check_train_options(o); }, "--synthetic-ramp needs --synthetic-min-len");
  o.loader.synthetic_ramp_steps = 0;
  o.checkpoint_every = 0;
  expect_error([&] { dsa::train::check_train_options(o); }, "--checkpoint-every");
  o.checkpoint_every = 1;
  o.selection.rule.kind = dsa::TopkPolicyKind::kMass;   // a per-row k belongs to the sparse stage
  o.selection.rule.p = 0.9;
  expect_error([&] { dsa::train::check_train_options(o); }, "--topk-policy mass p=0.9");
  dsa::train::LoaderOptions lo;
  lo.batch_size = 0;
  expect_error([&] { dsa::train::Loader(corpus, *tok, lo); }, "--batch");
  lo.batch_size = 1;
  lo.synthetic_share = 2;
  expect_error([&] { dsa::train::Loader(corpus, *tok, lo); }, "--synthetic");
  lo.synthetic_share = 0.5;
  lo.synthetic_mix = {1, -1, 1};
  expect_error([&] { dsa::train::Loader(corpus, *tok, lo); }, "--synthetic-mix");
  lo.synthetic_mix = {0, 0, 0};
  expect_error([&] { dsa::train::Loader(corpus, *tok, lo); }, "--synthetic-mix");
  lo.synthetic_mix = {1, 1, 1};
  lo.synthetic_min_len = lo.seq_len + 1;
  expect_error([&] { dsa::train::Loader(corpus, *tok, lo); }, "--synthetic-min-len");
  lo.synthetic_min_len = 0;
  lo.synthetic_ramp_steps = 100;
  expect_error([&] { dsa::train::Loader(corpus, *tok, lo); }, "--synthetic-ramp needs --synthetic-min-len");
  lo.synthetic_ramp_steps = -1;
  expect_error([&] { dsa::train::Loader(corpus, *tok, lo); }, "--synthetic-ramp");
  lo.synthetic_ramp_steps = 0;
  lo.synthetic_first_steps = -2;
  expect_error([&] { dsa::train::Loader(corpus, *tok, lo); }, "--synthetic-first = -2");
  lo.synthetic_first_steps = 0;
  dsa::train::DataOptions d;
  d.paths = {(root / "no_such_corpus").string()};
  expect_error([&] { dsa::train::load_corpus(d); }, "no_such_corpus");
  fs::create_directories(root / "corpus");
  {
    std::ofstream(root / "corpus" / "a.txt") << "some text for a document";
  }
  d.paths = {(root / "corpus").string()};
  d.holdout = {"persuasion"};
  expect_error([&] { dsa::train::load_corpus(d); }, "--holdout");
  d.tokenizer = (root / "missing.model").string();
  expect_error([&] { dsa::train::load_corpus(d); }, "missing.model");
}

// `dsa train` asks check_stage_start before it writes anything: every way the stage cannot start is
// refused by name while the run folder does not exist yet.
TEST_F(TrainRecipe, StageStartIsCheckedBeforeAnythingIsWritten) {
  auto expect_refused = [&](const dsa::train::TrainOptions& o, int vocab, const std::string& needle) {
    try {
      dsa::train::check_stage_start(o, vocab);
      FAIL() << "expected dsa::Error mentioning " << needle;
    } catch (const dsa::Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
    EXPECT_FALSE(fs::exists(o.run_dir)) << needle;
  };
  const int vocab = tok->vocab_size();
  auto o = options("fresh", Stage::kWarmup, 2);                 // no pretraining stage has run
  expect_refused(o, vocab, "has no final checkpoint");
  o.init = (root / "nowhere").string();
  expect_refused(o, vocab, "is not a checkpoint folder");
  o = options("fresh", Stage::kPretrain, 2);
  o.config.num_attention_heads = 0;                             // a fresh model of a bad config
  expect_refused(o, vocab, "num_attention_heads");
  o = options("fresh", Stage::kPretrain, 2);
  o.loader.seq_len = o.config.max_position_embeddings + 1;
  expect_refused(o, vocab, "--seq-len");
  EXPECT_NO_THROW(dsa::train::check_stage_start(options("fresh", Stage::kPretrain, 2), vocab));

  // A finished pretraining stage: the warm-up starts from it, so ITS config is what must fit.
  const auto pre = options("run", Stage::kPretrain, 2);
  dsa::train::train_stage(pre, corpus, *tok);
  auto warm = options("run", Stage::kWarmup, 2);
  EXPECT_NO_THROW(dsa::train::check_stage_start(warm, vocab));
  try {
    dsa::train::check_stage_start(warm, vocab + 7);             // another tokenizer
    FAIL() << "a vocabulary mismatch was accepted";
  } catch (const dsa::Error& e) {
    EXPECT_NE(std::string(e.what()).find("vocab_size"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(fs::path(warm.run_dir) / "warmup"));
}

// dsa eval on a tiny trained run: every table present and consistent with the free oracles (at k ≥ the
// context DSA and the window see every key, so their PPL is the dense PPL and the recall is 1), and
// every bad option refused before the first pass, with no eval folder written.
TEST_F(TrainRecipe, EvaluationFillsEveryTableAndRefusesBadOptionsFirst) {
  for (Stage st : {Stage::kPretrain, Stage::kWarmup, Stage::kSparse}) dsa::train::train_stage(options("run", st, 2), corpus, *tok);
  const int floor = dsa::train::synthetic_min_length(dsa::train::SyntheticTask::kPasskey, *tok);
  dsa::train::EvalOptions e;
  e.run_dir = (root / "run").string();
  e.seq_len = 48;
  e.val_sequences = 2;
  e.ks = {6, 48};                    // the trained k, and k = the whole context
  e.passkey_lengths = {floor, floor + 16};
  e.depths = {0.2, 0.8};
  e.passkey_trials = 1;
  e.speed_context = 96;
  e.decode_tokens = 2;
  e.plots = false;
  const fs::path eval_dir = root / "run" / "eval";
  auto expect_refused = [&](dsa::train::EvalOptions bad, const std::string& needle) {
    try {
      dsa::train::evaluate_run(bad, corpus, *tok);
      FAIL() << "expected dsa::Error mentioning " << needle;
    } catch (const dsa::Error& err) {
      EXPECT_NE(std::string(err.what()).find(needle), std::string::npos) << err.what();
    }
    EXPECT_FALSE(fs::exists(eval_dir)) << needle;
  };
  auto bad = e;
  bad.seq_len = 1000;
  expect_refused(bad, "--seq-len 1000 exceeds max_position_embeddings");
  bad = e;
  bad.passkey_lengths = {floor - 1};
  expect_refused(bad, "is shorter than the task");
  bad = e;
  bad.passkey_lengths = {256};       // + its BOS > 256 positions
  expect_refused(bad, "passkey length 256");
  bad = e;
  bad.speed_context = 100000;
  expect_refused(bad, "--speed-context");
  bad = e;
  bad.passkey_trials = 0;
  expect_refused(bad, "--trials");

  const auto r = dsa::train::evaluate_run(e, corpus, *tok);
  ASSERT_EQ(r.ppl.size(), 2u + 2u * e.ks.size());   // dense-pretrain, dense, (dsa, window) per k
  for (const auto& row : r.ppl) {
    if (row.k == 48) {
      EXPECT_NEAR(row.loss, std::log(r.dense_ppl), 1e-4) << row.what;
    }
  }
  EXPECT_NEAR(r.ppl_ratio, r.dsa_ppl / r.dense_ppl, 1e-12);
  ASSERT_EQ(r.recall.size(), e.ks.size());
  EXPECT_NEAR(r.recall[1].mass, 1.0, 1e-6);
  EXPECT_LE(r.recall[0].mass, r.recall[0].oracle + 1e-9);   // the dense top-k is the ceiling
  EXPECT_EQ(r.passkey.size(), e.passkey_lengths.size() * e.depths.size() * 3);
  for (const auto& row : r.passkey) EXPECT_EQ(row.trials, e.passkey_trials);
  ASSERT_EQ(r.speed.size(), 2u);
  EXPECT_EQ(r.speed[0].context, e.speed_context);
  for (const char* file : {"ppl.csv", "recall.csv", "passkey.csv", "passkey_by_length.csv", "speed.csv", "summary.txt"})
    EXPECT_TRUE(fs::exists(eval_dir / file)) << file;
}

}  // namespace
