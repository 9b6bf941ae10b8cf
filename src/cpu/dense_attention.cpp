// dense_attention.cpp — op 8: MQA attention over key ranges [ks[t], ke[t]), flash-style.
//
// Forward: queries are cut into blocks of Bq = max(1, kRowTarget / H) queries, so one block holds
// ≈ 64 (query, head) rows that all read the same kv rows (MQA). OpenMP hands query blocks to
// threads dynamically (causal blocks differ in cost). Each block walks the union of its rows' key
// ranges in tiles of kKeyBlock keys with an online softmax; nothing of size [H, T, S] exists —
// per thread: a [rows, 64] score tile and [rows, Dv] accumulators.
//
// Backward (FlashAttention-2 algebra, two deterministic passes, no atomics, no per-thread copies
// of dkv):
//   pass 1 (dq):  query blocks as in the forward; per tile recompute P and dZ, dq += dZ·K.
//   pass 2 (dkv): key tiles are owned by one thread each; a tile visits every query block whose
//                 ranges meet it (ascending) and accumulates dkv += scale·dZᵀ·Q + Pᵀ·dout.
// Each dkv row is therefore summed in a fixed order (query blocks ascending) whatever the thread count.
// The price is recomputing the scores twice (as FlashAttention-2 does once); memory is O(tile).
#include <algorithm>

#include "cpu/attention_common.h"
#include "cpu/attention_dtype.h"

