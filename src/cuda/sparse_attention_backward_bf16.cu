// sparse_attention_backward_bf16.cu — op 7, variant kCublas (the default for bf16 q/kv):
// dq [T,H,Dqk] and dkv [S,Dqk] of the sparse MQA attention (ops.h §6–8), the five matmuls on cuBLAS
// bf16 tensor cores (fp32 accumulation), DETERMINISTIC (no float atomics, fixed summation orders).
//
// Contract (same as v1, sparse_attention_backward.cu): −1 / out-of-range / past-topk_length slots
// contribute nothing; P = exp(scale·z − lse) with the forward's natural-log lse; dkv's first Dv
// dims get Pᵀ·dout (V role) and all Dqk dims get scale·dZᵀ·q (K role). Any H, Dqk, Dv ≤ Dqk, K,
// on sm_80+ (cuBLAS bf16 GEMMs). q and kv come in fp32 or bf16
// (AttentionParams::dtype; bf16 ones are used as they are, fp32 ones rounded to nearest even, so a
// bf16 input holding the rounded values of an fp32 one gives bitwise the same dq / dkv); dout, out,
// lse and the outputs dq / dkv are fp32. Operands are rounded to bf16 (q, kv, dout, P, dZ); every product is accumulated in fp32 and dkv is summed in fp32 → relative error ~1e-3..1e-2
// vs fp64 (tests/op_attention.cpp states the tolerance of the table's cuda_cublas row).
//
// Algorithm: the queries go through in chunks of Tc (a fixed function of the shapes and of
// workspace_bytes: default_chunk, largest_chunk). Once per call: fp32 kv → bf16 (kvb [S,Dqk]; bf16 kv
// is kvb itself, not copied), dkv = 0.
// Per chunk:
//   1. prep     Q2[t] = [q[t] ; dout[t] padded with zeros to Dqk]  (bf16 [2H, Dqk]; bf16 q copied),
//               Δ[t,h] = out·dout (fp32, one warp per row, lanes strided then a fixed butterfly),
//               slot keys: key = indices[t,j] if slot j is valid else S (the sort's "invalid" key),
//               value = local position t·K + j
//   2. gather   Kg[t,j,:] = kvb[key] (zeros for invalid slots)              bf16 [Tc, K, Dqk]
//   3. GEMM     SP[t] = Q2[t]·Kg[t]ᵀ  → rows 0..H−1 = q·kᵀ (z/scale), rows H..2H−1 = dout·vᵀ (dP)
//               (the zero padding makes the Dqk-long dot of a dout row a Dv-long one)  fp32 [Tc,2H,K]
//   4. softmax  P = exp(scale·z − lse) (0 on invalid slots), dS = scale·P∘(dP − Δ);
//               G[t] = [dS ; P]                                               bf16 [Tc, 2H, K]
//   5. GEMM     dq[t] = dS[t]·Kg[t]   (fp32, written straight into dq)
//   6. GEMM     part[t] = G[t]ᵀ·Q2[t] = dSᵀ·q + Pᵀ·[dout|0]   (both roles in one K×2H×Dqk GEMM) fp32 [Tc,K,Dqk]
//   7. sort     the chunk's key-major transposition (key_major.cuh, shared with v1: filled in step 1)
//               → every key's entries contiguous, in ascending (t, j); offsets by binary search
//   8. dkv      one block per key: acc = dkv[s]; acc += part[e] for its entries in sorted order;
//               dkv[s] = acc. Chunks run in order on one stream, so every dkv element is the
//               sequential fp32 sum over ascending (t, j) of the whole selection — independent of Tc.
// Determinism: every kernel here sums in a fixed order; cuBLAS "by design, all cuBLAS API routines
// from a given toolkit version generate the same bit-wise results at every run when executed on GPUs
// with the same architecture and the same number of SMs" (cuBLAS docs, "Results reproducibility"),
// given a user workspace per stream (cublasSetWorkspace, done here) — so for fixed shapes, workspace
// size, device and toolkit the outputs are bitwise reproducible. dkv's reduction order does not
// depend on Tc; the GEMM results may (cuBLAS can pick another kernel for another batch count).
// cuBLAS: the backend's one handle per device (cuda/cublas_handle.cuh), created on the first cuBLAS
// call on that device (it allocates: make that first call outside CUDA-graph capture, e.g. a
// warm-up) and kept for the process (never destroyed: static destruction may run after the CUDA
// context is gone). Each call
// binds the stream and our workspace's cuBLAS slice under a mutex held while the chunk loop is
// enqueued (enqueue only, no host sync), so concurrent host threads cannot swap them mid-call.
// Workspace (plan): kvb S·Dqk·2 (fp32 inputs only) + cuBLAS 32 MiB + (S+1)·4 + per query of the chunk
// K·Dqk·(2 + 4) + 2H·Dqk·2 + 2H·K·(4 + 2) + 4H + 16K (+ cub's sort storage) ≈ 10.6 MB per query at
// the V3.2 shape; the default chunk keeps the total ≤ kChunkBudgetBytes (4 GiB → Tc ≈ 400 there).
// A caller may pass less: Tc becomes the largest chunk that fits (≥ the size for Tc = 1).
#include <cublas_v2.h>
#include <cuda_bf16.h>

