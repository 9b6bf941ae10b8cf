// backend_cpu.cpp — backend selection of an extension built without the CUDA backend: CPU tensors run
// the CPU backend; a CUDA tensor is refused by name (this build cannot run it).
#include "common.h"

namespace dsa_torch {

dsa::Backend& backend_for(const at::Tensor& t) {
  TORCH_CHECK_VALUE(t.device().is_cpu(), "dsa: a tensor on ", t.device(),
                    " needs the CUDA backend, which this build of the dsa extension does not have "
                    "(build it where nvcc and a CUDA-enabled torch are present)");
  return dsa::cpu_backend();
}

}  // namespace dsa_torch
