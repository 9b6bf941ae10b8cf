// attention_kernels.h — one table of the attention micro-kernels and tile steps per ISA instance
// (attention_kernels.inc, compiled by attention_kernels_{generic,avx2,neon}.cpp).
// attention_common.cpp's functions of the same names forward to the table of the path isa() names:
// generic → generic::kernels(), avx2 and avx512 → avx2::kernels() (16 lanes under AVX-512
// measured no faster for the sparse forward, so AVX-512 CPUs run the 8-lane instance), neon →
// neon::kernels().
#pragma once

#include <vector>

#include "cpu/attention_common.h"

namespace dsa::cpu::attn {

struct AttnKernels {
  int lanes;
  void (*dot_block)(const float* const*, int, const float* const*, int, int, float, float*, int);
  void (*axpy_block)(const float*, int, int, const float* const*, int, int, float*, int);
  int (*transpose_keys)(const float* const*, int, int, float*);
  void (*scores_from_transposed)(const float* const*, int, const float*, int, int, float, float*, int);
  void (*score_tile)(const float* const*, int, const float* const*, int, int, float, float*, std::vector<float>&);
  int (*transpose_query_heads)(const float*, int, int, std::vector<float>&);
  void (*scores_heads_in_lanes)(const float*, int, int, const float* const*, int, int, float, float*);
  void (*forward_tile)(ForwardState&, const TileRows&, const float* const*, int, int, float);
  void (*forward_tile_scored)(ForwardState&, const TileRows&, const float* const*, int);
  void (*forward_tile_query)(ForwardState&, const TileRows&, const float*, int, const float* const*, int, int, float);
  void (*backward_scores)(BackwardTile&, const TileRows&, const BackwardRow*, const float* const*, int, int, int, float);
};

namespace generic {
const AttnKernels& kernels();
}
namespace avx2 {
const AttnKernels& kernels();
}
namespace neon {
const AttnKernels& kernels();
}

}  // namespace dsa::cpu::attn
