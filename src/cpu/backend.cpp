// backend.cpp — the CPU backend of dsa/backend.h: every op forwards to its dsa::cpu function.
#include "dsa/backend.h"

namespace dsa {
namespace {

class CpuBackend final : public Backend {
 public:
  std::string name() const override { return "cpu"; }
  bool host_memory() const override { return true; }
  void synchronize() override {}

#define DSA_CPU_OP(name, params, args) \
  void name params override { cpu::name args; }
  DSA_OPS(DSA_CPU_OP)
#undef DSA_CPU_OP
};

}  // namespace

Backend& cpu_backend() {
  static CpuBackend backend;
  return backend;
}

}  // namespace dsa
