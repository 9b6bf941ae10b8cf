// cublas_handle.cu — the per-device cuBLAS handle (cublas_handle.cuh says why one, and how).
#include "cuda/cublas_handle.cuh"

#include <cuda_runtime.h>

#include <vector>

#include "cuda/common.cuh"

namespace dsa::cuda::detail {

std::mutex& cublas_mutex() {
  static std::mutex m;
  return m;
}

cublasHandle_t cublas_handle(const char* op) {
  static std::vector<cublasHandle_t> handles;
  int dev = 0, count = 0;
  DSA_CUDA_CALL(op, cudaGetDevice(&dev));
  DSA_CUDA_CALL(op, cudaGetDeviceCount(&count));
  if (handles.size() < static_cast<size_t>(count)) handles.resize(static_cast<size_t>(count), nullptr);
  if (!handles[static_cast<size_t>(dev)]) {
    cublasHandle_t h = nullptr;
    DSA_CUBLAS_CALL(op, cublasCreate(&h));
    DSA_CUBLAS_CALL(op, cublasSetAtomicsMode(h, CUBLAS_ATOMICS_NOT_ALLOWED));
    DSA_CUBLAS_CALL(op, cublasSetPointerMode(h, CUBLAS_POINTER_MODE_HOST));
    DSA_CUBLAS_CALL(op, cublasSetMathMode(h, CUBLAS_DEFAULT_MATH));
    handles[static_cast<size_t>(dev)] = h;
  }
  return handles[static_cast<size_t>(dev)];
}

}  // namespace dsa::cuda::detail
