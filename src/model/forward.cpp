// forward.cpp — the model's training/evaluation pass over a packed batch: forward in dense / DSA /
// window mode (MQA mode; MHA-mode oracle for dense), the hand-written backward of every parameter
// (each block names the forward line it inverts), the indexer's KL gradient per stage, and indexer
// recall. Layer algebra: include/dsa/model.h and docs/model.md.

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "common/blas.h"
#include "model/moe.h"

namespace dsa::model {
namespace {

constexpr float kIndexerNormEps = 1e-6f;   // k_norm LayerNorm eps (V3.2 Indexer, dsa-spec §1)
// Below this many multiply-adds a parallel region costs more than it saves (decode of tiny models).
constexpr int64_t kParallelMinWork = 1 << 15;

using Vec = std::vector<float>;
inline Vec zeros(int64_t n) { return Vec(static_cast<size_t>(n), 0.0f); }

// C[M,N] = alpha·op(A)·op(B) + beta·C, row-major with explicit leading dimensions.
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb,
          float beta, float* C, int64_t ldc) {
  blas::sgemm(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
}

RopeParams rope(int64_t T, int H, int D, int offset, int R, RopeLayout layout, const int32_t* pos,
                const float* inv_freq, float* x) {
  RopeParams p;
  p.T = static_cast<int>(T);
  p.H = H;
  p.D = D;
  p.offset = offset;
  p.R = R;
  p.layout = layout;
  p.pos = pos;
  p.inv_freq = inv_freq;
  p.x = x;
  return p;
}

// Activations of one layer kept for the backward pass.
struct LayerActs {
  FBuf x, xn, rstd_in, qa, rstd_qa, qan, q, kva, c_raw, rstd_kv, cn, qm, kvm, olat, lse, o, x1, hn, rstd_post, g, u, a;
  IBuf idx;   // [T, K] selection (sparse / window)
  IBuf len;   // [T] per-row k of a non-default SelectionPolicy (kSparse); empty otherwise
  MoeActs moe;   // a MoE layer's MLP (g, u, a stay empty)
};

struct RunOptions {
  AttentionMode mode = AttentionMode::kDense;
  int topk = 0;
  bool mha = false;
  bool lm_backward = false;   // LM loss → non-indexer grads
  bool kl = false;            // compute the indexer KL (dense: over [ks,ke); sparse: over the selection)
  bool kl_backward = false;   // KL → indexer grads
  bool want_logits = false;
  bool recall = false;
  double need_mass = 0;       // > 0: recall also records each row's entropy and needed k (RecallStats)
};

struct RunResult {
  Losses losses;
  Vec logits;
  Model::RecallStats recall;
};

void check_batch(const Config& c, const Batch& b) {
  if (b.tokens.size() != b.targets.size())
    throw Error("model: batch tokens (" + std::to_string(b.tokens.size()) + ") and targets (" +
                std::to_string(b.targets.size()) + ") differ in length");
  int64_t sum = 0;
  for (size_t i = 0; i < b.seq_lens.size(); ++i) {
    if (b.seq_lens[i] <= 0) throw Error("model: batch seq_lens[" + std::to_string(i) + "] must be > 0");
    if (b.seq_lens[i] > c.max_position_embeddings)
      throw Error("model: batch seq_lens[" + std::to_string(i) + "] = " + std::to_string(b.seq_lens[i]) +
                  " exceeds max_position_embeddings = " + std::to_string(c.max_position_embeddings));
    sum += b.seq_lens[i];
  }
  if (sum != static_cast<int64_t>(b.tokens.size()) || sum == 0)
    throw Error("model: batch seq_lens sum to " + std::to_string(sum) + " but there are " +
                std::to_string(b.tokens.size()) + " tokens (must be equal and > 0)");
  for (size_t i = 0; i < b.tokens.size(); ++i) {
    if (b.tokens[i] < 0 || b.tokens[i] >= c.vocab_size)
      throw Error("model: batch tokens[" + std::to_string(i) + "] = " + std::to_string(b.tokens[i]) + " out of range");
    if (b.targets[i] < -1 || b.targets[i] >= c.vocab_size)
      throw Error("model: batch targets[" + std::to_string(i) + "] = " + std::to_string(b.targets[i]) + " out of range");
  }
}

// Indexer parameter gradients from dq_i, dk_i, dw_i (the indexer's inputs xn, qan are detached).
void indexer_param_backward(Exec& ex, const Model::Impl& m, int l, const LayerActs& A, const FBuf& kpre,
                            const FBuf& kmean, const FBuf& krstd, const FBuf& dqi, const FBuf& dki, const FBuf& dwi,
                            int64_t T, const int32_t* pos) {
  const Dims d(m.cfg);
  const LayerParams& L = m.layers[l];
  // inverts iw = (xn·Wwᵀ)·HI^-½·DI^-½
  const float wscale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d.HI) * d.DI));
  ex.scale(dwi.data(), wscale, T * d.HI);
  ex.ops().linear_backward(A.xn.data(), ex.param(L.idx_w), dwi.data(), nullptr, ex.grad(L.idx_w), T, d.D, d.HI, false);
  // inverts iq = Hadamard(RoPE_rh(qan·Wqᵀ)): Hadamard is symmetric orthonormal (its own transpose)
  ex.ops().hadamard_transform(dqi.data(), T * d.HI, d.DI);
  ex.ops().rope_backward(rope(T, d.HI, d.DI, 0, d.dr, RopeLayout::kRotateHalf, pos, ex.inv_freq(), dqi.data()));
  ex.ops().linear_backward(A.qan.data(), ex.param(L.idx_wq), dqi.data(), nullptr, ex.grad(L.idx_wq), T, d.qr, d.HI * d.DI,
                     false);
  // inverts ik = Hadamard(RoPE_rh(LayerNorm(xn·Wkᵀ)))
  ex.ops().hadamard_transform(dki.data(), T, d.DI);
  ex.ops().rope_backward(rope(T, 1, d.DI, 0, d.dr, RopeLayout::kRotateHalf, pos, ex.inv_freq(), dki.data()));
  FBuf dkpre = ex.zeros(T * d.DI);
  ex.ops().layernorm_backward(kpre.data(), ex.param(L.idx_norm_w), kmean.data(), krstd.data(), dki.data(), dkpre.data(),
                        ex.grad(L.idx_norm_w), ex.grad(L.idx_norm_b), T, d.DI);
  ex.ops().linear_backward(A.xn.data(), ex.param(L.idx_wk), dkpre.data(), nullptr, ex.grad(L.idx_wk), T, d.D, d.DI, false);
}

