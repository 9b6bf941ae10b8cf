// ops_test.cpp — THE test table. One row per op (or op family); every row is registered for every
// backend of backends() (tests/cpu_backend.cpp, tests/cuda/): the CPU and each GPU variant class. A row
// a backend cannot run here is reported as skipped with the reason. A row's check function lives in
// tests/op_<name>.cpp next to its float64 reference and its case list.
#include "table.h"

namespace dsa::test {

const std::vector<OpRow>& op_table() {
  static const std::vector<OpRow> rows = {
      // name                         check function
      {"fp8_bf16_scalar", check_fp8_bf16_scalar},
      {"fp8_block_quantize", check_fp8_block_quantize},
      {"cache_records", check_cache_records},
      {"hadamard_transform", check_hadamard_transform},
      {"rope", check_rope},
      {"indexer_logits", check_indexer_logits},
      {"topk_select", check_topk_select},
      {"topk_policy", check_topk_policy},
      {"indexer_topk", check_indexer_topk},
      {"indexer_backward", check_indexer_backward},
      {"sparse_attention_forward", check_sparse_attention_forward},
      {"sparse_attention_backward", check_sparse_attention_backward},
      {"dense_attention_forward", check_dense_attention_forward},
      {"dense_attention_backward", check_dense_attention_backward},
      {"sparse_equals_dense", check_sparse_equals_dense},
      {"indexer_kl", check_indexer_kl},
      {"indexer_logits_paged", check_indexer_logits_paged},
      {"sparse_attention_decode", check_sparse_attention_decode},
      {"linear", check_linear},
      {"rmsnorm", check_rmsnorm},
      {"layernorm", check_layernorm},
      {"swiglu", check_swiglu},
      {"embedding", check_embedding},
      {"cross_entropy", check_cross_entropy},
  };
  return rows;
}

namespace {

class OpTable : public ::testing::TestWithParam<std::tuple<size_t, size_t>> {};

TEST_P(OpTable, MatchesFloat64Reference) {
  const auto [row, backend] = GetParam();
  Backend& be = *backends()[backend];
  const std::string why = be.skip_reason(op_table()[row].name);
  if (!why.empty()) {
    if (gpu_required() && why == kNoGpu) FAIL() << be.name() << ": " << why << " (DSA_REQUIRE_GPU=1)";
    GTEST_SKIP() << be.name() << ": " << why;
  }
  op_table()[row].check(be);
}

std::string row_name(const ::testing::TestParamInfo<std::tuple<size_t, size_t>>& info) {
  const auto [row, backend] = info.param;
  std::string s = op_table()[row].name + std::string("__") + backends()[backend]->name();
  for (auto& c : s)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return s;
}

INSTANTIATE_TEST_SUITE_P(Ops, OpTable,
                         ::testing::Combine(::testing::Range<size_t>(0, op_table().size()),
                                            ::testing::Range<size_t>(0, backends().size())),
                         row_name);

}  // namespace
}  // namespace dsa::test
