// cpu_isa.h — which instruction-set path the CPU backend runs on this machine.
//
// One binary carries every path of its architecture for the CPU kernels that have ISA-specific code:
// on x86-64 generic (SSE2), AVX2 + FMA and AVX-512F; on ARM64 generic and NEON (+ FMA, part of every
// ARMv8-A core). The path is chosen once, at the first call of isa(), from the CPU's feature bits.
// DSA_CPU_ISA=generic|avx2|avx512|neon (read at that first call) forces a path: the test table runs
// once per path the machine has this way. Forcing a path the CPU lacks is an error (dsa::Error from
// isa(), i.e. from the first CPU op that dispatches), never a silent fallback.
#pragma once

#include <string>

namespace dsa::cpu {

enum class Isa { kGeneric, kAvx2, kAvx512, kNeon };
inline constexpr Isa kAllIsas[] = {Isa::kGeneric, Isa::kAvx2, Isa::kAvx512, Isa::kNeon};

// "generic", "avx2", "avx512", "neon".
const char* isa_name(Isa isa);

// The best path this CPU supports (kAvx2 needs AVX2 + FMA, kAvx512 needs AVX-512F too; kNeon is
// every ARM64 CPU's best).
Isa isa_best();

// Whether this CPU (and this binary's architecture) can run the path: kGeneric always; kAvx2 and
// kAvx512 on x86-64 CPUs with the features; kNeon on ARM64.
bool isa_supported(Isa isa);

// The path the kernels use: isa_best(), or DSA_CPU_ISA when set. Chosen once per process.
Isa isa();

// Human-readable report for `dsa version` and the benchmark: CPU model, best and chosen path, and
// which path each op of the catalogue runs (one line per op group).
std::string isa_report();

}  // namespace dsa::cpu