// Indexer recall of one layer (host memory only: the CPU executor).
// Under a SelectionPolicy row t keeps its own k_t: its recall is the mass on those k_t keys, the
// ceiling and the overlap are against the dense attention's own top-k_t.
void layer_recall(const Model::Impl& m, int l, const LayerActs& A, const FBuf& ilog, const std::vector<int32_t>& ks,
                  const std::vector<int32_t>& ke, int Kr, double need_mass, Model::RecallStats& rec) {
  const Dims d(m.cfg);
  const int64_t T = static_cast<int64_t>(ks.size());
  const int Ti = static_cast<int>(T);
  Vec p(static_cast<size_t>(T * T), -std::numeric_limits<float>::infinity());
  Vec z = zeros(T * T);
  std::vector<double> acc(static_cast<size_t>(T * T), 0.0);
  for (int h = 0; h < d.H; ++h) {
    gemm(false, true, T, T, d.Dm, A.qm.data() + static_cast<int64_t>(h) * d.Dm, static_cast<int64_t>(d.H) * d.Dm,
         A.kvm.data(), d.Dm, 0.0f, z.data(), T);
    for (int64_t t = 0; t < T; ++t)
      for (int32_t s = ks[t]; s < ke[t]; ++s)
        acc[t * T + s] += std::exp(static_cast<double>(m.scale) * z[t * T + s] - A.lse.data()[t * d.H + h]) / d.H;
  }
  for (int64_t t = 0; t < T; ++t)
    for (int32_t s = ks[t]; s < ke[t]; ++s) p[t * T + s] = static_cast<float>(acc[t * T + s]);
  std::vector<int32_t> sel(static_cast<size_t>(T * Kr)), best(static_cast<size_t>(T * Kr)), len(static_cast<size_t>(T));
  TopkParams tp{Ti, Ti, Kr, ilog.data(), ks.data(), ke.data(), sel.data()};   // the indexer's top-k
  tp.policy = layer_topk_policy(m.selection, l, m.cfg.num_hidden_layers, Kr);
  tp.topk_length = len.data();
  cpu::topk_select(tp);
  cpu::topk_select({Ti, Ti, Kr, p.data(), ks.data(), ke.data(), best.data()});     // the attention's own
  for (int64_t t = 0; t < T; ++t) {
    double mass = 0.0, oracle = 0.0;
    int n = 0, overlap = 0;
    const int kt = len[static_cast<size_t>(t)];
    for (int j = 0; j < kt; ++j)
      if (best[t * Kr + j] >= 0) oracle += acc[t * T + best[t * Kr + j]];
    for (int j = 0; j < kt; ++j) {
      const int32_t s = sel[t * Kr + j];
      if (s < 0) continue;
      ++n;
      mass += acc[t * T + s];
      for (int i = 0; i < kt; ++i)
        if (best[t * Kr + i] == s) { ++overlap; break; }
    }
    rec.mass_in_selected += mass;
    rec.oracle_mass += oracle;
    rec.layer_mass[static_cast<size_t>(l)] += mass;
    rec.layer_oracle[static_cast<size_t>(l)] += oracle;
    rec.topk_overlap += n > 0 ? static_cast<double>(overlap) / n : 1.0;
    ++rec.rows;
    const int keys = ke[t] - ks[t];
    if (need_mass > 0 && keys >= 2) {
      // The indexer's softmax entropy over the row (fp64), and the needed k in the indexer's order.
      const float* row = ilog.data() + t * T;
      double mx = -std::numeric_limits<double>::infinity(), z = 0.0, e = 0.0;
      for (int32_t s = ks[t]; s < ke[t]; ++s) mx = std::max(mx, static_cast<double>(row[s]));
      for (int32_t s = ks[t]; s < ke[t]; ++s) {
        const double w = std::exp(static_cast<double>(row[s]) - mx);
        z += w;
        e += w * (static_cast<double>(row[s]) - mx);
      }
      std::vector<int32_t> order(static_cast<size_t>(Kr));
      cpu::topk_select({1, Ti, Kr, row, &ks[t], &ke[t], order.data()});
      double held = 0.0;
      int need = std::min(Kr, keys);
      for (int j = 0; j < std::min(Kr, keys); ++j) {
        held += acc[t * T + order[static_cast<size_t>(j)]];
        if (held >= need_mass) { need = j + 1; break; }
      }
      rec.row_entropy[static_cast<size_t>(l)].push_back(static_cast<float>(std::log(z) - e / z));
      rec.row_need[static_cast<size_t>(l)].push_back(need);
    }
  }
}

