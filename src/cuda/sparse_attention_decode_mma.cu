// sparse_attention_decode_mma.cu — op 11 (sparse_attention_decode), variant kMma: MQA attention of
// q [B·next_n, H, 576] over the paged decode cache at physical slots (DecodeSrc: kFp32 / kBf16 /
// kFp8Record records, dequantised exactly as mla_cache_unpack before the bf16 rounding), q fp32 or
// bf16 (SparseDecodeParams::q_dtype). H a multiple of 64, any K; bf16 operands through mma.sync
// m16n8k16 (sm_80+; fp32 accumulation), fp32 softmax statistics. Same contract and conventions as the
// exact kernel; results differ from fp32 by bf16 rounding of q, kv and P (relative ~1e-3..1e-2, the
// tolerance in docs/kernels/sparse_attention.md).
//
// Block = one query × 64 heads, 8 warps, 64-key chunks; warp w = (g = w % 4, j = w / 4):
//   S phase : heads [16g, 16g+16) × keys [32j, 32j+32) of the chunk over 576 dims (144 MMAs)
//   softmax : the two key halves exchange row maxima through shared memory (one barrier), so both
//             warps of a head group use the same running max m; P (bf16) goes to shared memory
//   PV phase: heads [16g, 16g+16) × value dims [256j, 256j+256) over the chunk's 64 keys (128 MMAs)
// Shared memory (bf16 rows padded by 8 elements: 1168-byte rows → conflict-free ldmatrix):
//   q [64][584] 74,752 B | kv [64][584] 74,752 B | P [64][72] 9,216 B | keys [64] int32 |
//   row max [2][64] f32 | row sum [2][64] f32   = 159,744 B  (sm_80: 163 KiB, sm_90: 227 KiB;
//   sm_89's 99 KiB is too small: the variant is refused there and kAuto takes kExact).
// Loads convert the inputs on the fly: fp32 → bf16 (round to nearest even), bf16 → fp32 → bf16
// (exact, so bf16 inputs holding the rounded values of fp32 ones give bitwise the same output); bf16
// q / kv pointers must be 8-byte aligned (4-element loads; else the variant is refused). Nothing is double-buffered.
#include <cuda_bf16.h>

#include "cuda/attention_common.cuh"
#include "cuda/attention_mma.cuh"
#include "dsa/cuda_ops.h"

