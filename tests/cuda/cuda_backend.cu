// cuda_backend.cu — registers one CudaBackend per kernel version when a GPU is present; with no
// GPU (CI), no GPU rows exist and the table runs the CPU rows only.
#include <cuda_runtime.h>

#include "cuda/cuda_backend.h"
#include "cuda/device_buffer.h"
#include "dsa/cuda_ops.h"

namespace dsa::test {

void append_gpu_backends(std::vector<std::shared_ptr<Backend>>& out) {
  if (!have_gpu()) return;
  for (int v : dsa::cuda::kKernelVersions) out.push_back(std::make_shared<CudaBackend>(v));
}

}  // namespace dsa::test
