// registration.cpp — the schemas of torch.ops.dsa.* and their CPU (and CUDA) kernels.
//
// Every kernel is device-generic (common.h backend_for picks the backend from the tensors' device), so
// one function serves both dispatch keys. Fake (meta) kernels for torch.compile live in Python
// (python/dsa/_meta.py, torch.library.register_fake), autograd in python/dsa/autograd.py.
#include <torch/library.h>

#include "dsa/ops.h"
#include "ops.h"

#ifndef DSA_VERSION_STRING
#error "DSA_VERSION_STRING must be defined by the build (the CMake project version)"
#endif

// The version of the library this extension was built from (dsa.__version__ reads it via ctypes).
extern "C" __attribute__((visibility("default"))) const char* dsa_torch_version() { return DSA_VERSION_STRING; }

// The RoPE tables of the model's config (dsa::cpu::rope_inv_freq, yarn_softmax_mscale) for
// dsa.DSAttention, which builds them once at construction (ctypes; not an op of the traced graph).
extern "C" __attribute__((visibility("default"))) void dsa_torch_rope_inv_freq(
    int R, double theta, double factor, int original_max_position, double beta_fast, double beta_slow, double mscale,
    double mscale_all_dim, float* inv_freq) {
  dsa::cpu::rope_inv_freq(R, theta, {factor, original_max_position, beta_fast, beta_slow, mscale, mscale_all_dim},
                          inv_freq);
}
extern "C" __attribute__((visibility("default"))) double dsa_torch_yarn_mscale(
    double factor, int original_max_position, double beta_fast, double beta_slow, double mscale, double mscale_all_dim) {
  return dsa::cpu::yarn_softmax_mscale({factor, original_max_position, beta_fast, beta_slow, mscale, mscale_all_dim});
}

TORCH_LIBRARY(dsa, m) {
  m.def("sparse_attention_forward(Tensor q, Tensor kv, Tensor indices, float scale, int d_v, Tensor? topk_length=None)"
        " -> (Tensor out, Tensor max_logits, Tensor lse)");
  m.def("sparse_attention_backward(Tensor q, Tensor kv, Tensor indices, Tensor? topk_length, Tensor out, Tensor lse,"
        " Tensor dout, float scale) -> (Tensor dq, Tensor dkv)");
  m.def("dense_attention_forward(Tensor q, Tensor kv, Tensor ks, Tensor ke, float scale, int d_v)"
        " -> (Tensor out, Tensor max_logits, Tensor lse)");
  m.def("dense_attention_backward(Tensor q, Tensor kv, Tensor ks, Tensor ke, Tensor out, Tensor lse, Tensor dout,"
        " float scale) -> (Tensor dq, Tensor dkv)");
  m.def("indexer_kl_forward(Tensor q, Tensor kv, Tensor lse, float scale, Tensor index_logits, Tensor? ks=None,"
        " Tensor? ke=None, Tensor? indices=None, Tensor? topk_length=None) -> Tensor");
  m.def("indexer_kl_backward(Tensor q, Tensor kv, Tensor lse, float scale, Tensor index_logits, Tensor? ks=None,"
        " Tensor? ke=None, Tensor? indices=None, Tensor? topk_length=None, Tensor? dloss=None) -> Tensor");
  m.def("sparse_attention_decode(Tensor q, Tensor cache, Tensor indices, Tensor? topk_length, float scale)"
        " -> (Tensor out, Tensor lse)");
  m.def("indexer_logits(Tensor q, Tensor k, Tensor? k_scale, Tensor w, Tensor ks, Tensor ke) -> Tensor");
  m.def("topk_select(Tensor logits, Tensor ks, Tensor ke, int k) -> Tensor");
  m.def("indexer_topk(Tensor q, Tensor k, Tensor? k_scale, Tensor w, Tensor ks, Tensor ke, int topk) -> Tensor");
  m.def("indexer_backward(Tensor q, Tensor k, Tensor w, Tensor ks, Tensor ke, Tensor? indices, Tensor d_logits)"
        " -> (Tensor dq, Tensor dk, Tensor dw)");
  m.def("indexer_logits_paged(Tensor q, Tensor cache, Tensor w, Tensor context_lens, Tensor block_table,"
        " int max_context_len) -> Tensor");
  m.def("paged_to_physical(Tensor indices, Tensor block_table, int next_n, int num_pages) -> Tensor");
  m.def("fp8_block_quantize(Tensor x, bool ue8m0) -> (Tensor q, Tensor scales)");
  m.def("mla_cache_pack(Tensor kv, bool ue8m0) -> Tensor");
  m.def("indexer_cache_pack(Tensor k, bool ue8m0) -> Tensor");
  m.def("indexer_quantize_fp8(Tensor q, Tensor k, Tensor w, bool ue8m0) -> (Tensor q_fp8, Tensor k_fp8,"
        " Tensor k_scale, Tensor w_folded)");
  m.def("hadamard_transform(Tensor x) -> Tensor");
  m.def("rope(Tensor x, Tensor pos, Tensor inv_freq, int offset, bool interleaved, bool inverse) -> Tensor");
}

#define DSA_IMPL_ALL(m)                                                      \
  m.impl("sparse_attention_forward", &dsa_torch::sparse_attention_forward);   \
  m.impl("sparse_attention_backward", &dsa_torch::sparse_attention_backward); \
  m.impl("dense_attention_forward", &dsa_torch::dense_attention_forward);     \
  m.impl("dense_attention_backward", &dsa_torch::dense_attention_backward);   \
  m.impl("indexer_kl_forward", &dsa_torch::indexer_kl_forward);               \
  m.impl("indexer_kl_backward", &dsa_torch::indexer_kl_backward);             \
  m.impl("sparse_attention_decode", &dsa_torch::sparse_attention_decode);     \
  m.impl("indexer_logits", &dsa_torch::indexer_logits);                       \
  m.impl("topk_select", &dsa_torch::topk_select);                             \
  m.impl("indexer_topk", &dsa_torch::indexer_topk);                           \
  m.impl("indexer_backward", &dsa_torch::indexer_backward);                   \
  m.impl("indexer_logits_paged", &dsa_torch::indexer_logits_paged);           \
  m.impl("paged_to_physical", &dsa_torch::paged_to_physical);                 \
  m.impl("fp8_block_quantize", &dsa_torch::fp8_block_quantize);               \
  m.impl("mla_cache_pack", &dsa_torch::mla_cache_pack);                       \
  m.impl("indexer_cache_pack", &dsa_torch::indexer_cache_pack);               \
  m.impl("indexer_quantize_fp8", &dsa_torch::indexer_quantize_fp8);           \
  m.impl("hadamard_transform", &dsa_torch::hadamard_transform);               \
  m.impl("rope", &dsa_torch::rope);

TORCH_LIBRARY_IMPL(dsa, CPU, m) { DSA_IMPL_ALL(m) }
#ifdef DSA_TORCH_CUDA
TORCH_LIBRARY_IMPL(dsa, CUDA, m) { DSA_IMPL_ALL(m) }
#endif
