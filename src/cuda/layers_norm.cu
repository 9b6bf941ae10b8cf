// layers_norm.cu — ops.h §12 on the GPU, the normalisations: rmsnorm and layernorm, forward and
// backward (cuda_ops.h block 12; the rest of §12 is in layers.cu).
//
// Same arithmetic as src/cpu/layers.cpp, expression by expression (fp64 row sums, the same casts),
// so only the summation order differs from the CPU:
//   row sums (over C)      one block per row; per-thread fp64 partials, a fixed warp butterfly, then
//                          warp 0 sums the per-warp partials — fixed order for a given C.
//   column sums (over N)   dw/db: a block owns a tile of columns (width fixed by C) and G row
//                          groups; group g sums rows g, g + G, … in order (fp64), then thread row 0
//                          adds the groups in order 0..G−1 and accumulates into dw/db once.
// No float atomics, no workspace: bitwise identical over reruns for fixed shapes.
#include <algorithm>

#include "cuda/common.cuh"
#include "dsa/cuda_ops.h"

namespace dsa::cuda {
namespace {

constexpr int kRowThreads = 256;              // one block per row; fewer for narrow rows
constexpr int kMaxWarps = kRowThreads / detail::kWarpSize;
constexpr int kMaxRowBlocks = 65535 * 8;      // row loops stride over the rest
// Column reductions: a block of kColSumThreads owns a tile of 32, 16 or 8 columns (narrower tiles for
// narrow rows, so that enough blocks run; 8 floats = one 32-byte sector still reads whole sectors)
// and splits the rows into kColSumThreads / tile groups.
constexpr int kColSumThreads = 512;
constexpr int kColSumUnroll = 4;
constexpr int kWideTileMinCols = 4096;        // ≥ 128 blocks of 32 columns
constexpr int kMidTileMinCols = 2048;         // ≥ 128 blocks of 16 columns

__device__ inline double warp_sum_f64(double v) {
  for (int o = detail::kWarpSize / 2; o > 0; o /= 2) v += __shfl_xor_sync(detail::kFullMask, v, o);
  return v;
}

// Sums v[k] over the block (every thread gets the totals). Fixed order: butterfly per warp, then the
// warps in index order. smem holds kValues·kMaxWarps doubles; ends with a barrier (smem reusable).
template <int kValues>
__device__ void block_sum(double (&v)[kValues], double* smem) {
  const int lane = threadIdx.x % detail::kWarpSize, warp = threadIdx.x / detail::kWarpSize;
  const int warps = blockDim.x / detail::kWarpSize;
  for (int k = 0; k < kValues; ++k) {
    v[k] = warp_sum_f64(v[k]);
    if (lane == 0) smem[k * kMaxWarps + warp] = v[k];
  }
  __syncthreads();
  if (threadIdx.x < kValues) {
    double s = 0.0;
    for (int w = 0; w < warps; ++w) s += smem[threadIdx.x * kMaxWarps + w];
    smem[threadIdx.x * kMaxWarps] = s;
  }
  __syncthreads();
  for (int k = 0; k < kValues; ++k) v[k] = smem[k * kMaxWarps];
  __syncthreads();
}

__global__ void rmsnorm_forward_kernel(const float* __restrict__ x, const float* __restrict__ w, float* __restrict__ y,
                                       float* __restrict__ rstd, int64_t N, int C, float eps) {
  __shared__ double red[kMaxWarps];
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    const float* xr = x + n * C;
    double ss[1] = {0.0};
    for (int c = threadIdx.x; c < C; c += blockDim.x) ss[0] += static_cast<double>(xr[c]) * xr[c];
    block_sum(ss, red);
    const float r = static_cast<float>(1.0 / sqrt(ss[0] / C + eps));
    if (rstd != nullptr && threadIdx.x == 0) rstd[n] = r;
    float* yr = y + n * C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) yr[c] = xr[c] * r * w[c];
  }
}

