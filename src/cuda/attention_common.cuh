// attention_common.cuh — what the CUDA attention kernels (ops 6–9 and the sparse decode) share:
// the tile shape, the "key sources" that say which kv rows a query attends to, and the three tile
// bodies (flash forward, dq backward, key-major dkv backward) every v1 kernel is built from.
//
// v1 design (fp32 CUDA cores, deterministic, runs on sm_80+):
//   * A block owns one query t and a tile of kTileHeads heads (MQA: all heads share the keys).
//   * Keys stream through shared memory in chunks of kTileKeys rows; a chunk's kTileHeads×kTileKeys
//     scores are one dot product per thread (kThreads = kTileHeads·kTileKeys).
//   * Every sum has a fixed order (dot products: d ascending; softmax/PV: chunk by chunk, key
//     ascending; head sums: h ascending), so results are bitwise reproducible run to run.
//   * Rows are padded by one float in shared memory (ld = D + 1) so the 16 keys a warp reads in
//     the score phase fall in 16 different banks.
// q and kv come in the dtype of AttentionParams (fp32, or bf16 bits): the v1 tiles load either and
// convert each bf16 element to fp32 on load (exact), so everything after the load is the same fp32
// arithmetic for both dtypes (an fp32 input holding bf16 values gives bitwise the same results).
// Key sources turn "slot j of query t" into a kv row id (−1 = invalid) and load one element of it:
//   SparseKeys  indices[t, 0:len) (len = topk_length or K), id outside [0, S) → invalid
//   DenseKeys   [ks[t], ke[t]) clamped (detail::clamp_range: a malformed range is empty)
//   (the decode kernel adds CacheKeys for its three cache formats, in sparse_attention_decode.cu)
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "cuda/common.cuh"

