// wgmma.cuh — the Hopper (sm_90a) building blocks shared by the wgmma kernels
// (indexer_logits_wgmma.cu, sparse_attention_forward_wgmma.cu): the arch guard, cp.async, the
// generic→async proxy fence, wgmma fence / commit / wait, and the shared-memory matrix descriptors of
// 128-byte-swizzled tiles (8-row groups of 128-byte rows, 1024 B apart).
// Everything below compiles only where DSA_WGMMA is 1 (sm_90a device code); the kernels' files
// compile a trap stub elsewhere, so the sm_80 / sm_89 builds still link.
#pragma once

#include <cstdint>

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define DSA_WGMMA 1
#else
#define DSA_WGMMA 0
#endif

namespace dsa::cuda::wgmma {

constexpr int kSwizzleRowBytes = 128;                     // one swizzled row
constexpr int kSwizzleAtomBytes = 8 * kSwizzleRowBytes;   // 8-row group = the SBO of every operand

#if DSA_WGMMA
__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
// 16-byte cp.async; src_bytes < 16 zero-fills the rest (0: a zero chunk).
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes) : "memory");
}
// 4-byte copy (cp.async.ca: the .cg form copies 16 bytes only); src_bytes 0 writes a zero.
__device__ __forceinline__ void cp_async4(uint32_t dst, const void* src, int src_bytes) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
// Waits until at most N of this thread's committed cp.async groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
// Generic-proxy writes (plain stores, cp.async) made visible to the async proxy (wgmma).
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
// Waits until at most N of this warpgroup's committed wgmma groups are still in flight (groups
// complete in commit order).
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Keep the compiler from moving accumulator reads/writes across the asynchronous MMA.
__device__ __forceinline__ void fence_operand(float& r) { asm volatile("" : "+f"(r)::"memory"); }
template <int N>
__device__ __forceinline__ void fence_operands(float (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) fence_operand(r[i]);
}

// Shared-memory matrix descriptors: address, LBO and SBO in 16-byte units, layout type 1
// (128-byte swizzle) in bits 62..63.
constexpr uint64_t kSwizzle128B = 1;
// K-major: 8-row groups kSwizzleAtomBytes apart (SBO); LBO is unused for a swizzled K-major tile
// whose k-step (≤ 32 B) lies inside one 128-byte row (1 by convention).
__device__ __forceinline__ uint64_t desc_k_major(uint32_t addr) {
  return uint64_t((addr & 0x3FFFF) >> 4) | (uint64_t(1) << 16) | (uint64_t(kSwizzleAtomBytes >> 4) << 32) |
         (kSwizzle128B << 62);
}
// MN-major (a transposed operand): LBO = the bytes to the next 64 MN elements (next column block),
// SBO = the next 8 K rows.
__device__ __forceinline__ uint64_t desc_mn_major(uint32_t addr, uint32_t column_block_bytes) {
  return uint64_t((addr & 0x3FFFF) >> 4) | (uint64_t(column_block_bytes >> 4) << 16) |
         (uint64_t(kSwizzleAtomBytes >> 4) << 32) | (kSwizzle128B << 62);
}
// The descriptor of (the descriptor's address + bytes): the address field holds address >> 4 in the
// low 14 bits, and shared-memory addresses stay below 2^18, so one integer add per k-step replaces
// rebuilding the descriptor (ncu: ~8 instructions per wgmma otherwise). bytes must be a multiple of 16.
__device__ __forceinline__ uint64_t desc_advance(uint64_t desc, uint32_t bytes) { return desc + (bytes >> 4); }
#endif  // DSA_WGMMA

}  // namespace dsa::cuda::wgmma
