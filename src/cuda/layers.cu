// layers.cu — ops.h §12 on the GPU: gemm / linear (cuBLAS), swiglu, embedding, cross-entropy
// (cuda_ops.h block 12; the norms are in layers_norm.cu). The CPU version (src/cpu/layers.cpp) is
// the specification; what differs here and why:
//   gemm / linear      cuBLAS fp32 (CUBLAS_COMPUTE_32F: no TF32) on the backend's shared handle
//                      (cuda/cublas_handle.cuh: atomics disallowed, created on first use — the only
//                      allocation —, held under its mutex from cublasSetStream to the call).
//   embedding_backward a stable radix sort of (token, row) in the caller's workspace, then one block
//                      per (run of equal tokens, column tile) adds the run's rows to dtable in row
//                      order, starting from dtable — the CPU's float sequence exactly, so the result
//                      is the CPU's bit for bit. Work O(N·C) whatever the token distribution (one hot
//                      token is a serial run of its rows per column tile: the v1 limit).
//   cross_entropy      one block per row, an online (max, Σexp) per thread (fp32 max, fp64 sum),
//                      combined in a fixed butterfly + warp order: one read of the row in the
//                      forward, two in the backward.
// Out-of-range data the host cannot see: a token outside [0, V) embeds as a zero row and gets no
// gradient; a target outside [−1, V) counts as −1 (loss 0, zero gradient row).
#include <cub/device/device_radix_sort.cuh>

#include <algorithm>
#include <climits>
#include <mutex>
#include <vector>

#include "cuda/common.cuh"
#include "cuda/cublas_handle.cuh"
#include "dsa/cuda_ops.h"

