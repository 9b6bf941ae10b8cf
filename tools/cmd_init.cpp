// `dsa init --config FILE --out DIR [--seed N] [--bf16]` — a randomly initialised DeepSeek-V3.2 model
// (config.json + model.safetensors with Hugging Face tensor names), written atomically.
#include <cstdio>

#include "command.h"
#include "dsa/model.h"

namespace {
const dsa::cli::Register kInit(
    "init", "create a randomly initialised model: --config FILE --out DIR [--seed N] [--bf16]",
    [](const dsa::cli::Args& args) {
      const dsa::cli::Flags f(args, {"config", "out", "seed"}, {"bf16"}, {{"-o", "out"}, {"-s", "seed"}});
      const long long seed = f.get_int("seed", 0, 0, LLONG_MAX);
      const std::string out = f.require("out");
      const dsa::model::Config cfg = dsa::model::Config::from_json_file(f.require("config"));
      dsa::model::Model m(cfg);
      m.init_random(static_cast<uint64_t>(seed));
      m.save(f.require("out"), f.has("bf16") ? dsa::model::Model::SaveDtype::kBf16 : dsa::model::Model::SaveDtype::kF32);
      std::printf("wrote %s: %lld parameters, %d layers\n", f.require("out").c_str(),
                  static_cast<long long>(cfg.num_params()), cfg.num_hidden_layers);
      return 0;
    },
    "usage: dsa init --config FILE -o/--out DIR [-s/--seed N] [--bf16]\n"
    "  a random model from a Hugging Face style DeepSeek-V3.2 config.json: DIR gets config.json and\n"
    "  model.safetensors (F32, or BF16 with --bf16), written atomically\n");
}  // namespace
