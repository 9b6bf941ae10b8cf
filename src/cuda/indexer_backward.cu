// indexer_backward.cu — op 10 on the GPU: the gradient of I = Σ_h w·ReLU(q·k) (fp32 path).
//
// Contract (ops.h §10): with u[t,h,s] = q[t,h]·k[s] and g = dI[t,s]·w[t,h]·1[u > 0],
//   dw[t,h] = Σ_s dI[t,s]·ReLU(u)     dq[t,h] = Σ_s g·k[s]     dk[s] = Σ_{t,h} g·q[t,h]
// over the dense ranges (K = 0, dI [T,S]) or the valid slots of indices (dI [T,K]; −1 and indices
// outside [0, S) are ignored on the device). Gradients are written, not accumulated.
// Deterministic by construction: no float atomics. Every sum has one owner thread that adds its
// terms in a fixed order (entries in key/slot order, heads 0..HI−1); dot products u use a fixed
// lane split and a butterfly warp sum. Precision as the CPU: u, g and every gradient sum in fp64
// (products of fp32 inputs are exact in fp64), one rounding to fp32 on store — so the result is
// within reordering error (≪ fp32 ulp) of the CPU's and of the fp64 reference.
//
// Kernels:
//   dq_dw_kernel   one block per query row t: walks its entries in order; per entry the key row goes
//                  to shared memory, one warp per head computes u, then every thread updates the
//                  (h, d) accumulators it owns. smem: fp64 dq_acc[HI·DI] + dw_acc[HI] + u[HI], fp32 k row.
//   dk_kernel      one block per key s: gathers the (t, slot) pairs that touch s — dense: scan every
//                  t for s ∈ [ks, ke); sparse: a stable radix sort of (s, t·K + j) pairs (CUB, in the
//                  workspace) lists them in (t, j) order — and accumulates g·q per owned d.
//                  smem: fp64 u[HI] + g[HI] + dk_acc[DI], fp32 k row[DI].
#include <cub/device/device_radix_sort.cuh>

#include "cuda/indexer_common.cuh"

namespace dsa::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / detail::kWarpSize;
constexpr int kFillThreads = 256;

// u[h] = q[t,h]·krow for every head in fp64, one warp per head (lanes over d, then a butterfly sum).
__device__ void head_dots(const float* __restrict__ q_row, const float* krow, int HI, int DI, double* u) {
  const int warp = threadIdx.x / detail::kWarpSize, lane = threadIdx.x % detail::kWarpSize;
  for (int h = warp; h < HI; h += kWarps) {
    double part = 0.0;
    for (int d = lane; d < DI; d += detail::kWarpSize)
      part = fma(static_cast<double>(__ldg(q_row + int64_t(h) * DI + d)), static_cast<double>(krow[d]), part);
    for (int o = detail::kWarpSize / 2; o > 0; o /= 2) part += __shfl_xor_sync(detail::kFullMask, part, o);
    if (lane == 0) u[h] = part;
  }
}

__device__ bool entry(const IndexerBackwardParams& p, int t, int e, int lo, int& s, float& dI) {
  if (p.K > 0) {
    s = p.indices[int64_t(t) * p.K + e];
    dI = p.d_logits[int64_t(t) * p.K + e];
    return s >= 0 && s < p.fwd.S;
  }
  s = lo + e;
  dI = p.d_logits[int64_t(t) * p.fwd.S + s];
  return true;
}

