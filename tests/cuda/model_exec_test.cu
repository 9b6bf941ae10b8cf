// model_exec_test.cu — the model's passes on the GPU executor (dsa::cuda::attach_model) against the
// CPU executor: the same src/model/forward.cpp over the CUDA ops must give the CPU's losses, logits and
// every parameter gradient to fp32 rounding, in every stage and attention mode, at a micro config
// (odd dims everywhere) and the demo's shape; reruns must be bitwise equal; detaching returns to the
// CPU bitwise; bad devices are refused by name.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "cuda/device_buffer.h"
#include "dsa/model_cuda.h"
#include "model_util.h"

namespace {

using dsa::model::AttentionMode;
using dsa::model::Batch;
using dsa::model::Config;
using dsa::model::Losses;
using dsa::model::Model;
using dsa::model::Stage;
using dsa::model::Tensor;

// ‖a − b‖ / max(‖b‖, tiny) over one tensor.
double rel_err(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    den += static_cast<double>(b[i]) * b[i];
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}

// A demo-sized shape (2 heads, kv_lora 64, an earlier demo model's) at a smaller vocabulary.
Config demo_shape() {
  Config c;
  c.vocab_size = 300;
  c.hidden_size = 128;
  c.intermediate_size = 384;
  c.num_hidden_layers = 2;
  c.first_k_dense_replace = 2;
  c.num_attention_heads = 2;
  c.q_lora_rank = 96;
  c.kv_lora_rank = 64;
  c.qk_nope_head_dim = 32;
  c.qk_rope_head_dim = 16;
  c.v_head_dim = 32;
  c.index_n_heads = 4;
  c.index_head_dim = 32;
  c.index_topk = 32;
  c.max_position_embeddings = 512;
  c.tie_word_embeddings = true;
  c.initializer_range = 0.08;
  return c;
}

struct Case {
  const char* name;
  Config config;
  std::vector<int> lens;
  double tol;   // fp32 reassociation over the case's longest sums
};

std::vector<Case> cases() {
  return {{"micro", dsa::test_model::micro_config(), {9, 1, 17}, 2e-5}, {"demo_shape", demo_shape(), {256, 77}, 2e-4}};
}

TEST(ModelExecCuda, EveryStageMatchesTheCpuExecutor) {
  if (!dsa::test::have_gpu()) GTEST_SKIP() << "no CUDA device";
  for (const Case& cs : cases())
    for (const Stage stage : {Stage::kPretrain, Stage::kWarmup, Stage::kSparse}) {
      SCOPED_TRACE(std::string(cs.name) + " stage " + std::to_string(static_cast<int>(stage)));
      Model m(cs.config);
      m.init_random(3, 1.0);
      const Batch b = dsa::test_model::random_batch(cs.config, cs.lens, 4);
      const Losses lc = m.forward_backward(b, stage);
      const std::vector<Tensor> gc = m.grads();
      dsa::cuda::attach_model(m);
      ASSERT_TRUE(m.has_exec());
      const Losses lg = m.forward_backward(b, stage);
      EXPECT_NEAR(lg.lm_loss, lc.lm_loss, cs.tol * std::max(1.0, std::fabs(lc.lm_loss)));
      EXPECT_NEAR(lg.kl_loss, lc.kl_loss, cs.tol * std::max(1.0, std::fabs(lc.kl_loss)));
      EXPECT_EQ(lg.tokens, lc.tokens);
      for (size_t p = 0; p < gc.size(); ++p) {
        const auto& g = m.grads()[p].data;
        bool zero_cpu = true, zero_gpu = true;
        for (size_t i = 0; i < g.size(); ++i) {
          zero_cpu = zero_cpu && gc[p].data[i] == 0.0f;
          zero_gpu = zero_gpu && g[i] == 0.0f;
        }
        // Frozen groups (the model in warm-up, the indexer in pretraining) stay exactly zero on both.
        ASSERT_EQ(zero_cpu, zero_gpu) << gc[p].name;
        if (!zero_cpu) EXPECT_LT(rel_err(g, gc[p].data), cs.tol * 10) << gc[p].name;
      }
      // Bitwise over reruns on the GPU.
      const std::vector<Tensor> g1 = m.grads();
      const Losses l2 = m.forward_backward(b, stage);
      EXPECT_EQ(l2.lm_loss, lg.lm_loss);
      EXPECT_EQ(l2.kl_loss, lg.kl_loss);
      for (size_t p = 0; p < g1.size(); ++p)
        ASSERT_EQ(0, std::memcmp(g1[p].data.data(), m.grads()[p].data.data(), g1[p].data.size() * sizeof(float)))
            << g1[p].name;
      // Detached: the CPU executor again, bitwise as before.
      m.set_exec(nullptr);
      const Losses lc2 = m.forward_backward(b, stage);
      EXPECT_EQ(lc2.lm_loss, lc.lm_loss);
      for (size_t p = 0; p < gc.size(); ++p)
        ASSERT_EQ(0, std::memcmp(gc[p].data.data(), m.grads()[p].data.data(), gc[p].data.size() * sizeof(float)));
    }
}

TEST(ModelExecCuda, EvaluationAndLogitsMatchInEveryMode) {
  if (!dsa::test::have_gpu()) GTEST_SKIP() << "no CUDA device";
  for (const Case& cs : cases()) {
    SCOPED_TRACE(cs.name);
    Model cpu(cs.config);
    cpu.init_random(5, 1.0);
    Model gpu(cs.config);
    gpu.params() = cpu.params();
    dsa::cuda::attach_model(gpu);
    const Batch b = dsa::test_model::random_batch(cs.config, cs.lens, 6);
    for (const AttentionMode mode : {AttentionMode::kDense, AttentionMode::kSparse, AttentionMode::kWindow}) {
      for (const int k : {0, 2, 64}) {
        const Losses lc = cpu.evaluate(b, mode, k), lg = gpu.evaluate(b, mode, k);
        EXPECT_NEAR(lg.lm_loss, lc.lm_loss, cs.tol * std::max(1.0, lc.lm_loss)) << "mode " << static_cast<int>(mode) << " k " << k;
        EXPECT_NEAR(lg.kl_loss, lc.kl_loss, cs.tol * std::max(1.0, lc.kl_loss)) << "mode " << static_cast<int>(mode) << " k " << k;
        EXPECT_LT(rel_err(gpu.logits(b, mode, k), cpu.logits(b, mode, k)), cs.tol) << "mode " << static_cast<int>(mode);
      }
    }
    // Recall and the MHA oracle run on the CPU even with a GPU executor attached: equal bitwise.
    const auto rc = cpu.indexer_recall(b), rg = gpu.indexer_recall(b);
    EXPECT_EQ(rc.mass_in_selected, rg.mass_in_selected);
    EXPECT_EQ(cpu.evaluate(b, AttentionMode::kDense, 0, true).lm_loss, gpu.evaluate(b, AttentionMode::kDense, 0, true).lm_loss);
  }
}

TEST(ModelExecCuda, BadDeviceIsRefusedByName) {
  if (!dsa::test::have_gpu()) GTEST_SKIP() << "no CUDA device";
  Model m(dsa::test_model::micro_config());
  for (const int dev : {-1, 4096}) {
    try {
      dsa::cuda::attach_model(m, dev);
      FAIL() << "device " << dev << " accepted";
    } catch (const dsa::Error& e) {
      EXPECT_NE(std::string(e.what()).find("device " + std::to_string(dev)), std::string::npos) << e.what();
    }
  }
  EXPECT_FALSE(m.has_exec());
}

}  // namespace
