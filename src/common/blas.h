// blas.h — the one door to the BLAS library for the model layers' matmuls (src/cpu/layers.cpp,
// src/model/). Which library is chosen at configure time (CMake DSA_BLAS: BLIS by default, OpenBLAS
// as the fallback) and named by blas::name(). Why BLIS first: its kernel choice follows the CPU's
// feature bits, while OpenBLAS 0.3.21 picks kernels from a list of known CPU models and runs its
// generic SSE3 kernel on newer ones (measured here: docs/perf.md "Training demo").
#pragma once
#include <cstdint>

namespace dsa::blas {

// C[M,N] = alpha·op(A)·op(B) + beta·C, row-major, explicit leading dimensions; op(X) = Xᵀ when
// trans_X. Runs with omp_get_max_threads() threads (1 inside a parallel region), so the CLI's
// thread setting and OMP_NUM_THREADS govern it like every other op. M = 0 or N = 0 does nothing.
void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// "BLIS" or "OpenBLAS".
const char* name();

}  // namespace dsa::blas
