// attention_common.h — what the CPU attention ops (6–9: sparse/dense attention, indexer KL) share:
// argument validation, the two tile micro-kernels (dot products and row updates), and the per-tile
// steps of the flash-style forward and of the dq / dkv backward passes.
//
// Layout reminder (ops.h): q [T,H,Dqk], kv [S,Dqk] (V = first Dv dims of a kv row), out [T,H,Dv].
// A "row" is one (query t, head h) pair; all rows of one query share the same keys (MQA), so the
// kernels take row and key POINTERS: a sparse key list and a dense key range use the same code.
//
// Precision (why fp32 dot products are acceptable): every score is one fp32 sum over Dqk (≤ 576)
// products, summed in blocks of 64 dims (or in vector-lane partial sums for the dot form); its
// rounding error is ≲ √64·ε₃₂·Σ|q_d k_d| typically (≤ (64 + Dqk/64)·ε₃₂ worst case), far below the
// error the bf16 inputs of the real model already carry, while fp64 would halve the vector width
// of the dominant cost. Sums that span the KEY axis (softmax denominators, out / dq / dkv
// accumulations over thousands of keys or queries) run in fp32 only inside one tile of kKeyBlock
// keys and are carried across tiles in fp64 (blocked summation).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "dsa/ops.h"

namespace dsa::cpu::attn {

inline constexpr int kKeyBlock = 64;        // keys per tile: a [rows, 64] score tile stays in L1
inline constexpr int kRowTarget = 64;       // (query, head) rows per dense query block (Bq·H ≈ 64)
inline constexpr float kNegInf = -std::numeric_limits<float>::infinity();
inline constexpr float kPosInf = std::numeric_limits<float>::infinity();

// ── validation (throws dsa::Error naming op and argument; reads inputs only) ────────────────────
enum class Selection { kSparse, kDense };
// Shapes, scale, q/kv pointers, and the selection (indices/K/topk_length or ks/ke).
// check_dv = false for the indexer KL, which never reads V.
void validate_params(const AttentionParams& p, Selection sel, const char* op, bool check_dv = true);
void validate_forward_out(const AttentionForwardOut& o, const char* op);
void validate_backward_args(const AttentionBackwardArgs& b, const char* op);

// Number of leading slots of row t that a sparse op reads (topk_length or K).
inline int sparse_row_length(const AttentionParams& p, int t) {
  return p.topk_length != nullptr ? p.topk_length[t] : p.K;
}

// ── micro-kernels ───────────────────────────────────────────────────────────────────────────────
// These and the tile steps below run the instance of the ISA path in use (attention_kernels.h:
// generic 4 lanes, or AVX2 + FMA 8 lanes on AVX2 and AVX-512 CPUs); "the vector width" is its lane count.
// z[i·ldz + j] = scale · (a[i] · b[j]) over D dims, i < na, j < nb. Each element is computed by the
// same fixed sequence of operations whatever its position in the tile (results never depend on
// tiling or thread count).
void dot_block(const float* const* a, int na, const float* const* b, int nb, int D, float scale, float* z, int ldz);
// out[i·ldo + 0:D] += Σ_{j<nb} c[i·ldc + j] · b[j][0:D], j ascending, i < na.
void axpy_block(const float* c, int ldc, int na, const float* const* b, int nb, int D, float* out, int ldo);
// The score tile in its fast form: the nb ≤ kKeyBlock keys are transposed into kt [D, kKeyBlock]
// (columns nb.. zero-padded to a multiple of the vector width, returned), then z[i, j] = scale · Σ_d a[i][d]·kt[d, j]
// with d ascending — broadcasts instead of horizontal sums. score_tile picks it when nb ≥ that width and
// falls back to dot_block for fewer keys. Row-position independent like the kernels above.
int transpose_keys(const float* const* keys, int nb, int D, float* kt);
void scores_from_transposed(const float* const* a, int na, const float* kt, int ncols, int D, float scale, float* z,
                            int ldz);
void score_tile(const float* const* a, int na, const float* const* keys, int nb, int D, float scale, float* z,
                std::vector<float>& kt);

// Heads in lanes, for the H rows of ONE query (the sparse forward): qT = q[t] transposed, [D, ldq]
// (heads ≥ H zero; transpose_query_heads returns ldq, H rounded up to the vector width), and
// z[h·kKeyBlock + j] = scale · q[t,h]·keys[j] for j < nb — the same operation sequence per element as
// scores_from_transposed (d in blocks of 64, ascending), so the same bits, but the key rows are read
// in place: no per-tile gather/transpose of the keys (which cost as much as the scores), the qT
// transpose is once per query.
int transpose_query_heads(const float* q, int H, int D, std::vector<float>& qT);
void scores_heads_in_lanes(const float* qT, int ldq, int H, const float* const* keys, int nb, int D, float scale,
                           float* z);

// ── forward tile step (online softmax) ──────────────────────────────────────────────────────────
// State of M rows: running max m, fp64 denominator l, fp64 output accumulator acc [M, Dv].
struct ForwardState {
  int Dv = 0;
  std::vector<float> m;
  std::vector<double> l;
  std::vector<double> acc;
  std::vector<float> z;    // [M, kKeyBlock] scores, then probabilities of the current tile
  std::vector<float> pv;   // [M, Dv] fp32 partial of the current tile
  std::vector<float> kt;   // [Dqk, kKeyBlock] the current key tile, transposed
  void reset(int M, int dv);
};

// The active rows of one tile: row ids into the state, their q pointers, and for each the valid
// columns [col_lo, col_hi) of the tile (the other columns are masked to −inf).
struct TileRows {
  std::vector<int> id;
  std::vector<const float*> q;
  std::vector<int> col_lo, col_hi;
  void clear() { id.clear(); q.clear(); col_lo.clear(); col_hi.clear(); }
  void add(int row, const float* qr, int lo, int hi) { id.push_back(row); q.push_back(qr); col_lo.push_back(lo); col_hi.push_back(hi); }
  int size() const { return static_cast<int>(id.size()); }
};

// One key tile (nb ≤ kKeyBlock keys) for the active rows: scores, online-softmax update, P·V.
void forward_tile(ForwardState& st, const TileRows& rows, const float* const* keys, int nb, int Dqk, float scale);
// The same step after the caller has written the scores of the tile into st.z ([rows, kKeyBlock]).
void forward_tile_scored(ForwardState& st, const TileRows& rows, const float* const* keys, int nb);
// forward_tile for rows = the H heads of one query in order (row a = head a), its scores from qT
// (transpose_query_heads) by scores_heads_in_lanes; bitwise the same as forward_tile.
void forward_tile_query(ForwardState& st, const TileRows& rows, const float* qT, int ldq, const float* const* keys, int nb,
                        int Dqk, float scale);
// Writes out / lse / max_logits of state row r to the given destinations (max_logits may be null).
// A row that saw no valid key gets out = 0, lse = +inf, max_logits = −inf.
void forward_finish_row(const ForwardState& st, int r, float* out, float* lse, float* max_logits);

// ── backward tile steps ─────────────────────────────────────────────────────────────────────────
// Per-row inputs of the backward: dout row pointer, saved lse, Δ = out·dout (fp64).
struct BackwardRow {
  const float* dout;
  float lse;
  double delta;
};

// Recomputes, for the active rows of a tile, P = exp(z − lse) (0 on masked columns) into p and
// dZ = P ∘ (dP − Δ) into dz, both [rows, kKeyBlock], dP = dout·V (Dv dims).
//   Inverts: z = scale·q·k (score), out = Σ P·v (value), lse (normaliser) of the forward.
struct BackwardTile {
  std::vector<float> z, dp;
  std::vector<const float*> dout_rows;
  std::vector<float> kt;   // [Dqk, kKeyBlock] the current key tile, transposed
  void reserve(int M) { z.resize(static_cast<size_t>(M) * kKeyBlock); dp.resize(static_cast<size_t>(M) * kKeyBlock); }
};
void backward_scores(BackwardTile& w, const TileRows& rows, const BackwardRow* brow, const float* const* keys, int nb,
                     int Dqk, int Dv, float scale);
// After backward_scores: w.z holds P, w.dp holds dZ, w.dout_rows the active rows' dout pointers.

// Δ[t,h] = out[t,h]·dout[t,h] in fp64, [T·H].
std::vector<double> row_deltas(const float* out, const float* dout, int64_t rows, int Dv);

}  // namespace dsa::cpu::attn
