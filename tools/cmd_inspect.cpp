// `dsa inspect DIR` — summary of a checkpoint: config, parameter counts (indexer separately), the
// tensors of every safetensors file with dtype and shape, and weight statistics.
// `dsa inspect --config FILE` — what a config.json describes, without weights: layers (dense / MoE),
// parameter counts (total and activated per token, MTP modules), inference cache bytes per token,
// FP8 block quantisation. Any valid config, MoE included (the official DeepSeek-V3.2 one).
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>

#include "command.h"
#include "dsa/model.h"
#include "dsa/safetensors.h"
#include "dsa/train.h"

namespace {

std::string billions(int64_t n) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%lld (%.2fB)", static_cast<long long>(n), static_cast<double>(n) / 1e9);
  return buf;
}

int inspect_config(const std::string& path) {
  const dsa::model::Config c = dsa::model::Config::from_json_file(path);
  const dsa::model::Config::ParamCounts p = c.param_counts();
  const dsa::model::InferenceCacheBytes cache = dsa::model::inference_cache_bytes(c);
  std::printf("config: %s\n", path.c_str());
  std::printf("model type: DeepSeek-V3.2 (MLA + lightning indexer%s)\n", p.moe_layers > 0 ? " + DeepSeekMoE" : ", dense MLP");
  std::printf("layers: %d (%d dense, %d MoE)\n", c.num_hidden_layers, p.dense_layers, p.moe_layers);
  std::printf("attention: %d heads, q_lora_rank %d, kv_lora_rank %d, qk %d + %d, v %d; indexer %d heads x %d, top-%d\n",
              c.num_attention_heads, c.q_lora_rank, c.kv_lora_rank, c.qk_nope_head_dim, c.qk_rope_head_dim, c.v_head_dim,
              c.index_n_heads, c.index_head_dim, c.index_topk);
  if (c.n_routed_experts > 0)
    std::printf("experts: %d routed + %d shared of width %d, %d per token, %s routing (%s, %d of %d groups, scale %g%s)\n",
                c.n_routed_experts, c.n_shared_experts, c.moe_intermediate_size, c.num_experts_per_tok, c.topk_method.c_str(),
                c.scoring_func.c_str(), c.topk_group, c.n_group, c.routed_scaling_factor, c.norm_topk_prob ? ", normalised" : "");
  std::printf("parameters: %s total = main %s + MTP %s\n", billions(p.total).c_str(), billions(p.main).c_str(), billions(p.mtp).c_str());
  std::printf("  main: embedding %s, lm_head %s, attention %s, indexer %s, dense MLP %s, MoE %s\n", billions(p.embedding).c_str(),
              billions(p.lm_head).c_str(), billions(p.attention).c_str(), billions(p.indexer).c_str(), billions(p.dense_mlp).c_str(),
              billions(p.moe).c_str());
  if (p.mtp_layers > 0)
    std::printf("  stored in a full checkpoint: %s (the MTP modules' copies of embed_tokens and lm_head: %s)\n",
                billions(p.stored).c_str(), billions(p.mtp_stored_copies).c_str());
  std::printf("activated per token: %s (main %s + MTP %s)\n", billions(p.activated).c_str(), billions(p.main_activated).c_str(),
              billions(p.mtp_activated).c_str());
  std::printf("MTP layers: %d\n", c.num_nextn_predict_layers);
  std::printf("cache bytes per token: %lld per layer (MLA %lld %s + indexer %lld %s) x %d layers = %lld\n",
              static_cast<long long>(cache.per_layer), static_cast<long long>(cache.mla_per_layer),
              cache.fp8_mla ? "FP8 record" : "fp32 latent", static_cast<long long>(cache.indexer_per_layer),
              cache.fp8_indexer ? "FP8 record" : "fp32 key", c.num_hidden_layers, static_cast<long long>(cache.per_token));
  if (c.quantization.present)
    std::printf("quantization: %s %s weights, %d x %d blocks, %s activations, %s scales\n", c.quantization.quant_method.c_str(),
                c.quantization.fmt.c_str(), c.quantization.block_rows, c.quantization.block_cols, c.quantization.activation_scheme.c_str(),
                c.quantization.scale_fmt.empty() ? "fp32" : c.quantization.scale_fmt.c_str());
  else
    std::printf("quantization: none\n");
  return 0;
}

const dsa::cli::Register kInspect(
    "inspect", "print a summary of a model directory: inspect DIR [--tensors] | inspect --config FILE",
    [](const dsa::cli::Args& args) {
      const dsa::cli::Flags f(args, {"config"}, {"tensors"}, {}, 1);
      if (f.has("config")) {
        if (!f.positional().empty() || f.has("tensors"))
          throw dsa::Error("inspect: --config FILE takes no model directory and no --tensors (dsa inspect --help)");
        return inspect_config(f.require("config"));
      }
      if (f.positional().size() != 1) throw dsa::Error("inspect: expected one model directory (dsa inspect --help)");
      const std::string dir = dsa::train::resolve_checkpoint(f.positional()[0]);
      if (dir != f.positional()[0]) std::printf("checkpoint: %s\n", dir.c_str());
      for (const auto& e : std::filesystem::directory_iterator(dir)) {
        if (e.path().extension() != ".safetensors") continue;
        const auto file = dsa::safetensors::File::open(e.path().string());
        std::printf("%s: %zu tensors\n", e.path().filename().c_str(), file.tensors().size());
        if (f.has("tensors"))
          for (const auto& t : file.tensors()) {
            std::string shape;
            for (auto s : t.shape) shape += (shape.empty() ? "" : ", ") + std::to_string(s);
            std::printf("  %-60s %-8s [%s]\n", t.name.c_str(), dsa::safetensors::dtype_name(t.dtype), shape.c_str());
          }
      }
      const dsa::model::Model m = dsa::model::Model::load(dir);
      const dsa::model::Config& c = m.config();
      std::printf("%s", c.to_json().c_str());
      long long total = 0, indexer = 0;
      double sq = 0.0;
      for (const auto& t : m.params()) {
        total += t.numel();
        if (dsa::model::Model::is_indexer_param(t.name)) indexer += t.numel();
        for (float v : t.data) sq += static_cast<double>(v) * v;
      }
      std::printf("parameters: %lld (indexer %lld, %.2f%%)\n", total, indexer, 100.0 * indexer / total);
      if (m.first_mtp_param() < m.params().size()) {
        long long mtp = 0;
        for (size_t i = m.first_mtp_param(); i < m.params().size(); ++i) mtp += m.params()[i].numel();
        std::printf("of which MTP modules: %lld (drafts for dsa generate --speculative mtp)\n", mtp);
      }
      std::printf("weights rms: %.6g\n", std::sqrt(sq / static_cast<double>(total)));
      std::printf("softmax scale: %.6g; attention: MLA (kv_lora_rank %d) + lightning indexer (%d heads x %d, top-%d)\n",
                  c.softmax_scale(), c.kv_lora_rank, c.index_n_heads, c.index_head_dim, c.index_topk);
      return 0;
    },
    "usage: dsa inspect DIR [--tensors]\n"
    "       dsa inspect --config FILE\n"
    "  config, parameter counts and weight statistics of a model; --tensors lists every tensor.\n"
    "  DIR: a model folder, a stage's `final` file, a stage folder or a run folder (its last stage's final)\n"
    "  --config FILE: a config.json alone (MoE configs included, e.g. DeepSeek-V3.2's): layers, parameters\n"
    "  total and activated per token, MTP modules, cache bytes per token, FP8 quantisation; no weights read\n");
}  // namespace
