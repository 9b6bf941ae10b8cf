// isa.cpp — the run-time choice of the CPU kernels' instruction-set path (include/dsa/cpu_isa.h).
#include "dsa/cpu_isa.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include "common/check.h"
#include "cpu/isa_testing.h"

namespace dsa::cpu {

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512: return "avx512";
    case Isa::kGeneric: break;
  }
  return "generic";
}

Isa isa_best() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const Isa best = [] {
    __builtin_cpu_init();
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (avx2 && __builtin_cpu_supports("avx512f")) return Isa::kAvx512;
    return avx2 ? Isa::kAvx2 : Isa::kGeneric;
  }();
  return best;
#else
  return Isa::kGeneric;
#endif
}

namespace {

Isa choose() {
  const Isa best = isa_best();
  const char* env = std::getenv("DSA_CPU_ISA");
  if (env == nullptr || *env == '\0') return best;
  for (Isa i : {Isa::kGeneric, Isa::kAvx2, Isa::kAvx512}) {
    if (std::strcmp(env, isa_name(i)) != 0) continue;
    if (static_cast<int>(i) > static_cast<int>(best))
      ::dsa::detail::fail("DSA_CPU_ISA", "\"", env, "\" is not supported by this CPU (best path: ", isa_name(best), ")");
    return i;
  }
  ::dsa::detail::fail("DSA_CPU_ISA", "\"", env, "\" must be generic, avx2 or avx512");
}

std::string cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("model name", 0) == 0 || line.rfind("Model name", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) return line.substr(line.find_first_not_of(" \t", colon + 1));
    }
  return "unknown";
}

std::atomic<int> g_test_isa{-1};  // set_isa_for_testing; −1: the process's choice

Isa chosen() {
  static const Isa c = choose();
  return c;
}

}  // namespace

Isa isa() {
  const int forced = g_test_isa.load(std::memory_order_relaxed);
  return forced >= 0 ? static_cast<Isa>(forced) : chosen();
}

namespace detail {

Isa set_isa_for_testing(Isa next) {
  const Isa before = isa();
  if (static_cast<int>(next) > static_cast<int>(isa_best()))
    ::dsa::detail::fail("set_isa_for_testing", isa_name(next), " is not supported by this CPU (best path: ",
                        isa_name(isa_best()), ")");
  g_test_isa.store(next == chosen() ? -1 : static_cast<int>(next), std::memory_order_relaxed);
  return before;
}

}  // namespace detail

std::string isa_report() {
  const Isa best = isa_best(), used = isa();
  const char* env = std::getenv("DSA_CPU_ISA");
  std::ostringstream os;
  os << "cpu: " << cpu_model() << "\n";
  os << "cpu isa: " << isa_name(used) << " (best on this CPU: " << isa_name(best)
     << (env && *env ? std::string("; DSA_CPU_ISA=") + env : std::string("")) << ")\n";
  const std::string build =
#if defined(__AVX512F__)
      "compiled for the build target (-march with AVX-512)";
#elif defined(__AVX2__)
      "compiled for the build target (-march with AVX2)";
#elif defined(__x86_64__)
      "compiled for the build target (portable x86-64: SSE2)";
#else
      "compiled for the build target";
#endif
  const bool vec = used != Isa::kGeneric;
  auto line = [&](const char* ops, const std::string& path) { os << "  " << ops << ": " << path << "\n"; };
  line("indexer_logits, indexer_topk (fp32, bf16, fp8)",
       !vec ? std::string("generic (heads in 4 lanes, no FMA; bf16/fp8 keys decoded per row)")
            : std::string(isa_name(used)) + " (key tiles of " + (used == Isa::kAvx512 ? "16" : "8") +
                  " keys, FMA; bf16/fp8 keys decoded once per call)");
  line("sparse/dense attention forward + backward, indexer_kl",
       !vec ? std::string("generic (4 lanes, no FMA)") : std::string("avx2 (8 lanes, FMA)"));
  line("indexer_backward, indexer_logits_paged, sparse_attention_decode, topk, layers, numerics, rotations", build);
  return os.str();
}

}  // namespace dsa::cpu
