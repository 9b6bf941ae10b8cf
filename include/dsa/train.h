// dsa/train.h — the DSA training recipe on top of dsa::model::Model (dsa-spec §4):
//   pretrain (dense attention, all non-indexer parameters)
//   → warmup (every non-indexer parameter frozen; indexer trained with the dense KL, lr 1e-3)
//   → sparse (top-k on; LM loss for the model, selected-set KL for the indexer, inputs detached).
// Each stage starts from the previous stage's final checkpoint. Everything is seeded: the batch of
// step s is a pure function of (seed, s), so a run killed at any moment and resumed from its last
// checkpoint reproduces the same losses bitwise.
//
// Run folder layout (one per run; `dsa train` and `dsa eval` share it):
//   run/tokens/                    tokenized corpus cache (train.bin, val.bin, meta.json)
//   run/tokenizer.model            copy of the SentencePiece model (absent for "byte")
//   run/<stage>/config.json        TrainOptions of that stage (what was asked)
//   run/<stage>/metrics.csv        one row per step
//   run/<stage>/loss.png           gnuplot of the stage's losses
//   run/<stage>/ckpt-<step>/       checkpoint: HF folder (config.json, model.safetensors) +
//                                  optimizer.safetensors + trainer_state.json
//   run/<stage>/latest             name of the newest complete checkpoint (atomically replaced)
//   run/<stage>/final -> ckpt-N    written last; the next stage loads it
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "dsa/model.h"
#include "dsa/tokenizer.h"