namespace dsa::cuda::attn {

inline constexpr int kThreads = 128;        // every attention tile kernel
inline constexpr int kTileHeads = 8;        // heads per block
inline constexpr int kTileKeys = 16;        // keys per shared-memory chunk
inline constexpr int kWarps = kThreads / detail::kWarpSize;
static_assert(kTileHeads * kTileKeys == kThreads, "score phase: one (head, key) pair per thread");
inline constexpr float kInf = std::numeric_limits<float>::infinity();

__host__ __device__ inline int padded_ld(int D) { return D + 1; }

// ── inputs of either dtype ────────────────────────────────────────────────────────────────────
// A q or kv tensor as the kernels read it: fp32 elements, or bf16 bits when bf16 is set (then f32
// is ignored). Element i comes back as fp32 (bf16 → fp32 is exact).
struct Elems {
  const float* f32 = nullptr;
  const uint16_t* bf16 = nullptr;
  __device__ float operator[](int64_t i) const { return bf16 != nullptr ? detail::bf16_decode(bf16[i]) : f32[i]; }
  __host__ __device__ Elems operator+(int64_t i) const {
    return {f32 != nullptr ? f32 + i : nullptr, bf16 != nullptr ? bf16 + i : nullptr};
  }
};
// q and kv of an AttentionParams in the pointer pair its dtype names (the other pair ignored).
inline Elems q_elems(const AttentionParams& p) {
  return p.dtype == DType::kBF16 ? Elems{nullptr, p.q_bf16} : Elems{p.q, nullptr};
}
inline Elems kv_elems(const AttentionParams& p) {
  return p.dtype == DType::kBF16 ? Elems{nullptr, p.kv_bf16} : Elems{p.kv, nullptr};
}

// ── key sources ──────────────────────────────────────────────────────────────────────────────
struct SparseKeys {
  const int32_t* indices;      // [T, K]
  const int32_t* topk_length;  // [T] or null
  int K;
  int S;
  const float* kv;             // [S, Dqk] fp32 (used when kv_bf16 is null)
  int Dqk;
  const uint16_t* kv_bf16 = nullptr;   // [S, Dqk] bf16 bits, or null
  __device__ int count(int64_t t) const {
    const int n = topk_length ? topk_length[t] : K;
    return n < 0 ? 0 : (n > K ? K : n);
  }
  __device__ int64_t key(int64_t t, int j) const {
    const int32_t s = indices[t * K + j];
    return (s >= 0 && s < S) ? s : -1;
  }
  __device__ float load(int64_t key, int d) const {
    return kv_bf16 != nullptr ? detail::bf16_decode(kv_bf16[key * Dqk + d]) : kv[key * Dqk + d];
  }
  __host__ __device__ Elems row(int64_t key) const { return Elems{kv, kv_bf16} + key * Dqk; }
};

struct DenseKeys {
  const int32_t* ks;           // [T]
  const int32_t* ke;           // [T]
  int S;
  const float* kv;             // [S, Dqk] fp32 (used when kv_bf16 is null)
  int Dqk;
  const uint16_t* kv_bf16 = nullptr;   // [S, Dqk] bf16 bits, or null
  __device__ void range(int64_t t, int& lo, int& hi) const { detail::clamp_range(ks[t], ke[t], S, lo, hi); }
  __device__ int count(int64_t t) const {
    int lo, hi;
    range(t, lo, hi);
    return hi - lo;
  }
  __device__ int64_t key(int64_t t, int j) const {
    int lo, hi;
    range(t, lo, hi);
    return lo + j;
  }
  __device__ float load(int64_t key, int d) const {
    return kv_bf16 != nullptr ? detail::bf16_decode(kv_bf16[key * Dqk + d]) : kv[key * Dqk + d];
  }
  __host__ __device__ Elems row(int64_t key) const { return Elems{kv, kv_bf16} + key * Dqk; }
};

// Key sources over an AttentionParams' selection (sparse: indices / topk_length / K; dense: ks / ke)
// and its kv in the dtype it names.
inline SparseKeys sparse_keys(const AttentionParams& p) {
  const Elems kv = kv_elems(p);
  return SparseKeys{p.indices, p.topk_length, p.K, p.S, kv.f32, p.Dqk, kv.bf16};
}
inline DenseKeys dense_keys(const AttentionParams& p) {
  const Elems kv = kv_elems(p);
  return DenseKeys{p.ks, p.ke, p.S, kv.f32, p.Dqk, kv.bf16};
}

// ── shared-memory plans (in floats; the int64 key ids go first for alignment) ─────────────────
// forward: keys[KC] | q[HT][ld] | kv[KC][ld] | o[HT][Dv] | p[HT][KC] | m, l, alpha [HT]
__host__ __device__ inline size_t forward_smem_bytes(int Dqk, int Dv) {
  const size_t floats = static_cast<size_t>(kTileHeads + kTileKeys) * padded_ld(Dqk) +
                        static_cast<size_t>(kTileHeads) * Dv + kTileHeads * kTileKeys + 3 * kTileHeads;
  return kTileKeys * sizeof(int64_t) + floats * sizeof(float);
}
// dq backward: keys[KC] | q[HT][ld] | kv[KC][ld] | dout[HT][Dv] | dq[HT][Dqk] | dz[HT][KC] | lse, Δ [HT]
__host__ __device__ inline size_t dq_smem_bytes(int Dqk, int Dv) {
  const size_t floats = static_cast<size_t>(kTileHeads + kTileKeys) * padded_ld(Dqk) +
                        static_cast<size_t>(kTileHeads) * (Dv + Dqk) + kTileHeads * kTileKeys + 2 * kTileHeads;
  return kTileKeys * sizeof(int64_t) + floats * sizeof(float);
}
// dkv backward (one key per block): kv[Dqk] | acc[Dqk] | P[H] | dZ[H]
__host__ __device__ inline size_t dkv_smem_bytes(int Dqk, int H) {
  return (2 * static_cast<size_t>(Dqk) + 2 * static_cast<size_t>(H)) * sizeof(float);
}

// Host: the checks the host can make without reading device memory (ops.h conventions, same
// messages as the CPU backend). Data checks (index range, ks ≤ ke) are the kernels' business:
// such indices are invalid and such ranges empty.
inline void validate_params(const AttentionParams& p, bool sparse, const char* op, bool check_dv = true) {
  using namespace ::dsa::detail;
  require_non_negative(p.T, op, "T");
  require_non_negative(p.S, op, "S");
  require_positive(p.H, op, "H");
  require_positive(p.Dqk, op, "Dqk");
  if (check_dv) {
    require_positive(p.Dv, op, "Dv");
    DSA_REQUIRE(p.Dv <= p.Dqk, op, "Dv = ", p.Dv, " must be <= Dqk = ", p.Dqk, " (V is the first Dv dims of a kv row)");
  }
  DSA_REQUIRE(p.scale > 0.0f && std::isfinite(p.scale), op, "scale = ", p.scale, " must be finite and > 0");
  DSA_REQUIRE(p.dtype == DType::kF32 || p.dtype == DType::kBF16, op, "dtype = ", static_cast<int>(p.dtype),
              " is not a DType");
  if (p.dtype == DType::kBF16) {
    DSA_REQUIRE(p.q_bf16 != nullptr, op, "q_bf16 is null (dtype bf16)");
    DSA_REQUIRE(p.kv_bf16 != nullptr, op, "kv_bf16 is null (dtype bf16)");
  } else {
    require_ptr(p.q, op, "q");
    require_ptr(p.kv, op, "kv");
  }
  if (sparse) {
    require_positive(p.K, op, "K");
    require_ptr(p.indices, op, "indices");
  } else {
    require_ptr(p.ks, op, "ks");
    require_ptr(p.ke, op, "ke");
  }
}

// Host: opts a kernel into `bytes` of dynamic shared memory, or throws dsa::Error when the device
// cannot give that much (the v1 tiles keep whole kv rows in shared memory, so Dqk is bounded).
template <typename Kernel>
inline void set_smem(Kernel kernel, size_t bytes, const char* op) {
  const int limit = detail::max_dynamic_smem_bytes();
  if (bytes > static_cast<size_t>(limit))
    ::dsa::detail::fail(op, "Dqk/Dv/H too large for the v1 kernel: needs ", bytes, " B of shared memory, device allows ",
                        limit);
  DSA_CUDA_CALL(op, cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
}

// The kMma sparse decode (sparse_attention_decode_mma.cu; no split-KV: one block per row × 64 heads):
// whether it takes this call on this device (H % 64 == 0, enough shared memory; bf16 q: q_bf16
// 8-byte aligned), and its launch (q of either q_dtype).
bool sparse_decode_bf16_fits(const SparseDecodeParams& p);
void sparse_decode_bf16(const SparseDecodeParams& p, cudaStream_t stream, const char* op);
// The pipelined bf16 forward (sparse_attention_forward_pipelined.cu): fp32 kv converted to bf16 in the
// workspace (S·1152 bytes; bf16 kv read directly, workspace 0), cp.async double-buffered gathers.
// fits: the shape, shared memory and, for bf16 inputs, 16-byte aligned q_bf16 / kv_bf16.
bool sparse_forward_pipelined_fits(const AttentionParams& p);
size_t sparse_forward_pipelined_workspace(const AttentionParams& p);
// The bf16 kv rows [S, 576] the pipelined (v4) and wgmma (v5) sparse forwards gather from: fp32 kv
// converted into the workspace (its first S·1152 bytes), or kv_bf16 itself for bf16 inputs (no launch,
// workspace unused). Defined in sparse_attention_forward_pipelined.cu.
const __nv_bfloat16* kv_to_bf16_workspace(const AttentionParams& p, void* workspace, cudaStream_t stream,
                                          const char* op);
// workspace: sparse_forward_pipelined_workspace bytes (may be null for bf16 inputs).
void sparse_forward_pipelined(const AttentionParams& p, const AttentionForwardOut& o, void* workspace,
                              cudaStream_t stream, const char* op);
// The bf16 tensor-core sparse backward (sparse_attention_backward_bf16.cu): cuBLAS bf16 GEMMs over
// query chunks, any shape on sm_80+, q / kv of either dtype; its workspace (for the default chunk;
// S·Dqk·2 bytes smaller for bf16 inputs, whose kv is gathered directly) and its launch.
bool sparse_backward_bf16_fits(const AttentionParams& p);
size_t sparse_backward_bf16_workspace(const AttentionParams& p, const char* op);
void sparse_backward_bf16(const AttentionParams& p, const AttentionBackwardArgs& b, void* workspace,
                          size_t workspace_bytes, cudaStream_t stream, const char* op);

// Dot product of two shared-memory rows, d ascending in 4 interleaved partial sums (fixed order).
__device__ inline float dot_rows(const float* a, const float* b, int D) {
  float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
  int d = 0;
  for (; d + 4 <= D; d += 4) {
    s0 = fmaf(a[d], b[d], s0);
    s1 = fmaf(a[d + 1], b[d + 1], s1);
    s2 = fmaf(a[d + 2], b[d + 2], s2);
    s3 = fmaf(a[d + 3], b[d + 3], s3);
  }
  for (; d < D; ++d) s0 = fmaf(a[d], b[d], s0);
  return (s0 + s1) + (s2 + s3);
}

// Loads the key ids of chunk [c, c + KC) of query t into key_s and the rows into kv_s (zeros for
// invalid / past-the-end slots). Ends with a barrier.
template <class Keys>
__device__ inline void load_key_chunk(const Keys& keys, int64_t t, int c, int j_end, int Dqk, int64_t* key_s,
                                      float* kv_s) {
  const int ld = padded_ld(Dqk);
  if (threadIdx.x < kTileKeys) {
    const int j = c + threadIdx.x;
    key_s[threadIdx.x] = j < j_end ? keys.key(t, j) : -1;
  }
  __syncthreads();
  for (int i = threadIdx.x; i < kTileKeys * Dqk; i += kThreads) {
    const int k = i / Dqk, d = i % Dqk;
    const int64_t key = key_s[k];
    kv_s[k * ld + d] = key >= 0 ? keys.load(key, d) : 0.0f;
  }
  __syncthreads();
}

// ── forward tile (online softmax) ────────────────────────────────────────────────────────────
// Attention of nh ≤ kTileHeads heads of query t (q → q[t, h0, 0], heads contiguous; a const float*
// or an Elems of either dtype) over slots
// [j_begin, j_end) of the key source. Writes out[h·Dv + d] (normalised), lse[h·lse_stride] and, if
// non-null, max_logits[h]. A tile that saw no valid key writes out = 0, lse = empty_lse (+inf for a
// final result, −inf for a split-KV partial), max_logits = −inf.
template <class Keys, class Q>
__device__ void forward_tile(const Keys& keys, int64_t t, int j_begin, int j_end, const Q q, int nh,
                             int Dqk, int Dv, float scale, float* __restrict__ out, float* __restrict__ lse,
                             int lse_stride, float* __restrict__ max_logits, float empty_lse) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int ld = padded_ld(Dqk);
  int64_t* key_s = reinterpret_cast<int64_t*>(smem_raw);
  float* q_s = reinterpret_cast<float*>(key_s + kTileKeys);
  float* kv_s = q_s + kTileHeads * ld;
  float* o_s = kv_s + kTileKeys * ld;
  float* p_s = o_s + kTileHeads * Dv;
  float* m_s = p_s + kTileHeads * kTileKeys;
  float* l_s = m_s + kTileHeads;
  float* a_s = l_s + kTileHeads;
  const int tid = threadIdx.x;

  // Phase 1: q tile, zero accumulators.
  for (int i = tid; i < nh * Dqk; i += kThreads) q_s[(i / Dqk) * ld + i % Dqk] = q[i];
  for (int i = tid; i < kTileHeads * Dv; i += kThreads) o_s[i] = 0.0f;
  if (tid < kTileHeads) {
    m_s[tid] = -kInf;
    l_s[tid] = 0.0f;
  }
  // Phase 2: key chunks.
  const int sh = tid / kTileKeys, sk = tid % kTileKeys;   // this thread's score
  for (int c = j_begin; c < j_end; c += kTileKeys) {
    load_key_chunk(keys, t, c, j_end, Dqk, key_s, kv_s);   // barrier inside also orders phase 1
    // 2a: scores z = scale·q·k (−inf for invalid slots / absent heads).
    float z = -kInf;
    if (sh < nh && key_s[sk] >= 0) z = scale * dot_rows(q_s + sh * ld, kv_s + sk * ld, Dqk);
    p_s[sh * kTileKeys + sk] = z;
    __syncthreads();
    // 2b: online softmax, one thread per head, keys in ascending order.
    if (tid < nh) {
      float* p = p_s + tid * kTileKeys;
      float cmax = -kInf;
      for (int k = 0; k < kTileKeys; ++k) cmax = fmaxf(cmax, p[k]);
      const float m_old = m_s[tid], m_new = fmaxf(m_old, cmax);
      float alpha = 1.0f, sum = 0.0f;
      if (m_new != -kInf) {
        alpha = expf(m_old - m_new);                       // m_old = −inf → 0
        for (int k = 0; k < kTileKeys; ++k) {
          const float e = p[k] == -kInf ? 0.0f : expf(p[k] - m_new);
          p[k] = e;
          sum += e;
        }
      } else {
        for (int k = 0; k < kTileKeys; ++k) p[k] = 0.0f;
      }
      l_s[tid] = l_s[tid] * alpha + sum;
      m_s[tid] = m_new;
      a_s[tid] = alpha;
    }
    __syncthreads();
    // 2c: o = o·alpha + P·V.
    for (int i = tid; i < nh * Dv; i += kThreads) {
      const int h = i / Dv, d = i % Dv;
      const float* p = p_s + h * kTileKeys;
      float acc = o_s[i] * a_s[h];
      for (int k = 0; k < kTileKeys; ++k) acc = fmaf(p[k], kv_s[k * ld + d], acc);
      o_s[i] = acc;
    }
    __syncthreads();
  }
  __syncthreads();
  // Phase 3: normalise and store.
  for (int i = tid; i < nh * Dv; i += kThreads) {
    const float l = l_s[i / Dv];
    out[i] = l > 0.0f ? o_s[i] / l : 0.0f;
  }
  if (tid < nh) {
    const float l = l_s[tid];
    lse[tid * lse_stride] = l > 0.0f ? m_s[tid] + logf(l) : empty_lse;
    if (max_logits) max_logits[tid] = l > 0.0f ? m_s[tid] : -kInf;
  }
}

// ── backward: Δ = out·dout per (t, h) row (one warp per row) ─────────────────────────────────
// Inverts nothing by itself: Δ is the FlashAttention-2 shortcut for Σ_s P·dP = out·dout.
__device__ inline void row_delta(const float* out, const float* dout, int64_t rows, int Dv, float* delta) {
  const int lane = threadIdx.x % detail::kWarpSize;
  const int64_t row = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / detail::kWarpSize;
  if (row >= rows) return;
  float s = 0.0f;
  for (int d = lane; d < Dv; d += detail::kWarpSize) s = fmaf(out[row * Dv + d], dout[row * Dv + d], s);
  s = detail::warp_sum(s);
  if (lane == 0) delta[row] = s;
}

// ── backward dq tile (query-major) ───────────────────────────────────────────────────────────
// For nh heads of query t over all its slots: recompute z (forward 2a), P = exp(z − lse) (inverts
// the normalisation), dP = dout·v (inverts 2c), dZ = P(dP − Δ); dq = scale·Σ_s dZ·kv[s] (inverts 2a).
// q: a const float* or an Elems of either dtype.
template <class Keys, class Q>
__device__ void dq_tile(const Keys& keys, int64_t t, const Q q, const float* __restrict__ dout,
                        const float* __restrict__ lse, const float* __restrict__ delta, int nh, int Dqk, int Dv,
                        float scale, float* __restrict__ dq) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int ld = padded_ld(Dqk);
  int64_t* key_s = reinterpret_cast<int64_t*>(smem_raw);
  float* q_s = reinterpret_cast<float*>(key_s + kTileKeys);
  float* kv_s = q_s + kTileHeads * ld;
  float* do_s = kv_s + kTileKeys * ld;
  float* dq_s = do_s + kTileHeads * Dv;
  float* dz_s = dq_s + kTileHeads * Dqk;
  float* lse_s = dz_s + kTileHeads * kTileKeys;
  float* delta_s = lse_s + kTileHeads;
  const int tid = threadIdx.x;

