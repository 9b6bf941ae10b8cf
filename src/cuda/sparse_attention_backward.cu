// sparse_attention_backward.cu — op 7 on the GPU: dq [T,H,Dqk] and dkv [S,Dqk] of the sparse MQA
// attention (ops.h §6–8, FlashAttention-2 algebra), DETERMINISTIC: no float atomics anywhere.
//
// v1 (every arch), five launches on `stream`, all scratch in the caller's workspace:
//   1. delta     Δ[t,h] = out·dout                            (one warp per row)
//   2. sort_in   key = indices[t,j] if slot j is valid (j < len, 0 ≤ idx < S) else S; value = t·K+j
//   3. cub::DeviceRadixSort::SortPairs (stable LSD radix sort): every key's entries end up
//      contiguous and in ascending (t, j) order — the transposed index list
//   4. offsets   offsets[s] = first sorted entry with key ≥ s (binary search), s ∈ [0, S]
//   5. dq        query-major tiles (attention_common.cuh dq_tile), grid (T, ⌈H/8⌉)
//   6. dkv       key-major: block s walks its entries in sorted order and sums, per entry, all H
//                heads (dkv_key); each dkv row is therefore summed in one fixed order.
// Workspace: Δ (T·H floats) + 4 int32 arrays of T·K (sort keys/values in and out) + (S+1) offsets
// + cub's temp storage; ≈ 16·T·K bytes (128 MiB at T = 4096, K = 2048).
// version == kSparseAttentionBf16Version (sm_80+, any shape): the bf16 tensor-core backward of
// sparse_attention_backward_bf16.cu (cuBLAS GEMMs over query chunks, same determinism, its own
// workspace size); every other version number runs v1.
// The key-major pass recomputes the scores (as FlashAttention-2's dkv pass does); its cost is the
// re-read of q[t] and dout[t] per entry (docs/kernels/sparse_attention.md has the numbers).
#include <cub/device/device_radix_sort.cuh>

#include "cuda/attention_common.cuh"
#include "dsa/cuda_ops.h"

