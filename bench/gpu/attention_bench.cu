// attention_bench.cu — GPU timings of the attention-side ops (sparse prefill forward / backward,
// sparse decode, dense forward, indexer KL) with the FLOP conventions of dsa-spec §3:
//   sparse fwd   2·T·K·H·(Dqk + Dv)                     (FlashMLA; every slot counted)
//   sparse bwd   2·T·K·H·(Dv + 3·Dqk + Dv)              (TileLang sparse_mla_bwd; the five matmuls
//                S = q·kᵀ (Dqk), dP = dO·vᵀ (Dv), dq = dS·k (Dqk), dk = dSᵀ·q (Dqk), dv = Pᵀ·dO (Dv))
//   decode       B·next_n·H·(2·576·K + 2·K·512)         (FlashMLA decode)
//   dense fwd    causal: 2·(Σ_t (ke−ks))·H·(Dqk + Dv)
//   indexer KL   2·T·K·H·Dqk (the score recompute)
// Bytes: every input read once + every output written once (the gathered kv counted per query,
// FlashMLA's convention: T·K·Dqk·4). Inputs are random (a hash on the device, never zeros), the
// median of `reps` event-timed runs after one warm-up is reported.
// Usage: attention_bench [quick]   ("quick" shrinks every shape ×8 for a smoke run).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "bench_util.cuh"
#include "dsa/cuda_ops.h"

using namespace dsa;
using namespace dsa::bench;

namespace {

// Sparse selection of query t: K distinct-ish random keys in [0, min(S, causal end)), −1 beyond.
__global__ void fill_indices(int32_t* idx, int T, int K, int S, bool causal, uint64_t seed) {
  const size_t n = size_t(T) * K;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const int t = static_cast<int>(i / K), j = static_cast<int>(i % K);
    const int avail = causal ? min(S, S - T + t + 1) : S;
    idx[i] = j < avail ? static_cast<int32_t>(mix(seed + i) % static_cast<uint32_t>(avail)) : -1;
  }
}
__global__ void fill_ranges(int32_t* ks, int32_t* ke, int T, int S) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t < T) { ks[t] = 0; ke[t] = S - T + t + 1; }
}

