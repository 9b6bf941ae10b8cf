// indexer_bench.cu — GPU timings of the indexer-side ops (numerics, rotations, indexer logits, top-k,
// fused indexer+top-k, paged logits, indexer backward) with the conventions of dsa-spec §3:
//   indexer logits   FLOPs 2·(#valid (q,k) pairs)·HI·DI                       (DeepGEMM)
//   top-k            bytes T·S·4 read + T·K·4 written (one pass; the radix passes re-read it)
//   element-wise     bytes every input read once + every output written once
// Inputs are random (a hash on the device, never zeros); each line is the median of `reps`
// CUDA-event-timed runs after one warm-up. Usage: dsa_bench_gpu [quick] [op ...]
//   ops: numerics rotations logits logits_full topk fused paged backward   (default: all)
// The torch baselines of the same run are bench/gpu/indexer_torch.py (tools/gpu/run_all.sh runs both).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "bench_util.cuh"
#include "dsa/cuda_ops.h"

using namespace dsa;
using namespace dsa::bench;

namespace dsa::cuda {
// The tuning hook of src/cuda/topk.cu (not public API): runs top-k v2 configuration `config`, returns
// its name, or nullptr past the last one.
const char* topk_select_v2_config(const TopkParams& p, cudaStream_t stream, int config);
}  // namespace dsa::cuda

namespace dsa::cuda::detail {
// The tuning hooks of src/cuda/indexer_logits_wgmma.cu (not public API): whether v3 applies, and
// run v3 configuration `config` (returns its name, or nullptr past the last one).
bool use_logits_wgmma(const IndexerParams& p, int version);
const char* run_logits_wgmma_config(const IndexerParams& p, float* logits, cudaStream_t stream, int config);
}  // namespace dsa::cuda::detail

namespace {

__global__ void fill_bytes(uint8_t* x, size_t n, uint64_t seed) {  // e4m3 codes with |v| ≤ 448, no NaN
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint8_t c = static_cast<uint8_t>(mix(seed * 0x9E3779B97F4A7C15ULL + i));
    if ((c & 0x7F) > 0x5F) c &= 0xDF;  // keep |v| moderate (exponent ≤ 11) and avoid 0x7F
    x[i] = c;
  }
}
__global__ void fill_iota_ranges(int32_t* ks, int32_t* ke, int T, int S, bool causal) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t < T) {
    ks[t] = 0;
    ke[t] = causal ? S - T + t + 1 : S;
  }
}
__global__ void fill_int(int32_t* x, size_t n, uint64_t seed, int mod) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    x[i] = static_cast<int32_t>(mix(seed + i) % static_cast<uint32_t>(mod));
}

