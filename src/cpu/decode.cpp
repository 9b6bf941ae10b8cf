// decode.cpp — op 11 of the catalogue: the decode-time forms of the indexer (op 3) and of sparse
// attention (op 6) over paged caches. docs/dsa.md §11 derives every line.
//
//   indexer_logits_paged     DeepGEMM fp8_paged_mqa_logits (2-D context_lens, logits always cleaned)
//   paged_to_physical        logical top-k positions → physical cache slots (page·64 + offset)
//   sparse_attention_decode  FlashMLA sparse decode over an fp32 / bf16 / FP8-record MLA cache
//
// Every argument is validated before anything is written; the checks live in common/op_checks.h
// (shared with the GPU launchers and test wrappers, so every backend reports the same messages).
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "common/check.h"
#include "common/op_checks.h"
#include "dsa/ops.h"

namespace dsa::cpu {
namespace {

constexpr int kRowDim = kMlaLatentDim + kMlaRopeDim;                     // 576 = Dqk of the decode path
constexpr int kMlaScaleBlocks = kMlaLatentDim / kQuantBlock;             // 4 fp32 scales per record
constexpr size_t kMlaScaleOffset = kMlaLatentDim;                        // byte 512
constexpr size_t kMlaRopeOffset = kMlaLatentDim + kMlaScaleBlocks * sizeof(float);  // byte 528
static_assert(kMlaRopeOffset + kMlaRopeDim * sizeof(uint16_t) == kMlaRecordBytes, "MLA record layout");
static_assert(kIndexerKeyDim + sizeof(float) == kIndexerRecordBytes, "indexer record layout");

// All 256 e4m3 codes decoded once through the numerics of op 1 (exact in fp32).
std::array<float, 256> e4m3_table() {
  std::array<float, 256> t{};
  for (int b = 0; b < 256; ++b) t[b] = fp8_e4m3_to_float(static_cast<uint8_t>(b));
  return t;
}

float load_f32(const uint8_t* bytes) {
  float v;
  std::memcpy(&v, bytes, sizeof(float));
  return v;
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

// fp-contract=off: w·ReLU must be one rounded multiply before the add, as in op 3's kernels; a
// -march=native build would otherwise fuse it into an FMA (measured: paged ≠ contiguous bitwise).
[[gnu::optimize("fp-contract=off")]] void indexer_logits_paged(const PagedIndexerParams& p, float* logits) {
  ::dsa::detail::validate_paged_indexer_args(p, logits);
  ::dsa::detail::validate_paged_indexer_data(p);
  const std::array<float, 256> e4m3 = e4m3_table();
  const int rows = p.B * p.next_n;
  const int HI = p.HI;
  const int64_t L = p.max_context_len;

  // q decoded once (e4m3 values are exact in fp32) and transposed to qT [rows, 128, HI], so the
  // dots of all heads with one key advance together (a loop over h that vectorises, while each
  // head's dot still runs sequentially over d, as in op 3).
  std::vector<float> qT(static_cast<size_t>(rows) * HI * kIndexerKeyDim);
  for (int r = 0; r < rows; ++r)
    for (int h = 0; h < HI; ++h)
      for (int d = 0; d < kIndexerKeyDim; ++d)
        qT[(static_cast<size_t>(r) * kIndexerKeyDim + d) * HI + h] =
            e4m3[p.q_fp8[(static_cast<size_t>(r) * HI + h) * kIndexerKeyDim + d]];

  // One task = one page-sized block of keys of one request: the key is decoded once and scored
  // for the request's next_n rows. Blocks past a request's longest row only write −inf.
  const int64_t blocks = ceil_div(L, kCachePageTokens);
  const float neg_inf = -std::numeric_limits<float>::infinity();
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < p.B; ++b) {
    for (int64_t blk = 0; blk < blocks; ++blk) {
      int longest = 0;
      for (int n = 0; n < p.next_n; ++n) longest = std::max(longest, p.context_lens[b * p.next_n + n]);
      const int64_t j0 = blk * kCachePageTokens, j1 = std::min<int64_t>(j0 + kCachePageTokens, L);
      if (j0 >= longest) {
        for (int n = 0; n < p.next_n; ++n)
          std::fill(logits + (static_cast<int64_t>(b) * p.next_n + n) * L + j0,
                    logits + (static_cast<int64_t>(b) * p.next_n + n) * L + j1, neg_inf);
        continue;
      }
      const int32_t page = p.block_table[static_cast<int64_t>(b) * p.max_blocks + blk];
      const uint8_t* page_bytes = p.cache + static_cast<size_t>(page) * kIndexerPageBytes;
      float k[kIndexerKeyDim];
      std::vector<float> dots(HI);
      for (int64_t j = j0; j < j1; ++j) {
        const int64_t o = j - j0;  // offset inside the page
        const uint8_t* k_fp8 = page_bytes + o * kIndexerKeyDim;
        const float k_scale = load_f32(page_bytes + kIndexerPageScaleOffset + o * sizeof(float));
        bool decoded = false;
        for (int n = 0; n < p.next_n; ++n) {
          const int r = b * p.next_n + n;
          float* out = logits + static_cast<int64_t>(r) * L + j;
          if (j >= p.context_lens[r]) {  // causal / length mask (MTP rows have shorter lengths)
            *out = neg_inf;
            continue;
          }
          if (!decoded) {
            for (int d = 0; d < kIndexerKeyDim; ++d) k[d] = e4m3[k_fp8[d]];
            decoded = true;
          }
          // The arithmetic of op 3 (indexer.cpp), so that paged ≡ contiguous bitwise: each dot is
          // an fp32 sum over d = 0..127 (the e4m3 products are exact in fp32), ReLU keeps NaN,
          // w·ReLU is one fp32 multiply, and the head sum runs in fp32 in the order h = 0..HI−1.
          const float* qr = qT.data() + static_cast<size_t>(r) * kIndexerKeyDim * HI;
          std::fill(dots.begin(), dots.end(), 0.0f);
          for (int d = 0; d < kIndexerKeyDim; ++d)
            for (int h = 0; h < HI; ++h) dots[h] += qr[d * HI + h] * k[d];
          float acc = 0.0f;
          for (int h = 0; h < HI; ++h) {
            const float relu = dots[h] < 0.0f ? 0.0f : dots[h];
            acc += p.w[static_cast<size_t>(r) * HI + h] * relu;
          }
          *out = k_scale * acc;  // the k scale after the head sum, as in op 3 kFp8
        }
      }
    }
  }
}

// ── paged_to_physical ───────────────────────────────────────────────────────────────────────
void paged_to_physical(int B, int next_n, int K, const int32_t* block_table, int max_blocks, int num_pages,
                       int32_t* indices) {
  ::dsa::detail::validate_paged_to_physical_args(B, next_n, K, block_table, max_blocks, num_pages, indices);
  ::dsa::detail::validate_paged_to_physical_data(B, next_n, K, block_table, max_blocks, num_pages,
                                                 indices);  // all entries first
  const int64_t rows = static_cast<int64_t>(B) * next_n;
  // Logical position j of request b → slot block_table[b, j/64]·64 + j%64.
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t b = r / next_n;
    for (int k = 0; k < K; ++k) {
      int32_t& j = indices[r * K + k];
      if (j == kInvalidIndex) continue;
      j = block_table[b * max_blocks + j / kCachePageTokens] * kCachePageTokens + j % kCachePageTokens;
    }
  }
}

// ── sparse_attention_decode ─────────────────────────────────────────────────────────────────
namespace {

// Cache row `slot` → 576 fp32 values: the kFp8Record NoPE part is e4m3 · block scale (one fp32
// multiply, exactly what mla_cache_unpack produces), the RoPE part bf16 → fp32 (exact).
void dequantize_row(const SparseDecodeParams& p, const std::array<float, 256>& e4m3, int64_t slot, float* dst) {
  switch (p.format) {
    case KvCacheFormat::kFp32:
      std::memcpy(dst, static_cast<const float*>(p.cache) + slot * kRowDim, kRowDim * sizeof(float));
      break;
    case KvCacheFormat::kBf16: {
      const uint16_t* src = static_cast<const uint16_t*>(p.cache) + slot * kRowDim;
      for (int d = 0; d < kRowDim; ++d) dst[d] = bf16_to_float(src[d]);
      break;
    }
    case KvCacheFormat::kFp8Record: {
      const uint8_t* rec = static_cast<const uint8_t*>(p.cache) + slot * kMlaRecordBytes;
      for (int blk = 0; blk < kMlaScaleBlocks; ++blk) {
        const float s = load_f32(rec + kMlaScaleOffset + blk * sizeof(float));
        for (int d = blk * kQuantBlock; d < (blk + 1) * kQuantBlock; ++d) dst[d] = e4m3[rec[d]] * s;
      }
      for (int d = 0; d < kMlaRopeDim; ++d) {
        uint16_t bits;
        std::memcpy(&bits, rec + kMlaRopeOffset + d * sizeof(uint16_t), sizeof(bits));
        dst[kMlaLatentDim + d] = bf16_to_float(bits);
      }
      break;
    }
  }
}

}  // namespace

void sparse_attention_decode(const SparseDecodeParams& p) {
  ::dsa::detail::validate_sparse_decode_args(p);
  ::dsa::detail::validate_sparse_decode_data(p);
  const std::array<float, 256> e4m3 = e4m3_table();
  const int64_t rows = static_cast<int64_t>(p.B) * p.next_n;
  const int H = p.H;
  std::vector<int32_t> slots;   // the valid selected slots of one row (duplicates kept)
  std::vector<float> kv;        // their dequantised rows [n_valid, 576]
  std::vector<double> qT;       // q[r] transposed [576, H] (fp64)
  std::vector<double> z;        // logits [H, n_valid]
  slots.reserve(p.K);
  kv.resize(static_cast<size_t>(p.K) * kRowDim);
  qT.resize(static_cast<size_t>(kRowDim) * H);
  z.resize(static_cast<size_t>(H) * p.K);

  for (int64_t r = 0; r < rows; ++r) {
    const int64_t b = r / p.next_n, n = r % p.next_n;
    const int len = p.topk_length != nullptr ? p.topk_length[r] : p.K;
    slots.clear();
    for (int k = 0; k < len; ++k)
      if (p.indices[r * p.K + k] != kInvalidIndex) slots.push_back(p.indices[r * p.K + k]);
    const int64_t nv = static_cast<int64_t>(slots.size());
    for (int h = 0; h < H; ++h)
      for (int d = 0; d < kRowDim; ++d) {
        const int64_t i = (r * H + h) * kRowDim + d;
        qT[static_cast<size_t>(d) * H + h] = p.q_dtype == DType::kBF16 ? bf16_to_float(p.q_bf16[i]) : p.q[i];
      }

    // Phase 1, one slot per task: dequantise its record ONCE for this row, then its logits for all
    // H heads, z[h, i] = scale · Σ_d q[r,h,d]·kv[i,d] (fp64, sequential in d; the loop over h
    // vectorises).
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < nv; ++i) {
      float* row = kv.data() + i * kRowDim;
      dequantize_row(p, e4m3, slots[i], row);
      std::vector<double> dots(H, 0.0);
      for (int d = 0; d < kRowDim; ++d) {
        const double v = row[d];
        for (int h = 0; h < H; ++h) dots[h] += qT[static_cast<size_t>(d) * H + h] * v;
      }
      for (int h = 0; h < H; ++h) z[h * nv + i] = static_cast<double>(p.scale) * dots[h];
    }

    // Phase 2, one head per task: the softmax and the V sum in fp64, in slot order.
#pragma omp parallel for schedule(static)
    for (int h = 0; h < H; ++h) {
      float* out = p.out + (r * H + h) * kMlaLatentDim;
      float* lse = p.lse + (b * H + h) * p.next_n + n;  // FlashMLA decode layout [B, H, next_n]
      if (nv == 0) {  // no valid slot: out = 0, lse = +inf (ops.h conventions)
        std::fill(out, out + kMlaLatentDim, 0.0f);
        *lse = std::numeric_limits<float>::infinity();
        continue;
      }
      const double* zh = z.data() + h * nv;
      double m = -std::numeric_limits<double>::infinity();
      for (int64_t i = 0; i < nv; ++i) m = std::max(m, zh[i]);
      double sum = 0.0;
      for (int64_t i = 0; i < nv; ++i) sum += std::exp(zh[i] - m);
      const double log_sum = m + std::log(sum);           // lse = log Σ exp z
      double acc[kMlaLatentDim] = {};
      for (int64_t i = 0; i < nv; ++i) {
        double w = std::exp(zh[i] - log_sum);             // P = exp(z − lse)
        if (p.bf16_probs) w = bf16_to_float(bf16_from_float(static_cast<float>(w)));
        const float* row = kv.data() + i * kRowDim;
        for (int d = 0; d < kMlaLatentDim; ++d) acc[d] += w * row[d];  // V = the first 512 dims
      }
      for (int d = 0; d < kMlaLatentDim; ++d) out[d] = static_cast<float>(acc[d]);
      *lse = static_cast<float>(log_sum);
    }
  }
}

}  // namespace dsa::cpu
