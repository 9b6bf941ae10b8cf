// blas.cpp — see blas.h. The library is picked by CMake (DSA_BLAS_BLIS defined for BLIS).
#include "common/blas.h"

#include <cblas.h>
#include <omp.h>

#include <atomic>
#include <limits>
#include <string>

#include "dsa/ops.h"

#ifdef DSA_BLAS_BLIS
#include <blis.h>
#endif

namespace dsa::blas {
namespace {

int to_int(int64_t v, const char* what) {
  if (v < 0 || v > std::numeric_limits<int>::max())
    throw Error(std::string("blas::sgemm: ") + what + " = " + std::to_string(v) + " does not fit the BLAS int");
  return static_cast<int>(v);
}

}  // namespace

void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
#ifdef DSA_BLAS_BLIS
  // BLIS reads its thread count once from the environment (1 when unset); follow OpenMP instead,
  // telling BLIS only when the count changes (the setter is global state).
  static std::atomic<int> told{0};
  const int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  if (told.exchange(threads) != threads) bli_thread_set_num_threads(threads);
#endif
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, to_int(M, "M"),
              to_int(N, "N"), to_int(K, "K"), alpha, A, to_int(lda, "lda"), B, to_int(ldb, "ldb"), beta, C,
              to_int(ldc, "ldc"));
}

const char* name() {
#ifdef DSA_BLAS_BLIS
  return "BLIS";
#else
  return "OpenBLAS";
#endif
}

}  // namespace dsa::blas
