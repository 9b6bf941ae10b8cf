// `dsa generate --model DIR --prompt TEXT` — text generation with the inference Session (paged
// caches, chunked prefill, one-token decode), printing prefill and decode tokens/s. Tokenizer:
// DIR/tokenizer.model (SentencePiece, from the training recipe) when present, else bytes.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <algorithm>
#include <random>

#include "command.h"
#include "dsa/model.h"
#include "dsa/tokenizer.h"

namespace {

dsa::model::AttentionMode parse_mode(const std::string& s) {
  if (s == "dense") return dsa::model::AttentionMode::kDense;
  if (s == "sparse" || s == "dsa") return dsa::model::AttentionMode::kSparse;
  if (s == "window") return dsa::model::AttentionMode::kWindow;
  throw dsa::Error("generate: --mode must be dense, sparse or window, not '" + s + "'");
}

dsa::KvCacheFormat parse_cache(const std::string& s) {
  if (s == "fp32") return dsa::KvCacheFormat::kFp32;
  if (s == "bf16") return dsa::KvCacheFormat::kBf16;
  if (s == "fp8") return dsa::KvCacheFormat::kFp8Record;
  throw dsa::Error("generate: --kv-cache must be fp32, bf16 or fp8, not '" + s + "'");
}

const dsa::cli::Register kGenerate(
    "generate",
    "generate text: --model DIR --prompt TEXT [--max-new N] [--temperature T] [--top-p P] [--seed S] "
    "[--mode dense|sparse|window] [--topk K] [--kv-cache fp32|bf16|fp8] [--indexer fp8|fp32] [--chunk N] [--tokenizer SPEC] "
    "[--random-prompt N]",
    [](const dsa::cli::Args& args) {
      using Clock = std::chrono::steady_clock;
      const dsa::cli::Flags f(args,
                              {"model", "prompt", "max-new", "temperature", "top-p", "seed", "mode", "topk", "kv-cache",
                               "chunk", "max-tokens", "random-prompt", "tokenizer", "indexer"},
                              {"fp8-indexer"});
      const std::string dir = f.require("model");
      const dsa::model::Model m = dsa::model::Model::load(dir);
      const dsa::model::Config& c = m.config();
      // --tokenizer SPEC wins; else the training recipe's tokenizer.model in DIR or up to two levels
      // above it (run/tokenizer.model next to run/<stage>/ckpt-N); else bytes.
      std::string spec = f.get("tokenizer", "");
      if (spec.empty()) {
        spec = "byte";
        std::filesystem::path p = std::filesystem::absolute(dir);
        for (int up = 0; up < 3; ++up, p = p.parent_path())
          if (std::filesystem::exists(p / "tokenizer.model")) {
            spec = (p / "tokenizer.model").string();
            break;
          }
      }
      std::unique_ptr<dsa::Tokenizer> tok = dsa::load_tokenizer(spec);
      if (tok->vocab_size() > c.vocab_size)
        throw dsa::Error("generate: tokenizer vocabulary " + std::to_string(tok->vocab_size()) +
                         " exceeds the model's vocab_size " + std::to_string(c.vocab_size));
      std::vector<int32_t> prompt;
      const long long random_prompt = f.get_int("random-prompt", 0);   // benchmarking: N random ids
      if (random_prompt > 0) {
        std::mt19937_64 g(1);
        std::uniform_int_distribution<int> id(0, std::min(tok->vocab_size(), c.vocab_size) - 1);
        for (long long i = 0; i < random_prompt; ++i) prompt.push_back(id(g));
      } else {
        prompt = tok->encode(f.require("prompt"));
        prompt.insert(prompt.begin(), tok->bos_id());
      }
      const int max_new = static_cast<int>(f.get_int("max-new", 64));
      dsa::model::SessionOptions so;
      so.mode = parse_mode(f.get("mode", "sparse"));
      so.topk = static_cast<int>(f.get_int("topk", 0));
      const bool v32 = c.kv_lora_rank == dsa::kMlaLatentDim && c.qk_rope_head_dim == dsa::kMlaRopeDim;
      so.kv_format = parse_cache(f.get("kv-cache", v32 ? "bf16" : "fp32"));
      // The indexer runs FP8 in inference (V3.2) whenever its record fits (index_head_dim 128).
      const std::string idx = f.has("fp8-indexer") ? "fp8" : f.get("indexer", c.index_head_dim == dsa::kIndexerKeyDim ? "fp8" : "fp32");
      if (idx != "fp8" && idx != "fp32") throw dsa::Error("generate: --indexer must be fp8 or fp32, not '" + idx + "'");
      so.indexer_precision = idx == "fp8" ? dsa::Precision::kFp8 : dsa::Precision::kFp32;
      so.max_tokens = static_cast<int>(f.get_int("max-tokens", static_cast<long long>(prompt.size()) + max_new + 1));
      dsa::model::Session session(m, so);
      dsa::model::SamplerOptions sp;
      sp.temperature = f.get_double("temperature", 0.0);
      sp.top_p = f.get_double("top-p", 1.0);
      std::mt19937_64 rng(static_cast<uint64_t>(f.get_int("seed", 0)));

      const auto t0 = Clock::now();
      std::vector<float> logits = session.prefill(prompt, static_cast<int>(f.get_int("chunk", 0)));
      const auto t1 = Clock::now();
      std::vector<int32_t> out;
      size_t decoded = 0;   // decode steps run (the last sampled token is not fed back)
      for (int i = 0; i < max_new; ++i) {
        const int32_t next = dsa::model::sample_token(logits.data(), c.vocab_size, sp, rng);
        if (random_prompt <= 0 && (next >= tok->vocab_size() || next == tok->bos_id())) break;
        out.push_back(next);
        if (i + 1 < max_new) {
          logits = session.decode(next);
          ++decoded;
        }
      }
      const auto t2 = Clock::now();
      const double pre_s = std::chrono::duration<double>(t1 - t0).count();
      const double dec_s = std::chrono::duration<double>(t2 - t1).count();
      if (random_prompt <= 0) std::printf("%s%s\n", f.require("prompt").c_str(), tok->decode(out).c_str());
      std::fprintf(stderr, "prefill: %zu tokens in %.3f s (%.1f tok/s); decode: %zu tokens in %.3f s (%.1f tok/s)\n",
                   prompt.size(), pre_s, prompt.size() / std::max(pre_s, 1e-9), decoded, dec_s,
                   decoded / std::max(dec_s, 1e-9));
      std::fprintf(stderr, "cache: %lld bytes per token (all layers)\n",
                   static_cast<long long>(session.cache_bytes_per_token()));
      return 0;
    });

}  // namespace
