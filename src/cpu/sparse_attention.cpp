// sparse_attention.cpp — ops 6–7: MQA attention over the selected keys indices[t, 0:len)
// (FlashMLA flash_mla_sparse_fwd semantics: −1 skipped, duplicates count twice, lse natural-log,
// +inf / out 0 / max_logits −inf for a row with no valid index).
//
// Forward: one query per task (OpenMP, dynamic). Its valid indices are gathered ONCE into a list
// of kv row pointers; every key tile of that list is used by all H heads while it is in cache
// (scores [H, 64], online softmax, P·V) — the same tile step as the dense op, with the scores
// computed heads-in-lanes from the kv rows in place (forward_tile_query: no per-tile key transpose;
// bitwise the same scores).
//
// Backward, two deterministic passes:
//   pass 1 (dq): per query, as in the forward: recompute P, dZ, then dq += dZ·K.
//   pass 2 (dkv): dkv is a scatter over keys. We first transpose the selection into a key-major
//     list (counting sort, CSR): for every key s, the queries t that selected it, in ascending
//     (t, slot) order, a duplicate appearing twice. Each key is then owned by one thread, which sums
//     its contributions in that fixed order — bitwise identical for any thread count, no atomics.
//     Memory: (S + 1) int64 offsets + one int32 per valid slot (≤ T·K), i.e. ≤ 4·T·K bytes.
#include <algorithm>

#include "cpu/attention_common.h"
#include "cpu/attention_dtype.h"

