// ops.h — the torch ops of the dsa extension (torch.ops.dsa.*), one C++ function each; their schemas
// and registration are in registration.cpp, their fake (meta) implementations in python/dsa/_meta.py.
// Shapes use the vocabulary of include/dsa/ops.h (T queries, S keys, H heads, K top-k, …).
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>

namespace dsa_torch {
using at::Tensor;
using OptTensor = std::optional<Tensor>;

// ── attention (attention_ops.cpp) ─────────────────────────────────────────────────────────────
// q [T,H,Dqk] f32|bf16, kv [S,Dqk] same dtype, indices [T,K] int32, topk_length [T] int32 →
// (out [T,H,Dv] f32, max_logits [T,H] f32, lse [T,H] f32).
std::tuple<Tensor, Tensor, Tensor> sparse_attention_forward(const Tensor& q, const Tensor& kv, const Tensor& indices,
                                                            double scale, int64_t d_v, const OptTensor& topk_length);
// → (dq [T,H,Dqk] f32, dkv [S,Dqk] f32)
std::tuple<Tensor, Tensor> sparse_attention_backward(const Tensor& q, const Tensor& kv, const Tensor& indices,
                                                     const OptTensor& topk_length, const Tensor& out, const Tensor& lse,
                                                     const Tensor& dout, double scale);
// key ranges ks, ke [T] int32 instead of indices.
std::tuple<Tensor, Tensor, Tensor> dense_attention_forward(const Tensor& q, const Tensor& kv, const Tensor& ks,
                                                           const Tensor& ke, double scale, int64_t d_v);
std::tuple<Tensor, Tensor> dense_attention_backward(const Tensor& q, const Tensor& kv, const Tensor& ks,
                                                    const Tensor& ke, const Tensor& out, const Tensor& lse,
                                                    const Tensor& dout, double scale);
// KL(p ‖ softmax(I)) per row → loss [T] f32. Dense mode: ks, ke given, index_logits [T,S];
// sparse mode: indices [T,K] (+ topk_length) given, index_logits [T,K].
Tensor indexer_kl_forward(const Tensor& q, const Tensor& kv, const Tensor& lse, double scale,
                          const Tensor& index_logits, const OptTensor& ks, const OptTensor& ke,
                          const OptTensor& indices, const OptTensor& topk_length);
Tensor indexer_kl_backward(const Tensor& q, const Tensor& kv, const Tensor& lse, double scale,
                           const Tensor& index_logits, const OptTensor& ks, const OptTensor& ke,
                           const OptTensor& indices, const OptTensor& topk_length, const OptTensor& dloss);
// q [B,next_n,H,576] f32|bf16, cache: [slots,576] f32|bf16 or 656-byte records (uint8, any shape whose
// last dim is 656), indices [B,next_n,K] physical slots → (out [B,next_n,H,512] f32, lse [B,H,next_n] f32).
std::tuple<Tensor, Tensor> sparse_attention_decode(const Tensor& q, const Tensor& cache, const Tensor& indices,
                                                   const OptTensor& topk_length, double scale);

// ── indexer and top-k (indexer_ops.cpp) ───────────────────────────────────────────────────────
// q [T,HI,DI] f32|bf16|e4m3, k [S,DI] same dtype, k_scale [S] f32 (e4m3 only), w [T,HI] f32,
// ks/ke [T] int32 → logits [T,S] f32 (−inf outside [ks, ke)).
Tensor indexer_logits(const Tensor& q, const Tensor& k, const OptTensor& k_scale, const Tensor& w, const Tensor& ks,
                      const Tensor& ke);
// logits [T,S] f32 → indices [T,K] int32 (descending, ties → smaller key, −1 fill).
Tensor topk_select(const Tensor& logits, const Tensor& ks, const Tensor& ke, int64_t k);
Tensor indexer_topk(const Tensor& q, const Tensor& k, const OptTensor& k_scale, const Tensor& w, const Tensor& ks,
                    const Tensor& ke, int64_t topk);
// f32 only; indices null: dense d_logits [T,S]; else d_logits [T,K] at indices. → (dq, dk, dw)
std::tuple<Tensor, Tensor, Tensor> indexer_backward(const Tensor& q, const Tensor& k, const Tensor& w,
                                                    const Tensor& ks, const Tensor& ke, const OptTensor& indices,
                                                    const Tensor& d_logits);
// q [B,next_n,HI,128] e4m3, cache uint8 (pages of 64 × 132 B), w [B·next_n,HI] f32,
// context_lens [B,next_n] int32, block_table [B,max_blocks] int32 → logits [B·next_n, max_context_len].
Tensor indexer_logits_paged(const Tensor& q, const Tensor& cache, const Tensor& w, const Tensor& context_lens,
                            const Tensor& block_table, int64_t max_context_len);
// indices [B·next_n, K] (or [B,next_n,K]) logical → physical slots (a new tensor).
Tensor paged_to_physical(const Tensor& indices, const Tensor& block_table, int64_t next_n, int64_t num_pages);

// ── numerics and rotations (numerics_ops.cpp) ─────────────────────────────────────────────────
// x [N,C] f32 → (q [N,C] e4m3, scales [N,C/128] f32).
std::tuple<Tensor, Tensor> fp8_block_quantize(const Tensor& x, bool ue8m0);
// kv [N,576] f32 → records [N,656] uint8 (the FlashMLA V3.2 FP8 format).
Tensor mla_cache_pack(const Tensor& kv, bool ue8m0);
// k [N,128] f32 → cache [ceil(N/64), 64, 1, 132] uint8 (DeepGEMM paged layout).
Tensor indexer_cache_pack(const Tensor& k, bool ue8m0);
// q [T,HI,DI], k [S,DI], w [T,HI] f32 → (q e4m3, k e4m3, k_scale [S], w with the q scales folded in).
std::tuple<Tensor, Tensor, Tensor, Tensor> indexer_quantize_fp8(const Tensor& q, const Tensor& k, const Tensor& w,
                                                                bool ue8m0);
// x [..., D] f32, D a power of two → (1/√D)·H_D·x per row (a new tensor).
Tensor hadamard_transform(const Tensor& x);
// x [T,H,D] f32, pos [T] int32, inv_freq [R/2] f32 → x with RoPE on dims [offset, offset+R) (a new tensor);
// inverse applies the transposed rotation (the backward).
Tensor rope(const Tensor& x, const Tensor& pos, const Tensor& inv_freq, int64_t offset, bool interleaved, bool inverse);

}  // namespace dsa_torch
