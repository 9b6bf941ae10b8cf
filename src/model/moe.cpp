// moe.cpp — the MoE MLP of DeepSeek-V3 / V3.2 (src/model/moe.h): the router's choice on the host, the
// routed experts (SwiGLU each) over their gathered rows, the shared experts over every row, the
// weighted sum; and its backward. Every step runs through the executor's ops (gather = embedding
// lookup, scatter-add = embedding backward), so the CPU and the GPU executor both run it.
#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <string>

#include "model/moe.h"

namespace dsa::model {
namespace {

constexpr int kGroupScoreTop = 2;   // noaux_tc: a group scores the sum of its two best experts

bool uses_groups(const Config& c) { return c.topk_method != "greedy" && c.n_group > 1; }
bool renormalises(const Config& c) { return c.scoring_func == "sigmoid" && c.norm_topk_prob; }

// The indices of the n largest values of v[0 … size), best first; ties to the smaller index.
// Entries with allowed[i] = false are never chosen.
void top_indices(const std::vector<float>& v, const std::vector<char>& allowed, int n, std::vector<int32_t>& out) {
  std::vector<int32_t> order;
  for (size_t i = 0; i < v.size(); ++i)
    if (allowed[i]) order.push_back(static_cast<int32_t>(i));
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return v[a] > v[b]; });
  out.assign(order.begin(), order.begin() + std::min<size_t>(order.size(), static_cast<size_t>(n)));
}

// x[r·width … (r+1)·width) *= s[r] for each row r (s on the host).
void scale_rows(Exec& ex, float* x, const std::vector<float>& s, int width) {
  for (size_t r = 0; r < s.size(); ++r) ex.scale(x + static_cast<int64_t>(r) * width, s[r], width);
}

}  // namespace

int64_t moe_row_floats(const Config& c) {
  if (c.num_moe_layers() == 0) return 0;
  const int64_t D = c.hidden_size, Fm = c.moe_intermediate_size, k = c.num_experts_per_tok;
  // router logits, shared SwiGLU (3 x Fs), per pair: gathered row, 3 x Fm, output and its weighted copy
  return c.n_routed_experts + 3LL * c.n_shared_experts * Fm + k * (3 * D + 3 * Fm);
}

MoeRouting moe_route(const Config& c, const float* logits, const float* bias, int64_t T) {
  const int E = c.n_routed_experts, k = c.num_experts_per_tok;
  const bool sigmoid = c.scoring_func == "sigmoid";
  MoeRouting r;
  r.T = T;
  r.E = E;
  r.k = k;
  r.score.assign(static_cast<size_t>(T * E), 0.0f);
  r.expert.assign(static_cast<size_t>(T * k), 0);
  r.weight.assign(static_cast<size_t>(T * k), 0.0f);
  const int groups = uses_groups(c) ? c.n_group : 1, per_group = E / groups;
  std::vector<float> choice(static_cast<size_t>(E)), group_score(static_cast<size_t>(groups));
  std::vector<char> allowed(static_cast<size_t>(E)), all_groups(static_cast<size_t>(groups), 1);
  std::vector<int32_t> kept, chosen;
  for (int64_t t = 0; t < T; ++t) {
    const float* z = logits + t * E;
    float* s = r.score.data() + t * E;
    for (int e = 0; e < E; ++e)   // a diverged model: no order to choose by
      if (!std::isfinite(z[e]))
        throw Error("MoE router: the logit of row " + std::to_string(t) + " for expert " + std::to_string(e) + " is not finite");
    if (sigmoid) {
      for (int e = 0; e < E; ++e) s[e] = static_cast<float>(1.0 / (1.0 + std::exp(-static_cast<double>(z[e]))));
    } else {
      const double mx = *std::max_element(z, z + E);
      double sum = 0.0;
      for (int e = 0; e < E; ++e) sum += std::exp(static_cast<double>(z[e]) - mx);
      for (int e = 0; e < E; ++e) s[e] = static_cast<float>(std::exp(static_cast<double>(z[e]) - mx) / sum);
    }
    for (int e = 0; e < E; ++e) choice[e] = bias ? s[e] + bias[e] : s[e];
    std::fill(allowed.begin(), allowed.end(), 1);
    if (groups > 1) {
      for (int g = 0; g < groups; ++g) {
        std::vector<float> member(choice.begin() + g * per_group, choice.begin() + (g + 1) * per_group);
        std::sort(member.begin(), member.end(), std::greater<float>());
        group_score[g] = c.topk_method == "noaux_tc" ? member[0] + member[kGroupScoreTop - 1] : member[0];
      }
      top_indices(group_score, all_groups, c.topk_group, kept);
      std::fill(allowed.begin(), allowed.end(), 0);
      for (const int32_t g : kept) std::fill(allowed.begin() + g * per_group, allowed.begin() + (g + 1) * per_group, 1);
    }
    top_indices(choice, allowed, k, chosen);
    double sum = 0.0;
    for (int j = 0; j < k; ++j) sum += s[chosen[j]];
    for (int j = 0; j < k; ++j) {
      const double w = renormalises(c) ? s[chosen[j]] / sum : s[chosen[j]];
      r.expert[t * k + j] = chosen[j];
      r.weight[t * k + j] = static_cast<float>(w * c.routed_scaling_factor);
    }
  }
  // group the pairs by expert, rows ascending inside each expert
  r.offset.assign(static_cast<size_t>(E) + 1, 0);
  for (const int32_t e : r.expert) ++r.offset[static_cast<size_t>(e) + 1];
  std::partial_sum(r.offset.begin(), r.offset.end(), r.offset.begin());
  r.pair_row.assign(static_cast<size_t>(T * k), 0);
  r.pair_choice.assign(static_cast<size_t>(T * k), 0);
  std::vector<int64_t> next(r.offset.begin(), r.offset.end() - 1);
  for (int64_t t = 0; t < T; ++t)
    for (int j = 0; j < k; ++j) {
      const int64_t p = next[static_cast<size_t>(r.expert[t * k + j])]++;
      r.pair_row[p] = static_cast<int32_t>(t);
      r.pair_choice[p] = static_cast<int32_t>(t * k + j);
    }
  return r;
}