__global__ void __launch_bounds__(kThreads) dq_dw_kernel(IndexerBackwardParams p) {
  extern __shared__ double smd[];
  const int HI = p.fwd.HI, DI = p.fwd.DI;
  double* dq_acc = smd;
  double* dw_acc = dq_acc + HI * DI;
  double* u = dw_acc + HI;
  float* krow = reinterpret_cast<float*>(u + HI);
  const int t = blockIdx.x;
  const float* q = static_cast<const float*>(p.fwd.q);
  const float* k = static_cast<const float*>(p.fwd.k);
  const float* q_row = q + int64_t(t) * HI * DI;
  const float* w_row = p.fwd.w + int64_t(t) * HI;
  for (int i = threadIdx.x; i < HI * DI; i += kThreads) dq_acc[i] = 0.0;
  for (int h = threadIdx.x; h < HI; h += kThreads) dw_acc[h] = 0.0;
  int lo = 0, hi = 0;
  if (p.K == 0) detail::clamp_range(p.fwd.ks[t], p.fwd.ke[t], p.fwd.S, lo, hi);
  const int n = p.K > 0 ? p.K : hi - lo;
  __syncthreads();
  for (int e = 0; e < n; ++e) {
    int s;
    float dI;
    if (!entry(p, t, e, lo, s, dI)) continue;  // block-uniform
    for (int d = threadIdx.x; d < DI; d += kThreads) krow[d] = __ldg(k + int64_t(s) * DI + d);
    __syncthreads();
    head_dots(q_row, krow, HI, DI, u);
    __syncthreads();
    // g = dI·w·1[u > 0];  dq[t,h,:] += g·k[s];  dw[t,h] += dI·ReLU(u)
    for (int i = threadIdx.x; i < HI * DI; i += kThreads) {
      const int h = i / DI;
      const double g = u[h] > 0.0 ? static_cast<double>(dI) * __ldg(w_row + h) : 0.0;
      dq_acc[i] = fma(g, static_cast<double>(krow[i % DI]), dq_acc[i]);
    }
    for (int h = threadIdx.x; h < HI; h += kThreads)
      dw_acc[h] = fma(static_cast<double>(dI), u[h] > 0.0 ? u[h] : 0.0, dw_acc[h]);
    __syncthreads();
  }
  for (int i = threadIdx.x; i < HI * DI; i += kThreads) p.dq[int64_t(t) * HI * DI + i] = static_cast<float>(dq_acc[i]);
  for (int h = threadIdx.x; h < HI; h += kThreads) p.dw[int64_t(t) * HI + h] = static_cast<float>(dw_acc[h]);
}

__device__ int lower_bound(const int32_t* a, int n, int32_t v) {
  int lo = 0, hi = n;
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    if (a[mid] < v) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

__global__ void __launch_bounds__(kThreads) dk_kernel(IndexerBackwardParams p, const int32_t* __restrict__ keys,
                                                     const int32_t* __restrict__ vals, int n_pairs) {
  extern __shared__ double smd[];
  const int HI = p.fwd.HI, DI = p.fwd.DI;
  double* u = smd;
  double* g = u + HI;
  double* dk_acc = g + HI;
  float* krow = reinterpret_cast<float*>(dk_acc + DI);
  const int s = blockIdx.x;
  const float* q = static_cast<const float*>(p.fwd.q);
  const float* k = static_cast<const float*>(p.fwd.k);
  for (int d = threadIdx.x; d < DI; d += kThreads) {
    krow[d] = __ldg(k + int64_t(s) * DI + d);
    dk_acc[d] = 0.0;
  }
  __syncthreads();
  // One (t, dI) contribution: dk[s,:] += Σ_h g[t,h]·q[t,h,:], heads in order.
  auto add = [&](int t, float dI) {
    const float* q_row = q + int64_t(t) * HI * DI;
    head_dots(q_row, krow, HI, DI, u);
    __syncthreads();
    for (int h = threadIdx.x; h < HI; h += kThreads)
      g[h] = u[h] > 0.0 ? static_cast<double>(dI) * __ldg(p.fwd.w + int64_t(t) * HI + h) : 0.0;
    __syncthreads();
    for (int d = threadIdx.x; d < DI; d += kThreads) {
      double acc = dk_acc[d];
      for (int h = 0; h < HI; ++h) acc = fma(g[h], static_cast<double>(__ldg(q_row + int64_t(h) * DI + d)), acc);
      dk_acc[d] = acc;
    }
    __syncthreads();
  };
  if (p.K == 0) {
    for (int t = 0; t < p.fwd.T; ++t) {
      int lo, hi;
      detail::clamp_range(p.fwd.ks[t], p.fwd.ke[t], p.fwd.S, lo, hi);
      if (s >= lo && s < hi) add(t, p.d_logits[int64_t(t) * p.fwd.S + s]);
    }
  } else {
    const int a = lower_bound(keys, n_pairs, s), b = lower_bound(keys, n_pairs, s + 1);
    for (int e = a; e < b; ++e) {
      const int32_t v = vals[e];
      add(v / p.K, p.d_logits[v]);
    }
  }
  for (int d = threadIdx.x; d < DI; d += kThreads) p.dk[int64_t(s) * DI + d] = static_cast<float>(dk_acc[d]);
}

// Sparse pairs: key = selected index (S for invalid slots: sorted past every key), value = t·K + j.
__global__ void fill_pairs_kernel(const int32_t* __restrict__ indices, int64_t n, int S, int32_t* keys,
                                  int32_t* vals) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const int32_t s = indices[i];
  keys[i] = (s >= 0 && s < S) ? s : S;
  vals[i] = static_cast<int32_t>(i);
}

