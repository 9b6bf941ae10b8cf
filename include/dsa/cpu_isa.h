// cpu_isa.h — which instruction-set path the CPU backend runs on this machine.
//
// One binary carries every x86-64 path (generic SSE2, AVX2 + FMA, AVX-512F) of the CPU kernels that
// have ISA-specific code; the path is chosen once, at the first call of isa(), from the CPU's
// feature bits. DSA_CPU_ISA=generic|avx2|avx512 (read at that first call) forces a path: the test
// table runs once per path the machine has this way. Forcing a path the CPU lacks is an error
// (dsa::Error from isa(), i.e. from the first CPU op that dispatches), never a silent fallback.
#pragma once

#include <string>

namespace dsa::cpu {

enum class Isa { kGeneric, kAvx2, kAvx512 };

// "generic", "avx2", "avx512".
const char* isa_name(Isa isa);

// The best path this CPU supports (kAvx2 needs AVX2 + FMA, kAvx512 needs AVX-512F too).
Isa isa_best();

// The path the kernels use: isa_best(), or DSA_CPU_ISA when set. Chosen once per process.
Isa isa();

// Human-readable report for `dsa version` and the benchmark: CPU model, best and chosen path, and
// which path each op of the catalogue runs (one line per op group).
std::string isa_report();

}  // namespace dsa::cpu
