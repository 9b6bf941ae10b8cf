// indexer_fp8_inputs.h — FP8 indexer inputs as production makes them, and the error bound of the
// wgmma logits on them; shared by the indexer_logits v3 and indexer_topk v3 tests.
#pragma once

#include <cstdint>
#include <vector>

#include "dsa/ops.h"
#include "test_util.h"

namespace dsa::test {

constexpr int kWgmmaHI = 64;   // the head count indexer_logits v3 supports (DI = kIndexerKeyDim)

// |v3 logit − fp64| ≤ kFp8AccumRel · mag, mag = k_scale·Σ_h |w|·Σ_d |q·k|: each k32 wgmma step aligns
// its 32 products and the running sum to the largest exponent and keeps ≈ 14 bits (DeepSeek-V3
// §3.3.2) → ≤ ~2^-13 of Σ|q·k| per step; four steps → 2^-11; ×4 margin for the unpublished details
// of the alignment.
constexpr double kFp8AccumRel = 1.0 / (1 << 9);

struct Fp8IndexerInputs {
  std::vector<uint8_t> q, k;     // e4m3 [T, HI, DI], [S, DI]
  std::vector<float> w, ksc;     // w [T, HI] (q's scale folded in), k_scale [S]
};

// Normal q, k, w quantised by cpu::indexer_quantize_fp8 with ue8m0 scales (the V3.2 path).
inline Fp8IndexerInputs quantized_normal_inputs(int T, int S, uint64_t seed) {
  Rng rng(seed);
  const std::vector<float> qf = rng.normal_vec(size_t(T) * kWgmmaHI * kIndexerKeyDim),
                           kf = rng.normal_vec(size_t(S) * kIndexerKeyDim), wf = rng.normal_vec(size_t(T) * kWgmmaHI);
  Fp8IndexerInputs d;
  d.q.resize(qf.size());
  d.k.resize(kf.size());
  d.w.resize(wf.size());
  d.ksc.resize(S);
  cpu::indexer_quantize_fp8(IndexerQuantizeParams{T, S, kWgmmaHI, kIndexerKeyDim, ScaleFormat::kUe8m0, qf.data(),
                                                  kf.data(), wf.data(), d.q.data(), d.k.data(), d.ksc.data(),
                                                  d.w.data()});
  return d;
}

}  // namespace dsa::test