namespace dsa::train {

// ── Data ──────────────────────────────────────────────────────────────────────────────────────
struct Document {
  std::string name;                     // source path
  std::vector<int32_t> tokens;
};

struct DataOptions {
  std::vector<std::string> paths;       // files or folders of text documents
  // A document whose path contains one of these substrings is held out (validation and the
  // long-context evaluations); every pattern must match a document. Empty (the default): the last
  // holdout_share of every document's tokens is held out instead, so any corpus — one file
  // included — has a validation split (`make demo` holds out two Austen novels by name).
  std::vector<std::string> holdout;
  double holdout_share = 0.05;
  std::string tokenizer = "byte";       // "byte" or a SentencePiece .model path
  int threads = 2;
};

struct Corpus {
  std::vector<Document> train, val;
  int vocab_size = 0;
  int32_t bos_id = 0;
  int64_t train_tokens() const;
  int64_t val_tokens() const;
};

// Lists, reads and tokenizes the documents and splits them by whole document. With cache_dir set,
// the tokens are cached there (keyed by the file list, sizes and the tokenizer) and reused.
// Throws dsa::Error naming a missing path, an empty split, or a bad tokenizer file.
Corpus load_corpus(const DataOptions& options, const std::string& cache_dir = "");

// Synthetic long-range sequences mixed into pretraining (and, with unseen keys, used by eval).
enum class PasskeySplit { kTrain, kEval };   // disjoint key sets: eval keys never appear in training
struct PasskeySample {
  std::vector<int32_t> tokens;          // filler with the needle at `depth`, then the question + answer
  int answer_begin = 0;                 // tokens[answer_begin, answer_begin + answer_len) = the key
  int answer_len = 0;
};
// A passkey sequence of exactly `length` tokens whose filler comes from `filler` (a token stream),
// the needle ("The pass key is 12345. Remember it.") placed at fractional depth in [0, 1].
PasskeySample make_passkey(const Tokenizer& tok, const std::vector<int32_t>& filler, int length, double depth,
                           PasskeySplit split, uint64_t seed);
// Key–value recall: "name=digits" pairs spread through filler, then one name queried at the end.
PasskeySample make_kv_recall(const Tokenizer& tok, const std::vector<int32_t>& filler, int length, uint64_t seed);
// Copy: a segment of tokens drawn at random from `filler` (so no language model predicts it) appears
// twice in filler, the second time far from the first; every token of the repeat but its first is
// a retrieval event (the induction pattern behind passkey and key–value recall, with ~10× their
// training signal per sequence). answer_* = the repeat.
PasskeySample make_copy(const std::vector<int32_t>& filler, int length, uint64_t seed);

// The synthetic tasks, in the order of LoaderOptions::synthetic_mix.
enum class SyntheticTask { kPasskey, kKvRecall, kCopy };
constexpr int kNumSyntheticTasks = 3;
// The shortest length make_passkey / make_kv_recall / make_copy accept with this tokenizer (their
// fixed tokens with no filler; an upper bound, so any length at or above it works).
int synthetic_min_length(SyntheticTask task, const Tokenizer& tok);

struct LoaderOptions {
  int batch_size = 4;                   // sequences per step
  int seq_len = 256;                    // tokens per sequence
  double synthetic_share = 0.0;         // share of sequences replaced by synthetic tasks
  // Relative weights of passkey, key–value recall and copy among the synthetic sequences.
  std::array<double, kNumSyntheticTasks> synthetic_mix{1.0, 1.0, 1.0};
  // Length curriculum of the synthetic tasks (0 = off: each is one sequence of seq_len tokens).
  // With it, a synthetic slot of seq_len tokens is packed with independent task sequences (each
  // BOS-prefixed, attention never crosses them) whose lengths are log-uniform in [synthetic_min_len,
  // cap(step)], cap(step) = min(seq_len, synthetic_min_len · 2^(step / synthetic_ramp_steps)) (no
  // ramp: cap = seq_len). Why: retrieval is learned first on short contexts, where a needle holds
  // a large share of the uniform attention of an untrained model; from scratch at 256 tokens the
  // demo model never learns it (docs/perf.md "Training demo"). A remainder too short for the
  // drawn task is filled with text.
  int synthetic_min_len = 0;
  int64_t synthetic_ramp_steps = 0;
  // The first synthetic_first_steps steps are synthetic only (share 1), so retrieval can form before
  // text, whose gradients otherwise drown the few answer tokens, joins in.
  int64_t synthetic_first_steps = 0;
  uint64_t seed = 1;
};
// Throws dsa::Error naming the flag of the first option out of range (the checks that need no
// corpus or tokenizer; the Loader runs them too).
void check_loader_options(const LoaderOptions& options);
// Throws dsa::Error naming --seq-len when a synthetic task in use (share or synthetic_first_steps > 0,
// weight > 0) does not fit a sequence of seq_len tokens with this tokenizer (synthetic_min_length).
// The Loader runs it; `dsa train` runs it before it writes anything.
void check_synthetic_lengths(const LoaderOptions& options, const Tokenizer& tok);
// batch(step) is a pure function of (options, corpus, step): counter-based randomness, no state.
// Every sequence (training and validation) starts with BOS, then text or a synthetic task.
class Loader {
 public:
  Loader(const Corpus& corpus, const Tokenizer& tok, const LoaderOptions& options);
  model::Batch batch(int64_t step) const;
  // A fixed set of validation windows (same every call), n sequences of seq_len from the val split.
  model::Batch val_batch(int n, int seq_len, uint64_t salt) const;
  const std::vector<int32_t>& train_stream() const { return train_stream_; }
  const std::vector<int32_t>& val_stream() const { return val_stream_; }

 private:
  // One synthetic slot of seq_len tokens packed with short task sequences (the length curriculum).
  void pack_synthetic(int64_t step, uint64_t slot_seed, model::Batch& b) const;
  // One training task from the training stream (depth: where a passkey's needle goes).
  PasskeySample synthetic_sample(SyntheticTask task, int length, double depth, uint64_t seed) const;
  SyntheticTask pick_task(double u) const;

  const Tokenizer& tok_;
  LoaderOptions o_;
  int32_t bos_;                                        // first token of every sequence
  std::array<int, kNumSyntheticTasks> task_min_len_{};  // synthetic_min_length per task
  std::vector<int32_t> train_stream_, val_stream_;   // documents joined with BOS separators
};

// ── Optimisation ──────────────────────────────────────────────────────────────────────────────
struct GroupOptions {                   // one AdamW parameter group
  double lr = 1e-3;
  double weight_decay = 0.0;            // decoupled; applied to matrices only (ndim ≥ 2)
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  double clip = 1.0;                    // global-norm clip of the group's gradient (≤ 0: off)
};

// Throws dsa::Error naming the group ("model" / "indexer") and the field: lr or weight_decay not a
// finite number >= 0, betas outside [0, 1), eps not finite > 0, clip NaN.
void check_group_options(const GroupOptions& g, const std::string& group);

// Linear warm-up over warmup_steps, then cosine from lr to lr·min_lr_ratio at total_steps.
double lr_at(int64_t step, int64_t total_steps, int64_t warmup_steps, double min_lr_ratio);

// AdamW over a model's parameters with two groups: the lightning indexer and everything else.
// A frozen group is skipped entirely (its parameters stay bitwise unchanged, no weight decay).
class AdamW {
 public:
  AdamW(const model::Model& m, const GroupOptions& model_group, const GroupOptions& indexer_group);
  struct StepStats {
    double model_grad_norm = 0, indexer_grad_norm = 0;
  };
  // lr_scale multiplies both groups' lr (the schedule); frozen groups are not touched.
  StepStats step(model::Model& m, double lr_scale, bool train_model, bool train_indexer);
  int64_t steps() const { return t_; }
  void save(const std::string& path) const;     // safetensors: m.<name>, v.<name>; metadata t
  void load(const std::string& path);           // dsa::Error naming the file / missing tensor

