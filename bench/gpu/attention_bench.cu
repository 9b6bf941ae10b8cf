// attention_bench.cu — GPU timings of the attention-side ops (sparse prefill forward / backward,
// sparse decode, dense forward, indexer KL) with the FLOP conventions of dsa-spec §3:
//   sparse fwd   2·T·K·H·(Dqk + Dv)                     (FlashMLA; every slot counted)
//   sparse bwd   2·T·K·H·(Dv + 3·Dqk + Dv)              (TileLang sparse_mla_bwd; the five matmuls
//                S = q·kᵀ (Dqk), dP = dO·vᵀ (Dv), dq = dS·k (Dqk), dk = dSᵀ·q (Dqk), dv = Pᵀ·dO (Dv))
//   decode       B·next_n·H·(2·576·K + 2·K·512)         (FlashMLA decode)
//   dense fwd    causal: 2·(Σ_t (ke−ks))·H·(Dqk + Dv)
//   indexer KL   2·T·K·H·Dqk (the score recompute)
// Bytes: every input read once + every output written once (the gathered kv counted per query,
// FlashMLA's convention: T·K·Dqk·4, ·2 for bf16 kv). Inputs are random (a hash on the device, never
// zeros), the median of `reps` event-timed runs after one warm-up is reported.
// Rows: <op>_<variant> names a kernel variant run on the fp32 inputs (the tensor-core variants round
// them to bf16 themselves); <op>_default is the library's default path — the same tensors converted
// to bf16 once (untimed), no variant named, so kAuto picks (the line before it says which variant).
// Cross-checks between variants print their tolerance; one beyond it prints MISMATCH and the program
// exits 1 after the last row.
// Usage: attention_bench [quick]   ("quick" shrinks every shape ×8 for a smoke run).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <string>
#include <vector>

#include "bench_util.cuh"
#include "dsa/cuda_ops.h"

using namespace dsa;
using namespace dsa::bench;
using dsa::cuda::Variant;

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
  std::fflush(stdout);
}

// Set by a cross-check beyond its printed tolerance: the program then exits 1 after every row.
bool g_mismatch = false;

// Relative L2 distance of a from ref over their first n elements (n = 0: all of them).
double rel_l2(const std::vector<float>& a, const std::vector<float>& ref, size_t n = 0) {
  if (n == 0) n = ref.size();
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    const double e = double(a[i]) - ref[i];
    num += e * e;
    den += double(ref[i]) * ref[i];
  }
  return std::sqrt(num / den);
}
double max_abs_diff(const std::vector<float>& a, const std::vector<float>& ref, size_t n = 0) {
  if (n == 0) n = ref.size();
  double worst = 0;
  for (size_t i = 0; i < n; ++i) worst = std::max(worst, std::fabs(double(a[i]) - ref[i]));
  return worst;
}
// Prints one cross-check; a value above tol (or NaN) is a MISMATCH and fails the run.
void cross_check(const std::string& what, double err, double tol, const std::string& extra = "") {
  const bool bad = !(err <= tol);
  std::printf("  (%s: relative L2 %.2e%s, tolerance %.0e)%s\n", what.c_str(), err, extra.c_str(), tol,
              bad ? "  MISMATCH" : "");
  g_mismatch = g_mismatch || bad;
}

// Whether variant v can run the call here (resolve_variant throws dsa::Error naming the reason when
// it cannot: a named variant never falls back); prints why not.
template <class Params, class... Op>
bool runs_here(const char* row, const Params& p, cuda::Variant v, Op... op) {
  try {
    cuda::resolve_variant(p, v, op...);
    return true;
  } catch (const std::exception& e) {
    std::printf("  (%s: skipped, %s)\n", row, e.what());
    return false;
  }
}

