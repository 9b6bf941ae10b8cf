// `dsa train` — one stage of the DSA recipe (pretrain → warmup → sparse) in a run folder.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "command.h"
#include "device.h"
#include "dsa/model.h"
#include "dsa/ops.h"
#include "dsa/tokenizer.h"
#include "dsa/train.h"
#include "model/json.h"
#include "run_data.h"
#include "selection_flags.h"

namespace fs = std::filesystem;

namespace dsa::cli {

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string p; std::getline(ss, p, ',');)
    if (!p.empty()) out.push_back(p);
  return out;
}

// data.json stores each path as the user gave it when absolute, else relative to the run folder
// ("base": "run"), so a run folder moved or copied elsewhere still finds data that moved with it.
// Files written before paths were stored this way carry no "base": theirs are relative to the
// directory `dsa train` ran in.
namespace {
std::string to_record(const std::string& p, const fs::path& run) {
  if (fs::path(p).is_absolute()) return p;
  return fs::relative(fs::absolute(p), fs::absolute(run)).lexically_normal().string();
}
std::string from_record(const std::string& p, const fs::path& run, bool run_relative) {
  if (!run_relative || fs::path(p).is_absolute()) return p;
  return (run / p).lexically_normal().string();
}
}  // namespace

// The data of a run: flags given now, else what `dsa train` recorded in run/data.json.
train::DataOptions run_data(const Flags& f, const std::string& run_dir) {
  train::DataOptions d;
  const fs::path record = fs::path(run_dir) / "data.json";
  bool recorded = false;
  if ((!f.has("data") || !f.has("tokenizer")) && fs::exists(record)) {
    const auto v = json::parse(read_file(record.string()), record.string());
    const auto* paths = v.get("paths");
    const auto* holdout = v.get("holdout");
    const auto* tok = v.get("tokenizer");
    if (!paths || !holdout || !tok) throw Error(record.string() + ": needs \"paths\", \"holdout\", \"tokenizer\"");
    const auto* base = v.get("base");
    const bool run_relative = base != nullptr && base->text == "run";
    for (const auto& p : paths->items) d.paths.push_back(from_record(p.text, run_dir, run_relative));
    d.holdout.clear();
    for (const auto& p : holdout->items) d.holdout.push_back(p.text);
    d.tokenizer = tok->text == "byte" ? tok->text : from_record(tok->text, run_dir, run_relative);
    recorded = true;
    auto missing = [&](const std::string& p, const char* flag) {
      if (!fs::exists(p))
        throw Error(record.string() + " names " + p + ", which does not exist (" +
                    (run_relative ? "paths there are relative to the run folder" : "paths there are relative to where the run started") +
                    "); pass " + flag + " to use another");
    };
    if (!f.has("data"))
      for (const auto& p : d.paths) missing(p, "--data");
    if (!f.has("tokenizer") && d.tokenizer != "byte") missing(d.tokenizer, "--tokenizer");
  }
  if (f.has("data")) d.paths = split_list(f.get("data"));
  else if (!recorded) d.paths = split_list(f.require("data"));
  if (d.paths.empty()) throw Error("--data names no path");
  if (f.has("holdout")) d.holdout = split_list(f.get("holdout"));
  if (f.has("tokenizer")) d.tokenizer = f.get("tokenizer");
  d.threads = f.get_i32("threads", d.threads, 1, 4096);
  return d;
}

void record_run_data(const train::DataOptions& d, const std::string& run_dir) {
  auto list = [&](const std::vector<std::string>& v, bool paths) {
    std::string s = "[";
    for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + json::quote(paths ? to_record(v[i], run_dir) : v[i]);
    return s + "]";
  };
  const std::string tok = d.tokenizer == "byte" ? d.tokenizer : to_record(d.tokenizer, run_dir);
  train::write_file_atomic((fs::path(run_dir) / "data.json").string(), "{\"base\": \"run\", \"paths\": " + list(d.paths, true) +
                                                                             ", \"holdout\": " + list(d.holdout, false) +
                                                                             ", \"tokenizer\": " + json::quote(tok) + "}\n");
}

}  // namespace dsa::cli

