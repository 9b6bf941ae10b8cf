// isa.cpp — the run-time choice of the CPU kernels' instruction-set path (include/dsa/cpu_isa.h).
#include "dsa/cpu_isa.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include "common/check.h"
#include "cpu/indexer_tiles.h"
#include "cpu/isa_testing.h"

namespace dsa::cpu {

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512: return "avx512";
    case Isa::kNeon: return "neon";
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
#elif defined(__aarch64__)
  return Isa::kNeon;   // Advanced SIMD with FMA is mandatory in ARMv8-A
#else
  return Isa::kGeneric;
#endif
}

bool isa_supported(Isa isa) {
  const Isa best = isa_best();
  switch (isa) {
    case Isa::kGeneric: return true;
    case Isa::kAvx2: return best == Isa::kAvx2 || best == Isa::kAvx512;
    case Isa::kAvx512: return best == Isa::kAvx512;
    case Isa::kNeon: return best == Isa::kNeon;
  }
  return false;
}

namespace {

Isa choose() {
  const Isa best = isa_best();
  const char* env = std::getenv("DSA_CPU_ISA");
  if (env == nullptr || *env == '\0') return best;
  for (Isa i : kAllIsas) {
    if (std::strcmp(env, isa_name(i)) != 0) continue;
    if (!isa_supported(i))
      ::dsa::detail::fail("DSA_CPU_ISA", "\"", env, "\" is not supported by this CPU (best path: ", isa_name(best), ")");
    return i;
  }
  ::dsa::detail::fail("DSA_CPU_ISA", "\"", env, "\" must be generic, avx2, avx512 or neon");
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
  if (!isa_supported(next))
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
#elif defined(__aarch64__)
      "compiled for the build target (ARM64: NEON)";
#else
      "compiled for the build target";
#endif
  const bool vec = used != Isa::kGeneric;
  auto line = [&](const char* ops, const std::string& path) { os << "  " << ops << ": " << path << "\n"; };
  line("indexer_logits, indexer_topk (fp32, bf16, fp8)",
       !vec ? std::string("generic (heads in 4 lanes, no FMA; bf16/fp8 keys decoded per row)")
            : std::string(isa_name(used)) + " (key tiles of " + std::to_string(detail::tile_kernel(used).width) +
                  " keys, FMA; bf16/fp8 keys decoded once per call)");
  line("sparse/dense attention forward + backward, indexer_kl",
       !vec                   ? std::string("generic (4 lanes, no FMA)")
       : used == Isa::kNeon ? std::string("neon (4 lanes, FMA)")
                              : std::string("avx2 (8 lanes, FMA)"));
  line("indexer_backward, indexer_logits_paged, sparse_attention_decode, topk, layers, numerics, rotations", build);
  return os.str();
}

}  // namespace dsa::cpu
