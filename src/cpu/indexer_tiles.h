// indexer_tiles.h — the key-tile kernels of the indexer logits (indexer_tiles.cpp), one per
// vector ISA, used by indexer.cpp for both indexer_logits and indexer_topk. Not public API.
//
// Keys are stored in tiles of `width` keys (= fp32 lanes of the ISA's vector), dimension-major:
// tiles[(tile·DI + d)·width + j] = k[width·tile + j, d] as fp32. For each d one load of a tile row
// feeds several heads' FMAs with q[t, h, d] broadcast; ReLU, the w product and the head sum then run
// lane-wise (no horizontal sums). Per (key, head) every kernel performs exactly:
//   acc = fma(q[h,d], k[d], acc) for d = 0..DI−1 from acc = 0;   hs = hs + w[h]·ReLU(acc)
// (one multiply, one add, h = 0..HI−1 in order, from hs = 0), so all ISAs give the same bits.
#pragma once

#include "dsa/cpu_isa.h"

namespace dsa::cpu::detail {

// out[width·i + j] = Σ_{h<HI} w[h] · ReLU(q[h]·k[key j of tile i]) for i < ntiles.
// qr [HIpad, DI] fp32 (HIpad a multiple of 16, heads ≥ HI zero), w [≥ HI].
using LogitsTilesFn = void (*)(const float* qr, const float* w, int HI, int DI, const float* tiles, int ntiles,
                               float* out);

struct TileKernel {
  int width = 0;              // keys per tile; 0: no tile kernel for this ISA
  LogitsTilesFn fn = nullptr;
};

// The tile kernel of an ISA path (kGeneric has none: it runs indexer.cpp's row kernel).
TileKernel tile_kernel(Isa isa);

}  // namespace dsa::cpu::detail
