// attention_kernels_neon.cpp — the NEON (ARM64) instance of attention_kernels.inc, run by the neon
// path: 4 lanes (one 128-bit register) with multiply-adds fused. The ARM64 build compiles the rest of
// the library with -ffp-contract=off (CMakeLists.txt), so the generic instance there, like the
// portable x86-64 one, rounds every product; this instance differs from it in the last bits only.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cpu/attention_kernels.h"

#if defined(__aarch64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC optimize("fp-contract=fast")
#define DSA_ATTN_NS neon
#define DSA_ATTN_LANES 4
#include "cpu/attention_kernels.inc"
#pragma GCC pop_options
#else
// Not ARM64: the neon table is the generic one (isa() is never kNeon there).
namespace dsa::cpu::attn::neon {
const AttnKernels& kernels() { return generic::kernels(); }
}  // namespace dsa::cpu::attn::neon
#endif
