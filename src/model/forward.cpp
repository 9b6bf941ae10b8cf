// forward.cpp — the model's training/evaluation pass over a packed batch: forward in dense / DSA /
// window mode (MQA mode; MHA-mode oracle for dense), the hand-written backward of every parameter
// (each block names the forward line it inverts), the indexer's KL gradient per stage, and indexer
// recall. Layer algebra: include/dsa/model.h and docs/model.md.

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "common/blas.h"
#include "model/impl.h"

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
  Vec x, xn, rstd_in, qa, rstd_qa, qan, q, kva, c_raw, rstd_kv, cn, qm, kvm, olat, lse, o, x1, hn, rstd_post, g, u, a;
  std::vector<int32_t> idx;   // [T, K] selection (sparse / window)
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
void indexer_param_backward(const Model::Impl& m, int l, const LayerActs& A, const Vec& kpre, const Vec& kmean,
                            const Vec& krstd, Vec& dqi, Vec& dki, Vec& dwi, int64_t T, const int32_t* pos,
                            std::vector<Tensor>& grads) {
  const Dims d(m.cfg);
  const LayerParams& L = m.layers[l];
  // inverts iw = (xn·Wwᵀ)·HI^-½·DI^-½
  const float wscale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d.HI) * d.DI));
  for (float& v : dwi) v *= wscale;
  cpu::linear_backward(A.xn.data(), m.P(L.idx_w), dwi.data(), nullptr, grads[L.idx_w].data.data(), T, d.D, d.HI, false);
  // inverts iq = Hadamard(RoPE_rh(qan·Wqᵀ)): Hadamard is symmetric orthonormal (its own transpose)
  cpu::hadamard_transform(dqi.data(), T * d.HI, d.DI);
  cpu::rope_backward(rope(T, d.HI, d.DI, 0, d.dr, RopeLayout::kRotateHalf, pos, m.inv_freq.data(), dqi.data()));
  cpu::linear_backward(A.qan.data(), m.P(L.idx_wq), dqi.data(), nullptr, grads[L.idx_wq].data.data(), T, d.qr,
                       d.HI * d.DI, false);
  // inverts ik = Hadamard(RoPE_rh(LayerNorm(xn·Wkᵀ)))
  cpu::hadamard_transform(dki.data(), T, d.DI);
  cpu::rope_backward(rope(T, 1, d.DI, 0, d.dr, RopeLayout::kRotateHalf, pos, m.inv_freq.data(), dki.data()));
  Vec dkpre = zeros(T * d.DI);
  cpu::layernorm_backward(kpre.data(), m.P(L.idx_norm_w), kmean.data(), krstd.data(), dki.data(), dkpre.data(),
                          grads[L.idx_norm_w].data.data(), grads[L.idx_norm_b].data.data(), T, d.DI);
  cpu::linear_backward(A.xn.data(), m.P(L.idx_wk), dkpre.data(), nullptr, grads[L.idx_wk].data.data(), T, d.D, d.DI,
                       false);
}

