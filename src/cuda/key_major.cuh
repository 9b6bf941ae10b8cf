// key_major.cuh — the key-major transposition of a sparse selection, shared by both sparse attention
// backward versions (v1 in sparse_attention_backward.cu, the bf16 v3 in
// sparse_attention_backward_bf16.cu): the dkv pass walks, for every kv row s, the (query, slot)
// entries that selected s — in ascending (t, j) order, so each dkv row is summed in one fixed order
// (deterministic, no atomics). Defined in key_major.cu.
//   fill:  entry pos = (t − c0)·K + j of queries [c0, c0 + tc): sort key = the kv row slot j of query
//          t selects, or S where the slot is invalid (j ≥ topk_length, index −1 or ≥ S: sorts last);
//          value = pos;
//   sort:  cub::DeviceRadixSort::SortPairs (stable LSD radix sort over the key's bits), then
//          offsets[s] = the first sorted entry whose key is ≥ s, for s ∈ [0, S] (binary search), so
//          key s owns sorted entries [offsets[s], offsets[s + 1]).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "cuda/attention_common.cuh"

namespace dsa::cuda::attn {

// The arrays of one transposition (n entries): keys/values before and after the sort, S + 1
// offsets, and cub's temporary storage (key_major_sort_temp_bytes).
struct KeyMajorBuffers {
  uint32_t *keys_in = nullptr, *keys_out = nullptr;
  int32_t *vals_in = nullptr, *vals_out = nullptr, *offsets = nullptr;
  void* sort_temp = nullptr;
  size_t sort_temp_bytes = 0;
};

// cub's temporary bytes for sorting n entries whose keys lie in [0, S].
size_t key_major_sort_temp_bytes(int n, int S, const char* op);
// Carves the buffers for n entries out of a workspace (a null base only counts the bytes).
KeyMajorBuffers carve_key_major(detail::WorkspaceCarver& ws, int n, int S, const char* op);
// fill: keys_in / vals_in of queries [c0, c0 + tc).
void key_major_fill(const SparseKeys& keys, int64_t c0, int tc, const KeyMajorBuffers& b, cudaStream_t stream,
                    const char* op);
// sort + offsets of the n = tc·K filled entries.
void key_major_sort(int n, int S, const KeyMajorBuffers& b, cudaStream_t stream, const char* op);

}  // namespace dsa::cuda::attn
