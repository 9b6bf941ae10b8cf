// trainer.cpp — one stage of the DSA recipe: resume or start, the step loop, atomic checkpoints,
// metrics CSV, progress bar and loss plot (include/dsa/train.h).
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/checked_math.h"
#include "common/file_io.h"
#include "dsa/ops.h"
#include "dsa/train.h"
#include "model/json.h"
#include "train/rng.h"

namespace fs = std::filesystem;

namespace dsa::train {
namespace {

constexpr const char* kLatestFile = "latest";
constexpr const char* kFinalFile = "final";
constexpr const char* kStateFile = "trainer_state.json";
constexpr const char* kOptimizerFile = "optimizer.safetensors";
constexpr const char* kCsvHeader = "step,lr,lm_loss,kl_loss,model_grad_norm,indexer_grad_norm,tokens_per_s,seconds,val_lm_loss";

std::string slurp_trimmed(const std::string& path) {
  std::ifstream in(path);
  std::string s;
  std::getline(in, s);
  return s;
}

std::string checkpoint_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "ckpt-%08lld", static_cast<long long>(step));
  return buf;
}

int64_t checkpoint_step(const std::string& dir) {
  const std::string text = read_file((fs::path(dir) / kStateFile).string());
  const auto v = json::parse(text, dir + "/" + kStateFile);
  const auto* step = v.get("step");
  if (step == nullptr || !step->is_integer()) throw Error(dir + "/" + kStateFile + ": \"step\" is missing");
  return static_cast<int64_t>(step->number);
}

std::string options_json(const TrainOptions& o, const model::Config& cfg) {
  std::ostringstream j;
  auto group = [](const GroupOptions& g) {
    std::ostringstream s;
    s << "{\"lr\": " << g.lr << ", \"weight_decay\": " << g.weight_decay << ", \"beta1\": " << g.beta1
      << ", \"beta2\": " << g.beta2 << ", \"eps\": " << g.eps << ", \"clip\": " << g.clip << "}";
    return s.str();
  };
  j << "{\n  \"stage\": \"" << stage_name(o.stage) << "\",\n  \"init\": " << json::quote(o.init) << ",\n  \"steps\": " << o.steps
    << ",\n  \"warmup_steps\": " << o.warmup_steps << ",\n  \"min_lr_ratio\": " << o.min_lr_ratio << ",\n  \"topk\": " << o.topk << ",\n  \"selection\": " << json::quote(model::describe(o.selection))
    << ",\n  \"batch_size\": " << o.loader.batch_size << ",\n  \"seq_len\": " << o.loader.seq_len
    << ",\n  \"synthetic_share\": " << o.loader.synthetic_share << ",\n  \"synthetic_mix\": [" << o.loader.synthetic_mix[0] << ", "
    << o.loader.synthetic_mix[1] << ", " << o.loader.synthetic_mix[2] << "],\n  \"synthetic_min_len\": " << o.loader.synthetic_min_len
    << ",\n  \"synthetic_ramp_steps\": " << o.loader.synthetic_ramp_steps << ",\n  \"synthetic_first_steps\": " << o.loader.synthetic_first_steps
    << ",\n  \"seed\": " << o.seed << ",\n  \"device\": " << json::quote(o.device) << ",\n  \"shared_embedding\": " << o.shared_embedding
    << ",\n  \"checkpoint_every\": " << o.checkpoint_every << ",\n  \"model_group\": " << group(o.model_group)
    << ",\n  \"indexer_group\": " << group(o.indexer_group) << ",\n  \"model\": " << cfg.to_json() << "\n}\n";
  return j.str();
}

// Rewrites metrics.csv keeping the header and the rows of steps ≤ keep_through (after a resume).
void reset_csv(const std::string& path, int64_t keep_through) {
  std::vector<std::string> keep;
  if (keep_through > 0 && fs::exists(path)) {
    std::ifstream in(path);
    std::string line;
    std::getline(in, line);
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      if (std::stoll(line.substr(0, line.find(','))) <= keep_through) keep.push_back(line);
    }
  }
  std::string text = std::string(kCsvHeader) + "\n";
  for (const auto& l : keep) text += l + "\n";
  write_file_atomic(path, text);
}

std::string format_seconds(double s) {
  char buf[32];
  const long t = std::lround(std::max(0.0, s));
  std::snprintf(buf, sizeof buf, "%ld:%02ld", t / 60, t % 60);
  return buf;
}

