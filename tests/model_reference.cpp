// model_reference.cpp — the whole model against an independent float64 reference written here from
// dsa-spec §1–§2 (MHA mode, naive loops, no ops.h call): interleaved RoPE on the LAST rope dims of q
// and on k_pe, softmax scale qk_head_dim^-½, indexer with rotate-half RoPE on the FIRST rope dims,
// LayerNorm (with bias) on k, Hadamard on q and k, weights · HI^-½ · DI^-½, ReLU scores, top-k with
// ties to the smaller index, then attention over the selection. A swapped RoPE layout, a wrong
// scale, a missing Hadamard or a mis-sliced kv_b_proj changes the logits by O(1). MoE layers: the
// DeepSeek-V3 routing and experts from their definition (Ref::moe).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <numeric>
#include <vector>

#include "dsa/model.h"
#include "model_util.h"

namespace {

using V = std::vector<double>;
using dsa::model::Model;

struct Ref {
  const Model& m;
  const dsa::model::Config& c;
  explicit Ref(const Model& model) : m(model), c(model.config()) {}

  const std::vector<float>& P(const std::string& name) const {
    for (const auto& t : m.params())
      if (t.name == name) return t.data;
    throw std::runtime_error("no param " + name);
  }
  // y[n, o] = Σ_i x[n, i] · W[o, i]
  static V lin(const V& x, const std::vector<float>& W, int N, int I, int O) {
    V y(static_cast<size_t>(N) * O, 0.0);
    for (int n = 0; n < N; ++n)
      for (int o = 0; o < O; ++o)
        for (int i = 0; i < I; ++i) y[n * O + o] += x[n * I + i] * W[o * I + i];
    return y;
  }
  V rms(const V& x, const std::vector<float>& w, int N, int C) const {
    V y(x.size());
    for (int n = 0; n < N; ++n) {
      double ss = 0;
      for (int i = 0; i < C; ++i) ss += x[n * C + i] * x[n * C + i];
      const double r = 1.0 / std::sqrt(ss / C + c.rms_norm_eps);
      for (int i = 0; i < C; ++i) y[n * C + i] = x[n * C + i] * r * w[i];
    }
    return y;
  }
  double inv_freq(int i) const { return std::pow(c.rope_theta, -2.0 * i / c.qk_rope_head_dim); }
  // rotate pairs (a, b) of v[off..off+R) by angle pos·inv_freq
  void rope(double* v, int R, int pos, bool interleaved) const {
    for (int i = 0; i < R / 2; ++i) {
      const int ia = interleaved ? 2 * i : i, ib = interleaved ? 2 * i + 1 : i + R / 2;
      const double a = v[ia], b = v[ib], ang = pos * inv_freq(i);
      v[ia] = a * std::cos(ang) - b * std::sin(ang);
      v[ib] = a * std::sin(ang) + b * std::cos(ang);
    }
  }
  static void hadamard(double* v, int D) {
    V out(D, 0.0);
    for (int i = 0; i < D; ++i)
      for (int j = 0; j < D; ++j) out[i] += (__builtin_popcount(i & j) % 2 ? -1.0 : 1.0) * v[j];
    for (int i = 0; i < D; ++i) v[i] = out[i] / std::sqrt(static_cast<double>(D));
  }