namespace {

using dsa::cli::Flags;

const char* kUsage =
    "usage: dsa train --run DIR --stage pretrain|warmup|sparse [flags]\n"
    "  data:      --data PATH[,PATH…] (files or folders; remembered in DIR/data.json)  --tokenizer byte|FILE.model\n"
    "             --holdout SUBSTR[,…] (documents whose path contains one are held out; default: the last 5%\n"
    "             of every document)  --threads N (tokenizing threads; -t N)\n"
    "  model:     (pretrain) --config FILE.json | --hidden N --layers N --heads N --intermediate N --q-lora N\n"
    "             --kv-lora N --nope N --rope N --v-dim N --index-heads N --index-dim N --topk K --max-pos N\n"
    "             --shared-embedding X (one random vector, std X·initializer_range, added to every embedding\n"
    "             row at init, so layer 0 can attend by position: include/dsa/model.h)\n"
    "  schedule:  --steps N --batch N --seq-len N --lr X --indexer-lr X --weight-decay X --clip X --warmup-steps N\n"
    "             --min-lr-ratio X --synthetic SHARE --seed N --init CKPT --topk K (sparse stage)\n"
    "  per-row k: (sparse stage) --topk-policy fixed|mass|entropy|table --topk-p P --topk-min N --topk-max N\n"
    "             --topk-a A --topk-b B --topk-table K,K,… (each row keeps its own k <= --topk; include/dsa/ops.h)\n"
    "  synthetic: --synthetic-mix P,K,C (weights of passkey, key-value recall, copy; default 1,1,1)\n"
    "             --synthetic-min-len N --synthetic-ramp STEPS (length curriculum: synthetic slots packed\n"
    "             with short tasks, the longest doubling every STEPS steps from N to --seq-len)\n"
    "             --synthetic-first N (the first N steps synthetic only: retrieval forms before text joins)\n"
    "  output:    --checkpoint-every N --keep N --val-every N --no-progress --no-plots\n"
    "  device:    --device cpu|cuda|cuda:N (where forward/backward run; the optimizer stays on the host)\n";

int run_train(const dsa::cli::Args& args) {
  Flags f(args,
          {"run", "stage", "data", "tokenizer", "holdout", "threads", "config", "hidden", "layers", "heads", "intermediate", "q-lora",
           "kv-lora", "nope", "rope", "v-dim", "index-heads", "index-dim", "topk", "max-pos", "steps", "batch", "seq-len", "lr",
           "indexer-lr", "weight-decay", "clip", "warmup-steps", "min-lr-ratio", "synthetic", "synthetic-mix", "synthetic-min-len",
           "synthetic-ramp", "synthetic-first", "seed", "init", "checkpoint-every", "keep", "val-every", "shared-embedding",
           "device", "topk-policy", "topk-p", "topk-min", "topk-max", "topk-a", "topk-b", "topk-table"},
          {"no-progress", "no-plots"}, {{"-t", "threads"}, {"-s", "seed"}});
  dsa::train::TrainOptions o;
  o.run_dir = f.require("run");
  o.stage = dsa::train::parse_stage(f.require("stage"));

  dsa::model::Config& c = o.config;
  if (f.has("config")) c = dsa::model::Config::from_json_file(f.get("config"));
  else c = dsa::model::Config::tiny();
  auto set = [&](const char* flag, int& field) { field = f.get_i32(flag, field, 1, 1 << 24); };
  set("hidden", c.hidden_size);
  set("layers", c.num_hidden_layers);
  set("heads", c.num_attention_heads);
  set("intermediate", c.intermediate_size);
  set("q-lora", c.q_lora_rank);
  set("kv-lora", c.kv_lora_rank);
  set("nope", c.qk_nope_head_dim);
  set("rope", c.qk_rope_head_dim);
  set("v-dim", c.v_head_dim);
  set("index-heads", c.index_n_heads);
  set("index-dim", c.index_head_dim);
  set("max-pos", c.max_position_embeddings);
  if (o.stage == dsa::model::Stage::kPretrain) set("topk", c.index_topk);
  o.shared_embedding = f.get_double("shared-embedding", 0.0, 0.0, 1e6);
  o.topk = f.get_i32("topk", 0, 0, 1 << 24);
  o.selection = dsa::cli::parse_selection_policy(f, "train");

  // Stage defaults: pretraining a tiny model from scratch tolerates a high lr; the indexer warm-up
  // uses the paper's 1e-3; sparse training continues the model gently (dsa-spec §4).
  const bool pre = o.stage == dsa::model::Stage::kPretrain, warm = o.stage == dsa::model::Stage::kWarmup;
  o.model_group.lr = f.get_double("lr", pre ? 2e-3 : 3e-4, 0.0, 1e3);
  o.indexer_group.lr = f.get_double("indexer-lr", 1e-3, 0.0, 1e3);
  o.model_group.weight_decay = f.get_double("weight-decay", 0.1, 0.0, 1e3);
  o.indexer_group.weight_decay = 0.0;
  o.model_group.clip = o.indexer_group.clip = f.get_double("clip", 1.0, 0.0, 1e9);
  o.steps = f.get_int("steps", pre ? 300 : warm ? 100 : 100, 1, 1LL << 40);
  o.warmup_steps = f.get_int("warmup-steps", std::max<long long>(1, o.steps / 10), 0, 1LL << 40);
  o.min_lr_ratio = f.get_double("min-lr-ratio", 0.1, 0.0, 1.0);
  o.loader.batch_size = f.get_i32("batch", 4, 1, 1 << 16);
  o.loader.seq_len = f.get_i32("seq-len", 512, 2, 1 << 24);
  o.loader.synthetic_share = f.get_double("synthetic", pre ? 0.25 : 0.1, 0.0, 1.0);
  if (f.has("synthetic-mix")) {
    const std::string mix = f.get("synthetic-mix");
    const auto items = dsa::cli::split_list(mix);
    if (items.size() != dsa::train::kNumSyntheticTasks) throw dsa::Error("train: --synthetic-mix \"" + mix + "\" must be three numbers P,K,C");
    for (size_t t = 0; t < items.size(); ++t) o.loader.synthetic_mix[t] = dsa::cli::parse_double("flag --synthetic-mix item", items[t], 0.0, 1e9);
  }
  o.loader.synthetic_min_len = f.get_i32("synthetic-min-len", 0, 0, 1 << 24);
  o.loader.synthetic_ramp_steps = f.get_int("synthetic-ramp", 0, 0, 1LL << 40);
  o.loader.synthetic_first_steps = f.get_int("synthetic-first", 0, 0, 1LL << 40);
  o.seed = static_cast<uint64_t>(f.get_int("seed", 1, 0, LLONG_MAX));
  o.init = f.has("init") ? dsa::train::resolve_checkpoint(f.get("init")) : "";
  o.checkpoint_every = f.get_int("checkpoint-every", 50, 1, 1LL << 40);
  o.keep_checkpoints = f.get_i32("keep", 2, 1, 1 << 20);
  o.val_every = f.get_i32("val-every", 0, 0, 1 << 30);
  o.progress = !f.has("no-progress");
  o.plots = !f.has("no-plots");
  o.device = f.get("device", "cpu");
  o.attach_device = dsa::cli::parse_device(o.device, "train");
  // Refuse a bad command line before the run folder is created or anything is written to it.
  dsa::train::check_train_options(o);
  dsa::train::DataOptions data = dsa::cli::run_data(f, o.run_dir);
  if (data.tokenizer != "byte" && !fs::exists(data.tokenizer)) throw dsa::Error("train: --tokenizer file " + data.tokenizer + " does not exist");
  const auto tok = dsa::load_tokenizer(data.tokenizer);
  dsa::train::check_stage_start(o, tok->vocab_size());   // the model it starts from, before anything is written
  dsa::train::check_synthetic_lengths(o.loader, *tok);   // the synthetic tasks fit --seq-len
  // The corpus is read and split before the run folder is written (its token cache is written only
  // once every document has been read and the split holds both parts).
  const bool existed = fs::exists(o.run_dir);
  dsa::train::Corpus corpus;
  try {
    corpus = dsa::train::load_corpus(data, (fs::path(o.run_dir) / "tokens").string());
    // Both splits must hold one sequence of --seq-len tokens (the loader's and validation's windows).
    const long long need = static_cast<long long>(o.loader.seq_len) + 2;
    const long long train_n = corpus.train_tokens() + static_cast<long long>(corpus.train.size());
    const long long val_n = corpus.val_tokens() + static_cast<long long>(corpus.val.size());
    if (train_n < need)
      throw dsa::Error("train: the training split holds " + std::to_string(train_n) + " tokens, fewer than --seq-len + 2 = " +
                       std::to_string(need) + " (more --data, or a smaller --seq-len)");
    if (val_n < need)
      throw dsa::Error("train: the held-out split holds " + std::to_string(val_n) + " tokens, fewer than --seq-len + 2 = " +
                       std::to_string(need) + " (--holdout other documents, or a smaller --seq-len)");
  } catch (...) {
    if (!existed) fs::remove_all(o.run_dir);   // a refused run leaves no folder behind (the token cache)
    throw;
  }
  fs::create_directories(o.run_dir);
  dsa::cli::record_run_data(data, o.run_dir);

  std::fprintf(stderr, "[%-8s] corpus: %zu train documents (%lld tokens), %zu held out (%lld tokens), vocab %d\n",
               dsa::train::stage_name(o.stage), corpus.train.size(), static_cast<long long>(corpus.train_tokens()), corpus.val.size(),
               static_cast<long long>(corpus.val_tokens()), corpus.vocab_size);
  const auto r = dsa::train::train_stage(o, corpus, *tok);
  if (r.start_step > 0) std::fprintf(stderr, "[%-8s] resumed from step %lld\n", dsa::train::stage_name(o.stage), static_cast<long long>(r.start_step));
  if (r.final_checkpoint.empty()) {
    std::printf("%s: stopped before the end (%zu steps run)\n", dsa::train::stage_name(o.stage), r.records.size());
    return 0;
  }
  std::printf("%s: done in %.1f s; validation loss %.4f (ppl %.2f); checkpoint %s\n", dsa::train::stage_name(o.stage), r.seconds, r.val_loss,
              std::exp(r.val_loss), r.final_checkpoint.c_str());
  return 0;
}

const dsa::cli::Register kTrain("train", "run one stage of the DSA recipe (pretrain, warmup, sparse)", run_train, kUsage);

}  // namespace
