// attention_kernels_generic.cpp — the generic (4-lane) instance of attention_kernels.inc, compiled
// for the build's own target (SSE2 in the portable build).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cpu/attention_kernels.h"

#define DSA_ATTN_NS generic
#define DSA_ATTN_LANES 4
#include "cpu/attention_kernels.inc"
