// sparse_attention_forward_pipelined.cu — op 6, variant kMma: the bf16
// tensor-core forward over kv in bf16 (fp32 kv pre-converted into the caller's workspace; bf16 kv,
// AttentionParams::dtype kBF16, read where it lies), so each chunk's kv rows are gathered by cp.async
// straight into shared memory, double-buffered: the gather of chunk c+1 runs while chunk c's MMAs
// run. V3.2 shape only (Dqk 576, Dv 512, H % 64 == 0; bf16 q_bf16 / kv_bf16 16-byte aligned);
// otherwise the variant cannot run (a named error). Numerics (bf16 q, kv, P — bf16 inputs taken as they are,
// fp32 inputs rounded to nearest even —; fp32 accumulation and softmax statistics).
//
// Launches: (1) fp32 inputs only: kv fp32 [S,576] → bf16 [S,576] into the workspace (S·1152 bytes;
//               bf16 inputs need no workspace);
//           (2) grid (T, H/64), 256 threads: block = one query × 64 heads, 32-key chunks.
// Warp w = (g = w % 4, j = w / 4): S for heads [16g, 16g+16) × keys [16j, 16j+16) over 576 dims (72
// MMAs); row maxima exchanged through shared memory (both key halves share the running max); P (bf16)
// through shared memory; O for heads 16g.. × value dims [256j, 256j+256) (64 MMAs, 128 accumulators).
// Shared memory (rows padded by 8 bf16 → conflict-free ldmatrix):
//   q [64][584] 74,752 B | kv [2][32][584] 74,752 B | P [64][40] 5,120 B | keys [2][32] |
//   row max, row sum [2][64] f32   ≈ 155.9 KB (fits sm_80's 163 KiB and sm_90; not sm_89: refused there).
#include <cuda_bf16.h>

#include "cuda/attention_common.cuh"
#include "cuda/attention_mma.cuh"
#include "dsa/cuda_ops.h"