 private:
  GroupOptions model_, indexer_;
  std::vector<std::vector<float>> m_, v_;
  std::vector<std::string> names_;
  std::vector<bool> is_indexer_;
  size_t num_trained_ = 0;   // params [num_trained_, end) (the MTP modules') are left as they are
  int64_t t_model_ = 0, t_indexer_ = 0, t_ = 0;
};

// ── Stages ────────────────────────────────────────────────────────────────────────────────────
const char* stage_name(model::Stage s);
model::Stage parse_stage(const std::string& name);     // dsa::Error naming --stage

struct TrainOptions {
  std::string run_dir;                  // the run folder (created)
  model::Stage stage = model::Stage::kPretrain;
  model::Config config;                 // pretrain only: the model to create (vocab from tokenizer)
  double shared_embedding = 0;          // pretrain from scratch only: Model::init_random's shared_embedding
  std::string init;                     // checkpoint to start from; "" = previous stage's final
  LoaderOptions loader;
  GroupOptions model_group, indexer_group;
  int64_t steps = 100;
  int64_t warmup_steps = 10;
  double min_lr_ratio = 0.1;
  int topk = 0;                         // sparse stage; ≤ 0: config.index_topk
  // Sparse stage: each row's budget within topk (model.h SelectionPolicy), so the model and the
  // indexer's ragged selected-set KL train with the policy the model will be served with.
  model::SelectionPolicy selection;
  int64_t checkpoint_every = 50;
  int keep_checkpoints = 2;             // older ckpt-* are removed once a newer one is complete
  int val_every = 0;                    // > 0: validation LM loss every N steps (dense or DSA)
  int val_sequences = 8;
  uint64_t seed = 1;
  bool progress = true;                 // progress bar on stderr
  bool plots = true;                    // loss.png via gnuplot (skipped with a note if absent)
  // Test hooks. stop_after > 0 ends the run after that many steps of THIS process without a final
  // checkpoint (a kill between checkpoints). on_checkpoint_phase is called with "model",
  // "optimizer", "state" after each part of a checkpoint is written into its temporary folder
  // (throwing from it simulates a crash in the middle of a checkpoint write).
  int64_t stop_after = 0;
  std::function<void(const std::string&)> on_checkpoint_phase;
  // Where the passes run: called on the model once it is created or loaded (the CLI's --device cuda
  // installs dsa::cuda::attach_model); empty = the CPU. `device` names it in the stage's config.json.
  std::function<void(model::Model&)> attach_device;
  std::string device = "cpu";
};

struct StepRecord {
  int64_t step = 0;
  double lr = 0, lm_loss = 0, kl_loss = 0, model_grad_norm = 0, indexer_grad_norm = 0, tokens_per_s = 0;
};
struct TrainResult {
  std::vector<StepRecord> records;      // the steps run by THIS call (resumed steps excluded)
  int64_t start_step = 0;               // 0, or the step of the checkpoint resumed from
  std::string final_checkpoint;         // empty when stopped early
  double seconds = 0;
  double val_loss = 0;                  // at the end (mode: dense for pretrain/warmup, DSA for sparse)
};

// Throws dsa::Error naming the flag of the first bad option that needs no corpus, model or run folder
// (so a command line can be refused before anything is written). train_stage runs it too.
void check_train_options(const TrainOptions& options);
// Throws dsa::Error naming the problem if the stage cannot start, reading files only: the model it
// would start from (its own newest checkpoint, else --init or the previous stage's final checkpoint,
// else a fresh model of options.config) must exist, be valid, and fit the tokenizer's vocab_size and
// --seq-len. `dsa train` runs it before it writes anything; train_stage runs it too.
void check_stage_start(const TrainOptions& options, int vocab_size);
// Runs (or resumes) one stage. The corpus and tokenizer are those of the run.
TrainResult train_stage(const TrainOptions& options, const Corpus& corpus, const Tokenizer& tok);

// The newest complete checkpoint of a stage folder ("" if none); the final one of a finished stage.
std::string latest_checkpoint(const std::string& stage_dir);
std::string final_checkpoint(const std::string& stage_dir);   // dsa::Error if the stage did not finish
// A model folder from anything a user may name as a checkpoint: a model folder itself (config.json
// inside), a stage's `final` or `latest` pointer file, a stage folder (its final checkpoint) or a run
// folder (the final checkpoint of its last finished stage: sparse, else warmup, else pretrain).
// Throws dsa::Error saying what the path is and what it lacks.
std::string resolve_checkpoint(const std::string& path);

// ── Evaluation (src/train/eval.cpp) ───────────────────────────────────────────────────────────
struct EvalOptions {
  std::string run_dir;                  // the run (its stages' checkpoints, its data)
  std::string out_dir;                  // results go here; "" = run_dir/eval
  std::string checkpoint;               // "" = the sparse stage's final checkpoint
  std::string baseline;                 // dense baseline; "" = the pretrain stage's final (if any)
  int topk = 0;                         // the trained k; ≤ 0: config.index_topk
  int seq_len = 0;                      // validation context; ≤ 0: 8·k
  int val_sequences = 8;
  std::vector<int> ks;                  // PPL / recall at these k; empty: k/4, k/2, k, 2k
  std::vector<int> passkey_lengths;     // empty: 4k, 8k, 16k
  std::vector<double> depths = {0.1, 0.3, 0.5, 0.7, 0.9};
  int passkey_trials = 4;               // per (length, depth, mode)
  int speed_context = 0;                // ≤ 0: the longest passkey length
  int decode_tokens = 32;
  int prefill_chunk = 256;
  // Threads of the speed measurement (≤ 0: OpenMP's default). One thread by default: on a shared,
  // oversubscribed machine the many short parallel regions of a decode step measure OpenMP's
  // barrier waits rather than the arithmetic (measured at load ~15 on 2 cores, context 2048: DSA
  // decode 693 ms/token with 2 threads, 1.24 ms/token with 1; docs/perf.md "Training demo").
  int speed_threads = 1;
  uint64_t seed = 7;
  bool plots = true;
  // Per-row k (model.h SelectionPolicy): PPL, recall, passkey and the k distribution per layer of
  // fixed k, mass, per-layer table and entropy policies over a range of budgets, the entropy policy
  // fitted on calibration sequences (not the evaluated ones), and prefill / decode time at
  // speed_context (src/train/eval_dynamic_k.cpp; dynamic_k.csv, ppl_vs_avg_k.png).
  bool dynamic_k = false;
  // As TrainOptions::attach_device: the PPL and passkey passes run there (recall, the attention map
  // and the speed test stay on the CPU).
  std::function<void(model::Model&)> attach_device;
};

// A two-sided 95% interval.
struct Interval {
  double lo = 0, hi = 0;
};
// Wilson score interval of a proportion (correct of n trials); n = 0 gives [0, 1].
Interval wilson_interval(int64_t correct, int64_t n);
// Student-t interval of the mean of x (n ≥ 2; n < 2 gives [mean, mean]).
Interval mean_interval(const std::vector<double>& x);

struct EvalReport {
  struct PplRow { std::string what; int k = 0; double loss = 0, ppl = 0; };
  struct RecallRow { int k = 0; double mass = 0, oracle = 0, overlap = 0; };   // Model::RecallStats
  // correct: trials whose whole key is the greedy continuation; digits_*: per key token (chance ≈ 0.1).
  struct PasskeyRow { std::string mode; int length = 0; double depth = 0; int correct = 0, trials = 0, digits_correct = 0, digits_total = 0; };
  // avg_k: keys attended per query row and layer over the session's prefill and decode (kSparse).
  struct SpeedRow { std::string mode; int context = 0; double prefill_s = 0, prefill_tok_s = 0, decode_ms_per_token = 0, avg_k = 0; };
  std::vector<PplRow> ppl;
  std::vector<RecallRow> recall;
  std::vector<PasskeyRow> passkey;
  std::vector<SpeedRow> speed;
  int topk = 0, seq_len = 0;
  double dense_ppl = 0, dsa_ppl = 0;    // the final model at the trained k
  double ppl_ratio = 0;                 // dsa_ppl / dense_ppl
  // 95% intervals over the validation sequences: PPL from each sequence's mean loss, the ratio from
  // the paired per-sequence differences of DSA and dense loss (the same text under both).
  Interval dense_ppl_ci, dsa_ppl_ci, ppl_ratio_ci;
  double recall_mass = 0, recall_oracle = 0, recall_overlap = 0;
  std::vector<double> recall_layer_mass, recall_layer_oracle;   // per layer at the trained k
  double passkey_dense = 0, passkey_dsa = 0, passkey_window = 0;   // accuracies over every cell
  Interval passkey_dense_ci, passkey_dsa_ci, passkey_window_ci;    // 95% Wilson intervals over every trial
  double digits_dense = 0, digits_dsa = 0, digits_window = 0;      // per-token accuracies over every cell
  // make_copy repeats of held-out text at the longest passkey length: argmax accuracy per repeat token
  double copy_dense = 0, copy_dsa = 0, copy_window = 0;
  int copy_length = 0;
  double prefill_speedup = 0, decode_speedup = 0;                  // dense time / DSA time
  int speed_threads = 1;

