// attention_common.cpp — validation, micro-kernels and tile steps shared by ops 6–9.
#include "cpu/attention_common.h"

#include <algorithm>

#include "common/check.h"
#include "cpu/attention_kernels.h"
#include "dsa/cpu_isa.h"


namespace dsa::cpu::attn {

using detail::fail;
using detail::require_positive;
using detail::require_ptr;

// ── validation ──────────────────────────────────────────────────────────────────────────────────
void validate_params(const AttentionParams& p, Selection sel, const char* op, bool check_dv) {
  detail::require_non_negative(p.T, op, "T");
  detail::require_non_negative(p.S, op, "S");
  require_positive(p.H, op, "H");
  require_positive(p.Dqk, op, "Dqk");
  if (check_dv) {
    require_positive(p.Dv, op, "Dv");
    if (p.Dv > p.Dqk) fail(op, "Dv = ", p.Dv, " must be <= Dqk = ", p.Dqk, " (V is the first Dv dims of a kv row)");
  }
  if (!(p.scale > 0.0f) || !std::isfinite(p.scale)) fail(op, "scale = ", p.scale, " must be finite and > 0");
  require_ptr(p.q, op, "q");
  require_ptr(p.kv, op, "kv");
  if (sel == Selection::kDense) {
    detail::require_ranges(p.ks, p.ke, p.T, p.S, op);
    return;
  }
  require_positive(p.K, op, "K");
  require_ptr(p.indices, op, "indices");
  for (int t = 0; t < p.T; ++t) {
    const int len = sparse_row_length(p, t);
    if (len < 0 || len > p.K) fail(op, "topk_length[", t, "] = ", len, " is outside [0, K = ", p.K, "]");
    const int32_t* idx = p.indices + static_cast<int64_t>(t) * p.K;
    for (int k = 0; k < len; ++k)
      if (idx[k] != kInvalidIndex && (idx[k] < 0 || idx[k] >= p.S))
        fail(op, "indices[", t, ",", k, "] = ", idx[k], " is out of range [0, ", p.S, ") (and not -1)");
  }
}

void validate_forward_out(const AttentionForwardOut& o, const char* op) {
  require_ptr(o.out, op, "out");
  require_ptr(o.lse, op, "lse");
}

void validate_backward_args(const AttentionBackwardArgs& b, const char* op) {
  require_ptr(b.dout, op, "dout");
  require_ptr(b.out, op, "out");
  require_ptr(b.lse, op, "lse");
  require_ptr(b.dq, op, "dq");
  require_ptr(b.dkv, op, "dkv");
}

// ── kernels of the ISA path in use (attention_kernels.h) ─────────────────────────────────────────
namespace {
const AttnKernels& k() {
  switch (isa()) {
    case Isa::kGeneric: return generic::kernels();
    case Isa::kNeon: return neon::kernels();
    case Isa::kAvx2:
    case Isa::kAvx512: break;
  }
  return avx2::kernels();
}
}  // namespace

void dot_block(const float* const* a, int na, const float* const* b, int nb, int D, float scale, float* z, int ldz) {
  k().dot_block(a, na, b, nb, D, scale, z, ldz);
}
void axpy_block(const float* c, int ldc, int na, const float* const* b, int nb, int D, float* out, int ldo) {
  k().axpy_block(c, ldc, na, b, nb, D, out, ldo);
}
int transpose_keys(const float* const* keys, int nb, int D, float* kt) { return k().transpose_keys(keys, nb, D, kt); }
void scores_from_transposed(const float* const* a, int na, const float* kt, int ncols, int D, float scale, float* z,
                            int ldz) {
  k().scores_from_transposed(a, na, kt, ncols, D, scale, z, ldz);
}
void score_tile(const float* const* a, int na, const float* const* keys, int nb, int D, float scale, float* z,
                std::vector<float>& kt) {
  k().score_tile(a, na, keys, nb, D, scale, z, kt);
}
int transpose_query_heads(const float* q, int H, int D, std::vector<float>& qT) {
  return k().transpose_query_heads(q, H, D, qT);
}
void scores_heads_in_lanes(const float* qT, int ldq, int H, const float* const* keys, int nb, int D, float scale,
                           float* z) {
  k().scores_heads_in_lanes(qT, ldq, H, keys, nb, D, scale, z);
}
void forward_tile(ForwardState& st, const TileRows& rows, const float* const* keys, int nb, int Dqk, float scale) {
  k().forward_tile(st, rows, keys, nb, Dqk, scale);
}
void forward_tile_scored(ForwardState& st, const TileRows& rows, const float* const* keys, int nb) {
  k().forward_tile_scored(st, rows, keys, nb);
}
void forward_tile_query(ForwardState& st, const TileRows& rows, const float* qT, int ldq, const float* const* keys, int nb,
                        int Dqk, float scale) {
  k().forward_tile_query(st, rows, qT, ldq, keys, nb, Dqk, scale);
}
void backward_scores(BackwardTile& w, const TileRows& rows, const BackwardRow* brow, const float* const* keys, int nb,
                     int Dqk, int Dv, float scale) {
  k().backward_scores(w, rows, brow, keys, nb, Dqk, Dv, scale);
}

// ── forward state ───────────────────────────────────────────────────────────────────────────────
void ForwardState::reset(int M, int dv) {
  Dv = dv;
  m.assign(M, kNegInf);
  l.assign(M, 0.0);
  acc.assign(static_cast<size_t>(M) * dv, 0.0);
  z.resize(static_cast<size_t>(M) * kKeyBlock);
  pv.resize(static_cast<size_t>(M) * dv);
}

void forward_finish_row(const ForwardState& st, int r, float* out, float* lse, float* max_logits) {
  if (st.l[r] == 0.0) {  // no valid key (FlashMLA HEAD: out 0, lse +inf, max_logits −inf)
    std::fill(out, out + st.Dv, 0.0f);
    *lse = kPosInf;
    if (max_logits) *max_logits = kNegInf;
    return;
  }
  const double inv_l = 1.0 / st.l[r];
  const double* acc = st.acc.data() + static_cast<size_t>(r) * st.Dv;
  for (int d = 0; d < st.Dv; ++d) out[d] = static_cast<float>(acc[d] * inv_l);
  *lse = static_cast<float>(static_cast<double>(st.m[r]) + std::log(st.l[r]));
  if (max_logits) *max_logits = st.m[r];
}

std::vector<double> row_deltas(const float* out, const float* dout, int64_t rows, int Dv) {
  std::vector<double> delta(rows);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    double s = 0.0;
    for (int d = 0; d < Dv; ++d) s += static_cast<double>(out[r * Dv + d]) * dout[r * Dv + d];
    delta[r] = s;
  }
  return delta;
}

}  // namespace dsa::cpu::attn
