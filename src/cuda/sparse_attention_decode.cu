// sparse_attention_decode.cu — op 11 (sparse decode) on the GPU: MQA attention of q [B,next_n,H,576]
// over the MLA latent cache at physical slots indices [B,next_n,K] (−1 or ≥ num_slots invalid,
// topk_length optional), cache kFp32 / kBf16 / kFp8Record (656 B: e4m3·block scale + bf16 RoPE,
// dequantised on the fly exactly as mla_cache_unpack does). out [B,next_n,H,512], lse [B,H,next_n].
//
// q fp32 or bf16 (SparseDecodeParams::q_dtype; kExact converts each bf16 element to fp32 on load).
// The op's one dispatch point (resolve_variant picks the variant):
// kExact (every arch): split-KV + combine, fp32, deterministic.
//   decode   grid (rows = B·next_n, ⌈H/kTileHeads⌉, splits): block = one row × 8 heads × one
//            contiguous range of its K slots (attention_common.cuh forward_tile over CacheKeys).
//            With one split it writes the final out / lse; otherwise a normalised partial
//            o_i [512] and lse_i per (split, row, head) into the workspace (lse_i = −inf if empty).
//   combine  grid (rows·H): lse = log Σ_i exp(lse_i) (splits in order), out = Σ_i exp(lse_i − lse)·o_i;
//            all lse_i = −inf → out = 0, lse = +inf.
// kMma: the bf16 tensor-core tile of sparse_attention_decode_mma.cu over the cache (H % 64 == 0,
//   sm_80 / sm_90 shared memory), one block per row × 64 heads, no split-KV.
// Splits depend only on the shapes (never on the device): enough blocks to cover ~2 waves of a
// 132-SM part, at least kMinKeysPerSplit keys each. Workspace: splits·rows·H·513 floats (0 if 1).
#include "common/op_checks.h"
#include "cuda/attention_common.cuh"
#include "dsa/cuda_ops.h"

