// `dsa eval` — evaluates a run: PPL dense vs DSA at several k, indexer recall, passkey retrieval
// (dense / DSA / sliding window), long-context speed; prints the table, writes run/eval/*.
#include <cstdio>
#include <filesystem>
#include <sstream>

#include "command.h"
#include "device.h"
#include "dsa/ops.h"
#include "dsa/tokenizer.h"
#include "dsa/train.h"
#include "run_data.h"

namespace fs = std::filesystem;

namespace {

std::vector<int> int_list(const std::string& flag, const std::string& s) {
  std::vector<int> out;
  for (const auto& p : dsa::cli::split_list(s)) out.push_back(static_cast<int>(dsa::cli::parse_int("flag --" + flag + " item", p, 1, 1 << 24)));
  if (out.empty()) throw dsa::Error("flag --" + flag + " lists no value");
  return out;
}

const char* kUsage =
    "usage: dsa eval --run DIR [flags]\n"
    "  --checkpoint CKPT (default: the sparse stage's final)  --baseline CKPT (dense; default pretrain's final)\n"
    "  -o, --out DIR (default DIR/eval)  --topk K  --seq-len N  --val-sequences N  --ks K,K,…\n"
    "  --passkey-lengths N,N,…  --trials N (per length, depth and mode)  -s, --seed N\n"
    "  --speed-context N  --decode-tokens N  --prefill-chunk N  --speed-threads N (default 1)\n"
    "  --data PATH,…  --tokenizer SPEC  --holdout SUBSTR,…  -t, --threads N  --no-plots\n"
    "  --device cpu|cuda|cuda:N (PPL and passkey passes; default cpu)\n"
    "  --dynamic-k (per-row k: fixed k vs the mass, per-layer table and fitted entropy policies at matched\n"
    "  average budgets; PPL, recall, passkey, k per layer, speed; dynamic_k.csv, ppl_vs_avg_k.png)\n"
    "  PPL comes with a 95% confidence interval over the validation sequences, passkey accuracy with a\n"
    "  95% Wilson interval over its trials.\n";

int run_eval(const dsa::cli::Args& args) {
  dsa::cli::Flags f(args,
                    {"run", "checkpoint", "baseline", "topk", "seq-len", "val-sequences", "ks", "passkey-lengths", "trials", "speed-context",
                     "decode-tokens", "prefill-chunk", "speed-threads", "data", "tokenizer", "holdout", "threads", "seed", "device", "out"},
                    {"no-plots", "dynamic-k"}, {{"-o", "out"}, {"-s", "seed"}, {"-t", "threads"}});
  dsa::train::EvalOptions o;
  o.run_dir = f.require("run");
  if (!fs::is_directory(o.run_dir)) throw dsa::Error("eval: --run folder " + o.run_dir + " does not exist");
  o.checkpoint = f.has("checkpoint") ? dsa::train::resolve_checkpoint(f.get("checkpoint")) : "";
  o.baseline = f.has("baseline") ? dsa::train::resolve_checkpoint(f.get("baseline")) : "";
  o.out_dir = f.get("out", "");
  o.topk = f.get_i32("topk", 0, 0, 1 << 24);
  o.seq_len = f.get_i32("seq-len", 0, 0, 1 << 24);
  o.val_sequences = f.get_i32("val-sequences", o.val_sequences, 1, 1 << 20);
  if (f.has("ks")) o.ks = int_list("ks", f.get("ks"));
  if (f.has("passkey-lengths")) o.passkey_lengths = int_list("passkey-lengths", f.get("passkey-lengths"));
  o.passkey_trials = f.get_i32("trials", o.passkey_trials, 1, 1 << 20);
  o.speed_context = f.get_i32("speed-context", 0, 0, 1 << 24);
  o.decode_tokens = f.get_i32("decode-tokens", o.decode_tokens, 1, 1 << 20);
  o.prefill_chunk = f.get_i32("prefill-chunk", o.prefill_chunk, 0, 1 << 24);
  o.speed_threads = f.get_i32("speed-threads", o.speed_threads, 0, 4096);
  o.seed = static_cast<uint64_t>(f.get_int("seed", static_cast<long long>(o.seed), 0, LLONG_MAX));
  o.plots = !f.has("no-plots");
  o.dynamic_k = f.has("dynamic-k");
  o.attach_device = dsa::cli::parse_device(f.get("device", "cpu"), "eval");
  const auto data = dsa::cli::run_data(f, o.run_dir);
  const auto tok = dsa::load_tokenizer(data.tokenizer);
  const auto corpus = dsa::train::load_corpus(data, (fs::path(o.run_dir) / "tokens").string());
  const auto report = dsa::train::evaluate_run(o, corpus, *tok);
  const std::string out = o.out_dir.empty() ? (fs::path(o.run_dir) / "eval").string() : o.out_dir;
  std::printf("%s", dsa::train::format_report(report).c_str());
  std::printf("  (tables: %s/*.csv, plots: %s/*.png)\n", out.c_str(), out.c_str());
  return 0;
}

const dsa::cli::Register kEval("eval", "evaluate a trained run: PPL dense vs DSA, recall, passkey, speed", run_eval, kUsage);

}  // namespace
