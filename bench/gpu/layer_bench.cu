// layer_bench.cu — one DSA attention layer forward at L = 131072 prefill on the GPU, end to end,
// for the layer-level comparison with dense causal attention (torch SDPA / cuDNN, measured by
// bench/gpu/attention_torch.py in the same device run). Every op runs its default path (no variant
// named: kAuto picks for the inputs' dtypes; the "layer:" line says which variants ran):
//   indexer   FP8 lightning indexer, HI = 64 heads × DI = 128, e4m3 q/k (kAuto: kWgmma on sm_90a,
//             else kMma)
//   top-k     K = 2048, fused indexer_topk (chunked logits in a ≤ 128 MiB workspace: the selection
//             path's memory is O(chunk·S + T_block·K), never the [L, L] logits)
//   attention sparse MQA, H = 128, Dqk = 576, Dv = 512, bf16 q/kv (kAuto: kWgmma on sm_90a, else
//             kMma), over the selected keys
// Causal: query t sees keys [0, t]. Queries are processed in blocks of kBlockRows rows so the
// attention buffers fit (bf16 q 604 MB, fp32 out 1 GiB per block); block b's key prefix is S_b = its
// last row + 1 (the cache so far), which is what a blocked prefill passes.
// Inputs are random (a device hash): q/k of the indexer as e4m3 codes (|x| ≤ 30, never NaN), k_scale
// and w uniform, kv and q of the attention uniform in [−1, 1], rounded to bf16 once before any timing.
// The attention q buffer of one block is reused for every block (its values do not change the work
// done; a real layer would project them per block).
// Timing: CUDA events around the whole layer (all blocks, both phases), plus events between the
// phases of every block for the split; one warm-up layer (first-call probes, cuBLAS-free), then the
// median of kReps layers.
// Usage: dsa_bench_layer [sdpa_ms] [indexer_ws_mib]   (sdpa_ms: attention_torch.py's SDPA time at
//        L = 131072 for the summary ratio; without it the ratio is omitted; indexer_ws_mib: give
//        indexer_topk this much workspace instead of its query's ≤ 128 MiB — larger logits chunks).
//        "quick" as the first argument runs L = 16384.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bench_util.cuh"
#include "dsa/cuda_ops.h"

using namespace dsa;
using namespace dsa::bench;

namespace {

constexpr int kLayerRows = 131072;  // L (the 128K prefill)
constexpr int kBlockRows = 4096;    // query rows per block
constexpr int kIndexerHeads = 64, kHeads = 128, kDqk = 576, kDv = 512, kTopK = 2048;
constexpr float kSoftmaxScale = 0.0416667f;  // 1/√576 (any positive scale does the same work)
constexpr int kReps = 3;

// e4m3 codes with exponent field ≤ 11 (|x| ≤ 1.875·2^4 = 30): finite, never the NaN code S.1111.111.
__global__ void fill_e4m3(uint8_t* x, size_t n, uint64_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const uint32_t h = mix(seed * 0x9E3779B97F4A7C15ULL + i);
    x[i] = static_cast<uint8_t>((h & 0x80u) | ((h >> 8) % 96u));  // 96 = 12 exponents × 8 mantissas
  }
}
__global__ void fill_causal(int32_t* ks, int32_t* ke, int L) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t < L) { ks[t] = 0; ke[t] = t + 1; }
}