namespace dsa::cuda {
namespace {

constexpr int kElementThreads = 256;          // swiglu: one thread per element (grid-stride)
constexpr int kRowThreads = 256;              // embedding: one block per row / run
constexpr int kVocabThreads = 512;            // cross-entropy: one block per row of logits
constexpr int kVocabWarps = kVocabThreads / detail::kWarpSize;
constexpr int kMaxGridBlocks = 65535 * 8;     // grid-stride loops cap their grid.x
constexpr int kMaxGridY = 65535;              // hardware limit of grid.y
constexpr int kEmbedColsPerThread = 4;        // embedding_backward: columns a thread carries
constexpr int kEmbedRowUnroll = 4;            // … and rows of a run it loads at once

// Validated gemm: row-major C[M,N] = op(A)·op(B) + beta·C (see cuda_ops.h), A and B of type `ab`
// (fp32 or bf16), C fp32, fp32 accumulation. `op` names the caller.
void gemm_impl(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const void* A, int64_t lda, const void* B,
               int64_t ldb, float beta, float* C, int64_t ldc, cudaStream_t stream, const char* op,
               cudaDataType_t ab = CUDA_R_32F) {
  ::dsa::detail::require_non_negative(M, op, "M");
  ::dsa::detail::require_non_negative(N, op, "N");
  ::dsa::detail::require_non_negative(K, op, "K");
  DSA_REQUIRE(M <= INT_MAX && N <= INT_MAX && K <= INT_MAX, op, "M, N, K = ", M, ", ", N, ", ", K,
              " exceed cuBLAS's int range");
  // Row-major leading dimensions: A is [M,K] (or [K,M] when ta), B is [K,N] (or [N,K] when tb).
  const int64_t min_lda = std::max<int64_t>(1, ta ? M : K), min_ldb = std::max<int64_t>(1, tb ? K : N);
  const int64_t min_ldc = std::max<int64_t>(1, N);
  DSA_REQUIRE(lda >= min_lda && lda <= INT_MAX, op, "lda = ", lda, " must be in [", min_lda, ", INT_MAX]");
  DSA_REQUIRE(ldb >= min_ldb && ldb <= INT_MAX, op, "ldb = ", ldb, " must be in [", min_ldb, ", INT_MAX]");
  DSA_REQUIRE(ldc >= min_ldc && ldc <= INT_MAX, op, "ldc = ", ldc, " must be in [", min_ldc, ", INT_MAX]");
  if (M == 0 || N == 0) return;
  ::dsa::detail::require_ptr(C, op, "C");
  if (K > 0) {
    ::dsa::detail::require_ptr(A, op, "A");
    ::dsa::detail::require_ptr(B, op, "B");
  }
  // Row-major C = op(A)·op(B) is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ: swap the operands, keep the flags.
  const float one = 1.0f;
  std::lock_guard<std::mutex> lock(detail::cublas_mutex());
  cublasHandle_t h = detail::cublas_handle(op);
  DSA_CUBLAS_CALL(op, cublasSetStream(h, stream));
  DSA_CUBLAS_CALL(op, cublasGemmEx(h, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                                          static_cast<int>(N), static_cast<int>(M), static_cast<int>(K), &one, B, ab,
                                          static_cast<int>(ldb), A, ab, static_cast<int>(lda), &beta, C, CUDA_R_32F,
                                          static_cast<int>(ldc), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// ── swiglu ───────────────────────────────────────────────────────────────────────────────────
__global__ void swiglu_forward_kernel(const float* __restrict__ g, const float* __restrict__ u, float* __restrict__ a,
                                      int64_t N) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < N;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float s = 1.0f / (1.0f + expf(-g[i]));
    a[i] = g[i] * s * u[i];
  }
}

// du = da·g·σ;  dg = da·u·σ·(1 + g·(1 − σ))
__global__ void swiglu_backward_kernel(const float* __restrict__ g, const float* __restrict__ u,
                                       const float* __restrict__ da, float* __restrict__ dg, float* __restrict__ du,
                                       int64_t N) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < N;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float s = 1.0f / (1.0f + expf(-g[i]));
    const float gi = g[i], ui = u[i], d = da[i];
    du[i] = d * gi * s;
    dg[i] = d * ui * s * (1.0f + gi * (1.0f - s));
  }
}

int element_blocks(int64_t n) {
  return static_cast<int>(std::min<int64_t>((n + kElementThreads - 1) / kElementThreads, kMaxGridBlocks));
}

// ── embedding ────────────────────────────────────────────────────────────────────────────────
__global__ void embedding_forward_kernel(const int32_t* __restrict__ tokens, const float* __restrict__ table,
                                         float* __restrict__ out, int64_t N, int V, int C) {
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    const int32_t t = tokens[n];
    const bool valid = t >= 0 && t < V;
    const float* src = table + static_cast<int64_t>(valid ? t : 0) * C;
    float* dst = out + n * C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) dst[c] = valid ? src[c] : 0.0f;
  }
}

// Sort keys: the token, or V for an out-of-range token (sorts last, skipped). Values: the row.
__global__ void embedding_sort_fill_kernel(const int32_t* __restrict__ tokens, int64_t N, int V,
                                           uint32_t* __restrict__ keys, int32_t* __restrict__ rows) {
  for (int64_t n = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; n < N;
       n += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int32_t t = tokens[n];
    keys[n] = (t >= 0 && t < V) ? static_cast<uint32_t>(t) : static_cast<uint32_t>(V);
    rows[n] = static_cast<int32_t>(n);
  }
}

