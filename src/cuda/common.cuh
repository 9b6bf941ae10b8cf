// common.cuh — device helpers shared by every CUDA kernel of dsa: launch/error checks, the fp8 e4m3
// and bf16 conversions (bit-identical to dsa::cpu::fp8_e4m3_from_float / bf16_from_float, written in
// integer/exact arithmetic so every arch and the host agree), the ordered top-k key, warp reductions.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "common/check.h"
#include "dsa/ops.h"

namespace dsa::cuda::detail {

// ── host-side error handling ─────────────────────────────────────────────────────────────────
// CUDA runtime failures are not argument errors: they surface as std::runtime_error naming the op.
inline void cuda_throw_if(cudaError_t e, const char* op, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(op) + ": " + what + ": " + cudaGetErrorString(e));
}
// After every launch: catches bad launch configurations without synchronising.
#define DSA_CUDA_LAUNCH_CHECK(op) ::dsa::cuda::detail::cuda_throw_if(cudaGetLastError(), op, "kernel launch")
#define DSA_CUDA_CALL(op, x) ::dsa::cuda::detail::cuda_throw_if((x), op, #x)

inline int ceil_div(long long a, long long b) { return static_cast<int>((a + b - 1) / b); }

// ── caller workspaces ────────────────────────────────────────────────────────────────────────
// Every array carved from a workspace starts on a 256-byte boundary (cuBLAS and cub want that much).
inline constexpr size_t kWorkspaceAlign = 256;
inline size_t align_up(size_t bytes) { return (bytes + kWorkspaceAlign - 1) / kWorkspaceAlign * kWorkspaceAlign; }
// Consecutive aligned arrays of a caller's workspace. With a null base it hands out nulls and only
// adds up the bytes, so a workspace-size query runs the same carving as the launch.
class WorkspaceCarver {
 public:
  explicit WorkspaceCarver(void* base) : base_(static_cast<char*>(base)) {}
  template <class T>
  T* take(size_t count) {
    char* p = base_ ? base_ + used_ : nullptr;
    used_ += align_up(count * sizeof(T));
    return reinterpret_cast<T*>(p);
  }
  size_t used() const { return used_; }

 private:
  char* base_;
  size_t used_ = 0;
};
// Bits a radix sort must look at when its keys lie in [0, S] (S marks "invalid" and sorts last).
inline int sort_key_bits(int S) {
  int b = 1;
  while ((1LL << b) <= S) ++b;
  return b;
}

// Maximum dynamic shared memory of the current device (opt-in limit), for kernels that size it.
inline int max_dynamic_smem_bytes() {
  int dev = 0, bytes = 0;
  cudaGetDevice(&dev);
  cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
  return bytes;
}

inline int device_sm_version() {
  int dev = 0, major = 0, minor = 0;
  cudaGetDevice(&dev);
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
  cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
  return major * 10 + minor;
}

// ── bit casts usable on host and device ──────────────────────────────────────────────────────
__host__ __device__ inline uint32_t float_bits(float x) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(x);
#else
  uint32_t u;
  __builtin_memcpy(&u, &x, sizeof(u));
  return u;
#endif
}
__host__ __device__ inline float bits_float(uint32_t u) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(u);
#else
  float x;
  __builtin_memcpy(&x, &u, sizeof(x));
  return x;
#endif
}

// 2^e for e in [-126, 127], exact (built from the exponent field, no libm).
__host__ __device__ inline float exp2_int(int e) { return bits_float(static_cast<uint32_t>(e + 127) << 23); }

// ── fp8 e4m3 "fn" (ops.h §1) ───────────────────────────────────────────────────────────────────
inline constexpr uint8_t kFp8NanCode = 0x7F;     // the e4m3fn NaN (0xFF with the sign bit)
inline constexpr uint8_t kFp8MaxCode = 0x7E;     // ±448
inline constexpr int kFp8ExpBias = 7;
inline constexpr int kFp8MantBits = 3;
inline constexpr int kFp8MinNormalExp = -6;      // 2^-6 = smallest normal
inline constexpr int kFp8SubnormalShift = 9;     // subnormals are multiples of 2^-9

// Round-to-nearest-even, saturating to ±448 (inf too), NaN → 0x7F with the sign kept. The
// hardware __nv_cvt_float_to_fp8(SATFINITE) differs on NaN sign, so the conversion is done here in
// exact arithmetic: every scaling is by a power of two and rintf rounds half to even.
__host__ __device__ inline uint8_t fp8_e4m3_encode(float x) {
  const uint32_t u = float_bits(x);
  const uint8_t sign = static_cast<uint8_t>((u >> 24) & 0x80u);
  const uint32_t abs_bits = u & 0x7FFFFFFFu;
  if (abs_bits > 0x7F800000u) return sign | kFp8NanCode;          // NaN
  const float a = bits_float(abs_bits);
  if (a >= kFp8E4m3Max) return sign | kFp8MaxCode;                  // saturate (inf included)
  if (a < exp2_int(kFp8MinNormalExp)) {
    // subnormal range: code = round(a · 2^9) ∈ [0, 8]; 8 is exactly the smallest normal's code.
    const float m = rintf(a * exp2_int(kFp8SubnormalShift));
    return sign | static_cast<uint8_t>(m);
  }
  int e = static_cast<int>((abs_bits >> 23) & 0xFFu) - 127;         // a is a normal fp32 here
  float m = rintf(a * exp2_int(kFp8MantBits - e));                  // ∈ [8, 16]
  if (m >= 16.0f) {
    m = 8.0f;
    ++e;
  }
  const uint32_t code = (static_cast<uint32_t>(e + kFp8ExpBias) << kFp8MantBits) | (static_cast<uint32_t>(m) - 8u);
  return sign | static_cast<uint8_t>(code);
}