RunResult run(const Model::Impl& m, const Batch& batch, const RunOptions& opt, std::vector<Tensor>* grads) {
  const Config& c = m.cfg;
  check_batch(c, batch);
  const Dims d(c);
  const int64_t T = static_cast<int64_t>(batch.tokens.size());
  const int Ti = static_cast<int>(T);
  const float eps = static_cast<float>(c.rms_norm_eps);
  if (opt.mha && opt.mode != AttentionMode::kDense) throw Error("model: the MHA-mode oracle supports dense mode only");

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

  RunResult res;
  if (opt.recall) {
    res.recall.layer_mass.assign(static_cast<size_t>(c.num_hidden_layers), 0.0);
    res.recall.layer_oracle.assign(static_cast<size_t>(c.num_hidden_layers), 0.0);
  }
  Vec x = zeros(T * d.D);
  cpu::embedding_forward(batch.tokens.data(), m.P(m.embed), x.data(), T, d.V, d.D);

  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const LayerParams& L = m.layers[l];
    LayerActs& A = acts[opt.lm_backward ? l : 0];
    A.x = x;
    A.xn = zeros(T * d.D);
    A.rstd_in = zeros(T);
    cpu::rmsnorm_forward(A.x.data(), m.P(L.input_norm), A.xn.data(), A.rstd_in.data(), T, d.D, eps);
    A.qa = zeros(T * d.qr);
    A.rstd_qa = zeros(T);
    A.qan = zeros(T * d.qr);
    A.q = zeros(T * d.H * d.dq);
    A.kva = zeros(T * d.Dm);
    A.c_raw = zeros(T * d.kvr);
    A.rstd_kv = zeros(T);
    A.cn = zeros(T * d.kvr);
    A.qm = zeros(T * d.H * d.Dm);
    A.kvm = zeros(T * d.Dm);
    mla_project(m, l, A.xn.data(), T, pos.data(), A.qa.data(), A.rstd_qa.data(), A.qan.data(), A.q.data(),
                A.kva.data(), A.c_raw.data(), A.rstd_kv.data(), A.cn.data(), A.qm.data(), A.kvm.data());

    // ── indexer (fp32, inputs detached: nothing below sends a gradient into xn or qan) ──
    Vec iq, kpre, kmean, krstd, ik, iw, ilog;
    IndexerParams ip;
    if (need_indexer) {
      iq = zeros(T * d.HI * d.DI);
      kpre = zeros(T * d.DI);
      kmean = zeros(T);
      krstd = zeros(T);
      ik = zeros(T * d.DI);
      iw = zeros(T * d.HI);
      indexer_project(m, l, A.xn.data(), A.qan.data(), T, pos.data(), iq.data(), kpre.data(), kmean.data(),
                      krstd.data(), ik.data(), iw.data());
      ip.T = Ti;
      ip.S = Ti;
      ip.HI = d.HI;
      ip.DI = d.DI;
      ip.precision = Precision::kFp32;
      ip.q = iq.data();
      ip.k = ik.data();
      ip.w = iw.data();
      ip.ks = ks.data();
      ip.ke = ke.data();
      ilog = zeros(T * T);
      cpu::indexer_logits(ip, ilog.data());
    }
    if (selection) {
      A.idx.assign(static_cast<size_t>(T * K), kInvalidIndex);
      if (opt.mode == AttentionMode::kSparse) {
        TopkParams tp;
        tp.T = Ti;
        tp.S = Ti;
        tp.K = K;
        tp.logits = ilog.data();
        tp.ks = ks.data();
        tp.ke = ke.data();
        tp.indices = A.idx.data();
        cpu::topk_select(tp);
      } else {   // window: the last K causal keys, newest first
        for (int64_t t = 0; t < T; ++t)
          for (int j = 0; j < K && ke[t] - 1 - j >= ks[t]; ++j) A.idx[t * K + j] = ke[t] - 1 - j;
      }
    }

    // ── main attention (MQA mode over latents) ──
    AttentionParams ap = mqa_attention_params(m, d, Ti, Ti, A.qm.data(), A.kvm.data());
    if (selection) {
      ap.K = K;
      ap.indices = A.idx.data();
    } else {
      ap.ks = ks.data();
      ap.ke = ke.data();
    }
    A.olat = zeros(T * d.H * d.kvr);
    A.lse = zeros(T * d.H);
    A.o = zeros(T * d.H * d.dv);
    if (opt.mha) {
      // MHA-mode oracle: per head k = [c·W_UKᵀ | k_pe], v = c·W_UVᵀ; the op's "V = first Dv dims of
      // the key row" is met by rows [v | k] and queries [0 | q_nope | q_pe].
      const int Dh = d.dv + d.dq;
      Vec qh = zeros(T * Dh), kvh = zeros(T * Dh), oh = zeros(T * d.dv), lh = zeros(T);
      const float* Wkvb = m.P(L.kv_b);
      for (int h = 0; h < d.H; ++h) {
        const float* Wuk = Wkvb + static_cast<int64_t>(h) * (d.dn + d.dv) * d.kvr;
        const float* Wuv = Wuk + static_cast<int64_t>(d.dn) * d.kvr;
        gemm(false, true, T, d.dv, d.kvr, A.cn.data(), d.kvr, Wuv, d.kvr, 0.0f, kvh.data(), Dh);
        gemm(false, true, T, d.dn, d.kvr, A.cn.data(), d.kvr, Wuk, d.kvr, 0.0f, kvh.data() + d.dv, Dh);
        for (int64_t t = 0; t < T; ++t) {
          std::memcpy(&kvh[t * Dh + d.dv + d.dn], &A.kva[t * d.Dm + d.kvr], sizeof(float) * d.dr);
          std::memcpy(&qh[t * Dh + d.dv], &A.q[(t * d.H + h) * d.dq], sizeof(float) * d.dq);
        }
        AttentionParams hp = ap;
        hp.H = 1;
        hp.Dqk = Dh;
        hp.Dv = d.dv;
        hp.q = qh.data();
        hp.kv = kvh.data();
        cpu::dense_attention_forward(hp, AttentionForwardOut{oh.data(), lh.data(), nullptr});
        for (int64_t t = 0; t < T; ++t) std::memcpy(&A.o[(t * d.H + h) * d.dv], &oh[t * d.dv], sizeof(float) * d.dv);
      }
    } else {
      const AttentionForwardOut out{A.olat.data(), A.lse.data(), nullptr};
      if (selection) cpu::sparse_attention_forward(ap, out);
      else cpu::dense_attention_forward(ap, out);
      absorb_out(m, l, A.olat.data(), T, A.o.data());
    }

    // ── indexer KL (dense: all causal keys; sparse: the selected set) ──
    if (opt.kl && !opt.mha && opt.mode != AttentionMode::kWindow) {
      IndexerKlParams kp;
      kp.attn = ap;
      kp.lse = A.lse.data();
      Vec sel_logits;
      if (selection) {
        sel_logits.assign(static_cast<size_t>(T * K), -std::numeric_limits<float>::infinity());
        for (int64_t t = 0; t < T; ++t)
          for (int j = 0; j < K; ++j)
            if (A.idx[t * K + j] >= 0) sel_logits[t * K + j] = ilog[t * T + A.idx[t * K + j]];
        kp.index_logits = sel_logits.data();
      } else {
        kp.index_logits = ilog.data();
      }
      Vec loss = zeros(T);
      cpu::indexer_kl_forward(kp, loss.data());
      double s = 0.0;
      for (const float v : loss) s += v;
      res.losses.kl_loss += s / static_cast<double>(T);
      if (opt.kl_backward) {
        Vec dloss(static_cast<size_t>(T), static_cast<float>(1.0 / static_cast<double>(T)));
        Vec dI = zeros(selection ? T * K : T * T);
        cpu::indexer_kl_backward(kp, dloss.data(), dI.data());
        Vec dqi = zeros(T * d.HI * d.DI), dki = zeros(T * d.DI), dwi = zeros(T * d.HI);
        IndexerBackwardParams bp;
        bp.fwd = ip;
        bp.K = selection ? K : 0;
        bp.indices = selection ? A.idx.data() : nullptr;
        bp.d_logits = dI.data();
        bp.dq = dqi.data();
        bp.dk = dki.data();
        bp.dw = dwi.data();
        cpu::indexer_backward(bp);
        indexer_param_backward(m, l, A, kpre, kmean, krstd, dqi, dki, dwi, T, pos.data(), *grads);
      }
    }

    // ── indexer recall against the dense attention of this layer ──
    if (opt.recall) {
      const int Kr = std::min(opt.topk > 0 ? opt.topk : c.index_topk, max_len);
      Vec p(static_cast<size_t>(T * T), -std::numeric_limits<float>::infinity());
      Vec z = zeros(T * T);
      std::vector<double> acc(static_cast<size_t>(T * T), 0.0);
      for (int h = 0; h < d.H; ++h) {
        gemm(false, true, T, T, d.Dm, A.qm.data() + static_cast<int64_t>(h) * d.Dm, static_cast<int64_t>(d.H) * d.Dm,
             A.kvm.data(), d.Dm, 0.0f, z.data(), T);
        for (int64_t t = 0; t < T; ++t)
          for (int32_t s = ks[t]; s < ke[t]; ++s)
            acc[t * T + s] += std::exp(static_cast<double>(m.scale) * z[t * T + s] - A.lse[t * d.H + h]) / d.H;
      }
      for (int64_t t = 0; t < T; ++t)
        for (int32_t s = ks[t]; s < ke[t]; ++s) p[t * T + s] = static_cast<float>(acc[t * T + s]);
      std::vector<int32_t> sel(static_cast<size_t>(T * Kr)), best(static_cast<size_t>(T * Kr));
      TopkParams tp;
      tp.T = Ti;
      tp.S = Ti;
      tp.K = Kr;
      tp.ks = ks.data();
      tp.ke = ke.data();
      tp.logits = ilog.data();
      tp.indices = sel.data();
      cpu::topk_select(tp);
      tp.logits = p.data();
      tp.indices = best.data();
      cpu::topk_select(tp);
      for (int64_t t = 0; t < T; ++t) {
        double mass = 0.0, oracle = 0.0;
        int n = 0, overlap = 0;
        for (int j = 0; j < Kr; ++j)
          if (best[t * Kr + j] >= 0) oracle += acc[t * T + best[t * Kr + j]];
        for (int j = 0; j < Kr; ++j) {
          const int32_t s = sel[t * Kr + j];
          if (s < 0) continue;
          ++n;
          mass += acc[t * T + s];
          for (int i = 0; i < Kr; ++i)
            if (best[t * Kr + i] == s) { ++overlap; break; }
        }
        res.recall.mass_in_selected += mass;
        res.recall.oracle_mass += oracle;
        res.recall.layer_mass[static_cast<size_t>(l)] += mass;
        res.recall.layer_oracle[static_cast<size_t>(l)] += oracle;
        res.recall.topk_overlap += n > 0 ? static_cast<double>(overlap) / n : 1.0;
        ++res.recall.rows;
      }
    }

    // ── o_proj, residual, MLP ──
    A.x1 = A.x;
    {
      Vec attn = zeros(T * d.D);
      cpu::linear_forward(A.o.data(), m.P(L.o), attn.data(), T, d.H * d.dv, d.D);
      for (int64_t i = 0; i < T * d.D; ++i) A.x1[i] += attn[i];
    }
    A.hn = zeros(T * d.D);
    A.rstd_post = zeros(T);
    cpu::rmsnorm_forward(A.x1.data(), m.P(L.post_norm), A.hn.data(), A.rstd_post.data(), T, d.D, eps);
    A.g = zeros(T * d.F);
    A.u = zeros(T * d.F);
    A.a = zeros(T * d.F);
    cpu::linear_forward(A.hn.data(), m.P(L.gate), A.g.data(), T, d.D, d.F);
    cpu::linear_forward(A.hn.data(), m.P(L.up), A.u.data(), T, d.D, d.F);
    cpu::swiglu_forward(A.g.data(), A.u.data(), A.a.data(), T * d.F);
    Vec mlp = zeros(T * d.D);
    cpu::linear_forward(A.a.data(), m.P(L.down), mlp.data(), T, d.F, d.D);
    for (int64_t i = 0; i < T * d.D; ++i) x[i] = A.x1[i] + mlp[i];
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
  Vec xf = zeros(T * d.D), rstd_f = zeros(T), logits = zeros(T * d.V);
  cpu::rmsnorm_forward(x.data(), m.P(m.final_norm), xf.data(), rstd_f.data(), T, d.D, eps);
  cpu::linear_forward(xf.data(), m.P(m.lm_head), logits.data(), T, d.D, d.V);
  int64_t count = 0;
  for (const int32_t t : batch.targets) count += t >= 0;
  const double total = cpu::cross_entropy_forward(logits.data(), batch.targets.data(), nullptr, T, d.V);
  res.losses.tokens = count;
  res.losses.lm_loss = count > 0 ? total / static_cast<double>(count) : 0.0;

  if (opt.lm_backward && count > 0) {
    std::vector<Tensor>& gr = *grads;
    auto G = [&](int i) { return gr[i].data.data(); };
    // inverts loss = mean CE(logits)
    Vec dlogits = zeros(T * d.V);
    cpu::cross_entropy_backward(logits.data(), batch.targets.data(), static_cast<float>(1.0 / count), dlogits.data(), T, d.V);
    // inverts logits = xf·Wlmᵀ and xf = RMSNorm(x)
    Vec dxf = zeros(T * d.D), dx = zeros(T * d.D);
    cpu::linear_backward(xf.data(), m.P(m.lm_head), dlogits.data(), dxf.data(), G(m.lm_head), T, d.D, d.V, false);
    dlogits = Vec();
    cpu::rmsnorm_backward(x.data(), m.P(m.final_norm), rstd_f.data(), dxf.data(), dx.data(), G(m.final_norm), T, d.D);

    Vec tmp = zeros(T * d.D);
    for (int l = c.num_hidden_layers - 1; l >= 0; --l) {
      const LayerParams& L = m.layers[l];
      LayerActs& A = acts[l];
      // inverts x_out = x1 + down(swiglu(gate(hn), up(hn))), hn = RMSNorm(x1)
      Vec da = zeros(T * d.F), dg = zeros(T * d.F), du = zeros(T * d.F), dhn = zeros(T * d.D);
      cpu::linear_backward(A.a.data(), m.P(L.down), dx.data(), da.data(), G(L.down), T, d.F, d.D, false);
      cpu::swiglu_backward(A.g.data(), A.u.data(), da.data(), dg.data(), du.data(), T * d.F);
      cpu::linear_backward(A.hn.data(), m.P(L.gate), dg.data(), dhn.data(), G(L.gate), T, d.D, d.F, false);
      cpu::linear_backward(A.hn.data(), m.P(L.up), du.data(), dhn.data(), G(L.up), T, d.D, d.F, true);
      cpu::rmsnorm_backward(A.x1.data(), m.P(L.post_norm), A.rstd_post.data(), dhn.data(), tmp.data(), G(L.post_norm), T, d.D);
      for (int64_t i = 0; i < T * d.D; ++i) dx[i] += tmp[i];   // dx is now d x1
      // inverts x1 = x + o·Woᵀ
      Vec dout = zeros(T * d.H * d.dv);
      cpu::linear_backward(A.o.data(), m.P(L.o), dx.data(), dout.data(), G(L.o), T, d.H * d.dv, d.D, false);
      // inverts o[h] = o_lat[h]·W_UV[h]ᵀ
      Vec dolat = zeros(T * d.H * d.kvr);
      const float* Wkvb = m.P(L.kv_b);
      float* dWkvb = G(L.kv_b);
      for (int h = 0; h < d.H; ++h) {
        const int64_t uk = static_cast<int64_t>(h) * (d.dn + d.dv) * d.kvr, uv = uk + static_cast<int64_t>(d.dn) * d.kvr;
        gemm(false, false, T, d.kvr, d.dv, dout.data() + h * d.dv, d.H * d.dv, Wkvb + uv, d.kvr, 0.0f,
             dolat.data() + h * d.kvr, d.H * d.kvr);
        gemm(true, false, d.dv, d.kvr, T, dout.data() + h * d.dv, d.H * d.dv, A.olat.data() + h * d.kvr, d.H * d.kvr,
             1.0f, dWkvb + uv, d.kvr);
      }
      // inverts the MQA attention over (qm, kvm)
      AttentionParams ap = mqa_attention_params(m, d, Ti, Ti, A.qm.data(), A.kvm.data());
      if (selection) {
        ap.K = K;
        ap.indices = A.idx.data();
      } else {
        ap.ks = ks.data();
        ap.ke = ke.data();
      }
      Vec dqm = zeros(T * d.H * d.Dm), dkvm = zeros(T * d.Dm);
      const AttentionBackwardArgs ab{dolat.data(), A.olat.data(), A.lse.data(), dqm.data(), dkvm.data()};
      if (selection) cpu::sparse_attention_backward(ap, ab);
      else cpu::dense_attention_backward(ap, ab);
      // inverts qm[h] = [q_nope[h]·W_UK[h] | q_pe[h]]
      Vec dq = zeros(T * d.H * d.dq);
      for (int h = 0; h < d.H; ++h) {
        const int64_t uk = static_cast<int64_t>(h) * (d.dn + d.dv) * d.kvr;
        gemm(false, true, T, d.dn, d.kvr, dqm.data() + h * d.Dm, d.H * d.Dm, Wkvb + uk, d.kvr, 0.0f,
             dq.data() + h * d.dq, d.H * d.dq);
        gemm(true, false, d.dn, d.kvr, T, A.q.data() + h * d.dq, d.H * d.dq, dqm.data() + h * d.Dm, d.H * d.Dm, 1.0f,
             dWkvb + uk, d.kvr);
        for (int64_t t = 0; t < T; ++t)
          std::memcpy(&dq[(t * d.H + h) * d.dq + d.dn], &dqm[(t * d.H + h) * d.Dm + d.kvr], sizeof(float) * d.dr);
      }
      // inverts the interleaved RoPE on q_pe, q = qan·Wqbᵀ, qan = RMSNorm(qa), qa = xn·Wqaᵀ
      cpu::rope_backward(rope(T, d.H, d.dq, d.dn, d.dr, RopeLayout::kInterleaved, pos.data(), m.inv_freq.data(), dq.data()));
      Vec dqan = zeros(T * d.qr), dqa = zeros(T * d.qr), dxn = zeros(T * d.D);
      cpu::linear_backward(A.qan.data(), m.P(L.q_b), dq.data(), dqan.data(), G(L.q_b), T, d.qr, d.H * d.dq, false);
      cpu::rmsnorm_backward(A.qa.data(), m.P(L.q_a_norm), A.rstd_qa.data(), dqan.data(), dqa.data(), G(L.q_a_norm), T, d.qr);
      cpu::linear_backward(A.xn.data(), m.P(L.q_a), dqa.data(), dxn.data(), G(L.q_a), T, d.D, d.qr, false);
      // inverts kvm = [RMSNorm(c) | RoPE(k_pe)], [c | k_pe] = xn·Wkvaᵀ
      Vec dcn = zeros(T * d.kvr), dkva = zeros(T * d.Dm);
      for (int64_t t = 0; t < T; ++t) {
        std::memcpy(&dcn[t * d.kvr], &dkvm[t * d.Dm], sizeof(float) * d.kvr);
        std::memcpy(&dkva[t * d.Dm + d.kvr], &dkvm[t * d.Dm + d.kvr], sizeof(float) * d.dr);
      }
      Vec dc = zeros(T * d.kvr);
      cpu::rmsnorm_backward(A.c_raw.data(), m.P(L.kv_a_norm), A.rstd_kv.data(), dcn.data(), dc.data(), G(L.kv_a_norm), T, d.kvr);
      for (int64_t t = 0; t < T; ++t) std::memcpy(&dkva[t * d.Dm], &dc[t * d.kvr], sizeof(float) * d.kvr);
      cpu::rope_backward(rope(T, 1, d.Dm, d.kvr, d.dr, RopeLayout::kInterleaved, pos.data(), m.inv_freq.data(), dkva.data()));
      cpu::linear_backward(A.xn.data(), m.P(L.kv_a), dkva.data(), dxn.data(), G(L.kv_a), T, d.D, d.Dm, true);
      // inverts xn = RMSNorm(x) and the residual x1 = x + …
      cpu::rmsnorm_backward(A.x.data(), m.P(L.input_norm), A.rstd_in.data(), dxn.data(), tmp.data(), G(L.input_norm), T, d.D);
      for (int64_t i = 0; i < T * d.D; ++i) dx[i] += tmp[i];
    }
    // inverts x = embed[tokens]
    cpu::embedding_backward(batch.tokens.data(), dx.data(), G(m.embed), T, d.V, d.D);
  }
  if (opt.want_logits) res.logits = std::move(logits);
  return res;
}

}  // namespace

