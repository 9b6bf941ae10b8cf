// `dsa version` — prints the library version and which backends this build carries.
#include <cstdio>

#include "command.h"

namespace {
const dsa::cli::Register kVersion("version", "print the version and the backends of this build", [](const dsa::cli::Args& args) {
  const dsa::cli::Flags f(args, {}, {});   // no flags: a stray argument is refused
  std::printf("dsa 0.1.0 (cpu backend%s)\n",
#ifdef DSA_HAVE_CUDA
              ", cuda backend"
#else
              ""
#endif
  );
  return 0;
});
}  // namespace
