// eval_dynamic_k.cpp — per-row k in `dsa eval --dynamic-k`: fixed k against the dynamic policies of
// include/dsa/model.h SelectionPolicy (ops.h §4 TopkPolicy) at matched average budgets.
//   * fixed k over a range of budgets (today's path, no topk_length): the curve to beat;
//   * mass: each row keeps the smallest k whose indexer softmax mass reaches p, within [1, 2k];
//   * mass-floor: the same within [k/4, 2k] (the indexer's softmax is sharper than the attention it
//     imitates, so the bare mass rule starves rows whose attention is spread);
//   * table: per layer, the mean k the mass policy picks at the same p on calibration sequences
//     (the static version of the mass policy: same budget, no per-row choice);
//   * entropy: k = ceil(a·exp(b·H)), (a, b) fitted on calibration sequences by least squares of
//     log k_need on the indexer's entropy H, k_need = the k of the indexer's order that holds
//     kNeedMass of the dense attention; swept over multiples of a.
// Calibration uses training-split text, never the evaluated validation windows. Every row reports
// PPL (with its 95% interval over the validation sequences), recall (dense attention mass on each
// row's own keys), passkey hits and the per-layer mean / p50 / p99 of k.
#include "train/eval_dynamic_k.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include <omp.h>

namespace dsa::train::detail {
namespace {

using model::AttentionMode;

// The dense attention mass a row's k must hold in the entropy fit: the project's recall target.
constexpr double kNeedMass = 0.9;
// Budgets of the fixed-k curve, as fractions of the trained k (k/8 … 2k).
constexpr double kFixedFractions[] = {0.125, 0.25, 0.375, 0.5, 0.75, 1.0, 1.5, 2.0};
constexpr double kMassP[] = {0.3, 0.5, 0.7, 0.8, 0.9, 0.95};
constexpr double kEntropyScales[] = {0.25, 0.5, 1.0, 2.0, 4.0};   // multiples of the fitted a
constexpr int kDynamicBudgetFactor = 2;   // a dynamic row may keep up to 2k keys
constexpr int kFloorDivisor = 4;          // mass-floor: k_min = k/4
constexpr int kCalibSequences = 8;
constexpr uint64_t kCalibSeed = 0xCA11B;
constexpr double kPlotFloor = 0.99, kPlotCeiling = 1.15;   // y range of the plot, × the dense PPL
constexpr int kSpeedRepeats = 2;          // the faster of two timings (a shared machine's noise is one-sided)

struct PassStats {
  std::vector<double> seq_loss;
  std::vector<std::vector<int64_t>> hist;   // [layer][k]
};

// LM loss per sequence and the k histogram of a kSparse pass at `budget` under the model's policy.
PassStats run_sparse(const model::Model& m, const model::Batch& b, int budget) {
  PassStats s;
  size_t at = 0;
  for (const int len : b.seq_lens) {
    model::Batch one;
    one.tokens.assign(b.tokens.begin() + static_cast<std::ptrdiff_t>(at), b.tokens.begin() + static_cast<std::ptrdiff_t>(at + len));
    one.targets.assign(b.targets.begin() + static_cast<std::ptrdiff_t>(at), b.targets.begin() + static_cast<std::ptrdiff_t>(at + len));
    one.seq_lens = {len};
    const model::Losses l = m.evaluate(one, AttentionMode::kSparse, budget);
    s.seq_loss.push_back(l.lm_loss);
    if (s.hist.size() < l.k_histogram.size()) s.hist.resize(l.k_histogram.size());
    for (size_t layer = 0; layer < l.k_histogram.size(); ++layer) {
      auto& h = s.hist[layer];
      if (h.size() < l.k_histogram[layer].size()) h.resize(l.k_histogram[layer].size(), 0);
      for (size_t k = 0; k < l.k_histogram[layer].size(); ++k) h[k] += l.k_histogram[layer][k];
    }
    at += static_cast<size_t>(len);
  }
  return s;
}

double hist_mean(const std::vector<int64_t>& h) {
  double n = 0, sum = 0;
  for (size_t k = 0; k < h.size(); ++k) n += static_cast<double>(h[k]), sum += static_cast<double>(k) * static_cast<double>(h[k]);
  return n > 0 ? sum / n : 0.0;
}
// The smallest k with at least q of the rows at or below it.
double hist_quantile(const std::vector<int64_t>& h, double q) {
  int64_t n = 0;
  for (const int64_t c : h) n += c;
  int64_t below = 0;
  for (size_t k = 0; k < h.size(); ++k) {
    below += h[k];
    if (static_cast<double>(below) >= q * static_cast<double>(n)) return static_cast<double>(k);
  }
  return static_cast<double>(h.empty() ? 0 : h.size() - 1);
}

double mean(const std::vector<double>& x) {
  double s = 0;
  for (const double v : x) s += v;
  return x.empty() ? 0.0 : s / static_cast<double>(x.size());
}

EvalReport::DynamicKRow measure(model::Model& m, const std::string& family, const model::SelectionPolicy& policy, int budget,
                                const model::Batch& val, const std::vector<PasskeySample>& passkeys) {
  m.set_selection_policy(policy);
  EvalReport::DynamicKRow row;
  row.family = family;
  row.policy = model::describe(policy);
  row.budget = budget;
  const PassStats s = run_sparse(m, val, budget);
  row.seq_loss = s.seq_loss;
  row.loss = mean(s.seq_loss);
  row.ppl = std::exp(row.loss);
  const Interval ci = mean_interval(s.seq_loss);
  row.ppl_ci = {std::exp(ci.lo), std::exp(ci.hi)};
  std::vector<int64_t> all;
  for (const auto& h : s.hist) {
    row.layer_avg.push_back(hist_mean(h));
    row.layer_p50.push_back(hist_quantile(h, 0.5));
    row.layer_p99.push_back(hist_quantile(h, 0.99));
    if (all.size() < h.size()) all.resize(h.size(), 0);
    for (size_t k = 0; k < h.size(); ++k) all[k] += h[k];
  }
  row.avg_k = hist_mean(all);
  const auto rs = m.indexer_recall(val, budget);
  row.recall = rs.mass_in_selected;
  row.ceiling = rs.oracle_mass;
  const auto pk = passkey_tally(m, passkeys, budget);
  row.passkey_correct = pk.first;
  row.passkey_trials = pk.second;
  return row;
}

// Least squares of log k_need on H over every layer's rows (r² of that line too).
void fit_entropy(const model::Model::RecallStats& rs, EvalReport& r) {
  double n = 0, sx = 0, sy = 0, sxx = 0, sxy = 0, syy = 0;
  for (size_t l = 0; l < rs.row_entropy.size(); ++l)
    for (size_t i = 0; i < rs.row_entropy[l].size(); ++i) {
      const double x = rs.row_entropy[l][i], y = std::log(static_cast<double>(rs.row_need[l][i]));
      n += 1, sx += x, sy += y, sxx += x * x, sxy += x * y, syy += y * y;
    }
  if (n < 2) throw Error("eval: --dynamic-k found fewer than 2 calibration rows to fit the entropy policy to");
  const double vx = sxx - sx * sx / n, vy = syy - sy * sy / n, cxy = sxy - sx * sy / n;
  r.fit_rows = static_cast<int64_t>(n);
  r.fit_b = vx > 0 ? cxy / vx : 0.0;
  r.fit_a = std::exp((sy - r.fit_b * sx) / n);
  r.fit_r2 = vx > 0 && vy > 0 ? cxy * cxy / (vx * vy) : 0.0;
}

void write_files(const std::filesystem::path& dir, const EvalReport& r, bool plots) {
  std::ostringstream csv, by_layer, spd;
  csv << "family,policy,budget,avg_k,loss,ppl,ppl_lo95,ppl_hi95,recall,ceiling,passkey_correct,passkey_trials\n";
  by_layer << "family,policy,layer,avg_k,p50_k,p99_k\n";
  for (const auto& x : r.dynamic_k) {
    csv << x.family << ",\"" << x.policy << "\"," << x.budget << "," << x.avg_k << "," << x.loss << "," << x.ppl << "," << x.ppl_ci.lo << ","
        << x.ppl_ci.hi << "," << x.recall << "," << x.ceiling << "," << x.passkey_correct << "," << x.passkey_trials << "\n";
    for (size_t l = 0; l < x.layer_avg.size(); ++l)
      by_layer << x.family << ",\"" << x.policy << "\"," << l << "," << x.layer_avg[l] << "," << x.layer_p50[l] << "," << x.layer_p99[l] << "\n";
  }
  spd << "policy,context,avg_k,prefill_s,prefill_tok_s,decode_ms_per_token\n";
  for (const auto& x : r.dynamic_speed)
    spd << "\"" << x.mode << "\"," << x.context << "," << x.avg_k << "," << x.prefill_s << "," << x.prefill_tok_s << "," << x.decode_ms_per_token << "\n";
  write_file_atomic((dir / "dynamic_k.csv").string(), csv.str());
  write_file_atomic((dir / "dynamic_k_by_layer.csv").string(), by_layer.str());
  write_file_atomic((dir / "dynamic_speed.csv").string(), spd.str());
  if (!plots) return;
  // PPL vs the average k actually attended: one curve per family (the eval plots' gnuplot approach).
  const std::string d = dir.string();
  std::ostringstream gp;
  gp << "set terminal pngcairo size 900,500 noenhanced\nset datafile separator ','\nset grid\nset key outside right\n"
     << "set output '" << d << "/ppl_vs_avg_k.png'\nset title 'validation perplexity vs average selected keys per row (context " << r.seq_len
     << ")'\nset xlabel 'average k (keys attended per query row, all layers)'\nset ylabel 'perplexity'\nset logscale x 2\n"
     // the region where the policies compete: within 15% of the dense PPL (starved budgets run off the top)
     << "set yrange [" << kPlotFloor * r.dense_ppl << ":" << kPlotCeiling * r.dense_ppl << "]\nplot";
  const char* families[] = {"fixed", "mass", "mass-floor", "table", "entropy"};
  for (int i = 0; i < 5; ++i)
    gp << (i ? "," : "") << " \"< grep '^" << families[i] << ",' " << d << "/dynamic_k.csv | sort -t, -k4 -g\" using 4:6 with linespoints lw 2 title '"
       << families[i] << "'";
  gp << ", " << r.dense_ppl << " with lines dt 2 lw 2 title 'dense'\n";
  write_file_atomic((dir / "dynamic_k.gp").string(), gp.str());
  run_gnuplot((dir / "dynamic_k.gp").string());
}

}  // namespace

void evaluate_dynamic_k(model::Model& m, const EvalOptions& o, const Corpus& corpus, const Tokenizer& tok, const Loader& loader,
                        const model::Batch& val, const std::vector<int>& passkey_lengths, int context,
                        const std::filesystem::path& dir, EvalReport& r) {
  const model::SelectionPolicy saved = m.selection_policy();
  const int k = r.topk;
  const int wide = kDynamicBudgetFactor * k;
  // Calibration sequences: training-split text only (no synthetic tasks), never the evaluated windows.
  LoaderOptions co;
  co.batch_size = kCalibSequences;
  co.seq_len = r.seq_len;
  co.seed = kCalibSeed;
  const model::Batch calib = Loader(corpus, tok, co).batch(0);
  std::vector<PasskeySample> passkeys;
  for (int len : passkey_lengths)
    for (double depth : o.depths)
      for (int t = 0; t < o.passkey_trials; ++t) {
        PasskeySample s = make_passkey(tok, loader.val_stream(), len, depth, PasskeySplit::kEval,
                                       o.seed * 1000003u + static_cast<uint64_t>(len) * 101u + static_cast<uint64_t>(t * 1000 + depth * 100));
        s.tokens.insert(s.tokens.begin(), tok.bos_id());   // BOS first, as in training
        ++s.answer_begin;
        passkeys.push_back(std::move(s));
      }

  for (const double f : kFixedFractions) {
    const int kk = std::max(1, static_cast<int>(std::lround(f * k)));
    r.dynamic_k.push_back(measure(m, "fixed", {}, kk, val, passkeys));
  }
  // The mass policy and its per-layer table at the same p (the table's k: the calibration mean).
  std::vector<model::SelectionPolicy> mass_policies;
  for (const double p : kMassP) {
    model::SelectionPolicy s;
    s.rule.kind = TopkPolicyKind::kMass;
    s.rule.p = p;
    mass_policies.push_back(s);
    r.dynamic_k.push_back(measure(m, "mass", s, wide, val, passkeys));
    s.rule.k_min = std::max(1, k / kFloorDivisor);
    r.dynamic_k.push_back(measure(m, "mass-floor", s, wide, val, passkeys));
  }
  for (const auto& s : mass_policies) {
    m.set_selection_policy(s);
    const PassStats cal = run_sparse(m, calib, wide);
    model::SelectionPolicy table;
    for (const auto& h : cal.hist) table.layer_k.push_back(std::clamp(static_cast<int>(std::lround(hist_mean(h))), 1, wide));
    r.dynamic_k.push_back(measure(m, "table", table, wide, val, passkeys));
  }
  // The entropy policy, fitted on the calibration rows at the default selection.
  m.set_selection_policy({});
  r.need_mass = kNeedMass;
  fit_entropy(m.indexer_recall(calib, wide, kNeedMass), r);
  for (const double scale : kEntropyScales) {
    model::SelectionPolicy s;
    s.rule.kind = TopkPolicyKind::kEntropy;
    s.rule.a = r.fit_a * scale;
    s.rule.b = r.fit_b;
    r.dynamic_k.push_back(measure(m, "entropy", s, wide, val, passkeys));
  }

  // Speed at `context`: fixed k (today's path), fixed k through the ragged path (the same keys with
  // topk_length: its overhead), fixed k/2, and the mass and fitted entropy policies.
  const int saved_threads = omp_get_max_threads();
  if (o.speed_threads > 0) omp_set_num_threads(o.speed_threads);
  auto timed = [&](const std::string& name, int budget, const model::SelectionPolicy& s) {
    EvalReport::SpeedRow best;
    for (int i = 0; i < kSpeedRepeats; ++i) {
      EvalReport::SpeedRow x = time_session(m, AttentionMode::kSparse, budget, loader.val_stream(), context, o.decode_tokens, o.prefill_chunk, s);
      if (i == 0 || x.prefill_s < best.prefill_s) best.prefill_s = x.prefill_s, best.prefill_tok_s = x.prefill_tok_s;
      if (i == 0 || x.decode_ms_per_token < best.decode_ms_per_token) best.decode_ms_per_token = x.decode_ms_per_token;
      best.context = x.context;
      best.avg_k = x.avg_k;
    }
    best.mode = name;
    r.dynamic_speed.push_back(best);
  };
  model::SelectionPolicy ragged_fixed;
  ragged_fixed.rule.k_max = k;
  model::SelectionPolicy mass90;
  mass90.rule.kind = TopkPolicyKind::kMass;
  mass90.rule.p = 0.9;
  model::SelectionPolicy fitted;
  fitted.rule.kind = TopkPolicyKind::kEntropy;
  fitted.rule.a = r.fit_a;
  fitted.rule.b = r.fit_b;
  timed("fixed k=" + std::to_string(k), k, {});
  timed("fixed k=" + std::to_string(k) + " via topk_length (budget " + std::to_string(wide) + ")", wide, ragged_fixed);
  timed("fixed k=" + std::to_string(std::max(1, k / 2)), std::max(1, k / 2), {});
  timed(model::describe(mass90), wide, mass90);
  timed(model::describe(fitted), wide, fitted);
  omp_set_num_threads(saved_threads);
  m.set_selection_policy(saved);
  write_files(dir, r, o.plots);
}

std::string format_dynamic_k(const EvalReport& r) {
  if (r.dynamic_k.empty()) return "";
  std::ostringstream s;
  char line[320];
  s << "  per-row k (context " << r.seq_len << "; avg k = keys attended per query row, all layers; recall = dense attention mass on them)\n";
  s << "    family     policy                                 budget   avg k   layer avg / p50 / p99 k          ppl  [95%]              recall   passkey\n";
  for (const auto& x : r.dynamic_k) {
    std::string layers;
    for (size_t l = 0; l < x.layer_avg.size(); ++l) {
      char b[64];
      std::snprintf(b, sizeof b, "%s%.1f/%.0f/%.0f", l ? "  " : "", x.layer_avg[l], x.layer_p50[l], x.layer_p99[l]);
      layers += b;
    }
    std::snprintf(line, sizeof line, "    %-10s %-38s %6d %7.2f   %-30s %8.3f [%.3f, %.3f] %7.4f   %d/%d\n", x.family.c_str(), x.policy.c_str(), x.budget,
                  x.avg_k, layers.c_str(), x.ppl, x.ppl_ci.lo, x.ppl_ci.hi, x.recall, x.passkey_correct, x.passkey_trials);
    s << line;
  }
  std::snprintf(line, sizeof line, "    entropy fit on %lld calibration rows: k_need(%.2f of the attention) = %.3f * exp(%.3f * H), r^2 = %.3f\n",
                static_cast<long long>(r.fit_rows), r.need_mass, r.fit_a, r.fit_b, r.fit_r2);
  s << line;
  s << "  per-row k speed (CPU session, fp32 caches, " << r.speed_threads << " thread" << (r.speed_threads == 1 ? "" : "s") << ", faster of "
    << kSpeedRepeats << "):\n";
  for (const auto& x : r.dynamic_speed) {
    std::snprintf(line, sizeof line, "    %-52s context %6d, avg k %7.2f: prefill %8.3f s, decode %8.3f ms/token\n", x.mode.c_str(), x.context,
                  x.avg_k, x.prefill_s, x.decode_ms_per_token);
    s << line;
  }
  return s.str();
}

}  // namespace dsa::train::detail