// The MHA-mode oracle of one layer's attention (host memory only): per head k = [c·W_UKᵀ | k_pe],
// v = c·W_UVᵀ; the op's "V = first Dv dims of the key row" is met by rows [v | k] and queries
// [0 | q_nope | q_pe].
void mha_attention(const Model::Impl& m, int l, const LayerActs& A, AttentionParams ap, int64_t T) {
  const Dims d(m.cfg);
  const int Dh = d.dv + d.dq;
  Vec qh = zeros(T * Dh), kvh = zeros(T * Dh), oh = zeros(T * d.dv), lh = zeros(T);
  const float* Wkvb = m.P(m.layers[l].kv_b);
  for (int h = 0; h < d.H; ++h) {
    const float* Wuk = Wkvb + static_cast<int64_t>(h) * (d.dn + d.dv) * d.kvr;
    const float* Wuv = Wuk + static_cast<int64_t>(d.dn) * d.kvr;
    gemm(false, true, T, d.dv, d.kvr, A.cn.data(), d.kvr, Wuv, d.kvr, 0.0f, kvh.data(), Dh);
    gemm(false, true, T, d.dn, d.kvr, A.cn.data(), d.kvr, Wuk, d.kvr, 0.0f, kvh.data() + d.dv, Dh);
    for (int64_t t = 0; t < T; ++t) {
      std::memcpy(&kvh[t * Dh + d.dv + d.dn], &A.kva.data()[t * d.Dm + d.kvr], sizeof(float) * d.dr);
      std::memcpy(&qh[t * Dh + d.dv], &A.q.data()[(t * d.H + h) * d.dq], sizeof(float) * d.dq);
    }
    AttentionParams hp = ap;
    hp.H = 1;
    hp.Dqk = Dh;
    hp.Dv = d.dv;
    hp.q = qh.data();
    hp.kv = kvh.data();
    cpu::dense_attention_forward(hp, AttentionForwardOut{oh.data(), lh.data(), nullptr});
    for (int64_t t = 0; t < T; ++t) std::memcpy(&A.o.data()[(t * d.H + h) * d.dv], &oh[t * d.dv], sizeof(float) * d.dv);
  }
}

