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
  for (const auto& p : dsa::cli::split_list(s)) {
    size_t used = 0;
    int v = 0;
    try {
      v = std::stoi(p, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != p.size() || v <= 0) throw dsa::Error("flag --" + flag + " expects positive integers, got \"" + p + "\"");
    out.push_back(v);
  }
  return out;
}

int run_eval(const dsa::cli::Args& args) {
  if (!args.empty() && args[0] == "--help") {
    std::printf(
        "usage: dsa eval --run DIR [--checkpoint CKPT] [--baseline CKPT] [--topk K] [--seq-len N] [--val-sequences N]\n"
        "                [--ks K,K,…] [--passkey-lengths N,N,…] [--trials N] [--speed-context N] [--decode-tokens N]\n"
        "                [--prefill-chunk N] [--speed-threads N (default 1)]\n"
        "                [--data PATH,…] [--tokenizer SPEC] [--holdout SUBSTR,…] [--threads N] [--no-plots]\n"
        "                [--device cpu|cuda|cuda:N (PPL and passkey passes; default cpu)]\n");
    return 0;
  }
  dsa::cli::Flags f(args,
                    {"run", "checkpoint", "baseline", "topk", "seq-len", "val-sequences", "ks", "passkey-lengths", "trials", "speed-context",
                     "decode-tokens", "prefill-chunk", "speed-threads", "data", "tokenizer", "holdout", "threads", "seed", "device"},
                    {"no-plots"});
  if (!f.positional().empty()) throw dsa::Error("eval: unexpected argument \"" + f.positional()[0] + "\"");
  dsa::train::EvalOptions o;
  o.run_dir = f.require("run");
  if (!fs::is_directory(o.run_dir)) throw dsa::Error("eval: --run folder " + o.run_dir + " does not exist");
  o.checkpoint = f.get("checkpoint", "");
  o.baseline = f.get("baseline", "");
  o.topk = static_cast<int>(f.get_int("topk", 0));
  o.seq_len = static_cast<int>(f.get_int("seq-len", 0));
  o.val_sequences = static_cast<int>(f.get_int("val-sequences", o.val_sequences));
  if (f.has("ks")) o.ks = int_list("ks", f.get("ks"));
  if (f.has("passkey-lengths")) o.passkey_lengths = int_list("passkey-lengths", f.get("passkey-lengths"));
  o.passkey_trials = static_cast<int>(f.get_int("trials", o.passkey_trials));
  if (o.passkey_trials <= 0) throw dsa::Error("eval: --trials must be > 0");
  o.speed_context = static_cast<int>(f.get_int("speed-context", 0));
  o.decode_tokens = static_cast<int>(f.get_int("decode-tokens", o.decode_tokens));
  o.prefill_chunk = static_cast<int>(f.get_int("prefill-chunk", o.prefill_chunk));
  o.speed_threads = static_cast<int>(f.get_int("speed-threads", o.speed_threads));
  o.seed = static_cast<uint64_t>(f.get_int("seed", static_cast<long long>(o.seed)));
  o.plots = !f.has("no-plots");
  o.attach_device = dsa::cli::parse_device(f.get("device", "cpu"), "eval");
  const auto data = dsa::cli::run_data(f, o.run_dir);
  const auto tok = dsa::load_tokenizer(data.tokenizer);
  const auto corpus = dsa::train::load_corpus(data, (fs::path(o.run_dir) / "tokens").string());
  const auto report = dsa::train::evaluate_run(o, corpus, *tok);
  std::printf("%s", dsa::train::format_report(report).c_str());
  std::printf("  (tables: %s/eval/*.csv, plots: %s/eval/*.png)\n", o.run_dir.c_str(), o.run_dir.c_str());
  return 0;
}

const dsa::cli::Register kEval("eval", "evaluate a trained run: PPL dense vs DSA, recall, passkey, speed", run_eval);

}  // namespace
