// bench_util.cuh — what the GPU benchmarks (indexer_bench.cu, attention_bench.cu, layer_bench.cu)
// share: the CUDA error check, device-side hash fills of random inputs, device allocation, the fp32 →
// bf16 conversion of benchmark inputs, and the event-timed median. Header-only; each benchmark is its
// own executable of one translation unit (the kernels here are defined, not inline).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <vector>

#define CHECK(x)                                                                              \
  do {                                                                                        \
    cudaError_t e_ = (x);                                                                     \
    if (e_ != cudaSuccess) {                                                                  \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
      std::exit(1);                                                                           \
    }                                                                                         \
  } while (0)

namespace dsa::bench {

constexpr int kFillBlocks = 1024, kFillThreads = 256;

// splitmix64's finaliser: a counter-based hash, so every fill is a pure function of (seed, i).
__device__ inline uint32_t mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return static_cast<uint32_t>(x);
}
// x[i] uniform in [lo, hi) (24-bit resolution).
__global__ void fill_uniform(float* x, size_t n, uint64_t seed, float lo, float hi) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    x[i] = lo + (hi - lo) * (mix(seed * 0x9E3779B97F4A7C15ULL + i) >> 8) * (1.0f / 16777216.0f);
}

// y[i] = the bf16 bit pattern of x[i], rounded to nearest even (dsa::DType::kBF16 tensors).
__global__ void convert_to_bf16(const float* x, uint16_t* y, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    y[i] = __bfloat16_as_ushort(__float2bfloat16_rn(x[i]));
}

template <typename T>
T* dalloc(size_t n) {
  T* p = nullptr;
  CHECK(cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(T)));
  return p;
}
inline void urand(float* p, size_t n, uint64_t seed, float lo = -1.f, float hi = 1.f) {
  fill_uniform<<<kFillBlocks, kFillThreads>>>(p, n, seed, lo, hi);
  CHECK(cudaGetLastError());
}

// A device allocation holding x[0, n) as bf16 bits (the benchmarks convert their fp32 inputs once,
// outside every timed region).
inline uint16_t* to_bf16(const float* x, size_t n) {
  uint16_t* y = dalloc<uint16_t>(n);
  convert_to_bf16<<<kFillBlocks, kFillThreads>>>(x, y, n);
  CHECK(cudaGetLastError());
  return y;
}

// Median of `reps` CUDA-event-timed runs of f after one warm-up run (ms).
inline double time_ms(const std::function<void()>& f, int reps) {
  f();
  CHECK(cudaDeviceSynchronize());
  std::vector<float> ms;
  cudaEvent_t a, b;
  CHECK(cudaEventCreate(&a));
  CHECK(cudaEventCreate(&b));
  for (int r = 0; r < reps; ++r) {
    CHECK(cudaEventRecord(a));
    f();
    CHECK(cudaEventRecord(b));
    CHECK(cudaEventSynchronize(b));
    float m = 0;
    CHECK(cudaEventElapsedTime(&m, a, b));
    ms.push_back(m);
  }
  CHECK(cudaGetLastError());
  CHECK(cudaEventDestroy(a));
  CHECK(cudaEventDestroy(b));
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace dsa::bench
