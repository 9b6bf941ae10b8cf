// Library defaults and helpers a user meets first: SessionOptions{} on any accepted model, the BOS
// rule (encode_prompt), top-k sampling, checkpoint resolution from final/stage/run folders, the
// document-tail hold-out, and the evaluation's confidence intervals.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "dsa/model.h"
#include "dsa/ops.h"
#include "dsa/tokenizer.h"
#include "dsa/train.h"

namespace fs = std::filesystem;

namespace {

fs::path scratch(const std::string& name) {
  const fs::path p = fs::temp_directory_path() / ("dsa_libdefaults_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

TEST(LibraryDefaults, DefaultSessionOptionsWorkOnTinyAndV32Latents) {
  for (int kvr : {64, 512}) {
    dsa::model::Config c = dsa::model::Config::tiny();
    c.num_hidden_layers = 1;
    c.first_k_dense_replace = 1;
    c.vocab_size = dsa::kByteVocab + 1;   // bytes + BOS
    c.kv_lora_rank = kvr;
    c.qk_rope_head_dim = kvr == 512 ? 64 : 16;
    c.qk_nope_head_dim = 32;
    c.index_head_dim = kvr == 512 ? 128 : 32;
    dsa::model::Model m(c);
    m.init_random(1);
    dsa::model::Session s(m, dsa::model::SessionOptions{});
    EXPECT_EQ(*s.options().kv_format, kvr == 512 ? dsa::KvCacheFormat::kBf16 : dsa::KvCacheFormat::kFp32) << kvr;
    const auto tok = dsa::make_byte_tokenizer();
    const auto logits = s.prefill(dsa::encode_prompt(*tok, "abc"), 0);
    ASSERT_EQ(logits.size(), static_cast<size_t>(c.vocab_size));
    for (float v : logits) ASSERT_TRUE(std::isfinite(v));
  }
}

TEST(LibraryDefaults, EncodePromptPutsBosFirst) {
  const auto tok = dsa::make_byte_tokenizer();
  const auto ids = dsa::encode_prompt(*tok, "hi");
  ASSERT_EQ(ids.size(), 3u);
  EXPECT_EQ(ids[0], dsa::kByteBosId);
  EXPECT_EQ(ids[1], 'h');
  EXPECT_EQ(ids[2], 'i');
}

TEST(LibraryDefaults, TopKSamplingStaysInsideTheKLikeliest) {
  const std::vector<float> logits = {0.0f, 3.0f, 1.0f, 2.9f, -1.0f};
  dsa::model::SamplerOptions o;
  o.temperature = 5.0;   // nearly uniform without top-k
  o.top_k = 2;
  std::mt19937_64 rng(1);
  int seen[5] = {0, 0, 0, 0, 0};
  for (int i = 0; i < 400; ++i) ++seen[dsa::model::sample_token(logits.data(), 5, o, rng)];
  EXPECT_EQ(seen[0] + seen[2] + seen[4], 0);
  EXPECT_GT(seen[1], 0);
  EXPECT_GT(seen[3], 0);
  o.top_k = 1;   // = greedy
  EXPECT_EQ(dsa::model::sample_token(logits.data(), 5, o, rng), 1);
  o.top_k = -1;
  EXPECT_THROW(dsa::model::sample_token(logits.data(), 5, o, rng), dsa::Error);
  o.top_k = 0;
  o.top_p = 5;
  EXPECT_THROW(dsa::model::sample_token(logits.data(), 5, o, rng), dsa::Error);
}

TEST(LibraryDefaults, ResolveCheckpointFromFinalStageAndRun) {
  const fs::path run = scratch("resolve");
  dsa::model::Config c = dsa::model::Config::tiny();
  dsa::model::Model m(c);
  m.save((run / "pretrain" / "ckpt-000002").string());
  EXPECT_THROW(dsa::train::resolve_checkpoint(run.string()), dsa::Error);   // no stage finished yet
  std::ofstream(run / "pretrain" / "final") << "ckpt-000002\n";
  std::ofstream(run / "pretrain" / "ckpt-000002" / "trainer_state.json") << "{}\n";
  const std::string want = (run / "pretrain" / "ckpt-000002").string();
  EXPECT_EQ(dsa::train::resolve_checkpoint((run / "pretrain" / "final").string()), want);
  EXPECT_EQ(dsa::train::resolve_checkpoint((run / "pretrain").string()), want);
  EXPECT_EQ(dsa::train::resolve_checkpoint(run.string()), want);
  EXPECT_EQ(dsa::train::resolve_checkpoint(want), want);
  try {
    dsa::train::resolve_checkpoint((run / "nothing").string());
    FAIL() << "accepted a missing path";
  } catch (const dsa::Error& e) {
    EXPECT_NE(std::string(e.what()).find("does not exist"), std::string::npos) << e.what();
  }
  fs::remove_all(run);
}

TEST(LibraryDefaults, OneDocumentCorpusHoldsOutItsTail) {
  const fs::path dir = scratch("tail");
  {
    std::ofstream(dir / "novel.txt") << std::string(1000, 'a') << std::string(100, 'b');
  }
  dsa::train::DataOptions d;
  d.paths = {(dir / "novel.txt").string()};
  const auto c = dsa::train::load_corpus(d);
  ASSERT_EQ(c.train.size(), 1u);
  ASSERT_EQ(c.val.size(), 1u);
  EXPECT_EQ(c.val[0].tokens.size(), 55u);   // ceil(5% of 1100)
  EXPECT_EQ(c.train[0].tokens.size(), 1045u);
  EXPECT_EQ(c.val[0].tokens.back(), 'b');
  d.holdout = {"persuasion"};
  try {
    dsa::train::load_corpus(d);
    FAIL() << "accepted a hold-out pattern that matches nothing";
  } catch (const dsa::Error& e) {
    EXPECT_NE(std::string(e.what()).find("--holdout \"persuasion\""), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

TEST(LibraryDefaults, SyntheticTasksMustFitTheSequence) {
  const auto tok = dsa::make_byte_tokenizer();
  dsa::train::LoaderOptions o;
  o.synthetic_share = 0.5;
  o.seq_len = 40;
  EXPECT_THROW(dsa::train::check_synthetic_lengths(o, *tok), dsa::Error);
  o.synthetic_share = 0;   // synthetic tasks off: any length
  EXPECT_NO_THROW(dsa::train::check_synthetic_lengths(o, *tok));
}

TEST(LibraryDefaults, ConfidenceIntervals) {
  // Wilson: 18 of 20 → about [0.699, 0.972]; 0 of 4 → [0, 0.490]; the interval holds the estimate.
  const auto w = dsa::train::wilson_interval(18, 20);
  EXPECT_NEAR(w.lo, 0.6990, 1e-3);
  EXPECT_NEAR(w.hi, 0.9721, 1e-3);
  const auto z = dsa::train::wilson_interval(0, 4);
  EXPECT_NEAR(z.lo, 0.0, 1e-12);
  EXPECT_NEAR(z.hi, 0.4899, 1e-3);
  // t interval of {1, 2, 3}: mean 2, sd 1, t(2) = 4.303 → 2 ± 4.303/√3.
  const auto m = dsa::train::mean_interval({1.0, 2.0, 3.0});
  EXPECT_NEAR(m.lo, 2.0 - 4.303 / std::sqrt(3.0), 1e-9);
  EXPECT_NEAR(m.hi, 2.0 + 4.303 / std::sqrt(3.0), 1e-9);
  const auto one = dsa::train::mean_interval({5.0});
  EXPECT_DOUBLE_EQ(one.lo, 5.0);
  EXPECT_DOUBLE_EQ(one.hi, 5.0);
}

}  // namespace