std::vector<float> moe_route_backward(const Config& c, const MoeRouting& r, const std::vector<float>& dweight) {
  const int E = r.E, k = r.k;
  const double scale = c.routed_scaling_factor;
  std::vector<float> dz(static_cast<size_t>(r.T * E), 0.0f);
  std::vector<double> ds(static_cast<size_t>(E));
  for (int64_t t = 0; t < r.T; ++t) {
    const float* s = r.score.data() + t * E;
    const int32_t* ex = r.expert.data() + t * k;
    const float* g = dweight.data() + t * k;
    std::fill(ds.begin(), ds.end(), 0.0);
    if (renormalises(c)) {
      // inverts w_j = scale · s_j / S, S = Σ_i s_i (chosen): ds_j = scale · (g_j / S − Σ_i g_i s_i / S²)
      double S = 0.0, gs = 0.0;
      for (int j = 0; j < k; ++j) {
        S += s[ex[j]];
        gs += static_cast<double>(g[j]) * s[ex[j]];
      }
      for (int j = 0; j < k; ++j) ds[ex[j]] += scale * (g[j] / S - gs / (S * S));
    } else {
      // inverts w_j = scale · s_j
      for (int j = 0; j < k; ++j) ds[ex[j]] += scale * g[j];
    }
    float* d = dz.data() + t * E;
    if (c.scoring_func == "sigmoid") {
      // inverts s = sigmoid(z): dz = ds · s · (1 − s)
      for (int e = 0; e < E; ++e) d[e] = static_cast<float>(ds[e] * s[e] * (1.0 - s[e]));
    } else {
      // inverts s = softmax(z): dz_e = s_e · (ds_e − Σ_i s_i ds_i)
      double dot = 0.0;
      for (int e = 0; e < E; ++e) dot += s[e] * ds[e];
      for (int e = 0; e < E; ++e) d[e] = static_cast<float>(s[e] * (ds[e] - dot));
    }
  }
  return dz;
}