// One pass over a packed batch on `ex` (begin_run already called). Gradients go to ex.grad().
RunResult run(const Model::Impl& m, Exec& ex, const Batch& batch, const RunOptions& opt) {
  const Config& c = m.cfg;
  check_batch(c, batch);
  const Dims d(c);
  const int64_t T = static_cast<int64_t>(batch.tokens.size());
  const int Ti = static_cast<int>(T);
  const float eps = static_cast<float>(c.rms_norm_eps);
  if (opt.mha && opt.mode != AttentionMode::kDense) throw Error("model: the MHA-mode oracle supports dense mode only");
  if ((opt.mha || opt.recall) && !ex.host_memory()) throw Error("model: the MHA oracle and recall run on the CPU executor");

  // Packed ranges: row t sees keys [start of its sequence, t]; positions restart per sequence.
  std::vector<int32_t> ks(T), ke(T), pos(T);
  int max_len = 0;
  {
    int64_t t = 0;
    for (const int len : batch.seq_lens) {
      max_len = std::max(max_len, len);
      for (int i = 0; i < len; ++i, ++t) {
        ks[t] = static_cast<int32_t>(t - i);
        ke[t] = static_cast<int32_t>(t + 1);
        pos[t] = i;
      }
    }
  }
  int K = opt.topk > 0 ? opt.topk : c.index_topk;
  if (K > kMaxTopK) throw Error("model: topk = " + std::to_string(K) + " exceeds kMaxTopK");
  K = std::min(K, max_len);   // no row has more keys than its sequence: identical selections
  const bool selection = opt.mode != AttentionMode::kDense;
  const bool need_indexer = opt.mode == AttentionMode::kSparse || opt.kl || opt.recall;
  const int n_store = opt.lm_backward ? c.num_hidden_layers : 1;
  std::vector<LayerActs> acts(static_cast<size_t>(n_store));
  const IBuf ks_b = ex.upload(ks), ke_b = ex.upload(ke), pos_b = ex.upload(pos);
  const IBuf tokens = ex.upload(batch.tokens), targets = ex.upload(batch.targets);
  // A layer's MQA attention over its latents: the selection (sparse / window) or every causal key.
  auto attention_params = [&](const LayerActs& A) {
    AttentionParams ap = mqa_attention_params(m, d, Ti, Ti, A.qm.data(), A.kvm.data());
    if (selection) {
      ap.K = K;
      ap.indices = A.idx.data();
      if (A.len.size() > 0) ap.topk_length = A.len.data();   // a ragged selection (SelectionPolicy)
    } else {
      ap.ks = ks_b.data();
      ap.ke = ke_b.data();
    }
    return ap;
  };

  RunResult res;
  if (opt.mode == AttentionMode::kSparse)
    res.losses.k_histogram.assign(static_cast<size_t>(c.num_hidden_layers), std::vector<int64_t>(static_cast<size_t>(K) + 1, 0));
  if (opt.recall) {
    res.recall.layer_mass.assign(static_cast<size_t>(c.num_hidden_layers), 0.0);
    res.recall.layer_oracle.assign(static_cast<size_t>(c.num_hidden_layers), 0.0);
    res.recall.row_entropy.assign(opt.need_mass > 0 ? static_cast<size_t>(c.num_hidden_layers) : 0, {});
    res.recall.row_need.assign(opt.need_mass > 0 ? static_cast<size_t>(c.num_hidden_layers) : 0, {});
  }
  FBuf x = ex.zeros(T * d.D);
  ex.ops().embedding_forward(tokens.data(), ex.param(m.embed), x.data(), T, d.V, d.D);

  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const LayerParams& L = m.layers[l];
    LayerActs& A = acts[opt.lm_backward ? l : 0];
    A.x = x;
    A.xn = ex.zeros(T * d.D);
    A.rstd_in = ex.zeros(T);
    ex.ops().rmsnorm_forward(A.x.data(), ex.param(L.input_norm), A.xn.data(), A.rstd_in.data(), T, d.D, eps);
    A.qa = ex.zeros(T * d.qr);
    A.rstd_qa = ex.zeros(T);
    A.qan = ex.zeros(T * d.qr);
    A.q = ex.zeros(T * d.H * d.dq);
    A.kva = ex.zeros(T * d.Dm);
    A.c_raw = ex.zeros(T * d.kvr);
    A.rstd_kv = ex.zeros(T);
    A.cn = ex.zeros(T * d.kvr);
    A.qm = ex.zeros(T * d.H * d.Dm);
    A.kvm = ex.zeros(T * d.Dm);
    mla_project(ex, m, l, A.xn.data(), T, pos_b.data(), A.qa.data(), A.rstd_qa.data(), A.qan.data(), A.q.data(),
                A.kva.data(), A.c_raw.data(), A.rstd_kv.data(), A.cn.data(), A.qm.data(), A.kvm.data());

    // ── indexer (fp32, inputs detached: nothing below sends a gradient into xn or qan) ──
    FBuf iq, kpre, kmean, krstd, ik, iw, ilog;
    IndexerParams ip;
    if (need_indexer) {
      iq = ex.zeros(T * d.HI * d.DI);
      kpre = ex.zeros(T * d.DI);
      kmean = ex.zeros(T);
      krstd = ex.zeros(T);
      ik = ex.zeros(T * d.DI);
      iw = ex.zeros(T * d.HI);
      indexer_project(ex, m, l, A.xn.data(), A.qan.data(), T, pos_b.data(), iq.data(), kpre.data(), kmean.data(),
                      krstd.data(), ik.data(), iw.data());
      ip.T = Ti;
      ip.S = Ti;
      ip.HI = d.HI;
      ip.DI = d.DI;
      ip.precision = Precision::kFp32;
      ip.q = iq.data();
      ip.k = ik.data();
      ip.w = iw.data();
      ip.ks = ks_b.data();
      ip.ke = ke_b.data();
      ilog = ex.zeros(T * T);
      ex.ops().indexer_logits(ip, ilog.data());
    }
    if (selection) {
      A.idx = ex.upload(std::vector<int32_t>(static_cast<size_t>(T * K), kInvalidIndex));
      if (opt.mode == AttentionMode::kSparse) {
        TopkParams tp{Ti, Ti, K, ilog.data(), ks_b.data(), ke_b.data(), A.idx.data()};
        // The default policy runs the op exactly as before policies existed (no topk_length).
        const bool ragged = !m.selection.is_default();
        if (ragged) {
          A.len = ex.upload(std::vector<int32_t>(static_cast<size_t>(T), 0));
          tp.policy = layer_topk_policy(m.selection, l, c.num_hidden_layers, K);
          tp.topk_length = A.len.data();
        }
        ex.ops().topk_select(tp);
        std::vector<int64_t>& hist = res.losses.k_histogram[static_cast<size_t>(l)];
        if (ragged) {
          for (const int32_t k : ex.download(A.len)) ++hist[static_cast<size_t>(k)];
        } else {
          for (int64_t t = 0; t < T; ++t) ++hist[static_cast<size_t>(std::min(K, ke[t] - ks[t]))];
        }
      } else {
        ex.window_indices(ks_b.data(), ke_b.data(), T, K, A.idx.data());
      }
    }

    // ── main attention (MQA mode over latents) ──
    const AttentionParams ap = attention_params(A);
    A.olat = ex.zeros(T * d.H * d.kvr);
    A.lse = ex.zeros(T * d.H);
    A.o = ex.zeros(T * d.H * d.dv);
    if (opt.mha) {
      mha_attention(m, l, A, ap, T);
    } else {
      const AttentionForwardOut out{A.olat.data(), A.lse.data(), nullptr};
      if (selection) ex.ops().sparse_attention_forward(ap, out);
      else ex.ops().dense_attention_forward(ap, out);
      absorb_out(ex, m, l, A.olat.data(), T, A.o.data());
    }

    // ── indexer KL (dense: all causal keys; sparse: the selected set) ──
    if (opt.kl && !opt.mha && opt.mode != AttentionMode::kWindow) {
      IndexerKlParams kp;
      kp.attn = ap;
      kp.lse = A.lse.data();
      FBuf sel_logits;
      if (selection) {
        sel_logits = ex.zeros(T * K);
        ex.gather_selected(ilog.data(), T, A.idx.data(), T, K, sel_logits.data());
        kp.index_logits = sel_logits.data();
      } else {
        kp.index_logits = ilog.data();
      }
      FBuf loss = ex.zeros(T);
      ex.ops().indexer_kl_forward(kp, loss.data());
      res.losses.kl_loss += ex.sum(loss.data(), T) / static_cast<double>(T);
      if (opt.kl_backward) {
        const FBuf dloss = ex.upload(Vec(static_cast<size_t>(T), static_cast<float>(1.0 / static_cast<double>(T))));
        FBuf dI = ex.zeros(selection ? T * K : T * T);
        ex.ops().indexer_kl_backward(kp, dloss.data(), dI.data());
        FBuf dqi = ex.zeros(T * d.HI * d.DI), dki = ex.zeros(T * d.DI), dwi = ex.zeros(T * d.HI);
        IndexerBackwardParams bp;
        bp.fwd = ip;
        bp.K = selection ? K : 0;
        bp.indices = selection ? A.idx.data() : nullptr;
        bp.d_logits = dI.data();
        bp.dq = dqi.data();
        bp.dk = dki.data();
        bp.dw = dwi.data();
        ex.ops().indexer_backward(bp);
        indexer_param_backward(ex, m, l, A, kpre, kmean, krstd, dqi, dki, dwi, T, pos_b.data());
      }
    }

    // ── indexer recall against the dense attention of this layer ──
    if (opt.recall)
      layer_recall(m, l, A, ilog, ks, ke, std::min(opt.topk > 0 ? opt.topk : c.index_topk, max_len), opt.need_mass, res.recall);

    // ── o_proj, residual, MLP ──
    A.x1 = ex.clone(A.x);
    {
      FBuf attn = ex.zeros(T * d.D);
      ex.ops().linear_forward(A.o.data(), ex.param(L.o), attn.data(), T, d.H * d.dv, d.D);
      ex.add(A.x1.data(), attn.data(), T * d.D);
    }
    A.hn = ex.zeros(T * d.D);
    A.rstd_post = ex.zeros(T);
    ex.ops().rmsnorm_forward(A.x1.data(), ex.param(L.post_norm), A.hn.data(), A.rstd_post.data(), T, d.D, eps);
    FBuf mlp = ex.zeros(T * d.D);
    if (L.moe) {
      moe_forward(ex, m, l, A.hn.data(), T, mlp.data(), opt.lm_backward ? &A.moe : nullptr);
    } else {
      A.g = ex.zeros(T * d.F);
      A.u = ex.zeros(T * d.F);
      A.a = ex.zeros(T * d.F);
      ex.ops().linear_forward(A.hn.data(), ex.param(L.gate), A.g.data(), T, d.D, d.F);
      ex.ops().linear_forward(A.hn.data(), ex.param(L.up), A.u.data(), T, d.D, d.F);
      ex.ops().swiglu_forward(A.g.data(), A.u.data(), A.a.data(), T * d.F);
      ex.ops().linear_forward(A.a.data(), ex.param(L.down), mlp.data(), T, d.F, d.D);
    }
    x = ex.clone(A.x1);
    ex.add(x.data(), mlp.data(), T * d.D);
  }
  if (res.recall.rows > 0) {
    res.recall.mass_in_selected /= res.recall.rows;
    res.recall.oracle_mass /= res.recall.rows;
    res.recall.topk_overlap /= res.recall.rows;
    res.recall.rows /= c.num_hidden_layers;
    for (double& v : res.recall.layer_mass) v /= static_cast<double>(res.recall.rows);
    for (double& v : res.recall.layer_oracle) v /= static_cast<double>(res.recall.rows);
  }

  // ── final norm, LM head, cross-entropy ──
  FBuf xf = ex.zeros(T * d.D), rstd_f = ex.zeros(T), logits = ex.zeros(T * d.V);
  ex.ops().rmsnorm_forward(x.data(), ex.param(m.final_norm), xf.data(), rstd_f.data(), T, d.D, eps);
  ex.ops().linear_forward(xf.data(), ex.param(m.lm_head), logits.data(), T, d.D, d.V);
  int64_t count = 0;
  for (const int32_t t : batch.targets) count += t >= 0;
  const FBuf row_loss = ex.zeros(T);
  ex.ops().cross_entropy_forward(logits.data(), targets.data(), row_loss.data(), T, d.V);
  const double total = ex.sum(row_loss.data(), T);
  res.losses.tokens = count;
  res.losses.lm_loss = count > 0 ? total / static_cast<double>(count) : 0.0;

  if (opt.lm_backward && count > 0) {
    // inverts loss = mean CE(logits)
    FBuf dlogits = ex.zeros(T * d.V);
    ex.ops().cross_entropy_backward(logits.data(), targets.data(), static_cast<float>(1.0 / count), dlogits.data(), T, d.V);
    // inverts logits = xf·Wlmᵀ and xf = RMSNorm(x)
    FBuf dxf = ex.zeros(T * d.D), dx = ex.zeros(T * d.D);
    ex.ops().linear_backward(xf.data(), ex.param(m.lm_head), dlogits.data(), dxf.data(), ex.grad(m.lm_head), T, d.D, d.V, false);
    dlogits = FBuf();
    ex.ops().rmsnorm_backward(x.data(), ex.param(m.final_norm), rstd_f.data(), dxf.data(), dx.data(), ex.grad(m.final_norm), T, d.D);

    FBuf tmp = ex.zeros(T * d.D);
    for (int l = c.num_hidden_layers - 1; l >= 0; --l) {
      const LayerParams& L = m.layers[l];
      LayerActs& A = acts[l];
      // inverts x_out = x1 + mlp(hn), hn = RMSNorm(x1); mlp = down(swiglu(gate(hn), up(hn))) or the MoE
      FBuf dhn = ex.zeros(T * d.D);
      if (L.moe) {
        moe_backward(ex, m, l, A.hn.data(), T, A.moe, dx.data(), dhn.data());
      } else {
        FBuf da = ex.zeros(T * d.F), dg = ex.zeros(T * d.F), du = ex.zeros(T * d.F);
        ex.ops().linear_backward(A.a.data(), ex.param(L.down), dx.data(), da.data(), ex.grad(L.down), T, d.F, d.D, false);
        ex.ops().swiglu_backward(A.g.data(), A.u.data(), da.data(), dg.data(), du.data(), T * d.F);
        ex.ops().linear_backward(A.hn.data(), ex.param(L.gate), dg.data(), dhn.data(), ex.grad(L.gate), T, d.D, d.F, false);
        ex.ops().linear_backward(A.hn.data(), ex.param(L.up), du.data(), dhn.data(), ex.grad(L.up), T, d.D, d.F, true);
      }
      ex.ops().rmsnorm_backward(A.x1.data(), ex.param(L.post_norm), A.rstd_post.data(), dhn.data(), tmp.data(),
                          ex.grad(L.post_norm), T, d.D);
      ex.add(dx.data(), tmp.data(), T * d.D);   // dx is now d x1
      // inverts x1 = x + o·Woᵀ
      FBuf dout = ex.zeros(T * d.H * d.dv);
      ex.ops().linear_backward(A.o.data(), ex.param(L.o), dx.data(), dout.data(), ex.grad(L.o), T, d.H * d.dv, d.D, false);
      // inverts o[h] = o_lat[h]·W_UV[h]ᵀ
      FBuf dolat = ex.zeros(T * d.H * d.kvr);
      const float* Wkvb = ex.param(L.kv_b);
      float* dWkvb = ex.grad(L.kv_b);
      for (int h = 0; h < d.H; ++h) {
        const int64_t uk = static_cast<int64_t>(h) * (d.dn + d.dv) * d.kvr, uv = uk + static_cast<int64_t>(d.dn) * d.kvr;
        ex.gemm(false, false, T, d.kvr, d.dv, dout.data() + h * d.dv, d.H * d.dv, Wkvb + uv, d.kvr, 0.0f,
                dolat.data() + h * d.kvr, d.H * d.kvr);
        ex.gemm(true, false, d.dv, d.kvr, T, dout.data() + h * d.dv, d.H * d.dv, A.olat.data() + h * d.kvr, d.H * d.kvr,
                1.0f, dWkvb + uv, d.kvr);
      }
      // inverts the MQA attention over (qm, kvm)
      const AttentionParams ap = attention_params(A);
      FBuf dqm = ex.zeros(T * d.H * d.Dm), dkvm = ex.zeros(T * d.Dm);
      const AttentionBackwardArgs ab{dolat.data(), A.olat.data(), A.lse.data(), dqm.data(), dkvm.data()};
      if (selection) ex.ops().sparse_attention_backward(ap, ab);
      else ex.ops().dense_attention_backward(ap, ab);
      // inverts qm[h] = [q_nope[h]·W_UK[h] | q_pe[h]]
      FBuf dq = ex.zeros(T * d.H * d.dq);
      for (int h = 0; h < d.H; ++h) {
        const int64_t uk = static_cast<int64_t>(h) * (d.dn + d.dv) * d.kvr;
        ex.gemm(false, true, T, d.dn, d.kvr, dqm.data() + h * d.Dm, d.H * d.Dm, Wkvb + uk, d.kvr, 0.0f,
                dq.data() + h * d.dq, d.H * d.dq);
        ex.gemm(true, false, d.dn, d.kvr, T, A.q.data() + h * d.dq, d.H * d.dq, dqm.data() + h * d.Dm, d.H * d.Dm, 1.0f,
                dWkvb + uk, d.kvr);
        ex.copy_cols(dq.data() + h * d.dq + d.dn, d.H * d.dq, dqm.data() + h * d.Dm + d.kvr, d.H * d.Dm, T, d.dr);
      }
      // inverts the interleaved RoPE on q_pe, q = qan·Wqbᵀ, qan = RMSNorm(qa), qa = xn·Wqaᵀ
      ex.ops().rope_backward(rope(T, d.H, d.dq, d.dn, d.dr, RopeLayout::kInterleaved, pos_b.data(), ex.inv_freq(), dq.data()));
      FBuf dqan = ex.zeros(T * d.qr), dqa = ex.zeros(T * d.qr), dxn = ex.zeros(T * d.D);
      ex.ops().linear_backward(A.qan.data(), ex.param(L.q_b), dq.data(), dqan.data(), ex.grad(L.q_b), T, d.qr, d.H * d.dq, false);
      ex.ops().rmsnorm_backward(A.qa.data(), ex.param(L.q_a_norm), A.rstd_qa.data(), dqan.data(), dqa.data(),
                          ex.grad(L.q_a_norm), T, d.qr);
      ex.ops().linear_backward(A.xn.data(), ex.param(L.q_a), dqa.data(), dxn.data(), ex.grad(L.q_a), T, d.D, d.qr, false);
      // inverts kvm = [RMSNorm(c) | RoPE(k_pe)], [c | k_pe] = xn·Wkvaᵀ
      FBuf dcn = ex.zeros(T * d.kvr), dkva = ex.zeros(T * d.Dm);
      ex.copy_cols(dcn.data(), d.kvr, dkvm.data(), d.Dm, T, d.kvr);
      ex.copy_cols(dkva.data() + d.kvr, d.Dm, dkvm.data() + d.kvr, d.Dm, T, d.dr);
      FBuf dc = ex.zeros(T * d.kvr);
      ex.ops().rmsnorm_backward(A.c_raw.data(), ex.param(L.kv_a_norm), A.rstd_kv.data(), dcn.data(), dc.data(),
                          ex.grad(L.kv_a_norm), T, d.kvr);
      ex.copy_cols(dkva.data(), d.Dm, dc.data(), d.kvr, T, d.kvr);
      ex.ops().rope_backward(rope(T, 1, d.Dm, d.kvr, d.dr, RopeLayout::kInterleaved, pos_b.data(), ex.inv_freq(), dkva.data()));
      ex.ops().linear_backward(A.xn.data(), ex.param(L.kv_a), dkva.data(), dxn.data(), ex.grad(L.kv_a), T, d.D, d.Dm, true);
      // inverts xn = RMSNorm(x) and the residual x1 = x + …
      ex.ops().rmsnorm_backward(A.x.data(), ex.param(L.input_norm), A.rstd_in.data(), dxn.data(), tmp.data(),
                          ex.grad(L.input_norm), T, d.D);
      ex.add(dx.data(), tmp.data(), T * d.D);
    }
    // inverts x = embed[tokens]
    ex.ops().embedding_backward(tokens.data(), dx.data(), ex.grad(m.embed), T, d.V, d.D);
  }
  if (opt.want_logits) res.logits = ex.download(logits);
  return res;
}

