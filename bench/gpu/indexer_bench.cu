// indexer_bench.cu — GPU timings of the indexer-side ops (numerics, rotations, indexer logits, top-k,
// fused indexer+top-k, paged logits, indexer backward) with the conventions of dsa-spec §3:
//   indexer logits   FLOPs 2·(#valid (q,k) pairs)·HI·DI                       (DeepGEMM)
//   top-k            bytes T·S·4 read + T·K·4 written (one pass; the radix passes re-read it)
//   element-wise     bytes every input read once + every output written once
// Inputs are random (a hash on the device, never zeros); each line is the median of `reps`
// CUDA-event-timed runs after one warm-up. Rows <op>_fp8_<variant> run a named kernel variant;
// <op>_default rows call the op with no variant (kAuto on the e4m3 inputs: the library's default path;
// the line before them says which variant that is). Cross-checks print their tolerance; one beyond it
// prints MISMATCH and the program exits 1 after the last row.
// Usage: dsa_bench_gpu [quick] [op ...]
//   ops: numerics rotations logits logits_full topk topk_decode fused paged backward   (default: all)
// paged: B 64 × next_n 2 and B 128 × next_n 1 at 32K context, every variant, then kWgmma vs kExact.
// The torch baselines of the same run are bench/gpu/indexer_torch.py (tools/gpu/run_all.sh runs both).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "bench_util.cuh"
#include "dsa/cuda_ops.h"

using namespace dsa;
using namespace dsa::bench;
using dsa::cuda::Variant;

namespace dsa::cuda {
// The tuning hook of src/cuda/topk.cu (not public API): runs configuration `config` of topk_select's
// sampled radix select (0 = the one topk_select runs), returns its name, or nullptr past the last one.
const char* topk_select_v2_config(const TopkParams& p, cudaStream_t stream, int config);
}  // namespace dsa::cuda

namespace dsa::cuda::detail {
// The tuning hooks of src/cuda/indexer_logits_wgmma.cu (not public API): whether the kWgmma kernel
// applies, and run its configuration `config` (returns its name, or nullptr past the last one).
bool use_logits_wgmma(const IndexerParams& p);
const char* run_logits_wgmma_config(const IndexerParams& p, float* logits, cudaStream_t stream, int config);
}  // namespace dsa::cuda::detail

namespace {

constexpr Variant kIndexerVariants[] = {Variant::kExact, Variant::kMma, Variant::kWgmma};

// Set by a cross-check beyond its printed tolerance: the program then exits 1 after every row.
bool g_mismatch = false;
void mismatch(const std::string& what) {
  std::printf("MISMATCH: %s\n", what.c_str());
  g_mismatch = true;
}

// Whether variant v of `op` can run the call here (resolve_variant throws dsa::Error naming the
// reason when it cannot: a named variant never falls back); prints why not.
bool runs_here(const std::string& row, const IndexerParams& p, Variant v, const char* op) {
  try {
    cuda::resolve_variant(p, v, op);
    return true;
  } catch (const std::exception& e) {
    std::printf("%-30s skipped: %s\n", row.c_str(), e.what());
    return false;
  }
}

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

// Every page's 64 fp32 key scales uniform in [1e-3, 1e-2) (the e4m3 bytes before them stay random).
__global__ void fill_page_scales(uint8_t* cache, int pages, uint64_t seed) {
  const size_t n = size_t(pages) * kCachePageTokens;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const size_t page = i / kCachePageTokens, o = i % kCachePageTokens;
    float* scale = reinterpret_cast<float*>(cache + page * kCachePageTokens * kIndexerRecordBytes +
                                            size_t(kCachePageTokens) * kIndexerKeyDim) + o;
    *scale = 1e-3f + 9e-3f * (mix(seed * 0x9E3779B97F4A7C15ULL + i) >> 8) * (1.0f / 16777216.0f);
  }
}