namespace dsa::cuda::attn {
namespace {

constexpr int kDqk = kMlaLatentDim + kMlaRopeDim;   // 576
constexpr int kDv = kMlaLatentDim;                   // 512
constexpr int kHeads = 64;
constexpr int kKeys = 32;                            // keys per chunk
constexpr int kStages = 2;
constexpr int kBlockThreads = 256;
constexpr int kPad = 8;
constexpr int kLd = kDqk + kPad;                     // 584 elements = 1168 B (odd number of 16 B units)
constexpr int kLdP = kKeys + kPad;                   // 40 elements = 80 B (odd number of 16 B units)
constexpr int kMmaK = 16, kMmaN = 8;
constexpr int kDvPerWarp = kDv / 2;                  // 256
constexpr int kKeysPerWarp = kKeys / 2;              // 16
constexpr int kRowChunks = kDqk * 2 / 16;            // 72 cp.async of 16 B per kv row
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr int kQLoadBatch = 12;                      // float4 q loads in flight per thread (fp32 q)
constexpr int kQChunkBatch = 9;                      // 16-byte q loads in flight per thread (bf16 q)

struct Smem {
  __nv_bfloat16 q[kHeads * kLd];
  __nv_bfloat16 kv[kStages][kKeys * kLd];
  __nv_bfloat16 p[kHeads * kLdP];
  int32_t key[kStages][kKeys];
  float row_max[2][kHeads];
  float row_sum[2][kHeads];
};
constexpr size_t kSmemBytes = sizeof(Smem);
static_assert(kSmemBytes <= 163 * 1024, "must fit sm_80's 163 KiB opt-in shared memory");
static_assert((kKeys * kRowChunks) % kBlockThreads == 0, "whole cp.async rounds per chunk");

__global__ void kv_to_bf16(const float* __restrict__ kv, int64_t n, __nv_bfloat16* __restrict__ out) {
  for (int64_t i = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * 4; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x * 4) {
    const float4 v = *reinterpret_cast<const float4*>(kv + i);   // n is a multiple of 576, so of 4
    reinterpret_cast<__nv_bfloat162*>(out + i)[0] = __floats2bfloat162_rn(v.x, v.y);
    reinterpret_cast<__nv_bfloat162*>(out + i)[1] = __floats2bfloat162_rn(v.z, v.w);
  }
}

struct PipeArgs {
  SparseKeys keys;                 // kv unused here (kv16 is read)
  const __nv_bfloat16* kv16;       // [S, 576] bf16: the workspace copy (fp32 inputs) or kv_bf16
  int H;
  float scale_log2;
  const float* q;                  // [T, H, 576] fp32 (kernel<false>)
  const uint16_t* q16;             // [T, H, 576] bf16 bits (kernel<true>)
  float *out, *lse, *max_logits;
};

// Key ids of chunk c into key_s (threads < kKeys) and the cp.async gathers of its rows into kv_s.
__device__ inline void issue_chunk(const PipeArgs& a, int64_t t, int c, int n, int32_t* key_s, __nv_bfloat16* kv_s) {
  if (threadIdx.x < kKeys) {
    const int jj = c + threadIdx.x;
    key_s[threadIdx.x] = jj < n ? static_cast<int32_t>(a.keys.key(t, jj)) : -1;
  }
  for (int i = threadIdx.x; i < kKeys * kRowChunks; i += kBlockThreads) {
    const int r = i / kRowChunks, ch = i % kRowChunks;
    const int jj = c + r;
    const int64_t s = jj < n ? a.keys.key(t, jj) : -1;
    const __nv_bfloat16* src = a.kv16 + (s >= 0 ? s : 0) * kDqk + ch * 8;
    cp_async16(kv_s + r * kLd + ch * 8, src, s >= 0 ? 16 : 0);
  }
  cp_async_commit();
}

// kQBf16: q is read from a.q16 (bf16, copied as it is) instead of a.q (fp32, rounded to bf16).
template <bool kQBf16>
__global__ void __launch_bounds__(kBlockThreads, 1) sparse_attention_forward_pipelined_kernel(PipeArgs a) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  Smem& sm = *reinterpret_cast<Smem*>(smem_raw);
  const int64_t t = blockIdx.x;
  const int h0 = blockIdx.y * kHeads;
  const int lane = threadIdx.x % detail::kWarpSize, warp = threadIdx.x / detail::kWarpSize;
  const int g = warp % 4, j = warp / 4;
  const int lr = lane / 4, lc = lane % 4;
  const int n = a.keys.count(t);

  // Phase 1: start chunk 0's gathers, then convert the q tile while they fly.
  if (n > 0) issue_chunk(a, t, 0, n, sm.key[0], sm.kv[0]);
  if constexpr (kQBf16) {
    // 16-byte chunk ch of head row h → sm.q[h·kLd + 8·ch] (kLd·2 bytes is a multiple of 16).
    const uint4* q = reinterpret_cast<const uint4*>(a.q16 + (t * a.H + h0) * kDqk);
    constexpr int kPerThread = kHeads * kRowChunks / kBlockThreads;
    static_assert(kPerThread % kQChunkBatch == 0 && (kLd * 2) % 16 == 0, "whole batches, 16-byte rows");
    for (int b0 = 0; b0 < kPerThread; b0 += kQChunkBatch) {
      uint4 v[kQChunkBatch];
#pragma unroll
      for (int u = 0; u < kQChunkBatch; ++u) v[u] = __ldg(q + threadIdx.x + (b0 + u) * kBlockThreads);
#pragma unroll
      for (int u = 0; u < kQChunkBatch; ++u) {
        const int i = threadIdx.x + (b0 + u) * kBlockThreads;
        *reinterpret_cast<uint4*>(sm.q + (i / kRowChunks) * kLd + (i % kRowChunks) * 8) = v[u];
      }
    }
  } else {
    const float* q = a.q + (t * a.H + h0) * kDqk;
    constexpr int kPerRow = kDqk / 4, kPerThread = kHeads * kPerRow / kBlockThreads;
    static_assert(kPerThread % kQLoadBatch == 0, "whole batches");
    for (int b0 = 0; b0 < kPerThread; b0 += kQLoadBatch) {
      float4 v[kQLoadBatch];
#pragma unroll
      for (int u = 0; u < kQLoadBatch; ++u)
        v[u] = __ldg(reinterpret_cast<const float4*>(q) + threadIdx.x + (b0 + u) * kBlockThreads);
#pragma unroll
      for (int u = 0; u < kQLoadBatch; ++u) {
        const int i = threadIdx.x + (b0 + u) * kBlockThreads;
        __nv_bfloat162* d = reinterpret_cast<__nv_bfloat162*>(sm.q + (i / kPerRow) * kLd + (i % kPerRow) * 4);
        d[0] = __floats2bfloat162_rn(v[u].x, v[u].y);
        d[1] = __floats2bfloat162_rn(v[u].z, v[u].w);
      }
    }
  }

