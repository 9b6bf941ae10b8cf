// attention_mma.cuh — the sm_80+ warp-level primitives of the bf16 attention kernels: shared-memory
// addresses, ldmatrix (plain and transposed), mma.sync m16n8k16 bf16→fp32, cp.async 16-byte copies.
// Fragment layouts (PTX ISA, mma.m16n8k16): lane = 4·r + c; A regs a0..a3 = (row r, cols 2c..2c+1),
// (row r+8, …), (row r, cols 2c+8..), (row r+8, cols 2c+8..); B regs b0, b1 = (k rows 2c..2c+1, col r),
// (k rows 2c+8.., col r); C = (row r, cols 2c..2c+1), (row r+8, cols 2c..2c+1).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace dsa::cuda::attn {

__device__ inline uint32_t smem_addr(const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }

__device__ inline void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_addr(p)));
}
__device__ inline void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_addr(p)));
}
__device__ inline void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// 16-byte global → shared copy; src_bytes = 0 fills the 16 bytes with zeros (src must still be a
// valid address).
__device__ inline void cp_async16(void* dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src), "r"(src_bytes));
}
__device__ inline void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int kPending>
__device__ inline void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

}  // namespace dsa::cuda::attn