namespace dsa::cuda::attn {
namespace {

constexpr int kDqk = kMlaLatentDim + kMlaRopeDim;   // 576
constexpr int kDv = kMlaLatentDim;                   // 512
constexpr int kHeads = 64;                           // heads per block
constexpr int kKeys = 64;                            // keys per chunk
constexpr int kBlockThreads = 256;                   // 8 warps
constexpr int kPad = 8;                              // bf16 elements of row padding
constexpr int kLd = kDqk + kPad;                     // q / kv row stride (elements)
constexpr int kLdP = kKeys + kPad;                   // P row stride (elements)
constexpr int kMmaK = 16, kMmaN = 8;
constexpr int kDvPerWarp = kDv / 2;                  // 256
constexpr int kKeysPerWarp = kKeys / 2;              // 32
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

struct Smem {
  __nv_bfloat16 q[kHeads * kLd];
  __nv_bfloat16 kv[kKeys * kLd];
  __nv_bfloat16 p[kHeads * kLdP];
  int32_t key[kKeys];
  float row_max[2][kHeads];
  float row_sum[2][kHeads];
};
constexpr size_t kSmemBytes = sizeof(Smem);
static_assert(kSmemBytes <= 163 * 1024, "must fit sm_80's 163 KiB opt-in shared memory");
static_assert((kLd * 2) % 16 == 0 && ((kLd * 2 / 16) % 8) == 1, "row stride: 16-byte aligned, odd in 16 B units");

// fp32 [kRows][576] (row r at src_row(r), null → zeros) → bf16 smem rows. The loads of a thread
// are issued kLoadBatch float4 at a time before any is converted, so each warp keeps that many
// 16-byte gathers in flight (a plain load-convert-store loop waits one L2 round trip per float4).
#ifndef DSA_BF16_LOAD_BATCH
#define DSA_BF16_LOAD_BATCH 12
#endif
constexpr int kLoadBatch = DSA_BF16_LOAD_BATCH;
template <int kRows, class Load>   // load(r, d) → float4 of row r, dims d..d+3 (zeros for an invalid row)
__device__ inline void load_rows_bf16(__nv_bfloat16* dst, const Load& load) {
  constexpr int kVec = 4, kPerRow = kDqk / kVec;
  constexpr int kPerThread = kRows * kPerRow / kBlockThreads;
  static_assert(kRows * kPerRow % kBlockThreads == 0 && kPerThread % kLoadBatch == 0, "whole batches per thread");
  for (int b0 = 0; b0 < kPerThread; b0 += kLoadBatch) {
    float4 v[kLoadBatch];
#pragma unroll
    for (int u = 0; u < kLoadBatch; ++u) {
      const int i = threadIdx.x + (b0 + u) * kBlockThreads;
      v[u] = load(i / kPerRow, (i % kPerRow) * kVec);
    }
#pragma unroll
    for (int u = 0; u < kLoadBatch; ++u) {
      const int i = threadIdx.x + (b0 + u) * kBlockThreads;
      __nv_bfloat162* d = reinterpret_cast<__nv_bfloat162*>(dst + (i / kPerRow) * kLd + (i % kPerRow) * kVec);
      d[0] = __floats2bfloat162_rn(v[u].x, v[u].y);
      d[1] = __floats2bfloat162_rn(v[u].z, v[u].w);
    }
  }
}

// Four bf16 (bit patterns, element 0 in the low half of w.x) as fp32 — exact.
__device__ inline float4 bf16x4_to_float4(uint2 w) {
  return make_float4(detail::bf16_decode(w.x & 0xFFFF), detail::bf16_decode(w.x >> 16),
                     detail::bf16_decode(w.y & 0xFFFF), detail::bf16_decode(w.y >> 16));
}

// ── row sources: which kv rows a query row attends to, how a row is loaded, where results go ──
// Decode (op 11): row r = b·next_n + n over the paged cache at physical slots (kFp32 / kBf16 /
// kFp8Record, dequantised exactly as mla_cache_unpack before the bf16 rounding), out [r, H, 512],
// lse [B, H, next_n].
struct DecodeSrc {
  const int32_t* indices;      // [rows, K]
  const int32_t* topk_length;  // [rows] or null
  int K;
  int64_t num_slots;
  KvCacheFormat format;
  const void* cache;
  int H, next_n;
  float *out, *lse;
  __device__ int count(int64_t r) const {
    const int n = topk_length ? topk_length[r] : K;
    return n < 0 ? 0 : (n > K ? K : n);
  }
  __device__ int64_t key(int64_t r, int j) const {
    const int32_t s = indices[r * K + j];
    return (s >= 0 && s < num_slots) ? s : -1;
  }
  __device__ float4 load4(int64_t s, int d) const {
    constexpr int kScaleOffset = kMlaLatentDim, kRopeOffset = kMlaLatentDim + 4 * sizeof(float);
    if (format == KvCacheFormat::kFp32) return __ldg(reinterpret_cast<const float4*>(static_cast<const float*>(cache) + s * kDqk + d));
    const uint16_t* b16;
    if (format == KvCacheFormat::kBf16) {
      b16 = static_cast<const uint16_t*>(cache) + s * kDqk + d;
    } else {
      const uint8_t* rec = static_cast<const uint8_t*>(cache) + s * kMlaRecordBytes;
      if (d < kMlaLatentDim) {
        const float sc = reinterpret_cast<const float*>(rec + kScaleOffset)[d / kQuantBlock];
        const uint32_t w = *reinterpret_cast<const uint32_t*>(rec + d);
        return make_float4(detail::fp8_e4m3_decode(w & 0xFF) * sc, detail::fp8_e4m3_decode((w >> 8) & 0xFF) * sc,
                           detail::fp8_e4m3_decode((w >> 16) & 0xFF) * sc, detail::fp8_e4m3_decode(w >> 24) * sc);
      }
      b16 = reinterpret_cast<const uint16_t*>(rec + kRopeOffset) + (d - kMlaLatentDim);
    }
    return bf16x4_to_float4(*reinterpret_cast<const uint2*>(b16));
  }
  __device__ float* out_row(int64_t r, int h) const { return out + (r * H + h) * kDv; }
  __device__ float* lse_at(int64_t r, int h) const { return lse + ((r / next_n) * H + h) * next_n + r % next_n; }
  __device__ float* max_logits_at(int64_t, int) const { return nullptr; }
};

template <class Src>
struct Bf16Args {
  Src src;
  int H;
  float scale_log2;      // scale · log2(e): scores live in the log2 domain inside the kernel
  const float* q;        // [rows, H, 576] fp32 (kernel with kQBf16 false)
  const uint16_t* q16;   // [rows, H, 576] bf16 bits (kQBf16 true)
};

template <class Src, bool kQBf16>
__global__ void __launch_bounds__(kBlockThreads, 1) sparse_attention_bf16_kernel(Bf16Args<Src> a) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  Smem& sm = *reinterpret_cast<Smem*>(smem_raw);
  const int64_t t = blockIdx.x;
  const int h0 = blockIdx.y * kHeads;
  const int lane = threadIdx.x % detail::kWarpSize, warp = threadIdx.x / detail::kWarpSize;
  const int g = warp % 4, j = warp / 4;
  const int lr = lane / 4, lc = lane % 4;   // fragment row (0..7) and column pair (0..3)
  const int64_t q_row = (t * a.H + h0) * kDqk;