// Block (position i, column tile): if i starts a run of equal tokens, add the run's dout rows (in
// ascending row order — the sort is stable) onto dtable[token] for this tile's columns.
__global__ void embedding_runs_kernel(const uint32_t* __restrict__ keys, const int32_t* __restrict__ rows,
                                      const float* __restrict__ dout, float* __restrict__ dtable, int64_t N, int V,
                                      int C, int tiles) {
  const int tile_cols = blockDim.x * kEmbedColsPerThread;
  for (int64_t i = blockIdx.x; i < N; i += gridDim.x) {
    const uint32_t key = keys[i];
    if (key >= static_cast<uint32_t>(V) || (i > 0 && keys[i - 1] == key)) continue;   // block-uniform
    for (int tile = blockIdx.y; tile < tiles; tile += gridDim.y) {
      const int64_t c0 = static_cast<int64_t>(tile) * tile_cols + threadIdx.x;
      float* dst = dtable + static_cast<int64_t>(key) * C;
      float acc[kEmbedColsPerThread];
#pragma unroll
      for (int k = 0; k < kEmbedColsPerThread; ++k) {
        const int64_t c = c0 + static_cast<int64_t>(k) * blockDim.x;
        acc[k] = c < C ? dst[c] : 0.0f;
      }
      // kEmbedRowUnroll rows of the run are loaded before they are added (in row order): a long run
      // is a serial loop, latency-bound without it. The run is contiguous (sorted keys).
      for (int64_t j = i;; j += kEmbedRowUnroll) {
        bool in[kEmbedRowUnroll];
        float v[kEmbedRowUnroll][kEmbedColsPerThread];
#pragma unroll
        for (int u = 0; u < kEmbedRowUnroll; ++u) {
          in[u] = j + u < N && keys[j + u] == key;
          const float* src = dout + static_cast<int64_t>(in[u] ? rows[j + u] : 0) * C;
#pragma unroll
          for (int k = 0; k < kEmbedColsPerThread; ++k) {
            const int64_t c = c0 + static_cast<int64_t>(k) * blockDim.x;
            v[u][k] = in[u] && c < C ? src[c] : 0.0f;
          }
        }
#pragma unroll
        for (int u = 0; u < kEmbedRowUnroll; ++u) {
          if (!in[u]) break;
#pragma unroll
          for (int k = 0; k < kEmbedColsPerThread; ++k) acc[k] += v[u][k];
        }
        if (!in[kEmbedRowUnroll - 1]) break;
      }
#pragma unroll
      for (int k = 0; k < kEmbedColsPerThread; ++k) {
        const int64_t c = c0 + static_cast<int64_t>(k) * blockDim.x;
        if (c < C) dst[c] = acc[k];
      }
    }
  }
}

struct EmbeddingWorkspace {
  uint32_t *keys_in = nullptr, *keys_out = nullptr;
  int32_t *rows_in = nullptr, *rows_out = nullptr;
  void* sort_temp = nullptr;
  size_t sort_temp_bytes = 0;
  size_t total = 0;
};

EmbeddingWorkspace carve_embedding(void* base, int64_t N, int V, const char* op) {
  EmbeddingWorkspace w;
  detail::WorkspaceCarver ws(base);
  const size_t n = static_cast<size_t>(N);
  w.keys_in = ws.take<uint32_t>(n);
  w.keys_out = ws.take<uint32_t>(n);
  w.rows_in = ws.take<int32_t>(n);
  w.rows_out = ws.take<int32_t>(n);
  DSA_CUDA_CALL(op, cub::DeviceRadixSort::SortPairs(nullptr, w.sort_temp_bytes, static_cast<const uint32_t*>(nullptr),
                                                    static_cast<uint32_t*>(nullptr),
                                                    static_cast<const int32_t*>(nullptr),
                                                    static_cast<int32_t*>(nullptr), static_cast<int>(N), 0,
                                                    detail::sort_key_bits(V)));
  w.sort_temp = ws.take<unsigned char>(w.sort_temp_bytes);
  w.total = ws.used();
  return w;
}

void require_embedding_args(const int32_t* tokens, const float* table, const float* out, int64_t N, int V, int C,
                            const char* op, const char* table_name, const char* out_name) {
  ::dsa::detail::require_non_negative(N, op, "N");
  ::dsa::detail::require_positive(C, op, "C");
  ::dsa::detail::require_positive(V, op, "V");
  DSA_REQUIRE(N <= INT_MAX, op, "N = ", N, " exceeds the int32 row index range");
  ::dsa::detail::require_ptr(tokens, op, "tokens");
  ::dsa::detail::require_ptr(table, op, table_name);
  ::dsa::detail::require_ptr(out, op, out_name);
}

