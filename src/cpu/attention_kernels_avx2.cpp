// attention_kernels_avx2.cpp — the AVX2 + FMA (8-lane) instance of attention_kernels.inc, run by the
// AVX2 and AVX-512 paths. Only the code after the pragma is compiled for AVX2 (see the .inc);
// DSA_ATTN_AVX2_INTRINSICS enables its intrinsic kernels (the 8 × 8 key transpose).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cpu/attention_kernels.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define DSA_ATTN_NS avx2
#define DSA_ATTN_LANES 8
#define DSA_ATTN_AVX2_INTRINSICS 1  // (the pragma does not define __AVX2__ in C++)
#include "cpu/attention_kernels.inc"
#pragma GCC pop_options
#else
// Not x86-64: the avx2 table is the generic one (isa() is never kAvx2 there).
namespace dsa::cpu::attn::avx2 {
const AttnKernels& kernels() { return generic::kernels(); }
}  // namespace dsa::cpu::attn::avx2
#endif