void write_loss_plot(const std::string& stage_dir, model::Stage stage, int64_t steps) {
  const std::string script = (fs::path(stage_dir) / "loss.gp").string();
  const std::string csv = (fs::path(stage_dir) / "metrics.csv").string();
  // Per-step losses are noisy (one batch each): the plot shows them faint, an exponential moving
  // average over ~steps/50 steps (at least 10) bold, and the validation loss (column 9, every
  // --val-every steps and at the end) as points.
  const double alpha = 2.0 / (std::max<double>(10.0, static_cast<double>(steps) / 50.0) + 1.0);
  std::ostringstream gp;
  gp << "set terminal pngcairo size 900,500 noenhanced\nset output '" << (fs::path(stage_dir) / "loss.png").string() << "'\n"
     << "set datafile separator ','\nset datafile missing ''\nset xlabel 'step'\nset grid\n"
     << "set title 'dsa train: " << stage_name(stage) << "'\na = " << alpha << "\n"
     << "ema(col) = (e = (e != e) ? col : a * col + (1 - a) * e)\n";
  const int col = stage == model::Stage::kWarmup ? 4 : 3;
  gp << "set ylabel '" << (stage == model::Stage::kWarmup ? "indexer KL (nats)" : "LM loss (nats)") << "'\n";
  if (stage == model::Stage::kSparse) gp << "set y2label 'indexer KL (selected set)'\nset y2tics\n";
  const char* what = stage == model::Stage::kWarmup ? "indexer KL" : "LM loss";
  gp << "e = NaN\nplot '" << csv << "' every ::1 using 1:" << col << " with lines lw 1 lc rgb '#b0c4de' title '" << what
     << " (per step)', '' every ::1 using 1:(ema($" << col << ")) with lines lw 2 lc rgb '#1f4e9c' title '" << what << " (moving average)'";
  if (stage != model::Stage::kWarmup)
    gp << ", '' every ::1 using 1:9 with linespoints pt 7 lw 2 lc rgb '#d62728' title 'validation LM loss'";
  if (stage == model::Stage::kSparse) gp << ", '' every ::1 using 1:4 axes x1y2 with lines lw 1 lc rgb '#2ca02c' title 'indexer KL'";
  gp << "\n";
  write_file_atomic(script, gp.str());
  run_gnuplot(script);
}

}  // namespace

std::string latest_checkpoint(const std::string& stage_dir) {
  const fs::path pointer = fs::path(stage_dir) / kLatestFile;
  if (!fs::exists(pointer)) return "";
  const fs::path dir = fs::path(stage_dir) / slurp_trimmed(pointer.string());
  if (!fs::exists(dir / kStateFile)) return "";
  return dir.string();
}

std::string final_checkpoint(const std::string& stage_dir) {
  const fs::path pointer = fs::path(stage_dir) / kFinalFile;
  if (!fs::exists(pointer))
    throw Error("stage folder " + stage_dir + " has no final checkpoint (run that stage to the end first, or pass --init)");
  const fs::path dir = fs::path(stage_dir) / slurp_trimmed(pointer.string());
  if (!fs::exists(dir / kStateFile)) throw Error("final checkpoint " + dir.string() + " is incomplete");
  return dir.string();
}

std::string resolve_checkpoint(const std::string& path) {
  const fs::path p(path);
  if (!fs::exists(p)) throw Error("checkpoint " + path + " does not exist");
  if (fs::is_regular_file(p)) {   // a stage's final / latest pointer: the name of a sibling folder
    const std::string name = slurp_trimmed(path);
    const fs::path dir = p.parent_path() / name;
    if (name.empty() || name.find('/') != std::string::npos || !fs::exists(dir / "config.json"))
      throw Error(path + " is neither a model folder nor a pointer to a checkpoint folder next to it");
    return dir.string();
  }
  if (fs::exists(p / "config.json")) return path;
  if (fs::exists(p / kFinalFile)) return final_checkpoint(path);
  for (const char* stage : {"sparse", "warmup", "pretrain"})
    if (fs::exists(p / stage / kFinalFile)) return final_checkpoint((p / stage).string());
  throw Error(path + " is not a model folder (no config.json), a stage folder with a final checkpoint, or a run "
              "folder with a finished stage");
}