// Runs a pass on the model's executor (the CPU unless set_exec installed another; recall and the
// MHA oracle always on the CPU).
RunResult run_pass(const Model::Impl& m, const Batch& batch, const RunOptions& opt, std::vector<Tensor>* grads) {
  std::unique_ptr<Exec> cpu_exec;
  Exec* ex = m.exec.get();
  if (!ex || opt.recall || opt.mha) {
    cpu_exec = make_cpu_exec(/*exact=*/false, m.host_pool);
    ex = cpu_exec.get();
  }
  ex->begin_run(m, grads);
  RunResult r = run(m, *ex, batch, opt);
  ex->end_run(grads);
  return r;
}

}  // namespace

void mm_xwt(bool exact, int64_t N, int I, int O, const float* x, int64_t ldx, const float* W, int64_t ldw, float* y,
            int64_t ldy) {
  if (N == 0) return;
  if (!exact) {
    gemm(false, true, N, O, I, x, ldx, W, ldw, 0.0f, y, ldy);
    return;
  }
  // The 8 partial sums live in explicit vectors of the native width (one of 8 lanes with AVX, two of 4
  // otherwise): left to the auto-vectoriser, the same loop over a float[8] ran 5.6× slower under
  // -march=native (AVX-512) than in the portable build, and one 8-lane vector halves the portable
  // build's speed (both measured at 8192 × 128 × 384).
  constexpr int kLanes = 8;
#if defined(__AVX__)
  constexpr int kVec = 8;
#else
  constexpr int kVec = 4;
#endif
  typedef float lanes __attribute__((vector_size(kVec * sizeof(float))));
  constexpr int kVecs = kLanes / kVec;
#pragma omp parallel for collapse(2) schedule(static) if (N * O * I > kParallelMinWork)
  for (int64_t n = 0; n < N; ++n)
    for (int o = 0; o < O; ++o) {
      const float* xr = x + n * ldx;
      const float* wr = W + o * ldw;
      lanes part[kVecs] = {};
      int i = 0;
      for (; i + kLanes <= I; i += kLanes)
        for (int v = 0; v < kVecs; ++v) {
          lanes xv, wv;
          std::memcpy(&xv, xr + i + v * kVec, sizeof xv);
          std::memcpy(&wv, wr + i + v * kVec, sizeof wv);
          part[v] += xv * wv;
        }
      float acc[kLanes];
      std::memcpy(acc, part, sizeof acc);
      float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
      for (; i < I; ++i) s += xr[i] * wr[i];
      y[n * ldy + o] = s;
    }
}

