// op_checks.cpp — the shared argument checks declared in op_checks.h. Messages are part of the
// contract (tests match fragments of them): change them only together with the tests.
#include "common/op_checks.h"

#include <algorithm>
#include <cmath>

#include "common/check.h"

namespace dsa::detail {

void validate_fp8_block_args(int64_t N, int C, const void* x, const void* q, const void* scales, const char* op) {
  require_non_negative(N, op, "N");
  require_positive(C, op, "C");
  if (C % kQuantBlock != 0) fail(op, "C = ", C, " must be a multiple of ", kQuantBlock);
  require_ptr(x, op, "x");
  require_ptr(q, op, "q");
  require_ptr(scales, op, "scales");
}

// ── op 3a ──────────────────────────────────────────────────────────────────────────────────────
void validate_indexer_quantize_args(const IndexerQuantizeParams& p) {
  constexpr const char* op = "indexer_quantize_fp8";
  require_non_negative(p.T, op, "T");
  require_non_negative(p.S, op, "S");
  require_positive(p.HI, op, "HI");
  require_positive(p.DI, op, "DI");
  if (p.DI % kQuantBlock != 0) fail(op, "DI = ", p.DI, " must be a multiple of kQuantBlock = ", kQuantBlock);
  if (p.DI != kIndexerKeyDim)
    fail(op, "DI = ", p.DI, " must be kIndexerKeyDim = ", kIndexerKeyDim,
         " (one k scale per token and one q scale per head, folded into w)");
  if (p.format != ScaleFormat::kFloat && p.format != ScaleFormat::kUe8m0)
    fail(op, "format = ", static_cast<int>(p.format), " is not a ScaleFormat");
  require_ptr(p.q, op, "q");
  require_ptr(p.k, op, "k");
  require_ptr(p.w, op, "w");
  require_ptr(p.q_fp8, op, "q_fp8");
  require_ptr(p.k_fp8, op, "k_fp8");
  require_ptr(p.k_scale, op, "k_scale");
  require_ptr(p.w_folded, op, "w_folded");
}

// ── op 11: indexer_logits_paged ─────────────────────────────────────────────────────────────────
void validate_paged_indexer_args(const PagedIndexerParams& p, const float* logits) {
  constexpr const char* op = "indexer_logits_paged";
  require_positive(p.B, op, "B");
  DSA_REQUIRE(p.next_n == 1 || p.next_n == 2, op, "next_n = ", p.next_n, " must be 1 or 2");
  require_positive(p.HI, op, "HI");
  require_positive(p.num_pages, op, "num_pages");
  require_positive(p.max_blocks, op, "max_blocks");
  require_positive(p.max_context_len, op, "max_context_len");
  require_ptr(p.q_fp8, op, "q_fp8");
  require_ptr(p.cache, op, "cache");
  require_ptr(p.w, op, "w");
  require_ptr(p.context_lens, op, "context_lens");
  require_ptr(p.block_table, op, "block_table");
  require_ptr(logits, op, "logits");
}

void validate_paged_indexer_data(const PagedIndexerParams& p) {
  constexpr const char* op = "indexer_logits_paged";
  const int64_t table_tokens = static_cast<int64_t>(p.max_blocks) * kCachePageTokens;
  for (int b = 0; b < p.B; ++b) {
    int longest = 0;
    for (int n = 0; n < p.next_n; ++n) {
      const int32_t len = p.context_lens[b * p.next_n + n];
      DSA_REQUIRE(len >= 0 && len <= p.max_context_len, op, "context_lens[", b, ",", n, "] = ", len,
                  " is outside [0, max_context_len = ", p.max_context_len, "]");
      DSA_REQUIRE(len <= table_tokens, op, "context_lens[", b, ",", n, "] = ", len,
                  " exceeds max_blocks·64 = ", table_tokens, " (the block_table row is too short)");
      longest = std::max(longest, static_cast<int>(len));
    }
    // Only the pages a row reads are checked: DeepGEMM pads the rest of the table arbitrarily.
    const int64_t pages_read = (static_cast<int64_t>(longest) + kCachePageTokens - 1) / kCachePageTokens;
    for (int64_t i = 0; i < pages_read; ++i) {
      const int32_t page = p.block_table[static_cast<int64_t>(b) * p.max_blocks + i];
      DSA_REQUIRE(page >= 0 && page < p.num_pages, op, "block_table[", b, ",", i, "] = ", page,
                  " is out of range [0, num_pages = ", p.num_pages, ")");
    }
  }
}

// ── op 11: paged_to_physical ────────────────────────────────────────────────────────────────────
void validate_paged_to_physical_args(int B, int next_n, int K, const int32_t* block_table, int max_blocks,
                                     int num_pages, const int32_t* indices) {
  constexpr const char* op = "paged_to_physical";
  require_positive(B, op, "B");
  DSA_REQUIRE(next_n == 1 || next_n == 2, op, "next_n = ", next_n, " must be 1 or 2");
  require_positive(K, op, "K");
  require_positive(max_blocks, op, "max_blocks");
  require_positive(num_pages, op, "num_pages");
  require_ptr(block_table, op, "block_table");
  require_ptr(indices, op, "indices");
}

void validate_paged_to_physical_data(int B, int next_n, int K, const int32_t* block_table, int max_blocks,
                                     int num_pages, const int32_t* indices) {
  constexpr const char* op = "paged_to_physical";
  const int64_t rows = static_cast<int64_t>(B) * next_n;
  // Every entry is checked before any is rewritten (the op works in place: no partial output).
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t b = r / next_n;
    for (int k = 0; k < K; ++k) {
      const int32_t j = indices[r * K + k];
      if (j == kInvalidIndex) continue;
      DSA_REQUIRE(j >= 0, op, "indices[", r, ",", k, "] = ", j, " is negative (and not -1)");
      const int64_t blk = j / kCachePageTokens;
      DSA_REQUIRE(blk < max_blocks, op, "indices[", r, ",", k, "] = ", j, " lies beyond the block_table (max_blocks = ",
                  max_blocks, " pages of 64)");
      const int32_t page = block_table[b * max_blocks + blk];
      DSA_REQUIRE(page >= 0 && page < num_pages, op, "block_table[", b, ",", blk, "] = ", page,
                  " (read for indices[", r, ",", k, "]) is out of range [0, num_pages = ", num_pages, ")");
    }
  }
}

