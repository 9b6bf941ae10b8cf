// key_major.cu — the key-major transposition of a sparse selection (key_major.cuh has the contract).
#include "cuda/key_major.cuh"

#include <cub/device/device_radix_sort.cuh>

#include <algorithm>

namespace dsa::cuda::attn {
namespace {

constexpr int kKeyMajorThreads = 256;
constexpr int kMaxGridBlocks = 65535;   // the fill kernel strides over the rest

__global__ void key_major_fill_kernel(SparseKeys keys, int64_t c0, int tc, uint32_t* keys_in, int32_t* vals_in) {
  const int64_t n = static_cast<int64_t>(tc) * keys.K;
  for (int64_t pos = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; pos < n;
       pos += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = c0 + pos / keys.K;
    const int j = static_cast<int>(pos % keys.K);
    const int64_t s = j < keys.count(t) ? keys.key(t, j) : -1;
    keys_in[pos] = s >= 0 ? static_cast<uint32_t>(s) : static_cast<uint32_t>(keys.S);
    vals_in[pos] = static_cast<int32_t>(pos);
  }
}

__global__ void key_major_offsets_kernel(const uint32_t* sorted, int n, int S, int32_t* offsets) {
  const int s = blockIdx.x * blockDim.x + threadIdx.x;
  if (s > S) return;
  int lo = 0, hi = n;   // first position with sorted[pos] >= s
  while (lo < hi) {
    const int mid = lo + (hi - lo) / 2;
    if (sorted[mid] < static_cast<uint32_t>(s)) lo = mid + 1;
    else hi = mid;
  }
  offsets[s] = lo;
}

}  // namespace

size_t key_major_sort_temp_bytes(int n, int S, const char* op) {
  size_t temp = 0;
  DSA_CUDA_CALL(op, cub::DeviceRadixSort::SortPairs(nullptr, temp, static_cast<const uint32_t*>(nullptr),
                                                    static_cast<uint32_t*>(nullptr),
                                                    static_cast<const int32_t*>(nullptr),
                                                    static_cast<int32_t*>(nullptr), n, 0, detail::sort_key_bits(S)));
  return temp;
}

KeyMajorBuffers carve_key_major(detail::WorkspaceCarver& ws, int n, int S, const char* op) {
  KeyMajorBuffers b;
  const size_t count = static_cast<size_t>(n);
  b.keys_in = ws.take<uint32_t>(count);
  b.keys_out = ws.take<uint32_t>(count);
  b.vals_in = ws.take<int32_t>(count);
  b.vals_out = ws.take<int32_t>(count);
  b.offsets = ws.take<int32_t>(static_cast<size_t>(S) + 1);
  b.sort_temp_bytes = key_major_sort_temp_bytes(n, S, op);
  b.sort_temp = ws.take<unsigned char>(b.sort_temp_bytes);
  return b;
}

void key_major_fill(const SparseKeys& keys, int64_t c0, int tc, const KeyMajorBuffers& b, cudaStream_t stream,
                    const char* op) {
  const int64_t n = static_cast<int64_t>(tc) * keys.K;
  if (n == 0) return;
  const int blocks = static_cast<int>(std::min<int64_t>((n + kKeyMajorThreads - 1) / kKeyMajorThreads, kMaxGridBlocks));
  key_major_fill_kernel<<<blocks, kKeyMajorThreads, 0, stream>>>(keys, c0, tc, b.keys_in, b.vals_in);
  DSA_CUDA_LAUNCH_CHECK(op);
}

void key_major_sort(int n, int S, const KeyMajorBuffers& b, cudaStream_t stream, const char* op) {
  if (n > 0) {
    size_t temp = b.sort_temp_bytes;
    DSA_CUDA_CALL(op, cub::DeviceRadixSort::SortPairs(b.sort_temp, temp, b.keys_in, b.keys_out, b.vals_in, b.vals_out,
                                                      n, 0, detail::sort_key_bits(S), stream));
  }
  const int blocks = detail::ceil_div(static_cast<long long>(S) + 1, kKeyMajorThreads);
  key_major_offsets_kernel<<<blocks, kKeyMajorThreads, 0, stream>>>(b.keys_out, n, S, b.offsets);
  DSA_CUDA_LAUNCH_CHECK(op);
}

}  // namespace dsa::cuda::attn
