// eval.cpp — evaluation of a trained run (include/dsa/train.h): validation perplexity dense vs DSA at
// several k, indexer recall and top-k overlap, passkey retrieval (dense / DSA / sliding window with
// the same key budget) by length and depth, and long-context prefill/decode speed dense vs DSA.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <omp.h>

#include "dsa/ops.h"
#include "dsa/train.h"
#include "train/eval_dynamic_k.h"
#include "train/rng.h"

namespace fs = std::filesystem;

namespace dsa::train {
namespace {

using model::AttentionMode;

const char* mode_name(AttentionMode m) {
  switch (m) {
    case AttentionMode::kDense: return "dense";
    case AttentionMode::kSparse: return "dsa";
    case AttentionMode::kWindow: return "window";
  }
  return "?";
}

int32_t argmax(const float* row, int n) {
  int32_t best = 0;
  for (int i = 1; i < n; ++i)
    if (row[i] > row[best]) best = i;   // strict: ties keep the smaller id
  return best;
}

// Passkey cell: `trials` haystacks packed in one batch; only the answer positions are scored. A trial
// is correct when every answer token is the argmax given the correct prefix — exactly when greedy
// decoding would print the key.
struct PasskeyScore {
  int correct = 0, digits_correct = 0, digits_total = 0;
};
// BOS first, as in training (Loader::batch): the sample grows by one token, the answer moves by one.
PasskeySample with_bos(PasskeySample s, int32_t bos) {
  s.tokens.insert(s.tokens.begin(), bos);
  ++s.answer_begin;
  return s;
}

PasskeyScore passkey_score(const model::Model& m, const std::vector<PasskeySample>& samples, AttentionMode mode, int k) {
  model::Batch b;
  for (const auto& s : samples) {
    const int len = static_cast<int>(s.tokens.size()) - 1;
    b.tokens.insert(b.tokens.end(), s.tokens.begin(), s.tokens.end() - 1);
    std::vector<int32_t> tg(static_cast<size_t>(len), -1);
    for (int j = 0; j < s.answer_len; ++j) tg[static_cast<size_t>(s.answer_begin - 1 + j)] = s.tokens[static_cast<size_t>(s.answer_begin + j)];
    b.targets.insert(b.targets.end(), tg.begin(), tg.end());
    b.seq_lens.push_back(len);
  }
  const int vocab = m.config().vocab_size;
  const std::vector<float> logits = m.logits(b, mode, k);
  PasskeyScore score;
  size_t base = 0;
  for (size_t i = 0; i < samples.size(); ++i) {
    const auto& s = samples[i];
    bool ok = true;
    for (int j = 0; j < s.answer_len; ++j) {
      const size_t row = base + static_cast<size_t>(s.answer_begin - 1 + j);
      const bool hit = argmax(logits.data() + row * static_cast<size_t>(vocab), vocab) == s.tokens[static_cast<size_t>(s.answer_begin + j)];
      ok = ok && hit;
      score.digits_correct += hit ? 1 : 0;
      ++score.digits_total;
    }
    score.correct += ok ? 1 : 0;
    base += static_cast<size_t>(b.seq_lens[i]);
  }
  return score;
}

// Mean LM loss of each sequence of a packed batch, evaluated one sequence at a time.
std::vector<double> per_sequence_loss(const model::Model& m, const model::Batch& b, AttentionMode mode, int k) {
  std::vector<double> out;
  size_t at = 0;
  for (int len : b.seq_lens) {
    model::Batch one;
    one.tokens.assign(b.tokens.begin() + static_cast<std::ptrdiff_t>(at), b.tokens.begin() + static_cast<std::ptrdiff_t>(at + len));
    one.targets.assign(b.targets.begin() + static_cast<std::ptrdiff_t>(at), b.targets.begin() + static_cast<std::ptrdiff_t>(at + len));
    one.seq_lens = {len};
    out.push_back(m.evaluate(one, mode, k).lm_loss);
    at += static_cast<size_t>(len);
  }
  return out;
}

double mean_of(const std::vector<double>& x) {
  double s = 0;
  for (double v : x) s += v;
  return x.empty() ? 0.0 : s / static_cast<double>(x.size());
}

Interval exp_interval(const Interval& i) { return {std::exp(i.lo), std::exp(i.hi)}; }

}  // namespace

namespace detail {
EvalReport::SpeedRow time_session(const model::Model& m, AttentionMode mode, int k, const std::vector<int32_t>& text, int context,
                                  int decode_tokens, int chunk, const model::SelectionPolicy& selection) {
  model::SessionOptions so;
  so.mode = mode;
  so.selection = selection;
  so.kv_format = KvCacheFormat::kFp32;
  so.indexer_precision = Precision::kFp32;
  so.topk = k;
  so.max_tokens = context + decode_tokens + 1;
  so.allow_beyond_max_position = true;   // a speed measurement: the decode steps may run past the trained context
  model::Session session(m, so);
  const std::vector<int32_t> prompt(text.begin(), text.begin() + context);
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<float> logits = session.prefill(prompt, chunk);
  const auto t1 = std::chrono::steady_clock::now();
  const int vocab = m.config().vocab_size;
  for (int i = 0; i < decode_tokens; ++i) logits = session.decode(argmax(logits.data(), vocab));
  const auto t2 = std::chrono::steady_clock::now();
  EvalReport::SpeedRow r;
  r.mode = mode_name(mode);
  r.context = context;
  r.prefill_s = std::chrono::duration<double>(t1 - t0).count();
  r.prefill_tok_s = context / std::max(r.prefill_s, 1e-9);
  r.decode_ms_per_token = 1e3 * std::chrono::duration<double>(t2 - t1).count() / std::max(1, decode_tokens);
  r.avg_k = session.mean_selected_keys();
  return r;
}

std::pair<int, int> passkey_tally(const model::Model& m, const std::vector<PasskeySample>& samples, int k) {
  const PasskeyScore sc = passkey_score(m, samples, AttentionMode::kSparse, k);
  return {sc.correct, static_cast<int>(samples.size())};
}
}  // namespace detail

namespace {
using detail::time_session;

void write_text(const fs::path& p, const std::string& s) { write_file_atomic(p.string(), s); }

void write_plots(const fs::path& dir, const EvalReport& r, const EvalOptions& o) {
  const std::string d = dir.string();
  std::ostringstream gp;
  gp << "set terminal pngcairo size 900,500 noenhanced\nset datafile separator ','\nset grid\nset key outside right\n";
  // PPL vs k: the DSA curve with the dense PPL of the same model as a horizontal line.
  gp << "set output '" << d << "/ppl_vs_k.png'\nset title 'validation perplexity vs k (context " << r.seq_len << ")'\n"
     << "set xlabel 'k (selected keys)'\nset ylabel 'perplexity'\nset logscale x 2\n"
     << "plot \"< grep '^dsa,' " << d << "/ppl.csv\" using 2:4 with linespoints lw 2 title 'DSA', "
     << "\"< grep '^window,' " << d << "/ppl.csv\" using 2:4 with linespoints lw 2 title 'sliding window', "
     << r.dense_ppl << " with lines dt 2 lw 2 title 'dense'\nunset logscale x\n";
  gp << "set output '" << d << "/recall.png'\nset title 'indexer recall vs k'\nset xlabel 'k'\nset ylabel 'share'\n"
     << "set yrange [0:1.05]\nset logscale x 2\nplot '" << d << "/recall.csv' using 1:2 with linespoints lw 2 title 'attention mass in selection', '' using 1:3 with linespoints lw 2 title 'top-k overlap', '' using 1:4 with linespoints lw 2 dt 2 title 'ceiling: dense attention own top-k'\n"
     << "unset logscale x\n";
  // Passkey accuracy by depth (all lengths) and by length (all depths), per mode.
  gp << "set output '" << d << "/passkey_by_depth.png'\nset title 'passkey accuracy by depth'\nset xlabel 'depth of the key'\n"
     << "set ylabel 'accuracy'\nset yrange [0:1.05]\nplot";
  const char* modes[] = {"dense", "dsa", "window"};
  for (int i = 0; i < 3; ++i)
    gp << (i ? "," : "") << " '" << d << "/passkey_by_depth.csv' using 1:" << (i + 2) << " with linespoints lw 2 title '" << modes[i] << "'";
  gp << "\nset output '" << d << "/passkey_by_length.png'\nset title 'passkey accuracy by context length (k = " << r.topk
     << ")'\nset xlabel 'context (tokens)'\nset logscale x 2\nplot";
  for (int i = 0; i < 3; ++i)
    gp << (i ? "," : "") << " '" << d << "/passkey_by_length.csv' using 1:" << (i + 2) << " with linespoints lw 2 title '" << modes[i] << "'";
  gp << "\n";
  write_text(dir / "plots.gp", gp.str());
  (void)o;
  run_gnuplot((dir / "plots.gp").string());
}

}  // namespace

Interval wilson_interval(int64_t correct, int64_t n) {
  if (n <= 0) return {0.0, 1.0};
  const double z = 1.959963984540054, p = static_cast<double>(correct) / static_cast<double>(n), nn = static_cast<double>(n);
  const double centre = (p + z * z / (2 * nn)) / (1 + z * z / nn);
  const double half = z / (1 + z * z / nn) * std::sqrt(p * (1 - p) / nn + z * z / (4 * nn * nn));
  return {std::max(0.0, centre - half), std::min(1.0, centre + half)};
}

Interval mean_interval(const std::vector<double>& x) {
  const double mean = mean_of(x);
  const size_t n = x.size();
  if (n < 2) return {mean, mean};
  double ss = 0;
  for (double v : x) ss += (v - mean) * (v - mean);
  // Two-sided 97.5% quantiles of Student's t for 1..30 degrees of freedom; the normal's beyond.
  static const double kT[30] = {12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
                                2.120,  2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042};
  const size_t df = n - 1;
  const double t = df <= 30 ? kT[df - 1] : 1.96;
  const double half = t * std::sqrt(ss / static_cast<double>(df) / static_cast<double>(n));
  return {mean - half, mean + half};
}

EvalReport evaluate_run(const EvalOptions& o, const Corpus& corpus, const Tokenizer& tok) {
  if (o.run_dir.empty()) throw Error("eval: --run is empty");
  const std::string ckpt = o.checkpoint.empty() ? final_checkpoint((fs::path(o.run_dir) / "sparse").string()) : o.checkpoint;
  if (!fs::exists(fs::path(ckpt) / "config.json")) throw Error("eval: --checkpoint " + ckpt + " is not a checkpoint folder");
  model::Model m = model::Model::load(ckpt);
  if (o.attach_device) o.attach_device(m);
  if (m.config().vocab_size != corpus.vocab_size) throw Error("eval: the checkpoint's vocab differs from the tokenizer's");
  EvalReport r;
  r.topk = o.topk > 0 ? o.topk : m.config().index_topk;
  const int k = r.topk;
  r.seq_len = o.seq_len > 0 ? o.seq_len : 8 * k;
  std::vector<int> ks = o.ks;
  if (ks.empty()) ks = {std::max(1, k / 4), std::max(1, k / 2), k, 2 * k};
  std::vector<int> lengths = o.passkey_lengths;
  if (lengths.empty()) lengths = {4 * k, 8 * k, 16 * k};
  const int context = o.speed_context > 0 ? o.speed_context : *std::max_element(lengths.begin(), lengths.end());

  // Every option is checked before the first pass, so a bad one costs no evaluation time; the eval
  // folder is written only at the end.
  const int max_pos = m.config().max_position_embeddings;
  auto within = [&](int n, const std::string& what) {
    if (n > max_pos) throw Error("eval: " + what + " " + std::to_string(n) + " exceeds max_position_embeddings " + std::to_string(max_pos));
  };
  if (o.val_sequences <= 0) throw Error("eval: --val-sequences must be > 0");
  if (o.passkey_trials <= 0) throw Error("eval: --trials must be > 0");
  if (o.decode_tokens <= 0) throw Error("eval: --decode-tokens must be > 0");
  within(r.seq_len, "--seq-len");
  const int passkey_floor = synthetic_min_length(SyntheticTask::kPasskey, tok);
  for (int len : lengths) {
    if (len + 1 > max_pos)   // a passkey sequence is fed with its BOS
      throw Error("eval: passkey length " + std::to_string(len) + " (with its BOS " + std::to_string(len + 1) +
                  " tokens) exceeds max_position_embeddings " + std::to_string(max_pos));
    if (len < passkey_floor)
      throw Error("eval: passkey length " + std::to_string(len) + " is shorter than the task (" + std::to_string(passkey_floor) +
                  " tokens)");
  }
  within(context, "--speed-context");
  LoaderOptions lo;
  lo.seq_len = r.seq_len;
  Loader loader(corpus, tok, lo);
  if (static_cast<int64_t>(loader.val_stream().size()) < context) throw Error("eval: --speed-context exceeds the held-out text");
  const model::Batch val = loader.val_batch(o.val_sequences, r.seq_len, 0);

  // ── perplexity ──
  std::string baseline = o.baseline;
  if (baseline.empty()) {
    const fs::path pre = fs::path(o.run_dir) / "pretrain";
    if (fs::exists(pre / "final")) baseline = final_checkpoint(pre.string());
  }
  if (!baseline.empty()) {
    model::Model b = model::Model::load(baseline);
    if (o.attach_device) o.attach_device(b);
    const double loss = b.evaluate(val, AttentionMode::kDense).lm_loss;
    r.ppl.push_back({"dense-pretrain", 0, loss, std::exp(loss)});
  }
  // Dense and DSA at the trained k one sequence at a time: their spread gives the intervals.
  const std::vector<double> dense_seq = per_sequence_loss(m, val, AttentionMode::kDense, 0);
  const std::vector<double> dsa_seq = per_sequence_loss(m, val, AttentionMode::kSparse, k);
  const double dense_loss = mean_of(dense_seq);
  r.ppl.push_back({"dense", 0, dense_loss, std::exp(dense_loss)});
  r.dense_ppl = std::exp(dense_loss);
  r.dense_ppl_ci = exp_interval(mean_interval(dense_seq));
  r.dsa_ppl_ci = exp_interval(mean_interval(dsa_seq));
  std::vector<double> diff(dsa_seq.size());
  for (size_t i = 0; i < diff.size(); ++i) diff[i] = dsa_seq[i] - dense_seq[i];
  r.ppl_ratio_ci = exp_interval(mean_interval(diff));
  for (int kk : ks) {
    const double loss = kk == k ? mean_of(dsa_seq) : m.evaluate(val, AttentionMode::kSparse, kk).lm_loss;
    r.ppl.push_back({"dsa", kk, loss, std::exp(loss)});
    if (kk == k) r.dsa_ppl = std::exp(loss);
    const double wloss = m.evaluate(val, AttentionMode::kWindow, kk).lm_loss;
    r.ppl.push_back({"window", kk, wloss, std::exp(wloss)});
    const auto rs = m.indexer_recall(val, kk);
    r.recall.push_back({kk, rs.mass_in_selected, rs.oracle_mass, rs.topk_overlap});
    if (kk == k) {
      r.recall_mass = rs.mass_in_selected;
      r.recall_overlap = rs.topk_overlap;
      r.recall_oracle = rs.oracle_mass;
      r.recall_layer_mass = rs.layer_mass;
      r.recall_layer_oracle = rs.layer_oracle;
    }
  }
  r.ppl_ratio = r.dsa_ppl / r.dense_ppl;

  // ── passkey retrieval ──
  const AttentionMode modes[] = {AttentionMode::kDense, AttentionMode::kSparse, AttentionMode::kWindow};
  double total[3] = {0, 0, 0}, digits[3] = {0, 0, 0};
  int64_t hits[3] = {0, 0, 0}, tries[3] = {0, 0, 0};
  int cells = 0;
  for (int len : lengths) {
    for (double depth : o.depths) {
      std::vector<PasskeySample> samples;
      for (int t = 0; t < o.passkey_trials; ++t)
        samples.push_back(with_bos(make_passkey(tok, loader.val_stream(), len, depth, PasskeySplit::kEval,
                                                mix_seed(o.seed, static_cast<uint64_t>(len), static_cast<uint64_t>(t * 1000 + depth * 100))),
                                   tok.bos_id()));
      for (int mi = 0; mi < 3; ++mi) {
        const PasskeyScore sc = passkey_score(m, samples, modes[mi], k);
        r.passkey.push_back({mode_name(modes[mi]), len, depth, sc.correct, o.passkey_trials, sc.digits_correct, sc.digits_total});
        total[mi] += static_cast<double>(sc.correct) / o.passkey_trials;
        hits[mi] += sc.correct;
        tries[mi] += o.passkey_trials;
        digits[mi] += static_cast<double>(sc.digits_correct) / std::max(1, sc.digits_total);
      }
      ++cells;
    }
  }
  r.passkey_dense = total[0] / std::max(1, cells);
  r.passkey_dsa = total[1] / std::max(1, cells);
  r.passkey_window = total[2] / std::max(1, cells);
  r.passkey_dense_ci = wilson_interval(hits[0], tries[0]);
  r.passkey_dsa_ci = wilson_interval(hits[1], tries[1]);
  r.passkey_window_ci = wilson_interval(hits[2], tries[2]);
  r.digits_dense = digits[0] / std::max(1, cells);
  r.digits_dsa = digits[1] / std::max(1, cells);
  r.digits_window = digits[2] / std::max(1, cells);

  // ── in-context copy (the induction skill behind retrieval), at the longest passkey length ──
  {
    const int len = *std::max_element(lengths.begin(), lengths.end());
    std::vector<PasskeySample> samples;
    for (int t = 0; t < o.passkey_trials * static_cast<int>(o.depths.size()); ++t)
      samples.push_back(with_bos(make_copy(loader.val_stream(), len, mix_seed(o.seed, static_cast<uint64_t>(len), 0xC0FFEEu + t)),
                                 tok.bos_id()));
    double* out[3] = {&r.copy_dense, &r.copy_dsa, &r.copy_window};
    for (int mi = 0; mi < 3; ++mi) {
      const PasskeyScore sc = passkey_score(m, samples, modes[mi], k);
      *out[mi] = static_cast<double>(sc.digits_correct) / std::max(1, sc.digits_total);
    }
    r.copy_length = len;
  }

  // ── long-context speed ──
  const int saved_threads = omp_get_max_threads();
  if (o.speed_threads > 0) omp_set_num_threads(o.speed_threads);
  for (AttentionMode mode : {AttentionMode::kDense, AttentionMode::kSparse})
    r.speed.push_back(time_session(m, mode, k, loader.val_stream(), context, o.decode_tokens, o.prefill_chunk, {}));
  omp_set_num_threads(saved_threads);
  r.speed_threads = o.speed_threads > 0 ? o.speed_threads : saved_threads;
  r.prefill_speedup = r.speed[0].prefill_s / std::max(r.speed[1].prefill_s, 1e-12);
  r.decode_speedup = r.speed[0].decode_ms_per_token / std::max(r.speed[1].decode_ms_per_token, 1e-12);

  // ── files (and the per-row k evaluation, which writes its own) ──
  const fs::path dir = o.out_dir.empty() ? fs::path(o.run_dir) / "eval" : fs::path(o.out_dir);
  fs::create_directories(dir);
  if (o.dynamic_k) detail::evaluate_dynamic_k(m, o, corpus, tok, loader, val, lengths, context, dir, r);
  std::ostringstream ppl, rec, pk, by_depth, by_len, spd;
  ppl << "mode,k,loss,ppl,ppl_lo95,ppl_hi95\n";   // intervals for dense and DSA at the trained k
  for (const auto& p : r.ppl) {
    ppl << p.what << "," << p.k << "," << p.loss << "," << p.ppl << ",";
    if (p.what == "dense") ppl << r.dense_ppl_ci.lo << "," << r.dense_ppl_ci.hi;
    else if (p.what == "dsa" && p.k == r.topk) ppl << r.dsa_ppl_ci.lo << "," << r.dsa_ppl_ci.hi;
    else ppl << ",";
    ppl << "\n";
  }
  rec << "k,mass_in_selected,topk_overlap,oracle_mass\n";
  for (const auto& x : r.recall) rec << x.k << "," << x.mass << "," << x.overlap << "," << x.oracle << "\n";
  std::ostringstream rec_layer;
  rec_layer << "layer,mass_in_selected,oracle_mass\n";
  for (size_t l = 0; l < r.recall_layer_mass.size(); ++l) rec_layer << l << "," << r.recall_layer_mass[l] << "," << r.recall_layer_oracle[l] << "\n";
  pk << "mode,length,depth,correct,trials,accuracy,accuracy_lo95,accuracy_hi95,digit_accuracy\n";
  for (const auto& x : r.passkey) {
    const Interval ci = wilson_interval(x.correct, x.trials);
    pk << x.mode << "," << x.length << "," << x.depth << "," << x.correct << "," << x.trials << "," << double(x.correct) / x.trials << ","
       << ci.lo << "," << ci.hi << "," << double(x.digits_correct) / std::max(1, x.digits_total) << "\n";
  }
  auto aggregate = [&](bool by_depth_axis, std::ostringstream& out) {
    out << (by_depth_axis ? "depth" : "length") << ",dense,dsa,window\n";
    std::vector<double> keys;
    for (const auto& x : r.passkey) {
      const double key = by_depth_axis ? x.depth : x.length;
      if (std::find(keys.begin(), keys.end(), key) == keys.end()) keys.push_back(key);
    }
    for (double key : keys) {
      out << key;
      for (const char* mode : {"dense", "dsa", "window"}) {
        double c = 0, n = 0;
        for (const auto& x : r.passkey)
          if (x.mode == mode && (by_depth_axis ? x.depth : x.length) == key) {
            c += x.correct;
            n += x.trials;
          }
        out << "," << c / std::max(1.0, n);
      }
      out << "\n";
    }
  };
  aggregate(true, by_depth);
  aggregate(false, by_len);
  spd << "mode,context,prefill_s,prefill_tok_s,decode_ms_per_token\n";
  for (const auto& x : r.speed) spd << x.mode << "," << x.context << "," << x.prefill_s << "," << x.prefill_tok_s << "," << x.decode_ms_per_token << "\n";
  write_text(dir / "ppl.csv", ppl.str());
  write_text(dir / "recall.csv", rec.str());
  write_text(dir / "recall_by_layer.csv", rec_layer.str());
  write_text(dir / "passkey.csv", pk.str());
  write_text(dir / "passkey_by_depth.csv", by_depth.str());
  write_text(dir / "passkey_by_length.csv", by_len.str());
  write_text(dir / "speed.csv", spd.str());
  write_text(dir / "summary.txt", format_report(r));
  if (o.plots) {
    write_plots(dir, r, o);
    // Attention map of the last layer on a held-out passkey haystack (key at depth 0.3).
    const auto sample = make_passkey(tok, loader.val_stream(), r.seq_len, 0.3, PasskeySplit::kEval, o.seed);
    const int layer = m.config().num_hidden_layers - 1;
    write_attention_map_plot(attention_map(m, sample.tokens, layer, k), dir.string(),
                             "layer " + std::to_string(layer) + " attention on a passkey haystack (needle at 30%), DSA top-" +
                                 std::to_string(k) + " marked");
  }
  return r;
}

std::string format_report(const EvalReport& r) {
  std::ostringstream s;
  char line[256];
  s << "DSA evaluation (k = " << r.topk << ", validation context " << r.seq_len << ", held-out documents)\n";
  s << "  perplexity                         loss      ppl\n";
  for (const auto& p : r.ppl) {
    std::string what = p.what;
    if (p.k > 0) what += " k=" + std::to_string(p.k);
    std::snprintf(line, sizeof line, "    %-30s %8.4f %8.3f\n", what.c_str(), p.loss, p.ppl);
    s << line;
  }
  std::snprintf(line, sizeof line, "  DSA/dense perplexity ratio at k=%d: %.4f [%.4f, %.4f]   (target <= 1.02)\n", r.topk, r.ppl_ratio,
                r.ppl_ratio_ci.lo, r.ppl_ratio_ci.hi);
  s << line;
  std::snprintf(line, sizeof line, "    95%% intervals over the validation sequences: dense %.3f [%.3f, %.3f], DSA %.3f [%.3f, %.3f]\n",
                r.dense_ppl, r.dense_ppl_ci.lo, r.dense_ppl_ci.hi, r.dsa_ppl, r.dsa_ppl_ci.lo, r.dsa_ppl_ci.hi);
  s << line;
  s << "  indexer recall            k   attention mass in top-k   top-k overlap   ceiling (dense's own top-k)\n";
  for (const auto& x : r.recall) {
    std::snprintf(line, sizeof line, "    %20d   %23.4f   %13.4f   %27.4f\n", x.k, x.mass, x.overlap, x.oracle);
    s << line;
  }
  std::snprintf(line, sizeof line, "  indexer recall at k=%d: %.4f   (ceiling %.4f; target >= 0.90)\n", r.topk, r.recall_mass,
                r.recall_oracle);
  s << line;
  for (size_t l = 0; l < r.recall_layer_mass.size(); ++l) {
    std::snprintf(line, sizeof line, "    layer %zu: %.4f   (ceiling %.4f)\n", l, r.recall_layer_mass[l], r.recall_layer_oracle[l]);
    s << line;
  }
  s << "  passkey accuracy (by context length, over depths):\n";
  std::vector<int> lengths;
  for (const auto& x : r.passkey)
    if (std::find(lengths.begin(), lengths.end(), x.length) == lengths.end()) lengths.push_back(x.length);
  s << "    context  dense                dsa                  window                (95% Wilson interval)\n";
  for (int len : lengths) {
    double acc[3] = {0, 0, 0}, n[3] = {0, 0, 0};
    const char* modes[] = {"dense", "dsa", "window"};
    for (const auto& x : r.passkey)
      if (x.length == len)
        for (int i = 0; i < 3; ++i)
          if (x.mode == modes[i]) {
            acc[i] += x.correct;
            n[i] += x.trials;
          }
    std::string row = "    " + std::to_string(len);
    row.resize(std::max<size_t>(row.size(), 13), ' ');
    for (int i = 0; i < 3; ++i) {
      const Interval ci = wilson_interval(static_cast<int64_t>(acc[i]), static_cast<int64_t>(n[i]));
      std::snprintf(line, sizeof line, "%.2f [%.2f, %.2f]   ", acc[i] / std::max(1.0, n[i]), ci.lo, ci.hi);
      row += line;
    }
    s << row << "trials " << static_cast<int64_t>(n[0]) << "\n";
  }
  std::snprintf(line, sizeof line, "    all      %.2f [%.2f, %.2f]   %.2f [%.2f, %.2f]   %.2f [%.2f, %.2f]   (target: dsa == dense, above window)\n",
                r.passkey_dense, r.passkey_dense_ci.lo, r.passkey_dense_ci.hi, r.passkey_dsa, r.passkey_dsa_ci.lo, r.passkey_dsa_ci.hi,
                r.passkey_window, r.passkey_window_ci.lo, r.passkey_window_ci.hi);
  s << line;
  std::snprintf(line, sizeof line, "    per key token (chance ~0.1): dense %.3f, dsa %.3f, window %.3f\n", r.digits_dense, r.digits_dsa,
                r.digits_window);
  s << line;
  std::snprintf(line, sizeof line, "  in-context copy at %d tokens, per token of the repeat: dense %.3f, dsa %.3f, window %.3f\n",
                r.copy_length, r.copy_dense, r.copy_dsa, r.copy_window);
  s << line;
  s << "  long-context speed (CPU session, fp32 caches, " << r.speed_threads << " thread" << (r.speed_threads == 1 ? "" : "s") << "):\n";
  for (const auto& x : r.speed) {
    std::snprintf(line, sizeof line, "    %-6s context %6d: prefill %8.3f s (%8.0f tok/s), decode %8.3f ms/token\n", x.mode.c_str(), x.context,
                  x.prefill_s, x.prefill_tok_s, x.decode_ms_per_token);
    s << line;
  }
  std::snprintf(line, sizeof line, "  DSA speed-up over dense: prefill %.2fx, decode %.2fx\n", r.prefill_speedup, r.decode_speedup);
  s << line;
  s << detail::format_dynamic_k(r);
  return s.str();
}

}  // namespace dsa::train
