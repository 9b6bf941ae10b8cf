// cpu_scaling.cpp — the CPU scaling benchmark of one attention layer forward (docs/perf.md):
// dense causal MQA attention vs DSA (fused indexer + top-k in fp32, then sparse attention), at one
// sequence length per process so that the process's peak RSS belongs to that configuration alone.
//
//   dsa_bench_cpu dense   L     dense_attention_forward over causal ranges
//   dsa_bench_cpu dsa     L     indexer_topk (kFp32, fused) + sparse_attention_forward
//   dsa_bench_cpu fused   L     indexer_topk alone (fused; memory O(T·K))
//   dsa_bench_cpu unfused L     indexer_logits [L, L] + topk_select (memory O(T·S))
//   dsa_bench_cpu sgemm   [n]   OpenBLAS cblas_sgemm n×n×n (default 2048), the GFLOP/s yardstick
//
// Each prints one tab-separated line (header with --header):
//   mode L reps t_indexer_s t_attention_s t_total_s gflop_indexer gflop_attention
//   rss_inputs_mib rss_peak_mib work_mib
// Times are the median of `reps` runs after one warm-up (reps = 3 for L ≤ 4096, else 1 run and
// no warm-up, to bound the total time). Memory: peak resident set (getrusage ru_maxrss) of the
// process, and RSS after the layer inputs are allocated and touched (/proc/self/statm);
// work = peak − inputs, i.e. what the op pipeline itself holds: indices / logits / outputs and
// any internal buffers. FLOP conventions (dsa-spec / the issue):
//   dense causal 2·H·(Dqk + Dv)·pairs,  sparse 2·H·(Dqk + Dv)·T·K,  indexer 2·HI·DI·pairs,
//   pairs = Σ_t (ke − ks) = L(L+1)/2.
#include <cblas.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "dsa/ops.h"

namespace {

// The benchmark configuration of the issue: H = 16, Dqk = 192, Dv = 128, HI = 16, DI = 64, K = 512.
constexpr int kH = 16, kDqk = 192, kDv = 128, kHI = 16, kDI = 64, kTopK = 512;
constexpr int kRepsSmall = 3;
constexpr int kSmallL = 4096;
constexpr int kDefaultGemm = 2048;
constexpr double kMiB = 1024.0 * 1024.0;

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double rss_now_mib() {  // current resident set: /proc/self/statm field 2 (pages)
  std::ifstream f("/proc/self/statm");
  long size = 0, resident = 0;
  f >> size >> resident;
  return double(resident) * double(sysconf(_SC_PAGESIZE)) / kMiB;
}

double rss_peak_mib() {  // Linux reports ru_maxrss in KiB
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_maxrss) / 1024.0;
}

std::vector<float> random_vec(size_t n, uint64_t seed, float stddev) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<float> d(0.0f, stddev);
  std::vector<float> v(n);
  for (auto& x : v) x = d(gen);
  return v;
}

