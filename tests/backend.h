// backend.h — what the test table runs an op on: a dsa::Backend (dsa/backend.h, the one op list) whose
// op pointers are HOST pointers. The "cpu" backend is dsa::cpu_backend() itself; a GPU backend copies
// the inputs of each op to the device (with guard regions), runs the op on a CUDA backend of one
// variant class (dsa::cuda::make_backend), and copies the outputs back. Every backend is registered on
// every machine; one that cannot run here (no GPU, no CUDA in the build, or no variant of its class
// for a row's op) reports the row as skipped, with the reason.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "dsa/backend.h"

namespace dsa::test {

// The arithmetic a backend runs an op with, which sets a row's tolerance.
enum class Arith {
  kExact,     // fp32 inputs, fp32/fp64 arithmetic (the CPU, the GPU's kExact variants)
  kTensor,    // tensor cores: bf16 q/kv/P (and dS) for attention, e4m3 products with narrower accumulation for the indexer
};

class Backend : public dsa::Backend {
 public:
  // Why this backend cannot run rows of `op` here, or "" when it can.
  virtual std::string skip_reason(const std::string& op) const {
    (void)op;
    return "";
  }
  // The arithmetic of `op` on this backend.
  virtual Arith arith(const std::string& op) const {
    (void)op;
    return Arith::kExact;
  }
  // Whether the backend runs a row's device-scale cases: shapes that exist to cross a GPU kernel's
  // chunk or grid limits, whose float64 reference and CPU run would take minutes (the GPU classes).
  virtual bool device_scale() const { return false; }
};

// The skip reason of a GPU backend on a machine without a GPU (or a build without CUDA).
inline constexpr const char* kNoGpu = "no GPU on this machine";

// Every backend of the table: "cpu", then the GPU variant classes "cuda_exact", "cuda_mma",
// "cuda_wgmma", "cuda_cublas" (tests/cuda/cuda_backend.cu; registered in every build, skipped where
// they cannot run).
const std::vector<std::shared_ptr<Backend>>& backends();

// The GPU backends (tests/cuda/ in CUDA builds; placeholders that skip otherwise).
void append_gpu_backends(std::vector<std::shared_ptr<Backend>>& out);

// DSA_REQUIRE_GPU=1: a GPU row that would be skipped for want of a GPU fails instead.
bool gpu_required();

}  // namespace dsa::test