namespace dsa::cpu {

using attn::kKeyBlock;

namespace {

constexpr const char* kFwdOp = "dense_attention_forward";
constexpr const char* kBwdOp = "dense_attention_backward";

int query_block_size(int H) { return std::max(1, attn::kRowTarget / H); }

// Union [lo, hi) of the non-empty ranges of queries [t0, t1); lo == hi when all are empty.
void union_range(const AttentionParams& p, int t0, int t1, int& lo, int& hi) {
  lo = p.S;
  hi = 0;
  for (int t = t0; t < t1; ++t)
    if (p.ks[t] < p.ke[t]) {
      lo = std::min(lo, p.ks[t]);
      hi = std::max(hi, p.ke[t]);
    }
  if (lo >= hi) lo = hi = 0;
}

// The rows of queries [t0, t1) whose range meets the key tile [j0, j0 + nb).
void tile_rows(const AttentionParams& p, int t0, int t1, int j0, int nb, attn::TileRows& rows) {
  rows.clear();
  for (int t = t0; t < t1; ++t) {
    const int lo = std::max(p.ks[t], j0) - j0, hi = std::min(p.ke[t], j0 + nb) - j0;
    if (lo >= hi) continue;
    for (int h = 0; h < p.H; ++h)
      rows.add((t - t0) * p.H + h, p.q + (static_cast<int64_t>(t) * p.H + h) * p.Dqk, lo, hi);
  }
}

void key_pointers(const float* kv, int Dqk, int j0, int nb, const float** keys) {
  for (int j = 0; j < nb; ++j) keys[j] = kv + static_cast<int64_t>(j0 + j) * Dqk;
}

}  // namespace

void dense_attention_forward(const AttentionParams& p_in, const AttentionForwardOut& o) {
  attn::Fp32Inputs inputs;
  const AttentionParams& p = inputs.fp32(p_in, kFwdOp);
  attn::validate_params(p, attn::Selection::kDense, kFwdOp);
  attn::validate_forward_out(o, kFwdOp);
  const int Bq = query_block_size(p.H);
  const int n_blocks = (p.T + Bq - 1) / Bq;
#pragma omp parallel
  {
    attn::ForwardState st;
    attn::TileRows rows;
    const float* keys[kKeyBlock];
#pragma omp for schedule(dynamic, 1)
    for (int qb = 0; qb < n_blocks; ++qb) {
      const int t0 = qb * Bq, t1 = std::min(p.T, t0 + Bq);
      st.reset((t1 - t0) * p.H, p.Dv);
      int lo, hi;
      union_range(p, t0, t1, lo, hi);
      for (int j0 = lo; j0 < hi; j0 += kKeyBlock) {
        const int nb = std::min(kKeyBlock, hi - j0);
        key_pointers(p.kv, p.Dqk, j0, nb, keys);
        tile_rows(p, t0, t1, j0, nb, rows);
        attn::forward_tile(st, rows, keys, nb, p.Dqk, p.scale);
      }
      for (int t = t0; t < t1; ++t)
        for (int h = 0; h < p.H; ++h) {
          const int64_t th = static_cast<int64_t>(t) * p.H + h;
          attn::forward_finish_row(st, (t - t0) * p.H + h, o.out + th * p.Dv, o.lse + th,
                                   o.max_logits ? o.max_logits + th : nullptr);
        }
    }
  }
}

void dense_attention_backward(const AttentionParams& p_in, const AttentionBackwardArgs& b) {
  attn::Fp32Inputs inputs;
  const AttentionParams& p = inputs.fp32(p_in, kBwdOp);
  attn::validate_params(p, attn::Selection::kDense, kBwdOp);
  attn::validate_backward_args(b, kBwdOp);
  const int64_t n_rows = static_cast<int64_t>(p.T) * p.H;
  // Δ[t,h] = out·dout: the row constant of dZ = P ∘ (dP − Δ) (inverts the softmax normalisation).
  const std::vector<double> delta = attn::row_deltas(b.out, b.dout, n_rows, p.Dv);
  auto brow_of = [&](int64_t th) { return attn::BackwardRow{b.dout + th * p.Dv, b.lse[th], delta[th]}; };

  // Pass 1: dq[t,h] = scale · Σ_s dZ[t,h,s] · kv[s]   (inverts z = scale · q·k, Dqk dims)
  const int Bq = query_block_size(p.H);
  const int n_qblocks = (p.T + Bq - 1) / Bq;
#pragma omp parallel
  {
    attn::TileRows rows;
    attn::BackwardTile w;
    std::vector<attn::BackwardRow> brow;
    std::vector<float> part;     // [rows, Dqk] fp32 partial of one tile
    std::vector<double> acc;     // [block rows, Dqk] fp64 across tiles
    const float* keys[kKeyBlock];
#pragma omp for schedule(dynamic, 1)
    for (int qb = 0; qb < n_qblocks; ++qb) {
      const int t0 = qb * Bq, t1 = std::min(p.T, t0 + Bq);
      const int M = (t1 - t0) * p.H;
      w.reserve(M);
      acc.assign(static_cast<size_t>(M) * p.Dqk, 0.0);
      part.resize(static_cast<size_t>(M) * p.Dqk);
      int lo, hi;
      union_range(p, t0, t1, lo, hi);
      for (int j0 = lo; j0 < hi; j0 += kKeyBlock) {
        const int nb = std::min(kKeyBlock, hi - j0);
        key_pointers(p.kv, p.Dqk, j0, nb, keys);
        tile_rows(p, t0, t1, j0, nb, rows);
        const int n = rows.size();
        brow.resize(n);
        for (int a = 0; a < n; ++a) brow[a] = brow_of(static_cast<int64_t>(t0) * p.H + rows.id[a]);
        attn::backward_scores(w, rows, brow.data(), keys, nb, p.Dqk, p.Dv, p.scale);
        std::fill(part.begin(), part.begin() + static_cast<size_t>(n) * p.Dqk, 0.0f);
        attn::axpy_block(w.dp.data(), kKeyBlock, n, keys, nb, p.Dqk, part.data(), p.Dqk);
        for (int a = 0; a < n; ++a) {
          double* dst = acc.data() + static_cast<size_t>(rows.id[a]) * p.Dqk;
          const float* src = part.data() + static_cast<size_t>(a) * p.Dqk;
          for (int d = 0; d < p.Dqk; ++d) dst[d] += src[d];
        }
      }
      for (int r = 0; r < M; ++r) {
        float* dq = b.dq + (static_cast<int64_t>(t0) * p.H + r) * p.Dqk;
        for (int d = 0; d < p.Dqk; ++d) dq[d] = static_cast<float>(p.scale * acc[static_cast<size_t>(r) * p.Dqk + d]);
      }
    }
  }

  // Pass 2: dkv[s] = scale · Σ_{t,h} dZ·q[t,h]  (K role, Dqk dims)  +  Σ_{t,h} P·dout[t,h]  (V role,
  // first Dv dims; inverts out = Σ P·kv[s, 0:Dv]). A key tile visits the query blocks of pass 1 in
  // ascending order; each block's ≈ 64 rows are summed in fp32 (one tile of rows, as the forward sums
  // one tile of keys) and carried into the fp64 accumulators, so the score recomputation, the key
  // transpose and the fp64 fold are paid once per (key tile, query block), not once per query.
  const int n_kblocks = (p.S + kKeyBlock - 1) / kKeyBlock;
#pragma omp parallel
  {
    attn::TileRows rows;
    attn::BackwardTile w;
    std::vector<attn::BackwardRow> brow;
    const int max_rows = Bq * p.H;
    std::vector<float> ck(static_cast<size_t>(kKeyBlock) * max_rows), cv(static_cast<size_t>(kKeyBlock) * max_rows);
    std::vector<float> part(static_cast<size_t>(kKeyBlock) * p.Dqk);
    std::vector<double> acc(static_cast<size_t>(kKeyBlock) * p.Dqk);
    const float* keys[kKeyBlock];
    w.reserve(max_rows);
#pragma omp for schedule(dynamic, 1)
    for (int kb = 0; kb < n_kblocks; ++kb) {
      const int j0 = kb * kKeyBlock, nb = std::min(kKeyBlock, p.S - j0);
      key_pointers(p.kv, p.Dqk, j0, nb, keys);
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int qb = 0; qb < n_qblocks; ++qb) {
        const int t0 = qb * Bq, t1 = std::min(p.T, t0 + Bq);
        tile_rows(p, t0, t1, j0, nb, rows);
        const int n = rows.size();
        if (n == 0) continue;
        brow.resize(n);
        for (int a = 0; a < n; ++a) brow[a] = brow_of(static_cast<int64_t>(t0) * p.H + rows.id[a]);
        attn::backward_scores(w, rows, brow.data(), keys, nb, p.Dqk, p.Dv, p.scale);
        // Transposed coefficients: ck[j,a] = scale·dZ[a,j], cv[j,a] = P[a,j].
        for (int a = 0; a < n; ++a)
          for (int j = 0; j < nb; ++j) {
            ck[static_cast<size_t>(j) * n + a] = p.scale * w.dp[static_cast<size_t>(a) * kKeyBlock + j];
            cv[static_cast<size_t>(j) * n + a] = w.z[static_cast<size_t>(a) * kKeyBlock + j];
          }
        std::fill(part.begin(), part.end(), 0.0f);
        attn::axpy_block(ck.data(), n, nb, rows.q.data(), n, p.Dqk, part.data(), p.Dqk);
        attn::axpy_block(cv.data(), n, nb, w.dout_rows.data(), n, p.Dv, part.data(), p.Dqk);   // dout rows, set by backward_scores
        for (size_t i = 0; i < static_cast<size_t>(nb) * p.Dqk; ++i) acc[i] += part[i];
      }
      float* dkv = b.dkv + static_cast<int64_t>(j0) * p.Dqk;
      for (size_t i = 0; i < static_cast<size_t>(nb) * p.Dqk; ++i) dkv[i] = static_cast<float>(acc[i]);
    }
  }
}

}  // namespace dsa::cpu