void mm_xwt(bool exact, int64_t N, int I, int O, const float* x, int64_t ldx, const float* W, int64_t ldw, float* y,
            int64_t ldy) {
  if (N == 0) return;
  if (!exact) {
    gemm(false, true, N, O, I, x, ldx, W, ldw, 0.0f, y, ldy);
    return;
  }
  constexpr int kLanes = 8;
#pragma omp parallel for collapse(2) schedule(static) if (N * O * I > kParallelMinWork)
  for (int64_t n = 0; n < N; ++n)
    for (int o = 0; o < O; ++o) {
      const float* xr = x + n * ldx;
      const float* wr = W + o * ldw;
      float acc[kLanes] = {};
      int i = 0;
      for (; i + kLanes <= I; i += kLanes)
        for (int j = 0; j < kLanes; ++j) acc[j] += xr[i + j] * wr[i + j];
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

void mla_project(const Model::Impl& m, int l, const float* xn, int64_t T, const int32_t* pos, float* qa, float* rstd_qa,
                 float* qan, float* q, float* kva, float* c_raw, float* rstd_kv, float* cn, float* qm, float* kvm,
                 bool exact) {
  const Dims d(m.cfg);
  const LayerParams& L = m.layers[l];
  const float eps = static_cast<float>(m.cfg.rms_norm_eps);
  mm_xwt(exact, T, d.D, d.qr, xn, d.D, m.P(L.q_a), d.D, qa, d.qr);
  cpu::rmsnorm_forward(qa, m.P(L.q_a_norm), qan, rstd_qa, T, d.qr, eps);
  mm_xwt(exact, T, d.qr, d.H * d.dq, qan, d.qr, m.P(L.q_b), d.qr, q, d.H * d.dq);
  cpu::rope_forward(rope(T, d.H, d.dq, d.dn, d.dr, RopeLayout::kInterleaved, pos, m.inv_freq.data(), q));
  mm_xwt(exact, T, d.D, d.Dm, xn, d.D, m.P(L.kv_a), d.D, kva, d.Dm);
  for (int64_t t = 0; t < T; ++t) std::memcpy(c_raw + t * d.kvr, kva + t * d.Dm, sizeof(float) * d.kvr);
  cpu::rmsnorm_forward(c_raw, m.P(L.kv_a_norm), cn, rstd_kv, T, d.kvr, eps);
  cpu::rope_forward(rope(T, 1, d.Dm, d.kvr, d.dr, RopeLayout::kInterleaved, pos, m.inv_freq.data(), kva));
  for (int64_t t = 0; t < T; ++t) {
    std::memcpy(kvm + t * d.Dm, cn + t * d.kvr, sizeof(float) * d.kvr);
    std::memcpy(kvm + t * d.Dm + d.kvr, kva + t * d.Dm + d.kvr, sizeof(float) * d.dr);
  }
  const float* Wkvb = m.P(L.kv_b);
  for (int h = 0; h < d.H; ++h) {
    // q_lat[h] = q_nope[h] · W_UK[h]   ([T, dn] · [dn, kvr])
    mm_xw(exact, T, d.dn, d.kvr, q + h * d.dq, d.H * d.dq, Wkvb + static_cast<int64_t>(h) * (d.dn + d.dv) * d.kvr,
          d.kvr, qm + h * d.Dm, d.H * d.Dm);
    for (int64_t t = 0; t < T; ++t)
      std::memcpy(qm + (t * d.H + h) * d.Dm + d.kvr, q + (t * d.H + h) * d.dq + d.dn, sizeof(float) * d.dr);
  }
}

void indexer_project(const Model::Impl& m, int l, const float* xn, const float* qan, int64_t T, const int32_t* pos,
                     float* iq, float* kpre, float* kmean, float* krstd, float* ik, float* iw, bool exact) {
  const Dims d(m.cfg);
  const LayerParams& L = m.layers[l];
  mm_xwt(exact, T, d.qr, d.HI * d.DI, qan, d.qr, m.P(L.idx_wq), d.qr, iq, d.HI * d.DI);
  cpu::rope_forward(rope(T, d.HI, d.DI, 0, d.dr, RopeLayout::kRotateHalf, pos, m.inv_freq.data(), iq));
  cpu::hadamard_transform(iq, T * d.HI, d.DI);
  mm_xwt(exact, T, d.D, d.DI, xn, d.D, m.P(L.idx_wk), d.D, kpre, d.DI);
  cpu::layernorm_forward(kpre, m.P(L.idx_norm_w), m.P(L.idx_norm_b), ik, kmean, krstd, T, d.DI, kIndexerNormEps);
  cpu::rope_forward(rope(T, 1, d.DI, 0, d.dr, RopeLayout::kRotateHalf, pos, m.inv_freq.data(), ik));
  cpu::hadamard_transform(ik, T, d.DI);
  mm_xwt(exact, T, d.D, d.HI, xn, d.D, m.P(L.idx_w), d.D, iw, d.HI);
  const float wscale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d.HI) * d.DI));
  for (int64_t i = 0; i < T * d.HI; ++i) iw[i] *= wscale;
}

