// rotations.cu — op family 2 on the GPU: the orthonormal Hadamard transform and RoPE fwd/bwd.
//
// Contract: ops.h §2. Both follow the CPU's arithmetic: fp64 butterflies / fp64 rotations, one
// rounding to fp32 on store, so the result equals the CPU's to the last bit wherever the device's
// fp64 cos/sin round like the host's (a 1-ulp fp64 difference almost never survives the fp32
// rounding). Exception: Hadamard rows with D > kSmemHadamardMaxDim run stage by stage through
// global memory in fp32 (not bit-exact; error ≈ log2(D)·2^-24 relative).
//
// Kernels:
//   hadamard_smem_kernel     one block per row; the row lives in shared memory as doubles
//   hadamard_stage_kernel    one butterfly stage over global memory (large D)
//   hadamard_scale_kernel    the final 1/√D for the staged path
//   rope_kernel              one thread per (t, pair i); loops over heads (the angle is shared)
// Shared-memory plan (hadamard_smem_kernel): D doubles ≤ kSmemHadamardMaxDim · 8 bytes.
#include "cuda/common.cuh"
#include "dsa/cuda_ops.h"

namespace dsa::cuda {
namespace {

constexpr int kMaxHadamardDim = 32768;
constexpr int kSmemHadamardMaxDim = 4096;    // 32 KB of doubles: under the 48 KB default limit
static_assert(kSmemHadamardMaxDim * sizeof(double) <= 48 * 1024, "Hadamard row fits default smem");
constexpr int kHadamardThreads = 256;
constexpr int kRopeThreads = 256;

__global__ void hadamard_smem_kernel(float* __restrict__ x, int D, double norm) {
  extern __shared__ double row[];
  float* xr = x + int64_t(blockIdx.x) * D;
  for (int i = threadIdx.x; i < D; i += blockDim.x) row[i] = xr[i];
  __syncthreads();
  // Stage len: pair (j, j + len) with j's bit `len` clear; D/2 butterflies per stage.
  for (int len = 1; len < D; len *= 2) {
    for (int p = threadIdx.x; p < D / 2; p += blockDim.x) {
      const int j = (p / len) * 2 * len + (p % len);
      const double a = row[j], b = row[j + len];
      row[j] = a + b;
      row[j + len] = a - b;
    }
    __syncthreads();
  }
  for (int i = threadIdx.x; i < D; i += blockDim.x) xr[i] = static_cast<float>(row[i] * norm);
}

__global__ void hadamard_stage_kernel(float* __restrict__ x, int64_t N, int D, int len) {
  const int64_t p = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int half = D / 2;
  if (p >= N * half) return;
  const int64_t n = p / half;
  const int q = static_cast<int>(p % half);
  float* xr = x + n * D;
  const int j = (q / len) * 2 * len + (q % len);
  const float a = xr[j], b = xr[j + len];
  xr[j] = a + b;
  xr[j + len] = a - b;
}

__global__ void hadamard_scale_kernel(float* __restrict__ x, int64_t total, float norm) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < total) x[i] *= norm;
}

__global__ void rope_kernel(RopeParams p, double sign) {
  const int half = p.R / 2;
  const int64_t g = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (g >= int64_t(p.T) * half) return;
  const int t = static_cast<int>(g / half);
  const int i = static_cast<int>(g % half);
  const double angle = sign * static_cast<double>(p.pos[t]) * static_cast<double>(p.inv_freq[i]);
  double s, c;
  sincos(angle, &s, &c);
  const int f = p.layout == RopeLayout::kInterleaved ? p.offset + 2 * i : p.offset + i;
  const int sd = p.layout == RopeLayout::kInterleaved ? p.offset + 2 * i + 1 : p.offset + i + half;
  for (int h = 0; h < p.H; ++h) {
    float* v = p.x + (int64_t(t) * p.H + h) * p.D;
    const double a = v[f], b = v[sd];
    // Explicit roundings: no fma contraction, exactly the CPU's two products and one sum.
    v[f] = static_cast<float>(__dsub_rn(__dmul_rn(a, c), __dmul_rn(b, s)));
    v[sd] = static_cast<float>(__dadd_rn(__dmul_rn(a, s), __dmul_rn(b, c)));
  }
}

void check_rope(const RopeParams& p, const char* op) {
  ::dsa::detail::require_non_negative(p.T, op, "T");
  ::dsa::detail::require_non_negative(p.H, op, "H");
  ::dsa::detail::require_positive(p.D, op, "D");
  ::dsa::detail::require_positive(p.R, op, "R");
  if (p.R % 2 != 0) ::dsa::detail::fail(op, "R = ", p.R, " must be even");
  ::dsa::detail::require_non_negative(p.offset, op, "offset");
  if (p.offset + p.R > p.D) ::dsa::detail::fail(op, "offset + R = ", p.offset + p.R, " exceeds D = ", p.D);
  ::dsa::detail::require_ptr(p.pos, op, "pos");
  ::dsa::detail::require_ptr(p.inv_freq, op, "inv_freq");
  ::dsa::detail::require_ptr(p.x, op, "x");
  // pos[t] ≥ 0 is a data check the device cannot make without a sync (cuda_ops.h contract).
}

void rope_launch(const RopeParams& p, double sign, const char* op, cudaStream_t stream) {
  check_rope(p, op);
  const int64_t threads = int64_t(p.T) * (p.R / 2);
  if (threads == 0 || p.H == 0) return;
  rope_kernel<<<detail::ceil_div(threads, kRopeThreads), kRopeThreads, 0, stream>>>(p, sign);
  DSA_CUDA_LAUNCH_CHECK(op);
}

}  // namespace

void hadamard_transform(float* x, int64_t N, int D, cudaStream_t stream) {
  constexpr const char* op = "hadamard_transform";
  ::dsa::detail::require_ptr(x, op, "x");
  ::dsa::detail::require_non_negative(N, op, "N");
  if (!::dsa::detail::is_power_of_two(D) || D > kMaxHadamardDim)
    ::dsa::detail::fail(op, "D = ", D, " must be a power of two in [1, ", kMaxHadamardDim, "]");
  if (N == 0) return;
  const double norm = 1.0 / std::sqrt(static_cast<double>(D));
  if (D <= kSmemHadamardMaxDim) {
    hadamard_smem_kernel<<<static_cast<unsigned>(N), kHadamardThreads, D * sizeof(double), stream>>>(x, D, norm);
    DSA_CUDA_LAUNCH_CHECK(op);
    return;
  }
  const int64_t pairs = N * (D / 2);
  for (int len = 1; len < D; len *= 2) {
    hadamard_stage_kernel<<<detail::ceil_div(pairs, kHadamardThreads), kHadamardThreads, 0, stream>>>(x, N, D, len);
    DSA_CUDA_LAUNCH_CHECK(op);
  }
  hadamard_scale_kernel<<<detail::ceil_div(N * D, kHadamardThreads), kHadamardThreads, 0, stream>>>(
      x, N * D, static_cast<float>(norm));
  DSA_CUDA_LAUNCH_CHECK(op);
}

void rope_forward(const RopeParams& p, cudaStream_t stream) { rope_launch(p, +1.0, "rope_forward", stream); }

// Inverts rope_forward's rotation: the transpose, angle → −angle (ops.h §2).
void rope_backward(const RopeParams& p, cudaStream_t stream) { rope_launch(p, -1.0, "rope_backward", stream); }

}  // namespace dsa::cuda