bool paged_runs_here(const std::string& row, const PagedIndexerParams& p, Variant v) {
  try {
    cuda::resolve_variant(p, v);
    return true;
  } catch (const std::exception& e) {
    std::printf("%-30s skipped: %s\n", row.c_str(), e.what());
    return false;
  }
}

// A tensor-core variant's paged logits vs kExact's (both downloaded): −inf at the same places and no NaN
// over every element; on a sample of 4096 visible elements, each against the float64 value from the
// device's own bytes within its bound: kExact (128 + HI + 4)·u·mag (fp32 sums), the tensor-core variant
// + 2^-9·mag (the fp8 tensor core's accumulation, tests/test_util.h kFp8AccumRel), mag = s·Σ_h |w|·Σ_d |q·k|.
void check_paged(const PagedIndexerParams& p, const std::vector<float>& ex, const std::vector<float>& wg,
                 const char* name) {
  if (ex.size() != wg.size()) {
    mismatch(std::string("indexer_logits_paged ") + name + ": no kExact output to compare with");
    return;
  }
  const int rows = p.B * p.next_n, L = p.max_context_len, HI = p.HI, DI = kIndexerKeyDim;
  const size_t page_bytes = size_t(kCachePageTokens) * kIndexerRecordBytes;
  size_t pattern_bad = 0;
  for (size_t i = 0; i < ex.size(); ++i)
    pattern_bad += std::isnan(ex[i]) || std::isnan(wg[i]) || std::isinf(ex[i]) != std::isinf(wg[i]) ||
                   (std::isinf(ex[i]) && ex[i] != wg[i]);
  std::vector<uint8_t> q(size_t(rows) * HI * DI), cache(size_t(p.num_pages) * page_bytes);
  std::vector<float> w(size_t(rows) * HI);
  std::vector<int32_t> lens(rows), table(size_t(p.B) * p.max_blocks);
  CHECK(cudaMemcpy(q.data(), p.q_fp8, q.size(), cudaMemcpyDeviceToHost));
  CHECK(cudaMemcpy(cache.data(), p.cache, cache.size(), cudaMemcpyDeviceToHost));
  CHECK(cudaMemcpy(w.data(), p.w, w.size() * 4, cudaMemcpyDeviceToHost));
  CHECK(cudaMemcpy(lens.data(), p.context_lens, lens.size() * 4, cudaMemcpyDeviceToHost));
  CHECK(cudaMemcpy(table.data(), p.block_table, table.size() * 4, cudaMemcpyDeviceToHost));
  const double u = 1.0 / (1 << 24), rel_exact = (DI + HI + 4) * u, rel_tensor = rel_exact + 1.0 / (1 << 9);
  std::mt19937_64 gen(99);
  int sample_bad = 0;
  double worst_ex = 0, worst_tc = 0;
  constexpr int kSamples = 4096;
  for (int s = 0; s < kSamples; ++s) {
    const int r = int(gen() % rows);
    if (lens[size_t(r)] == 0) continue;
    const int j = int(gen() % uint64_t(lens[size_t(r)]));
    const uint8_t* page = &cache[size_t(table[size_t(r / p.next_n) * p.max_blocks + j / kCachePageTokens]) * page_bytes];
    const uint8_t* k = page + size_t(j % kCachePageTokens) * DI;
    float sc;
    std::memcpy(&sc, page + size_t(kCachePageTokens) * DI + size_t(j % kCachePageTokens) * 4, 4);
    double acc = 0, mag = 0;
    for (int h = 0; h < HI; ++h) {
      double dot = 0, dot_abs = 0;
      for (int d = 0; d < DI; ++d) {
        const double prod = double(cpu::fp8_e4m3_to_float(q[(size_t(r) * HI + h) * DI + d])) * cpu::fp8_e4m3_to_float(k[d]);
        dot += prod;
        dot_abs += std::fabs(prod);
      }
      acc += w[size_t(r) * HI + h] * std::max(dot, 0.0);
      mag += std::fabs(w[size_t(r) * HI + h]) * dot_abs;
    }
    const double ref = sc * acc;
    mag *= sc;
    const size_t i = size_t(r) * L + j;
    const double e_ex = std::fabs(ex[i] - ref), e_wg = std::fabs(wg[i] - ref);
    worst_ex = std::max(worst_ex, e_ex / std::max(mag, 1e-300));
    worst_tc = std::max(worst_tc, e_wg / std::max(mag, 1e-300));
    sample_bad += !(e_ex <= rel_exact * mag + 1e-30) || !(e_wg <= rel_tensor * mag + 1e-30);
  }
  std::printf("indexer_logits_paged %s vs exact: %zu elements differ in -inf/NaN pattern; %d of %d sampled "
              "elements beyond the bound (max err/mag: exact %.3g ≤ %.3g, %s %.3g ≤ %.3g)\n",
              name, pattern_bad, sample_bad, kSamples, worst_ex, rel_exact, name, worst_tc, rel_tensor);
  if (pattern_bad || sample_bad) mismatch(std::string("indexer_logits_paged ") + name + " vs exact");
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

  // Indexer at the V3.2 shape: HI = 64, DI = 128, S = 128K keys (T reduced where kExact is slow).
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
    // Every variant by name, then the default path (no variant named).
    for (const Variant v : kIndexerVariants) {
      if (want("logits")) {
        const std::string name = std::string("indexer_logits_fp8_") + cuda::variant_name(v);
        if (runs_here(name, p, v, "indexer_logits"))
          report(name.c_str(), shape("T=%ld S=%ld HI=%ld DI=%ld", T, S, HI, DI),
                 time_ms([&] { cuda::indexer_logits(p, logits, nullptr, v); }, reps), flop,
                 double(T) * S * 4 + double(S) * (DI + 4));
      }
      if (want("topk_decode")) {
    // Decode-shaped top-k: few long rows (B·next_n = 64 or 128 rows of 32K or 128K logits, k = 2048),
    // one block per row, so the grid is under one wave; the number that decides whether decode needs
    // a row-splitting (cluster) top-k. Indices checked against cpu::topk_select on every row (bitwise).
    for (const int rows : {64, 128})
      for (const int Sd : {32768 / div, 131072 / div}) {
        float* logits = dalloc<float>(size_t(rows) * Sd);
        int32_t *ks = dalloc<int32_t>(rows), *ke = dalloc<int32_t>(rows), *idx = dalloc<int32_t>(size_t(rows) * K);
        urand(logits, size_t(rows) * Sd, 21);
        fill_iota_ranges<<<(rows + 255) / 256, 256>>>(ks, ke, rows, Sd, false);
        TopkParams p{rows, Sd, K, logits, ks, ke, idx};
        const size_t wsb = cuda::topk_select_workspace_bytes(rows, Sd, K);
        void* ws = wsb ? dalloc<uint8_t>(wsb) : nullptr;
        report("topk_select_decode", shape("rows=%ld S=%ld K=%ld", rows, Sd, K),
               time_ms([&] { cuda::topk_select(p, ws, wsb, nullptr); }, reps), 0,
               double(rows) * Sd * 4 + double(rows) * K * 4);
        std::vector<float> hl(size_t(rows) * Sd);
        std::vector<int32_t> hks(rows, 0), hke(rows, Sd), want_idx(size_t(rows) * K), got(size_t(rows) * K);
        CHECK(cudaMemcpy(hl.data(), logits, hl.size() * sizeof(float), cudaMemcpyDeviceToHost));
        CHECK(cudaMemcpy(got.data(), idx, got.size() * sizeof(int32_t), cudaMemcpyDeviceToHost));
        cpu::topk_select(TopkParams{rows, Sd, K, hl.data(), hks.data(), hke.data(), want_idx.data()});
        int bad_rows = 0;
        for (int r = 0; r < rows; ++r)
          bad_rows += !std::equal(got.begin() + size_t(r) * K, got.begin() + size_t(r + 1) * K,
                                  want_idx.begin() + size_t(r) * K);
        std::printf("topk_select_decode vs cpu::topk_select, %d rows: %d rows differ (tolerance: bitwise)\n", rows,
                    bad_rows);
        if (bad_rows) mismatch("topk_select_decode differs from the CPU");
        if (ws) CHECK(cudaFree(ws));
        CHECK(cudaFree(logits));
        CHECK(cudaFree(ks));
        CHECK(cudaFree(ke));
        CHECK(cudaFree(idx));
      }
  }

  if (want("fused")) {
        const std::string name = std::string("indexer_topk_fused_fp8_") + cuda::variant_name(v);
        if (runs_here(name, p, v, "indexer_topk")) {
          const size_t wsb = cuda::indexer_topk_workspace_bytes(p, K, v);
          void* ws = wsb ? dalloc<uint8_t>(wsb) : nullptr;
          report(name.c_str(), shape("T=%ld S=%ld K=%ld", T, S, K),
                 time_ms([&] { cuda::indexer_topk(p, K, idx, ws, wsb, nullptr, v); }, reps), flop,
                 double(S) * (DI + 4) + double(T) * K * 4);
          if (ws) CHECK(cudaFree(ws));
        }
      }
    }
    if (want("logits")) {
      std::printf("(indexer_logits_default: e4m3 q/k, kAuto runs %s)\n",
                  cuda::variant_name(cuda::resolve_variant(p, Variant::kAuto, "indexer_logits")));
      report("indexer_logits_default", shape("T=%ld S=%ld HI=%ld DI=%ld fp8", T, S, HI, DI),
             time_ms([&] { cuda::indexer_logits(p, logits, nullptr); }, reps), flop,
             double(T) * S * 4 + double(S) * (DI + 4));
    }
    if (want("fused")) {
      std::printf("(indexer_topk_default: e4m3 q/k, kAuto runs %s)\n",
                  cuda::variant_name(cuda::resolve_variant(p, Variant::kAuto, "indexer_topk")));
      const size_t wsb = cuda::indexer_topk_workspace_bytes(p, K);
      void* ws = wsb ? dalloc<uint8_t>(wsb) : nullptr;
      report("indexer_topk_default", shape("T=%ld S=%ld K=%ld fp8", T, S, K),
             time_ms([&] { cuda::indexer_topk(p, K, idx, ws, wsb, nullptr); }, reps), flop,
             double(S) * (DI + 4) + double(T) * K * 4);
      if (ws) CHECK(cudaFree(ws));
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
    // The floor case, tensor-core variants only (kExact would take minutes): 4096 queries × 128K
    // keys, HI = 64, DI = 128, fp8; full ranges and causal ranges (FLOPs count valid pairs only).
    // Also the default path of indexer_logits and of the fused indexer_topk at this shape.
    const int T = 4096 / div;
    uint8_t* q = dalloc<uint8_t>(size_t(T) * HI * DI);
    uint8_t* k = dalloc<uint8_t>(size_t(S) * DI);
    float *w = dalloc<float>(size_t(T) * HI), *ksc = dalloc<float>(S), *logits = dalloc<float>(size_t(T) * S);
    int32_t *ks = dalloc<int32_t>(T), *ke = dalloc<int32_t>(T), *idx = dalloc<int32_t>(size_t(T) * K);
    const size_t topk_wsb = cuda::topk_select_workspace_bytes(T, S, K);
    void* topk_ws = topk_wsb ? dalloc<uint8_t>(topk_wsb) : nullptr;
    std::vector<int32_t> fused_idx, split_idx;
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
      const char* sfx = causal ? "_causal" : "";
      // kMma (mma.sync) and kWgmma (sm_90a) in the same run, then a spot check of kWgmma against kMma
      // on the first and last rows (different accumulation: close, not equal; tolerance 1e-3 of max |mma|).
      std::vector<float> rows[2];
      for (const Variant v : {Variant::kMma, Variant::kWgmma}) {
        const std::string name = std::string("indexer_logits_fp8_") + cuda::variant_name(v) + sfx;
        if (!runs_here(name, p, v, "indexer_logits")) continue;
        report(name.c_str(), shape("T=%ld S=%ld HI=%ld DI=%ld", T, S, HI, DI),
               time_ms([&] { cuda::indexer_logits(p, logits, nullptr, v); }, 3), 2.0 * pairs * HI * DI,
               double(T) * S * 4 + double(S) * (DI + 4));
        std::vector<float>& h = rows[v == Variant::kMma ? 0 : 1];
        h.resize(size_t(2) * S);
        CHECK(cudaMemcpy(h.data(), logits, size_t(S) * sizeof(float), cudaMemcpyDeviceToHost));
        CHECK(cudaMemcpy(h.data() + S, logits + size_t(T - 1) * S, size_t(S) * sizeof(float), cudaMemcpyDeviceToHost));
      }
      if (!rows[0].empty() && !rows[1].empty()) {
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
        const bool bad = pattern || dmax > 1e-3 * amax;
        std::printf("%s wgmma vs mma (rows 0 and T-1): max |diff| / max |mma| = %.3g (tolerance 1e-3), non-finite "
                    "mismatches = %zu%s\n",
                    causal ? "causal" : "full", amax > 0 ? dmax / amax : 0.0, pattern, bad ? "  MISMATCH" : "");
        g_mismatch = g_mismatch || bad;
      }
      // The default path: indexer_logits, then the fused indexer_topk, with no variant named; the fused
      // indices must equal topk_select over the default logits bit for bit (cuda_ops.h §5).
      std::printf("(indexer_logits_default / indexer_topk_default: e4m3 q/k, kAuto runs %s / %s)\n",
                  cuda::variant_name(cuda::resolve_variant(p, Variant::kAuto, "indexer_logits")),
                  cuda::variant_name(cuda::resolve_variant(p, Variant::kAuto, "indexer_topk")));
      report((std::string("indexer_logits_default") + sfx).c_str(),
             shape("T=%ld S=%ld HI=%ld DI=%ld fp8", T, S, HI, DI),
             time_ms([&] { cuda::indexer_logits(p, logits, nullptr); }, 3), 2.0 * pairs * HI * DI,
             double(T) * S * 4 + double(S) * (DI + 4));
      {
        const size_t wsb = cuda::indexer_topk_workspace_bytes(p, K);
        void* ws = wsb ? dalloc<uint8_t>(wsb) : nullptr;
        report((std::string("indexer_topk_default") + sfx).c_str(), shape("T=%ld S=%ld K=%ld fp8", T, S, K),
               time_ms([&] { cuda::indexer_topk(p, K, idx, ws, wsb, nullptr); }, 3), 2.0 * pairs * HI * DI,
               double(S) * (DI + 4) + double(T) * K * 4);
        if (ws) CHECK(cudaFree(ws));
        fused_idx.resize(size_t(T) * K);
        CHECK(cudaMemcpy(fused_idx.data(), idx, fused_idx.size() * sizeof(int32_t), cudaMemcpyDeviceToHost));
        cuda::topk_select(TopkParams{T, S, K, logits, ks, ke, idx}, topk_ws, topk_wsb, nullptr);
        split_idx.resize(size_t(T) * K);
        CHECK(cudaMemcpy(split_idx.data(), idx, split_idx.size() * sizeof(int32_t), cudaMemcpyDeviceToHost));
        std::printf("%s indexer_topk_default vs topk_select(indexer_logits_default): %s (tolerance: bitwise)\n",
                    causal ? "causal" : "full", fused_idx == split_idx ? "identical" : "differ");
        if (fused_idx != split_idx)
          mismatch(std::string("indexer_topk_default") + sfx + " differs from topk_select(indexer_logits_default)");
      }
      // Every kWgmma tuning configuration (the wgmma row above runs the default one).
      if (cuda::detail::use_logits_wgmma(p))
        for (int c = 0; cuda::detail::run_logits_wgmma_config(p, logits, nullptr, c) != nullptr; ++c) {
          const std::string name = std::string("indexer_logits_fp8_wgmma_") +
                                   cuda::detail::run_logits_wgmma_config(p, logits, nullptr, c) + sfx;
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
    CHECK(cudaFree(idx));
    if (topk_ws) CHECK(cudaFree(topk_ws));
  }

  if (want("topk")) {
    // The floor case: 4096 rows × 128K fp32, k = 2048 (torch.topk in indexer_torch.py).
    const int T = 4096 / div;
    float* logits = dalloc<float>(size_t(T) * S);
    int32_t *ks = dalloc<int32_t>(T), *ke = dalloc<int32_t>(T), *idx = dalloc<int32_t>(size_t(T) * K);
    urand(logits, size_t(T) * S, 11);
    fill_iota_ranges<<<(T + 255) / 256, 256>>>(ks, ke, T, S, false);
    TopkParams p{T, S, K, logits, ks, ke, idx};
    const size_t wsb = cuda::topk_select_workspace_bytes(T, S, K);
    void* ws = wsb ? dalloc<uint8_t>(wsb) : nullptr;
    for (bool causal : {false, true}) {
      fill_iota_ranges<<<(T + 255) / 256, 256>>>(ks, ke, T, S, causal);
      report(causal ? "topk_select_causal" : "topk_select", shape("T=%ld S=%ld K=%ld", T, S, K),
             time_ms([&] { cuda::topk_select(p, ws, wsb, nullptr); }, reps), 0,
             double(T) * S * 4 + double(T) * K * 4);
    }
    // topk_select's indices checked against the CPU's topk_select on sampled rows (the first and last
    // kCpuRows), then every tuning configuration of the sampled radix select (the first is
    // topk_select's) against topk_select's indices on every row. Tolerance: bitwise.
    constexpr int kCpuRows = 8;
    std::vector<int32_t> want(size_t(T) * K), got(size_t(T) * K);
    for (bool causal : {false, true}) {
      fill_iota_ranges<<<(T + 255) / 256, 256>>>(ks, ke, T, S, causal);
      cuda::topk_select(p, ws, wsb, nullptr);
      CHECK(cudaMemcpy(want.data(), idx, want.size() * sizeof(int32_t), cudaMemcpyDeviceToHost));
      std::vector<int> sample;
      for (int t = 0; t < T; ++t)
        if (t < kCpuRows || t >= T - kCpuRows) sample.push_back(t);
      const int n = static_cast<int>(sample.size());
      std::vector<float> hl(size_t(n) * S);
      std::vector<int32_t> hks(n), hke(n), hidx(size_t(n) * K);
      for (int r = 0; r < n; ++r) {
        const int t = sample[size_t(r)];
        CHECK(cudaMemcpy(hl.data() + size_t(r) * S, logits + size_t(t) * S, size_t(S) * sizeof(float),
                         cudaMemcpyDeviceToHost));
        hks[size_t(r)] = 0;
        hke[size_t(r)] = causal ? S - T + t + 1 : S;
      }
      cpu::topk_select(TopkParams{n, S, K, hl.data(), hks.data(), hke.data(), hidx.data()});
      int bad_rows = 0;
      for (int r = 0; r < n; ++r)
        bad_rows += !std::equal(hidx.begin() + size_t(r) * K, hidx.begin() + size_t(r + 1) * K,
                                want.begin() + size_t(sample[size_t(r)]) * K);
      std::printf("%s topk_select vs cpu::topk_select on %d rows: %d rows differ (tolerance: bitwise)\n",
                  causal ? "causal" : "full", n, bad_rows);
      if (bad_rows) mismatch(std::string(causal ? "topk_select_causal" : "topk_select") + " differs from the CPU");
      for (int c = 0; cuda::topk_select_v2_config(p, nullptr, c) != nullptr; ++c) {
        const std::string name = std::string(causal ? "topk_select_causal_cfg_" : "topk_select_cfg_") +
                                 cuda::topk_select_v2_config(p, nullptr, c);
        CHECK(cudaMemcpy(got.data(), idx, got.size() * sizeof(int32_t), cudaMemcpyDeviceToHost));
        if (got != want) mismatch(name + " differs from topk_select");
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
    // Decode: 32K context per request, HI = 64; B = 64 × next_n = 2 (MTP) and B = 128 × next_n = 1.
    // Every request owns its own pages (a shuffled permutation of the pool, as a server's allocator
    // leaves them), so no page is read twice through L2.
    for (const auto [B0, next_n] : {std::pair{64, 2}, std::pair{128, 1}}) {
      const int B = B0 / (quick ? 8 : 1), L = 32768 / div, blocks = L / kCachePageTokens, rows = B * next_n;
      const int pages = B * blocks;
      const size_t cache_bytes = size_t(pages) * kCachePageTokens * kIndexerRecordBytes;
      uint8_t* q = dalloc<uint8_t>(size_t(rows) * HI * DI);
      uint8_t* cache = dalloc<uint8_t>(cache_bytes);
      float* w = dalloc<float>(size_t(rows) * HI);
      float* logits = dalloc<float>(size_t(rows) * L);
      int32_t *lens = dalloc<int32_t>(rows), *table = dalloc<int32_t>(size_t(B) * blocks);
      fill_bytes<<<1024, 256>>>(q, size_t(rows) * HI * DI, 12);
      fill_bytes<<<1024, 256>>>(cache, cache_bytes, 13);
      fill_page_scales<<<1024, 256>>>(cache, pages, 20);
      urand(w, size_t(rows) * HI, 14);
      std::vector<int32_t> ht(size_t(B) * blocks), hl(rows);
      for (int i = 0; i < pages; ++i) ht[size_t(i)] = i;
      std::shuffle(ht.begin(), ht.end(), std::mt19937(15));
      CHECK(cudaMemcpy(table, ht.data(), ht.size() * 4, cudaMemcpyHostToDevice));
      for (int b = 0; b < B; ++b)
        for (int n = 0; n < next_n; ++n) hl[size_t(b) * next_n + n] = L - next_n + n + 1;
      CHECK(cudaMemcpy(lens, hl.data(), hl.size() * 4, cudaMemcpyHostToDevice));
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
      double visible = 0;
      for (int32_t v : hl) visible += v;
      const double flop = 2.0 * visible * HI * DI;
      const double bytes = double(B) * L * kIndexerRecordBytes + double(rows) * L * 4;
      const std::string sh = shape("B=%ld next_n=%ld L=%ld HI=%ld", B, next_n, L, HI);
      std::vector<float> out_exact, out_tc;
      for (Variant v : {Variant::kExact, Variant::kMma, Variant::kWgmma}) {
        const std::string row = std::string("indexer_logits_paged_fp8_") + cuda::variant_name(v);
        if (!paged_runs_here(row, p, v)) continue;
        report(row.c_str(), sh, time_ms([&] { cuda::indexer_logits_paged(p, logits, nullptr, v); }, reps), flop, bytes);
        std::vector<float>& out = v == Variant::kExact ? out_exact : out_tc;
        out.resize(size_t(rows) * L);
        CHECK(cudaMemcpy(out.data(), logits, out.size() * 4, cudaMemcpyDeviceToHost));
        if (v != Variant::kExact) check_paged(p, out_exact, out_tc, cuda::variant_name(v));
      }
      std::printf("(indexer_logits_paged default on this device: %s)\n",
                  cuda::variant_name(cuda::resolve_variant(p, Variant::kAuto)));
      report("indexer_logits_paged_default", sh,
             time_ms([&] { cuda::indexer_logits_paged(p, logits, nullptr); }, reps), flop, bytes);
      CHECK(cudaFree(q));
      CHECK(cudaFree(cache));
      CHECK(cudaFree(w));
      CHECK(cudaFree(logits));
      CHECK(cudaFree(lens));
      CHECK(cudaFree(table));
    }
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
  if (g_mismatch) {
    std::printf("dsa_bench_gpu: a cross-check is beyond its tolerance (MISMATCH above)\n");
    return 1;
  }
  return 0;
}
