// indexer_topk.cu — op 5 on the GPU: fused indexer logits + top-k. v1 never writes the [T, S]
// logits; v2/v3 write ≤ 128 MiB chunks of them to the workspace (tensor-core logits + topk_select).
//
// Contract (ops.h §5): the same indices as topk_select(indexer_logits(p)) of the same kernel
// version, bit for bit: every logit is computed by the same per-element code (detail::logit_v1 and
// the same k_scale product) and the selection rule is the same strict total order (select_key).
//
// Plan (v1): one block per query row, kChunk threads. Keys are visited in increasing index order,
// one chunk of kChunk keys per step; each thread computes one logit and offers its 64-bit key to a
// candidate buffer of `cap` = next_pow2(K + kChunk) entries when it beats the threshold θ (the K-th
// best key so far; a later key with an equal score loses on the index, so "strictly greater" is
// exact). When the buffer cannot take another chunk, it is sorted (bitonic, descending) and cut to
// its K best, θ = the K-th. At the end the buffer is sorted once more and the first min(K, L)
// indices are written, then −1. Insertion order into the buffer depends on thread timing, but the
// buffer is only ever used as a SET (sorted before every use), so the result is deterministic.
// Memory: O(K) per row — shared memory when cap·8 bytes fit the device's opt-in limit, else a
// workspace of T·cap·8 bytes (indexer_topk_workspace_bytes), i.e. O(T·K).
#include <algorithm>
#include <cmath>

#include "cuda/indexer_common.cuh"
#include "cuda/indexer_logits_mma.cuh"
#include "cuda/indexer_logits_wgmma.cuh"