void mm_xw(bool exact, int64_t N, int I, int O, const float* x, int64_t ldx, const float* W, int64_t ldw, float* y,
           int64_t ldy) {
  if (N == 0) return;
  if (!exact) {
    gemm(false, false, N, O, I, x, ldx, W, ldw, 0.0f, y, ldy);
    return;
  }
  // each y[n, o] accumulates over i in order; the loop over o vectorises across independent sums
#pragma omp parallel for schedule(static) if (N * O * I > kParallelMinWork)
  for (int64_t n = 0; n < N; ++n) {
    float* yr = y + n * ldy;
    for (int o = 0; o < O; ++o) yr[o] = 0.0f;
    for (int i = 0; i < I; ++i) {
      const float xv = x[n * ldx + i];
      const float* wr = W + i * ldw;
      for (int o = 0; o < O; ++o) yr[o] += xv * wr[o];
    }
  }
}

void mla_project(Exec& ex, const Model::Impl& m, int l, const float* xn, int64_t T, const int32_t* pos, float* qa,
                 float* rstd_qa, float* qan, float* q, float* kva, float* c_raw, float* rstd_kv, float* cn, float* qm,
                 float* kvm, bool round_bf16) {
  const Dims d(m.cfg);
  const LayerParams& L = m.layers[l];
  const float eps = static_cast<float>(m.cfg.rms_norm_eps);
  const auto R = [&](float* p, int64_t n) {
    if (round_bf16) ex.round_bf16(p, n);
  };
  ex.mm_xwt(T, d.D, d.qr, xn, d.D, ex.param(L.q_a), d.D, qa, d.qr);
  R(qa, T * d.qr);
  ex.ops().rmsnorm_forward(qa, ex.param(L.q_a_norm), qan, rstd_qa, T, d.qr, eps);
  R(qan, T * d.qr);
  ex.mm_xwt(T, d.qr, d.H * d.dq, qan, d.qr, ex.param(L.q_b), d.qr, q, d.H * d.dq);
  R(q, T * d.H * d.dq);
  ex.ops().rope_forward(rope(T, d.H, d.dq, d.dn, d.dr, RopeLayout::kInterleaved, pos, ex.inv_freq(), q));
  R(q, T * d.H * d.dq);
  ex.mm_xwt(T, d.D, d.Dm, xn, d.D, ex.param(L.kv_a), d.D, kva, d.Dm);
  R(kva, T * d.Dm);
  ex.copy_cols(c_raw, d.kvr, kva, d.Dm, T, d.kvr);
  ex.ops().rmsnorm_forward(c_raw, ex.param(L.kv_a_norm), cn, rstd_kv, T, d.kvr, eps);
  R(cn, T * d.kvr);
  ex.ops().rope_forward(rope(T, 1, d.Dm, d.kvr, d.dr, RopeLayout::kInterleaved, pos, ex.inv_freq(), kva));
  R(kva, T * d.Dm);
  ex.copy_cols(kvm, d.Dm, cn, d.kvr, T, d.kvr);
  ex.copy_cols(kvm + d.kvr, d.Dm, kva + d.kvr, d.Dm, T, d.dr);
  const float* Wkvb = ex.param(L.kv_b);
  for (int h = 0; h < d.H; ++h) {
    // q_lat[h] = q_nope[h] · W_UK[h]   ([T, dn] · [dn, kvr])
    ex.mm_xw(T, d.dn, d.kvr, q + h * d.dq, d.H * d.dq, Wkvb + static_cast<int64_t>(h) * (d.dn + d.dv) * d.kvr, d.kvr,
             qm + h * d.Dm, d.H * d.Dm);
    ex.copy_cols(qm + h * d.Dm + d.kvr, d.H * d.Dm, q + h * d.dq + d.dn, d.H * d.dq, T, d.dr);
  }
  R(qm, T * d.H * d.Dm);
}