  for (int i = tid; i < nh * Dqk; i += kThreads) q_s[(i / Dqk) * ld + i % Dqk] = q[i];
  for (int i = tid; i < nh * Dv; i += kThreads) do_s[i] = dout[i];
  for (int i = tid; i < kTileHeads * Dqk; i += kThreads) dq_s[i] = 0.0f;
  if (tid < nh) {
    lse_s[tid] = lse[tid];
    delta_s[tid] = delta[tid];
  }
  const int n = keys.count(t);
  const int sh = tid / kTileKeys, sk = tid % kTileKeys;
  for (int c = 0; c < n; c += kTileKeys) {
    load_key_chunk(keys, t, c, n, Dqk, key_s, kv_s);
    float dz = 0.0f;
    if (sh < nh && key_s[sk] >= 0) {
      const float* k = kv_s + sk * ld;
      const float z = scale * dot_rows(q_s + sh * ld, k, Dqk);
      const float p = expf(z - lse_s[sh]);                  // lse = +inf (empty row) → 0
      const float dp = dot_rows(do_s + sh * Dv, k, Dv);
      dz = p * (dp - delta_s[sh]);
    }
    dz_s[sh * kTileKeys + sk] = dz;
    __syncthreads();
    for (int i = tid; i < nh * Dqk; i += kThreads) {
      const int h = i / Dqk, d = i % Dqk;
      const float* g = dz_s + h * kTileKeys;
      float acc = dq_s[i];
      for (int k = 0; k < kTileKeys; ++k) acc = fmaf(g[k], kv_s[k * ld + d], acc);
      dq_s[i] = acc;
    }
    __syncthreads();
  }
  __syncthreads();
  for (int i = tid; i < nh * Dqk; i += kThreads) dq[i] = scale * dq_s[i];
}