// ── cross-entropy ────────────────────────────────────────────────────────────────────────────
// A partial softmax denominator: s = Σ exp(z − m) over the elements seen, m their max (−inf: none).
struct MaxSum {
  float m;
  double s;
};
__device__ inline MaxSum combine(MaxSum a, MaxSum b) {
  const float m = fmaxf(a.m, b.m);
  if (m == -INFINITY) return {m, a.s + b.s};   // 0, or NaN from NaN logits (kept, as on the CPU)
  return {m, a.s * exp(static_cast<double>(a.m) - m) + b.s * exp(static_cast<double>(b.m) - m)};
}

// The row's (max, Σ exp(z − max)) on every thread of the block; smem: kVocabWarps entries.
__device__ MaxSum row_max_sum(const float* __restrict__ z, int V, MaxSum* smem) {
  MaxSum p{-INFINITY, 0.0};
  for (int v = threadIdx.x; v < V; v += blockDim.x) {
    const float x = z[v];
    if (x > p.m) {
      p.s = p.s * exp(static_cast<double>(p.m) - x) + 1.0;   // exp(−inf) = 0 on the first element
      p.m = x;
    } else if (x != -INFINITY) {   // a −inf logit adds 0; a NaN one lands here: NaN sum, as on the CPU
      p.s += expf(x - p.m);
    }
  }
  for (int o = detail::kWarpSize / 2; o > 0; o /= 2) {
    MaxSum q;
    q.m = __shfl_xor_sync(detail::kFullMask, p.m, o);
    q.s = __shfl_xor_sync(detail::kFullMask, p.s, o);
    p = combine(p, q);
  }
  const int lane = threadIdx.x % detail::kWarpSize, warp = threadIdx.x / detail::kWarpSize;
  if (lane == 0) smem[warp] = p;
  __syncthreads();
  MaxSum total = smem[0];
  for (int w = 1; w < static_cast<int>(blockDim.x) / detail::kWarpSize; ++w) total = combine(total, smem[w]);
  __syncthreads();   // smem reusable by the next row
  return total;
}

__global__ void __launch_bounds__(kVocabThreads) cross_entropy_forward_kernel(const float* __restrict__ logits,
                                                                              const int32_t* __restrict__ targets,
                                                                              float* __restrict__ loss, int64_t N,
                                                                              int V) {
  __shared__ MaxSum smem[kVocabWarps];
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    const int32_t t = targets[n];
    if (t < 0 || t >= V) {   // −1 (or out of range): no loss, block-uniform
      if (threadIdx.x == 0) loss[n] = 0.0f;
      continue;
    }
    const float* z = logits + n * V;
    const MaxSum ms = row_max_sum(z, V, smem);
    if (threadIdx.x == 0) loss[n] = static_cast<float>(log(ms.s) + ms.m - z[t]);
  }
}

// dz = dloss·(softmax(z) − onehot(target)); a zero row for target −1 / out of range.
__global__ void __launch_bounds__(kVocabThreads) cross_entropy_backward_kernel(const float* __restrict__ logits,
                                                                               const int32_t* __restrict__ targets,
                                                                               float dloss, float* __restrict__ dlogits,
                                                                               int64_t N, int V) {
  __shared__ MaxSum smem[kVocabWarps];
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    const int32_t t = targets[n];
    float* d = dlogits + n * V;
    if (t < 0 || t >= V) {
      for (int v = threadIdx.x; v < V; v += blockDim.x) d[v] = 0.0f;
      continue;
    }
    const float* z = logits + n * V;
    const MaxSum ms = row_max_sum(z, V, smem);
    const double inv = 1.0 / ms.s;
    for (int v = threadIdx.x; v < V; v += blockDim.x) {
      const float p = static_cast<float>(dloss * static_cast<double>(expf(z[v] - ms.m)) * inv);
      d[v] = v == t ? p - dloss : p;
    }
  }
}

void require_cross_entropy_args(const float* logits, const int32_t* targets, const float* out, int64_t N, int V,
                                const char* op, const char* out_name) {
  ::dsa::detail::require_non_negative(N, op, "N");
  ::dsa::detail::require_positive(V, op, "V");
  ::dsa::detail::require_ptr(logits, op, "logits");
  ::dsa::detail::require_ptr(targets, op, "targets");
  ::dsa::detail::require_ptr(out, op, out_name);
}