  float o[kDvPerWarp / kMmaN][4];
  for (auto& f : o) f[0] = f[1] = f[2] = f[3] = 0.f;
  float m[2] = {-kInf, -kInf}, l[2] = {0.f, 0.f};

  // Phase 2: chunk loop, gather of chunk c+1 in flight during chunk c.
  int stage = 0;
  for (int c0 = 0; c0 < n; c0 += kKeys, stage ^= 1) {
    if (c0 + kKeys < n) {
      issue_chunk(a, t, c0 + kKeys, n, sm.key[stage ^ 1], sm.kv[stage ^ 1]);
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const __nv_bfloat16* kv = sm.kv[stage];
    const int32_t* key = sm.key[stage];

    // 2a: S = q·kᵀ, heads 16g.. × keys 16j.. (2 n-tiles).
    float s[kKeysPerWarp / kMmaN][4] = {};
    for (int kk = 0; kk < kDqk / kMmaK; ++kk) {
      uint32_t af[4], bf[4];
      ldmatrix_x4(af, sm.q + (16 * g + (lane & 15)) * kLd + kk * kMmaK + 8 * (lane >> 4));
      ldmatrix_x4(bf, kv + (kKeysPerWarp * j + (lane & 7) + 8 * (lane >> 4)) * kLd + kk * kMmaK + 8 * ((lane >> 3) & 1));
      mma_bf16(s[0], af, bf[0], bf[1]);
      mma_bf16(s[1], af, bf[2], bf[3]);
    }
    // 2b: scale, mask, row maxima (exchanged between the two key halves), P, l, O rescale.
    online_softmax_tile(s, key, a.scale_log2, sm.row_max, sm.p, kLdP, g, j, lr, lc, m, l, o);
    __syncthreads();
    // 2c: O[16 heads × 256 dims] += P[16 × 32] · V[32 × 256].
    for (int kk = 0; kk < kKeys / kMmaK; ++kk) {
      uint32_t af[4];
      ldmatrix_x4(af, sm.p + (16 * g + (lane & 15)) * kLdP + kk * kMmaK + 8 * (lane >> 4));
      for (int np = 0; np < kDvPerWarp / 16; ++np) {
        uint32_t bf[4];
        ldmatrix_x4_trans(bf, kv + (kk * kMmaK + (lane & 7) + 8 * ((lane >> 3) & 1)) * kLd + kDvPerWarp * j +
                                  16 * np + 8 * (lane >> 4));
        mma_bf16(o[2 * np], af, bf[0], bf[1]);
        mma_bf16(o[2 * np + 1], af, bf[2], bf[3]);
      }
    }
    __syncthreads();   // this stage's kv / P / keys are free for the next issue
  }

  // Phase 3: row sums, store.
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(detail::kFullMask, l[r], 1);
    l[r] += __shfl_xor_sync(detail::kFullMask, l[r], 2);
    if (lc == 0) sm.row_sum[j][16 * g + lr + 8 * r] = l[r];
  }
  __syncthreads();
  float inv[2], total[2];
  for (int r = 0; r < 2; ++r) {
    const int row = 16 * g + lr + 8 * r;
    total[r] = sm.row_sum[0][row] + sm.row_sum[1][row];
    inv[r] = total[r] > 0.0f ? 1.0f / total[r] : 0.0f;
  }
  for (int i = 0; i < kDvPerWarp / kMmaN; ++i) {
    const int d = kDvPerWarp * j + kMmaN * i + 2 * lc;
    for (int r = 0; r < 2; ++r) {
      const int64_t row = t * a.H + h0 + 16 * g + lr + 8 * r;
      *reinterpret_cast<float2*>(a.out + row * kDv + d) = make_float2(o[i][2 * r] * inv[r], o[i][2 * r + 1] * inv[r]);
    }
  }
  if (j == 0 && lc == 0)
    for (int r = 0; r < 2; ++r) {
      const int64_t row = t * a.H + h0 + 16 * g + lr + 8 * r;
      const bool empty = !(total[r] > 0.0f);
      a.lse[row] = empty ? kInf : (m[r] + log2f(total[r])) * kLn2;
      if (a.max_logits) a.max_logits[row] = empty ? -kInf : m[r] * kLn2;
    }
}

}  // namespace