void moe_forward(Exec& ex, const Model::Impl& m, int l, const float* hn, int64_t T, float* out, MoeActs* keep,
                 bool round_bf16) {
  const Config& c = m.cfg;
  const LayerParams& L = m.layers[l];
  const int D = c.hidden_size, E = c.n_routed_experts, Fm = c.moe_intermediate_size;
  const int Fs = c.n_shared_experts * Fm;
  // router logits z = hn · gateᵀ (fp32), then the choice on the host
  FBuf z = ex.zeros(T * E);
  ex.mm_xwt(T, D, E, hn, D, ex.param(L.router), D, z.data(), E);
  std::vector<float> bias;
  if (L.router_bias >= 0) {
    bias.resize(static_cast<size_t>(E));
    ex.download_bytes(bias.data(), ex.param(L.router_bias), static_cast<int64_t>(E) * static_cast<int64_t>(sizeof(float)));
  }
  MoeActs local;
  MoeActs& A = keep ? *keep : local;
  A.route = moe_route(c, ex.download(z).data(), bias.empty() ? nullptr : bias.data(), T);
  const MoeRouting& r = A.route;
  const int64_t P = T * r.k;   // (row, choice) pairs
  const auto round_acts = [&](float* p, int64_t count) {
    if (round_bf16) ex.round_bf16(p, count);
  };
  // shared experts over every row: down(silu(gate(hn)) · up(hn)), into out (fp32) or, rounding, into
  // its own buffer added after the routed experts (the reference's order); no shared experts: out = 0
  FBuf shared;
  if (Fs > 0) {
    A.sg = ex.zeros(T * Fs);
    A.su = ex.zeros(T * Fs);
    A.sa = ex.zeros(T * Fs);
    float* so = out;
    if (round_bf16) {
      shared = ex.zeros(T * D);
      so = shared.data();
    }
    ex.mm_xwt(T, D, Fs, hn, D, ex.param(L.shared_gate), D, A.sg.data(), Fs);
    round_acts(A.sg.data(), T * Fs);
    ex.mm_xwt(T, D, Fs, hn, D, ex.param(L.shared_up), D, A.su.data(), Fs);
    round_acts(A.su.data(), T * Fs);
    ex.ops().swiglu_forward(A.sg.data(), A.su.data(), A.sa.data(), T * Fs);
    round_acts(A.sa.data(), T * Fs);
    ex.mm_xwt(T, Fs, D, A.sa.data(), Fs, ex.param(L.shared_down), Fs, so, D);
    round_acts(so, T * D);
  }
  if (Fs == 0 || round_bf16) ex.scale(out, 0.0f, T * D);
  // routed experts over their gathered rows: y_p = expert_e(hn[row_p])
  A.rows = ex.upload(r.pair_row);
  A.xg = ex.zeros(P * D);
  A.g = ex.zeros(P * Fm);
  A.u = ex.zeros(P * Fm);
  A.a = ex.zeros(P * Fm);
  A.y = ex.zeros(P * D);
  ex.ops().embedding_forward(A.rows.data(), hn, A.xg.data(), P, static_cast<int>(T), D);
  for (int e = 0; e < E; ++e) {
    const int64_t p0 = r.offset[e], n = r.offset[e + 1] - p0;
    if (n == 0) continue;
    ex.mm_xwt(n, D, Fm, A.xg.data() + p0 * D, D, ex.param(L.expert_gate(e)), D, A.g.data() + p0 * Fm, Fm);
    ex.mm_xwt(n, D, Fm, A.xg.data() + p0 * D, D, ex.param(L.expert_up(e)), D, A.u.data() + p0 * Fm, Fm);
  }
  round_acts(A.g.data(), P * Fm);
  round_acts(A.u.data(), P * Fm);
  ex.ops().swiglu_forward(A.g.data(), A.u.data(), A.a.data(), P * Fm);
  round_acts(A.a.data(), P * Fm);
  for (int e = 0; e < E; ++e) {
    const int64_t p0 = r.offset[e], n = r.offset[e + 1] - p0;
    if (n == 0) continue;
    ex.mm_xwt(n, Fm, D, A.a.data() + p0 * Fm, Fm, ex.param(L.expert_down(e)), Fm, A.y.data() + p0 * D, D);
  }
  round_acts(A.y.data(), P * D);
  // out[row_p] += w_p · y_p, pairs in expert order (the scatter-add keeps that order per row)
  std::vector<float> w(static_cast<size_t>(P));
  for (int64_t p = 0; p < P; ++p) w[p] = r.weight[r.pair_choice[p]];
  FBuf yw = ex.clone(A.y);
  scale_rows(ex, yw.data(), w, D);
  ex.ops().embedding_backward(A.rows.data(), yw.data(), out, P, static_cast<int>(T), D);
  if (round_bf16 && Fs > 0) ex.add(out, shared.data(), T * D);
}