int row_blocks(int64_t N) { return static_cast<int>(std::min<int64_t>(N, kMaxGridBlocks)); }
int row_threads(int C) {
  return static_cast<int>(std::min<int64_t>(kRowThreads, (static_cast<int64_t>(C) + detail::kWarpSize - 1) /
                                                             detail::kWarpSize * detail::kWarpSize));
}

}  // namespace

void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
          int64_t ldb, float beta, float* C, int64_t ldc, cudaStream_t stream) {
  gemm_impl(ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc, stream, "gemm");
}

void gemm_bf16(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const uint16_t* A, int64_t lda, const uint16_t* B,
               int64_t ldb, float beta, float* C, int64_t ldc, cudaStream_t stream) {
  gemm_impl(ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc, stream, "gemm_bf16", CUDA_R_16BF);
}

void linear_forward(const float* x, const float* w, float* y, int64_t N, int I, int O, cudaStream_t stream) {
  constexpr const char* op = "linear_forward";
  ::dsa::detail::require_non_negative(N, op, "N");
  ::dsa::detail::require_positive(I, op, "I");
  ::dsa::detail::require_positive(O, op, "O");
  ::dsa::detail::require_ptr(x, op, "x");
  ::dsa::detail::require_ptr(w, op, "w");
  ::dsa::detail::require_ptr(y, op, "y");
  if (N == 0) return;
  gemm_impl(false, true, N, O, I, x, I, w, I, 0.0f, y, O, stream, op);   // y[N,O] = x[N,I]·W[O,I]ᵀ
}

void linear_backward(const float* x, const float* w, const float* dy, float* dx, float* dw, int64_t N, int I,
                     int O, bool accumulate_dx, cudaStream_t stream) {
  constexpr const char* op = "linear_backward";
  ::dsa::detail::require_non_negative(N, op, "N");
  ::dsa::detail::require_positive(I, op, "I");
  ::dsa::detail::require_positive(O, op, "O");
  ::dsa::detail::require_ptr(dy, op, "dy");
  if (dx != nullptr) ::dsa::detail::require_ptr(w, op, "w");
  if (dw != nullptr) ::dsa::detail::require_ptr(x, op, "x");
  if (N == 0) return;
  if (dx != nullptr)   // dx = dy·W  [N,O]·[O,I]
    gemm_impl(false, false, N, I, O, dy, O, w, I, accumulate_dx ? 1.0f : 0.0f, dx, I, stream, op);
  if (dw != nullptr)   // dW += dyᵀ·x  [O,N]·[N,I]
    gemm_impl(true, false, O, I, N, dy, O, x, I, 1.0f, dw, I, stream, op);
}

void swiglu_forward(const float* g, const float* u, float* a, int64_t N, cudaStream_t stream) {
  constexpr const char* op = "swiglu_forward";
  ::dsa::detail::require_non_negative(N, op, "N");
  ::dsa::detail::require_ptr(g, op, "g");
  ::dsa::detail::require_ptr(u, op, "u");
  ::dsa::detail::require_ptr(a, op, "a");
  if (N == 0) return;
  swiglu_forward_kernel<<<element_blocks(N), kElementThreads, 0, stream>>>(g, u, a, N);
  DSA_CUDA_LAUNCH_CHECK(op);
}

void swiglu_backward(const float* g, const float* u, const float* da, float* dg, float* du, int64_t N,
                     cudaStream_t stream) {
  constexpr const char* op = "swiglu_backward";
  ::dsa::detail::require_non_negative(N, op, "N");
  ::dsa::detail::require_ptr(g, op, "g");
  ::dsa::detail::require_ptr(u, op, "u");
  ::dsa::detail::require_ptr(da, op, "da");
  ::dsa::detail::require_ptr(dg, op, "dg");
  ::dsa::detail::require_ptr(du, op, "du");
  if (N == 0) return;
  swiglu_backward_kernel<<<element_blocks(N), kElementThreads, 0, stream>>>(g, u, da, dg, du, N);
  DSA_CUDA_LAUNCH_CHECK(op);
}

