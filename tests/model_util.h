// model_util.h — shared helpers of the tests/model_*.cpp files: tiny configs and batches.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "dsa/model.h"

namespace dsa::test_model {

// max |a[off_a + i] − b[off_b + i]| over n elements (at most what both hold), in double.
inline double max_diff(const std::vector<float>& a, const std::vector<float>& b, size_t off_a = 0, size_t off_b = 0,
                       size_t n = SIZE_MAX) {
  n = std::min(n, std::min(a.size() - off_a, b.size() - off_b));
  double d = 0;
  for (size_t i = 0; i < n; ++i) d = std::max(d, std::fabs(static_cast<double>(a[off_a + i]) - b[off_b + i]));
  return d;
}

// A very small config: every dimension distinct so a transposed index shows up as a shape error.
inline model::Config micro_config() {
  model::Config c;
  c.vocab_size = 13;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_hidden_layers = 2;
  c.first_k_dense_replace = 2;
  c.num_attention_heads = 2;
  c.q_lora_rank = 12;
  c.kv_lora_rank = 10;
  c.qk_nope_head_dim = 6;
  c.qk_rope_head_dim = 4;
  c.v_head_dim = 5;
  c.index_n_heads = 3;
  c.index_head_dim = 8;
  c.index_topk = 3;
  c.max_position_embeddings = 64;
  c.initializer_range = 0.5;   // large weights: gradients well above fp32 finite-difference noise
  return c;
}

// V3.2 record dims (kv_lora_rank 512, rope 64, index_head_dim 128) at a tiny width, for the
// paged bf16 / FP8 cache paths.
inline model::Config v32_record_config() {
  model::Config c;
  c.vocab_size = 40;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = 2;
  c.first_k_dense_replace = 2;
  c.num_attention_heads = 2;
  c.q_lora_rank = 24;
  c.kv_lora_rank = 512;
  c.qk_nope_head_dim = 16;
  c.qk_rope_head_dim = 64;
  c.v_head_dim = 16;
  c.index_n_heads = 2;
  c.index_head_dim = 128;
  c.index_topk = 8;
  c.max_position_embeddings = 512;
  c.initializer_range = 0.05;   // logits ≲ 1: cache-precision bounds stay meaningful
  return c;
}

// micro_config with DeepSeekMoE layers: layer 0 dense, layers 1 and 2 MoE with 8 routed experts in 4
// groups (2 kept per token), 2 experts per token, 1 shared expert, V3's noaux_tc sigmoid routing.
inline model::Config moe_config() {
  model::Config c = micro_config();
  c.num_hidden_layers = 3;
  c.first_k_dense_replace = 1;
  c.n_routed_experts = 8;
  c.n_shared_experts = 1;
  c.num_experts_per_tok = 2;
  c.moe_intermediate_size = 7;
  c.n_group = 4;
  c.topk_group = 2;
  c.routed_scaling_factor = 2.5;
  c.norm_topk_prob = true;
  c.scoring_func = "sigmoid";
  c.topk_method = "noaux_tc";
  return c;
}

// init_random, then a non-zero e_score_correction_bias (init_random leaves it 0) in every MoE layer.
inline void init_moe_model(model::Model& m, uint64_t seed, double bias_std = 0.3) {
  m.init_random(seed);
  std::mt19937_64 g(seed + 1);
  std::normal_distribution<double> nd(0.0, bias_std);
  for (auto& t : m.params())
    if (t.name.find("e_score_correction_bias") != std::string::npos)
      for (float& v : t.data) v = static_cast<float>(nd(g));
}

inline model::Batch random_batch(const model::Config& c, const std::vector<int>& lens, uint64_t seed) {
  std::mt19937_64 g(seed);
  std::uniform_int_distribution<int> tok(0, c.vocab_size - 1);
  model::Batch b;
  b.seq_lens = lens;
  for (int len : lens)
    for (int i = 0; i < len; ++i) {
      b.tokens.push_back(tok(g));
      b.targets.push_back(i % 5 == 4 ? -1 : tok(g));   // some unscored targets
    }
  return b;
}

inline std::vector<int32_t> random_tokens(int vocab, int n, uint64_t seed) {
  std::mt19937_64 g(seed);
  std::uniform_int_distribution<int> tok(0, vocab - 1);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = tok(g);
  return t;
}

}  // namespace dsa::test_model