  // Phase 1: q tile → bf16.
  load_rows_bf16<kHeads>(sm.q, [&](int r, int d) {
    if constexpr (kQBf16)
      return bf16x4_to_float4(__ldg(reinterpret_cast<const uint2*>(a.q16 + q_row + static_cast<int64_t>(r) * kDqk + d)));
    else
      return __ldg(reinterpret_cast<const float4*>(a.q + q_row + static_cast<int64_t>(r) * kDqk + d));
  });

  float o[kDvPerWarp / kMmaN][4];
  for (auto& f : o) f[0] = f[1] = f[2] = f[3] = 0.f;
  float m[2] = {-kInf, -kInf}, l[2] = {0.f, 0.f};   // rows lr and lr + 8 of this warp's 16 heads
  const int n = a.src.count(t);

  // Phase 2: 64-key chunks.
  for (int c0 = 0; c0 < n; c0 += kKeys) {
    if (threadIdx.x < kKeys) {
      const int jj = c0 + threadIdx.x;
      sm.key[threadIdx.x] = jj < n ? static_cast<int32_t>(a.src.key(t, jj)) : -1;
    }
    __syncthreads();
    load_rows_bf16<kKeys>(sm.kv, [&](int r, int d) {
      const int32_t s = sm.key[r];
      return s >= 0 ? a.src.load4(s, d) : make_float4(0.f, 0.f, 0.f, 0.f);
    });
    __syncthreads();

    // 2a: S = q·kᵀ for heads 16g.., keys 32j.. (4 n-tiles of 8 keys).
    float s[kKeysPerWarp / kMmaN][4] = {};
    for (int kk = 0; kk < kDqk / kMmaK; ++kk) {
      uint32_t af[4];
      ldmatrix_x4(af, sm.q + (16 * g + (lane & 15)) * kLd + kk * kMmaK + 8 * (lane >> 4));
      for (int np = 0; np < kKeysPerWarp / 16; ++np) {
        uint32_t bf[4];
        ldmatrix_x4(bf, sm.kv + (kKeysPerWarp * j + 16 * np + (lane & 7) + 8 * (lane >> 4)) * kLd + kk * kMmaK +
                            8 * ((lane >> 3) & 1));
        mma_bf16(s[2 * np], af, bf[0], bf[1]);
        mma_bf16(s[2 * np + 1], af, bf[2], bf[3]);
      }
    }
    // 2b: scale, mask, row maxima (exchanged with the other key half), P, l, O rescale.
    online_softmax_tile(s, sm.key, a.scale_log2, sm.row_max, sm.p, kLdP, g, j, lr, lc, m, l, o);
    __syncthreads();
    // 2c: O[16 heads × 256 dims] += P[16 × 64] · V[64 × 256].
    for (int kk = 0; kk < kKeys / kMmaK; ++kk) {
      uint32_t af[4];
      ldmatrix_x4(af, sm.p + (16 * g + (lane & 15)) * kLdP + kk * kMmaK + 8 * (lane >> 4));
      for (int np = 0; np < kDvPerWarp / 16; ++np) {
        uint32_t bf[4];
        ldmatrix_x4_trans(bf, sm.kv + (kk * kMmaK + (lane & 7) + 8 * ((lane >> 3) & 1)) * kLd + kDvPerWarp * j +
                                  16 * np + 8 * (lane >> 4));
        mma_bf16(o[2 * np], af, bf[0], bf[1]);
        mma_bf16(o[2 * np + 1], af, bf[2], bf[3]);
      }
    }
    __syncthreads();
  }