void absorb_out(const Model::Impl& m, int l, const float* olat, int64_t T, float* o, bool exact) {
  const Dims d(m.cfg);
  const float* Wkvb = m.P(m.layers[l].kv_b);
  for (int h = 0; h < d.H; ++h) {
    const float* Wuv = Wkvb + (static_cast<int64_t>(h) * (d.dn + d.dv) + d.dn) * d.kvr;
    mm_xwt(exact, T, d.kvr, d.dv, olat + h * d.kvr, d.H * d.kvr, Wuv, d.kvr, o + h * d.dv, d.H * d.dv);
  }
}

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
  return run(*impl_, batch, o, &impl_->grads).losses;
}

Losses Model::evaluate(const Batch& batch, AttentionMode mode, int topk, bool mha) const {
  RunOptions o;
  o.mode = mode;
  o.topk = topk;
  o.mha = mha;
  o.kl = mode != AttentionMode::kWindow && !mha;
  return run(*impl_, batch, o, nullptr).losses;
}

std::vector<float> Model::logits(const Batch& batch, AttentionMode mode, int topk, bool mha) const {
  RunOptions o;
  o.mode = mode;
  o.topk = topk;
  o.mha = mha;
  o.want_logits = true;
  return run(*impl_, batch, o, nullptr).logits;
}

Model::RecallStats Model::indexer_recall(const Batch& batch, int topk) const {
  RunOptions o;
  o.mode = AttentionMode::kDense;
  o.topk = topk;
  o.recall = true;
  return run(*impl_, batch, o, nullptr).recall;
}

}  // namespace dsa::model