  // ── per-row k (EvalOptions::dynamic_k) ──
  struct DynamicKRow {
    std::string family;                 // fixed, mass, table, entropy
    std::string policy;                 // model::describe of the policy
    int budget = 0;                     // the pass's top-k buffer (the largest k a row may get)
    double avg_k = 0;                   // keys per query row, all layers (rows with fewer keys count what they have)
    std::vector<double> layer_avg, layer_p50, layer_p99;
    double loss = 0, ppl = 0;
    Interval ppl_ci;                    // 95% over the validation sequences
    double recall = 0, ceiling = 0;     // dense attention mass on each row's own k keys; the dense top-k_t's
    int passkey_correct = 0, passkey_trials = 0;
    std::vector<double> seq_loss;       // per validation sequence (paired comparisons)
  };
  std::vector<DynamicKRow> dynamic_k;
  // Entropy fit on the calibration sequences: log k_need = log a + b·H over every layer's rows,
  // k_need = the smallest k of the indexer's order holding need_mass of the dense attention.
  double need_mass = 0, fit_a = 0, fit_b = 0, fit_r2 = 0;
  int64_t fit_rows = 0;
  std::vector<SpeedRow> dynamic_speed;  // mode = the policy
};

// Dense attention of one layer for one sequence (head mean, [T, T], 0 above the diagonal) and the
// indexer's top-k selection at that layer ([T, K], −1 = unused): the evaluation's attention-map plot.
struct AttentionMap {
  int T = 0, K = 0;
  std::vector<float> probs;
  std::vector<int32_t> selected;
};
AttentionMap attention_map(const model::Model& m, const std::vector<int32_t>& tokens, int layer, int topk);
void write_attention_map_plot(const AttentionMap& map, const std::string& dir, const std::string& title);

// Evaluates a run; writes CSVs and PNGs into out_dir (run_dir/eval) and returns the numbers.
EvalReport evaluate_run(const EvalOptions& options, const Corpus& corpus, const Tokenizer& tok);
// The final table (terminal form), also written to summary.txt in the output folder by evaluate_run.
std::string format_report(const EvalReport& r);

// ── Files ─────────────────────────────────────────────────────────────────────────────────────
// Writes text to path through a temporary name (path.tmp-PID-N) + fsync + rename; a failed write
// (full disk, read-only file system) throws dsa::Error naming the path and the cause, target untouched.
void write_file_atomic(const std::string& path, const std::string& text);
// Runs gnuplot on a script (returns false, printing nothing, when gnuplot is missing).
bool run_gnuplot(const std::string& script_path);

}  // namespace dsa::train