void indexer_project(Exec& ex, const Model::Impl& m, int l, const float* xn, const float* qan, int64_t T,
                     const int32_t* pos, float* iq, float* kpre, float* kmean, float* krstd, float* ik, float* iw,
                     bool round_bf16) {
  const Dims d(m.cfg);
  const LayerParams& L = m.layers[l];
  const auto R = [&](float* p, int64_t n) {
    if (round_bf16) ex.round_bf16(p, n);
  };
  ex.mm_xwt(T, d.qr, d.HI * d.DI, qan, d.qr, ex.param(L.idx_wq), d.qr, iq, d.HI * d.DI);
  R(iq, T * d.HI * d.DI);
  ex.ops().rope_forward(rope(T, d.HI, d.DI, 0, d.dr, RopeLayout::kRotateHalf, pos, ex.inv_freq(), iq));
  R(iq, T * d.HI * d.DI);
  ex.ops().hadamard_transform(iq, T * d.HI, d.DI);
  R(iq, T * d.HI * d.DI);
  ex.mm_xwt(T, d.D, d.DI, xn, d.D, ex.param(L.idx_wk), d.D, kpre, d.DI);
  R(kpre, T * d.DI);
  ex.ops().layernorm_forward(kpre, ex.param(L.idx_norm_w), ex.param(L.idx_norm_b), ik, kmean, krstd, T, d.DI, kIndexerNormEps);
  R(ik, T * d.DI);
  ex.ops().rope_forward(rope(T, 1, d.DI, 0, d.dr, RopeLayout::kRotateHalf, pos, ex.inv_freq(), ik));
  R(ik, T * d.DI);
  ex.ops().hadamard_transform(ik, T, d.DI);
  R(ik, T * d.DI);
  ex.mm_xwt(T, d.D, d.HI, xn, d.D, ex.param(L.idx_w), d.D, iw, d.HI);
  if (round_bf16) {   // the reference's order: HI^-0.5, then (after the q scale, a power of two) DI^-0.5
    ex.scale(iw, static_cast<float>(1.0 / std::sqrt(static_cast<double>(d.HI))), T * d.HI);
    ex.scale(iw, static_cast<float>(1.0 / std::sqrt(static_cast<double>(d.DI))), T * d.HI);
  } else {
    ex.scale(iw, static_cast<float>(1.0 / std::sqrt(static_cast<double>(d.HI) * d.DI)), T * d.HI);
  }
}