#include <mutex>
#include <type_traits>
#include <vector>

#include "cuda/attention_common.cuh"
#include "cuda/cublas_handle.cuh"
#include "cuda/key_major.cuh"
#include "dsa/cuda_ops.h"

namespace dsa::cuda::attn {
namespace {

constexpr size_t kCublasWorkspaceBytes = size_t(32) << 20;  // cuBLAS docs: 32 MiB recommended on Hopper
constexpr size_t kChunkBudgetBytes = size_t(4) << 30;       // default chunk: total workspace ≤ 4 GiB
constexpr int kThreads256 = 256;
constexpr int kMaxGridBlocks = 65535 * 8;                   // grid-stride loops cap their grid
constexpr int kVecBf16 = 8;                                 // bf16 per 16-byte vector
constexpr int kDkvUnroll = 4;                               // part rows in flight per dkv thread

// ── workspace plan for a chunk of tc queries ─────────────────────────────────────────────────
struct Plan {
  int tc = 0;
  __nv_bfloat16 *kvb = nullptr, *q2 = nullptr, *kg = nullptr, *g = nullptr;
  float *sp = nullptr, *part = nullptr, *delta = nullptr;
  KeyMajorBuffers km;   // the chunk's transposed index list (key_major.cuh)
  void* cublas_ws = nullptr;
  size_t total = 0;
};

Plan make_plan(const AttentionParams& p, int tc, void* base, const char* op) {
  const size_t n = static_cast<size_t>(tc) * p.K, H2 = 2 * static_cast<size_t>(p.H), D = p.Dqk;
  Plan w;
  w.tc = tc;
  detail::WorkspaceCarver ws(base);
  w.cublas_ws = ws.take<unsigned char>(kCublasWorkspaceBytes);
  if (p.dtype != DType::kBF16) w.kvb = ws.take<__nv_bfloat16>(static_cast<size_t>(p.S) * D);   // bf16: kv_bf16 itself
  w.q2 = ws.take<__nv_bfloat16>(tc * H2 * D);
  w.kg = ws.take<__nv_bfloat16>(n * D);
  w.sp = ws.take<float>(tc * H2 * p.K);
  w.g = ws.take<__nv_bfloat16>(tc * H2 * p.K);
  w.part = ws.take<float>(n * D);
  w.delta = ws.take<float>(static_cast<size_t>(tc) * p.H);
  w.km = carve_key_major(ws, static_cast<int>(n), p.S, op);
  w.total = ws.used();
  return w;
}

// Largest tc in [1, hi] whose plan fits `bytes` (0 when even tc = 1 does not). The plan grows with tc.
int largest_chunk(const AttentionParams& p, int hi, size_t bytes, const char* op) {
  if (make_plan(p, 1, nullptr, op).total > bytes) return 0;
  int lo = 1;
  while (lo < hi) {
    const int mid = lo + (hi - lo + 1) / 2;
    if (make_plan(p, mid, nullptr, op).total <= bytes) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

// The default chunk: as many queries as keep the workspace within kChunkBudgetBytes (at least 1),
// and Tc·K within int32 (the sort positions).
int default_chunk(const AttentionParams& p, const char* op) {
  const int hi = static_cast<int>(std::min<long long>(p.T, INT32_MAX / p.K));
  return std::max(1, largest_chunk(p, hi, kChunkBudgetBytes, op));
}

// ── kernels ──────────────────────────────────────────────────────────────────────────────────
__global__ void bwd_bf16_convert_kv(const float* kv, int64_t n, __nv_bfloat16* kvb) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    kvb[i] = __float2bfloat16_rn(kv[i]);
}

// Q2[tl] rows 0..H−1 = q[c0+tl] (fp32 q rounded, or bf16 q16 copied when q16 is set), rows H..2H−1 =
// dout[c0+tl] (dims ≥ Dv zero). A block per row.
__global__ void bwd_bf16_prep_q2(const float* q, const uint16_t* q16, const float* dout, int64_t c0, int tc, int H,
                                 int Dqk, int Dv, __nv_bfloat16* q2) {
  const int64_t rows = static_cast<int64_t>(tc) * 2 * H;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {   // local row tl·2H + hr
    const int64_t t = c0 + r / (2 * H);
    const int hr = static_cast<int>(r % (2 * H));
    if (hr < H && q16 != nullptr) {
      const uint16_t* src = q16 + (t * H + hr) * Dqk;
      uint16_t* dst = reinterpret_cast<uint16_t*>(q2 + r * Dqk);
      for (int d = threadIdx.x; d < Dqk; d += blockDim.x) dst[d] = src[d];
      continue;
    }
    const float* src = hr < H ? q + (t * H + hr) * Dqk : dout + (t * H + hr - H) * Dv;
    const int len = hr < H ? Dqk : Dv;
    for (int d = threadIdx.x; d < Dqk; d += blockDim.x) q2[r * Dqk + d] = __float2bfloat16_rn(d < len ? src[d] : 0.0f);
  }
}

__global__ void bwd_bf16_delta(const float* out, const float* dout, int64_t rows, int Dv, float* delta) {
  row_delta(out, dout, rows, Dv, delta);
}

// Kg[pos, :] = kvb[key[pos], :] or zeros; a warp per slot, 16-byte vectors when Dqk % 8 == 0.
template <bool kVector>
__global__ void bwd_bf16_gather(const __nv_bfloat16* kvb, const uint32_t* keys_in, int64_t n, int Dqk, uint32_t S,
                                __nv_bfloat16* kg) {
  const int lane = threadIdx.x % detail::kWarpSize;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / detail::kWarpSize);
  for (int64_t pos = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / detail::kWarpSize; pos < n;
       pos += warps) {
    const uint32_t s = keys_in[pos];
    if constexpr (kVector) {
      const uint4* src = reinterpret_cast<const uint4*>(kvb + static_cast<int64_t>(s) * Dqk);
      uint4* dst = reinterpret_cast<uint4*>(kg + pos * Dqk);
      for (int c = lane; c < Dqk / kVecBf16; c += detail::kWarpSize)
        dst[c] = s < S ? src[c] : make_uint4(0u, 0u, 0u, 0u);
    } else {
      for (int c = lane; c < Dqk; c += detail::kWarpSize)
        kg[pos * Dqk + c] = s < S ? kvb[static_cast<int64_t>(s) * Dqk + c] : __float2bfloat16_rn(0.0f);
    }
  }
}

// G[tl] rows 0..H−1 = dS = scale·P∘(dP − Δ), rows H..2H−1 = P, P = exp(scale·z − lse) on valid slots.
// Inverts the forward's normalisation (P from lse) and its PV product (dP = dout·v). A block per (tl, h).
__global__ void bwd_bf16_softmax(const float* sp, const uint32_t* keys_in, const float* lse, const float* delta,
                                 int64_t c0, int tc, int H, int K, uint32_t S, float scale, __nv_bfloat16* g) {
  const int64_t rows = static_cast<int64_t>(tc) * H;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {   // tl·H + h
    const int64_t tl = row / H;
    const int h = static_cast<int>(row % H);
    const float l = lse[c0 * H + row], dl = delta[row];
    const int64_t z_row = (tl * 2 * H + h) * K, dp_row = z_row + static_cast<int64_t>(H) * K;
    const uint32_t* key = keys_in + tl * K;
    for (int j = threadIdx.x; j < K; j += blockDim.x) {
      float pv = 0.0f, ds = 0.0f;
      if (key[j] < S) {
        pv = expf(scale * sp[z_row + j] - l);
        ds = scale * pv * (sp[dp_row + j] - dl);
      }
      g[z_row + j] = __float2bfloat16_rn(ds);
      g[dp_row + j] = __float2bfloat16_rn(pv);
    }
  }
}

// dkv[s, :] += part[e, :] for the chunk's entries of key s, in sorted (ascending t, j) order, one
// sequential fp32 chain per element continued across chunks. kVector: float4 columns (Dqk % 4 == 0).
template <bool kVector>
__global__ void bwd_bf16_dkv(const float* part, const int32_t* sorted_pos, const int32_t* offsets, int Dqk, float* dkv) {
  const int64_t s = blockIdx.x;
  const int e0 = offsets[s], e1 = offsets[s + 1];
  if (e0 == e1) return;
  using Vec = std::conditional_t<kVector, float4, float>;
  constexpr int kW = kVector ? 4 : 1;
  const int cols = Dqk / kW;
  const Vec* src = reinterpret_cast<const Vec*>(part);
  Vec* dst = reinterpret_cast<Vec*>(dkv + s * Dqk);
  for (int c = threadIdx.x; c < cols; c += blockDim.x) {
    Vec acc = dst[c];
    int e = e0;
    for (; e + kDkvUnroll <= e1; e += kDkvUnroll) {
      Vec v[kDkvUnroll];
#pragma unroll
      for (int u = 0; u < kDkvUnroll; ++u) v[u] = src[static_cast<int64_t>(sorted_pos[e + u]) * cols + c];
#pragma unroll
      for (int u = 0; u < kDkvUnroll; ++u) {
        if constexpr (kVector) {
          acc.x += v[u].x; acc.y += v[u].y; acc.z += v[u].z; acc.w += v[u].w;
        } else {
          acc += v[u];
        }
      }
    }
    for (; e < e1; ++e) {
      const Vec v = src[static_cast<int64_t>(sorted_pos[e]) * cols + c];
      if constexpr (kVector) {
        acc.x += v.x; acc.y += v.y; acc.z += v.z; acc.w += v.w;
      } else {
        acc += v;
      }
    }
    dst[c] = acc;
  }
}

// Grid of a grid-stride loop: one thread per item / one block per row, capped.
int grid_for(int64_t n) { return static_cast<int>(std::min<int64_t>((n + kThreads256 - 1) / kThreads256, kMaxGridBlocks)); }
int grid_rows(int64_t rows) { return static_cast<int>(std::min<int64_t>(rows, kMaxGridBlocks)); }

// C[b] (m×n, column-major, fp32) = op(A[b])·op(B[b]), bf16 operands, fp32 accumulation, batch b.
void gemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const __nv_bfloat16* A,
          int lda, long long sa, const __nv_bfloat16* B, int ldb, long long sb, float* C, int ldc, long long sc,
          int batch, const char* op) {
  const float one = 1.0f, zero = 0.0f;
  DSA_CUBLAS_CALL(op, cublasGemmStridedBatchedEx(h, ta, tb, m, n, k, &one, A, CUDA_R_16BF, lda, sa, B, CUDA_R_16BF, ldb,
                                                 sb, &zero, C, CUDA_R_32F, ldc, sc, batch, CUBLAS_COMPUTE_32F,
                                                 CUBLAS_GEMM_DEFAULT));
}

}  // namespace

