// cublas_handle.cuh — the one cuBLAS handle per device that the CUDA backend's matmuls share
// (layers.cu: gemm / linear; sparse_attention_backward_bf16.cu): created on first use (the only
// allocation these ops make), atomics disallowed (deterministic), host pointer mode, default math
// (no TF32). cublasSetStream / cublasSetWorkspace and the call that uses them must not interleave
// between threads, so callers hold cublas_mutex() from binding the stream to the last call.
#pragma once

#include <cublas_v2.h>

#include <mutex>
#include <string>

#include "dsa/ops.h"

#define DSA_CUBLAS_CALL(op, x)                                                                       \
  do {                                                                                               \
    const cublasStatus_t st_ = (x);                                                                  \
    if (st_ != CUBLAS_STATUS_SUCCESS)                                                                \
      throw ::dsa::Error(std::string(op) + ": " #x ": cuBLAS status " + std::to_string(int(st_)));   \
  } while (0)

namespace dsa::cuda::detail {

std::mutex& cublas_mutex();
cublasHandle_t cublas_handle(const char* op);   // the current device's; caller holds cublas_mutex()

}  // namespace dsa::cuda::detail