// ── op 11: sparse_attention_decode ──────────────────────────────────────────────────────────────
void validate_sparse_decode_args(const SparseDecodeParams& p) {
  constexpr const char* op = "sparse_attention_decode";
  require_positive(p.B, op, "B");
  DSA_REQUIRE(p.next_n == 1 || p.next_n == 2, op, "next_n = ", p.next_n, " must be 1 or 2");
  require_positive(p.H, op, "H");
  require_positive(p.K, op, "K");
  require_positive(p.num_slots, op, "num_slots");
  DSA_REQUIRE(std::isfinite(p.scale) && p.scale > 0.0f, op, "scale = ", p.scale, " must be finite and > 0");
  DSA_REQUIRE(p.format == KvCacheFormat::kFp32 || p.format == KvCacheFormat::kBf16 ||
                  p.format == KvCacheFormat::kFp8Record,
              op, "format = ", static_cast<int>(p.format), " is not a KvCacheFormat");
  DSA_REQUIRE(p.q_dtype == DType::kF32 || p.q_dtype == DType::kBF16, op, "q_dtype = ", static_cast<int>(p.q_dtype),
              " is not fp32 or bf16");
  if (p.q_dtype == DType::kF32) {
    require_ptr(p.q, op, "q");
    DSA_REQUIRE(p.q_bf16 == nullptr, op, "q_bf16 is set but q_dtype is fp32");
  } else {
    require_ptr(p.q_bf16, op, "q_bf16 (q_dtype bf16)");
    DSA_REQUIRE(p.q == nullptr, op, "q is set but q_dtype is bf16");
  }
  require_ptr(p.cache, op, "cache");
  require_ptr(p.indices, op, "indices");
  require_ptr(p.out, op, "out");
  require_ptr(p.lse, op, "lse");
}

void validate_sparse_decode_data(const SparseDecodeParams& p) {
  constexpr const char* op = "sparse_attention_decode";
  const int64_t rows = static_cast<int64_t>(p.B) * p.next_n;
  for (int64_t r = 0; r < rows; ++r) {
    int len = p.K;
    if (p.topk_length != nullptr) {
      len = p.topk_length[r];
      DSA_REQUIRE(len >= 0 && len <= p.K, op, "topk_length[", r, "] = ", len, " is outside [0, K = ", p.K, "]");
    }
    // Only the slots a row reads ([0, len)) are checked; FlashMLA never reads past topk_length.
    for (int k = 0; k < len; ++k) {
      const int32_t s = p.indices[r * p.K + k];
      DSA_REQUIRE(s == kInvalidIndex || (s >= 0 && s < p.num_slots), op, "indices[", r / p.next_n, ",",
                  r % p.next_n, ",", k, "] = ", s, " is out of range [0, num_slots = ", p.num_slots,
                  ") (and not -1)");
    }
  }
}

}  // namespace dsa::detail
