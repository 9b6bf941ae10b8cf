// sgemm_yardstick.cpp — the GFLOP/s yardstick of the CPU benchmark: cblas_sgemm n×n×n, C = A·Bᵀ
// (row-major, the q·kᵀ shape of attention scores), median of 5 runs after a warm-up. Built once per
// BLAS library found (dsa_bench_sgemm_blis, dsa_bench_sgemm_openblas; bench/CMakeLists.txt), each
// linked with that library alone, so a row names exactly the library it measured.
//   dsa_bench_sgemm_<lib> [n]    prints one line in dsa_bench_cpu's TSV columns (bench/run_bench.sh)
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
  auto once = [&] {
    const auto t0 = std::chrono::steady_clock::now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  once();
  std::vector<double> t(kReps);
  for (auto& x : t) x = once();
  std::sort(t.begin(), t.end());
  const double med = t[kReps / 2];
  // mode L reps t_indexer t_attention t_total gflops_indexer gflops_attention rss_inputs rss_peak work
  std::printf("sgemm_%s\t%d\t%d\t0\t%.6f\t%.6f\t0\t%.2f\t0\t0\t0\n", DSA_YARDSTICK_NAME, n, kReps, med, med,
              2.0 * n * double(n) * n / med / 1e9);
  return 0;
}
