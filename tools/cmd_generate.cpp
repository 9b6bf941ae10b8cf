// `dsa generate -m DIR -p TEXT` — text generation with the inference Session (paged caches, chunked
// prefill, one-token decode), streaming the text as it is decoded and printing prefill and decode
// tokens/s to stderr. --speculative mtp drafts one token per step with the checkpoint's
// multi-token-prediction module and verifies it with a two-token step (greedy only; the same tokens as
// plain greedy decoding). Tokenizer: DIR/tokenizer.model (SentencePiece, from the training recipe) or one
// up to two levels above it when present, else bytes. DIR may be a model folder, a stage's `final`
// file, a stage folder or a run folder (dsa::train::resolve_checkpoint).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>

#include "command.h"
#include "device.h"
#include "dsa/model.h"
#include "dsa/tokenizer.h"
#include "dsa/train.h"
#include "selection_flags.h"

namespace {

const char* kUsage =
    "usage: dsa generate -m DIR -p TEXT [flags]\n"
    "  -m, --model DIR            model folder, a stage's `final` file, a stage or a run folder\n"
    "  -p, --prompt TEXT          the prompt (BOS is put first, as in training)\n"
    "  -n, --max-new-tokens N     tokens to generate (default 64; alias --max-new)\n"
    "  sampling:  --temperature T (default 0: greedy; alias --temp)  --top-k N (0: off)  --top-p P (0, 1]\n"
    "             -s, --seed N\n"
    "  attention: --mode dense|sparse|window (default sparse)  --attn-topk K (keys per query; default the config's)\n"
    "             --kv-cache fp32|bf16|fp8  --indexer fp8|fp32  --chunk N (prefill chunk; 0: one step)\n"
    "             --max-tokens N (cache capacity)\n"
    "  --numerics fp32|reference|auto  activation rounding (default auto: reference, bf16 between ops as in\n"
    "                             DeepSeek's reference inference, for a BF16 / FP8 checkpoint; else fp32)\n"
    "  --device cpu|cuda|cuda:N   where the session runs (default cpu): on a GPU the weights, the caches and\n"
    "                             every step stay in device memory\n"
    "  --speculative mtp          greedy speculative decoding: the checkpoint's MTP module drafts the token\n"
    "                             after next, one two-token step verifies it (accepted: two tokens per step);\n"
    "                             the output equals plain greedy decoding. Reports accepted / drafted\n"
    "  per-row k: --topk-policy fixed|mass|entropy|table --topk-p P --topk-min N --topk-max N --topk-a A\n"
    "             --topk-b B --topk-table K,K,… (sparse mode: each row keeps its own k <= --attn-topk)\n"
    "  -t, --threads N            OpenMP threads (default: every core; waits are passive)\n"
    "  --tokenizer SPEC           byte | FILE.model (default: found next to the model, else byte)\n"
    "  --no-stream                print the text once at the end instead of token by token\n"
    "  --random-prompt N          benchmark: N random token ids as the prompt, no text output\n"
    "  batches (one BatchSession: prompts prefilled one by one, then decoded together, one step per token):\n"
    "  --prompts FILE             one prompt per line; prints each completion after the run\n"
    "  --batch B                  with --random-prompt N: B random prompts of N tokens\n";

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

// Length of the longest prefix of s that ends on a whole UTF-8 character (a streamed piece may end
// inside one: its bytes are held back until the next token completes it).
size_t complete_utf8_prefix(const std::string& s) {
  size_t i = s.size(), back = 0;
  while (i > 0 && back < 4 && (static_cast<unsigned char>(s[i - 1]) & 0xC0) == 0x80) --i, ++back;
  if (i == 0) return s.size();
  const unsigned char lead = static_cast<unsigned char>(s[i - 1]);
  const size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
  return need > back + 1 ? i - 1 : s.size();
}

// Batched generation: every prompt prefilled into its own sequence of one BatchSession, then one
// decode step per new token for every sequence still generating (a sequence leaves when it reaches
// max_new tokens or, for text prompts, samples BOS / an id past the tokenizer).
int run_batch(const dsa::model::Model& m, const dsa::Tokenizer& tok, const std::vector<std::vector<int32_t>>& prompts,
              const std::vector<std::string>& lines, dsa::model::SessionOptions so, long long max_tokens_flag, int max_new,
              int chunk, const dsa::model::SamplerOptions& sp, uint64_t seed, const dsa::cli::BatchSessionOpener& open) {
  using Clock = std::chrono::steady_clock;
  const dsa::model::Config& c = m.config();
  long long pool = 0;   // every sequence's pages at its longest
  for (const auto& p : prompts)
    pool += (static_cast<long long>(p.size()) + max_new + dsa::kCachePageTokens - 1) / dsa::kCachePageTokens * dsa::kCachePageTokens;
  if (max_tokens_flag > 0 && max_tokens_flag < pool)
    throw dsa::Error("generate: --max-tokens " + std::to_string(max_tokens_flag) + " holds fewer than the " + std::to_string(pool) +
                     " cache slots the prompts and their new tokens need");
  if (pool > (1LL << 30)) throw dsa::Error("generate: the batch needs " + std::to_string(pool) + " cache slots, more than 2^30");
  so.max_tokens = static_cast<int>(max_tokens_flag > 0 ? max_tokens_flag : pool);
  for (const auto& p : prompts)
    if (static_cast<long long>(p.size()) + max_new > c.max_position_embeddings)
      throw dsa::Error("generate: a prompt of " + std::to_string(p.size()) + " tokens + " + std::to_string(max_new) +
                       " new ones exceeds max_position_embeddings = " + std::to_string(c.max_position_embeddings));
  const std::unique_ptr<dsa::model::BatchSession> held = open(m, so);
  dsa::model::BatchSession& s = *held;
  std::mt19937_64 rng(seed);
  const size_t B = prompts.size();
  std::vector<int> ids(B);
  std::vector<std::vector<int32_t>> out(B);
  std::vector<int32_t> next(B);
  std::vector<char> active(B, max_new > 0);
  long long prompt_tokens = 0, decoded = 0;
  const auto t0 = Clock::now();
  for (size_t b = 0; b < B; ++b) {
    ids[b] = s.add();
    prompt_tokens += static_cast<long long>(prompts[b].size());
    if (max_new == 0) continue;
    const auto logits = s.prefill(ids[b], prompts[b], chunk);
    next[b] = dsa::model::sample_token(logits.data(), c.vocab_size, sp, rng);
  }
  const auto t1 = Clock::now();
  const long long in_use = [&] {
    long long t = 0;
    for (size_t b = 0; b < B; ++b) t += s.length(ids[b]);
    return t;
  }();
  for (;;) {
    std::vector<int> step_ids;
    std::vector<int32_t> toks;
    std::vector<size_t> who;
    for (size_t b = 0; b < B; ++b) {
      if (!active[b]) continue;
      // text prompts stop at BOS or an id past the tokenizer; random-prompt benchmarks run max_new steps
      const bool stop = !lines.empty() && (next[b] >= tok.vocab_size() || next[b] == tok.bos_id());
      if (!stop) out[b].push_back(next[b]);
      if (stop || static_cast<int>(out[b].size()) >= max_new) {
        active[b] = 0;
        s.remove(ids[b]);   // leaves the batch: its pages go back to the pool
        continue;
      }
      step_ids.push_back(ids[b]);
      toks.push_back(next[b]);
      who.push_back(b);
    }
    if (step_ids.empty()) break;
    const auto logits = s.decode(step_ids, toks);
    decoded += static_cast<long long>(step_ids.size());
    for (size_t j = 0; j < who.size(); ++j)
      next[who[j]] = dsa::model::sample_token(logits.data() + j * c.vocab_size, c.vocab_size, sp, rng);
  }
  const auto t2 = Clock::now();
  for (size_t b = 0; b < B; ++b)
    if (!lines.empty()) std::printf("[%zu] %s%s\n", b, lines[b].c_str(), tok.decode(out[b]).c_str());
  const double pre_s = std::chrono::duration<double>(t1 - t0).count();
  const double dec_s = std::chrono::duration<double>(t2 - t1).count();
  std::fprintf(stderr, "batch of %zu: prefill %lld tokens in %.3f s (%.1f tok/s); decode %lld tokens in %.3f s (%.1f tok/s)\n", B,
               prompt_tokens, pre_s, prompt_tokens / std::max(pre_s, 1e-9), decoded, dec_s, decoded / std::max(dec_s, 1e-9));
  const long long per_token = s.cache_bytes_per_token();
  std::fprintf(stderr,
               "cache: %lld bytes per token (%lld per layer x %d layers); after prefill %lld tokens in use: %.2f MiB (pool %lld "
               "tokens: %.2f MiB)\n",
               per_token, per_token / c.num_hidden_layers, c.num_hidden_layers, in_use, per_token * static_cast<double>(in_use) / (1 << 20), static_cast<long long>(s.capacity()),
               per_token * static_cast<double>(s.capacity()) / (1 << 20));
  return 0;
}

int run_generate(const dsa::cli::Args& args) {
  using Clock = std::chrono::steady_clock;
  const dsa::cli::Flags f(args,
                          {"model", "prompt", "max-new", "max-new-tokens", "temperature", "temp", "top-p", "top-k", "seed", "mode",
                           "attn-topk", "topk", "kv-cache", "chunk", "max-tokens", "random-prompt", "tokenizer", "indexer", "threads",
                            "device", "prompts", "batch", "numerics", "speculative", "topk-policy", "topk-p", "topk-min", "topk-max", "topk-a", "topk-b", "topk-table"},
                          {"fp8-indexer", "no-stream"},
                          {{"-m", "model"}, {"-p", "prompt"}, {"-n", "max-new-tokens"}, {"-s", "seed"}, {"-t", "threads"}});
  if (f.has("topk"))
    throw dsa::Error("generate: --topk is ambiguous: --top-k N samples among the N likeliest tokens, --attn-topk K sets "
                     "the keys each query attends to");
  if (f.has("max-new") && f.has("max-new-tokens")) throw dsa::Error("generate: give -n/--max-new-tokens once (--max-new is its alias)");
  if (f.has("temp") && f.has("temperature")) throw dsa::Error("generate: give --temperature once (--temp is its alias)");
  // Every number is checked before the model is read.
  const int max_new = f.get_i32(f.has("max-new") ? "max-new" : "max-new-tokens", 64, 0, 1 << 24);
  dsa::model::SamplerOptions sp;
  sp.temperature = f.get_double(f.has("temp") ? "temp" : "temperature", 0.0, 0.0, 1e6);
  sp.top_p = f.get_double("top-p", 1.0, 0.0, 1.0);
  if (sp.top_p <= 0.0) throw dsa::Error("flag --top-p = " + f.get("top-p") + " must be in (0, 1]");
  sp.top_k = f.get_i32("top-k", 0, 0, 1 << 24);
  const long long seed = f.get_int("seed", 0, 0, LLONG_MAX);
  const int attn_topk = f.get_i32("attn-topk", 0, 0, 1 << 20);
  const int chunk = f.get_i32("chunk", 0, 0, 1 << 24);
  const int random_prompt = f.get_i32("random-prompt", 0, 0, 1 << 24);
  const long long max_tokens_flag = f.get_int("max-tokens", 0, 0, 1 << 30);
  const dsa::model::AttentionMode mode = parse_mode(f.get("mode", "sparse"));
  if (f.has("kv-cache")) parse_cache(f.get("kv-cache"));
  dsa::cli::apply_threads(f);
  const dsa::cli::SessionOpener open_session = dsa::cli::parse_session_device(f.get("device", "cpu"), "generate");
  const int batch = f.get_i32("batch", 0, 1, 1 << 16);
  if (f.has("batch") && random_prompt == 0) throw dsa::Error("generate: --batch B needs --random-prompt N (or give --prompts FILE)");
  if (f.has("prompts") && (f.has("prompt") || random_prompt > 0))
    throw dsa::Error("generate: give one of -p/--prompt, --prompts FILE and --random-prompt N");
  const bool batched = f.has("prompts") || f.has("batch");
  if (random_prompt == 0 && !f.has("prompt") && !f.has("prompts"))
    throw dsa::Error("missing required flag -p/--prompt (or --prompts FILE, or --random-prompt N)");
  const bool speculative = f.has("speculative");
  if (speculative && f.get("speculative") != "mtp")
    throw dsa::Error("generate: --speculative must be mtp, not '" + f.get("speculative") + "'");
  if (speculative && !(sp.temperature == 0.0 || sp.top_k == 1))
    throw dsa::Error("generate: --speculative mtp is greedy only (--temperature 0 or --top-k 1)");
  if (speculative && batched) throw dsa::Error("generate: --speculative mtp runs one prompt (not --prompts / --batch)");
  std::vector<std::string> prompt_lines;
  if (f.has("prompts")) {   // read before the model: a bad file is refused first
    std::ifstream in(f.get("prompts"));
    if (!in) throw dsa::Error("generate: --prompts " + f.get("prompts") + ": cannot be read");
    for (std::string line; std::getline(in, line);)
      if (!line.empty()) prompt_lines.push_back(line);
    if (prompt_lines.empty()) throw dsa::Error("generate: --prompts " + f.get("prompts") + " holds no prompt (one per line)");
  }

  const std::string dir = dsa::train::resolve_checkpoint(f.require("model"));
  const dsa::model::Model m = dsa::model::Model::load(dir);
  const dsa::model::Config& c = m.config();
  if (speculative && c.num_nextn_predict_layers < 1)
    throw dsa::Error("generate: --speculative mtp needs a checkpoint with a multi-token-prediction module; " + dir +
                     " has num_nextn_predict_layers = 0");
  if (sp.top_k > c.vocab_size)
    throw dsa::Error("flag --top-k = " + std::to_string(sp.top_k) + " exceeds the model's vocab_size " + std::to_string(c.vocab_size));
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
    throw dsa::Error("generate: tokenizer vocabulary " + std::to_string(tok->vocab_size()) + " exceeds the model's vocab_size " +
                     std::to_string(c.vocab_size));
  std::vector<int32_t> prompt;
  if (batched) {
    std::vector<std::vector<int32_t>> prompts;
    std::mt19937_64 g(1);
    std::uniform_int_distribution<int> id(0, std::min(tok->vocab_size(), c.vocab_size) - 1);
    for (int b = 0; b < (prompt_lines.empty() ? batch : static_cast<int>(prompt_lines.size())); ++b) {
      if (!prompt_lines.empty()) {
        prompts.push_back(dsa::encode_prompt(*tok, prompt_lines[b]));
      } else {
        prompts.emplace_back();
        for (int i = 0; i < random_prompt; ++i) prompts.back().push_back(id(g));
      }
    }
    dsa::model::SessionOptions so;
    so.mode = mode;
    so.topk = attn_topk;
    if (f.has("kv-cache")) so.kv_format = parse_cache(f.get("kv-cache"));
    const std::string idx = f.get("indexer", c.index_head_dim == dsa::kIndexerKeyDim ? "fp8" : "fp32");
    if (idx != "fp8" && idx != "fp32") throw dsa::Error("generate: --indexer must be fp8 or fp32, not '" + idx + "'");
    so.indexer_precision = idx == "fp8" ? dsa::Precision::kFp8 : dsa::Precision::kFp32;
    so.selection = dsa::cli::parse_selection_policy(f, "generate");
    so.numerics = dsa::model::parse_numerics(f.get("numerics", "auto"));
    return run_batch(m, *tok, prompts, prompt_lines, so, max_tokens_flag, max_new, chunk, sp, static_cast<uint64_t>(seed),
                     dsa::cli::parse_batch_session_device(f.get("device", "cpu"), "generate"));
  }
  if (random_prompt > 0) {   // benchmarking: N random ids
    std::mt19937_64 g(1);
    std::uniform_int_distribution<int> id(0, std::min(tok->vocab_size(), c.vocab_size) - 1);
    for (int i = 0; i < random_prompt; ++i) prompt.push_back(id(g));
  } else {
    prompt = dsa::encode_prompt(*tok, f.require("prompt"));
  }
  dsa::model::SessionOptions so;
  so.mode = mode;
  so.topk = attn_topk;
  so.selection = dsa::cli::parse_selection_policy(f, "generate");
  so.numerics = dsa::model::parse_numerics(f.get("numerics", "auto"));
  so.mtp = speculative;
  if (f.has("kv-cache")) so.kv_format = parse_cache(f.get("kv-cache"));   // else the config's (SessionOptions)
  // The indexer runs FP8 in inference (V3.2) whenever its record fits (index_head_dim 128).
  const std::string idx = f.has("fp8-indexer") ? "fp8" : f.get("indexer", c.index_head_dim == dsa::kIndexerKeyDim ? "fp8" : "fp32");
  if (idx != "fp8" && idx != "fp32") throw dsa::Error("generate: --indexer must be fp8 or fp32, not '" + idx + "'");
  so.indexer_precision = idx == "fp8" ? dsa::Precision::kFp8 : dsa::Precision::kFp32;
  const long long need = static_cast<long long>(prompt.size()) + max_new + 1;
  so.max_tokens = static_cast<int>(max_tokens_flag > 0 ? max_tokens_flag : std::min<long long>(need, 1 << 30));
  if (so.max_tokens < static_cast<long long>(prompt.size()) + max_new)
    throw dsa::Error("generate: --max-tokens " + std::to_string(so.max_tokens) + " holds fewer than the prompt's " +
                     std::to_string(prompt.size()) + " tokens + " + std::to_string(max_new) + " new ones");
  const std::unique_ptr<dsa::model::Session> held = open_session(m, so);
  dsa::model::Session& session = *held;
  std::mt19937_64 rng(static_cast<uint64_t>(seed));

  const bool text = random_prompt == 0, stream = text && !f.has("no-stream");
  std::string shown;   // the generated text printed so far
  auto show = [&](const std::vector<int32_t>& out, bool last) {
    const std::string all = tok->decode(out);
    const size_t upto = last ? all.size() : complete_utf8_prefix(all);
    if (upto > shown.size() && all.compare(0, shown.size(), shown) == 0) {
      std::fwrite(all.data() + shown.size(), 1, upto - shown.size(), stdout);
      std::fflush(stdout);
      shown = all.substr(0, upto);
    }
  };
  if (stream) {
    std::printf("%s", f.require("prompt").c_str());
    std::fflush(stdout);
  }
  const auto t0 = Clock::now();
  std::vector<float> logits = max_new > 0 ? session.prefill(prompt, chunk) : std::vector<float>{};
  const auto t1 = Clock::now();
  std::vector<int32_t> out;
  size_t decoded = 0;   // tokens fed back and kept in the cache (the last sampled token is not)
  size_t drafted = 0, accepted = 0, main_steps = 0;   // --speculative mtp
  const auto stops = [&](int32_t t) { return text && (t >= tok->vocab_size() || t == tok->bos_id()); };
  const auto pick = [&](const float* row) { return dsa::model::sample_token(row, c.vocab_size, sp, rng); };
  int32_t next = max_new > 0 ? pick(logits.data()) : 0;
  while (static_cast<int>(out.size()) < max_new && !stops(next)) {
    out.push_back(next);
    if (stream) show(out, false);
    const int left = max_new - static_cast<int>(out.size());
    if (left == 0) break;
    ++main_steps;
    if (speculative && left >= 2) {
      // draft the token after `next`, verify both in one step: row 0 predicts what follows `next`
      const std::vector<float> d_logits = session.draft(next);
      const int32_t draft = pick(d_logits.data());
      ++drafted;
      const std::vector<float> rows = session.decode2(next, draft);
      const int32_t verified = pick(rows.data());
      if (verified == draft) {
        ++accepted;
        decoded += 2;
        if (stops(draft)) break;
        out.push_back(draft);
        if (stream) show(out, false);
        next = pick(rows.data() + c.vocab_size);
      } else {
        session.truncate(session.length() - 1);   // drop the rejected draft
        ++decoded;
        next = verified;
      }
      continue;
    }
    logits = session.decode(next);
    ++decoded;
    next = pick(logits.data());
  }
  const auto t2 = Clock::now();
  if (stream) {
    show(out, true);
    std::printf("\n");
  } else if (text) {
    std::printf("%s%s\n", f.require("prompt").c_str(), tok->decode(out).c_str());
  }
  const double pre_s = std::chrono::duration<double>(t1 - t0).count();
  const double dec_s = std::chrono::duration<double>(t2 - t1).count();
  std::fprintf(stderr, "prefill: %zu tokens in %.3f s (%.1f tok/s); decode: %zu tokens in %.3f s (%.1f tok/s)\n", prompt.size(), pre_s,
               prompt.size() / std::max(pre_s, 1e-9), decoded, dec_s, decoded / std::max(dec_s, 1e-9));
  const long long per_token = session.cache_bytes_per_token();
  // with --speculative mtp: one more layer (the MTP module's) and the main model's final hidden state
  const long long hidden_bytes = speculative ? static_cast<long long>(c.hidden_size) * sizeof(float) : 0;
  const int layers = c.num_hidden_layers + (speculative ? 1 : 0);
  std::fprintf(stderr, "cache: %lld bytes per token (%lld per layer x %d layers%s), %lld tokens in use: %.2f MiB (capacity %lld tokens: %.2f MiB)\n",
               per_token, (per_token - hidden_bytes) / layers, layers, speculative ? " incl. the MTP layer, + its hidden-state input" : "",
               static_cast<long long>(session.length()), per_token * static_cast<double>(session.length()) / (1 << 20),
               static_cast<long long>(session.capacity()), per_token * static_cast<double>(session.capacity()) / (1 << 20));
  if (speculative) {
    const size_t after_first = out.empty() ? 0 : out.size() - 1;   // the tokens the decode steps produced
    std::fprintf(stderr, "speculative (mtp): accepted %zu of %zu drafts (%.1f%%); %zu tokens in %zu main steps (%.2f per step)\n",
                 accepted, drafted, 100.0 * static_cast<double>(accepted) / static_cast<double>(std::max<size_t>(drafted, 1)),
                 after_first, main_steps, static_cast<double>(after_first) / static_cast<double>(std::max<size_t>(main_steps, 1)));
  }
  if (mode == dsa::model::AttentionMode::kSparse)
    std::fprintf(stderr, "attended keys per query row and layer: %.2f (%s)\n", session.mean_selected_keys(),
                 dsa::model::describe(so.selection).c_str());
  std::fprintf(stderr, "numerics: %s (weights stored as %s)\n", dsa::model::numerics_name(session.options().numerics),
               dsa::model::weight_dtype_name(m.weight_dtype()));
  return 0;
}

const dsa::cli::Register kGenerate("generate", "generate text from a model: -m DIR -p TEXT [-n N] (dsa generate --help)", run_generate,
                                   kUsage);

}  // namespace
