// cublas_lazy.cu — cuBLAS loaded on first use. The library is not linked: the cuBLAS entry points the
// backend calls are defined here and forward to libcublas.so.<major>, opened with dlopen the first time
// one of them runs. A process that never runs a GEMM on the GPU (every CPU command, `dsa help`) maps
// neither libcublas nor libcublasLt (measured: 205 MB → the CPU build's footprint; docs/reliability.md).
// Add a function here when the backend starts calling a new cuBLAS entry point (the link fails until then).
#include <cublas_v2.h>
#include <dlfcn.h>

#include <mutex>
#include <string>

#include "common/check.h"

namespace {

#define DSA_STR2(x) #x
#define DSA_STR(x) DSA_STR2(x)
constexpr const char* kLibrary = "libcublas.so." DSA_STR(CUBLAS_VER_MAJOR);

// The library handle (dlopen once, never closed: its handles outlive any caller).
void* library() {
  static void* handle = nullptr;
  static std::once_flag once;
  std::call_once(once, [] { handle = dlopen(kLibrary, RTLD_NOW | RTLD_LOCAL); });
  if (handle == nullptr) {
    const char* why = dlerror();
    ::dsa::detail::fail("cublas", "cannot load ", kLibrary, " (", why ? why : "not found",
                        "): the CUDA toolkit's cuBLAS must be on the library path for GPU matmuls");
  }
  return handle;
}

template <class Fn>
Fn resolve(const char* name) {
  void* f = dlsym(library(), name);
  if (f == nullptr) ::dsa::detail::fail("cublas", kLibrary, " has no symbol ", name);
  return reinterpret_cast<Fn>(f);
}

}  // namespace

// Each forwarder resolves its symbol once (a function-local static) and calls it.
#define DSA_CUBLAS_FORWARD(name, params, args)                          \
  extern "C" cublasStatus_t CUBLASWINAPI name params {                  \
    using Fn = cublasStatus_t(CUBLASWINAPI*) params;                    \
    static const Fn fn = resolve<Fn>(#name);                            \
    return fn args;                                                      \
  }

DSA_CUBLAS_FORWARD(cublasCreate_v2, (cublasHandle_t * handle), (handle))
DSA_CUBLAS_FORWARD(cublasSetWorkspace_v2, (cublasHandle_t handle, void* workspace, size_t workspaceSizeInBytes),
                   (handle, workspace, workspaceSizeInBytes))
DSA_CUBLAS_FORWARD(cublasSetStream_v2, (cublasHandle_t handle, cudaStream_t streamId), (handle, streamId))
DSA_CUBLAS_FORWARD(cublasSetPointerMode_v2, (cublasHandle_t handle, cublasPointerMode_t mode), (handle, mode))
DSA_CUBLAS_FORWARD(cublasSetAtomicsMode, (cublasHandle_t handle, cublasAtomicsMode_t mode), (handle, mode))
DSA_CUBLAS_FORWARD(cublasSetMathMode, (cublasHandle_t handle, cublasMath_t mode), (handle, mode))
DSA_CUBLAS_FORWARD(cublasGemmEx,
                   (cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n, int k,
                    const void* alpha, const void* A, cudaDataType Atype, int lda, const void* B, cudaDataType Btype,
                    int ldb, const void* beta, void* C, cudaDataType Ctype, int ldc, cublasComputeType_t computeType,
                    cublasGemmAlgo_t algo),
                   (handle, transa, transb, m, n, k, alpha, A, Atype, lda, B, Btype, ldb, beta, C, Ctype, ldc,
                    computeType, algo))
DSA_CUBLAS_FORWARD(cublasGemmStridedBatchedEx,
                   (cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n, int k,
                    const void* alpha, const void* A, cudaDataType Atype, int lda, long long int strideA,
                    const void* B, cudaDataType Btype, int ldb, long long int strideB, const void* beta, void* C,
                    cudaDataType Ctype, int ldc, long long int strideC, int batchCount,
                    cublasComputeType_t computeType, cublasGemmAlgo_t algo),
                   (handle, transa, transb, m, n, k, alpha, A, Atype, lda, strideA, B, Btype, ldb, strideB, beta, C,
                    Ctype, ldc, strideC, batchCount, computeType, algo))
