// indexer_logits.cu — op 3 on the GPU: the dispatch point of its variants and the kExact kernel
// (every arch, every precision).
//
// Contract (ops.h §3, DeepGEMM fp8_mqa_logits incl. cleaned logits):
//   logits[t,s] = k_scale[s] · Σ_h w[t,h] · ReLU(q[t,h]·k[s])   for s in [ks[t], ke[t])
//   logits[t,s] = −inf                                           elsewhere in [0, S)
// Per-element arithmetic: detail::logit_v1 (indexer_common.cuh), the order shared with the fused
// indexer_topk v1, so the two agree bit for bit. A malformed range (ks > ke, outside [0, S)) is
// treated as empty (cuda_ops.h). Version 2 (fp8 tensor cores) lives in indexer_logits_mma.cu and
// version 3 (fp8 wgmma, sm_90a) in indexer_logits_wgmma.cu; both are dispatched from here; this
// file is the one host dispatch point of the op.
//
// v1 plan: one thread per (t, s); a block covers kKeysPerBlock consecutive keys of one query, so the
// q row and w row are warp-uniform broadcast loads and the key rows stream through L1. No shared
// memory. Simple and slow by design (fp32 FMA, no reuse of k across queries): the correctness
// baseline and the sm_80 path; docs/kernels/indexer_logits.md has the napkin math.
#include <cmath>

#include "cuda/indexer_common.cuh"
#include "cuda/indexer_logits_mma.cuh"
#include "cuda/indexer_logits_wgmma.cuh"

namespace dsa::cuda {
namespace {

constexpr int kKeysPerBlock = 128;

template <Precision P>
__global__ void indexer_logits_v1_kernel(IndexerParams p, int key_tiles, float* __restrict__ logits) {
  const int64_t tile = blockIdx.x;
  const int t = static_cast<int>(tile / key_tiles);
  const int s = static_cast<int>(tile % key_tiles) * kKeysPerBlock + threadIdx.x;
  if (s >= p.S) return;
  int lo, hi;
  detail::clamp_range(__ldg(p.ks + t), __ldg(p.ke + t), p.S, lo, hi);
  float v = -INFINITY;
  if (s >= lo && s < hi) {
    v = detail::logit_v1<P>(p.q, int64_t(t) * p.HI * p.DI, p.k, int64_t(s) * p.DI, p.w + int64_t(t) * p.HI, p.HI,
                            p.DI);
    if constexpr (P == Precision::kFp8) v = __fmul_rn(v, __ldg(p.k_scale + s));
  }
  logits[int64_t(t) * p.S + s] = v;
}

}  // namespace

namespace detail {
void indexer_logits_v1(const IndexerParams& p, float* logits, cudaStream_t stream) {
  const int key_tiles = ceil_div(p.S, kKeysPerBlock);
  const int64_t blocks = int64_t(key_tiles) * p.T;
  if (blocks == 0) return;
  switch (p.precision) {
    case Precision::kFp32:
      indexer_logits_v1_kernel<Precision::kFp32><<<blocks, kKeysPerBlock, 0, stream>>>(p, key_tiles, logits);
      break;
    case Precision::kBf16:
      indexer_logits_v1_kernel<Precision::kBf16><<<blocks, kKeysPerBlock, 0, stream>>>(p, key_tiles, logits);
      break;
    case Precision::kFp8:
      indexer_logits_v1_kernel<Precision::kFp8><<<blocks, kKeysPerBlock, 0, stream>>>(p, key_tiles, logits);
      break;
  }
  DSA_CUDA_LAUNCH_CHECK("indexer_logits");
}
}  // namespace detail

void indexer_logits(const IndexerParams& p, float* logits, cudaStream_t stream, Variant variant) {
  constexpr const char* op = "indexer_logits";
  detail::validate_indexer_host(p, op);
  ::dsa::detail::require_ptr(logits, op, "logits");
  switch (resolve_variant(p, variant, op)) {   // the op's one dispatch point
    case Variant::kWgmma: detail::indexer_logits_wgmma(p, logits, stream); break;
    case Variant::kMma: detail::indexer_logits_mma(p, logits, stream); break;
    default: detail::indexer_logits_v1(p, logits, stream); break;
  }
}

}  // namespace dsa::cuda
