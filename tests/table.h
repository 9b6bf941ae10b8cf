// table.h — the rows of the test table (tests/ops_test.cpp). Each check function runs every case
// of one op on the given backend against its float64 reference.
#pragma once

#include <vector>

#include "test_util.h"

namespace dsa::test {

struct OpRow {
  const char* name;
  void (*check)(Backend&);
};
const std::vector<OpRow>& op_table();

// tests/op_numerics.cpp
void check_fp8_bf16_scalar(Backend&);
void check_fp8_block_quantize(Backend&);
void check_cache_records(Backend&);
// tests/op_rotations.cpp
void check_hadamard_transform(Backend&);
void check_rope(Backend&);
// tests/op_indexer.cpp
void check_indexer_logits(Backend&);
void check_topk_select(Backend&);
void check_indexer_topk(Backend&);
// tests/op_indexer_backward.cpp
void check_indexer_backward(Backend&);
// tests/op_topk_policy.cpp
void check_topk_policy(Backend&);
// tests/op_attention.cpp
void check_sparse_attention_forward(Backend&);
void check_sparse_attention_backward(Backend&);
void check_dense_attention_forward(Backend&);
void check_dense_attention_backward(Backend&);
void check_sparse_equals_dense(Backend&);
// tests/op_indexer_kl.cpp
void check_indexer_kl(Backend&);
// tests/op_indexer_paged.cpp
void check_indexer_logits_paged(Backend&);
// tests/op_decode.cpp
void check_sparse_attention_decode(Backend&);
// tests/op_layers.cpp
void check_linear(Backend&);
void check_rmsnorm(Backend&);
void check_layernorm(Backend&);
void check_swiglu(Backend&);
void check_embedding(Backend&);
void check_cross_entropy(Backend&);

}  // namespace dsa::test
