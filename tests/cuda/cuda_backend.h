// cuda_backend.h — GPU rows of the test table: one CudaBackend per variant class. Each method
// copies the host inputs of the op to the device, runs dsa::cuda::<op>, copies outputs back, and
// checks guard regions around every device output. Methods are defined in
// tests/cuda/cuda_backend_*.cu next to the ops they wrap.
#pragma once

#include "backend.h"
#include "dsa/cuda_ops.h"

namespace dsa::test {

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(cuda::Variant cls) : class_(cls) {}
  std::string name() const override { return std::string("cuda_") + cuda::variant_name(class_); }
  bool host_memory() const override { return true; }
  bool device_scale() const override { return true; }
  void synchronize() override {}
  std::string skip_reason(const std::string& op) const override;
  Arith arith(const std::string& op) const override;
  // The variant this backend runs `op` with: its class where the op has that variant, else kExact.
  cuda::Variant variant(const char* op) const;

  // Every op of DSA_OPS (defined in tests/cuda/cuda_backend_*.cu next to the ops they wrap).
#define DSA_TABLE_CUDA_OP(name, params, args) void name params override;
  DSA_OPS(DSA_TABLE_CUDA_OP)
#undef DSA_TABLE_CUDA_OP

 private:
  // The CUDA backend of this class on the legacy default stream (ordered with the blocking copies).
  dsa::Backend& dev();
  // For an indexer call: dev() where the class's variant runs this call (e4m3 inputs, its shapes and
  // alignment), else the exact backend — a row's fp32 / bf16 / odd-shape cases run the exact kernel,
  // which the cuda_exact row checks too, and every case the variant takes runs the variant.
  dsa::Backend& dev_for(const IndexerParams& p, const char* op);
  // The same for a paged indexer call (kWgmma takes HI = 64 on sm_90a, kMma next_n·HI ≤ 128 in
  // multiples of 16 on sm_89+; other cases run kExact).
  dsa::Backend& dev_for(const PagedIndexerParams& p);
  // The same for the attention ops (op: the AttentionParams op's name) and the sparse decode: the
  // class's variant where it takes the call (kWgmma / kMma forward: Dqk 576, Dv 512, H % 64 == 0;
  // kMma decode: H % 64 == 0; kCublas backward: any shape), else the exact backend — also for an op
  // without a variant of this class, so that a row's other calls (the forward before a backward, a
  // backward inside a forward row's bf16 check) run kExact whatever the input dtype.
  dsa::Backend& dev_for(const AttentionParams& p, const char* op);
  dsa::Backend& dev_for(const SparseDecodeParams& p);
  // The exact backend (cases a tensor-core class's variant does not take).
  dsa::Backend& exact();
  cuda::Variant class_;
  std::shared_ptr<dsa::Backend> dev_, exact_;
};

}  // namespace dsa::test