void report(const char* op, const std::string& shape, double ms, double flop, double bytes) {
  std::printf("%-26s %-44s %12.1f us %9.2f TFLOP/s %9.1f GB/s\n", op, shape.c_str(), ms * 1e3, flop / ms / 1e9,
              bytes / ms / 1e6);
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "quick") == 0;
  const int div = quick ? 8 : 1;
  cudaDeviceProp prop{};
  CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s (sm_%d%d, %d SMs)\n", prop.name, prop.major, prop.minor, prop.multiProcessorCount);
  const int H = 128, Dqk = 576, Dv = 512, K = 2048;
  const float scale = 0.1352f;

  // ── sparse prefill forward: T = 4096 queries, S = 8192 keys, K = 2048 (FlashMLA's perf case) ──
  {
    const int T = 4096 / div, S = 8192 / div, Kf = K / div;
    float *q = dalloc<float>(size_t(T) * H * Dqk), *kv = dalloc<float>(size_t(S) * Dqk);
    float *out = dalloc<float>(size_t(T) * H * Dv), *lse = dalloc<float>(size_t(T) * H);
    int32_t* idx = dalloc<int32_t>(size_t(T) * Kf);
    urand(q, size_t(T) * H * Dqk, 1);
    urand(kv, size_t(S) * Dqk, 2);
    fill_indices<<<1024, 256>>>(idx, T, Kf, S, false, 3);
    AttentionParams p;
    p.T = T; p.S = S; p.H = H; p.Dqk = Dqk; p.Dv = Dv; p.scale = scale; p.q = q; p.kv = kv; p.K = Kf; p.indices = idx;
    AttentionForwardOut o{out, lse, nullptr};
    std::vector<float> ref_out, v3_out;
    const int v5 = dsa::cuda::kSparseAttentionWgmmaVersion;
    std::printf("  (v5 wgmma %s)\n", dsa::cuda::sparse_attention_forward_wgmma_available(p)
                                         ? "runs here" : "does not run here: the v5 row below is v4");
    for (int v : {1, dsa::cuda::kSparseAttentionBf16Version, dsa::cuda::kSparseAttentionPipelinedVersion, v5}) {
      const size_t wsb = dsa::cuda::sparse_attention_forward_workspace_bytes(p, v);
      void* ws = wsb ? dalloc<char>(wsb) : nullptr;
      const double ms = time_ms([&] { dsa::cuda::sparse_attention_forward(p, o, ws, wsb, nullptr, v); }, 3);
      if (ws) cudaFree(ws);
      // Accuracy of each version against v1 (fp32; itself checked against fp64 by the test table).
      std::vector<float> h(size_t(T) * H * Dv);
      CHECK(cudaMemcpy(h.data(), out, h.size() * sizeof(float), cudaMemcpyDeviceToHost));
      if (v == 1) ref_out = h;
      double num = 0, den = 0;
      for (size_t i = 0; i < h.size(); ++i) {
        num += double(h[i] - ref_out[i]) * (h[i] - ref_out[i]);
        den += double(ref_out[i]) * ref_out[i];
      }
      std::printf("  (v%d out vs v1: relative L2 error %.2e)\n", v, std::sqrt(num / den));
      if (v == dsa::cuda::kSparseAttentionBf16Version) v3_out = h;
      if (v == v5 && !v3_out.empty()) {
        // Cross-check against v3 (same bf16 operand rounding) on the first 64 (query, head) rows and
        // on every row: relative L2 above the bf16 test tolerance (2e-2) means a broken kernel.
        for (const size_t rows : {size_t(64), size_t(T) * H}) {
          double n5 = 0, d5 = 0, worst = 0;
          for (size_t i = 0; i < rows * Dv; ++i) {
            const double e = double(h[i]) - v3_out[i];
            n5 += e * e;
            d5 += double(v3_out[i]) * v3_out[i];
            worst = std::max(worst, std::fabs(e));
          }
          const double r5 = std::sqrt(n5 / d5);
          std::printf("  (v5 vs v3 over %zu rows: relative L2 %.2e, max |diff| %.2e)%s\n", rows, r5, worst,
                      r5 <= 2e-2 ? "" : "  MISMATCH");
        }
      }
      const double flop = 2.0 * T * Kf * H * (Dqk + Dv);
      const double bytes = 4.0 * (double(T) * H * Dqk + double(T) * Kf * Dqk + double(T) * H * (Dv + 1)) + 4.0 * T * Kf;
      char shape[128];
      std::snprintf(shape, sizeof shape, "T=%d S=%d K=%d H=%d %d/%d", T, S, Kf, H, Dqk, Dv);
      report(("sparse_fwd_v" + std::to_string(v)).c_str(), shape, ms, flop, bytes);
    }
    // ── sparse backward at T/4 (same per-query work; the rate is what matters) ──
    const int Tb = T / 4;
    AttentionParams pb = p;
    pb.T = Tb;
    float *dout = dalloc<float>(size_t(T) * H * Dv), *dq = dalloc<float>(size_t(T) * H * Dqk),
          *dkv = dalloc<float>(size_t(S) * Dqk);
    urand(dout, size_t(T) * H * Dv, 4);
    dsa::cuda::sparse_attention_forward(pb, o, nullptr, 1);
    const size_t wsb = dsa::cuda::sparse_attention_backward_workspace_bytes(pb);
    void* ws = dalloc<char>(wsb);
    AttentionBackwardArgs b{dout, out, lse, dq, dkv};
    const double ms = time_ms([&] { dsa::cuda::sparse_attention_backward(pb, b, ws, wsb, nullptr, 1); }, 3);
    const double flop = 2.0 * Tb * Kf * H * (Dv + 3.0 * Dqk + Dv);
    const double bytes = 4.0 * (double(Tb) * H * (2 * Dqk + 2 * Dv + 2) + 2.0 * Tb * Kf * Dqk + double(S) * Dqk);
    char shape[128];
    std::snprintf(shape, sizeof shape, "T=%d S=%d K=%d H=%d ws=%.0fMiB", Tb, S, Kf, H, wsb / 1048576.0);
    report("sparse_bwd_v1", shape, ms, flop, bytes);
    cudaFree(ws);
    // ── bf16 tensor-core backward (v3): at Tb against v1's dq / dkv, then at the full T ──
    // Bytes for v3 (docs/kernels/sparse_attention.md): the fp32 contract I/O (q, dout, out, lse, dq) plus
    // what the chunks move through HBM per query: Kg written once and read by two GEMMs (3·K·Dqk·2), SP
    // written and read (2·2H·K·4), G written once and read 1.5 times (2.5·2H·K·2), part written and read
    // (2·K·Dqk·4); kv read, kv bf16 written, dkv read and written (≈ 3·S·Dqk·4). The gathered rows come
    // from the bf16 copy of kv, L2-resident at S = 8192 (9.4 MB), so they are not counted again.
    {
      auto rel = [](const std::vector<float>& a, const std::vector<float>& b) {
        double num = 0, den = 0;
        for (size_t i = 0; i < a.size(); ++i) {
          num += double(a[i] - b[i]) * (a[i] - b[i]);
          den += double(b[i]) * b[i];
        }
        return std::sqrt(num / den);
      };
      std::vector<float> dq1(size_t(Tb) * H * Dqk), dkv1(size_t(S) * Dqk), dq3(dq1.size()), dkv3(dkv1.size());
      CHECK(cudaMemcpy(dq1.data(), dq, dq1.size() * sizeof(float), cudaMemcpyDeviceToHost));
      CHECK(cudaMemcpy(dkv1.data(), dkv, dkv1.size() * sizeof(float), cudaMemcpyDeviceToHost));
      const int v3 = dsa::cuda::kSparseAttentionBf16Version;
      for (const int Tv : {Tb, T}) {
        AttentionParams pv = p;
        pv.T = Tv;
        const size_t wsv = dsa::cuda::sparse_attention_backward_workspace_bytes(pv, v3);
        void* w3 = dalloc<char>(wsv);
        const double ms3 = time_ms([&] { dsa::cuda::sparse_attention_backward(pv, b, w3, wsv, nullptr, v3); }, 3);
        cudaFree(w3);
        if (Tv == Tb) {
          CHECK(cudaMemcpy(dq3.data(), dq, dq3.size() * sizeof(float), cudaMemcpyDeviceToHost));
          CHECK(cudaMemcpy(dkv3.data(), dkv, dkv3.size() * sizeof(float), cudaMemcpyDeviceToHost));
          std::printf("  (v3 vs v1 at T=%d: dq relative L2 error %.2e, dkv %.2e)\n", Tb, rel(dq3, dq1), rel(dkv3, dkv1));
        }
        const double flop3 = 2.0 * Tv * Kf * H * (Dv + 3.0 * Dqk + Dv);
        const double bytes3 = 4.0 * (double(Tv) * H * (2 * Dqk + 2 * Dv + 2) + 3.0 * S * Dqk) +
                              double(Tv) * (3.0 * Kf * Dqk * 2 + 2.0 * 2 * H * Kf * 4 + 2.5 * 2 * H * Kf * 2 +
                                            2.0 * Kf * Dqk * 4);
        std::snprintf(shape, sizeof shape, "T=%d S=%d K=%d H=%d ws=%.0fMiB", Tv, S, Kf, H, wsv / 1048576.0);
        report("sparse_bwd_v3", shape, ms3, flop3, bytes3);
      }
    }
    cudaFree(dout); cudaFree(dq); cudaFree(dkv);
    cudaFree(q); cudaFree(kv); cudaFree(out); cudaFree(lse); cudaFree(idx);
  }
  // ── bf16 sparse forward with a 128K-key cache (302 MiB fp32 kv: gathers miss L2) ──
  {
    const int T = 4096 / div, S = 131072 / div, Kf = K / div;
    float *q = dalloc<float>(size_t(T) * H * Dqk), *kv = dalloc<float>(size_t(S) * Dqk);
    float *out = dalloc<float>(size_t(T) * H * Dv), *lse = dalloc<float>(size_t(T) * H);
    int32_t* idx = dalloc<int32_t>(size_t(T) * Kf);
    urand(q, size_t(T) * H * Dqk, 21);
    urand(kv, size_t(S) * Dqk, 22);
    fill_indices<<<1024, 256>>>(idx, T, Kf, S, true, 23);
    AttentionParams p;
    p.T = T; p.S = S; p.H = H; p.Dqk = Dqk; p.Dv = Dv; p.scale = scale; p.q = q; p.kv = kv; p.K = Kf; p.indices = idx;
    AttentionForwardOut o{out, lse, nullptr};
    for (int v : {dsa::cuda::kSparseAttentionBf16Version, dsa::cuda::kSparseAttentionPipelinedVersion,
                  dsa::cuda::kSparseAttentionWgmmaVersion}) {
    const size_t wsb = dsa::cuda::sparse_attention_forward_workspace_bytes(p, v);
    void* ws = wsb ? dalloc<char>(wsb) : nullptr;
    const double ms = time_ms([&] { dsa::cuda::sparse_attention_forward(p, o, ws, wsb, nullptr, v); }, 5);
    if (ws) cudaFree(ws);
    const double flop = 2.0 * T * Kf * H * (Dqk + Dv);
    const double bytes = 4.0 * (double(T) * H * Dqk + double(T) * Kf * Dqk + double(T) * H * (Dv + 1)) + 4.0 * T * Kf;
    char shape[128];
    std::snprintf(shape, sizeof shape, "T=%d S=%d K=%d H=%d last rows", T, S, Kf, H);
    report(("sparse_fwd_v" + std::to_string(v)).c_str(), shape, ms, flop, bytes);
    std::printf("  (L=128K prefill = %d such query blocks: %.1f ms of sparse attention)\n", S / T, ms * (S / T));
    }
    cudaFree(q); cudaFree(kv); cudaFree(out); cudaFree(lse); cudaFree(idx);
  }
  // ── dense causal forward (MQA 576/512, the oracle) at T = S = 2048 ──
  {
    const int T = 2048 / div, S = T;
    float *q = dalloc<float>(size_t(T) * H * Dqk), *kv = dalloc<float>(size_t(S) * Dqk);
    float *out = dalloc<float>(size_t(T) * H * Dv), *lse = dalloc<float>(size_t(T) * H);
    int32_t *ks = dalloc<int32_t>(T), *ke = dalloc<int32_t>(T);
    urand(q, size_t(T) * H * Dqk, 5);
    urand(kv, size_t(S) * Dqk, 6);
    fill_ranges<<<(T + 255) / 256, 256>>>(ks, ke, T, S);
    AttentionParams p;
    p.T = T; p.S = S; p.H = H; p.Dqk = Dqk; p.Dv = Dv; p.scale = scale; p.q = q; p.kv = kv; p.ks = ks; p.ke = ke;
    AttentionForwardOut o{out, lse, nullptr};
    const double ms = time_ms([&] { dsa::cuda::dense_attention_forward(p, o, nullptr, 1); }, 3);
    const double pairs = double(T) * (T + 1) / 2;
    char shape[128];
    std::snprintf(shape, sizeof shape, "causal T=S=%d H=%d %d/%d", T, H, Dqk, Dv);
    report("dense_fwd_v1", shape, ms, 2.0 * pairs * H * (Dqk + Dv),
           4.0 * (double(T) * H * (Dqk + Dv + 1) + double(S) * Dqk));
    cudaFree(q); cudaFree(kv); cudaFree(out); cudaFree(lse); cudaFree(ks); cudaFree(ke);
  }
  // ── sparse decode: B = 128, next_n = 2, H = 128, K = 2048, FP8 records (FlashMLA's perf case) ──
  {
    const int B = 128 / div, nn = 2, slots = 65536 / div, rows = B * nn;
    float* q = dalloc<float>(size_t(rows) * H * 576);
    float *out = dalloc<float>(size_t(rows) * H * 512), *lse = dalloc<float>(size_t(rows) * H);
    int32_t* idx = dalloc<int32_t>(size_t(rows) * K);
    float* kvf = dalloc<float>(size_t(slots) * 576);
    uint8_t* rec = dalloc<uint8_t>(size_t(slots) * kMlaRecordBytes);
    urand(q, size_t(rows) * H * 576, 7);
    urand(kvf, size_t(slots) * 576, 8);
    MlaCacheParams mp;
    mp.N = slots; mp.format = ScaleFormat::kFloat; mp.kv = kvf; mp.records = rec;
    dsa::cuda::mla_cache_pack(mp, nullptr);
    fill_indices<<<1024, 256>>>(idx, rows, K, slots, false, 9);
    SparseDecodeParams p;
    p.B = B; p.next_n = nn; p.H = H; p.K = K; p.num_slots = slots; p.scale = scale;
    p.format = KvCacheFormat::kFp8Record; p.q = q; p.cache = rec; p.indices = idx; p.out = out; p.lse = lse;
    const size_t wsb = dsa::cuda::sparse_attention_decode_workspace_bytes(p);
    void* ws = wsb ? dalloc<char>(wsb) : nullptr;
    const double flop = double(B) * H * nn * (2.0 * 576 * K + 2.0 * K * 512);
    const double bytes = 4.0 * rows * H * (576 + 513) + double(rows) * K * kMlaRecordBytes;
    char shape[128];
    std::snprintf(shape, sizeof shape, "B=%d next_n=%d H=%d K=%d fp8", B, nn, H, K);
    for (int v : {1, dsa::cuda::kSparseAttentionBf16Version}) {
      const double ms = time_ms([&] { dsa::cuda::sparse_attention_decode(p, ws, wsb, nullptr, v); }, 5);
      report(("sparse_decode_v" + std::to_string(v)).c_str(), shape, ms, flop, bytes);
    }
    if (ws) cudaFree(ws);
    cudaFree(q); cudaFree(out); cudaFree(lse); cudaFree(idx); cudaFree(kvf); cudaFree(rec);
  }
  // ── indexer KL (sparse mode): T = 1024, K = 2048, H = 128, Dqk = 576 ──
  {
    const int T = 1024 / div, S = 8192 / div, Kf = K / div;
    float *q = dalloc<float>(size_t(T) * H * Dqk), *kv = dalloc<float>(size_t(S) * Dqk);
    float *lse = dalloc<float>(size_t(T) * H), *I = dalloc<float>(size_t(T) * Kf), *dI = dalloc<float>(size_t(T) * Kf);
    float *loss = dalloc<float>(T), *out = dalloc<float>(size_t(T) * H * Dv);
    int32_t* idx = dalloc<int32_t>(size_t(T) * Kf);
    urand(q, size_t(T) * H * Dqk, 10);
    urand(kv, size_t(S) * Dqk, 11);
    urand(I, size_t(T) * Kf, 12, -4.f, 4.f);
    fill_indices<<<1024, 256>>>(idx, T, Kf, S, false, 13);
    AttentionParams a;
    a.T = T; a.S = S; a.H = H; a.Dqk = Dqk; a.Dv = Dv; a.scale = scale; a.q = q; a.kv = kv; a.K = Kf; a.indices = idx;
    dsa::cuda::sparse_attention_forward(a, AttentionForwardOut{out, lse, nullptr}, nullptr, 1);
    IndexerKlParams kp;
    kp.attn = a; kp.lse = lse; kp.index_logits = I;
    const double flop = 2.0 * T * Kf * H * Dqk;
    const double bytes = 4.0 * (double(T) * H * (Dqk + 1) + double(T) * Kf * (Dqk + 2));
    char shape[128];
    std::snprintf(shape, sizeof shape, "sparse T=%d K=%d H=%d Dqk=%d", T, Kf, H, Dqk);
    report("indexer_kl_fwd_v1", shape, time_ms([&] { dsa::cuda::indexer_kl_forward(kp, loss, nullptr, 1); }, 3), flop,
           bytes);
    report("indexer_kl_bwd_v1", shape,
           time_ms([&] { dsa::cuda::indexer_kl_backward(kp, nullptr, dI, nullptr, 1); }, 3), flop, bytes);
    cudaFree(q); cudaFree(kv); cudaFree(lse); cudaFree(I); cudaFree(dI); cudaFree(loss); cudaFree(out); cudaFree(idx);
  }
  CHECK(cudaDeviceSynchronize());
  return 0;
}