void check_train_options(const TrainOptions& o) {
  if (o.run_dir.empty()) throw Error("train: --run is empty");
  if (o.steps <= 0) throw Error("train: --steps = " + std::to_string(o.steps) + " must be > 0");
  if (o.checkpoint_every <= 0) throw Error("train: --checkpoint-every = " + std::to_string(o.checkpoint_every) + " must be > 0");
  if (o.warmup_steps < 0) throw Error("train: --warmup-steps must be >= 0");
  if (!(o.shared_embedding >= 0) || !std::isfinite(o.shared_embedding))
    throw Error("train: --shared-embedding = " + std::to_string(o.shared_embedding) + " must be a finite number >= 0");
  if (o.shared_embedding > 0 && (o.stage != model::Stage::kPretrain || !o.init.empty()))
    throw Error("train: --shared-embedding shapes a fresh initialisation: it applies to the pretrain stage without --init only");
  if (!(o.min_lr_ratio >= 0 && o.min_lr_ratio <= 1))
    throw Error("train: --min-lr-ratio = " + std::to_string(o.min_lr_ratio) + " must be in [0, 1]");
  check_group_options(o.model_group, "model");
  check_group_options(o.indexer_group, "indexer");
  check_loader_options(o.loader);
  if (!o.selection.is_default() && o.stage != model::Stage::kSparse)
    throw Error("train: --topk-policy " + model::describe(o.selection) + " applies to the sparse stage only (the others attend densely)");
}

namespace {
// The checkpoint train_stage starts from ("" = a fresh model of o.config).
std::string start_checkpoint(const TrainOptions& o) {
  const std::string resume = latest_checkpoint((fs::path(o.run_dir) / stage_name(o.stage)).string());
  if (!resume.empty()) return resume;
  if (o.stage == model::Stage::kPretrain && o.init.empty()) return "";
  std::string init = o.init;
  if (init.empty()) {
    const model::Stage prev = o.stage == model::Stage::kWarmup ? model::Stage::kPretrain : model::Stage::kWarmup;
    init = final_checkpoint((fs::path(o.run_dir) / stage_name(prev)).string());
  }
  if (!fs::exists(fs::path(init) / "config.json")) throw Error("train: --init " + init + " is not a checkpoint folder (no config.json)");
  return init;
}
}  // namespace

void check_stage_start(const TrainOptions& o, int vocab_size) {
  check_train_options(o);
  const std::string from = start_checkpoint(o);
  model::Config cfg = o.config;
  if (from.empty()) cfg.vocab_size = vocab_size;
  else cfg = model::Config::from_json_file((fs::path(from) / "config.json").string());
  cfg.validate();
  if (cfg.vocab_size != vocab_size)
    throw Error("train: the model's vocab_size " + std::to_string(cfg.vocab_size) + " differs from the tokenizer's " +
                std::to_string(vocab_size));
  if (o.loader.seq_len > cfg.max_position_embeddings)
    throw Error("train: --seq-len " + std::to_string(o.loader.seq_len) + " exceeds max_position_embeddings " +
                std::to_string(cfg.max_position_embeddings));
  // Memory: parameters + gradients, AdamW's moments, a checkpoint's serialised copy, and one pass of
  // batch x seq_len tokens (activations per token + the indexer's T x T logits).
  using detail::add_checked;
  using detail::mul_checked;
  const model::Footprint fp = model::footprint(cfg);
  const int64_t T = mul_checked(o.loader.batch_size, o.loader.seq_len, "train: --batch x --seq-len");
  int64_t bytes = add_checked(fp.param_bytes, fp.optimizer_bytes, "train: memory");
  bytes = add_checked(bytes, fp.param_bytes / 2, "train: memory");
  bytes = add_checked(bytes, mul_checked(T, fp.activation_bytes_per_token, "train: activation bytes"), "train: memory");
  bytes = add_checked(bytes, mul_checked(mul_checked(T, T, "train: indexer logits"), 4, "train: indexer logits"), "train: memory");
  model::check_memory(bytes, "train: the model (" + fp.param_breakdown + "), AdamW and a pass of --batch " +
                                 std::to_string(o.loader.batch_size) + " x --seq-len " + std::to_string(o.loader.seq_len) + " tokens");
}