// Median wall time of fn over reps runs (after one warm-up when reps > 1).
double time_median(int reps, const std::function<void()>& fn) {
  if (reps > 1) fn();
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    const double t0 = now_s();
    fn();
    t.push_back(now_s() - t0);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

struct Result {
  const char* mode;
  int L, reps;
  double t_indexer = 0, t_attention = 0;
  double flop_indexer = 0, flop_attention = 0;
  double rss_inputs = 0;
};

void print_header() {
  std::printf("mode\tL\treps\tt_indexer_s\tt_attention_s\tt_total_s\tgflops_indexer\tgflops_attention\t"
              "rss_inputs_mib\trss_peak_mib\twork_mib\n");
}

void print(const Result& r) {
  auto gflops = [](double flop, double t) { return t > 0 ? flop / t / 1e9 : 0.0; };
  const double peak = rss_peak_mib();
  std::printf("%s\t%d\t%d\t%.6f\t%.6f\t%.6f\t%.2f\t%.2f\t%.1f\t%.1f\t%.1f\n", r.mode, r.L, r.reps, r.t_indexer,
              r.t_attention, r.t_indexer + r.t_attention, gflops(r.flop_indexer, r.t_indexer),
              gflops(r.flop_attention, r.t_attention), r.rss_inputs, peak, peak - r.rss_inputs);
}

// Layer inputs of one sequence of length L (T = S = L), random normal; causal ranges [0, t+1).
struct Layer {
  int L;
  std::vector<float> q, kv, iq, ik, w;
  std::vector<int32_t> ks, ke;
  explicit Layer(int L_) : L(L_) {
    q = random_vec(size_t(L) * kH * kDqk, 1, 1.0f);
    kv = random_vec(size_t(L) * kDqk, 2, 1.0f);
    iq = random_vec(size_t(L) * kHI * kDI, 3, 1.0f);
    ik = random_vec(size_t(L) * kDI, 4, 1.0f);
    w = random_vec(size_t(L) * kHI, 5, 1.0f / std::sqrt(float(kHI)));
    ks.assign(L, 0);
    ke.resize(L);
    for (int t = 0; t < L; ++t) ke[t] = t + 1;
  }
  double pairs() const { return double(L) * (L + 1) / 2; }
  dsa::IndexerParams indexer() const {
    dsa::IndexerParams p;
    p.T = L;
    p.S = L;
    p.HI = kHI;
    p.DI = kDI;
    p.precision = dsa::Precision::kFp32;
    p.q = iq.data();
    p.k = ik.data();
    p.w = w.data();
    p.ks = ks.data();
    p.ke = ke.data();
    return p;
  }
  dsa::AttentionParams attention() const {
    dsa::AttentionParams p;
    p.T = L;
    p.S = L;
    p.H = kH;
    p.Dqk = kDqk;
    p.Dv = kDv;
    p.scale = 1.0f / std::sqrt(float(kDqk));
    p.q = q.data();
    p.kv = kv.data();
    p.ks = ks.data();
    p.ke = ke.data();
    return p;
  }
};

Result run_dense(int L) {
  Layer layer(L);
  Result r{"dense", L, L <= kSmallL ? kRepsSmall : 1};
  r.rss_inputs = rss_now_mib();
  std::vector<float> out(size_t(L) * kH * kDv), lse(size_t(L) * kH);
  const auto p = layer.attention();
  r.t_attention = time_median(r.reps, [&] { dsa::cpu::dense_attention_forward(p, {out.data(), lse.data(), nullptr}); });
  r.flop_attention = 2.0 * kH * (kDqk + kDv) * layer.pairs();
  return r;
}

Result run_dsa(int L) {
  Layer layer(L);
  Result r{"dsa", L, L <= kSmallL ? kRepsSmall : 1};
  r.rss_inputs = rss_now_mib();
  std::vector<int32_t> idx(size_t(L) * kTopK);
  std::vector<float> out(size_t(L) * kH * kDv), lse(size_t(L) * kH);
  const auto ip = layer.indexer();
  r.t_indexer = time_median(r.reps, [&] { dsa::cpu::indexer_topk(ip, kTopK, idx.data()); });
  auto ap = layer.attention();
  ap.ks = ap.ke = nullptr;
  ap.K = kTopK;
  ap.indices = idx.data();
  r.t_attention = time_median(r.reps, [&] { dsa::cpu::sparse_attention_forward(ap, {out.data(), lse.data(), nullptr}); });
  r.flop_indexer = 2.0 * kHI * kDI * layer.pairs();
  r.flop_attention = 2.0 * kH * (kDqk + kDv) * double(L) * kTopK;
  return r;
}

Result run_fused(int L) {
  Layer layer(L);
  Result r{"fused", L, L <= kSmallL ? kRepsSmall : 1};
  r.rss_inputs = rss_now_mib();
  std::vector<int32_t> idx(size_t(L) * kTopK);
  const auto ip = layer.indexer();
  r.t_indexer = time_median(r.reps, [&] { dsa::cpu::indexer_topk(ip, kTopK, idx.data()); });
  r.flop_indexer = 2.0 * kHI * kDI * layer.pairs();
  return r;
}

Result run_unfused(int L) {
  Layer layer(L);
  Result r{"unfused", L, L <= kSmallL ? kRepsSmall : 1};
  r.rss_inputs = rss_now_mib();
  std::vector<int32_t> idx(size_t(L) * kTopK);
  std::vector<float> logits(size_t(L) * L);
  const auto ip = layer.indexer();
  r.t_indexer = time_median(r.reps, [&] {
    dsa::cpu::indexer_logits(ip, logits.data());
    dsa::TopkParams tp;
    tp.T = L;
    tp.S = L;
    tp.K = kTopK;
    tp.logits = logits.data();
    tp.ks = layer.ks.data();
    tp.ke = layer.ke.data();
    tp.indices = idx.data();
    dsa::cpu::topk_select(tp);
  });
  r.flop_indexer = 2.0 * kHI * kDI * layer.pairs();
  return r;
}

Result run_sgemm(int n) {
  const auto a = random_vec(size_t(n) * n, 6, 1.0f), b = random_vec(size_t(n) * n, 7, 1.0f);
  std::vector<float> c(size_t(n) * n);
  Result r{"sgemm", n, kRepsSmall};
  r.rss_inputs = rss_now_mib();
  // C = A·Bᵀ (row-major), the q·kᵀ shape of attention scores.
  r.t_attention = time_median(r.reps, [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
  });
  r.flop_attention = 2.0 * n * double(n) * n;
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && std::strcmp(argv[1], "--header") == 0) {
    print_header();
    return 0;
  }
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s {dense|dsa|fused|unfused} L | sgemm [n] | --header\n", argv[0]);
    return 2;
  }
  const std::string mode = argv[1];
  const int n = argc >= 3 ? std::atoi(argv[2]) : kDefaultGemm;
  if (n <= 0) {
    std::fprintf(stderr, "bad size %s\n", argc >= 3 ? argv[2] : "");
    return 2;
  }
  try {
    if (mode == "dense") print(run_dense(n));
    else if (mode == "dsa") print(run_dsa(n));
    else if (mode == "fused") print(run_fused(n));
    else if (mode == "unfused") print(run_unfused(n));
    else if (mode == "sgemm") print(run_sgemm(n));
    else {
      std::fprintf(stderr, "unknown mode %s\n", mode.c_str());
      return 2;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s %d failed: %s\n", mode.c_str(), n, e.what());
    return 1;
  }
  return 0;
}