// ── backward dkv (key-major, one key per block) ──────────────────────────────────────────────
// dkv[s] = Σ_{entries (t, slot) that select s, in the order `visit` yields them} Σ_h
//          scale·dZ[t,h,s]·q[t,h]  (K role, Dqk dims)  +  P[t,h,s]·dout[t,h]  (V role, Dv dims).
// `visit(f)` calls f(t) once per entry in a fixed order. Warps own heads for the two dot products
// (butterfly reductions, fixed order); threads own dims for the accumulation (h ascending).
// kv_row and q: const float* or Elems of either dtype (Keys::row gives the kv row of a key source).
template <class Visit, class KvRow, class Q>
__device__ void dkv_key(const KvRow kv_row, const Q q, const float* __restrict__ dout,
                        const float* __restrict__ lse, const float* __restrict__ delta, int H, int Dqk, int Dv,
                        float scale, float* __restrict__ dkv_row, const Visit& visit) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  float* kv_s = reinterpret_cast<float*>(smem_raw);
  float* acc_s = kv_s + Dqk;
  float* p_s = acc_s + Dqk;
  float* dz_s = p_s + H;
  const int tid = threadIdx.x, lane = tid % detail::kWarpSize, warp = tid / detail::kWarpSize;
  for (int d = tid; d < Dqk; d += kThreads) {
    kv_s[d] = kv_row[d];
    acc_s[d] = 0.0f;
  }
  __syncthreads();
  visit([&](int64_t t) {
    for (int h = warp; h < H; h += kWarps) {
      const auto qr = q + (t * H + h) * Dqk;
      const float* dr = dout + (t * H + h) * Dv;
      float z = 0.0f, dp = 0.0f;
      for (int d = lane; d < Dqk; d += detail::kWarpSize) z = fmaf(qr[d], kv_s[d], z);
      for (int d = lane; d < Dv; d += detail::kWarpSize) dp = fmaf(dr[d], kv_s[d], dp);
      z = detail::warp_sum(z);
      dp = detail::warp_sum(dp);
      if (lane == 0) {
        const float p = expf(scale * z - lse[t * H + h]);
        p_s[h] = p;
        dz_s[h] = p * (dp - delta[t * H + h]);
      }
    }
    __syncthreads();
    for (int d = tid; d < Dqk; d += kThreads) {
      float a = acc_s[d];
      for (int h = 0; h < H; ++h) {
        a = fmaf(scale * dz_s[h], q[(t * H + h) * Dqk + d], a);
        if (d < Dv) a = fmaf(p_s[h], dout[(t * H + h) * Dv + d], a);
      }
      acc_s[d] = a;
    }
    __syncthreads();
  });
  for (int d = tid; d < Dqk; d += kThreads) dkv_row[d] = acc_s[d];
}

