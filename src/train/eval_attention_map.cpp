// eval_attention_map.cpp — the attention map of one layer for one sequence, with the indexer's
// selected keys, for the evaluation plot. The model's public API gives losses and logits only, so
// this re-runs the layers up to the one drawn with the model's own projection helpers
// (src/model/impl.h: mla_project, indexer_project, absorb_out) and the ops of include/dsa/ops.h, in
// dense attention (the map shows what the dense attention looks at; the marks, what DSA keeps).
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <limits>

#include "dsa/ops.h"
#include "dsa/train.h"
#include "model/exec.h"

namespace fs = std::filesystem;

namespace dsa::train {

AttentionMap attention_map(const model::Model& mdl, const std::vector<int32_t>& tokens, int layer, int topk) {
  const model::Config& c = mdl.config();
  if (layer < 0 || layer >= c.num_hidden_layers) throw Error("attention_map: layer " + std::to_string(layer) + " is out of range");
  if (tokens.empty()) throw Error("attention_map: no tokens");
  model::Model::Impl m(c);
  m.params = mdl.params();
  const auto ex = model::make_cpu_exec(/*exact=*/false);
  ex->begin_run(m, nullptr);
  const model::Dims d(c);
  const int64_t T = static_cast<int64_t>(tokens.size());
  const float eps = static_cast<float>(c.rms_norm_eps);
  std::vector<int32_t> pos(T), ks(T, 0), ke(T);
  for (int64_t t = 0; t < T; ++t) {
    pos[t] = static_cast<int32_t>(t);
    ke[t] = static_cast<int32_t>(t + 1);
  }
  auto vec = [](int64_t n) { return std::vector<float>(static_cast<size_t>(n), 0.0f); };
  std::vector<float> x = vec(T * d.D), xn = vec(T * d.D), rstd = vec(T);
  cpu::embedding_forward(tokens.data(), m.P(m.embed), x.data(), T, d.V, d.D);
  AttentionMap out;
  out.T = static_cast<int>(T);
  for (int l = 0; l <= layer; ++l) {
    const model::LayerParams& L = m.layers[l];
    cpu::rmsnorm_forward(x.data(), m.P(L.input_norm), xn.data(), rstd.data(), T, d.D, eps);
    std::vector<float> qa = vec(T * d.qr), rqa = vec(T), qan = vec(T * d.qr), q = vec(T * d.H * d.dq), kva = vec(T * d.Dm),
                       craw = vec(T * d.kvr), rkv = vec(T), cn = vec(T * d.kvr), qm = vec(T * d.H * d.Dm), kvm = vec(T * d.Dm);
    model::mla_project(*ex, m, l, xn.data(), T, pos.data(), qa.data(), rqa.data(), qan.data(), q.data(), kva.data(), craw.data(), rkv.data(),
                       cn.data(), qm.data(), kvm.data());
    AttentionParams ap = model::mqa_attention_params(m, d, static_cast<int>(T), static_cast<int>(T), qm.data(), kvm.data());
    ap.ks = ks.data();
    ap.ke = ke.data();
    std::vector<float> olat = vec(T * d.H * d.kvr), lse = vec(T * d.H);
    cpu::dense_attention_forward(ap, {olat.data(), lse.data(), nullptr});
    if (l == layer) {
      // Head-averaged probabilities P[t,s] = (1/H) Σ_h exp(scale·q[t,h]·kv[s] − lse[t,h]) for s ≤ t.
      out.probs.assign(static_cast<size_t>(T * T), 0.0f);
      for (int64_t t = 0; t < T; ++t)
        for (int64_t s = 0; s <= t; ++s) {
          double p = 0;
          for (int h = 0; h < d.H; ++h) {
            double z = 0;
            for (int i = 0; i < d.Dm; ++i) z += static_cast<double>(qm[(t * d.H + h) * d.Dm + i]) * kvm[s * d.Dm + i];
            p += std::exp(m.scale * z - lse[t * d.H + h]);
          }
          out.probs[t * T + s] = static_cast<float>(p / d.H);
        }
      // The indexer's selection at this layer.
      std::vector<float> iq = vec(T * d.HI * d.DI), kpre = vec(T * d.DI), kmean = vec(T), krstd = vec(T), ik = vec(T * d.DI),
                         iw = vec(T * d.HI), logits = vec(T * T);
      model::indexer_project(*ex, m, l, xn.data(), qan.data(), T, pos.data(), iq.data(), kpre.data(), kmean.data(), krstd.data(), ik.data(),
                             iw.data());
      IndexerParams ip;
      ip.T = static_cast<int>(T);
      ip.S = static_cast<int>(T);
      ip.HI = d.HI;
      ip.DI = d.DI;
      ip.q = iq.data();
      ip.k = ik.data();
      ip.w = iw.data();
      ip.ks = ks.data();
      ip.ke = ke.data();
      cpu::indexer_logits(ip, logits.data());
      out.K = std::min<int>(topk, static_cast<int>(T));
      out.selected.assign(static_cast<size_t>(T * out.K), kInvalidIndex);
      cpu::topk_select({static_cast<int>(T), static_cast<int>(T), out.K, logits.data(), ks.data(), ke.data(), out.selected.data()});
      break;
    }
    std::vector<float> o = vec(T * d.H * d.dv), y = vec(T * d.D);
    model::absorb_out(*ex, m, l, olat.data(), T, o.data());
    cpu::linear_forward(o.data(), m.P(L.o), y.data(), T, d.H * d.dv, d.D);
    for (int64_t i = 0; i < T * d.D; ++i) x[i] += y[i];
    cpu::rmsnorm_forward(x.data(), m.P(L.post_norm), xn.data(), rstd.data(), T, d.D, eps);
    std::vector<float> g = vec(T * d.F), u = vec(T * d.F), a = vec(T * d.F);
    cpu::linear_forward(xn.data(), m.P(L.gate), g.data(), T, d.D, d.F);
    cpu::linear_forward(xn.data(), m.P(L.up), u.data(), T, d.D, d.F);
    cpu::swiglu_forward(g.data(), u.data(), a.data(), T * d.F);
    cpu::linear_forward(a.data(), m.P(L.down), y.data(), T, d.F, d.D);
    for (int64_t i = 0; i < T * d.D; ++i) x[i] += y[i];
  }
  return out;
}

void write_attention_map_plot(const AttentionMap& map, const std::string& dir, const std::string& title) {
  const fs::path p(dir);
  {
    // log10 of the probability, floored, so that small but non-zero attention stays visible.
    constexpr float kFloor = 1e-4f;
    std::ostringstream mat;
    for (int t = 0; t < map.T; ++t) {
      for (int s = 0; s < map.T; ++s)
        mat << (s ? " " : "") << (s <= t ? std::log10(std::max(map.probs[static_cast<size_t>(t) * map.T + s], kFloor)) : std::log10(kFloor));
      mat << "\n";
    }
    write_file_atomic((p / "attention_map.dat").string(), mat.str());
    std::ostringstream sel;
    sel << "query,key\n";
    for (int t = 0; t < map.T; ++t)
      for (int j = 0; j < map.K; ++j) {
        const int32_t s = map.selected[static_cast<size_t>(t) * map.K + j];
        if (s != kInvalidIndex) sel << t << "," << s << "\n";
      }
    write_file_atomic((p / "attention_selected.csv").string(), sel.str());
  }
  std::ostringstream gp;
  gp << "set terminal pngcairo size 900,820 noenhanced\nset output '" << (p / "attention_map.png").string() << "'\n"
     << "set title '" << title << "'\nset xlabel 'key position'\nset ylabel 'query position'\nset yrange [" << map.T << ":-1]\n"
     << "set xrange [-1:" << map.T << "]\nset cblabel 'log10 dense attention (head mean)'\nset palette defined (0 'white', 1 '#9090b0', 2 'black')\n"
     << "set datafile separator whitespace\nplot '" << (p / "attention_map.dat").string() << "' matrix with image notitle, \\\n"
     << "     '< tail -n +2 " << (p / "attention_selected.csv").string()
     << " | tr , \" \"' using 2:1 with points pt 7 ps 0.25 lc rgb '#e02020' title 'keys selected by the indexer (top-" << map.K << ")'\n";
  run_gnuplot((p / "attention_map.gp").string());
}

}  // namespace dsa::train
