// indexer_kl.cpp — op 9: the indexer's KL loss against the head-summed main-attention target.
//
// Per query row t (OpenMP, dynamic), never materialising [H, T, S]:
//   1. the selected set A(t): the key range (dense mode) or the valid slots (sparse mode);
//   2. head-summed target mass ps[s] = Σ_h exp(scale·q[t,h]·kv[s] − lse[t,h]), recomputed tile by
//      tile (scores [H, 64] with the attention's dot kernel), summed over h = 0..H−1 in fp64;
//   3. p = ps / Σ ps (L1 normalisation on A(t), fp64), π = softmax of I over A(t) (fp64);
//   4. forward: loss = Σ p·(log p − log π); backward: dI = dloss·(π − p).
// Per thread memory: one fp64 row of |A(t)| ≤ max(S, K) entries plus a [H, 64] score tile.
// Conventions beyond ops.h: if every logit of A(t) is −inf, π ≡ 0 (loss +inf when p > 0, as for
// a single −inf logit); if the recomputed mass Σ ps is 0 (e.g. lse = +inf rows), p ≡ 0 (loss 0).
// Dv of the attention params is not used (V is never read).
#include <algorithm>

#include "common/check.h"
#include "cpu/attention_common.h"
#include "cpu/attention_dtype.h"

namespace dsa::cpu {

using attn::kKeyBlock;

namespace {

constexpr const char* kFwdOp = "indexer_kl_forward";
constexpr const char* kBwdOp = "indexer_kl_backward";

bool sparse_mode(const IndexerKlParams& p) { return p.attn.indices != nullptr; }

void validate(const IndexerKlParams& p, const char* op) {
  attn::validate_params(p.attn, sparse_mode(p) ? attn::Selection::kSparse : attn::Selection::kDense, op,
                        /*check_dv=*/false);
  detail::require_ptr(p.lse, op, "lse");
  detail::require_ptr(p.index_logits, op, "index_logits");
}

// Row length of index_logits / d_index_logits: S (dense) or K (sparse).
int64_t logit_row(const IndexerKlParams& p) { return sparse_mode(p) ? p.attn.K : p.attn.S; }

// Per-thread work of one row t: the columns of A(t) (positions in the logit row), their kv rows,
// and the normalised target p and model distribution π over them.
struct RowWork {
  std::vector<int> col;             // [n] column of index_logits / d_index_logits
  std::vector<const float*> keys;   // [n] kv rows
  std::vector<double> p, pi;        // [n]
  std::vector<float> z;             // [H, kKeyBlock]
  std::vector<float> kt;            // [Dqk, kKeyBlock] transposed key tile
  attn::TileRows rows;
};

void compute_row(const IndexerKlParams& p, int t, RowWork& w) {
  const AttentionParams& a = p.attn;
  w.col.clear();
  w.keys.clear();
  if (sparse_mode(p)) {
    const int32_t* idx = a.indices + static_cast<int64_t>(t) * a.K;
    const int len = attn::sparse_row_length(a, t);
    for (int k = 0; k < len; ++k)
      if (idx[k] != kInvalidIndex) {
        w.col.push_back(k);
        w.keys.push_back(a.kv + static_cast<int64_t>(idx[k]) * a.Dqk);
      }
  } else {
    for (int s = a.ks[t]; s < a.ke[t]; ++s) {
      w.col.push_back(s);
      w.keys.push_back(a.kv + static_cast<int64_t>(s) * a.Dqk);
    }
  }
  const int n = static_cast<int>(w.col.size());
  w.p.assign(n, 0.0);
  w.pi.assign(n, 0.0);
  if (n == 0) return;

  // Target: ps[j] = Σ_h P_h[t, j], P_h = exp(z − lse_h); lse = +inf contributes 0.
  w.z.resize(static_cast<size_t>(a.H) * kKeyBlock);
  const float* lse = p.lse + static_cast<int64_t>(t) * a.H;
  for (int j0 = 0; j0 < n; j0 += kKeyBlock) {
    const int nb = std::min(kKeyBlock, n - j0);
    w.rows.clear();
    for (int h = 0; h < a.H; ++h) w.rows.add(h, a.q + (static_cast<int64_t>(t) * a.H + h) * a.Dqk, 0, nb);
    attn::score_tile(w.rows.q.data(), a.H, w.keys.data() + j0, nb, a.Dqk, a.scale, w.z.data(), w.kt);
    for (int h = 0; h < a.H; ++h) {
      const double l = lse[h];
      const float* z = w.z.data() + static_cast<size_t>(h) * kKeyBlock;
      for (int j = 0; j < nb; ++j) w.p[j0 + j] += std::exp(static_cast<double>(z[j]) - l);
    }
  }
  double mass = 0.0;
  for (int j = 0; j < n; ++j) mass += w.p[j];
  const double inv_mass = mass > 0.0 ? 1.0 / mass : 0.0;
  for (int j = 0; j < n; ++j) w.p[j] *= inv_mass;

  // Model: π = softmax of I over A(t), fp64.
  const float* I = p.index_logits + static_cast<int64_t>(t) * logit_row(p);
  double mx = -std::numeric_limits<double>::infinity();
  for (int j = 0; j < n; ++j) mx = std::max(mx, static_cast<double>(I[w.col[j]]));
  if (mx == -std::numeric_limits<double>::infinity()) return;  // every logit −inf: π ≡ 0
  double sum = 0.0;
  for (int j = 0; j < n; ++j) {
    w.pi[j] = std::exp(static_cast<double>(I[w.col[j]]) - mx);
    sum += w.pi[j];
  }
  for (int j = 0; j < n; ++j) w.pi[j] /= sum;
}

}  // namespace

void indexer_kl_forward(const IndexerKlParams& p_in, float* loss) {
  attn::Fp32Inputs inputs;
  IndexerKlParams p = p_in;
  p.attn = inputs.fp32(p_in.attn, kFwdOp);
  validate(p, kFwdOp);
  detail::require_ptr(loss, kFwdOp, "loss");
#pragma omp parallel
  {
    RowWork w;
#pragma omp for schedule(dynamic, 1)
    for (int t = 0; t < p.attn.T; ++t) {
      compute_row(p, t, w);
      double kl = 0.0;
      for (size_t j = 0; j < w.p.size(); ++j)
        if (w.p[j] > 0.0) kl += w.p[j] * (std::log(w.p[j]) - std::log(w.pi[j]));  // π = 0 → +inf
      loss[t] = static_cast<float>(kl);
    }
  }
}

void indexer_kl_backward(const IndexerKlParams& p_in, const float* dloss, float* d_index_logits) {
  attn::Fp32Inputs inputs;
  IndexerKlParams p = p_in;
  p.attn = inputs.fp32(p_in.attn, kBwdOp);
  validate(p, kBwdOp);
  detail::require_ptr(d_index_logits, kBwdOp, "d_index_logits");
  const int64_t row = logit_row(p);
#pragma omp parallel
  {
    RowWork w;
#pragma omp for schedule(dynamic, 1)
    for (int t = 0; t < p.attn.T; ++t) {
      compute_row(p, t, w);
      // Inverts loss = Σ p·(log p − I + logsumexp I): ∂loss/∂I = π − p on A(t), 0 elsewhere.
      const double g = dloss ? dloss[t] : 1.0;
      float* dI = d_index_logits + t * row;
      std::fill(dI, dI + row, 0.0f);
      for (size_t j = 0; j < w.p.size(); ++j) dI[w.col[j]] = static_cast<float>(g * (w.pi[j] - w.p[j]));
    }
  }
}

}  // namespace dsa::cpu