namespace dsa::cuda {
namespace {

constexpr int kChunk = 256;

int buffer_cap(int K) { return detail::next_pow2(K + kChunk); }
bool buffer_in_smem(int K) {
  return size_t(buffer_cap(K)) * sizeof(uint64_t) <= static_cast<size_t>(detail::max_dynamic_smem_bytes());
}

template <Precision P>
__global__ void __launch_bounds__(kChunk) indexer_topk_v1_kernel(IndexerParams p, int K, int32_t* __restrict__ indices,
                                                                  uint64_t* __restrict__ workspace, int cap,
                                                                  bool in_smem) {
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ int count;
  __shared__ uint64_t threshold;
  __shared__ bool has_threshold;
  const int t = blockIdx.x;
  uint64_t* buf = in_smem ? reinterpret_cast<uint64_t*>(smem) : workspace + int64_t(t) * cap;
  int lo, hi;
  detail::clamp_range(p.ks[t], p.ke[t], p.S, lo, hi);
  if (threadIdx.x == 0) {
    count = 0;
    threshold = 0;
    has_threshold = false;
  }
  __syncthreads();
  const int64_t q_row = int64_t(t) * p.HI * p.DI;
  const float* w_row = p.w + int64_t(t) * p.HI;
  for (int base = lo; base < hi; base += kChunk) {
    const int s = base + threadIdx.x;
    if (s < hi) {
      float v = detail::logit_v1<P>(p.q, q_row, p.k, int64_t(s) * p.DI, w_row, p.HI, p.DI);
      if constexpr (P == Precision::kFp8) v = __fmul_rn(v, __ldg(p.k_scale + s));
      const uint64_t key = detail::select_key(v, s);
      if (!has_threshold || key > threshold) buf[atomicAdd(&count, 1)] = key;
    }
    __syncthreads();
    // Snapshot count, then a second barrier: without it a fast thread's next atomicAdd (or thread
    // 0's reset below) changes count while slower threads still test it, the branch diverges and
    // the block's barriers desynchronise (compute-sanitizer racecheck found exactly this).
    const int filled = count;
    __syncthreads();
    if (filled > cap - kChunk) {  // block-uniform: compact to the K best
      for (int i = filled + threadIdx.x; i < cap; i += kChunk) buf[i] = 0ull;
      __syncthreads();
      detail::bitonic_sort_desc(buf, cap);
      if (threadIdx.x == 0) {
        threshold = buf[K - 1];
        has_threshold = true;
        count = K;
      }
      __syncthreads();
    }
  }
  const int n = count;
  for (int i = n + threadIdx.x; i < cap; i += kChunk) buf[i] = 0ull;
  __syncthreads();
  detail::bitonic_sort_desc(buf, cap);
  int32_t* out = indices + int64_t(t) * K;
  const int valid = n < K ? n : K;
  for (int j = threadIdx.x; j < K; j += kChunk) out[j] = j < valid ? detail::select_key_index(buf[j]) : kInvalidIndex;
}

}  // namespace

// kMma and kWgmma (tensor-core logits): the logits of at most mma_chunk_rows(p) query rows at a time
// go to the workspace (≤ kMmaChunkBytes) and topk_select runs on them — the SAME logits kernel as
// the unfused path of that variant (indexer_logits_mma, mma.sync; indexer_logits_wgmma, wgmma) and
// the same selection, so the indices are bit-identical; memory
// is O(chunk·S) instead of O(T·K) (documented trade-off: a fused tensor-core kernel with in-register
// selection is future work). Chunking by rows is exact for both kernels: each logit's arithmetic
// depends on its (t, s) only, never on which rows or key spans a CTA is given (the kernels' file
// comments fix the per-element order).
// The workspace query asks for ≤ kMmaChunkBytes; a caller that passes more gets chunks of
// workspace_bytes / (4·S) rows (same indices: fewer, larger logits launches, which the wgmma kernel
// runs more efficiently than 256-row chunks at S = 128K).
constexpr size_t kMmaChunkBytes = size_t(128) << 20;
int mma_chunk_rows(const IndexerParams& p) {
  const size_t row_bytes = std::max<size_t>(size_t(p.S) * sizeof(float), 1);
  const size_t rows = std::max<size_t>(kMmaChunkBytes / row_bytes, 1);
  return static_cast<int>(std::min<size_t>(rows, size_t(std::max(p.T, 1))));
}


size_t indexer_topk_workspace_bytes(const IndexerParams& p, int K, Variant variant) {
  if (K < 1 || K > kMaxTopK || p.T <= 0) return 0;
  if (resolve_variant(p, variant, "indexer_topk") != Variant::kExact) return size_t(mma_chunk_rows(p)) * p.S * sizeof(float);
  return buffer_in_smem(K) ? 0 : size_t(p.T) * buffer_cap(K) * sizeof(uint64_t);
}

void indexer_topk(const IndexerParams& p, int K, int32_t* indices, void* workspace, size_t workspace_bytes,
                  cudaStream_t stream, Variant variant) {
  constexpr const char* op = "indexer_topk";
  detail::validate_indexer_host(p, op);
  detail::validate_topk_budget(K, op);
  ::dsa::detail::require_ptr(indices, op, "indices");
  const Variant v = resolve_variant(p, variant, op);   // the op's one dispatch point
  const size_t need = indexer_topk_workspace_bytes(p, K, v);
  if (need > 0 && (workspace == nullptr || workspace_bytes < need))
    ::dsa::detail::fail(op, "workspace_bytes = ", workspace_bytes, " is less than the ", need, " required");
  if (p.T == 0) return;
  const int cap = buffer_cap(K);
  const bool in_smem = need == 0;
  const size_t smem = in_smem ? size_t(cap) * sizeof(uint64_t) : 0;
  auto* ws = static_cast<uint64_t*>(workspace);
  if (v != Variant::kExact) {
    const size_t fit = workspace_bytes / (std::max<size_t>(size_t(p.S), 1) * sizeof(float));
    const int rows = std::max(mma_chunk_rows(p), static_cast<int>(std::min<size_t>(fit, size_t(p.T))));
    auto* chunk_logits = static_cast<float*>(workspace);
    for (int t0 = 0; t0 < p.T; t0 += rows) {
      IndexerParams sub = p;
      sub.T = std::min(rows, p.T - t0);
      sub.q = static_cast<const uint8_t*>(p.q) + int64_t(t0) * p.HI * p.DI;
      sub.w = p.w + int64_t(t0) * p.HI;
      sub.ks = p.ks + t0;
      sub.ke = p.ke + t0;
      // sub.q stays 16-byte aligned (t0·HI·DI bytes, DI = 128), so v3's applicability holds per chunk.
      if (v == Variant::kWgmma) detail::indexer_logits_wgmma(sub, chunk_logits, stream);
      else detail::indexer_logits_mma(sub, chunk_logits, stream);
      topk_select(TopkParams{sub.T, p.S, K, chunk_logits, sub.ks, sub.ke, indices + int64_t(t0) * K}, nullptr, 0,
                  stream);
    }
    return;
  }
  switch (p.precision) {
    case Precision::kFp32:
      DSA_CUDA_CALL(op, cudaFuncSetAttribute(indexer_topk_v1_kernel<Precision::kFp32>,
                                             cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
      indexer_topk_v1_kernel<Precision::kFp32><<<p.T, kChunk, smem, stream>>>(p, K, indices, ws, cap, in_smem);
      break;
    case Precision::kBf16:
      DSA_CUDA_CALL(op, cudaFuncSetAttribute(indexer_topk_v1_kernel<Precision::kBf16>,
                                             cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
      indexer_topk_v1_kernel<Precision::kBf16><<<p.T, kChunk, smem, stream>>>(p, K, indices, ws, cap, in_smem);
      break;
    case Precision::kFp8:
      DSA_CUDA_CALL(op, cudaFuncSetAttribute(indexer_topk_v1_kernel<Precision::kFp8>,
                                             cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
      indexer_topk_v1_kernel<Precision::kFp8><<<p.T, kChunk, smem, stream>>>(p, K, indices, ws, cap, in_smem);
      break;
  }
  DSA_CUDA_LAUNCH_CHECK(op);
}

}  // namespace dsa::cuda