TrainResult train_stage(const TrainOptions& o, const Corpus& corpus, const Tokenizer& tok) {
  check_stage_start(o, corpus.vocab_size);
  const auto t_start = std::chrono::steady_clock::now();
  const fs::path stage_dir = fs::path(o.run_dir) / stage_name(o.stage);
  fs::create_directories(stage_dir);
  for (const auto& e : fs::directory_iterator(stage_dir))   // debris of an interrupted checkpoint write
    if (e.path().filename().string().rfind(".tmp-", 0) == 0) fs::remove_all(e.path());

  // ── model: resume, or start from the previous stage / a fresh init (checked by check_stage_start) ──
  TrainResult result;
  const std::string resume = latest_checkpoint(stage_dir.string());
  std::unique_ptr<model::Model> mdl;
  if (!resume.empty()) {
    mdl = std::make_unique<model::Model>(model::Model::load(resume));
    result.start_step = checkpoint_step(resume);
  } else if (const std::string init = start_checkpoint(o); init.empty()) {
    model::Config cfg = o.config;
    cfg.vocab_size = corpus.vocab_size;
    mdl = std::make_unique<model::Model>(cfg);
    mdl->init_random(o.seed, o.shared_embedding);
  } else {
    mdl = std::make_unique<model::Model>(model::Model::load(init));
  }
  model::Model& m = *mdl;
  if (o.attach_device) o.attach_device(m);
  AdamW opt(m, o.model_group, o.indexer_group);
  if (!resume.empty()) opt.load((fs::path(resume) / kOptimizerFile).string());
  const bool train_model = o.stage != model::Stage::kWarmup;
  const bool train_indexer = o.stage != model::Stage::kPretrain;
  const int topk = o.stage == model::Stage::kSparse ? (o.topk > 0 ? o.topk : m.config().index_topk) : 0;
  if (o.stage == model::Stage::kSparse) m.set_selection_policy(o.selection);   // checks it against the layers

  LoaderOptions lo = o.loader;
  lo.seed = mix_seed(o.seed, static_cast<uint64_t>(o.stage));
  Loader loader(corpus, tok, lo);
  write_file_atomic((stage_dir / "config.json").string(), options_json(o, m.config()));
  const std::string csv_path = (stage_dir / "metrics.csv").string();
  reset_csv(csv_path, result.start_step);
  std::ofstream csv(csv_path, std::ios::app);

  auto checkpoint = [&](int64_t step) {
    const std::string name = checkpoint_name(step);
    const fs::path tmp = stage_dir / (".tmp-" + name);
    fs::remove_all(tmp);
    m.save(tmp.string());
    if (o.on_checkpoint_phase) o.on_checkpoint_phase("model");
    opt.save((tmp / kOptimizerFile).string());
    if (o.on_checkpoint_phase) o.on_checkpoint_phase("optimizer");
    // The loader is stateless: the data position is the step. Kept explicit for readers.
    write_file_atomic((tmp / kStateFile).string(), "{\"step\": " + std::to_string(step) + ", \"stage\": \"" + stage_name(o.stage) +
                                                       "\", \"seed\": " + std::to_string(o.seed) + ", \"loader\": {\"next_step\": " +
                                                       std::to_string(step) + "}}\n");
    if (o.on_checkpoint_phase) o.on_checkpoint_phase("state");
    const fs::path dst = stage_dir / name;
    fs::remove_all(dst);
    fs::rename(tmp, dst);
    write_file_atomic((stage_dir / kLatestFile).string(), name + "\n");
    // Prune older checkpoints beyond keep_checkpoints (never the newest).
    std::vector<std::string> all;
    for (const auto& e : fs::directory_iterator(stage_dir))
      if (e.is_directory() && e.path().filename().string().rfind("ckpt-", 0) == 0) all.push_back(e.path().filename().string());
    std::sort(all.begin(), all.end());
    for (size_t i = 0; i + static_cast<size_t>(std::max(1, o.keep_checkpoints)) < all.size(); ++i) fs::remove_all(stage_dir / all[i]);
    return dst.string();
  };

  const bool tty = o.progress && ::isatty(STDERR_FILENO);
  const int64_t print_every = std::max<int64_t>(1, o.steps / 20);
  double step_seconds = 0;
  int64_t done_here = 0;
  std::string last_ckpt;
  double final_val = std::nan("");   // the validation loss after the last step, once it ran here
  for (int64_t s = result.start_step; s < o.steps; ++s) {
    const auto t0 = std::chrono::steady_clock::now();
    const model::Batch batch = loader.batch(s);
    const model::Losses loss = m.forward_backward(batch, o.stage, topk);
    const double scale = lr_at(s, o.steps, o.warmup_steps, o.min_lr_ratio);
    const AdamW::StepStats gs = opt.step(m, scale, train_model, train_indexer);
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    step_seconds += dt;
    ++done_here;
    StepRecord r;
    r.step = s + 1;
    r.lr = scale * (train_model ? o.model_group.lr : o.indexer_group.lr);
    r.lm_loss = loss.lm_loss;
    r.kl_loss = loss.kl_loss;
    r.model_grad_norm = gs.model_grad_norm;
    r.indexer_grad_norm = gs.indexer_grad_norm;
    r.tokens_per_s = static_cast<double>(batch.tokens.size()) / std::max(dt, 1e-9);
    result.records.push_back(r);
    const bool last = r.step == o.steps;
    if (r.step % o.checkpoint_every == 0 || last) last_ckpt = checkpoint(r.step);
    // Validation loss (dense; DSA in the sparse stage) every val_every steps and at the end, in the
    // CSV's last column (empty on other steps).
    std::string val_field;
    if ((o.val_every > 0 && r.step % o.val_every == 0) || last) {
      const auto vb = loader.val_batch(o.val_sequences, o.loader.seq_len, 0);
      const double vl = m.evaluate(vb, o.stage == model::Stage::kSparse ? model::AttentionMode::kSparse : model::AttentionMode::kDense, topk).lm_loss;
      if (last) {
        final_val = vl;
      } else {
        std::fprintf(stderr, "%s[%-8s] step %lld: validation loss %.4f (ppl %.2f)\n", tty ? "\n" : "", stage_name(o.stage),
                     static_cast<long long>(r.step), vl, std::exp(vl));
      }
      char v[32];
      std::snprintf(v, sizeof v, "%.17g", vl);
      val_field = v;
    }
    char line[320];
    std::snprintf(line, sizeof line, "%lld,%.6g,%.17g,%.17g,%.6g,%.6g,%.1f,%.3f,%s\n", static_cast<long long>(r.step), r.lr, r.lm_loss,
                  r.kl_loss, r.model_grad_norm, r.indexer_grad_norm, r.tokens_per_s, dt, val_field.c_str());
    csv << line << std::flush;
    if (!csv) io::fail_errno("train", "append to", csv_path, errno);
    if (o.progress && (tty || r.step % print_every == 0 || r.step == o.steps)) {
      const double eta = step_seconds / static_cast<double>(done_here) * static_cast<double>(o.steps - r.step);
      constexpr int kBarWidth = 24;
      const int filled = static_cast<int>(kBarWidth * r.step / o.steps);
      std::string bar(static_cast<size_t>(filled), '#');
      bar += std::string(static_cast<size_t>(kBarWidth - filled), '.');
      std::fprintf(stderr, "%s[%-8s] %5lld/%lld [%s] loss %.4f  kl %.4f  %6.0f tok/s  ETA %s%s", tty ? "\r" : "",
                   stage_name(o.stage), static_cast<long long>(r.step), static_cast<long long>(o.steps), bar.c_str(), r.lm_loss,
                   r.kl_loss, r.tokens_per_s, format_seconds(eta).c_str(), tty ? "  " : "\n");
    }
    if (o.stop_after > 0 && done_here == o.stop_after && !last) {
      if (tty) std::fprintf(stderr, "\n");
      result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
      return result;
    }
  }
  if (tty && o.progress) std::fprintf(stderr, "\n");
  if (last_ckpt.empty()) last_ckpt = latest_checkpoint(stage_dir.string());   // resumed at the very end
  write_file_atomic((stage_dir / kFinalFile).string(), fs::path(last_ckpt).filename().string() + "\n");
  result.final_checkpoint = last_ckpt;
  if (final_val == final_val) {
    result.val_loss = final_val;
  } else {   // resumed at the very end: no step ran here
    const auto vb = loader.val_batch(o.val_sequences, o.loader.seq_len, 0);
    result.val_loss =
        m.evaluate(vb, o.stage == model::Stage::kSparse ? model::AttentionMode::kSparse : model::AttentionMode::kDense, topk).lm_loss;
  }
  if (o.plots) write_loss_plot(stage_dir.string(), o.stage, o.steps);
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  return result;
}

}  // namespace dsa::train
