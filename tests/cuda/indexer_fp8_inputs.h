// indexer_fp8_inputs.h — FP8 indexer inputs as production makes them, and the error bound of the
// wgmma logits on them, and their device copies; shared by the indexer_logits v3 and indexer_topk v3
// tests.
#pragma once

#include <cstdint>
#include <vector>

#include "cuda/device_buffer.h"
#include "dsa/ops.h"
#include "test_util.h"

namespace dsa::test {

constexpr int kWgmmaHI = 64;   // the head count indexer_logits v3 supports (DI = kIndexerKeyDim)

// The v3 logits' error bound on these inputs: kFp8AccumRel (test_util.h).

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

// Device copies of FP8 indexer inputs (T queries, S keys, ranges [ks, ke)) and the IndexerParams
// over them.
struct Fp8IndexerDevice {
  DeviceBuffer<uint8_t> q, k;
  DeviceBuffer<float> w, ksc;
  DeviceBuffer<int32_t> ks, ke;
  IndexerParams p;
  Fp8IndexerDevice(int T, int S, const Fp8IndexerInputs& d, const std::vector<int32_t>& ks_host,
                   const std::vector<int32_t>& ke_host)
      : q(d.q.data(), d.q.size()), k(d.k.data(), d.k.size()), w(d.w.data(), d.w.size()),
        ksc(d.ksc.data(), d.ksc.size()), ks(ks_host.data(), T), ke(ke_host.data(), T) {
    p.T = T;
    p.S = S;
    p.HI = kWgmmaHI;
    p.DI = kIndexerKeyDim;
    p.precision = Precision::kFp8;
    p.q = q.data();
    p.k = k.data();
    p.k_scale = ksc.data();
    p.w = w.data();
    p.ks = ks.data();
    p.ke = ke.data();
  }
};

}  // namespace dsa::test