// dx = r·(dy∘w) − x·r³·mean(x∘dy∘w)
__global__ void rmsnorm_backward_dx_kernel(const float* __restrict__ x, const float* __restrict__ w,
                                           const float* __restrict__ rstd, const float* __restrict__ dy,
                                           float* __restrict__ dx, int64_t N, int C) {
  __shared__ double red[kMaxWarps];
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    const float* xr = x + n * C;
    const float* dyr = dy + n * C;
    const double r = rstd[n];
    double dot[1] = {0.0};
    for (int c = threadIdx.x; c < C; c += blockDim.x) dot[0] += static_cast<double>(dyr[c]) * w[c] * xr[c];
    block_sum(dot, red);
    const double k = r * r * r * dot[0] / C;
    float* dxr = dx + n * C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) dxr[c] = static_cast<float>(r * dyr[c] * w[c] - k * xr[c]);
  }
}

__global__ void layernorm_forward_kernel(const float* __restrict__ x, const float* __restrict__ w,
                                         const float* __restrict__ b, float* __restrict__ y, float* __restrict__ mean,
                                         float* __restrict__ rstd, int64_t N, int C, float eps) {
  __shared__ double red[kMaxWarps];
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    const float* xr = x + n * C;
    double s[1] = {0.0};
    for (int c = threadIdx.x; c < C; c += blockDim.x) s[0] += xr[c];
    block_sum(s, red);
    const double mu = s[0] / C;
    double v[1] = {0.0};   // two-pass variance, as the CPU (the row is re-read from L1/L2)
    for (int c = threadIdx.x; c < C; c += blockDim.x) v[0] += (xr[c] - mu) * (xr[c] - mu);
    block_sum(v, red);
    const double r = 1.0 / sqrt(v[0] / C + eps);
    if (threadIdx.x == 0) {
      if (mean != nullptr) mean[n] = static_cast<float>(mu);
      if (rstd != nullptr) rstd[n] = static_cast<float>(r);
    }
    float* yr = y + n * C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) yr[c] = static_cast<float>((xr[c] - mu) * r) * w[c] + b[c];
  }
}

// g = dy∘w;  dx = r·(g − mean(g) − x̂·mean(g∘x̂))
__global__ void layernorm_backward_dx_kernel(const float* __restrict__ x, const float* __restrict__ w,
                                             const float* __restrict__ mean, const float* __restrict__ rstd,
                                             const float* __restrict__ dy, float* __restrict__ dx, int64_t N, int C) {
  __shared__ double red[2 * kMaxWarps];
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    const float* xr = x + n * C;
    const float* dyr = dy + n * C;
    const double mu = mean[n], r = rstd[n];
    double sums[2] = {0.0, 0.0};   // Σ g, Σ g·x̂
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
      const double g = static_cast<double>(dyr[c]) * w[c];
      sums[0] += g;
      sums[1] += g * (xr[c] - mu) * r;
    }
    block_sum(sums, red);
    const double sg = sums[0] / C, sgx = sums[1] / C;
    float* dxr = dx + n * C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
      const double xh = (xr[c] - mu) * r;
      dxr[c] = static_cast<float>(r * (static_cast<double>(dyr[c]) * w[c] - sg - xh * sgx));
    }
  }
}

