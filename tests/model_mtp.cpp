// model_mtp.cpp — the multi-token-prediction module: its tensors (names, shapes, counts, init), the
// checkpoint round trip with the official layout's copies of the shared embedding and head, the
// refusals, and greedy speculative decoding with Session::draft + decode2 ≡ plain greedy decoding.
// The draft's values against the float64 reference: model_reference.cpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <unistd.h>
#include <vector>

#include "dsa/model.h"
#include "dsa/safetensors.h"
#include "dsa/train.h"
#include "model_util.h"

namespace {

namespace fs = std::filesystem;
namespace st = dsa::safetensors;
using dsa::model::Config;
using dsa::model::Model;

Config mtp_config(bool moe) {
  Config c = moe ? dsa::test_model::moe_config() : dsa::test_model::micro_config();
  c.num_nextn_predict_layers = 1;
  return c;
}

fs::path temp_dir(const std::string& name) {
  const fs::path p = fs::temp_directory_path() / ("dsa_model_mtp_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(p);
  return p;
}

void expect_error(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    FAIL() << "accepted; expected '" << needle << "'";
  } catch (const dsa::Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(ModelMtp, TensorsNamedCountedAndInitialised) {
  for (const bool moe : {false, true}) {
    const Config c = mtp_config(moe);
    Model m(c);
    m.init_random(3);
    const int64_t D = c.hidden_size;
    const std::string p = "model.layers." + std::to_string(c.num_hidden_layers) + ".";
    int64_t total = 0, mtp = 0;
    std::map<std::string, std::vector<int64_t>> shapes;
    for (size_t i = 0; i < m.params().size(); ++i) {
      const auto& t = m.params()[i];
      total += t.numel();
      if (i >= m.first_mtp_param()) {
        mtp += t.numel();
        EXPECT_EQ(t.name.rfind(p, 0), 0u) << t.name;
      }
      shapes[t.name] = t.shape;
    }
    const Config::ParamCounts pc = c.param_counts();
    EXPECT_EQ(total, pc.total);
    EXPECT_EQ(mtp, pc.mtp);
    EXPECT_EQ(shapes.at(p + "enorm.weight"), std::vector<int64_t>{D});
    EXPECT_EQ(shapes.at(p + "hnorm.weight"), std::vector<int64_t>{D});
    EXPECT_EQ(shapes.at(p + "eh_proj.weight"), (std::vector<int64_t>{D, 2 * D}));
    EXPECT_EQ(shapes.at(p + "shared_head.norm.weight"), std::vector<int64_t>{D});
    EXPECT_EQ(shapes.count(p + "self_attn.indexer.wq_b.weight"), 1u);
    EXPECT_EQ(shapes.count(p + (moe ? "mlp.experts.7.down_proj.weight" : "mlp.down_proj.weight")), 1u);
    EXPECT_EQ(shapes.count(p + "embed_tokens.weight") + shapes.count(p + "shared_head.head.weight"), 0u)
        << "the shared embedding and head are the main model's";
    const auto& eh = m.find_param(p + "eh_proj.weight")->data;
    EXPECT_NE(eh[0], 0.0f);
    EXPECT_EQ(m.find_param(p + "hnorm.weight")->data[0], 1.0f);
  }
}

TEST(ModelMtp, CheckpointRoundTripCopiesAndMissingTensors) {
  const fs::path dir = temp_dir("rt");
  const Config c = mtp_config(false);
  Model m(c);
  m.init_random(5);
  m.save(dir.string());
  const Model r = Model::load(dir.string());
  ASSERT_EQ(r.params().size(), m.params().size());
  for (size_t i = 0; i < m.params().size(); ++i) {
    EXPECT_EQ(r.params()[i].name, m.params()[i].name);
    ASSERT_EQ(0, std::memcmp(r.params()[i].data.data(), m.params()[i].data.data(), m.params()[i].data.size() * 4));
  }
  // the official layout's copies of the shared tensors are on disk and equal the main ones
  const fs::path w = dir / "model.safetensors";
  const std::string p = "model.layers." + std::to_string(c.num_hidden_layers) + ".";
  std::map<std::string, std::pair<std::vector<int64_t>, std::vector<float>>> all;
  {
    const st::File f = st::File::open(w.string());
    for (const auto& t : m.params()) all[t.name] = {t.shape, f.to_float(t.name)};
    for (const char* copy : {"embed_tokens.weight", "shared_head.head.weight"}) {
      ASSERT_NE(f.find(p + copy), nullptr) << copy;
      const std::vector<int64_t> shape{c.vocab_size, c.hidden_size};
      all[p + copy] = {shape, f.to_float(p + copy, shape)};
    }
  }
  EXPECT_EQ(all[p + "embed_tokens.weight"].second, m.find_param("model.embed_tokens.weight")->data);
  EXPECT_EQ(all[p + "shared_head.head.weight"].second, m.find_param("lm_head.weight")->data);
  // rewrite the file with `drop` left out and `change` altered
  const auto rewrite = [&](const std::string& drop, const std::string& change) {
    std::vector<st::WriteTensor> ws;
    std::map<std::string, std::vector<float>> altered;
    for (auto& [name, t] : all) {
      if (name == drop) continue;
      const float* data = t.second.data();
      if (name == change) {
        altered[name] = t.second;
        altered[name][0] += 1.0f;
        data = altered[name].data();
      }
      ws.push_back({name, st::Dtype::kF32, t.first, data});
    }
    st::write(w.string(), ws, {{"format", "pt"}});
  };
  rewrite(p + "eh_proj.weight", "");
  expect_error([&] { Model::load(dir.string()); }, "tensor '" + p + "eh_proj.weight' is missing");
  rewrite(p + "self_attn.indexer.wk.weight", "");
  expect_error([&] { Model::load(dir.string()); }, "tensor '" + p + "self_attn.indexer.wk.weight' is missing");
  rewrite("", p + "shared_head.head.weight");
  expect_error([&] { Model::load(dir.string()); }, "tensor '" + p + "shared_head.head.weight' differs from 'lm_head.weight'");
  rewrite("", p + "embed_tokens.weight");
  expect_error([&] { Model::load(dir.string()); }, "tensor '" + p + "embed_tokens.weight' differs from 'model.embed_tokens.weight'");
  rewrite(p + "embed_tokens.weight", "");   // the copies may be absent
  EXPECT_NO_THROW(Model::load(dir.string()));
  fs::remove_all(dir);
}

TEST(ModelMtp, RefusalsAndFrozenParameters) {
  Model plain(dsa::test_model::micro_config());
  plain.init_random(1);
  dsa::model::SessionOptions so;
  so.mtp = true;
  expect_error([&] { dsa::model::Session s(plain, so); }, "num_nextn_predict_layers = 0");
  Model m(mtp_config(false));
  m.init_random(2);
  expect_error([&] { dsa::model::BatchSession s(m, so); }, "mtp (draft) is a Session option");
  {
    dsa::model::Session s(m, dsa::model::SessionOptions{});
    s.prefill({1, 2, 3}, 0);
    expect_error([&] { s.draft(4); }, "draft needs SessionOptions::mtp");
  }
  dsa::model::Session s(m, so);
  expect_error([&] { s.draft(4); }, "draft needs at least one token");
  s.prefill({1, 2, 3}, 0);
  expect_error([&] { s.draft(99); }, "token 99 out of range");
  // a training step moves the main model and leaves the MTP module as it is (weight decay included)
  const std::vector<dsa::model::Tensor> before = m.params();
  dsa::train::GroupOptions g;
  g.weight_decay = 0.1;
  dsa::train::AdamW opt(m, g, g);
  m.forward_backward(dsa::test_model::random_batch(m.config(), {9}, 3), dsa::model::Stage::kSparse);
  opt.step(m, 1.0, true, true);
  for (size_t i = 0; i < before.size(); ++i)
    EXPECT_EQ(before[i].data == m.params()[i].data, i >= m.first_mtp_param()) << before[i].name;
}

// Greedy speculative decoding (the loop of `dsa generate --speculative mtp`): the output equals plain
// greedy decoding token for token (decode ≡ prefill row bitwise on the CPU; a rejected draft is
// truncated away), whatever the drafts. Returns {accepted, drafted}.
std::pair<int, int> speculative(const Model& m, const dsa::model::SessionOptions& base, const std::vector<int32_t>& prompt, int max_new,
                                std::vector<int32_t>& out) {
  const int V = m.config().vocab_size;
  const auto argmax = [&](const float* row) { return static_cast<int32_t>(std::max_element(row, row + V) - row); };
  dsa::model::SessionOptions so = base;
  so.mtp = true;
  dsa::model::Session s(m, so);
  int32_t next = argmax(s.prefill(prompt, 0).data());
  int accepted = 0, drafted = 0;
  while (static_cast<int>(out.size()) < max_new) {
    out.push_back(next);
    const int left = max_new - static_cast<int>(out.size());
    if (left == 0) break;
    if (left == 1) {
      next = argmax(s.decode(next).data());
      continue;
    }
    const int32_t draft = argmax(s.draft(next).data());
    ++drafted;
    const std::vector<float> rows = s.decode2(next, draft);
    if (argmax(rows.data()) == draft) {
      ++accepted;
      out.push_back(draft);
      next = argmax(rows.data() + V);
    } else {
      s.truncate(s.length() - 1);
      next = argmax(rows.data());
    }
  }
  return {accepted, drafted};
}

TEST(ModelMtp, SpeculativeGreedyEqualsPlainGreedy) {
  constexpr int kNew = 40;
  for (const bool moe : {false, true}) {
    Config c = mtp_config(moe);
    c.vocab_size = 5;   // a small vocabulary: a random draft is accepted now and then
    Model m(c);
    if (moe) dsa::test_model::init_moe_model(m, 7);
    else m.init_random(7);
    for (const auto mode : {dsa::model::AttentionMode::kDense, dsa::model::AttentionMode::kSparse}) {
      dsa::model::SessionOptions so;
      so.mode = mode;
      const std::vector<int32_t> prompt = dsa::test_model::random_tokens(c.vocab_size, 6, 8);
      std::vector<int32_t> plain;
      {
        dsa::model::Session s(m, so);
        std::vector<float> logits = s.prefill(prompt, 0);
        for (int i = 0; i < kNew; ++i) {
          plain.push_back(static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin()));
          if (i + 1 < kNew) logits = s.decode(plain.back());
        }
      }
      std::vector<int32_t> spec;
      const auto [accepted, drafted] = speculative(m, so, prompt, kNew, spec);
      EXPECT_EQ(spec, plain) << "moe=" << moe;
      EXPECT_LE(accepted, drafted);
      EXPECT_GT(drafted, 0);
      // every accepted draft saves a main step: the steps after the prefill are kNew - 1 - accepted
      EXPECT_EQ(static_cast<int>(spec.size()), kNew);
      std::printf("moe=%d %s: accepted %d of %d drafts\n", moe, mode == dsa::model::AttentionMode::kDense ? "dense" : "sparse",
                  accepted, drafted);
    }
  }
}

// An MTP module built to copy the main model's rule: with every o_proj and down_proj zero, the main
// model's final hidden state is norm(embed(t)), so its next token is f(t) = argmax head(norm(embed(t)));
// a module with o_proj, down_proj zero and eh_proj = [I | 0] (the normalised embedding alone) predicts
// f(token after next's predecessor) = exactly what the main model will say next. Every draft is accepted:
// two tokens per main step, the same output as plain greedy decoding.
TEST(ModelMtp, CopyingModuleIsAlwaysAccepted) {
  constexpr int kNew = 21;
  Config c = mtp_config(false);
  c.vocab_size = 11;
  Model m(c);
  m.init_random(9);
  const int D = c.hidden_size;
  for (auto& t : m.params())
    if (t.name.find("o_proj") != std::string::npos || t.name.find("down_proj") != std::string::npos)
      std::fill(t.data.begin(), t.data.end(), 0.0f);
  auto& eh = m.find_param("model.layers." + std::to_string(c.num_hidden_layers) + ".eh_proj.weight")->data;
  std::fill(eh.begin(), eh.end(), 0.0f);
  for (int i = 0; i < D; ++i) eh[static_cast<size_t>(i) * 2 * D + i] = 1.0f;
  dsa::model::SessionOptions so;
  const std::vector<int32_t> prompt = dsa::test_model::random_tokens(c.vocab_size, 6, 10);
  std::vector<int32_t> plain;
  {
    dsa::model::Session s(m, so);
    std::vector<float> logits = s.prefill(prompt, 0);
    for (int i = 0; i < kNew; ++i) {
      plain.push_back(static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin()));
      if (i + 1 < kNew) logits = s.decode(plain.back());
    }
  }
  std::vector<int32_t> spec;
  const auto [accepted, drafted] = speculative(m, so, prompt, kNew, spec);
  EXPECT_EQ(spec, plain);
  EXPECT_EQ(drafted, (kNew - 1) / 2);
  EXPECT_EQ(accepted, drafted);
}

}  // namespace