struct Split {
  double total = 0, indexer = 0, attention = 0;
};

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "quick") == 0;
  const double sdpa_ms = (argc > 1 && !quick) ? std::atof(argv[1]) : 0.0;
  const size_t indexer_ws_request = argc > 2 ? size_t(std::max(0, std::atoi(argv[2]))) << 20 : 0;
  const int L = quick ? kLayerRows / 8 : kLayerRows;
  const int TB = std::min(kBlockRows, L), blocks = (L + TB - 1) / TB;
  cudaDeviceProp prop{};
  CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s (sm_%d%d, %d SMs)\n", prop.name, prop.major, prop.minor, prop.multiProcessorCount);

  // ── inputs ──
  uint8_t* qi = dalloc<uint8_t>(size_t(L) * kIndexerHeads * kIndexerKeyDim);  // indexer q, e4m3
  uint8_t* ki = dalloc<uint8_t>(size_t(L) * kIndexerKeyDim);                  // indexer k, e4m3
  float* k_scale = dalloc<float>(L);
  float* w = dalloc<float>(size_t(L) * kIndexerHeads);
  int32_t *ks = dalloc<int32_t>(L), *ke = dalloc<int32_t>(L);
  float* out = dalloc<float>(size_t(TB) * kHeads * kDv);
  float* lse = dalloc<float>(size_t(TB) * kHeads);
  fill_e4m3<<<kFillBlocks, kFillThreads>>>(qi, size_t(L) * kIndexerHeads * kIndexerKeyDim, 1);
  fill_e4m3<<<kFillBlocks, kFillThreads>>>(ki, size_t(L) * kIndexerKeyDim, 2);
  fill_uniform<<<kFillBlocks, kFillThreads>>>(k_scale, L, 3, 0.5f, 1.0f);
  fill_uniform<<<kFillBlocks, kFillThreads>>>(w, size_t(L) * kIndexerHeads, 4, -1.0f, 1.0f);
  fill_causal<<<(L + 255) / 256, 256>>>(ks, ke, L);
  CHECK(cudaGetLastError());
  // attention q of one block (reused) and kv: drawn in fp32, kept as bf16
  uint16_t *qa = nullptr, *kv = nullptr;
  {
    float* f = dalloc<float>(std::max(size_t(TB) * kHeads, size_t(L)) * kDqk);
    urand(f, size_t(TB) * kHeads * kDqk, 5);
    qa = to_bf16(f, size_t(TB) * kHeads * kDqk);
    urand(f, size_t(L) * kDqk, 6);
    kv = to_bf16(f, size_t(L) * kDqk);
    CHECK(cudaDeviceSynchronize());
    CHECK(cudaFree(f));
  }

  // ── per-block params; workspaces sized for the largest block (the last one: S = L) ──
  auto indexer_params = [&](int b) {
    const int t0 = b * TB;
    IndexerParams p;
    p.T = std::min(TB, L - t0);
    p.S = t0 + p.T;  // the key prefix this block can see
    p.HI = kIndexerHeads;
    p.DI = kIndexerKeyDim;
    p.precision = Precision::kFp8;
    p.q = qi + size_t(t0) * kIndexerHeads * kIndexerKeyDim;
    p.k = ki;
    p.k_scale = k_scale;
    p.w = w + size_t(t0) * kIndexerHeads;
    p.ks = ks + t0;
    p.ke = ke + t0;
    return p;
  };
  int32_t* idx = nullptr;  // allocated below (measured), before any attention_params use
  auto attention_params = [&](int b) {
    AttentionParams p;
    p.T = std::min(TB, L - b * TB);
    p.S = b * TB + p.T;
    p.H = kHeads;
    p.Dqk = kDqk;
    p.Dv = kDv;
    p.scale = kSoftmaxScale;
    p.dtype = DType::kBF16;
    p.q_bf16 = qa;
    p.kv_bf16 = kv;
    p.K = kTopK;
    p.indices = idx;
    return p;
  };
  // The variants kAuto runs, resolved before the memory measurement (the first resolution probes the
  // binary's code for the device: a tiny allocation + launch); resolution reads shapes and pointers
  // only, so any non-null indices pointer serves.
  const cuda::Variant iv = cuda::resolve_variant(indexer_params(blocks - 1), cuda::Variant::kAuto, "indexer_topk");
  AttentionParams probe_a = attention_params(blocks - 1);
  probe_a.indices = ks;
  const cuda::Variant av = cuda::resolve_variant(probe_a, cuda::Variant::kAuto, "sparse_attention_forward");
  // The selection path's device memory: the ops allocate nothing, so it is exactly the indices of one
  // block + the indexer_topk workspace; cudaMemGetInfo around their allocation measures it (2 MiB
  // granularity).
  size_t free_before = 0, free_after = 0, total_mem = 0;
  CHECK(cudaDeviceSynchronize());
  CHECK(cudaMemGetInfo(&free_before, &total_mem));
  idx = dalloc<int32_t>(size_t(TB) * kTopK);
  const AttentionParams last_a = attention_params(blocks - 1);
  size_t ws_i = 0, ws_a = 0;
  for (int b = 0; b < blocks; ++b) {
    ws_i = std::max({ws_i, cuda::indexer_topk_workspace_bytes(indexer_params(b), kTopK), indexer_ws_request});
    ws_a = std::max(ws_a, cuda::sparse_attention_forward_workspace_bytes(attention_params(b)));
  }
  const size_t idx_bytes = size_t(TB) * kTopK * sizeof(int32_t);
  void* wsi = ws_i ? dalloc<char>(ws_i) : nullptr;
  CHECK(cudaMemGetInfo(&free_after, &total_mem));
  void* wsa = ws_a ? dalloc<char>(ws_a) : nullptr;
  const double mib = 1.0 / (1 << 20);
  std::printf("layer: L=%d, %d blocks of %d query rows, causal; indexer HI=%d DI=%d fp8 + top-%d fused "
              "indexer_topk (default: %s); sparse attention H=%d %d/%d bf16 (default: %s)\n",
              L, blocks, TB, kIndexerHeads, kIndexerKeyDim, kTopK, cuda::variant_name(iv), kHeads, kDqk, kDv,
              cuda::variant_name(av));
  std::printf("selection path memory: indexer_topk workspace %.1f MiB + indices %.1f MiB = %.1f MiB "
              "(measured %.1f MiB; unfused logits of one block: %.1f MiB; of the layer: %.1f GiB)\n",
              ws_i * mib, idx_bytes * mib, (ws_i + idx_bytes) * mib, double(free_before - free_after) * mib,
              double(TB) * L * 4 * mib,
              double(L) * L * 4 / double(1ull << 30));
  std::printf("attention workspace: %.1f MiB\n", ws_a * mib);

  // ── one layer: per block, fused indexer + top-k, then sparse attention; events between phases ──
  std::vector<cudaEvent_t> ev(size_t(2 * blocks + 1));
  for (auto& e : ev) CHECK(cudaEventCreate(&e));
  auto layer = [&]() {
    CHECK(cudaEventRecord(ev[0]));
    for (int b = 0; b < blocks; ++b) {
      cuda::indexer_topk(indexer_params(b), kTopK, idx, wsi, ws_i, nullptr);
      CHECK(cudaEventRecord(ev[size_t(2 * b + 1)]));
      cuda::sparse_attention_forward(attention_params(b), AttentionForwardOut{out, lse, nullptr}, wsa, ws_a,
                                     nullptr);
      CHECK(cudaEventRecord(ev[size_t(2 * b + 2)]));
    }
    CHECK(cudaEventSynchronize(ev.back()));
    CHECK(cudaGetLastError());
    Split s;
    float m = 0;
    CHECK(cudaEventElapsedTime(&m, ev[0], ev.back()));
    s.total = m;
    for (int b = 0; b < blocks; ++b) {
      CHECK(cudaEventElapsedTime(&m, ev[size_t(2 * b)], ev[size_t(2 * b + 1)]));
      s.indexer += m;
      CHECK(cudaEventElapsedTime(&m, ev[size_t(2 * b + 1)], ev[size_t(2 * b + 2)]));
      s.attention += m;
    }
    return s;
  };
  layer();  // warm-up: first-call probes, kernel attribute setup
  std::vector<Split> runs;
  for (int r = 0; r < kReps; ++r) runs.push_back(layer());
  std::sort(runs.begin(), runs.end(), [](const Split& a, const Split& b) { return a.total < b.total; });
  const Split med = runs[runs.size() / 2];
  for (const Split& s : runs)
    std::printf("  run: total %.1f ms (indexer+topk %.1f, attention %.1f)\n", s.total, s.indexer, s.attention);

  // ── sanity of the last block's output: full selections of distinct causal keys, finite out ──
  {
    const int T = last_a.T, t0 = (blocks - 1) * TB;
    std::vector<int32_t> h(size_t(T) * kTopK);
    CHECK(cudaMemcpy(h.data(), idx, h.size() * sizeof(int32_t), cudaMemcpyDeviceToHost));
    int bad = 0;
    for (int t = 0; t < T; ++t) {
      std::vector<int32_t> row(h.begin() + size_t(t) * kTopK, h.begin() + size_t(t + 1) * kTopK);
      const int want = std::min(kTopK, t0 + t + 1);
      std::sort(row.begin(), row.end());
      const bool ok = std::adjacent_find(row.end() - want, row.end()) == row.end() && row[size_t(kTopK - want)] >= 0 &&
                      row.back() <= t0 + t && (want == kTopK || row[size_t(kTopK - want - 1)] == kInvalidIndex);
      bad += ok ? 0 : 1;
    }
    std::vector<float> o(size_t(kHeads) * kDv);
    CHECK(cudaMemcpy(o.data(), out + size_t(T - 1) * kHeads * kDv, o.size() * sizeof(float), cudaMemcpyDeviceToHost));
    int nonfinite = 0;
    for (float x : o) nonfinite += std::isfinite(x) ? 0 : 1;
    std::printf("check: last block %d rows with a malformed selection, %d non-finite outputs in its last row\n", bad,
                nonfinite);
    if (bad || nonfinite) return 1;
  }

  // ── FLOPs (dsa-spec §3 conventions): indexer causal 2·(Σ_t (t+1))·HI·DI; attention 2·L·K·H·(Dqk+Dv) ──
  const double idx_flop = 2.0 * (double(L) * (L + 1) / 2) * kIndexerHeads * kIndexerKeyDim;
  const double att_flop = 2.0 * double(L) * kTopK * kHeads * (kDqk + kDv);
  std::printf("indexer+topk %.1f ms (indexer %.0f TFLOP/s effective incl. top-k), attention %.1f ms (%.0f TFLOP/s)\n",
              med.indexer, idx_flop / med.indexer / 1e9, med.attention, att_flop / med.attention / 1e9);
  if (sdpa_ms > 0)
    std::printf("layer L=%d: DSA %.1f ms (indexer+topk %.1f, attention %.1f) vs SDPA %.1f ms → %.2f×\n", L, med.total,
                med.indexer, med.attention, sdpa_ms, sdpa_ms / med.total);
  else
    std::printf("layer L=%d: DSA %.1f ms (indexer+topk %.1f, attention %.1f) (no SDPA time given)\n", L, med.total,
                med.indexer, med.attention);
  for (auto& e : ev) cudaEventDestroy(e);
  for (void* p : std::vector<void*>{qi, ki, k_scale, w, ks, ke, qa, kv, out, lse, idx, wsi, wsa}) cudaFree(p);
  return 0;
}
