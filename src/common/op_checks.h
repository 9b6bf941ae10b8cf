// op_checks.h — argument checks of ops that more than one backend validates (op 3a
// indexer_quantize_fp8, op 11 indexer_logits_paged / paged_to_physical / sparse_attention_decode),
// defined once so every backend throws the same dsa::Error with the same message.
//
// Each op's checks are split in two:
//   *_args  shapes, enum values and null pointers — reads no array, so a GPU host launcher calls it
//           on device pointers before it launches anything;
//   *_data  ranges, lengths, indices, page ids — reads the arrays, so it needs them in host memory:
//           the CPU op calls it, and so does a GPU test wrapper on its host copy. Call *_args first
//           (it checks the pointers *_data dereferences).
// Not part of the public API.
#pragma once

#include <cstdint>

#include "dsa/ops.h"

namespace dsa::detail {

// fp8_block_quantize / fp8_block_dequantize: N ≥ 0, C > 0 a multiple of kQuantBlock, pointers.
void validate_fp8_block_args(int64_t N, int C, const void* x, const void* q, const void* scales, const char* op);

// indexer_quantize_fp8: T, S ≥ 0, HI > 0, DI == kIndexerKeyDim (a multiple of kQuantBlock), format,
// pointers. (No data part: the op reads no index.)
void validate_indexer_quantize_args(const IndexerQuantizeParams& p);

// indexer_logits_paged: shapes and pointers (logits included).
void validate_paged_indexer_args(const PagedIndexerParams& p, const float* logits);
// indexer_logits_paged: 0 ≤ context_lens ≤ min(max_context_len, 64·max_blocks), and every page id a
// row reads in [0, num_pages).
void validate_paged_indexer_data(const PagedIndexerParams& p);

// paged_to_physical: shapes and pointers.
void validate_paged_to_physical_args(int B, int next_n, int K, const int32_t* block_table, int max_blocks,
                                     int num_pages, const int32_t* indices);
// paged_to_physical: every index −1 or mappable (table row long enough, page id in [0, num_pages)).
void validate_paged_to_physical_data(int B, int next_n, int K, const int32_t* block_table, int max_blocks,
                                     int num_pages, const int32_t* indices);

// sparse_attention_decode: shapes, scale, format and pointers.
void validate_sparse_decode_args(const SparseDecodeParams& p);
// sparse_attention_decode: 0 ≤ topk_length[r] ≤ K, every index a row reads −1 or in [0, num_slots).
void validate_sparse_decode_data(const SparseDecodeParams& p);

}  // namespace dsa::detail