namespace dsa::cuda {
namespace {

constexpr const char* kOp = "sparse_attention_decode";
constexpr int kRowDim = kMlaLatentDim + kMlaRopeDim;        // 576
constexpr int kDv = kMlaLatentDim;                          // 512
constexpr int kScaleOffset = kMlaLatentDim;                 // record bytes [512, 528): 4 fp32 scales
constexpr int kRopeOffset = kMlaLatentDim + 4 * sizeof(float);  // record bytes [528, 656): 64 bf16
static_assert(kRopeOffset + kMlaRopeDim * 2 == kMlaRecordBytes, "656-byte MLA record layout");
constexpr int kTargetBlocks = 264;                          // ≈ 2 waves of 132 SMs (H100 SXM)
constexpr int kMinKeysPerSplit = 64;

struct CacheKeys {
  const int32_t* indices;      // [rows, K]
  const int32_t* topk_length;  // [rows] or null
  int K;
  int64_t num_slots;
  KvCacheFormat format;
  const void* cache;
  __device__ int count(int64_t r) const {
    const int n = topk_length ? topk_length[r] : K;
    return n < 0 ? 0 : (n > K ? K : n);
  }
  __device__ int64_t key(int64_t r, int j) const {
    const int32_t s = indices[r * K + j];
    return (s >= 0 && s < num_slots) ? s : -1;
  }
  __device__ float load(int64_t slot, int d) const {
    switch (format) {
      case KvCacheFormat::kFp32:
        return static_cast<const float*>(cache)[slot * kRowDim + d];
      case KvCacheFormat::kBf16:
        return detail::bf16_decode(static_cast<const uint16_t*>(cache)[slot * kRowDim + d]);
      default: {
        const uint8_t* rec = static_cast<const uint8_t*>(cache) + slot * kMlaRecordBytes;
        if (d < kMlaLatentDim) {
          const float s = reinterpret_cast<const float*>(rec + kScaleOffset)[d / kQuantBlock];
          return detail::fp8_e4m3_decode(rec[d]) * s;
        }
        return detail::bf16_decode(reinterpret_cast<const uint16_t*>(rec + kRopeOffset)[d - kMlaLatentDim]);
      }
    }
  }
};

struct Plan {
  int splits, per_split;
  size_t workspace;
};

Plan plan(const SparseDecodeParams& p) {
  const int64_t rows = static_cast<int64_t>(p.B) * p.next_n;
  const int64_t base = rows * detail::ceil_div(p.H, attn::kTileHeads);
  int splits = static_cast<int>(std::max<int64_t>(1, (kTargetBlocks + base - 1) / base));
  splits = std::min(splits, std::max(1, detail::ceil_div(p.K, kMinKeysPerSplit)));
  int per = detail::ceil_div(p.K, splits);
  per = detail::ceil_div(per, attn::kTileKeys) * attn::kTileKeys;
  splits = detail::ceil_div(p.K, per);
  const size_t ws = splits > 1 ? sizeof(float) * static_cast<size_t>(splits) * rows * p.H * (kDv + 1) : 0;
  return {splits, per, ws};
}

struct DecodeArgs {
  CacheKeys keys;
  int next_n, H, per_split, splits;
  int64_t rows;
  float scale;
  const float* q;              // fp32 q (used when q_bf16 is null)
  float *out, *lse;            // final (splits == 1)
  float *part_o, *part_lse;    // workspace (splits > 1)
  const uint16_t* q_bf16 = nullptr;   // bf16 q (q_dtype kBF16), or null
};

__global__ void __launch_bounds__(attn::kThreads) sparse_decode_v1(DecodeArgs a) {
  const int64_t r = blockIdx.x;
  const int h0 = blockIdx.y * attn::kTileHeads, split = blockIdx.z;
  const int nh = min(attn::kTileHeads, a.H - h0);
  const int n = a.keys.count(r);
  const int j0 = min(n, split * a.per_split), j1 = min(n, j0 + a.per_split);
  const attn::Elems q = attn::Elems{a.q, a.q_bf16} + (r * a.H + h0) * kRowDim;
  if (a.splits == 1) {
    const int64_t b = r / a.next_n, i = r % a.next_n;
    attn::forward_tile(a.keys, r, j0, j1, q, nh, kRowDim, kDv, a.scale, a.out + (r * a.H + h0) * kDv,
                       a.lse + (b * a.H + h0) * a.next_n + i, a.next_n, nullptr, attn::kInf);
  } else {
    const int64_t prow = (split * a.rows + r) * a.H + h0;
    attn::forward_tile(a.keys, r, j0, j1, q, nh, kRowDim, kDv, a.scale, a.part_o + prow * kDv, a.part_lse + prow, 1,
                       nullptr, -attn::kInf);
  }
}

// One block per (row, head): merges the splits' partials in split order.
__global__ void __launch_bounds__(attn::kThreads) sparse_decode_combine(DecodeArgs a) {
  const int64_t rh = blockIdx.x;            // r·H + h
  const int64_t r = rh / a.H, h = rh % a.H;
  const int64_t stride = a.rows * a.H;
  float m = -attn::kInf;
  for (int i = 0; i < a.splits; ++i) m = fmaxf(m, a.part_lse[i * stride + rh]);
  float total = 0.0f;
  for (int i = 0; i < a.splits; ++i) {
    const float l = a.part_lse[i * stride + rh];
    total += l == -attn::kInf ? 0.0f : expf(l - m);
  }
  const bool empty = m == -attn::kInf;
  for (int d = threadIdx.x; d < kDv; d += attn::kThreads) {
    float acc = 0.0f;
    if (!empty)
      for (int i = 0; i < a.splits; ++i) {
        const float l = a.part_lse[i * stride + rh];
        if (l != -attn::kInf) acc = fmaf(expf(l - m) / total, a.part_o[(i * stride + rh) * kDv + d], acc);
      }
    a.out[rh * kDv + d] = acc;
  }
  if (threadIdx.x == 0) {
    const int64_t b = r / a.next_n, i = r % a.next_n;
    a.lse[(b * a.H + h) * a.next_n + i] = empty ? attn::kInf : m + logf(total);
  }
}

}  // namespace

size_t sparse_attention_decode_workspace_bytes(const SparseDecodeParams& p, Variant variant) {
  using namespace ::dsa::detail;
  require_positive(p.B, kOp, "B");
  DSA_REQUIRE(p.next_n == 1 || p.next_n == 2, kOp, "next_n = ", p.next_n, " must be 1 or 2");
  require_positive(p.H, kOp, "H");
  require_positive(p.K, kOp, "K");
  if (resolve_variant(p, variant) == Variant::kMma) return 0;
  return plan(p).workspace;
}

void sparse_attention_decode(const SparseDecodeParams& p, void* workspace, size_t workspace_bytes, cudaStream_t stream,
                             Variant variant) {
  // Host-visible checks only: indices and topk_length live on the device (cuda_ops.h contract).
  ::dsa::detail::validate_sparse_decode_args(p);
  if (resolve_variant(p, variant) == Variant::kMma) {
    attn::sparse_decode_bf16(p, stream, kOp);   // needs no workspace
    return;
  }
  const Plan pl = plan(p);
  DSA_REQUIRE(pl.workspace == 0 || (workspace != nullptr && workspace_bytes >= pl.workspace), kOp,
              "workspace_bytes = ", workspace_bytes, " (workspace ", workspace ? "set" : "null",
              ") is smaller than the ", pl.workspace, " B sparse_attention_decode_workspace_bytes asks for");
  const size_t smem = attn::forward_smem_bytes(kRowDim, kDv);
  attn::set_smem(sparse_decode_v1, smem, kOp);
  const int64_t rows = static_cast<int64_t>(p.B) * p.next_n;
  float* part_o = static_cast<float*>(workspace);
  float* part_lse = pl.splits > 1 ? part_o + static_cast<size_t>(pl.splits) * rows * p.H * kDv : nullptr;
  DecodeArgs a{{p.indices, p.topk_length, p.K, p.num_slots, p.format, p.cache},
               p.next_n, p.H, pl.per_split, pl.splits, rows, p.scale, p.q, p.out, p.lse, part_o, part_lse,
               p.q_dtype == DType::kBF16 ? p.q_bf16 : nullptr};
  const dim3 grid(static_cast<unsigned>(rows), detail::ceil_div(p.H, attn::kTileHeads), pl.splits);
  sparse_decode_v1<<<grid, attn::kThreads, smem, stream>>>(a);
  DSA_CUDA_LAUNCH_CHECK(kOp);
  if (pl.splits > 1) {
    sparse_decode_combine<<<static_cast<unsigned>(rows * p.H), attn::kThreads, 0, stream>>>(a);
    DSA_CUDA_LAUNCH_CHECK(kOp);
  }
}

}  // namespace dsa::cuda