  // Phase 3: row sums across the quad and the two key halves, then store.
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
    for (int r = 0; r < 2; ++r)
      *reinterpret_cast<float2*>(a.src.out_row(t, h0 + 16 * g + lr + 8 * r) + d) =
          make_float2(o[i][2 * r] * inv[r], o[i][2 * r + 1] * inv[r]);
  }
  if (j == 0 && lc == 0)
    for (int r = 0; r < 2; ++r) {
      const int h = h0 + 16 * g + lr + 8 * r;
      const bool empty = !(total[r] > 0.0f);
      *a.src.lse_at(t, h) = empty ? kInf : (m[r] + log2f(total[r])) * kLn2;
      if (float* ml = a.src.max_logits_at(t, h)) *ml = empty ? -kInf : m[r] * kLn2;
    }
}

}  // namespace

bool sparse_decode_bf16_fits(const SparseDecodeParams& p) {
  // bf16 q: 8-byte (4-element) loads of q_bf16
  if (p.q_dtype == DType::kBF16 && reinterpret_cast<uintptr_t>(p.q_bf16) % 8 != 0) return false;
  return p.H % kHeads == 0 && static_cast<size_t>(detail::max_dynamic_smem_bytes()) >= kSmemBytes;
}

void sparse_decode_bf16(const SparseDecodeParams& p, cudaStream_t stream, const char* op) {
  const bool q_bf16 = p.q_dtype == DType::kBF16;
  const auto kernel = q_bf16 ? sparse_attention_bf16_kernel<DecodeSrc, true> : sparse_attention_bf16_kernel<DecodeSrc, false>;
  set_smem(kernel, kSmemBytes, op);
  const int64_t rows = static_cast<int64_t>(p.B) * p.next_n;
  const Bf16Args<DecodeSrc> a{{p.indices, p.topk_length, p.K, p.num_slots, p.format, p.cache, p.H, p.next_n, p.out, p.lse},
                              p.H, p.scale * kLog2e, q_bf16 ? nullptr : p.q, q_bf16 ? p.q_bf16 : nullptr};
  kernel<<<dim3(static_cast<unsigned>(rows), p.H / kHeads), kBlockThreads, kSmemBytes, stream>>>(a);
  DSA_CUDA_LAUNCH_CHECK(op);
}

}  // namespace dsa::cuda::attn