void absorb_out(Exec& ex, const Model::Impl& m, int l, const float* olat, int64_t T, float* o) {
  const Dims d(m.cfg);
  const float* Wkvb = ex.param(m.layers[l].kv_b);
  for (int h = 0; h < d.H; ++h) {
    const float* Wuv = Wkvb + (static_cast<int64_t>(h) * (d.dn + d.dv) + d.dn) * d.kvr;
    ex.mm_xwt(T, d.kvr, d.dv, olat + h * d.kvr, d.H * d.kvr, Wuv, d.kvr, o + h * d.dv, d.H * d.dv);
  }
}

void Model::set_exec(std::shared_ptr<Exec> exec) { impl_->exec = std::move(exec); }
bool Model::has_exec() const { return impl_->exec != nullptr; }

Losses Model::forward_backward(const Batch& batch, Stage stage, int topk) {
  for (Tensor& g : impl_->grads) std::fill(g.data.begin(), g.data.end(), 0.0f);
  RunOptions o;
  o.topk = topk;
  switch (stage) {
    case Stage::kPretrain:
      o.mode = AttentionMode::kDense;
      o.lm_backward = true;
      break;
    case Stage::kWarmup:
      o.mode = AttentionMode::kDense;
      o.kl = o.kl_backward = true;
      break;
    case Stage::kSparse:
      o.mode = AttentionMode::kSparse;
      o.lm_backward = o.kl = o.kl_backward = true;
      break;
  }
  return run_pass(*impl_, batch, o, &impl_->grads).losses;
}

Losses Model::evaluate(const Batch& batch, AttentionMode mode, int topk, bool mha) const {
  RunOptions o;
  o.mode = mode;
  o.topk = topk;
  o.mha = mha;
  o.kl = mode != AttentionMode::kWindow && !mha;
  return run_pass(*impl_, batch, o, nullptr).losses;
}

std::vector<float> Model::logits(const Batch& batch, AttentionMode mode, int topk, bool mha) const {
  RunOptions o;
  o.mode = mode;
  o.topk = topk;
  o.mha = mha;
  o.want_logits = true;
  return run_pass(*impl_, batch, o, nullptr).logits;
}

Model::RecallStats Model::indexer_recall(const Batch& batch, int topk, double need_mass) const {
  RunOptions o;
  o.mode = AttentionMode::kDense;
  o.topk = topk;
  o.recall = true;
  o.need_mass = need_mass;
  return run_pass(*impl_, batch, o, nullptr).recall;
}

}  // namespace dsa::model