  // down(silu(gate(x)) · up(x)) of N rows, width F, tensors <p>{gate,up,down}_proj.weight
  V swiglu(const std::string& p, const V& x, int N, int F) const {
    const int D = c.hidden_size;
    const V g = lin(x, P(p + "gate_proj.weight"), N, D, F), u = lin(x, P(p + "up_proj.weight"), N, D, F);
    V act(g.size());
    for (size_t i = 0; i < g.size(); ++i) act[i] = g[i] / (1 + std::exp(-g[i])) * u[i];
    return lin(act, P(p + "down_proj.weight"), N, F, D);
  }
  // DeepSeek-V3's MoE from its definition (inference/model.py Gate + MoE): scores s = sigmoid or
  // softmax of x·gateᵀ, choice by s + bias (noaux_tc), groups scored by the sum of their two best
  // (noaux_tc) or their best (group_limited_greedy), topk_group groups kept, the top experts among
  // them, weights = the chosen s (renormalised for sigmoid with norm_topk_prob) x routed_scaling_factor;
  // plus the shared experts. Records the smallest gap at any routing cut in min_margin.
  V moe(const std::string& p, const V& x, int T) const {
    const int D = c.hidden_size, E = c.n_routed_experts, k = c.num_experts_per_tok, Fm = c.moe_intermediate_size;
    const V z = lin(x, P(p + "gate.weight"), T, D, E);
    V out = c.n_shared_experts > 0 ? swiglu(p + "shared_experts.", x, T, c.n_shared_experts * Fm) : V(x.size(), 0.0);
    const bool groups = c.topk_method != "greedy" && c.n_group > 1;
    const int per = E / (groups ? c.n_group : 1);
    for (int t = 0; t < T; ++t) {
      V s(E), ch(E);
      double mx = -1e300, sum = 0;
      for (int e = 0; e < E; ++e) mx = std::max(mx, z[t * E + e]);
      for (int e = 0; e < E; ++e) sum += std::exp(z[t * E + e] - mx);
      for (int e = 0; e < E; ++e) {
        s[e] = c.scoring_func == "sigmoid" ? 1 / (1 + std::exp(-z[t * E + e])) : std::exp(z[t * E + e] - mx) / sum;
        ch[e] = s[e] + (c.topk_method == "noaux_tc" ? P(p + "gate.e_score_correction_bias")[e] : 0.0);
      }
      std::vector<int> cand;
      if (groups) {
        V gs(c.n_group);
        for (int g = 0; g < c.n_group; ++g) {
          V m(ch.begin() + g * per, ch.begin() + (g + 1) * per);
          std::sort(m.rbegin(), m.rend());
          gs[g] = c.topk_method == "noaux_tc" ? m[0] + m[1] : m[0];
        }
        std::vector<int> order(c.n_group);
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return gs[a] > gs[b]; });
        if (c.topk_group < c.n_group) min_margin = std::min(min_margin, gs[order[c.topk_group - 1]] - gs[order[c.topk_group]]);
        for (int j = 0; j < c.topk_group; ++j)
          for (int e = order[j] * per; e < (order[j] + 1) * per; ++e) cand.push_back(e);
        std::sort(cand.begin(), cand.end());
      } else {
        cand.resize(E);
        std::iota(cand.begin(), cand.end(), 0);
      }
      std::stable_sort(cand.begin(), cand.end(), [&](int a, int b) { return ch[a] > ch[b]; });
      if (static_cast<int>(cand.size()) > k) min_margin = std::min(min_margin, ch[cand[k - 1]] - ch[cand[k]]);
      double wsum = 0;
      for (int j = 0; j < k; ++j) wsum += s[cand[j]];
      const V row(x.begin() + t * D, x.begin() + (t + 1) * D);
      for (int j = 0; j < k; ++j) {
        const int e = cand[j];
        const double w = (c.scoring_func == "sigmoid" && c.norm_topk_prob ? s[e] / wsum : s[e]) * c.routed_scaling_factor;
        const V y = swiglu(p + "experts." + std::to_string(e) + ".", row, 1, Fm);
        for (int i = 0; i < D; ++i) out[t * D + i] += w * y[i];
      }
    }
    return out;
  }

  mutable double min_margin = 0;   // the smallest routing gap of the last logits() call

  // logits [T, vocab] of one sequence; topk ≤ 0: dense
  V logits(const std::vector<int32_t>& tok, int topk) const {
    min_margin = std::numeric_limits<double>::infinity();
    const V xf = hidden(tok, topk);
    return lin(xf, P(c.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight"), static_cast<int>(tok.size()),
               c.hidden_size, c.vocab_size);
  }

  // the final hidden states [T, D] (after model.norm)
  V hidden(const std::vector<int32_t>& tok, int topk) const {
    const int T = static_cast<int>(tok.size()), D = c.hidden_size;
    V x = embed(tok);
    for (int l = 0; l < c.num_hidden_layers; ++l) layer(l, x, T, topk);
    return rms(x, P("model.norm.weight"), T, D);
  }

  V embed(const std::vector<int32_t>& tok) const {
    const int D = c.hidden_size;
    const auto& E = P("model.embed_tokens.weight");
    V x(tok.size() * D);
    for (size_t t = 0; t < tok.size(); ++t)
      for (int i = 0; i < D; ++i) x[t * D + i] = E[tok[t] * D + i];
    return x;
  }

  // MTP module 0 from its definition: row t joins the main model's final hidden state of position t
  // with the token after it (tok[t + 1], `next` for the last row; at position 0 a zero embedding):
  // x = eh_proj · [enorm(embed) ; hnorm(h)], the module's decoder layer (checkpoint layer num_hidden_layers) at positions 0 … T-1,
  // then shared_head.norm and the main output head. logits [T, vocab].
  V mtp_logits(const std::vector<int32_t>& tok, int32_t next, int topk) const {
    const int T = static_cast<int>(tok.size()), D = c.hidden_size, L = c.num_hidden_layers;
    min_margin = std::numeric_limits<double>::infinity();
    const V h = hidden(tok, topk);
    std::vector<int32_t> after(tok.begin() + 1, tok.end());
    after.push_back(next);
    const std::string p = "model.layers." + std::to_string(L) + ".";
    V e = embed(after);
    std::fill(e.begin(), e.begin() + D, 0.0);   // position 0 takes no embedding
    const V en = rms(e, P(p + "enorm.weight"), T, D), hn = rms(h, P(p + "hnorm.weight"), T, D);
    V cat(static_cast<size_t>(T) * 2 * D);
    for (int t = 0; t < T; ++t)
      for (int i = 0; i < D; ++i) {
        cat[t * 2 * D + i] = en[t * D + i];
        cat[t * 2 * D + D + i] = hn[t * D + i];
      }
    V x = lin(cat, P(p + "eh_proj.weight"), T, 2 * D, D);
    layer(L, x, T, topk);
    return lin(rms(x, P(p + "shared_head.norm.weight"), T, D),
               P(c.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight"), T, D, c.vocab_size);
  }

  // decoder layer l over x [T, D] (positions 0 … T-1)
  void layer(int l, V& x, int T, int topk) const {
    const int D = c.hidden_size, H = c.num_attention_heads;
    const int qr = c.q_lora_rank, kvr = c.kv_lora_rank, dn = c.qk_nope_head_dim, dr = c.qk_rope_head_dim,
              dv = c.v_head_dim, dq = dn + dr, HI = c.index_n_heads, DI = c.index_head_dim, F = c.intermediate_size;
    const double scale = 1.0 / std::sqrt(static_cast<double>(dq));
    const std::string p = "model.layers." + std::to_string(l) + ".", a = p + "self_attn.";
    const V xn = rms(x, P(p + "input_layernorm.weight"), T, D);
    const V qan = rms(lin(xn, P(a + "q_a_proj.weight"), T, D, qr), P(a + "q_a_layernorm.weight"), T, qr);
    V q = lin(qan, P(a + "q_b_proj.weight"), T, qr, H * dq);
    const V kva = lin(xn, P(a + "kv_a_proj_with_mqa.weight"), T, D, kvr + dr);
    V cl(static_cast<size_t>(T) * kvr), kpe(static_cast<size_t>(T) * dr);
    for (int t = 0; t < T; ++t) {
      for (int i = 0; i < kvr; ++i) cl[t * kvr + i] = kva[t * (kvr + dr) + i];
      for (int i = 0; i < dr; ++i) kpe[t * dr + i] = kva[t * (kvr + dr) + kvr + i];
      rope(&kpe[t * dr], dr, t, true);
      for (int h = 0; h < H; ++h) rope(&q[(t * H + h) * dq + dn], dr, t, true);
    }
    cl = rms(cl, P(a + "kv_a_layernorm.weight"), T, kvr);
    const V kvb = lin(cl, P(a + "kv_b_proj.weight"), T, kvr, H * (dn + dv));   // [T, H, nope | v]
    // selection
    std::vector<std::vector<int>> sel(T);
    for (int t = 0; t < T; ++t) {
      sel[t].resize(t + 1);
      std::iota(sel[t].begin(), sel[t].end(), 0);
    }
    if (topk > 0) {
      V qi = lin(qan, P(a + "indexer.wq_b.weight"), T, qr, HI * DI);
      V ki = lin(xn, P(a + "indexer.wk.weight"), T, D, DI);
      const V w = lin(xn, P(a + "indexer.weights_proj.weight"), T, D, HI);
      const auto& nw = P(a + "indexer.k_norm.weight");
      const auto& nb = P(a + "indexer.k_norm.bias");
      for (int t = 0; t < T; ++t) {
        double mu = 0, var = 0;
        for (int i = 0; i < DI; ++i) mu += ki[t * DI + i] / DI;
        for (int i = 0; i < DI; ++i) var += (ki[t * DI + i] - mu) * (ki[t * DI + i] - mu) / DI;
        for (int i = 0; i < DI; ++i) ki[t * DI + i] = (ki[t * DI + i] - mu) / std::sqrt(var + 1e-6) * nw[i] + nb[i];
        rope(&ki[t * DI], dr, t, false);
        hadamard(&ki[t * DI], DI);
        for (int h = 0; h < HI; ++h) {
          rope(&qi[(t * HI + h) * DI], dr, t, false);
          hadamard(&qi[(t * HI + h) * DI], DI);
        }
      }
      for (int t = 0; t < T; ++t) {
        V score(t + 1, 0.0);
        for (int s = 0; s <= t; ++s)
          for (int h = 0; h < HI; ++h) {
            double d = 0;
            for (int i = 0; i < DI; ++i) d += qi[(t * HI + h) * DI + i] * ki[s * DI + i];
            score[s] += w[t * HI + h] / std::sqrt(static_cast<double>(HI) * DI) * std::max(d, 0.0);
          }
        std::stable_sort(sel[t].begin(), sel[t].end(), [&](int i, int j) { return score[i] > score[j]; });
        sel[t].resize(std::min<size_t>(sel[t].size(), static_cast<size_t>(topk)));
      }
    }
    // MHA attention
    V o(static_cast<size_t>(T) * H * dv, 0.0);
    for (int t = 0; t < T; ++t)
      for (int h = 0; h < H; ++h) {
        V z;
        for (int s : sel[t]) {
          double d = 0;
          for (int i = 0; i < dn; ++i) d += q[(t * H + h) * dq + i] * kvb[(s * H + h) * (dn + dv) + i];
          for (int i = 0; i < dr; ++i) d += q[(t * H + h) * dq + dn + i] * kpe[s * dr + i];
          z.push_back(scale * d);
        }
        const double mx = *std::max_element(z.begin(), z.end());
        double sum = 0;
        for (double& v : z) sum += (v = std::exp(v - mx));
        for (size_t j = 0; j < z.size(); ++j)
          for (int i = 0; i < dv; ++i) o[(t * H + h) * dv + i] += z[j] / sum * kvb[(sel[t][j] * H + h) * (dn + dv) + dn + i];
      }
    const V out = lin(o, P(a + "o_proj.weight"), T, H * dv, D);
    for (size_t i = 0; i < x.size(); ++i) x[i] += out[i];
    const V hn = rms(x, P(p + "post_attention_layernorm.weight"), T, D);
    const V mlp = c.is_moe_layer(l) ? moe(p + "mlp.", hn, T) : swiglu(p + "mlp.", hn, T, F);
    for (size_t i = 0; i < x.size(); ++i) x[i] += mlp[i];
  }
};

// fp32 model vs fp64 reference: every stage is O(1)-conditioned at these sizes; 2e-4 absolute on
// logits of magnitude ≲ 10 covers fp32 rounding through two layers (observed ≲ 3e-5).
constexpr double kRefTol = 2e-4;

TEST(ModelReference, DenseAndSparseMatchFloat64Reference) {
  auto cfg = dsa::test_model::micro_config();
  cfg.initializer_range = 0.3;
  Model m(cfg);
  m.init_random(41);
  const int T = 12;
  const auto tok = dsa::test_model::random_tokens(cfg.vocab_size, T, 42);
  dsa::model::Batch b;
  b.tokens = tok;
  b.targets.assign(T, -1);
  b.seq_lens = {T};
  const Ref ref(m);
  for (const int k : {0, 3}) {
    const V want = ref.logits(tok, k);
    const auto got = m.logits(b, k > 0 ? dsa::model::AttentionMode::kSparse : dsa::model::AttentionMode::kDense, k);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) ASSERT_NEAR(got[i], want[i], kRefTol) << "k=" << k << " at " << i;
  }
}

// A MoE model (layer 0 dense, layers 1-2 DeepSeekMoE with V3's noaux_tc sigmoid routing, a non-zero
// e_score_correction_bias, routed_scaling_factor 2.5, a shared expert) against the float64 reference.
// Routing is a discrete choice: the test first checks that every routing cut of the reference has a
// gap far above fp32 rounding (1e-4 ≫ the ~1e-6 score error), so both sides choose the same experts;
// then the same kRefTol as above (observed ≤ 1.6e-6 on logits ≲ 3.5; smallest routing gap 1.4e-4).
constexpr double kRoutingGap = 1e-4;

TEST(ModelReference, MoeMatchesFloat64Reference) {
  for (const char* method : {"noaux_tc", "group_limited_greedy", "greedy"}) {
    auto cfg = dsa::test_model::moe_config();
    cfg.initializer_range = 0.3;
    cfg.topk_method = method;
    if (cfg.topk_method != "noaux_tc") cfg.scoring_func = "softmax";   // V2's routings score with softmax
    Model m(cfg);
    dsa::test_model::init_moe_model(m, 43);
    const int T = 12;
    const auto tok = dsa::test_model::random_tokens(cfg.vocab_size, T, 44);
    dsa::model::Batch b;
    b.tokens = tok;
    b.targets.assign(T, -1);
    b.seq_lens = {T};
    const Ref ref(m);
    for (const int k : {0, 3}) {
      const V want = ref.logits(tok, k);
      ASSERT_GT(ref.min_margin, kRoutingGap) << method << ": a routing near-tie; pick another seed";
      const auto got = m.logits(b, k > 0 ? dsa::model::AttentionMode::kSparse : dsa::model::AttentionMode::kDense, k);
      ASSERT_EQ(got.size(), want.size());
      for (size_t i = 0; i < want.size(); ++i) ASSERT_NEAR(got[i], want[i], kRefTol) << method << " k=" << k << " at " << i;
    }
  }
}

// The MTP module's draft (Session::draft) against the float64 reference, dense and sparse, for a dense
// and a MoE module (moe_config's layer 3, an MTP layer, is MoE: Config::is_moe_layer): after a
// prefill, after decode steps and after a truncate, the draft equals the reference's last MTP row for
// the tokens the session holds. Same kRefTol (the MTP layer adds one layer to the chain).
TEST(ModelReference, MtpDraftMatchesFloat64Reference) {
  for (const bool moe : {false, true}) {
    auto cfg = moe ? dsa::test_model::moe_config() : dsa::test_model::micro_config();
    cfg.initializer_range = 0.3;
    cfg.num_nextn_predict_layers = 1;
    ASSERT_EQ(cfg.is_moe_layer(cfg.num_hidden_layers), moe);
    Model m(cfg);
    if (moe) dsa::test_model::init_moe_model(m, 47);
    else m.init_random(45);
    const auto tok = dsa::test_model::random_tokens(cfg.vocab_size, 12, 46);
    const Ref ref(m);
    for (const int k : {0, 3}) {
      dsa::model::SessionOptions so;
      so.mode = k > 0 ? dsa::model::AttentionMode::kSparse : dsa::model::AttentionMode::kDense;
      so.topk = k;
      so.mtp = true;
      dsa::model::Session s(m, so);
      std::vector<int32_t> held(tok.begin(), tok.begin() + 8);
      s.prefill(held, 3);
      const auto check = [&](int32_t next, const char* when) {
        const V want = ref.mtp_logits(held, next, k);
        if (moe) {
          ASSERT_GT(ref.min_margin, kRoutingGap) << when << ": a routing near-tie; pick another seed";
        }
        const auto got = s.draft(next);
        ASSERT_EQ(got.size(), static_cast<size_t>(cfg.vocab_size));
        const size_t last = (held.size() - 1) * cfg.vocab_size;
        for (int v = 0; v < cfg.vocab_size; ++v)
          ASSERT_NEAR(got[v], want[last + v], kRefTol) << when << " moe=" << moe << " k=" << k << " at " << v;
      };
      check(tok[8], "after prefill");
      check(tok[9], "a different next token");
      for (int i = 8; i < 10; ++i) {
        s.decode(tok[i]);
        held.push_back(tok[i]);
      }
      check(tok[10], "after decode steps");
      s.decode2(tok[10], tok[11]);
      s.truncate(9);
      held.resize(9);
      check(tok[2], "after a truncate");
    }
  }
}

}  // namespace
