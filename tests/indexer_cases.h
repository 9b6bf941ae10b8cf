// indexer_cases.h — the shapes and fp32 inputs shared by the indexer rows of the test table
// (tests/op_indexer.cpp, tests/op_indexer_backward.cpp).
#pragma once

#include <string>
#include <vector>

#include "test_util.h"

namespace dsa::test {

struct IndexerCase {
  std::string name;
  int T = 0, S = 0, HI = 0, DI = 0;
  std::vector<int32_t> ks, ke;
};

inline IndexerCase packed(const std::string& name, std::vector<int> lens, int HI, int DI) {
  IndexerCase c{name, 0, 0, HI, DI, {}, {}};
  packed_causal_ranges(lens, c.ks, c.ke);
  c.T = c.S = static_cast<int>(c.ks.size());
  return c;
}

// fp32 inputs of a case: q, k, w ~ N(0, 1) (w of both signs: negative logits and exact-zero ties).
struct Fp32Inputs {
  std::vector<float> q, k, w;
};
inline Fp32Inputs make_inputs(const IndexerCase& c, uint64_t seed) {
  Rng rng(seed);
  return {rng.normal_vec(size_t(c.T) * c.HI * c.DI), rng.normal_vec(size_t(c.S) * c.DI), rng.normal_vec(size_t(c.T) * c.HI)};
}

}  // namespace dsa::test
