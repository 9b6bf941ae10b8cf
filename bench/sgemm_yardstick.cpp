// sgemm_yardstick.cpp — the GFLOP/s yardstick of the CPU benchmark: cblas_sgemm n×n×n, C = A·Bᵀ
// (row-major, the q·kᵀ shape of attention scores), median of 5 runs after a warm-up. Built once per
// BLAS library found (dsa_bench_sgemm_blis, dsa_bench_sgemm_openblas; bench/CMakeLists.txt), each
// linked with that library alone, so a row names exactly the library it measured. The median run's
// partner column cpu_attention_s holds the median CPU seconds (user + system, all threads) of the
// runs, as dsa_bench_cpu reports its phases.
//   dsa_bench_sgemm_<lib> [n]    prints one line in dsa_bench_cpu's TSV columns (bench/run_bench.sh)
#include <sys/resource.h>

#include <cblas.h>
#include <omp.h>
#ifdef DSA_YARDSTICK_BLIS
#include <blis.h>
#endif

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#ifndef DSA_YARDSTICK_NAME
#error "DSA_YARDSTICK_NAME (the BLAS library's name) must be defined by the build"
#endif

namespace {
constexpr int kDefaultN = 2048;
constexpr int kReps = 5;
}  // namespace

int main(int argc, char** argv) {
  const int n = argc >= 2 ? std::atoi(argv[1]) : kDefaultN;
  if (n <= 0) {
    std::fprintf(stderr, "usage: %s [n > 0]\n", argv[0]);
    return 2;
  }
#ifdef DSA_YARDSTICK_BLIS
  bli_thread_set_num_threads(omp_get_max_threads());  // as dsa's blas.cpp does (BLIS's own default: 1)
#endif
  std::mt19937 gen(6);
  std::normal_distribution<float> dist;
  std::vector<float> a(size_t(n) * n), b(size_t(n) * n), c(size_t(n) * n);
  for (auto& x : a) x = dist(gen);
  for (auto& x : b) x = dist(gen);
  auto cpu_s = [] {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + 1e-6 * double(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
  };
  double cpu = 0;
  auto once = [&] {
    const auto t0 = std::chrono::steady_clock::now();
    const double c0 = cpu_s();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    cpu = cpu_s() - c0;
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  once();
  std::vector<double> t(kReps), tc(kReps);
  for (int r = 0; r < kReps; ++r) {
    t[r] = once();
    tc[r] = cpu;
  }
  std::sort(t.begin(), t.end());
  std::sort(tc.begin(), tc.end());
  const double med = t[kReps / 2];
  // mode L reps t_indexer t_attention t_total gflops_indexer gflops_attention rss_inputs rss_peak work
  // cpu_indexer cpu_attention
  std::printf("sgemm_%s\t%d\t%d\t0\t%.6f\t%.6f\t0\t%.2f\t0\t0\t0\t0\t%.6f\n", DSA_YARDSTICK_NAME, n, kReps, med,
              med, 2.0 * n * double(n) * n / med / 1e9, tc[kReps / 2]);
  return 0;
}
