// indexer_logits_paged.cu — op 11a on the GPU: indexer_logits_paged (DeepGEMM fp8_paged_mqa_logits
// with 2-D context_lens and always-cleaned logits) and paged_to_physical. This file is the op's one
// host dispatch point: variant kWgmma (FP8 Hopper tensor cores) lives in
// indexer_logits_paged_wgmma.cu, kMma (FP8 mma.sync, sm_89+) in indexer_logits_paged_mma.cu, variant
// kExact (every arch, any HI) is the v1 kernel below.
//
// Contract (ops.h §11): row r = b·next_n + n; logical key j < context_lens[r] lives in slot
// block_table[b, j/64]·64 + j%64 of the paged indexer cache (IndexerCacheParams layout);
//   logits[r, j] = k_scale[slot] · Σ_h w[r,h]·ReLU(q_fp8[r,h]·k_fp8[slot])    j < context_lens[r]
//   logits[r, j] = −inf                                                     otherwise (< max_context_len)
// The per-element arithmetic is indexer_logits v1's (detail::logit_v1<kFp8>, then one product with
// the slot scale). Data checks the CPU makes (lengths, page ids) cannot be made without a sync: a
// length outside [0, min(max_context_len, max_blocks·64)] is clamped into it, a page id outside
// [0, num_pages) yields −inf for its keys, and in paged_to_physical an index that cannot be mapped
// becomes −1 (cuda_ops.h contract).
// kExact plan: one thread per (r, j), kKeysPerBlock consecutive keys of one row per block; no shared
// memory (fp32 CUDA cores: the GPU oracle of the op).
#include <cmath>

#include "common/op_checks.h"
#include "cuda/indexer_common.cuh"
#include "cuda/indexer_logits_paged_mma.cuh"
#include "cuda/indexer_logits_paged_wgmma.cuh"

namespace dsa::cuda {
namespace {

constexpr int kKeysPerBlock = 128;
constexpr int kMapThreads = 256;
constexpr int64_t kPageBytes = int64_t(kCachePageTokens) * kIndexerRecordBytes;       // 8448
constexpr int64_t kPageScaleOffset = int64_t(kCachePageTokens) * kIndexerKeyDim;      // 8192

__global__ void indexer_logits_paged_v1_kernel(PagedIndexerParams p, int key_tiles, float* __restrict__ logits) {
  const int64_t tile = blockIdx.x;
  const int r = static_cast<int>(tile / key_tiles);
  const int j = static_cast<int>(tile % key_tiles) * kKeysPerBlock + threadIdx.x;
  if (j >= p.max_context_len) return;
  const int b = r / p.next_n;
  int len = __ldg(p.context_lens + r);
  const int table_tokens = p.max_blocks * kCachePageTokens;
  len = len < 0 ? 0 : len;
  len = len > p.max_context_len ? p.max_context_len : len;
  len = len > table_tokens ? table_tokens : len;
  float v = -INFINITY;
  if (j < len) {
    const int page = __ldg(p.block_table + int64_t(b) * p.max_blocks + j / kCachePageTokens);
    if (page >= 0 && page < p.num_pages) {
      const int o = j % kCachePageTokens;
      const int64_t page_base = int64_t(page) * kPageBytes;
      v = detail::logit_v1<Precision::kFp8>(p.q_fp8, int64_t(r) * p.HI * kIndexerKeyDim, p.cache,
                                            page_base + int64_t(o) * kIndexerKeyDim, p.w + int64_t(r) * p.HI, p.HI,
                                            kIndexerKeyDim);
      const float scale = __ldg(reinterpret_cast<const float*>(p.cache + page_base + kPageScaleOffset) + o);
      v = __fmul_rn(v, scale);
    }
  }
  logits[int64_t(r) * p.max_context_len + j] = v;
}

__global__ void paged_to_physical_kernel(int rows, int next_n, int K, const int32_t* __restrict__ block_table,
                                         int max_blocks, int num_pages, int32_t* __restrict__ indices) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= int64_t(rows) * K) return;
  const int32_t j = indices[i];
  if (j == kInvalidIndex) return;
  const int b = static_cast<int>(i / K) / next_n;
  int32_t out = kInvalidIndex;
  if (j >= 0 && j / kCachePageTokens < max_blocks) {
    const int32_t page = __ldg(block_table + int64_t(b) * max_blocks + j / kCachePageTokens);
    if (page >= 0 && page < num_pages) out = page * kCachePageTokens + j % kCachePageTokens;
  }
  indices[i] = out;
}

}  // namespace

void indexer_logits_paged(const PagedIndexerParams& p, float* logits, cudaStream_t stream, Variant variant) {
  constexpr const char* op = "indexer_logits_paged";
  ::dsa::detail::validate_paged_indexer_args(p, logits);  // host-visible part only (no data read)
  switch (resolve_variant(p, variant)) {   // the op's one dispatch point
    case Variant::kWgmma: detail::indexer_logits_paged_wgmma(p, logits, stream); return;
    case Variant::kMma: detail::indexer_logits_paged_mma(p, logits, stream); return;
    default: break;
  }
  const int key_tiles = detail::ceil_div(p.max_context_len, kKeysPerBlock);
  const int64_t blocks = int64_t(key_tiles) * p.B * p.next_n;
  indexer_logits_paged_v1_kernel<<<blocks, kKeysPerBlock, 0, stream>>>(p, key_tiles, logits);
  DSA_CUDA_LAUNCH_CHECK(op);
}

void paged_to_physical(int B, int next_n, int K, const int32_t* block_table, int max_blocks, int num_pages,
                       int32_t* indices, cudaStream_t stream) {
  constexpr const char* op = "paged_to_physical";
  ::dsa::detail::validate_paged_to_physical_args(B, next_n, K, block_table, max_blocks, num_pages, indices);
  const int rows = B * next_n;
  paged_to_physical_kernel<<<detail::ceil_div(int64_t(rows) * K, kMapThreads), kMapThreads, 0, stream>>>(
      rows, next_n, K, block_table, max_blocks, num_pages, indices);
  DSA_CUDA_LAUNCH_CHECK(op);
}

}  // namespace dsa::cuda