template <class T>
void d2h(std::vector<T>& h, const T* d, size_t n) {
  h.resize(n);
  CHECK(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost));
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
  const char* fwd_op = "sparse_attention_forward";
  const char* bwd_op = "sparse_attention_backward";

  // ── sparse prefill forward: T = 4096 queries, S = 8192 keys, K = 2048 (FlashMLA's perf case) ──
  {
    const int T = 4096 / div, S = 8192 / div, Kf = K / div;
    float *q = dalloc<float>(size_t(T) * H * Dqk), *kv = dalloc<float>(size_t(S) * Dqk);
    float *out = dalloc<float>(size_t(T) * H * Dv), *lse = dalloc<float>(size_t(T) * H);
    int32_t* idx = dalloc<int32_t>(size_t(T) * Kf);
    urand(q, size_t(T) * H * Dqk, 1);
    urand(kv, size_t(S) * Dqk, 2);
    fill_indices<<<1024, 256>>>(idx, T, Kf, S, false, 3);
    uint16_t *q16 = to_bf16(q, size_t(T) * H * Dqk), *kv16 = to_bf16(kv, size_t(S) * Dqk);
    AttentionParams p;  // fp32 q / kv
    p.T = T; p.S = S; p.H = H; p.Dqk = Dqk; p.Dv = Dv; p.scale = scale; p.q = q; p.kv = kv; p.K = Kf; p.indices = idx;
    AttentionParams p16 = p;  // the same tensors as bf16
    p16.dtype = DType::kBF16; p16.q = nullptr; p16.kv = nullptr; p16.q_bf16 = q16; p16.kv_bf16 = kv16;
    AttentionForwardOut o{out, lse, nullptr};
    const size_t n_out = size_t(T) * H * Dv;
    const double flop = 2.0 * T * Kf * H * (Dqk + Dv);
    const double bytes32 =
        4.0 * (double(T) * H * Dqk + double(T) * Kf * Dqk + double(T) * H * (Dv + 1)) + 4.0 * T * Kf;
    const double bytes16 = 2.0 * (double(T) * H * Dqk + double(T) * Kf * Dqk) + 4.0 * double(T) * H * (Dv + 1) +
                           4.0 * T * Kf;
    char shape[128];
    std::snprintf(shape, sizeof shape, "T=%d S=%d K=%d H=%d %d/%d", T, S, Kf, H, Dqk, Dv);
    // The variants on the fp32 inputs (the tensor-core ones round q / kv to bf16 themselves), each
    // against kExact (fp32; itself checked against fp64 by the test table) and kWgmma against kMma
    // (same bf16 operand rounding) on the first 64 (query, head) rows and on every row. The bound is
    // the bf16 test tolerance (2e-2, tests/op_attention.cpp); above it a kernel is broken.
    std::vector<float> ref_out, mma_out, h;
    for (const Variant v : {Variant::kExact, Variant::kMma, Variant::kWgmma}) {
      const std::string row = std::string("sparse_fwd_") + cuda::variant_name(v);
      if (!runs_here(row.c_str(), p, v, fwd_op)) continue;
      const size_t wsb = cuda::sparse_attention_forward_workspace_bytes(p, v);
      void* ws = wsb ? dalloc<char>(wsb) : nullptr;
      const double ms = time_ms([&] { cuda::sparse_attention_forward(p, o, ws, wsb, nullptr, v); }, 3);
      if (ws) CHECK(cudaFree(ws));
      d2h(h, out, n_out);
      if (v == Variant::kExact) ref_out = h;
      else cross_check(row + " vs sparse_fwd_exact", rel_l2(h, ref_out), 2e-2);
      if (v == Variant::kMma) mma_out = h;
      if (v == Variant::kWgmma && !mma_out.empty())
        for (const size_t rows : {size_t(64), size_t(T) * H}) {
          char what[96], extra[64];
          std::snprintf(what, sizeof what, "%s vs sparse_fwd_mma over %zu rows", row.c_str(), rows);
          std::snprintf(extra, sizeof extra, ", max |diff| %.2e", max_abs_diff(h, mma_out, rows * Dv));
          cross_check(what, rel_l2(h, mma_out, rows * Dv), 2e-2, extra);
        }
      report(row.c_str(), shape, ms, flop, bytes32);
    }
    // The default path: bf16 q / kv, no variant named (kAuto).
    {
      std::printf("  (sparse_fwd_default: bf16 q/kv, kAuto runs %s)\n",
                  cuda::variant_name(cuda::resolve_variant(p16, Variant::kAuto, fwd_op)));
      const size_t wsb = cuda::sparse_attention_forward_workspace_bytes(p16);
      void* ws = wsb ? dalloc<char>(wsb) : nullptr;
      const double ms = time_ms([&] { cuda::sparse_attention_forward(p16, o, ws, wsb, nullptr); }, 3);
      if (ws) CHECK(cudaFree(ws));
      d2h(h, out, n_out);
      cross_check("sparse_fwd_default vs sparse_fwd_exact", rel_l2(h, ref_out), 2e-2);
      report("sparse_fwd_default", shape, ms, flop, bytes16);
    }
    ref_out.clear(); ref_out.shrink_to_fit();
    mma_out.clear(); mma_out.shrink_to_fit();
    // ── sparse backward at T/4 (same per-query work; the rate is what matters) ──
    // out / lse of rows < Tb come from kExact's forward below; the rows beyond (read by the full-T
    // runs) hold the default forward's output of the same inputs.
    const int Tb = T / 4;
    AttentionParams pb = p;
    pb.T = Tb;
    float *dout = dalloc<float>(size_t(T) * H * Dv), *dq = dalloc<float>(size_t(T) * H * Dqk),
          *dkv = dalloc<float>(size_t(S) * Dqk);
    urand(dout, size_t(T) * H * Dv, 4);
    cuda::sparse_attention_forward(pb, o, nullptr, 0, nullptr, Variant::kExact);
    AttentionBackwardArgs b{dout, out, lse, dq, dkv};
    std::vector<float> dq1, dkv1, dqv, dkvv;
    {
      const size_t wsb = cuda::sparse_attention_backward_workspace_bytes(pb, Variant::kExact);
      void* ws = dalloc<char>(wsb);
      const double ms =
          time_ms([&] { cuda::sparse_attention_backward(pb, b, ws, wsb, nullptr, Variant::kExact); }, 3);
      const double flop_b = 2.0 * Tb * Kf * H * (Dv + 3.0 * Dqk + Dv);
      const double bytes = 4.0 * (double(Tb) * H * (2 * Dqk + 2 * Dv + 2) + 2.0 * Tb * Kf * Dqk + double(S) * Dqk);
      std::snprintf(shape, sizeof shape, "T=%d S=%d K=%d H=%d ws=%.0fMiB", Tb, S, Kf, H, wsb / 1048576.0);
      report("sparse_bwd_exact", shape, ms, flop_b, bytes);
      CHECK(cudaFree(ws));
      d2h(dq1, dq, size_t(Tb) * H * Dqk);
      d2h(dkv1, dkv, size_t(S) * Dqk);
    }
    // ── the bf16 tensor-core backward: kCublas on the fp32 inputs (it rounds q / kv itself), then the
    // default path (bf16 q / kv, no variant named); each at Tb against kExact's dq / dkv (bound: the
    // bf16 backward test tolerance 3e-2, tests/op_attention.cpp), then at the full T ──
    // Bytes (docs/kernels/sparse_attention.md): the contract I/O (q — 4 or 2 bytes —, dout, out, lse, dq)
    // plus what the chunks move through HBM per query: Kg written once and read by two GEMMs
    // (3·K·Dqk·2), SP written and read (2·2H·K·4), G written once and read 1.5 times (2.5·2H·K·2), part
    // written and read (2·K·Dqk·4); fp32 kv read, its bf16 copy written, dkv read and written
    // (≈ 3·S·Dqk·4), or bf16 kv read and dkv read and written (S·Dqk·(2 + 8)). The gathered rows come
    // from the bf16 kv, L2-resident at S = 8192 (9.4 MB), so they are not counted again.
    auto bwd_bytes = [&](int Tv, bool bf16_in) {
      const double q_bytes = (bf16_in ? 2.0 : 4.0) * double(Tv) * H * Dqk;
      const double kv_bytes = bf16_in ? 2.0 * S * Dqk + 8.0 * S * Dqk : 3.0 * S * Dqk * 4;
      return q_bytes + 4.0 * double(Tv) * H * (Dqk + 2 * Dv + 2) + kv_bytes +
             double(Tv) * (3.0 * Kf * Dqk * 2 + 2.0 * 2 * H * Kf * 4 + 2.5 * 2 * H * Kf * 2 + 2.0 * Kf * Dqk * 4);
    };
    for (const bool dflt : {false, true}) {
      const char* row = dflt ? "sparse_bwd_default" : "sparse_bwd_cublas";
      if (dflt)
        std::printf("  (sparse_bwd_default: bf16 q/kv, kAuto runs %s)\n",
                    cuda::variant_name(cuda::resolve_variant(p16, Variant::kAuto, bwd_op)));
      else if (!runs_here(row, p, Variant::kCublas, bwd_op))
        continue;
      for (const int Tv : {Tb, T}) {
        AttentionParams pv = dflt ? p16 : p;
        pv.T = Tv;
        const size_t wsv = dflt ? cuda::sparse_attention_backward_workspace_bytes(pv)
                                : cuda::sparse_attention_backward_workspace_bytes(pv, Variant::kCublas);
        void* wv = dalloc<char>(wsv);
        const double ms = time_ms([&] {
          if (dflt) cuda::sparse_attention_backward(pv, b, wv, wsv, nullptr);
          else cuda::sparse_attention_backward(pv, b, wv, wsv, nullptr, Variant::kCublas);
        }, 3);
        CHECK(cudaFree(wv));
        if (Tv == Tb) {
          d2h(dqv, dq, dq1.size());
          d2h(dkvv, dkv, dkv1.size());
          const std::string what = std::string(row) + " vs sparse_bwd_exact at T=" + std::to_string(Tb);
          cross_check(what + ", dq", rel_l2(dqv, dq1), 3e-2);
          cross_check(what + ", dkv", rel_l2(dkvv, dkv1), 3e-2);
        }
        std::snprintf(shape, sizeof shape, "T=%d S=%d K=%d H=%d ws=%.0fMiB", Tv, S, Kf, H, wsv / 1048576.0);
        report(row, shape, ms, 2.0 * Tv * Kf * H * (Dv + 3.0 * Dqk + Dv), bwd_bytes(Tv, dflt));
      }
    }
    cudaFree(dout); cudaFree(dq); cudaFree(dkv);
    cudaFree(q); cudaFree(kv); cudaFree(q16); cudaFree(kv16); cudaFree(out); cudaFree(lse); cudaFree(idx);
  }
  // ── sparse forward with a 128K-key cache (302 MiB fp32 kv, 151 MiB bf16: gathers miss L2) ──
  // The tensor-core variants on fp32 inputs, then the default path (bf16 q / kv, kAuto); kWgmma and the
  // default checked against kMma over every row (bound 2e-2, as above).
  {
    const int T = 4096 / div, S = 131072 / div, Kf = K / div;
    float *q = dalloc<float>(size_t(T) * H * Dqk), *kv = dalloc<float>(size_t(S) * Dqk);
    float *out = dalloc<float>(size_t(T) * H * Dv), *lse = dalloc<float>(size_t(T) * H);
    int32_t* idx = dalloc<int32_t>(size_t(T) * Kf);
    urand(q, size_t(T) * H * Dqk, 21);
    urand(kv, size_t(S) * Dqk, 22);
    fill_indices<<<1024, 256>>>(idx, T, Kf, S, true, 23);
    uint16_t *q16 = to_bf16(q, size_t(T) * H * Dqk), *kv16 = to_bf16(kv, size_t(S) * Dqk);
    AttentionParams p;
    p.T = T; p.S = S; p.H = H; p.Dqk = Dqk; p.Dv = Dv; p.scale = scale; p.q = q; p.kv = kv; p.K = Kf; p.indices = idx;
    AttentionParams p16 = p;
    p16.dtype = DType::kBF16; p16.q = nullptr; p16.kv = nullptr; p16.q_bf16 = q16; p16.kv_bf16 = kv16;
    AttentionForwardOut o{out, lse, nullptr};
    const size_t n_out = size_t(T) * H * Dv;
    const double flop = 2.0 * T * Kf * H * (Dqk + Dv);
    char shape[128];
    std::snprintf(shape, sizeof shape, "T=%d S=%d K=%d H=%d last rows", T, S, Kf, H);
    std::vector<float> mma_out, h;
    for (const Variant v : {Variant::kMma, Variant::kWgmma, Variant::kAuto}) {
      const bool dflt = v == Variant::kAuto;
      const std::string row = std::string("sparse_fwd_") + (dflt ? "default" : cuda::variant_name(v));
      if (dflt)
        std::printf("  (sparse_fwd_default: bf16 q/kv, kAuto runs %s)\n",
                    cuda::variant_name(cuda::resolve_variant(p16, Variant::kAuto, fwd_op)));
      else if (!runs_here(row.c_str(), p, v, fwd_op))
        continue;
      const size_t wsb = dflt ? cuda::sparse_attention_forward_workspace_bytes(p16)
                              : cuda::sparse_attention_forward_workspace_bytes(p, v);
      void* ws = wsb ? dalloc<char>(wsb) : nullptr;
      const double ms = time_ms([&] {
        if (dflt) cuda::sparse_attention_forward(p16, o, ws, wsb, nullptr);
        else cuda::sparse_attention_forward(p, o, ws, wsb, nullptr, v);
      }, 5);
      if (ws) CHECK(cudaFree(ws));
      d2h(h, out, n_out);
      if (v == Variant::kMma) mma_out = h;
      else if (!mma_out.empty()) {
        char extra[64];
        std::snprintf(extra, sizeof extra, ", max |diff| %.2e", max_abs_diff(h, mma_out));
        cross_check(row + " vs sparse_fwd_mma", rel_l2(h, mma_out), 2e-2, extra);
      }
      const double elem = dflt ? 2.0 : 4.0;  // bytes of a q / kv element as passed
      const double bytes = elem * (double(T) * H * Dqk + double(T) * Kf * Dqk) + 4.0 * double(T) * H * (Dv + 1) +
                           4.0 * T * Kf;
      report(row.c_str(), shape, ms, flop, bytes);
      std::printf("  (L=128K prefill = %d such query blocks: %.1f ms of sparse attention)\n", S / T, ms * (S / T));
    }
    cudaFree(q); cudaFree(kv); cudaFree(q16); cudaFree(kv16); cudaFree(out); cudaFree(lse); cudaFree(idx);
  }
  // ── dense causal forward (MQA 576/512, kExact: the oracle) at T = S = 2048 ──
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
    const double ms = time_ms([&] { cuda::dense_attention_forward(p, o, nullptr); }, 3);
    const double pairs = double(T) * (T + 1) / 2;
    char shape[128];
    std::snprintf(shape, sizeof shape, "causal T=S=%d H=%d %d/%d", T, H, Dqk, Dv);
    report("dense_fwd_exact", shape, ms, 2.0 * pairs * H * (Dqk + Dv),
           4.0 * (double(T) * H * (Dqk + Dv + 1) + double(S) * Dqk));
    cudaFree(q); cudaFree(kv); cudaFree(out); cudaFree(lse); cudaFree(ks); cudaFree(ke);
  }
  // ── sparse decode: B = 128, next_n = 2, H = 128, K = 2048, FP8 records (FlashMLA's perf case) ──
  // kExact and kMma on fp32 q, then the default path (bf16 q, kAuto); kMma and the default checked
  // against kExact (bound 2e-2, the bf16 forward tolerance).
  {
    const int B = 128 / div, nn = 2, slots = 65536 / div, rows = B * nn;
    float* q = dalloc<float>(size_t(rows) * H * 576);
    float *out = dalloc<float>(size_t(rows) * H * 512), *lse = dalloc<float>(size_t(rows) * H);
    int32_t* idx = dalloc<int32_t>(size_t(rows) * K);
    float* kvf = dalloc<float>(size_t(slots) * 576);
    uint8_t* rec = dalloc<uint8_t>(size_t(slots) * kMlaRecordBytes);
    urand(q, size_t(rows) * H * 576, 7);
    urand(kvf, size_t(slots) * 576, 8);
    uint16_t* q16 = to_bf16(q, size_t(rows) * H * 576);
    MlaCacheParams mp;
    mp.N = slots; mp.format = ScaleFormat::kFloat; mp.kv = kvf; mp.records = rec;
    cuda::mla_cache_pack(mp, nullptr);
    fill_indices<<<1024, 256>>>(idx, rows, K, slots, false, 9);
    SparseDecodeParams p;
    p.B = B; p.next_n = nn; p.H = H; p.K = K; p.num_slots = slots; p.scale = scale;
    p.format = KvCacheFormat::kFp8Record; p.q = q; p.cache = rec; p.indices = idx; p.out = out; p.lse = lse;
    SparseDecodeParams p16 = p;
    p16.q_dtype = DType::kBF16; p16.q = nullptr; p16.q_bf16 = q16;
    const size_t n_out = size_t(rows) * H * 512;
    const double flop = double(B) * H * nn * (2.0 * 576 * K + 2.0 * K * 512);
    char shape[128];
    std::snprintf(shape, sizeof shape, "B=%d next_n=%d H=%d K=%d fp8", B, nn, H, K);
    std::vector<float> ref_out, h;
    for (const Variant v : {Variant::kExact, Variant::kMma, Variant::kAuto}) {
      const bool dflt = v == Variant::kAuto;
      const std::string row = std::string("sparse_decode_") + (dflt ? "default" : cuda::variant_name(v));
      if (dflt)
        std::printf("  (sparse_decode_default: bf16 q, kAuto runs %s)\n",
                    cuda::variant_name(cuda::resolve_variant(p16, Variant::kAuto)));
      else if (!runs_here(row.c_str(), p, v))
        continue;
      const size_t wsb = dflt ? cuda::sparse_attention_decode_workspace_bytes(p16)
                              : cuda::sparse_attention_decode_workspace_bytes(p, v);
      void* ws = wsb ? dalloc<char>(wsb) : nullptr;
      const double ms = time_ms([&] {
        if (dflt) cuda::sparse_attention_decode(p16, ws, wsb, nullptr);
        else cuda::sparse_attention_decode(p, ws, wsb, nullptr, v);
      }, 5);
      if (ws) CHECK(cudaFree(ws));
      d2h(h, out, n_out);
      if (v == Variant::kExact) ref_out = h;
      else cross_check(row + " vs sparse_decode_exact", rel_l2(h, ref_out), 2e-2);
      const double bytes =
          (dflt ? 2.0 : 4.0) * rows * H * 576 + 4.0 * rows * H * 513 + double(rows) * K * kMlaRecordBytes;
      report(row.c_str(), shape, ms, flop, bytes);
    }
    cudaFree(q); cudaFree(q16); cudaFree(out); cudaFree(lse); cudaFree(idx); cudaFree(kvf); cudaFree(rec);
  }
  // ── indexer KL (sparse mode, kExact): T = 1024, K = 2048, H = 128, Dqk = 576 ──
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
    cuda::sparse_attention_forward(a, AttentionForwardOut{out, lse, nullptr}, nullptr, 0, nullptr, Variant::kExact);
    IndexerKlParams kp;
    kp.attn = a; kp.lse = lse; kp.index_logits = I;
    const double flop = 2.0 * T * Kf * H * Dqk;
    const double bytes = 4.0 * (double(T) * H * (Dqk + 1) + double(T) * Kf * (Dqk + 2));
    char shape[128];
    std::snprintf(shape, sizeof shape, "sparse T=%d K=%d H=%d Dqk=%d", T, Kf, H, Dqk);
    report("indexer_kl_fwd_exact", shape, time_ms([&] { cuda::indexer_kl_forward(kp, loss, nullptr); }, 3), flop,
           bytes);
    report("indexer_kl_bwd_exact", shape, time_ms([&] { cuda::indexer_kl_backward(kp, nullptr, dI, nullptr); }, 3),
           flop, bytes);
    cudaFree(q); cudaFree(kv); cudaFree(lse); cudaFree(I); cudaFree(dI); cudaFree(loss); cudaFree(out); cudaFree(idx);
  }
  CHECK(cudaDeviceSynchronize());
  if (g_mismatch) {
    std::printf("attention_bench: a cross-check is beyond its tolerance (MISMATCH above)\n");
    return 1;
  }
  return 0;
}