size_t cub_temp_bytes(int n, int S) {
  size_t bytes = 0;
  cub::DeviceRadixSort::SortPairs(nullptr, bytes, static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr),
                                  static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr), n, 0,
                                  detail::sort_key_bits(S));
  return bytes;
}

void validate(const IndexerBackwardParams& p, const char* op) {
  detail::validate_indexer_host(p.fwd, op);
  if (p.fwd.precision != Precision::kFp32) ::dsa::detail::fail(op, "precision must be kFp32");
  ::dsa::detail::require_non_negative(p.K, op, "K");
  if (p.K > 0) ::dsa::detail::require_ptr(p.indices, op, "indices");
  ::dsa::detail::require_ptr(p.d_logits, op, "d_logits");
  ::dsa::detail::require_ptr(p.dq, op, "dq");
  ::dsa::detail::require_ptr(p.dk, op, "dk");
  ::dsa::detail::require_ptr(p.dw, op, "dw");
}

}  // namespace

size_t indexer_backward_workspace_bytes(const IndexerBackwardParams& p) {
  if (p.K <= 0 || p.fwd.T <= 0) return 0;
  const int n = p.fwd.T * p.K;
  return 4 * detail::align_up(size_t(n) * sizeof(int32_t)) + detail::align_up(cub_temp_bytes(n, p.fwd.S));
}

void indexer_backward(const IndexerBackwardParams& p, void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  constexpr const char* op = "indexer_backward";
  validate(p, op);
  const size_t need = indexer_backward_workspace_bytes(p);
  if (need > 0 && (workspace == nullptr || workspace_bytes < need))
    ::dsa::detail::fail(op, "workspace_bytes = ", workspace_bytes, " is less than the ", need, " required");
  const int HI = p.fwd.HI, DI = p.fwd.DI;
  const size_t dq_smem = (size_t(HI) * DI + 2 * HI) * sizeof(double) + size_t(DI) * sizeof(float);
  const size_t dk_smem = (size_t(DI) + 2 * HI) * sizeof(double) + size_t(DI) * sizeof(float);
  if (dq_smem > static_cast<size_t>(detail::max_dynamic_smem_bytes()))
    ::dsa::detail::fail(op, "HI·DI = ", HI * DI, " is too large for the v1 kernel's shared-memory accumulator");
  if (p.fwd.T > 0) {
    DSA_CUDA_CALL(op, cudaFuncSetAttribute(dq_dw_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(dq_smem)));
    dq_dw_kernel<<<p.fwd.T, kThreads, dq_smem, stream>>>(p);
    DSA_CUDA_LAUNCH_CHECK(op);
  }
  if (p.fwd.S == 0) return;
  const int32_t* keys = nullptr;
  const int32_t* vals = nullptr;
  int n = 0;
  if (p.K > 0 && p.fwd.T > 0) {
    n = p.fwd.T * p.K;
    auto* base = static_cast<unsigned char*>(workspace);
    const size_t arr = detail::align_up(size_t(n) * sizeof(int32_t));
    auto* keys_in = reinterpret_cast<int32_t*>(base);
    auto* vals_in = reinterpret_cast<int32_t*>(base + arr);
    auto* keys_out = reinterpret_cast<int32_t*>(base + 2 * arr);
    auto* vals_out = reinterpret_cast<int32_t*>(base + 3 * arr);
    size_t temp = cub_temp_bytes(n, p.fwd.S);
    fill_pairs_kernel<<<detail::ceil_div(n, kFillThreads), kFillThreads, 0, stream>>>(p.indices, n, p.fwd.S, keys_in,
                                                                                     vals_in);
    DSA_CUDA_LAUNCH_CHECK(op);
    DSA_CUDA_CALL(op, cub::DeviceRadixSort::SortPairs(base + 4 * arr, temp, keys_in, keys_out, vals_in, vals_out, n,
                                                      0, detail::sort_key_bits(p.fwd.S), stream));
    keys = keys_out;
    vals = vals_out;
  }
  dk_kernel<<<p.fwd.S, kThreads, dk_smem, stream>>>(p, keys, vals, n);
  DSA_CUDA_LAUNCH_CHECK(op);
}

}  // namespace dsa::cuda
