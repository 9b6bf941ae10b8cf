// cuda_backend.cu — registers one CudaBackend per kernel version when a GPU is present; with no
// GPU (CI), no GPU rows exist and the table runs the CPU rows only.
#include <cuda_runtime.h>

#include "cuda/cuda_backend.h"
#include "dsa/cuda_ops.h"

namespace dsa::test {

void append_gpu_backends(std::vector<std::shared_ptr<Backend>>& out) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    cudaGetLastError();  // clear the "no device" error so later calls start clean
    return;
  }
  for (int v : dsa::cuda::kKernelVersions) out.push_back(std::make_shared<CudaBackend>(v));
}

}  // namespace dsa::test