bool sparse_backward_bf16_fits(const AttentionParams&) { return detail::device_sm_version() >= 80; }

size_t sparse_backward_bf16_workspace(const AttentionParams& p, const char* op) {
  validate_params(p, true, op);
  if (p.T == 0) return 0;
  return make_plan(p, default_chunk(p, op), nullptr, op).total;
}

void sparse_backward_bf16(const AttentionParams& p, const AttentionBackwardArgs& b, void* workspace,
                          size_t workspace_bytes, cudaStream_t stream, const char* op) {
  // Every check before any launch (validate_params and the pointers were checked by the caller).
  int tc = 0;
  if (p.T > 0) {
    const int dflt = default_chunk(p, op);
    const size_t need = make_plan(p, 1, nullptr, op).total;
    DSA_REQUIRE(workspace != nullptr && workspace_bytes >= need, op, "workspace_bytes = ", workspace_bytes,
                " (workspace ", workspace ? "set" : "null", ") is smaller than the ", need,
                " B a one-query chunk needs (sparse_attention_backward_workspace_bytes asks for ",
                make_plan(p, dflt, nullptr, op).total, " B, variant cublas)");
    tc = largest_chunk(p, dflt, workspace_bytes, op);
  }
  DSA_CUDA_CALL(op, cudaMemsetAsync(b.dkv, 0, sizeof(float) * static_cast<size_t>(p.S) * p.Dqk, stream));
  if (p.T == 0) return;
  const Plan w = make_plan(p, tc, workspace, op);
  const int H = p.H, K = p.K, D = p.Dqk, H2 = 2 * p.H;
  const SparseKeys keys = sparse_keys(p);
  const uint32_t S = static_cast<uint32_t>(p.S);
  const bool bf16 = p.dtype == DType::kBF16;
  const __nv_bfloat16* kvb = bf16 ? reinterpret_cast<const __nv_bfloat16*>(p.kv_bf16) : w.kvb;
  if (p.S > 0 && !bf16) {
    const int64_t n = static_cast<int64_t>(p.S) * D;
    bwd_bf16_convert_kv<<<grid_for(n), kThreads256, 0, stream>>>(p.kv, n, w.kvb);
    DSA_CUDA_LAUNCH_CHECK(op);
  }
  std::lock_guard<std::mutex> lock(detail::cublas_mutex());
  cublasHandle_t h = detail::cublas_handle(op);
  DSA_CUBLAS_CALL(op, cublasSetStream(h, stream));   // resets the workspace: bind ours after it
  DSA_CUBLAS_CALL(op, cublasSetWorkspace(h, w.cublas_ws, kCublasWorkspaceBytes));
  // 16-byte gathers need 16-byte rows: Dqk % 8 == 0 and (bf16 kv) a 16-byte aligned kv_bf16
  const bool vec_gather = D % kVecBf16 == 0 && reinterpret_cast<uintptr_t>(kvb) % 16 == 0, vec_dkv = D % 4 == 0;
  const int dkv_threads = std::min(1024, static_cast<int>((vec_dkv ? D / 4 : D) + 31) / 32 * 32);

  for (int64_t c0 = 0; c0 < p.T; c0 += tc) {
    const int n_t = static_cast<int>(std::min<int64_t>(tc, p.T - c0));
    const int64_t n = static_cast<int64_t>(n_t) * K;   // slots of the chunk
    // 1. prep
    bwd_bf16_prep_q2<<<grid_rows(static_cast<int64_t>(n_t) * H2), kThreads256, 0, stream>>>(
        bf16 ? nullptr : p.q, bf16 ? p.q_bf16 : nullptr, b.dout, c0, n_t, H, D, p.Dv, w.q2);
    DSA_CUDA_LAUNCH_CHECK(op);
    const int64_t rows = static_cast<int64_t>(n_t) * H;
    bwd_bf16_delta<<<detail::ceil_div(rows * detail::kWarpSize, kThreads256), kThreads256, 0, stream>>>(
        b.out + c0 * H * p.Dv, b.dout + c0 * H * p.Dv, rows, p.Dv, w.delta);
    DSA_CUDA_LAUNCH_CHECK(op);
    key_major_fill(keys, c0, n_t, w.km, stream, op);
    // 2. gather
    const int gather_grid = grid_for(n * detail::kWarpSize);
    if (vec_gather)
      bwd_bf16_gather<true><<<gather_grid, kThreads256, 0, stream>>>(kvb, w.km.keys_in, n, D, S, w.kg);
    else
      bwd_bf16_gather<false><<<gather_grid, kThreads256, 0, stream>>>(kvb, w.km.keys_in, n, D, S, w.kg);
    DSA_CUDA_LAUNCH_CHECK(op);
    // 3. SP[t] (2H×K row-major = K×2H column-major) = Kg[t] (K×D) · Q2[t]ᵀ
    gemm(h, CUBLAS_OP_T, CUBLAS_OP_N, K, H2, D, w.kg, D, static_cast<long long>(K) * D, w.q2, D,
         static_cast<long long>(H2) * D, w.sp, K, static_cast<long long>(H2) * K, n_t, op);
    // 4. P, dS
    bwd_bf16_softmax<<<grid_rows(rows), kThreads256, 0, stream>>>(w.sp, w.km.keys_in, b.lse, w.delta, c0, n_t, H, K, S,
                                                                     p.scale, w.g);
    DSA_CUDA_LAUNCH_CHECK(op);
    // 5. dq[t] (H×D row-major = D×H column-major) = Kg[t]ᵀ (D×K) · dS[t]ᵀ (K×H)
    gemm(h, CUBLAS_OP_N, CUBLAS_OP_N, D, H, K, w.kg, D, static_cast<long long>(K) * D, w.g, K,
         static_cast<long long>(H2) * K, b.dq + c0 * H * D, D, static_cast<long long>(H) * D, n_t, op);
    // 6. part[t] (K×D row-major = D×K column-major) = Q2[t]ᵀ (D×2H) · G[t] (2H×K)
    gemm(h, CUBLAS_OP_N, CUBLAS_OP_T, D, K, H2, w.q2, D, static_cast<long long>(H2) * D, w.g, K,
         static_cast<long long>(H2) * K, w.part, D, static_cast<long long>(K) * D, n_t, op);
    // 7. sort + offsets
    key_major_sort(static_cast<int>(n), p.S, w.km, stream, op);
    // 8. dkv
    if (p.S > 0) {
      if (vec_dkv) bwd_bf16_dkv<true><<<p.S, dkv_threads, 0, stream>>>(w.part, w.km.vals_out, w.km.offsets, D, b.dkv);
      else bwd_bf16_dkv<false><<<p.S, dkv_threads, 0, stream>>>(w.part, w.km.vals_out, w.km.offsets, D, b.dkv);
      DSA_CUDA_LAUNCH_CHECK(op);
    }
  }
}

}  // namespace dsa::cuda::attn
