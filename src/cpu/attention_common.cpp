// attention_common.cpp — validation, micro-kernels and tile steps shared by ops 6–9.
#include "cpu/attention_common.h"

#include <algorithm>

#include "common/check.h"


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

// ── micro-kernels ───────────────────────────────────────────────────────────────────────────────
namespace {

// The native vector width: 8 floats with AVX (the -march=native benchmark builds), 4 with the
// baseline SSE2 of portable x86-64 builds. A wider generic vector would be lowered through memory
// by GCC (measured 4× slower), so the width follows the target; results are deterministic within
// one build, and the tests' tolerances hold for both widths.
#if defined(__AVX__)  // (16 lanes under AVX-512 measured no faster for the sparse forward: not used)
constexpr int kLanes = 8;
#else
constexpr int kLanes = 4;
#endif
using vecf = float __attribute__((vector_size(kLanes * sizeof(float))));

inline vecf loadv(const float* p) {
  vecf v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void storev(float* p, const vecf& v) { std::memcpy(p, &v, sizeof v); }
inline vecf splatv(float x) { return vecf{} + x; }
// Fixed pairwise order (lane l + lane l + w, halving w) so that the result only depends on the lanes.
inline float hsumv(const vecf& v) {
  float t[kLanes];
  std::memcpy(t, &v, sizeof t);
  for (int w = kLanes / 2; w > 0; w /= 2)
    for (int l = 0; l < w; ++l) t[l] += t[l + w];
  return t[0];
}

// R×C register tile of dot products: every element follows the same sequence of operations.
template <int R, int C>
inline void dot_tile(const float* const* a, const float* const* b, int D, float scale, float* z, int ldz) {
  vecf acc[R][C] = {};
  const int Dv8 = D - D % kLanes;
  for (int d = 0; d < Dv8; d += kLanes) {
    vecf bv[C];
    for (int c = 0; c < C; ++c) bv[c] = loadv(b[c] + d);
    for (int r = 0; r < R; ++r) {
      const vecf av = loadv(a[r] + d);
      for (int c = 0; c < C; ++c) acc[r][c] += av * bv[c];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) {
      float s = hsumv(acc[r][c]);
      for (int d = Dv8; d < D; ++d) s += a[r][d] * b[c][d];
      z[r * ldz + c] = scale * s;
    }
}

template <int R>
inline void dot_tile_c(const float* const* a, const float* const* b, int nc, int D, float scale, float* z, int ldz) {
  if (nc == 2) dot_tile<R, 2>(a, b, D, scale, z, ldz);
  else dot_tile<R, 1>(a, b, D, scale, z, ldz);
}

constexpr int kDotRows = 4, kDotCols = 2;     // 8 accumulators + 6 loads: fits 16 vector registers
constexpr int kAxpyRows = 2, kAxpyVecs = 4;   // 2 rows × 4 vectors of accumulators in registers

// Rows i of out (NR of them) += Σ_j c[i][j]·b[j][d0 : d0 + NV·kLanes), accumulators kept in registers.
template <int NR, int NV>
inline void axpy_tile(const float* c, int ldc, const float* const* b, int nb, int d0, float* out, int ldo) {
  vecf acc[NR][NV];
  for (int r = 0; r < NR; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = loadv(out + r * ldo + d0 + v * kLanes);
  for (int j = 0; j < nb; ++j) {
    vecf bv[NV];
    for (int v = 0; v < NV; ++v) bv[v] = loadv(b[j] + d0 + v * kLanes);
    for (int r = 0; r < NR; ++r) {
      const vecf cr = splatv(c[r * ldc + j]);
      for (int v = 0; v < NV; ++v) acc[r][v] += cr * bv[v];
    }
  }
  for (int r = 0; r < NR; ++r)
    for (int v = 0; v < NV; ++v) storev(out + r * ldo + d0 + v * kLanes, acc[r][v]);
}

template <int NR>
inline void axpy_rows(const float* c, int ldc, const float* const* b, int nb, int D, float* out, int ldo) {
  int d = 0;
  for (; d + kAxpyVecs * kLanes <= D; d += kAxpyVecs * kLanes) axpy_tile<NR, kAxpyVecs>(c, ldc, b, nb, d, out, ldo);
  for (; d + kLanes <= D; d += kLanes) axpy_tile<NR, 1>(c, ldc, b, nb, d, out, ldo);
  for (; d < D; ++d)
    for (int r = 0; r < NR; ++r) {
      float s = out[r * ldo + d];
      for (int j = 0; j < nb; ++j) s += c[r * ldc + j] * b[j][d];
      out[r * ldo + d] = s;
    }
}

}  // namespace

void dot_block(const float* const* a, int na, const float* const* b, int nb, int D, float scale, float* z, int ldz) {
  for (int i = 0; i < na; i += kDotRows) {
    const int nr = std::min(kDotRows, na - i);
    for (int j = 0; j < nb; j += kDotCols) {
      const int nc = std::min(kDotCols, nb - j);
      float* zt = z + static_cast<int64_t>(i) * ldz + j;
      switch (nr) {
        case 4: dot_tile_c<4>(a + i, b + j, nc, D, scale, zt, ldz); break;
        case 3: dot_tile_c<3>(a + i, b + j, nc, D, scale, zt, ldz); break;
        case 2: dot_tile_c<2>(a + i, b + j, nc, D, scale, zt, ldz); break;
        default: dot_tile_c<1>(a + i, b + j, nc, D, scale, zt, ldz); break;
      }
    }
  }
}

void axpy_block(const float* c, int ldc, int na, const float* const* b, int nb, int D, float* out, int ldo) {
  int i = 0;
  for (; i + kAxpyRows <= na; i += kAxpyRows)
    axpy_rows<kAxpyRows>(c + static_cast<int64_t>(i) * ldc, ldc, b, nb, D, out + static_cast<int64_t>(i) * ldo, ldo);
  for (; i < na; ++i) axpy_rows<1>(c + static_cast<int64_t>(i) * ldc, ldc, b, nb, D, out + static_cast<int64_t>(i) * ldo, ldo);
}

// ── transposed-tile scores ──────────────────────────────────────────────────────────────────────
namespace {

// NR rows × NV·kLanes columns of z = scale · Σ_d a[r][d] · kt[d][cols]: one broadcast of a[r][d] and NV
// loads of kt per d feed NR·NV multiply-adds (no horizontal sums, unlike the dot form).
// The d axis is summed in blocks of kScoreDBlock (blocked summation: error ~ (kScoreDBlock + D /
// kScoreDBlock)·ε₃₂ instead of D·ε₃₂ for one sequential chain over Dqk = 576).
constexpr int kScoreDBlock = 64;

template <int NR, int NV>
inline void scores_tile(const float* const* a, const float* kt, int D, int j0, float scale, float* z, int ldz) {
  vecf total[NR][NV] = {};
  for (int d0 = 0; d0 < D; d0 += kScoreDBlock) {
    const int d1 = std::min(D, d0 + kScoreDBlock);
    vecf acc[NR][NV] = {};
    for (int d = d0; d < d1; ++d) {
      vecf bv[NV];
      for (int v = 0; v < NV; ++v) bv[v] = loadv(kt + static_cast<int64_t>(d) * kKeyBlock + j0 + v * kLanes);
      for (int r = 0; r < NR; ++r) {
        const vecf ar = splatv(a[r][d]);
        for (int v = 0; v < NV; ++v) acc[r][v] += ar * bv[v];
      }
    }
    for (int r = 0; r < NR; ++r)
      for (int v = 0; v < NV; ++v) total[r][v] += acc[r][v];
  }
  for (int r = 0; r < NR; ++r)
    for (int v = 0; v < NV; ++v) storev(z + r * ldz + j0 + v * kLanes, total[r][v] * scale);
}

template <int NR>
inline void scores_rows(const float* const* a, const float* kt, int ncols, int D, float scale, float* z, int ldz) {
  int j = 0;
  for (; j + kAxpyVecs * kLanes <= ncols; j += kAxpyVecs * kLanes) scores_tile<NR, kAxpyVecs>(a, kt, D, j, scale, z, ldz);
  for (; j < ncols; j += kLanes) scores_tile<NR, 1>(a, kt, D, j, scale, z, ldz);
}

}  // namespace

int transpose_keys(const float* const* keys, int nb, int D, float* kt) {
  const int ncols = (nb + kLanes - 1) / kLanes * kLanes;
  for (int d = 0; d < D; ++d) {
    float* row = kt + static_cast<int64_t>(d) * kKeyBlock;
    for (int j = 0; j < nb; ++j) row[j] = keys[j][d];
    for (int j = nb; j < ncols; ++j) row[j] = 0.0f;
  }
  return ncols;
}

void scores_from_transposed(const float* const* a, int na, const float* kt, int ncols, int D, float scale, float* z,
                            int ldz) {
  int i = 0;
  for (; i + kAxpyRows <= na; i += kAxpyRows) scores_rows<kAxpyRows>(a + i, kt, ncols, D, scale, z + static_cast<int64_t>(i) * ldz, ldz);
  for (; i < na; ++i) scores_rows<1>(a + i, kt, ncols, D, scale, z + static_cast<int64_t>(i) * ldz, ldz);
}

void score_tile(const float* const* a, int na, const float* const* keys, int nb, int D, float scale, float* z,
                std::vector<float>& kt) {
  if (nb < kLanes) {  // too few keys for a vector of columns: dot products
    dot_block(a, na, keys, nb, D, scale, z, kKeyBlock);
    return;
  }
  kt.resize(static_cast<size_t>(D) * kKeyBlock);
  const int ncols = transpose_keys(keys, nb, D, kt.data());
  scores_from_transposed(a, na, kt.data(), ncols, D, scale, z, kKeyBlock);
}

// ── heads-in-lanes scores (all heads of one query against a key list) ─────────────────────────
namespace {

constexpr int kHeadKeys = 4;   // keys per register block
constexpr int kHeadVecs = 2;   // head vectors per register block: 4 keys × 2 vectors × (acc + total) = 16

// Keys j0 .. j0 + NK of the tile, head vectors v0 .. v0 + NV: the op sequence of scores_tile per element.
template <int NK, int NV>
inline void head_scores_block(const float* qT, int ldq, int H, const float* const* keys, int j0, int v0, int D,
                              float scale, float* z) {
  vecf total[NK][NV] = {};
  for (int d0 = 0; d0 < D; d0 += kScoreDBlock) {
    const int d1 = std::min(D, d0 + kScoreDBlock);
    vecf acc[NK][NV] = {};
    for (int d = d0; d < d1; ++d) {
      vecf qv[NV];
      for (int v = 0; v < NV; ++v) qv[v] = loadv(qT + static_cast<int64_t>(d) * ldq + (v0 + v) * kLanes);
      for (int k = 0; k < NK; ++k) {
        const vecf kd = splatv(keys[j0 + k][d]);
        for (int v = 0; v < NV; ++v) acc[k][v] += qv[v] * kd;
      }
    }
    for (int k = 0; k < NK; ++k)
      for (int v = 0; v < NV; ++v) total[k][v] += acc[k][v];
  }
  for (int k = 0; k < NK; ++k)
    for (int v = 0; v < NV; ++v) {
      float t[kLanes];
      storev(t, total[k][v] * scale);
      const int lanes = std::min(kLanes, H - (v0 + v) * kLanes);  // padded heads have no row in z
      for (int l = 0; l < lanes; ++l) z[static_cast<int64_t>((v0 + v) * kLanes + l) * kKeyBlock + j0 + k] = t[l];
    }
}

template <int NK>
inline void head_scores_keys(const float* qT, int ldq, int H, const float* const* keys, int j0, int D, float scale,
                             float* z) {
  const int nvec = ldq / kLanes;
  int v = 0;
  for (; v + kHeadVecs <= nvec; v += kHeadVecs) head_scores_block<NK, kHeadVecs>(qT, ldq, H, keys, j0, v, D, scale, z);
  for (; v < nvec; ++v) head_scores_block<NK, 1>(qT, ldq, H, keys, j0, v, D, scale, z);
}

}  // namespace

int transpose_query_heads(const float* q, int H, int D, std::vector<float>& qT) {
  const int ldq = (H + kLanes - 1) / kLanes * kLanes;
  qT.assign(static_cast<size_t>(D) * ldq, 0.0f);
  for (int h = 0; h < H; ++h)
    for (int d = 0; d < D; ++d) qT[static_cast<size_t>(d) * ldq + h] = q[static_cast<int64_t>(h) * D + d];
  return ldq;
}

void scores_heads_in_lanes(const float* qT, int ldq, int H, const float* const* keys, int nb, int D, float scale,
                           float* z) {
  const int nvec = ldq / kLanes;
  int j = 0;
  // (Software prefetch of the next keys' kv rows measured slower at L = 32K, 78 vs 84 GFLOP/s: not used.)
  if (nvec == 1)  // one head vector (H ≤ kLanes): twice the keys per block for enough independent sums
    for (; j + 2 * kHeadKeys <= nb; j += 2 * kHeadKeys)
      head_scores_block<2 * kHeadKeys, 1>(qT, ldq, H, keys, j, 0, D, scale, z);
  for (; j + kHeadKeys <= nb; j += kHeadKeys) head_scores_keys<kHeadKeys>(qT, ldq, H, keys, j, D, scale, z);
  for (; j < nb; ++j) head_scores_keys<1>(qT, ldq, H, keys, j, D, scale, z);
}

// ── vectorised row helpers over one tile row of kKeyBlock scores ────────────────────────────────
namespace {

using veci = int32_t __attribute__((vector_size(kLanes * sizeof(int32_t))));
static_assert(kKeyBlock % kLanes == 0, "a tile row is a whole number of vectors");

// e^x for one vector, x ≤ ~0 (scores minus a max or an lse). Cody–Waite reduction x = k·ln2 + r,
// |r| ≤ ln2/2, degree-6 Taylor polynomial (truncation r⁷/7! ≤ 1.2e-7 relative, ~1 ulp overall),
// 2^k by exponent bits. x < −87 (incl. −inf of masked keys) gives exactly 0 (the true value is
// below the smallest normal float). Written with vector extensions because libm's expf is scalar:
// the exp of every score is the third-largest cost of the tile after the two matrix products.
inline vecf expv(vecf x) {
  constexpr float kLog2e = 1.44269504088896341f, kLn2Hi = 0.693145751953125f, kLn2Lo = 1.42860682030941723212e-6f;
  constexpr float kRoundShift = 12582912.0f;   // 1.5·2^23: adding and subtracting it rounds to an integer
  constexpr float kUnderflow = -87.0f;
  const veci dead = x < kUnderflow;
  x = dead ? splatv(0.0f) : x;
  const vecf k = (x * kLog2e + kRoundShift) - kRoundShift;
  const vecf r = (x - k * kLn2Hi) - k * kLn2Lo;
  vecf poly = splatv(1.0f / 720.0f);
  poly = poly * r + 1.0f / 120.0f;
  poly = poly * r + 1.0f / 24.0f;
  poly = poly * r + 1.0f / 6.0f;
  poly = poly * r + 0.5f;
  poly = poly * r + 1.0f;
  poly = poly * r + 1.0f;
  const veci bits = (__builtin_convertvector(k, veci) + 127) << 23;
  vecf two_k;
  std::memcpy(&two_k, &bits, sizeof two_k);
  const vecf y = poly * two_k;
  return dead ? splatv(0.0f) : y;
}

// Masks columns outside [lo, hi) of a tile row to −inf (columns ≥ nb included).
inline void mask_row(float* z, int lo, int hi) {
  for (int j = 0; j < lo; ++j) z[j] = kNegInf;
  for (int j = hi; j < kKeyBlock; ++j) z[j] = kNegInf;
}

inline float row_max(const float* z) {
  vecf m = splatv(kNegInf);
  for (int j = 0; j < kKeyBlock; j += kLanes) {
    const vecf v = loadv(z + j);
    m = v > m ? v : m;
  }
  float r = m[0];
  for (int l = 1; l < kLanes; ++l) r = std::max(r, m[l]);
  return r;
}

// z ← exp(z − shift); returns Σ of the new row (fp32 in kLanes lanes: ≤ 64 terms, each ≤ 1 in the
// forward, so the fp32 sum is good to ~8 ulp before it joins the fp64 total).
inline float exp_row(float* z, float shift) {
  vecf sum = {};
  for (int j = 0; j < kKeyBlock; j += kLanes) {
    const vecf e = expv(loadv(z + j) - shift);
    storev(z + j, e);
    sum += e;
  }
  return hsumv(sum);
}

}  // namespace

// ── forward ─────────────────────────────────────────────────────────────────────────────────────
void ForwardState::reset(int M, int dv) {
  Dv = dv;
  m.assign(M, kNegInf);
  l.assign(M, 0.0);
  acc.assign(static_cast<size_t>(M) * dv, 0.0);
  z.resize(static_cast<size_t>(M) * kKeyBlock);
  pv.resize(static_cast<size_t>(M) * dv);
}

void forward_tile(ForwardState& st, const TileRows& rows, const float* const* keys, int nb, int Dqk, float scale) {
  const int n = rows.size();
  if (n == 0 || nb == 0) return;
  // z = scale · q·kᵀ   [n, nb]
  score_tile(rows.q.data(), n, keys, nb, Dqk, scale, st.z.data(), st.kt);
  forward_tile_scored(st, rows, keys, nb);
}

void forward_tile_query(ForwardState& st, const TileRows& rows, const float* qT, int ldq, const float* const* keys, int nb,
                        int Dqk, float scale) {
  if (nb < kLanes) {  // score_tile's dot-product form for so few keys: keep its bits
    forward_tile(st, rows, keys, nb, Dqk, scale);
    return;
  }
  if (rows.size() == 0 || nb == 0) return;
  scores_heads_in_lanes(qT, ldq, rows.size(), keys, nb, Dqk, scale, st.z.data());
  forward_tile_scored(st, rows, keys, nb);
}

void forward_tile_scored(ForwardState& st, const TileRows& rows, const float* const* keys, int nb) {
  const int n = rows.size();
  if (n == 0 || nb == 0) return;
  for (int a = 0; a < n; ++a) {
    const int r = rows.id[a];
    float* z = st.z.data() + static_cast<size_t>(a) * kKeyBlock;
    mask_row(z, rows.col_lo[a], std::min(rows.col_hi[a], nb));
    const float bm = row_max(z);
    if (bm == kNegInf) {  // nothing valid in this tile for this row: p = 0, state unchanged
      std::fill(z, z + kKeyBlock, 0.0f);
      continue;
    }
    const float m_new = std::max(st.m[r], bm);
    // alpha rescales the earlier tiles to the new max (exp(−inf) = 0 on the first valid tile,
    // when l and acc are still 0).
    const double alpha = std::exp(static_cast<double>(st.m[r]) - m_new);
    const float tile_sum = exp_row(z, m_new);  // the one exp per score; masked −inf → 0
    st.l[r] = st.l[r] * alpha + tile_sum;
    st.m[r] = m_new;
    if (alpha != 1.0) {
      double* acc = st.acc.data() + static_cast<size_t>(r) * st.Dv;
      for (int d = 0; d < st.Dv; ++d) acc[d] *= alpha;
    }
  }
  // pv = P · V  [n, Dv] in fp32 over this tile, then carried into the fp64 accumulators.
  std::fill(st.pv.begin(), st.pv.begin() + static_cast<size_t>(n) * st.Dv, 0.0f);
  axpy_block(st.z.data(), kKeyBlock, n, keys, nb, st.Dv, st.pv.data(), st.Dv);
  for (int a = 0; a < n; ++a) {
    double* acc = st.acc.data() + static_cast<size_t>(rows.id[a]) * st.Dv;
    const float* pv = st.pv.data() + static_cast<size_t>(a) * st.Dv;
    for (int d = 0; d < st.Dv; ++d) acc[d] += pv[d];
  }
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

// ── backward ────────────────────────────────────────────────────────────────────────────────────
void backward_scores(BackwardTile& w, const TileRows& rows, const BackwardRow* brow, const float* const* keys, int nb,
                     int Dqk, int Dv, float scale) {
  const int n = rows.size();
  if (n == 0 || nb == 0) return;
  // z = scale·q·kᵀ (forward score), dP = dout·Vᵀ (inverts out = Σ P·v)
  w.dout_rows.resize(n);
  for (int a = 0; a < n; ++a) w.dout_rows[a] = brow[a].dout;
  if (nb >= kLanes) {  // one transposed tile serves both products (V = its first Dv rows)
    w.kt.resize(static_cast<size_t>(Dqk) * kKeyBlock);
    const int ncols = transpose_keys(keys, nb, Dqk, w.kt.data());
    scores_from_transposed(rows.q.data(), n, w.kt.data(), ncols, Dqk, scale, w.z.data(), kKeyBlock);
    scores_from_transposed(w.dout_rows.data(), n, w.kt.data(), ncols, Dv, 1.0f, w.dp.data(), kKeyBlock);
  } else {
    dot_block(rows.q.data(), n, keys, nb, Dqk, scale, w.z.data(), kKeyBlock);
    dot_block(w.dout_rows.data(), n, keys, nb, Dv, 1.0f, w.dp.data(), kKeyBlock);
  }
  for (int a = 0; a < n; ++a) {
    float* z = w.z.data() + static_cast<size_t>(a) * kKeyBlock;
    float* dp = w.dp.data() + static_cast<size_t>(a) * kKeyBlock;
    mask_row(z, rows.col_lo[a], std::min(rows.col_hi[a], nb));
    // P = exp(z − lse) (inverts the forward normalisation); masked keys and lse = +inf (empty
    // row) give P = 0.
    exp_row(z, brow[a].lse);
    const vecf delta = splatv(static_cast<float>(brow[a].delta));
    for (int j = 0; j < kKeyBlock; j += kLanes) {
      const vecf p = loadv(z + j);
      storev(dp + j, p * (loadv(dp + j) - delta));   // dZ = P ∘ (dP − Δ)
    }
  }
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