__host__ __device__ inline float fp8_e4m3_decode(uint8_t c) {
  const uint32_t mag = c & 0x7Fu;
  const bool neg = (c & 0x80u) != 0;
  float v;
  if (mag == kFp8NanCode) {
    v = bits_float(0x7FC00000u);
  } else {
    const uint32_t ex = mag >> kFp8MantBits, man = mag & 7u;
    v = ex == 0 ? static_cast<float>(man) * exp2_int(-kFp8SubnormalShift)
                : static_cast<float>(8u + man) * exp2_int(static_cast<int>(ex) - kFp8ExpBias - kFp8MantBits);
  }
  return neg ? -v : v;
}

// ── bf16 ──────────────────────────────────────────────────────────────────────────────────────
inline constexpr uint32_t kBf16QuietBit = 0x0040u;
__host__ __device__ inline uint16_t bf16_encode(float x) {
  const uint32_t u = float_bits(x);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((u >> 16) | kBf16QuietBit);
  const uint32_t rounded = u + 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(rounded >> 16);
}
__host__ __device__ inline float bf16_decode(uint16_t b) { return bits_float(static_cast<uint32_t>(b) << 16); }

// ── FP8 block scale (ScaleFormat) ────────────────────────────────────────────────────────────
// kFloat: amax/448; kUe8m0: 2^ceil(log2(amax/448)), computed exactly from the exponent field.
__host__ __device__ inline float fp8_block_scale(float amax, ScaleFormat format) {
  amax = amax > kQuantAmaxFloor ? amax : kQuantAmaxFloor;           // NaN amax → floor as well
  const float r = amax / kFp8E4m3Max;
  if (format == ScaleFormat::kFloat) return r;
  const uint32_t rb = float_bits(r);
  // An infinite amax (inf input): the CPU's frexp(inf) reports exponent 0, so its ue8m0 scale is 1.
  if ((rb & 0x7F800000u) == 0x7F800000u) return 1.0f;
  int e = static_cast<int>((rb >> 23) & 0xFFu) - 127;               // r ≥ 1e-4/448: normal
  if ((rb & 0x7FFFFFu) != 0) ++e;                                   // not a power of two: round up
  return exp2_int(e);
}

// ── top-k ordering key ───────────────────────────────────────────────────────────────────────
// Maps a float score to a uint32 whose unsigned order is the score order, with NaN ≡ −inf and
// −0 ≡ +0 (ties, broken by index): the CPU's "NaN counts as −inf" comparison.
__host__ __device__ inline uint32_t score_key(float x) {
  uint32_t u = float_bits(x);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) u = 0xFF800000u;            // NaN → −inf
  if (u == 0x80000000u) u = 0u;                                     // −0 → +0
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
// 64-bit total order key: score first, then the smaller index wins (larger key = better).
__host__ __device__ inline uint64_t select_key(float x, int32_t index) {
  return (static_cast<uint64_t>(score_key(x)) << 32) | static_cast<uint32_t>(0x7FFFFFFF - index);
}
__host__ __device__ inline int32_t select_key_index(uint64_t key) {
  return 0x7FFFFFFF - static_cast<int32_t>(static_cast<uint32_t>(key & 0xFFFFFFFFu));
}

// ── warp reductions ──────────────────────────────────────────────────────────────────────────
inline constexpr int kWarpSize = 32;
inline constexpr unsigned kFullMask = 0xFFFFFFFFu;
__device__ inline float warp_max(float v) {
  for (int o = kWarpSize / 2; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(kFullMask, v, o));
  return v;
}
// Butterfly sum: every lane ends with the same value, summed in a fixed tree order (deterministic).
__device__ inline float warp_sum(float v) {
  for (int o = kWarpSize / 2; o > 0; o /= 2) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}
__device__ inline int warp_sum_int(int v) {
  for (int o = kWarpSize / 2; o > 0; o /= 2) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

// Clamps a (possibly bad) key range to [lo, hi) ⊆ [0, S); a malformed range becomes empty
// (cuda_ops.h contract: the device cannot throw on data).
__device__ inline void clamp_range(int32_t ks, int32_t ke, int S, int& lo, int& hi) {
  lo = ks < 0 ? 0 : ks;
  hi = ke > S ? S : ke;
  if (ks < 0 || ke > S || ks > ke) { lo = 0; hi = 0; }
}

}  // namespace dsa::cuda::detail
