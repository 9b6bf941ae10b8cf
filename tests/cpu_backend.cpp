// cpu_backend.cpp — the "cpu" row of every test (dsa::cpu_backend(), the specification) and the list
// of every backend of the table.
#include <cstdlib>
#include <cstring>
#include <utility>

#include "backend.h"

namespace dsa::test {
namespace {

class CpuTableBackend final : public Backend {
 public:
  std::string name() const override { return "cpu"; }
  bool host_memory() const override { return true; }
  void synchronize() override {}
#define DSA_TABLE_CPU_OP(name, params, args) \
  void name params override { cpu_backend().name args; }
  DSA_OPS(DSA_TABLE_CPU_OP)
#undef DSA_TABLE_CPU_OP
};

#ifndef DSA_HAVE_CUDA
// A build without the CUDA backend: the GPU classes' rows are registered and every one is skipped.
class NoCudaBackend final : public Backend {
 public:
  explicit NoCudaBackend(std::string name) : name_(std::move(name)) {}
  std::string name() const override { return name_; }
  bool host_memory() const override { return true; }
  void synchronize() override {}
  std::string skip_reason(const std::string&) const override { return kNoGpu; }
  // Every op refuses; its parameters are named by DSA_OPS and unused here.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-parameter"
#define DSA_TABLE_NO_OP(name, params, args) \
  void name params override { throw Error(#name ": this build has no CUDA backend"); }
  DSA_OPS(DSA_TABLE_NO_OP)
#undef DSA_TABLE_NO_OP
#pragma GCC diagnostic pop

 private:
  std::string name_;
};
#endif

}  // namespace

#ifndef DSA_HAVE_CUDA
void append_gpu_backends(std::vector<std::shared_ptr<Backend>>& out) {
  for (const char* name : {"cuda_exact", "cuda_mma", "cuda_wgmma", "cuda_cublas"})
    out.push_back(std::make_shared<NoCudaBackend>(name));
}
#endif

bool gpu_required() {
  const char* v = std::getenv("DSA_REQUIRE_GPU");
  return v != nullptr && std::strcmp(v, "1") == 0;
}

const std::vector<std::shared_ptr<Backend>>& backends() {
  static const std::vector<std::shared_ptr<Backend>> all = [] {
    std::vector<std::shared_ptr<Backend>> v{std::make_shared<CpuTableBackend>()};
    append_gpu_backends(v);
    return v;
  }();
  return all;
}

}  // namespace dsa::test
