// attention_mma.cuh — the sm_80+ warp-level primitives of the bf16 attention kernels: shared-memory
// addresses, ldmatrix (plain and transposed), mma.sync m16n8k16 bf16→fp32, cp.async 16-byte copies.
// Fragment layouts (PTX ISA, mma.m16n8k16): lane = 4·r + c; A regs a0..a3 = (row r, cols 2c..2c+1),
// (row r+8, …), (row r, cols 2c+8..), (row r+8, cols 2c+8..); B regs b0, b1 = (k rows 2c..2c+1, col r),
// (k rows 2c+8.., col r); C = (row r, cols 2c..2c+1), (row r+8, cols 2c..2c+1).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/attention_common.cuh"

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

// One key tile's online-softmax step of the mma.sync bf16 sparse forwards (v3 and v4: one copy, so
// both keep the same bits). Warp (g, j) holds the scores of heads 16g.. over key half j of the tile:
// s[i][e] = (head row lr + 8·(e >> 1), key kNt·8·j + 8i + 2·lc + (e & 1)), m16n8 accumulators.
// Scales into the base-2 domain (scale_log2 = scale · log2 e), masks keys whose id is < 0, exchanges
// the two key halves' row maxima through row_max (one __syncthreads: every warp of the block calls
// this), updates the running max m and row sum l (this thread's keys, in order), writes P (bf16) into
// p (row stride ld_p) and rescales this warp's O accumulators o.
template <int kNt, int kNo, int kHeads>
__device__ __forceinline__ void online_softmax_tile(float (&s)[kNt][4], const int32_t* key, float scale_log2,
                                                    float (&row_max)[2][kHeads], __nv_bfloat16* p, int ld_p,
                                                    int g, int j, int lr, int lc, float (&m)[2], float (&l)[2],
                                                    float (&o)[kNo][4]) {
  constexpr int kMmaN = 8, kKeysPerWarp = kNt * kMmaN;
  float cmax[2] = {-kInf, -kInf};
  for (int i = 0; i < kNt; ++i)
    for (int e = 0; e < 4; ++e) {
      const int kidx = kKeysPerWarp * j + kMmaN * i + 2 * lc + (e & 1);
      const float v = key[kidx] >= 0 ? s[i][e] * scale_log2 : -kInf;
      s[i][e] = v;
      cmax[e >> 1] = fmaxf(cmax[e >> 1], v);
    }
  for (int r = 0; r < 2; ++r) {
    cmax[r] = fmaxf(cmax[r], __shfl_xor_sync(detail::kFullMask, cmax[r], 1));
    cmax[r] = fmaxf(cmax[r], __shfl_xor_sync(detail::kFullMask, cmax[r], 2));
    if (lc == 0) row_max[j][16 * g + lr + 8 * r] = cmax[r];
  }
  __syncthreads();
  float alpha[2];
  for (int r = 0; r < 2; ++r) {
    const int row = 16 * g + lr + 8 * r;
    const float m_new = fmaxf(m[r], fmaxf(row_max[0][row], row_max[1][row]));
    alpha[r] = m_new == -kInf ? 1.0f : exp2f(m[r] - m_new);
    m[r] = m_new;
    l[r] *= alpha[r];
  }
  for (int i = 0; i < kNt; ++i) {
    float pe[4];
    for (int e = 0; e < 4; ++e) {
      const int r = e >> 1;
      pe[e] = s[i][e] == -kInf ? 0.0f : exp2f(s[i][e] - m[r]);
      l[r] += pe[e];
    }
    const int col = kKeysPerWarp * j + kMmaN * i + 2 * lc;
    *reinterpret_cast<__nv_bfloat162*>(p + (16 * g + lr) * ld_p + col) = __floats2bfloat162_rn(pe[0], pe[1]);
    *reinterpret_cast<__nv_bfloat162*>(p + (16 * g + lr + 8) * ld_p + col) = __floats2bfloat162_rn(pe[2], pe[3]);
  }
  for (auto& f : o) {
    f[0] *= alpha[0];
    f[1] *= alpha[0];
    f[2] *= alpha[1];
    f[3] *= alpha[1];
  }
}

}  // namespace dsa::cuda::attn