namespace dsa::cpu {

using attn::kKeyBlock;

namespace {

constexpr const char* kFwdOp = "sparse_attention_forward";
constexpr const char* kBwdOp = "sparse_attention_backward";

// kv row pointers of the valid slots of row t, in slot order (a duplicate appears twice).
void gather_keys(const AttentionParams& p, int t, std::vector<const float*>& keys) {
  keys.clear();
  const int32_t* idx = p.indices + static_cast<int64_t>(t) * p.K;
  const int len = attn::sparse_row_length(p, t);
  for (int k = 0; k < len; ++k)
    if (idx[k] != kInvalidIndex) keys.push_back(p.kv + static_cast<int64_t>(idx[k]) * p.Dqk);
}

// All H rows of query t, every column of the tile valid.
void query_rows(const AttentionParams& p, int t, int nb, attn::TileRows& rows) {
  rows.clear();
  for (int h = 0; h < p.H; ++h) rows.add(h, p.q + (static_cast<int64_t>(t) * p.H + h) * p.Dqk, 0, nb);
}

}  // namespace

void sparse_attention_forward(const AttentionParams& p_in, const AttentionForwardOut& o) {
  attn::Fp32Inputs inputs;
  const AttentionParams& p = inputs.fp32(p_in, kFwdOp);
  attn::validate_params(p, attn::Selection::kSparse, kFwdOp);
  attn::validate_forward_out(o, kFwdOp);
#pragma omp parallel
  {
    attn::ForwardState st;
    attn::TileRows rows;
    std::vector<const float*> keys;
    std::vector<float> qT;
#pragma omp for schedule(dynamic, 1)
    for (int t = 0; t < p.T; ++t) {
      st.reset(p.H, p.Dv);
      gather_keys(p, t, keys);
      const int ldq = attn::transpose_query_heads(p.q + static_cast<int64_t>(t) * p.H * p.Dqk, p.H, p.Dqk, qT);
      const int n_keys = static_cast<int>(keys.size());
      for (int j0 = 0; j0 < n_keys; j0 += kKeyBlock) {
        const int nb = std::min(kKeyBlock, n_keys - j0);
        query_rows(p, t, nb, rows);
        attn::forward_tile_query(st, rows, qT.data(), ldq, keys.data() + j0, nb, p.Dqk, p.scale);
      }
      for (int h = 0; h < p.H; ++h) {
        const int64_t th = static_cast<int64_t>(t) * p.H + h;
        attn::forward_finish_row(st, h, o.out + th * p.Dv, o.lse + th, o.max_logits ? o.max_logits + th : nullptr);
      }
    }
  }
}

void sparse_attention_backward(const AttentionParams& p_in, const AttentionBackwardArgs& b) {
  attn::Fp32Inputs inputs;
  const AttentionParams& p = inputs.fp32(p_in, kBwdOp);
  attn::validate_params(p, attn::Selection::kSparse, kBwdOp);
  attn::validate_backward_args(b, kBwdOp);
  const int64_t n_rows = static_cast<int64_t>(p.T) * p.H;
  // Δ[t,h] = out·dout: the row constant of dZ = P ∘ (dP − Δ) (inverts the softmax normalisation).
  const std::vector<double> delta = attn::row_deltas(b.out, b.dout, n_rows, p.Dv);
  auto brow_of = [&](int64_t th) { return attn::BackwardRow{b.dout + th * p.Dv, b.lse[th], delta[th]}; };

  // Pass 1: dq[t,h] = scale · Σ_slots dZ · kv[idx]   (inverts z = scale · q·kv[idx], Dqk dims)
#pragma omp parallel
  {
    attn::TileRows rows;
    attn::BackwardTile w;
    std::vector<attn::BackwardRow> brow(p.H);
    std::vector<const float*> keys;
    std::vector<float> part(static_cast<size_t>(p.H) * p.Dqk);
    std::vector<double> acc(static_cast<size_t>(p.H) * p.Dqk);
    w.reserve(p.H);
#pragma omp for schedule(dynamic, 1)
    for (int t = 0; t < p.T; ++t) {
      gather_keys(p, t, keys);
      for (int h = 0; h < p.H; ++h) brow[h] = brow_of(static_cast<int64_t>(t) * p.H + h);
      std::fill(acc.begin(), acc.end(), 0.0);
      const int n_keys = static_cast<int>(keys.size());
      for (int j0 = 0; j0 < n_keys; j0 += kKeyBlock) {
        const int nb = std::min(kKeyBlock, n_keys - j0);
        query_rows(p, t, nb, rows);
        attn::backward_scores(w, rows, brow.data(), keys.data() + j0, nb, p.Dqk, p.Dv, p.scale);
        std::fill(part.begin(), part.end(), 0.0f);
        attn::axpy_block(w.dp.data(), kKeyBlock, p.H, keys.data() + j0, nb, p.Dqk, part.data(), p.Dqk);
        for (size_t i = 0; i < part.size(); ++i) acc[i] += part[i];
      }
      float* dq = b.dq + static_cast<int64_t>(t) * p.H * p.Dqk;
      for (size_t i = 0; i < acc.size(); ++i) dq[i] = static_cast<float>(p.scale * acc[i]);
    }
  }

  // Transpose the selection: offsets [S+1] and the query of every valid slot, key-major,
  // (t, slot) ascending within a key.
  std::vector<int64_t> offsets(static_cast<size_t>(p.S) + 1, 0);
  for (int t = 0; t < p.T; ++t) {
    const int32_t* idx = p.indices + static_cast<int64_t>(t) * p.K;
    const int len = attn::sparse_row_length(p, t);
    for (int k = 0; k < len; ++k)
      if (idx[k] != kInvalidIndex) ++offsets[idx[k] + 1];
  }
  for (int s = 0; s < p.S; ++s) offsets[s + 1] += offsets[s];
  std::vector<int32_t> by_key(static_cast<size_t>(offsets[p.S]));
  {
    std::vector<int64_t> fill(offsets.begin(), offsets.end() - 1);
    for (int t = 0; t < p.T; ++t) {
      const int32_t* idx = p.indices + static_cast<int64_t>(t) * p.K;
      const int len = attn::sparse_row_length(p, t);
      for (int k = 0; k < len; ++k)
        if (idx[k] != kInvalidIndex) by_key[fill[idx[k]]++] = t;
    }
  }

  // Pass 2: dkv[s] = scale · Σ_{t,h} dZ·q[t,h]  (K role)  +  Σ_{t,h} P·dout[t,h]  (V role, first Dv;
  // inverts out = Σ P·kv[s, 0:Dv]). The queries of a key are taken G at a time (G·H ≈ 64 rows).
  const int G = std::max(1, attn::kRowTarget / p.H);
#pragma omp parallel
  {
    attn::TileRows rows;
    attn::BackwardTile w;
    std::vector<attn::BackwardRow> brow(static_cast<size_t>(G) * p.H);
    std::vector<const float*> dout_rows(static_cast<size_t>(G) * p.H);
    std::vector<float> ck(static_cast<size_t>(G) * p.H), cv(static_cast<size_t>(G) * p.H);
    std::vector<float> part(p.Dqk);
    std::vector<double> acc(p.Dqk);
    w.reserve(G * p.H);
#pragma omp for schedule(dynamic, 16)
    for (int s = 0; s < p.S; ++s) {
      const float* key = p.kv + static_cast<int64_t>(s) * p.Dqk;
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t e0 = offsets[s]; e0 < offsets[s + 1]; e0 += G) {
        const int g = static_cast<int>(std::min<int64_t>(G, offsets[s + 1] - e0));
        rows.clear();
        for (int e = 0; e < g; ++e) {
          const int t = by_key[e0 + e];
          for (int h = 0; h < p.H; ++h) {
            const int64_t th = static_cast<int64_t>(t) * p.H + h;
            rows.add(e * p.H + h, p.q + th * p.Dqk, 0, 1);
            brow[e * p.H + h] = brow_of(th);
            dout_rows[e * p.H + h] = brow[e * p.H + h].dout;
          }
        }
        const int n = rows.size();
        attn::backward_scores(w, rows, brow.data(), &key, 1, p.Dqk, p.Dv, p.scale);
        for (int r = 0; r < n; ++r) {
          ck[r] = p.scale * w.dp[static_cast<size_t>(r) * kKeyBlock];
          cv[r] = w.z[static_cast<size_t>(r) * kKeyBlock];
        }
        std::fill(part.begin(), part.end(), 0.0f);
        attn::axpy_block(ck.data(), n, 1, rows.q.data(), n, p.Dqk, part.data(), p.Dqk);
        attn::axpy_block(cv.data(), n, 1, dout_rows.data(), n, p.Dv, part.data(), p.Dqk);
        for (int d = 0; d < p.Dqk; ++d) acc[d] += part[d];
      }
      float* dkv = b.dkv + static_cast<int64_t>(s) * p.Dqk;
      for (int d = 0; d < p.Dqk; ++d) dkv[d] = static_cast<float>(acc[d]);
    }
  }
}

}  // namespace dsa::cpu