// Column sums over the N rows, accumulated into dw (and db): rmsnorm dw += Σ dy·x·r; layernorm
// dw += Σ dy·(x − μ)·r, db += Σ dy. Block (kCols, kColSumThreads / kCols): see the file comment for
// the order. Each thread loads kColSumUnroll rows before adding them (in row order): the loop is
// latency-bound otherwise.
template <bool kLayerNorm, int kCols>
__global__ void __launch_bounds__(kColSumThreads) norm_column_sums_kernel(
    const float* __restrict__ x, const float* __restrict__ dy, const float* __restrict__ mean,
    const float* __restrict__ rstd, float* __restrict__ dw, float* __restrict__ db, int64_t N, int C) {
  constexpr int kGroups = kColSumThreads / kCols;
  __shared__ double part_w[kGroups][kCols];
  __shared__ double part_b[kGroups][kCols];
  const int c = blockIdx.x * kCols + threadIdx.x;
  double aw = 0.0, ab = 0.0;
  if (c < C) {
    for (int64_t n0 = threadIdx.y; n0 < N; n0 += static_cast<int64_t>(kGroups) * kColSumUnroll) {
      float vd[kColSumUnroll], vx[kColSumUnroll], vm[kColSumUnroll], vr[kColSumUnroll];
#pragma unroll
      for (int u = 0; u < kColSumUnroll; ++u) {
        const int64_t n = n0 + static_cast<int64_t>(u) * kGroups;
        const bool in = n < N;
        vd[u] = in ? dy[n * C + c] : 0.0f;
        vx[u] = in ? x[n * C + c] : 0.0f;
        vr[u] = in ? rstd[n] : 0.0f;
        vm[u] = (kLayerNorm && in) ? mean[n] : 0.0f;
      }
#pragma unroll
      for (int u = 0; u < kColSumUnroll; ++u) {
        if (n0 + static_cast<int64_t>(u) * kGroups >= N) break;
        if constexpr (kLayerNorm) {
          const double d = vd[u];
          aw += d * (vx[u] - static_cast<double>(vm[u])) * vr[u];
          ab += d;
        } else {
          aw += static_cast<double>(vd[u]) * vx[u] * vr[u];
        }
      }
    }
  }
  part_w[threadIdx.y][threadIdx.x] = aw;
  part_b[threadIdx.y][threadIdx.x] = ab;
  __syncthreads();
  if (threadIdx.y != 0 || c >= C) return;
  double sw = 0.0, sb = 0.0;
  for (int g = 0; g < kGroups; ++g) {
    sw += part_w[g][threadIdx.x];
    sb += part_b[g][threadIdx.x];
  }
  if (dw != nullptr) dw[c] += static_cast<float>(sw);
  if constexpr (kLayerNorm) {
    if (db != nullptr) db[c] += static_cast<float>(sb);
  }
}

void require_rows(int64_t N, int C, const char* op) {
  ::dsa::detail::require_non_negative(N, op, "N");
  ::dsa::detail::require_positive(C, op, "C");
}

// Threads of a one-block-per-row kernel: whole warps, at most kRowThreads, no more than C needs.
int row_threads(int C) {
  return static_cast<int>(std::min<int64_t>(kRowThreads, (static_cast<int64_t>(C) + detail::kWarpSize - 1) /
                                                             detail::kWarpSize * detail::kWarpSize));
}
int row_blocks(int64_t N) { return static_cast<int>(std::min<int64_t>(N, kMaxRowBlocks)); }

template <bool kLayerNorm, int kCols>
void launch_column_sums_tile(const float* x, const float* dy, const float* mean, const float* rstd, float* dw,
                             float* db, int64_t N, int C, cudaStream_t stream, const char* op) {
  const dim3 block(kCols, kColSumThreads / kCols);
  norm_column_sums_kernel<kLayerNorm, kCols><<<detail::ceil_div(C, kCols), block, 0, stream>>>(x, dy, mean, rstd, dw,
                                                                                               db, N, C);
  DSA_CUDA_LAUNCH_CHECK(op);
}
// The tile width depends on C only, so the summation order is fixed for a shape.
template <bool kLayerNorm>
void launch_column_sums(const float* x, const float* dy, const float* mean, const float* rstd, float* dw, float* db,
                        int64_t N, int C, cudaStream_t stream, const char* op) {
  constexpr int kWide = 32, kMid = 16, kNarrow = 8;
  if (C >= kWideTileMinCols) launch_column_sums_tile<kLayerNorm, kWide>(x, dy, mean, rstd, dw, db, N, C, stream, op);
  else if (C >= kMidTileMinCols) launch_column_sums_tile<kLayerNorm, kMid>(x, dy, mean, rstd, dw, db, N, C, stream, op);
  else launch_column_sums_tile<kLayerNorm, kNarrow>(x, dy, mean, rstd, dw, db, N, C, stream, op);
}

}  // namespace