// ── the v1 kernels both attention ops share (Keys = SparseKeys or DenseKeys) ─────────────────────
// forward: grid (T, ⌈H/kTileHeads⌉), one forward_tile per (query, head tile), fp32, deterministic.
template <class Keys>
struct ForwardArgs {
  Keys keys;
  int T, H, Dqk, Dv;
  float scale;
  const float* q;       // fp32 q (used when q_bf16 is null)
  float* out;
  float* lse;
  float* max_logits;   // may be null
  const uint16_t* q_bf16 = nullptr;   // bf16 q, or null
};
template <class Keys>
__global__ void __launch_bounds__(kThreads) forward_v1_kernel(ForwardArgs<Keys> a) {
  const int64_t t = blockIdx.x;
  const int h0 = blockIdx.y * kTileHeads;
  const int nh = min(kTileHeads, a.H - h0);
  const int64_t row = t * a.H + h0;
  forward_tile(a.keys, t, 0, a.keys.count(t), Elems{a.q, a.q_bf16} + row * a.Dqk, nh, a.Dqk, a.Dv, a.scale, a.out + row * a.Dv,
               a.lse + row, 1, a.max_logits ? a.max_logits + row : nullptr, kInf);
}
// backward dq: same grid, one dq_tile per (query, head tile).
template <class Keys>
struct DqArgs {
  Keys keys;
  int H, Dqk, Dv;
  float scale;
  const float *q, *dout, *lse, *delta;   // q fp32 (used when q_bf16 is null)
  float* dq;
  const uint16_t* q_bf16 = nullptr;      // bf16 q, or null
};
template <class Keys>
__global__ void __launch_bounds__(kThreads) dq_v1_kernel(DqArgs<Keys> a) {
  const int64_t t = blockIdx.x;
  const int h0 = blockIdx.y * kTileHeads;
  const int nh = min(kTileHeads, a.H - h0);
  const int64_t row = t * a.H + h0;
  dq_tile(a.keys, t, Elems{a.q, a.q_bf16} + row * a.Dqk, a.dout + row * a.Dv, a.lse + row, a.delta + row, nh, a.Dqk, a.Dv, a.scale,
          a.dq + row * a.Dqk);
}