void embedding_forward(const int32_t* tokens, const float* table, float* out, int64_t N, int V, int C,
                       cudaStream_t stream) {
  constexpr const char* op = "embedding_forward";
  require_embedding_args(tokens, table, out, N, V, C, op, "table", "out");
  if (N == 0) return;
  embedding_forward_kernel<<<row_blocks(N), row_threads(C), 0, stream>>>(tokens, table, out, N, V, C);
  DSA_CUDA_LAUNCH_CHECK(op);
}

size_t embedding_backward_workspace_bytes(int64_t N, int V) {
  constexpr const char* op = "embedding_backward";
  ::dsa::detail::require_non_negative(N, op, "N");
  ::dsa::detail::require_positive(V, op, "V");
  DSA_REQUIRE(N <= INT_MAX, op, "N = ", N, " exceeds the int32 row index range");
  if (N == 0) return 0;
  return carve_embedding(nullptr, N, V, op).total;
}

void embedding_backward(const int32_t* tokens, const float* dout, float* dtable, int64_t N, int V, int C,
                        void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  constexpr const char* op = "embedding_backward";
  require_embedding_args(tokens, dout, dtable, N, V, C, op, "dout", "dtable");
  if (N == 0) return;
  const size_t need = embedding_backward_workspace_bytes(N, V);
  DSA_REQUIRE(workspace != nullptr && workspace_bytes >= need, op, "workspace_bytes = ", workspace_bytes,
              " (workspace ", workspace ? "set" : "null", ") is smaller than the ", need,
              " B embedding_backward_workspace_bytes asks for");
  const EmbeddingWorkspace w = carve_embedding(workspace, N, V, op);
  embedding_sort_fill_kernel<<<element_blocks(N), kElementThreads, 0, stream>>>(tokens, N, V, w.keys_in, w.rows_in);
  DSA_CUDA_LAUNCH_CHECK(op);
  size_t temp = w.sort_temp_bytes;
  DSA_CUDA_CALL(op, cub::DeviceRadixSort::SortPairs(w.sort_temp, temp, w.keys_in, w.keys_out, w.rows_in, w.rows_out,
                                                    static_cast<int>(N), 0, detail::sort_key_bits(V), stream));
  const int threads = row_threads(C);
  const int64_t tile_cols = static_cast<int64_t>(threads) * kEmbedColsPerThread;
  const int tiles = static_cast<int>((C + tile_cols - 1) / tile_cols);
  const dim3 grid(row_blocks(N), std::min(tiles, kMaxGridY));
  embedding_runs_kernel<<<grid, threads, 0, stream>>>(w.keys_out, w.rows_out, dout, dtable, N, V, C, tiles);
  DSA_CUDA_LAUNCH_CHECK(op);
}

void cross_entropy_forward(const float* logits, const int32_t* targets, float* loss, int64_t N, int V,
                           cudaStream_t stream) {
  constexpr const char* op = "cross_entropy_forward";
  require_cross_entropy_args(logits, targets, loss, N, V, op, "loss");
  if (N == 0) return;
  cross_entropy_forward_kernel<<<row_blocks(N), kVocabThreads, 0, stream>>>(logits, targets, loss, N, V);
  DSA_CUDA_LAUNCH_CHECK(op);
}

void cross_entropy_backward(const float* logits, const int32_t* targets, float dloss, float* dlogits, int64_t N,
                            int V, cudaStream_t stream) {
  constexpr const char* op = "cross_entropy_backward";
  require_cross_entropy_args(logits, targets, dlogits, N, V, op, "dlogits");
  if (N == 0) return;
  cross_entropy_backward_kernel<<<row_blocks(N), kVocabThreads, 0, stream>>>(logits, targets, dloss, dlogits, N, V);
  DSA_CUDA_LAUNCH_CHECK(op);
}

}  // namespace dsa::cuda
