// `dsa inspect DIR` — summary of a checkpoint: config, parameter counts (indexer separately), the
// tensors of every safetensors file with dtype and shape, and weight statistics.
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "command.h"
#include "dsa/model.h"
#include "dsa/safetensors.h"
#include "dsa/train.h"

namespace {
const dsa::cli::Register kInspect(
    "inspect", "print a summary of a model directory: inspect DIR [--tensors]", [](const dsa::cli::Args& args) {
      const dsa::cli::Flags f(args, {}, {"tensors"}, {}, 1);
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
      std::printf("weights rms: %.6g\n", std::sqrt(sq / static_cast<double>(total)));
      std::printf("softmax scale: %.6g; attention: MLA (kv_lora_rank %d) + lightning indexer (%d heads x %d, top-%d)\n",
                  c.softmax_scale(), c.kv_lora_rank, c.index_n_heads, c.index_head_dim, c.index_topk);
      return 0;
    },
    "usage: dsa inspect DIR [--tensors]\n"
    "  config, parameter counts and weight statistics of a model; --tensors lists every tensor.\n"
    "  DIR: a model folder, a stage's `final` file, a stage folder or a run folder (its last stage's final)\n");
}  // namespace