// Host: the v1 forward over a key source (sparse_keys(p) / dense_keys(p)) with q in p's dtype.
template <class Keys>
inline void launch_forward_v1(const AttentionParams& p, const Keys& keys, const AttentionForwardOut& o,
                              cudaStream_t stream, const char* op) {
  const size_t smem = forward_smem_bytes(p.Dqk, p.Dv);
  set_smem(forward_v1_kernel<Keys>, smem, op);
  if (p.T == 0) return;
  const Elems q = q_elems(p);
  const ForwardArgs<Keys> a{keys, p.T, p.H, p.Dqk, p.Dv, p.scale, q.f32, o.out, o.lse, o.max_logits, q.bf16};
  const dim3 grid(p.T, detail::ceil_div(p.H, kTileHeads));
  forward_v1_kernel<<<grid, kThreads, smem, stream>>>(a);
  DSA_CUDA_LAUNCH_CHECK(op);
}
// Host: the arguments of dq_v1_kernel with q in p's dtype.
template <class Keys>
inline DqArgs<Keys> dq_args(const AttentionParams& p, const Keys& keys, const float* dout, const float* lse,
                            const float* delta, float* dq) {
  const Elems q = q_elems(p);
  return DqArgs<Keys>{keys, p.H, p.Dqk, p.Dv, p.scale, q.f32, dout, lse, delta, dq, q.bf16};
}
// Host: opts the v1 dq and dkv kernels of a key source into their shared memory, or throws (Dqk / H
// too large) — call it before the first backward launch so that no output is written before a throw.
template <class Keys>
inline void set_backward_v1_smem(const AttentionParams& p, const char* op);
// Host: the v1 dq pass (grid (T, ⌈H/8⌉)) with q / kv in p's dtype; delta = Δ [T, H] already computed.
template <class Keys>
inline void launch_dq_v1(const AttentionParams& p, const Keys& keys, const AttentionBackwardArgs& b,
                         const float* delta, cudaStream_t stream, const char* op) {
  const size_t smem = dq_smem_bytes(p.Dqk, p.Dv);
  set_smem(dq_v1_kernel<Keys>, smem, op);
  if (p.T == 0) return;
  dq_v1_kernel<<<dim3(p.T, detail::ceil_div(p.H, kTileHeads)), kThreads, smem, stream>>>(
      dq_args(p, keys, b.dout, b.lse, delta, b.dq));
  DSA_CUDA_LAUNCH_CHECK(op);
}

