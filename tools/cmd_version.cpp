// `dsa version` — prints the library version, which backends this build carries, and the CPU
// instruction-set path each CPU op runs on this machine (`dsa kernels` tells the GPU side).
#include <cstdio>

#include "command.h"
#include "dsa/cpu_isa.h"

namespace {
const dsa::cli::Register kVersion("version", "print the version, the backends of this build and the CPU kernels' instruction-set path", [](const dsa::cli::Args& args) {
  const dsa::cli::Flags f(args, {}, {});   // no flags: a stray argument is refused
  std::printf("dsa 0.1.0 (cpu backend%s)\n",
#ifdef DSA_HAVE_CUDA
              ", cuda backend"
#else
              ""
#endif
  );
  std::printf("%s", dsa::cpu::isa_report().c_str());
  return 0;
});
}  // namespace