void moe_backward(Exec& ex, const Model::Impl& m, int l, const float* hn, int64_t T, const MoeActs& A, const float* dout,
                  float* dhn) {
  const Config& c = m.cfg;
  const LayerParams& L = m.layers[l];
  const int D = c.hidden_size, E = c.n_routed_experts, Fm = c.moe_intermediate_size;
  const int Fs = c.n_shared_experts * Fm;
  const MoeRouting& r = A.route;
  const int64_t P = T * r.k;
  // inverts out = shared(hn): the SwiGLU backward of the shared experts
  if (Fs > 0) {
    FBuf da = ex.zeros(T * Fs), dg = ex.zeros(T * Fs), du = ex.zeros(T * Fs);
    ex.ops().linear_backward(A.sa.data(), ex.param(L.shared_down), dout, da.data(), ex.grad(L.shared_down), T, Fs, D, false);
    ex.ops().swiglu_backward(A.sg.data(), A.su.data(), da.data(), dg.data(), du.data(), T * Fs);
    ex.ops().linear_backward(hn, ex.param(L.shared_gate), dg.data(), dhn, ex.grad(L.shared_gate), T, D, Fs, false);
    ex.ops().linear_backward(hn, ex.param(L.shared_up), du.data(), dhn, ex.grad(L.shared_up), T, D, Fs, true);
  } else {
    ex.scale(dhn, 0.0f, T * D);
  }
  // inverts out[row_p] += w_p · y_p: d y_p = w_p · dout[row_p], d w_p = dout[row_p] · y_p
  FBuf dy = ex.zeros(P * D);
  ex.ops().embedding_forward(A.rows.data(), dout, dy.data(), P, static_cast<int>(T), D);
  std::vector<float> dweight(static_cast<size_t>(T * r.k), 0.0f);
  {
    const std::vector<float> dy_h = ex.download(dy), y_h = ex.download(A.y);
    for (int64_t p = 0; p < P; ++p) {
      double dot = 0.0;
      for (int i = 0; i < D; ++i) dot += static_cast<double>(dy_h[p * D + i]) * y_h[p * D + i];
      dweight[r.pair_choice[p]] = static_cast<float>(dot);
    }
  }
  std::vector<float> w(static_cast<size_t>(P));
  for (int64_t p = 0; p < P; ++p) w[p] = r.weight[r.pair_choice[p]];
  scale_rows(ex, dy.data(), w, D);
  // inverts y_p = down_e(silu(gate_e(x_p)) · up_e(x_p)), x_p = hn[row_p]
  FBuf da = ex.zeros(P * Fm), dg = ex.zeros(P * Fm), du = ex.zeros(P * Fm), dxg = ex.zeros(P * D);
  for (int e = 0; e < E; ++e) {
    const int64_t p0 = r.offset[e], n = r.offset[e + 1] - p0;
    if (n == 0) continue;
    ex.ops().linear_backward(A.a.data() + p0 * Fm, ex.param(L.expert_down(e)), dy.data() + p0 * D, da.data() + p0 * Fm,
                             ex.grad(L.expert_down(e)), n, Fm, D, false);
  }
  ex.ops().swiglu_backward(A.g.data(), A.u.data(), da.data(), dg.data(), du.data(), P * Fm);
  for (int e = 0; e < E; ++e) {
    const int64_t p0 = r.offset[e], n = r.offset[e + 1] - p0;
    if (n == 0) continue;
    ex.ops().linear_backward(A.xg.data() + p0 * D, ex.param(L.expert_gate(e)), dg.data() + p0 * Fm, dxg.data() + p0 * D,
                             ex.grad(L.expert_gate(e)), n, D, Fm, false);
    ex.ops().linear_backward(A.xg.data() + p0 * D, ex.param(L.expert_up(e)), du.data() + p0 * Fm, dxg.data() + p0 * D,
                             ex.grad(L.expert_up(e)), n, D, Fm, true);
  }
  // inverts x_p = hn[row_p]: scatter-add into dhn
  ex.ops().embedding_backward(A.rows.data(), dxg.data(), dhn, P, static_cast<int>(T), D);
  // inverts z = hn · gateᵀ through the weights (the bias and the choice get no gradient)
  const FBuf dz = ex.upload(moe_route_backward(c, r, dweight));
  ex.ops().linear_backward(hn, ex.param(L.router), dz.data(), dhn, ex.grad(L.router), T, D, E, true);
}

}  // namespace dsa::model