void rmsnorm_forward(const float* x, const float* w, float* y, float* rstd, int64_t N, int C, float eps,
                     cudaStream_t stream) {
  constexpr const char* op = "rmsnorm_forward";
  require_rows(N, C, op);
  ::dsa::detail::require_ptr(x, op, "x");
  ::dsa::detail::require_ptr(w, op, "w");
  ::dsa::detail::require_ptr(y, op, "y");
  DSA_REQUIRE(eps > 0.0f, op, "eps = ", eps, " must be > 0");
  if (N == 0) return;
  rmsnorm_forward_kernel<<<row_blocks(N), row_threads(C), 0, stream>>>(x, w, y, rstd, N, C, eps);
  DSA_CUDA_LAUNCH_CHECK(op);
}

void rmsnorm_backward(const float* x, const float* w, const float* rstd, const float* dy, float* dx, float* dw,
                      int64_t N, int C, cudaStream_t stream) {
  constexpr const char* op = "rmsnorm_backward";
  require_rows(N, C, op);
  ::dsa::detail::require_ptr(x, op, "x");
  ::dsa::detail::require_ptr(w, op, "w");
  ::dsa::detail::require_ptr(rstd, op, "rstd");
  ::dsa::detail::require_ptr(dy, op, "dy");
  ::dsa::detail::require_ptr(dx, op, "dx");
  if (N == 0) return;
  rmsnorm_backward_dx_kernel<<<row_blocks(N), row_threads(C), 0, stream>>>(x, w, rstd, dy, dx, N, C);
  DSA_CUDA_LAUNCH_CHECK(op);
  if (dw != nullptr) launch_column_sums<false>(x, dy, nullptr, rstd, dw, nullptr, N, C, stream, op);
}

void layernorm_forward(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd,
                       int64_t N, int C, float eps, cudaStream_t stream) {
  constexpr const char* op = "layernorm_forward";
  require_rows(N, C, op);
  ::dsa::detail::require_ptr(x, op, "x");
  ::dsa::detail::require_ptr(w, op, "w");
  ::dsa::detail::require_ptr(b, op, "b");
  ::dsa::detail::require_ptr(y, op, "y");
  DSA_REQUIRE(eps > 0.0f, op, "eps = ", eps, " must be > 0");
  if (N == 0) return;
  layernorm_forward_kernel<<<row_blocks(N), row_threads(C), 0, stream>>>(x, w, b, y, mean, rstd, N, C, eps);
  DSA_CUDA_LAUNCH_CHECK(op);
}

void layernorm_backward(const float* x, const float* w, const float* mean, const float* rstd, const float* dy,
                        float* dx, float* dw, float* db, int64_t N, int C, cudaStream_t stream) {
  constexpr const char* op = "layernorm_backward";
  require_rows(N, C, op);
  ::dsa::detail::require_ptr(x, op, "x");
  ::dsa::detail::require_ptr(w, op, "w");
  ::dsa::detail::require_ptr(mean, op, "mean");
  ::dsa::detail::require_ptr(rstd, op, "rstd");
  ::dsa::detail::require_ptr(dy, op, "dy");
  if (N == 0) return;
  if (dx != nullptr) {
    layernorm_backward_dx_kernel<<<row_blocks(N), row_threads(C), 0, stream>>>(x, w, mean, rstd, dy, dx, N, C);
    DSA_CUDA_LAUNCH_CHECK(op);
  }
  if (dw != nullptr || db != nullptr) launch_column_sums<true>(x, dy, mean, rstd, dw, db, N, C, stream, op);
}

}  // namespace dsa::cuda