// ── v1 dkv passes (key-major, one key per block, dkv_key) with q / kv of either dtype ─────────────
// Sparse: block s walks its entries of the key-major transposition (key_major.cuh: sorted_pos =
// vals_out, offsets) in sorted order; the entry at position pos belongs to query pos / K.
// Dense: block s visits every query t (ascending) whose clamped range holds s.
// (Templates so that every translation unit may include them.)
template <class Keys>
struct DkvV1Args {
  Keys keys;                             // kv (either dtype) and, dense, the ranges
  int T, H, Dqk, Dv, K;
  float scale;
  Elems q;
  const float *dout, *lse, *delta;
  const int32_t *sorted_pos, *offsets;   // sparse only
  float* dkv;
};
template <class Keys>
__global__ void __launch_bounds__(kThreads) dkv_v1_kernel(DkvV1Args<Keys> a) {
  const int64_t s = blockIdx.x;
  const auto visit = [&](auto&& f) {
    if constexpr (std::is_same_v<Keys, SparseKeys>) {
      const int e0 = a.offsets[s], e1 = a.offsets[s + 1];
      for (int e = e0; e < e1; ++e) f(static_cast<int64_t>(a.sorted_pos[e] / a.K));
    } else {
      for (int t = 0; t < a.T; ++t) {
        int lo, hi;
        a.keys.range(t, lo, hi);
        if (s >= lo && s < hi) f(static_cast<int64_t>(t));
      }
    }
  };
  dkv_key(a.keys.row(s), a.q, a.dout, a.lse, a.delta, a.H, a.Dqk, a.Dv, a.scale, a.dkv + s * a.Dqk, visit);
}
// Host: the v1 dkv pass over a key source (sparse_keys(p): sorted_pos / offsets required; dense_keys(p):
// both null) with q / kv in p's dtype; delta = Δ [T, H].
template <class Keys>
inline void launch_dkv_v1(const AttentionParams& p, const Keys& keys, const AttentionBackwardArgs& b,
                          const float* delta, const int32_t* sorted_pos, const int32_t* offsets, cudaStream_t stream,
                          const char* op) {
  const size_t smem = dkv_smem_bytes(p.Dqk, p.H);
  set_smem(dkv_v1_kernel<Keys>, smem, op);
  if (p.S == 0) return;
  const DkvV1Args<Keys> a{keys, p.T, p.H, p.Dqk, p.Dv, p.K, p.scale, q_elems(p),
                          b.dout, b.lse, delta, sorted_pos, offsets, b.dkv};
  dkv_v1_kernel<<<p.S, kThreads, smem, stream>>>(a);
  DSA_CUDA_LAUNCH_CHECK(op);
}
template <class Keys>
inline void set_backward_v1_smem(const AttentionParams& p, const char* op) {
  set_smem(dq_v1_kernel<Keys>, dq_smem_bytes(p.Dqk, p.Dv), op);
  set_smem(dkv_v1_kernel<Keys>, dkv_smem_bytes(p.Dqk, p.H), op);
}

}  // namespace dsa::cuda::attn
