// attention_ops.cpp — torch ops over the attention side of dsa::Backend (ops 6–9, 11 of dsa/ops.h).
#include <ATen/ops/empty.h>
#include <c10/core/DeviceGuard.h>

#include "common.h"
#include "ops.h"

namespace dsa_torch {
namespace {

constexpr auto kF32 = at::kFloat;
constexpr auto kBF16 = at::kBFloat16;
constexpr auto kI32 = at::kInt;
constexpr int kDecodeQkDim = dsa::kMlaLatentDim + dsa::kMlaRopeDim;   // 576

at::TensorOptions f32_like(const Tensor& t) { return t.options().dtype(kF32); }

// Checks q [T,H,Dqk] and kv [S,Dqk] (f32 or bf16, one dtype) and fills the shared AttentionParams fields.
dsa::AttentionParams attention_params(const char* op, const Tensor& q, const Tensor& kv, double scale, int64_t d_v) {
  check_tensor(q, op, "q", {kF32, kBF16}, {-1, -1, -1});
  check_tensor(kv, op, "kv", {q.scalar_type()}, {-1, q.size(2)}, &q);
  dsa::AttentionParams p;
  p.T = to_int(q.size(0), op, "q.size(0) (T)");
  p.H = to_int(q.size(1), op, "q.size(1) (H)");
  p.Dqk = to_int(q.size(2), op, "q.size(2) (Dqk)");
  p.S = to_int(kv.size(0), op, "kv.size(0) (S)");
  p.Dv = to_int(d_v, op, "d_v");
  p.scale = static_cast<float>(scale);
  set_attention_inputs(p, q, kv);
  return p;
}

void set_selection(const char* op, dsa::AttentionParams& p, const Tensor& q, const Tensor& indices,
                   const OptTensor& topk_length) {
  check_tensor(indices, op, "indices", {kI32}, {p.T, -1}, &q);
  check_optional(topk_length, op, "topk_length", {kI32}, {p.T}, &q);
  p.K = to_int(indices.size(1), op, "indices.size(1) (K)");
  p.indices = cptr<int32_t>(indices);
  p.topk_length = optr<int32_t>(topk_length);
}

void set_ranges(const char* op, dsa::AttentionParams& p, const Tensor& q, const Tensor& ks, const Tensor& ke) {
  check_tensor(ks, op, "ks", {kI32}, {p.T}, &q);
  check_tensor(ke, op, "ke", {kI32}, {p.T}, &q);
  p.ks = cptr<int32_t>(ks);
  p.ke = cptr<int32_t>(ke);
}

void check_saved(const char* op, const dsa::AttentionParams& p, const Tensor& q, const Tensor& out, const Tensor& lse,
                 const Tensor& dout) {
  check_tensor(out, op, "out", {kF32}, {p.T, p.H, p.Dv}, &q);
  check_tensor(lse, op, "lse", {kF32}, {p.T, p.H}, &q);
  check_tensor(dout, op, "dout", {kF32}, {p.T, p.H, p.Dv}, &q);
}

}  // namespace

std::tuple<Tensor, Tensor, Tensor> sparse_attention_forward(const Tensor& q, const Tensor& kv, const Tensor& indices,
                                                            double scale, int64_t d_v, const OptTensor& topk_length) {
  const char* op = "dsa.sparse_attention_forward";
  dsa::AttentionParams p = attention_params(op, q, kv, scale, d_v);
  set_selection(op, p, q, indices, topk_length);
  const c10::OptionalDeviceGuard guard(q.device());
  Tensor out = at::empty({p.T, p.H, p.Dv}, f32_like(q));
  Tensor max_logits = at::empty({p.T, p.H}, f32_like(q));
  Tensor lse = at::empty({p.T, p.H}, f32_like(q));
  run([&] { backend_for(q).sparse_attention_forward(p, {mptr<float>(out), mptr<float>(lse), mptr<float>(max_logits)}); });
  return {out, max_logits, lse};
}

std::tuple<Tensor, Tensor> sparse_attention_backward(const Tensor& q, const Tensor& kv, const Tensor& indices,
                                                     const OptTensor& topk_length, const Tensor& out, const Tensor& lse,
                                                     const Tensor& dout, double scale) {
  const char* op = "dsa.sparse_attention_backward";
  dsa::AttentionParams p = attention_params(op, q, kv, scale, out.dim() == 3 ? out.size(2) : 0);
  set_selection(op, p, q, indices, topk_length);
  check_saved(op, p, q, out, lse, dout);
  const c10::OptionalDeviceGuard guard(q.device());
  Tensor dq = at::empty({p.T, p.H, p.Dqk}, f32_like(q));
  Tensor dkv = at::empty({p.S, p.Dqk}, f32_like(q));
  run([&] {
    backend_for(q).sparse_attention_backward(
        p, {cptr<float>(dout), cptr<float>(out), cptr<float>(lse), mptr<float>(dq), mptr<float>(dkv)});
  });
  return {dq, dkv};
}

std::tuple<Tensor, Tensor, Tensor> dense_attention_forward(const Tensor& q, const Tensor& kv, const Tensor& ks,
                                                           const Tensor& ke, double scale, int64_t d_v) {
  const char* op = "dsa.dense_attention_forward";
  dsa::AttentionParams p = attention_params(op, q, kv, scale, d_v);
  set_ranges(op, p, q, ks, ke);
  const c10::OptionalDeviceGuard guard(q.device());
  Tensor out = at::empty({p.T, p.H, p.Dv}, f32_like(q));
  Tensor max_logits = at::empty({p.T, p.H}, f32_like(q));
  Tensor lse = at::empty({p.T, p.H}, f32_like(q));
  run([&] { backend_for(q).dense_attention_forward(p, {mptr<float>(out), mptr<float>(lse), mptr<float>(max_logits)}); });
  return {out, max_logits, lse};
}

std::tuple<Tensor, Tensor> dense_attention_backward(const Tensor& q, const Tensor& kv, const Tensor& ks,
                                                    const Tensor& ke, const Tensor& out, const Tensor& lse,
                                                    const Tensor& dout, double scale) {
  const char* op = "dsa.dense_attention_backward";
  dsa::AttentionParams p = attention_params(op, q, kv, scale, out.dim() == 3 ? out.size(2) : 0);
  set_ranges(op, p, q, ks, ke);
  check_saved(op, p, q, out, lse, dout);
  const c10::OptionalDeviceGuard guard(q.device());
  Tensor dq = at::empty({p.T, p.H, p.Dqk}, f32_like(q));
  Tensor dkv = at::empty({p.S, p.Dqk}, f32_like(q));
  run([&] {
    backend_for(q).dense_attention_backward(
        p, {cptr<float>(dout), cptr<float>(out), cptr<float>(lse), mptr<float>(dq), mptr<float>(dkv)});
  });
  return {dq, dkv};
}

namespace {
// The KL params of both directions: dense (ks/ke) xor sparse (indices) mode.
dsa::IndexerKlParams kl_params(const char* op, const Tensor& q, const Tensor& kv, const Tensor& lse, double scale,
                               const Tensor& index_logits, const OptTensor& ks, const OptTensor& ke,
                               const OptTensor& indices, const OptTensor& topk_length) {
  dsa::IndexerKlParams k;
  k.attn = attention_params(op, q, kv, scale, 0);
  const bool sparse = indices && indices->defined();
  const bool dense = ks && ks->defined() && ke && ke->defined();
  TORCH_CHECK_VALUE(sparse != dense, op, ": give either ks and ke (dense mode) or indices (sparse mode)");
  if (sparse) {
    set_selection(op, k.attn, q, *indices, topk_length);
    check_tensor(index_logits, op, "index_logits", {kF32}, {k.attn.T, k.attn.K}, &q);
  } else {
    TORCH_CHECK_VALUE(!(topk_length && topk_length->defined()), op, ": topk_length is a sparse-mode argument");
    set_ranges(op, k.attn, q, *ks, *ke);
    check_tensor(index_logits, op, "index_logits", {kF32}, {k.attn.T, k.attn.S}, &q);
  }
  check_tensor(lse, op, "lse", {kF32}, {k.attn.T, k.attn.H}, &q);
  k.lse = cptr<float>(lse);
  k.index_logits = cptr<float>(index_logits);
  return k;
}
}  // namespace

Tensor indexer_kl_forward(const Tensor& q, const Tensor& kv, const Tensor& lse, double scale,
                          const Tensor& index_logits, const OptTensor& ks, const OptTensor& ke,
                          const OptTensor& indices, const OptTensor& topk_length) {
  const char* op = "dsa.indexer_kl_forward";
  const dsa::IndexerKlParams k = kl_params(op, q, kv, lse, scale, index_logits, ks, ke, indices, topk_length);
  const c10::OptionalDeviceGuard guard(q.device());
  Tensor loss = at::empty({k.attn.T}, f32_like(q));
  run([&] { backend_for(q).indexer_kl_forward(k, mptr<float>(loss)); });
  return loss;
}

Tensor indexer_kl_backward(const Tensor& q, const Tensor& kv, const Tensor& lse, double scale,
                           const Tensor& index_logits, const OptTensor& ks, const OptTensor& ke,
                           const OptTensor& indices, const OptTensor& topk_length, const OptTensor& dloss) {
  const char* op = "dsa.indexer_kl_backward";
  const dsa::IndexerKlParams k = kl_params(op, q, kv, lse, scale, index_logits, ks, ke, indices, topk_length);
  check_optional(dloss, op, "dloss", {kF32}, {k.attn.T}, &q);
  const c10::OptionalDeviceGuard guard(q.device());
  Tensor d = at::empty(index_logits.sizes(), f32_like(q));
  run([&] { backend_for(q).indexer_kl_backward(k, optr<float>(dloss), mptr<float>(d)); });
  return d;
}

std::tuple<Tensor, Tensor> sparse_attention_decode(const Tensor& q, const Tensor& cache, const Tensor& indices,
                                                   const OptTensor& topk_length, double scale) {
  const char* op = "dsa.sparse_attention_decode";
  check_tensor(q, op, "q", {kF32, kBF16}, {-1, -1, -1, kDecodeQkDim});
  dsa::SparseDecodeParams p;
  p.B = to_int(q.size(0), op, "q.size(0) (B)");
  p.next_n = to_int(q.size(1), op, "q.size(1) (next_n)");
  p.H = to_int(q.size(2), op, "q.size(2) (H)");
  check_tensor(indices, op, "indices", {kI32}, {p.B, p.next_n, -1}, &q);
  p.K = to_int(indices.size(2), op, "indices.size(2) (K)");
  check_optional(topk_length, op, "topk_length", {kI32}, {static_cast<int64_t>(p.B) * p.next_n}, &q);
  // The cache format follows from the tensor: 656-byte records (uint8 / e4m3 bytes) or [slots, 576] rows.
  TORCH_CHECK_VALUE(cache.dim() >= 1, op, ": cache must have at least one dimension");
  const int64_t last = cache.size(cache.dim() - 1);
  if (cache.scalar_type() == at::kByte || cache.scalar_type() == at::kFloat8_e4m3fn) {
    TORCH_CHECK_VALUE(last == dsa::kMlaRecordBytes, op, ": cache of dtype ", dtype_name(cache.scalar_type()),
                      " holds 656-byte FP8 records: its last dimension is ", last, ", expected 656");
    p.format = dsa::KvCacheFormat::kFp8Record;
  } else {
    check_tensor(cache, op, "cache", {kF32, kBF16}, std::vector<int64_t>(cache.dim(), -1), &q);
    TORCH_CHECK_VALUE(last == kDecodeQkDim, op, ": cache rows have ", last, " values, expected 576");
    p.format = cache.scalar_type() == kBF16 ? dsa::KvCacheFormat::kBf16 : dsa::KvCacheFormat::kFp32;
  }
  check_tensor(cache, op, "cache", {cache.scalar_type()}, std::vector<int64_t>(cache.dim(), -1), &q);
  p.num_slots = cache.numel() / last;
  p.scale = static_cast<float>(scale);
  p.q_dtype = attention_dtype(q);
  if (p.q_dtype == dsa::DType::kBF16)
    p.q_bf16 = cptr<uint16_t>(q);
  else
    p.q = cptr<float>(q);
  p.cache = cache.data_ptr();
  p.indices = cptr<int32_t>(indices);
  p.topk_length = optr<int32_t>(topk_length);
  const c10::OptionalDeviceGuard guard(q.device());
  Tensor out = at::empty({p.B, p.next_n, p.H, dsa::kMlaLatentDim}, f32_like(q));
  Tensor lse = at::empty({p.B, p.H, p.next_n}, f32_like(q));
  p.out = mptr<float>(out);
  p.lse = mptr<float>(lse);
  run([&] { backend_for(q).sparse_attention_decode(p); });
  return {out, lse};
}

}  // namespace dsa_torch