bool sparse_forward_pipelined_fits(const AttentionParams& p) {
  // bf16 inputs: 16-byte loads of q_bf16 and cp.async gathers from kv_bf16
  if (p.dtype == DType::kBF16 &&
      (reinterpret_cast<uintptr_t>(p.q_bf16) % 16 != 0 || reinterpret_cast<uintptr_t>(p.kv_bf16) % 16 != 0))
    return false;
  return p.Dqk == kDqk && p.Dv == kDv && p.H % kHeads == 0 &&
         static_cast<size_t>(detail::max_dynamic_smem_bytes()) >= kSmemBytes;
}

size_t sparse_forward_pipelined_workspace(const AttentionParams& p) {
  if (p.dtype == DType::kBF16) return 0;   // kv_bf16 is gathered where it lies
  return sparse_forward_pipelined_fits(p) ? static_cast<size_t>(p.S) * kDqk * sizeof(__nv_bfloat16) : 0;
}

const __nv_bfloat16* kv_to_bf16_workspace(const AttentionParams& p, void* workspace, cudaStream_t stream,
                                          const char* op) {
  if (p.dtype == DType::kBF16) return reinterpret_cast<const __nv_bfloat16*>(p.kv_bf16);   // no copy
  auto* kv16 = static_cast<__nv_bfloat16*>(workspace);
  const int64_t n = static_cast<int64_t>(p.S) * kDqk;
  if (n > 0) {
    constexpr int kConvertThreads = 256, kMaxBlocks = 4096;
    const int blocks = static_cast<int>(std::min<int64_t>(kMaxBlocks, (n / 4 + kConvertThreads - 1) / kConvertThreads));
    kv_to_bf16<<<blocks, kConvertThreads, 0, stream>>>(p.kv, n, kv16);
    DSA_CUDA_LAUNCH_CHECK(op);
  }
  return kv16;
}

void sparse_forward_pipelined(const AttentionParams& p, const AttentionForwardOut& o, void* workspace,
                              cudaStream_t stream, const char* op) {
  const bool bf16 = p.dtype == DType::kBF16;
  const auto kernel =
      bf16 ? sparse_attention_forward_pipelined_kernel<true> : sparse_attention_forward_pipelined_kernel<false>;
  set_smem(kernel, kSmemBytes, op);
  if (p.T == 0) return;
  const __nv_bfloat16* kv16 = kv_to_bf16_workspace(p, workspace, stream, op);   // kv_bf16 itself for bf16
  const PipeArgs a{sparse_keys(p), kv16, p.H, p.scale * kLog2e, bf16 ? nullptr : p.q, bf16 ? p.q_bf16 : nullptr,
                   o.out, o.lse, o.max_logits};
  kernel<<<dim3(p.T, p.H / kHeads), kBlockThreads, kSmemBytes, stream>>>(a);
  DSA_CUDA_LAUNCH_CHECK(op);
}

}  // namespace dsa::cuda::attn