namespace dsa::cuda {
namespace {

constexpr const char* kOp = "sparse_attention_backward";
constexpr int kAlign = 256;                  // every workspace array starts on a 256-byte boundary
constexpr int kElementwiseThreads = 256;

size_t align_up(size_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

int key_bits(int S) {   // bits of the largest sort key (S, the "invalid" key)
  int b = 1;
  while ((1LL << b) <= S) ++b;
  return b;
}

struct Workspace {
  float* delta;
  uint32_t* keys_in;
  uint32_t* keys_out;
  int32_t* vals_in;
  int32_t* vals_out;
  int32_t* offsets;
  void* sort_temp;
  size_t sort_temp_bytes;
  size_t total;
};

Workspace plan(const AttentionParams& p, void* base) {
  const int n = p.T * p.K;
  size_t temp = 0;
  DSA_CUDA_CALL(kOp, cub::DeviceRadixSort::SortPairs(nullptr, temp, static_cast<const uint32_t*>(nullptr),
                                                     static_cast<uint32_t*>(nullptr),
                                                     static_cast<const int32_t*>(nullptr),
                                                     static_cast<int32_t*>(nullptr), n, 0, key_bits(p.S)));
  Workspace w{};
  char* b = static_cast<char*>(base);
  size_t off = 0;
  auto take = [&](size_t bytes) {
    char* ptr = b ? b + off : nullptr;
    off += align_up(bytes);
    return ptr;
  };
  w.delta = reinterpret_cast<float*>(take(sizeof(float) * static_cast<size_t>(p.T) * p.H));
  w.keys_in = reinterpret_cast<uint32_t*>(take(sizeof(uint32_t) * static_cast<size_t>(n)));
  w.keys_out = reinterpret_cast<uint32_t*>(take(sizeof(uint32_t) * static_cast<size_t>(n)));
  w.vals_in = reinterpret_cast<int32_t*>(take(sizeof(int32_t) * static_cast<size_t>(n)));
  w.vals_out = reinterpret_cast<int32_t*>(take(sizeof(int32_t) * static_cast<size_t>(n)));
  w.offsets = reinterpret_cast<int32_t*>(take(sizeof(int32_t) * (static_cast<size_t>(p.S) + 1)));
  w.sort_temp = take(temp);
  w.sort_temp_bytes = temp;
  w.total = off;
  return w;
}

void validate_shape(const AttentionParams& p) {
  attn::validate_params(p, true, kOp);
  DSA_REQUIRE(static_cast<long long>(p.T) * p.K <= INT32_MAX, kOp, "T·K = ", static_cast<long long>(p.T) * p.K,
              " must fit in int32 (the transposed index list is int32)");
}

void validate(const AttentionParams& p, const AttentionBackwardArgs& b) {
  validate_shape(p);
  ::dsa::detail::require_ptr(b.dout, kOp, "dout");
  ::dsa::detail::require_ptr(b.out, kOp, "out");
  ::dsa::detail::require_ptr(b.lse, kOp, "lse");
  ::dsa::detail::require_ptr(b.dq, kOp, "dq");
  ::dsa::detail::require_ptr(b.dkv, kOp, "dkv");
}

// ── kernels ──────────────────────────────────────────────────────────────────────────────────
__global__ void sparse_bwd_delta(const float* out, const float* dout, int64_t rows, int Dv, float* delta) {
  attn::row_delta(out, dout, rows, Dv, delta);
}

__global__ void sparse_bwd_sort_input(attn::SparseKeys keys, int T, uint32_t* keys_in, int32_t* vals_in) {
  const int64_t n = static_cast<int64_t>(T) * keys.K;
  for (int64_t pos = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; pos < n;
       pos += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = pos / keys.K;
    const int j = static_cast<int>(pos % keys.K);
    const int64_t s = j < keys.count(t) ? keys.key(t, j) : -1;
    keys_in[pos] = s >= 0 ? static_cast<uint32_t>(s) : static_cast<uint32_t>(keys.S);
    vals_in[pos] = static_cast<int32_t>(pos);
  }
}

__global__ void sparse_bwd_offsets(const uint32_t* sorted, int n, int S, int32_t* offsets) {
  const int s = blockIdx.x * blockDim.x + threadIdx.x;
  if (s > S) return;
  int lo = 0, hi = n;   // first position with sorted[pos] >= s
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    if (sorted[mid] < static_cast<uint32_t>(s)) lo = mid + 1;
    else hi = mid;
  }
  offsets[s] = lo;
}

struct DkvArgs {
  int H, Dqk, Dv, K;
  float scale;
  const float *kv, *q, *dout, *lse, *delta;
  const int32_t *sorted_pos, *offsets;
  float* dkv;
};

__global__ void __launch_bounds__(attn::kThreads) sparse_bwd_dkv(DkvArgs a) {
  const int64_t s = blockIdx.x;
  const int e0 = a.offsets[s], e1 = a.offsets[s + 1];
  attn::dkv_key(a.kv + s * a.Dqk, a.q, a.dout, a.lse, a.delta, a.H, a.Dqk, a.Dv, a.scale, a.dkv + s * a.Dqk,
                [&](auto&& f) {
                  for (int e = e0; e < e1; ++e) f(static_cast<int64_t>(a.sorted_pos[e] / a.K));
                });
}

}  // namespace

size_t sparse_attention_backward_workspace_bytes(const AttentionParams& p, int version) {
  if (version == kSparseAttentionBf16Version && attn::sparse_backward_bf16_fits(p))
    return attn::sparse_backward_bf16_workspace(p, kOp);
  validate_shape(p);
  return plan(p, nullptr).total;
}

void sparse_attention_backward(const AttentionParams& p, const AttentionBackwardArgs& b, void* workspace,
                               size_t workspace_bytes, cudaStream_t stream, int version) {
  validate(p, b);
  if (version == kSparseAttentionBf16Version && attn::sparse_backward_bf16_fits(p)) {
    attn::sparse_backward_bf16(p, b, workspace, workspace_bytes, stream, kOp);
    return;
  }
  Workspace w = plan(p, nullptr);
  DSA_REQUIRE(workspace != nullptr && workspace_bytes >= w.total, kOp, "workspace_bytes = ", workspace_bytes,
              " (workspace ", workspace ? "set" : "null", ") is smaller than the ", w.total,
              " B sparse_attention_backward_workspace_bytes asks for");
  w = plan(p, workspace);
  const size_t dq_smem = attn::dq_smem_bytes(p.Dqk, p.Dv), dkv_smem = attn::dkv_smem_bytes(p.Dqk, p.H);
  attn::set_smem(attn::dq_v1_kernel<attn::SparseKeys>, dq_smem, kOp);
  attn::set_smem(sparse_bwd_dkv, dkv_smem, kOp);
  const attn::SparseKeys keys{p.indices, p.topk_length, p.K, p.S, p.kv, p.Dqk};
  const int n = p.T * p.K;
  const int64_t rows = static_cast<int64_t>(p.T) * p.H;

  if (rows > 0) {
    const int64_t threads = rows * detail::kWarpSize;
    sparse_bwd_delta<<<detail::ceil_div(threads, attn::kThreads), attn::kThreads, 0, stream>>>(b.out, b.dout, rows,
                                                                                              p.Dv, w.delta);
    DSA_CUDA_LAUNCH_CHECK(kOp);
  }
  if (n > 0) {
    const int blocks = std::min(detail::ceil_div(n, kElementwiseThreads), 65535);
    sparse_bwd_sort_input<<<blocks, kElementwiseThreads, 0, stream>>>(keys, p.T, w.keys_in, w.vals_in);
    DSA_CUDA_LAUNCH_CHECK(kOp);
    size_t temp = w.sort_temp_bytes;
    DSA_CUDA_CALL(kOp, cub::DeviceRadixSort::SortPairs(w.sort_temp, temp, w.keys_in, w.keys_out, w.vals_in, w.vals_out,
                                                       n, 0, key_bits(p.S), stream));
  }
  sparse_bwd_offsets<<<detail::ceil_div(static_cast<long long>(p.S) + 1, kElementwiseThreads), kElementwiseThreads, 0,
                       stream>>>(w.keys_out, n, p.S, w.offsets);
  DSA_CUDA_LAUNCH_CHECK(kOp);
  if (p.T > 0) {
    attn::DqArgs<attn::SparseKeys> a{keys, p.H, p.Dqk, p.Dv, p.scale, p.q, b.dout, b.lse, w.delta, b.dq};
    attn::dq_v1_kernel<<<dim3(p.T, detail::ceil_div(p.H, attn::kTileHeads)), attn::kThreads, dq_smem, stream>>>(a);
    DSA_CUDA_LAUNCH_CHECK(kOp);
  }
  if (p.S > 0) {
    DkvArgs a{p.H, p.Dqk, p.Dv, p.K, p.scale, p.kv, p.q, b.dout, b.lse, w.delta, w.vals_out, w.offsets, b.dkv};
    sparse_bwd_dkv<<<p.S, attn::kThreads, dkv_smem, stream>>>(a);
    DSA_CUDA_LAUNCH_CHECK(kOp);
  }
}

}  // namespace dsa::cuda
