// cuda_backend.cu — the GPU backends of the test table: one CudaBackend per variant class, registered
// on every machine; without a GPU each of their rows is skipped (DSA_REQUIRE_GPU=1: failed).
#include <cuda_runtime.h>

#include "cuda/cuda_backend.h"
#include "cuda/device_buffer.h"
#include "dsa/cuda_ops.h"

namespace dsa::test {
namespace {

// The rows a tensor-core class runs: the rows of the ops that have its variant. Each row's check
// function sets its tolerance from arith(op) (kTensor for these classes: bf16 attention operands,
// e4m3 tensor-core accumulation for the indexer) and runs every case; the cases a variant does not
// take (other shapes, fp32 / bf16 indexer inputs) run kExact through dev_for, which the cuda_exact
// row checks too.
const std::vector<std::pair<cuda::Variant, std::vector<std::string>>>& class_rows() {
  static const std::vector<std::pair<cuda::Variant, std::vector<std::string>>> rows = {
      {cuda::Variant::kMma,
       {"indexer_logits", "indexer_topk", "indexer_logits_paged", "sparse_attention_forward", "sparse_attention_decode"}},
      {cuda::Variant::kWgmma, {"indexer_logits", "indexer_topk", "indexer_logits_paged", "sparse_attention_forward"}},
      {cuda::Variant::kCublas, {"sparse_attention_backward"}},
  };
  return rows;
}

}  // namespace

cuda::Variant CudaBackend::variant(const char* op) const {
  return class_ != cuda::Variant::kExact && cuda::op_has_variant(op, class_) ? class_ : cuda::Variant::kExact;
}

std::string CudaBackend::skip_reason(const std::string& op) const {
  if (!have_gpu()) return kNoGpu;
  if (class_ == cuda::Variant::kExact) return "";
  for (const auto& [cls, rows] : class_rows())
    if (cls == class_)
      for (const std::string& r : rows)
        if (r == op) return "";
  return std::string("no ") + cuda::variant_name(class_) + " variant of " + op + " with this row's tolerances";
}

dsa::Backend& CudaBackend::dev() {
  if (!dev_) dev_ = cuda::make_backend(cudaStreamLegacy, class_);
  return *dev_;
}

dsa::Backend& CudaBackend::exact() {
  if (!exact_) exact_ = cuda::make_backend(cudaStreamLegacy, cuda::Variant::kExact);
  return *exact_;
}

dsa::Backend& CudaBackend::dev_for(const IndexerParams& p, const char* op) {
  if (class_ == cuda::Variant::kExact) return dev();
  try {
    cuda::resolve_variant(p, class_, op);
    return dev();
  } catch (const Error&) {
    return exact();
  }
}

dsa::Backend& CudaBackend::dev_for(const PagedIndexerParams& p) {
  if (class_ == cuda::Variant::kExact || !cuda::op_has_variant("indexer_logits_paged", class_)) return dev();
  try {
    cuda::resolve_variant(p, class_);
    return dev();
  } catch (const Error&) {
    return exact();
  }
}

dsa::Backend& CudaBackend::dev_for(const AttentionParams& p, const char* op) {
  if (class_ == cuda::Variant::kExact) return dev();
  if (!cuda::op_has_variant(op, class_)) return exact();
  try {
    cuda::resolve_variant(p, class_, op);
    return dev();
  } catch (const Error&) {
    return exact();
  }
}

dsa::Backend& CudaBackend::dev_for(const SparseDecodeParams& p) {
  if (class_ == cuda::Variant::kExact) return dev();
  if (!cuda::op_has_variant("sparse_attention_decode", class_)) return exact();
  try {
    cuda::resolve_variant(p, class_);
    return dev();
  } catch (const Error&) {
    return exact();
  }
}

Arith CudaBackend::arith(const std::string& op) const {
  return variant(op.c_str()) == cuda::Variant::kExact ? Arith::kExact : Arith::kTensor;
}

void append_gpu_backends(std::vector<std::shared_ptr<Backend>>& out) {
  for (cuda::Variant v : {cuda::Variant::kExact, cuda::Variant::kMma, cuda::Variant::kWgmma, cuda::Variant::kCublas})
    out.push_back(std::make_shared<CudaBackend>(v));
}

}  // namespace dsa::test
