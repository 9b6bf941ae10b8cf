// indexer_ops.cpp — torch ops over the lightning indexer and top-k of dsa::Backend (ops 3–5, 10, 11).
#include <ATen/ops/empty.h>
#include <c10/core/DeviceGuard.h>

#include "common.h"
#include "ops.h"

namespace dsa_torch {
namespace {

constexpr auto kF32 = at::kFloat;
constexpr auto kI32 = at::kInt;

// Checks q [T,HI,DI], k [S,DI] (one dtype: f32, bf16 or e4m3), k_scale [S] (e4m3 only), w [T,HI], ks/ke [T].
dsa::IndexerParams indexer_params(const char* op, const Tensor& q, const Tensor& k, const OptTensor& k_scale,
                                  const Tensor& w, const Tensor& ks, const Tensor& ke) {
  check_tensor(q, op, "q", {kF32, at::kBFloat16, at::kFloat8_e4m3fn}, {-1, -1, -1});
  check_tensor(k, op, "k", {q.scalar_type()}, {-1, q.size(2)}, &q);
  dsa::IndexerParams p;
  p.T = to_int(q.size(0), op, "q.size(0) (T)");
  p.HI = to_int(q.size(1), op, "q.size(1) (HI)");
  p.DI = to_int(q.size(2), op, "q.size(2) (DI)");
  p.S = to_int(k.size(0), op, "k.size(0) (S)");
  const bool fp8 = q.scalar_type() == at::kFloat8_e4m3fn;
  p.precision = fp8 ? dsa::Precision::kFp8 : q.scalar_type() == at::kBFloat16 ? dsa::Precision::kBf16 : dsa::Precision::kFp32;
  if (fp8) {
    TORCH_CHECK_VALUE(k_scale && k_scale->defined(), op, ": k_scale [S] is required with float8_e4m3fn q and k");
    check_tensor(*k_scale, op, "k_scale", {kF32}, {p.S}, &q);
  } else {
    TORCH_CHECK_VALUE(!(k_scale && k_scale->defined()), op, ": k_scale is only taken with float8_e4m3fn q and k (got ",
                      dtype_name(q.scalar_type()), ")");
  }
  check_tensor(w, op, "w", {kF32}, {p.T, p.HI}, &q);
  check_tensor(ks, op, "ks", {kI32}, {p.T}, &q);
  check_tensor(ke, op, "ke", {kI32}, {p.T}, &q);
  p.q = q.data_ptr();
  p.k = k.data_ptr();
  p.k_scale = optr<float>(k_scale);
  p.w = cptr<float>(w);
  p.ks = cptr<int32_t>(ks);
  p.ke = cptr<int32_t>(ke);
  return p;
}

}  // namespace

Tensor indexer_logits(const Tensor& q, const Tensor& k, const OptTensor& k_scale, const Tensor& w, const Tensor& ks,
                      const Tensor& ke) {
  const dsa::IndexerParams p = indexer_params("dsa.indexer_logits", q, k, k_scale, w, ks, ke);
  const c10::OptionalDeviceGuard guard(q.device());
  Tensor logits = at::empty({p.T, p.S}, q.options().dtype(kF32));
  run([&] { backend_for(q).indexer_logits(p, mptr<float>(logits)); });
  return logits;
}

Tensor topk_select(const Tensor& logits, const Tensor& ks, const Tensor& ke, int64_t k) {
  const char* op = "dsa.topk_select";
  check_tensor(logits, op, "logits", {kF32}, {-1, -1});
  const int T = to_int(logits.size(0), op, "logits.size(0) (T)");
  const int S = to_int(logits.size(1), op, "logits.size(1) (S)");
  check_tensor(ks, op, "ks", {kI32}, {T}, &logits);
  check_tensor(ke, op, "ke", {kI32}, {T}, &logits);
  TORCH_CHECK_VALUE(k >= 1 && k <= dsa::kMaxTopK, op, ": k = ", k, " must be in [1, ", dsa::kMaxTopK, "]");
  const int K = static_cast<int>(k);
  const c10::OptionalDeviceGuard guard(logits.device());
  Tensor indices = at::empty({T, K}, logits.options().dtype(kI32));
  run([&] {
    backend_for(logits).topk_select({T, S, K, cptr<float>(logits), cptr<int32_t>(ks), cptr<int32_t>(ke), mptr<int32_t>(indices)});
  });
  return indices;
}

Tensor indexer_topk(const Tensor& q, const Tensor& k, const OptTensor& k_scale, const Tensor& w, const Tensor& ks,
                    const Tensor& ke, int64_t topk) {
  const char* op = "dsa.indexer_topk";
  const dsa::IndexerParams p = indexer_params(op, q, k, k_scale, w, ks, ke);
  TORCH_CHECK_VALUE(topk >= 1 && topk <= dsa::kMaxTopK, op, ": topk = ", topk, " must be in [1, ", dsa::kMaxTopK, "]");
  const c10::OptionalDeviceGuard guard(q.device());
  Tensor indices = at::empty({p.T, topk}, q.options().dtype(kI32));
  run([&] { backend_for(q).indexer_topk(p, static_cast<int>(topk), mptr<int32_t>(indices)); });
  return indices;
}

std::tuple<Tensor, Tensor, Tensor> indexer_backward(const Tensor& q, const Tensor& k, const Tensor& w,
                                                    const Tensor& ks, const Tensor& ke, const OptTensor& indices,
                                                    const Tensor& d_logits) {
  const char* op = "dsa.indexer_backward";
  check_tensor(q, op, "q", {kF32}, {-1, -1, -1});
  dsa::IndexerBackwardParams b;
  b.fwd = indexer_params(op, q, k, std::nullopt, w, ks, ke);
  if (indices && indices->defined()) {
    check_tensor(*indices, op, "indices", {kI32}, {b.fwd.T, -1}, &q);
    b.K = to_int(indices->size(1), op, "indices.size(1) (K)");
    TORCH_CHECK_VALUE(b.K > 0, op, ": indices has no columns");
    b.indices = cptr<int32_t>(*indices);
    check_tensor(d_logits, op, "d_logits", {kF32}, {b.fwd.T, b.K}, &q);
  } else {
    check_tensor(d_logits, op, "d_logits", {kF32}, {b.fwd.T, b.fwd.S}, &q);
  }
  b.d_logits = cptr<float>(d_logits);
  const c10::OptionalDeviceGuard guard(q.device());
  Tensor dq = at::empty(q.sizes(), q.options());
  Tensor dk = at::empty(k.sizes(), k.options());
  Tensor dw = at::empty(w.sizes(), w.options());
  b.dq = mptr<float>(dq);
  b.dk = mptr<float>(dk);
  b.dw = mptr<float>(dw);
  run([&] { backend_for(q).indexer_backward(b); });
  return {dq, dk, dw};
}

Tensor indexer_logits_paged(const Tensor& q, const Tensor& cache, const Tensor& w, const Tensor& context_lens,
                            const Tensor& block_table, int64_t max_context_len) {
  const char* op = "dsa.indexer_logits_paged";
  check_tensor(q, op, "q", {at::kFloat8_e4m3fn}, {-1, -1, -1, dsa::kIndexerKeyDim});
  dsa::PagedIndexerParams p;
  p.B = to_int(q.size(0), op, "q.size(0) (B)");
  p.next_n = to_int(q.size(1), op, "q.size(1) (next_n)");
  p.HI = to_int(q.size(2), op, "q.size(2) (HI)");
  check_tensor(cache, op, "cache", {at::kByte, at::kFloat8_e4m3fn}, std::vector<int64_t>(cache.dim(), -1), &q);
  constexpr int64_t kPageBytes = int64_t{dsa::kCachePageTokens} * dsa::kIndexerRecordBytes;
  TORCH_CHECK_VALUE(cache.numel() % kPageBytes == 0, op, ": cache holds ", cache.numel(),
                    " bytes, not a whole number of 64-slot pages of 132 B (", kPageBytes, " B each)");
  p.num_pages = to_int(cache.numel() / kPageBytes, op, "cache pages");
  check_tensor(w, op, "w", {kF32}, {static_cast<int64_t>(p.B) * p.next_n, p.HI}, &q);
  check_tensor(context_lens, op, "context_lens", {kI32}, {p.B, p.next_n}, &q);
  check_tensor(block_table, op, "block_table", {kI32}, {p.B, -1}, &q);
  p.max_blocks = to_int(block_table.size(1), op, "block_table.size(1)");
  p.max_context_len = to_int(max_context_len, op, "max_context_len");
  p.q_fp8 = cptr<uint8_t>(q);
  p.cache = cptr<uint8_t>(cache);
  p.w = cptr<float>(w);
  p.context_lens = cptr<int32_t>(context_lens);
  p.block_table = cptr<int32_t>(block_table);
  const c10::OptionalDeviceGuard guard(q.device());
  Tensor logits = at::empty({static_cast<int64_t>(p.B) * p.next_n, p.max_context_len}, q.options().dtype(kF32));
  run([&] { backend_for(q).indexer_logits_paged(p, mptr<float>(logits)); });
  return logits;
}

Tensor paged_to_physical(const Tensor& indices, const Tensor& block_table, int64_t next_n, int64_t num_pages) {
  const char* op = "dsa.paged_to_physical";
  check_tensor(block_table, op, "block_table", {kI32}, {-1, -1});
  const int B = to_int(block_table.size(0), op, "block_table.size(0) (B)");
  const int n = to_int(next_n, op, "next_n");
  TORCH_CHECK_VALUE(n >= 1, op, ": next_n = ", next_n, " must be >= 1");
  TORCH_CHECK_VALUE(indices.dim() >= 2, op, ": indices has shape ", indices.sizes(), "; expected [B*next_n, K] or [B, next_n, K]");
  const int64_t K = indices.size(indices.dim() - 1);
  TORCH_CHECK_VALUE(indices.numel() == int64_t{B} * n * K, op, ": indices has shape ", indices.sizes(),
                    "; expected B*next_n*K = ", B, "*", n, "*", K, " entries");
  check_tensor(indices, op, "indices", {kI32}, std::vector<int64_t>(indices.dim(), -1), &block_table);
  const c10::OptionalDeviceGuard guard(indices.device());
  Tensor out = indices.clone();
  run([&] {
    backend_for(indices).paged_to_physical(B, n, to_int(K, op, "K"), cptr<int32_t>(block_table),
                                           to_int(block_table.size(1), op, "block_table.size(1)"),
                                           to_int(num_pages, op, "num_pages"), mptr<int32_t>(out));
  });
  return out;
}

}  // namespace dsa_torch
