// decode_checks.h — the argument checks of op 11 (src/cpu/decode.cpp), exported so that another
// backend's host wrapper can run exactly the same checks, with the same messages, on host copies
// of the data (indices, lengths, page ids) before it launches anything. Not part of the public API.
#pragma once

#include "dsa/ops.h"

namespace dsa::cpu::detail {

// indexer_logits_paged: shapes, pointers (logits included), 0 ≤ context_lens ≤ min(max_context_len,
// 64·max_blocks), and every page id a row reads in [0, num_pages).
void validate_paged_indexer(const PagedIndexerParams& p, const float* logits);

// paged_to_physical: shapes, pointers, every index −1 or mappable (table row long enough, page id
// in [0, num_pages)).
void validate_paged_to_physical(int B, int next_n, int K, const int32_t* block_table, int max_blocks,
                                int num_pages, const int32_t* indices);

// sparse_attention_decode: shapes, scale, format, pointers, 0 ≤ topk_length[r] ≤ K, every index a
// row reads −1 or in [0, num_slots).
void validate_sparse_decode(const SparseDecodeParams& p);

}  // namespace dsa::cpu::detail