void report(const char* op, const std::string& shape, double ms, double flop, double bytes) {
  std::printf("%-30s %-46s %12.1f us %9.2f TFLOP/s %9.1f GB/s\n", op, shape.c_str(), ms * 1e3, flop / ms / 1e9,
              bytes / ms / 1e6);
  std::fflush(stdout);
}
std::string shape(const char* fmt, long a, long b = 0, long c = 0, long d = 0) {
  char buf[128];
  std::snprintf(buf, sizeof buf, fmt, a, b, c, d);
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  std::set<std::string> ops;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "quick") == 0) quick = true;
    else ops.insert(argv[i]);
  }
  auto want = [&](const char* op) { return ops.empty() || ops.count(op) > 0; };
  const int div = quick ? 8 : 1;
  const int reps = quick ? 3 : 10;
  cudaDeviceProp prop{};
  CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s (sm_%d%d, %d SMs)\n", prop.name, prop.major, prop.minor, prop.multiProcessorCount);
  std::printf("%-30s %-46s %15s %17s %14s\n", "op", "shape", "median", "rate", "bandwidth");

  if (want("numerics")) {
    const int64_t N = 65536 / div;
    const int C = 7168;  // V3.2 hidden size, 56 blocks
    float* x = dalloc<float>(size_t(N) * C);
    uint8_t* q = dalloc<uint8_t>(size_t(N) * C);
    float* s = dalloc<float>(size_t(N) * C / kQuantBlock);
    urand(x, size_t(N) * C, 1, -4.f, 4.f);
    Fp8BlockQuantizeParams p{N, C, ScaleFormat::kUe8m0, x, q, s};
    const double bytes = double(N) * C * 5 + double(N) * C / kQuantBlock * 4;
    report("fp8_block_quantize", shape("N=%ld C=%ld", N, C), time_ms([&] { cuda::fp8_block_quantize(p, nullptr); }, reps),
           0, bytes);
    report("fp8_block_dequantize", shape("N=%ld C=%ld", N, C),
           time_ms([&] { cuda::fp8_block_dequantize({N, C, q, s, x}, nullptr); }, reps), 0, bytes);
    const int64_t Nm = 131072 / div;
    float* kv = dalloc<float>(size_t(Nm) * 576);
    uint8_t* rec = dalloc<uint8_t>(size_t(Nm) * kMlaRecordBytes);
    urand(kv, size_t(Nm) * 576, 2);
    MlaCacheParams m{Nm, ScaleFormat::kFloat, kv, rec};
    report("mla_cache_pack", shape("N=%ld", Nm), time_ms([&] { cuda::mla_cache_pack(m, nullptr); }, reps), 0,
           double(Nm) * (576 * 4 + kMlaRecordBytes));
    report("mla_cache_unpack", shape("N=%ld", Nm), time_ms([&] { cuda::mla_cache_unpack(m, nullptr); }, reps), 0,
           double(Nm) * (576 * 4 + kMlaRecordBytes));
    CHECK(cudaFree(x));
    CHECK(cudaFree(q));
    CHECK(cudaFree(s));
    CHECK(cudaFree(kv));
    CHECK(cudaFree(rec));
  }

  if (want("rotations")) {
    const int64_t N = 65536 * 8 / div;
    const int D = 128;
    float* x = dalloc<float>(size_t(N) * D);
    urand(x, size_t(N) * D, 3);
    report("hadamard_transform", shape("N=%ld D=%ld", N, D),
           time_ms([&] { cuda::hadamard_transform(x, N, D, nullptr); }, reps), 0, double(N) * D * 8);
    const int T = 16384 / div, H = 64, Dr = 128, R = 64;
    float* y = dalloc<float>(size_t(T) * H * Dr);
    float* inv = dalloc<float>(R / 2);
    int32_t* pos = dalloc<int32_t>(T);
    urand(y, size_t(T) * H * Dr, 4);
    urand(inv, R / 2, 5, 0.f, 1.f);
    fill_int<<<64, 256>>>(pos, T, 6, 131072);
    RopeParams rp{T, H, Dr, 0, R, RopeLayout::kRotateHalf, pos, inv, y};
    report("rope_forward", shape("T=%ld H=%ld R=%ld", T, H, R), time_ms([&] { cuda::rope_forward(rp, nullptr); }, reps),
           0, double(T) * H * R * 8);
    CHECK(cudaFree(x));
    CHECK(cudaFree(y));
    CHECK(cudaFree(inv));
    CHECK(cudaFree(pos));
  }

  // Indexer at the issue's shape: HI = 64, DI = 128, S = 128K keys (T reduced where v1 is slow).
  const int HI = 64, DI = 128, S = 131072 / div, K = 2048 / (quick ? 4 : 1);
  if (want("logits") || want("fused")) {
    const int T = 64 / (quick ? 4 : 1);
    uint8_t* q = dalloc<uint8_t>(size_t(T) * HI * DI);
    uint8_t* k = dalloc<uint8_t>(size_t(S) * DI);
    float *w = dalloc<float>(size_t(T) * HI), *ksc = dalloc<float>(S), *logits = dalloc<float>(size_t(T) * S);
    int32_t *ks = dalloc<int32_t>(T), *ke = dalloc<int32_t>(T), *idx = dalloc<int32_t>(size_t(T) * K);
    fill_bytes<<<1024, 256>>>(q, size_t(T) * HI * DI, 7);
    fill_bytes<<<1024, 256>>>(k, size_t(S) * DI, 8);
    urand(w, size_t(T) * HI, 9);
    urand(ksc, S, 10, 0.f, 1e-2f);
    fill_iota_ranges<<<(T + 255) / 256, 256>>>(ks, ke, T, S, false);
    IndexerParams p;
    p.T = T;
    p.S = S;
    p.HI = HI;
    p.DI = DI;
    p.precision = Precision::kFp8;
    p.q = q;
    p.k = k;
    p.k_scale = ksc;
    p.w = w;
    p.ks = ks;
    p.ke = ke;
    const double flop = 2.0 * T * double(S) * HI * DI;
    for (int v : cuda::kKernelVersions) {
      if (want("logits")) {
        const std::string name = "indexer_logits_fp8_v" + std::to_string(v);
        report(name.c_str(), shape("T=%ld S=%ld HI=%ld DI=%ld", T, S, HI, DI),
               time_ms([&] { cuda::indexer_logits(p, logits, nullptr, v); }, reps), flop,
               double(T) * S * 4 + double(S) * (DI + 4));
      }
      if (want("fused")) {
        const size_t wsb = cuda::indexer_topk_workspace_bytes(p, K, v);
        void* ws = wsb ? dalloc<uint8_t>(wsb) : nullptr;
        const std::string name = "indexer_topk_fused_fp8_v" + std::to_string(v);
        report(name.c_str(), shape("T=%ld S=%ld K=%ld", T, S, K),
               time_ms([&] { cuda::indexer_topk(p, K, idx, ws, wsb, nullptr, v); }, reps), flop,
               double(S) * (DI + 4) + double(T) * K * 4);
        if (ws) CHECK(cudaFree(ws));
      }
    }
    if (want("logits")) {  // v3 (wgmma, sm_90a; runs as v2 where it does not apply), same run as v1/v2
      report("indexer_logits_fp8_v3", shape("T=%ld S=%ld HI=%ld DI=%ld", T, S, HI, DI),
             time_ms([&] { cuda::indexer_logits(p, logits, nullptr, cuda::kIndexerWgmmaVersion); }, reps), flop,
             double(T) * S * 4 + double(S) * (DI + 4));
    }
    CHECK(cudaFree(q));
    CHECK(cudaFree(k));
    CHECK(cudaFree(w));
    CHECK(cudaFree(ksc));
    CHECK(cudaFree(logits));
    CHECK(cudaFree(ks));
    CHECK(cudaFree(ke));
    CHECK(cudaFree(idx));
  }

  if (want("logits_full")) {
    // The issue's floor case, tensor-core version only (v1 would take minutes): 4096 queries × 128K
    // keys, HI = 64, DI = 128, fp8; full ranges and causal ranges (FLOPs count valid pairs only).
    const int T = 4096 / div;
    uint8_t* q = dalloc<uint8_t>(size_t(T) * HI * DI);
    uint8_t* k = dalloc<uint8_t>(size_t(S) * DI);
    float *w = dalloc<float>(size_t(T) * HI), *ksc = dalloc<float>(S), *logits = dalloc<float>(size_t(T) * S);
    int32_t *ks = dalloc<int32_t>(T), *ke = dalloc<int32_t>(T);
    fill_bytes<<<1024, 256>>>(q, size_t(T) * HI * DI, 21);
    fill_bytes<<<1024, 256>>>(k, size_t(S) * DI, 22);
    urand(w, size_t(T) * HI, 23);
    urand(ksc, S, 24, 0.f, 1e-2f);
    IndexerParams p;
    p.T = T;
    p.S = S;
    p.HI = HI;
    p.DI = DI;
    p.precision = Precision::kFp8;
    p.q = q;
    p.k = k;
    p.k_scale = ksc;
    p.w = w;
    p.ks = ks;
    p.ke = ke;
    for (int causal = 0; causal < 2; ++causal) {
      fill_iota_ranges<<<(T + 255) / 256, 256>>>(ks, ke, T, S, causal == 1);
      // valid pairs: full T·S; causal Σ_t (S − T + t + 1)
      const double pairs = causal ? double(T) * (S - T) + double(T) * (T + 1) / 2 : double(T) * S;
      // v2 (mma.sync) and v3 (wgmma; runs as v2 where it does not apply) in the same run, then a spot
      // check of v3 against v2 on the first and last rows (different accumulation: close, not equal).
      std::vector<float> rows[2];
      for (int v : {2, cuda::kIndexerWgmmaVersion}) {
        const std::string name = "indexer_logits_fp8_v" + std::to_string(v) + (causal ? "_causal" : "");
        report(name.c_str(), shape("T=%ld S=%ld HI=%ld DI=%ld", T, S, HI, DI),
               time_ms([&] { cuda::indexer_logits(p, logits, nullptr, v); }, 3), 2.0 * pairs * HI * DI,
               double(T) * S * 4 + double(S) * (DI + 4));
        std::vector<float>& h = rows[v == 2 ? 0 : 1];
        h.resize(size_t(2) * S);
        CHECK(cudaMemcpy(h.data(), logits, size_t(S) * sizeof(float), cudaMemcpyDeviceToHost));
        CHECK(cudaMemcpy(h.data() + S, logits + size_t(T - 1) * S, size_t(S) * sizeof(float), cudaMemcpyDeviceToHost));
      }
      double amax = 0, dmax = 0;
      size_t pattern = 0;
      for (size_t i = 0; i < rows[0].size(); ++i) {
        const float a = rows[0][i], b = rows[1][i];
        if (std::isinf(a) || std::isinf(b) || std::isnan(a) || std::isnan(b)) {
          pattern += !(a == b);
          continue;
        }
        amax = std::max(amax, double(std::fabs(a)));
        dmax = std::max(dmax, double(std::fabs(a - b)));
      }
      std::printf("%s v3 vs v2 (rows 0 and T-1): max |diff| / max |v2| = %.3g, non-finite mismatches = %zu%s\n",
                  causal ? "causal" : "full", amax > 0 ? dmax / amax : 0.0, pattern,
                  pattern || dmax > 1e-3 * amax ? "  MISMATCH" : "");
      // Every v3 tuning configuration (the v3 row above runs the default one).
      if (cuda::detail::use_logits_wgmma(p, cuda::kIndexerWgmmaVersion))
        for (int c = 0; cuda::detail::run_logits_wgmma_config(p, logits, nullptr, c) != nullptr; ++c) {
          const std::string name = std::string("indexer_logits_fp8_v3_") +
                                   cuda::detail::run_logits_wgmma_config(p, logits, nullptr, c) + (causal ? "_causal" : "");
          report(name.c_str(), shape("T=%ld S=%ld HI=%ld DI=%ld", T, S, HI, DI),
                 time_ms([&] { cuda::detail::run_logits_wgmma_config(p, logits, nullptr, c); }, 3),
                 2.0 * pairs * HI * DI, double(T) * S * 4 + double(S) * (DI + 4));
        }
    }
    CHECK(cudaFree(q));
    CHECK(cudaFree(k));
    CHECK(cudaFree(w));
    CHECK(cudaFree(ksc));
    CHECK(cudaFree(logits));
    CHECK(cudaFree(ks));
    CHECK(cudaFree(ke));
  }

  if (want("topk")) {
    // The issue's floor case: 4096 rows × 128K fp32, k = 2048 (torch.topk in indexer_torch.py).
    const int T = 4096 / div;
    float* logits = dalloc<float>(size_t(T) * S);
    int32_t *ks = dalloc<int32_t>(T), *ke = dalloc<int32_t>(T), *idx = dalloc<int32_t>(size_t(T) * K);
    urand(logits, size_t(T) * S, 11);
    fill_iota_ranges<<<(T + 255) / 256, 256>>>(ks, ke, T, S, false);
    TopkParams p{T, S, K, logits, ks, ke, idx};
    const size_t wsb = cuda::topk_select_workspace_bytes(T, S, K);
    void* ws = wsb ? dalloc<uint8_t>(wsb) : nullptr;
    for (int v : cuda::kKernelVersions) {
      fill_iota_ranges<<<(T + 255) / 256, 256>>>(ks, ke, T, S, false);
      report(("topk_select_v" + std::to_string(v)).c_str(), shape("T=%ld S=%ld K=%ld", T, S, K),
             time_ms([&] { cuda::topk_select(p, ws, wsb, nullptr, v); }, reps), 0, double(T) * S * 4 + double(T) * K * 4);
      fill_iota_ranges<<<(T + 255) / 256, 256>>>(ks, ke, T, S, true);
      report(("topk_select_causal_v" + std::to_string(v)).c_str(), shape("T=%ld S=%ld K=%ld", T, S, K),
             time_ms([&] { cuda::topk_select(p, ws, wsb, nullptr, v); }, reps), 0, double(T) * S * 4 + double(T) * K * 4);
    }
    // Every v2 tuning configuration (the first is topk_select's default), checked against v1's indices.
    std::vector<int32_t> want(size_t(T) * K), got(size_t(T) * K);
    for (bool causal : {false, true}) {
      fill_iota_ranges<<<(T + 255) / 256, 256>>>(ks, ke, T, S, causal);
      cuda::topk_select(p, ws, wsb, nullptr, 1);
      CHECK(cudaMemcpy(want.data(), idx, want.size() * sizeof(int32_t), cudaMemcpyDeviceToHost));
      for (int c = 0; cuda::topk_select_v2_config(p, nullptr, c) != nullptr; ++c) {
        const std::string name = std::string(causal ? "topk_v2c_" : "topk_v2_") + cuda::topk_select_v2_config(p, nullptr, c);
        CHECK(cudaMemcpy(got.data(), idx, got.size() * sizeof(int32_t), cudaMemcpyDeviceToHost));
        if (got != want) std::printf("MISMATCH: %s differs from v1\n", name.c_str());
        report(name.c_str(), shape("T=%ld S=%ld K=%ld", T, S, K),
               time_ms([&] { cuda::topk_select_v2_config(p, nullptr, c); }, reps), 0,
               double(T) * S * 4 + double(T) * K * 4);
      }
    }
    if (ws) CHECK(cudaFree(ws));
    CHECK(cudaFree(logits));
    CHECK(cudaFree(ks));
    CHECK(cudaFree(ke));
    CHECK(cudaFree(idx));
  }

  if (want("paged")) {
    // Decode: B = 64 requests, next_n = 2 (MTP), 32K context each, HI = 64.
    const int B = 64 / (quick ? 8 : 1), next_n = 2, L = 32768 / div, blocks = L / kCachePageTokens;
    const int pages = B * blocks;
    uint8_t* q = dalloc<uint8_t>(size_t(B) * next_n * HI * DI);
    uint8_t* cache = dalloc<uint8_t>(size_t(pages) * kCachePageTokens * kIndexerRecordBytes);
    float* w = dalloc<float>(size_t(B) * next_n * HI);
    float* logits = dalloc<float>(size_t(B) * next_n * L);
    int32_t *lens = dalloc<int32_t>(size_t(B) * next_n), *table = dalloc<int32_t>(size_t(B) * blocks);
    fill_bytes<<<1024, 256>>>(q, size_t(B) * next_n * HI * DI, 12);
    fill_bytes<<<1024, 256>>>(cache, size_t(pages) * kCachePageTokens * kIndexerRecordBytes, 13);
    urand(w, size_t(B) * next_n * HI, 14);
    fill_int<<<64, 256>>>(table, size_t(B) * blocks, 15, pages);
    std::vector<int32_t> hl(size_t(B) * next_n);
    for (int b = 0; b < B; ++b)
      for (int n = 0; n < next_n; ++n) hl[size_t(b) * next_n + n] = L - next_n + n + 1;
    CHECK(cudaMemcpy(lens, hl.data(), hl.size() * 4, cudaMemcpyHostToDevice));
    // The page scales are random bytes too: the kernel does not branch on values, so timing is unaffected.
    PagedIndexerParams p;
    p.B = B;
    p.next_n = next_n;
    p.HI = HI;
    p.num_pages = pages;
    p.max_blocks = blocks;
    p.max_context_len = L;
    p.q_fp8 = q;
    p.cache = cache;
    p.w = w;
    p.context_lens = lens;
    p.block_table = table;
    const double flop = 2.0 * B * next_n * double(L) * HI * DI;
    report("indexer_logits_paged", shape("B=%ld next_n=%ld L=%ld HI=%ld", B, next_n, L, HI),
           time_ms([&] { cuda::indexer_logits_paged(p, logits, nullptr); }, reps), flop,
           double(B) * L * kIndexerRecordBytes + double(B) * next_n * L * 4);
    CHECK(cudaFree(q));
    CHECK(cudaFree(cache));
    CHECK(cudaFree(w));
    CHECK(cudaFree(logits));
    CHECK(cudaFree(lens));
    CHECK(cudaFree(table));
  }

  if (want("backward")) {
    const int T = 256 / (quick ? 4 : 1), Sb = 8192 / div, Kb = 512 / (quick ? 4 : 1);
    float *q = dalloc<float>(size_t(T) * HI * DI), *k = dalloc<float>(size_t(Sb) * DI), *w = dalloc<float>(size_t(T) * HI);
    float *dI = dalloc<float>(size_t(T) * Kb), *dq = dalloc<float>(size_t(T) * HI * DI), *dk = dalloc<float>(size_t(Sb) * DI),
          *dw = dalloc<float>(size_t(T) * HI);
    int32_t *ks = dalloc<int32_t>(T), *ke = dalloc<int32_t>(T), *idx = dalloc<int32_t>(size_t(T) * Kb);
    urand(q, size_t(T) * HI * DI, 16);
    urand(k, size_t(Sb) * DI, 17);
    urand(w, size_t(T) * HI, 18);
    urand(dI, size_t(T) * Kb, 19);
    fill_iota_ranges<<<(T + 255) / 256, 256>>>(ks, ke, T, Sb, false);
    fill_int<<<256, 256>>>(idx, size_t(T) * Kb, 20, Sb);
    IndexerBackwardParams p;
    p.fwd.T = T;
    p.fwd.S = Sb;
    p.fwd.HI = HI;
    p.fwd.DI = DI;
    p.fwd.q = q;
    p.fwd.k = k;
    p.fwd.w = w;
    p.fwd.ks = ks;
    p.fwd.ke = ke;
    p.K = Kb;
    p.indices = idx;
    p.d_logits = dI;
    p.dq = dq;
    p.dk = dk;
    p.dw = dw;
    const size_t wsb = cuda::indexer_backward_workspace_bytes(p);
    void* ws = wsb ? dalloc<uint8_t>(wsb) : nullptr;
    // 3 products per (t, slot, h, d): u, dq, dk → 6 FLOP.
    report("indexer_backward_sparse", shape("T=%ld S=%ld K=%ld HI=%ld", T, Sb, Kb, HI),
           time_ms([&] { cuda::indexer_backward(p, ws, wsb, nullptr); }, quick ? 2 : 3),
           6.0 * T * double(Kb) * HI * DI, double(T) * HI * DI * 8 + double(Sb) * DI * 8 + double(T) * Kb * 8);
    if (ws) CHECK(cudaFree(ws));
    for (float* f : {q, k, w, dI, dq, dk, dw}) CHECK(cudaFree(f));
    for (int32_t* i : {ks, ke, idx}) CHECK(cudaFree(i));
  }
  return 0;
}
