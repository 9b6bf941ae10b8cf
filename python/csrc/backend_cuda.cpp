// backend_cuda.cpp — backend selection of an extension built with the CUDA backend: a CUDA tensor runs
// dsa::cuda::make_backend on torch's current stream of its device, so the ops order with the caller's
// other work and are captured by torch.cuda.graph. One backend per (device, stream), kept for the
// process: its workspace grows stream-ordered (cudaMallocAsync) to the largest call seen, so a call
// made once on the capture stream before capture (the usual warm-up, torch.cuda.graph(g, stream=s))
// allocates nothing while a graph is being captured.
#include <c10/cuda/CUDAStream.h>

#include <map>
#include <memory>
#include <mutex>
#include <utility>

#include "common.h"
#include "dsa/cuda_ops.h"

namespace dsa_torch {

dsa::Backend& backend_for(const at::Tensor& t) {
  if (t.device().is_cpu()) return dsa::cpu_backend();
  TORCH_CHECK_VALUE(t.device().is_cuda(), "dsa: tensors must be on the CPU or a CUDA device, not ", t.device());
  const c10::DeviceIndex device = t.device().index();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device).stream();
  static std::mutex mutex;
  static std::map<std::pair<int, cudaStream_t>, std::unique_ptr<dsa::Backend>> backends;
  const std::lock_guard<std::mutex> lock(mutex);
  auto& slot = backends[{static_cast<int>(device), stream}];
  if (!slot) slot = dsa::cuda::make_backend(stream);   // the caller's device guard makes `device` current
  return *slot;
}

}  // namespace dsa_torch
