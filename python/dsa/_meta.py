"""Fake (meta) kernels of torch.ops.dsa: output shapes and dtypes only, so that ``torch.compile``
(fullgraph) and FakeTensor tracing see through every op. Shapes follow ``python/csrc/ops.h``."""
import torch

from . import _library  # noqa: F401

_F32 = torch.float32
_I32 = torch.int32
_MLA_LATENT_DIM = 512          # Dv of the decode path (kMlaLatentDim)
_MLA_RECORD_BYTES = 656        # kMlaRecordBytes
_PAGE_TOKENS = 64              # kCachePageTokens
_INDEXER_RECORD_BYTES = 132    # kIndexerRecordBytes
_QUANT_BLOCK = 128             # kQuantBlock

fake = torch.library.register_fake


def _attention_outputs(q, d_v):
    T, H = q.shape[0], q.shape[1]
    return q.new_empty((T, H, d_v), dtype=_F32), q.new_empty((T, H), dtype=_F32), q.new_empty((T, H), dtype=_F32)


@fake("dsa::sparse_attention_forward")
def _(q, kv, indices, scale, d_v, topk_length=None):
    return _attention_outputs(q, d_v)


@fake("dsa::dense_attention_forward")
def _(q, kv, ks, ke, scale, d_v):
    return _attention_outputs(q, d_v)


@fake("dsa::sparse_attention_backward")
def _(q, kv, indices, topk_length, out, lse, dout, scale):
    return q.new_empty(q.shape, dtype=_F32), kv.new_empty(kv.shape, dtype=_F32)


@fake("dsa::dense_attention_backward")
def _(q, kv, ks, ke, out, lse, dout, scale):
    return q.new_empty(q.shape, dtype=_F32), kv.new_empty(kv.shape, dtype=_F32)


@fake("dsa::indexer_kl_forward")
def _(q, kv, lse, scale, index_logits, ks=None, ke=None, indices=None, topk_length=None):
    return q.new_empty((q.shape[0],), dtype=_F32)


@fake("dsa::indexer_kl_backward")
def _(q, kv, lse, scale, index_logits, ks=None, ke=None, indices=None, topk_length=None, dloss=None):
    return index_logits.new_empty(index_logits.shape, dtype=_F32)


@fake("dsa::sparse_attention_decode")
def _(q, cache, indices, topk_length, scale):
    B, n, H = q.shape[0], q.shape[1], q.shape[2]
    return q.new_empty((B, n, H, _MLA_LATENT_DIM), dtype=_F32), q.new_empty((B, H, n), dtype=_F32)


@fake("dsa::indexer_logits")
def _(q, k, k_scale, w, ks, ke):
    return q.new_empty((q.shape[0], k.shape[0]), dtype=_F32)


@fake("dsa::topk_select")
def _(logits, ks, ke, k):
    return logits.new_empty((logits.shape[0], k), dtype=_I32)


@fake("dsa::indexer_topk")
def _(q, k, k_scale, w, ks, ke, topk):
    return q.new_empty((q.shape[0], topk), dtype=_I32)


@fake("dsa::indexer_backward")
def _(q, k, w, ks, ke, indices, d_logits):
    return q.new_empty(q.shape), k.new_empty(k.shape), w.new_empty(w.shape)


@fake("dsa::indexer_logits_paged")
def _(q, cache, w, context_lens, block_table, max_context_len):
    return q.new_empty((q.shape[0] * q.shape[1], max_context_len), dtype=_F32)


@fake("dsa::paged_to_physical")
def _(indices, block_table, next_n, num_pages):
    return indices.new_empty(indices.shape)


@fake("dsa::fp8_block_quantize")
def _(x, ue8m0):
    return (x.new_empty(x.shape, dtype=torch.float8_e4m3fn),
            x.new_empty((x.shape[0], x.shape[1] // _QUANT_BLOCK), dtype=_F32))


@fake("dsa::mla_cache_pack")
def _(kv, ue8m0):
    return kv.new_empty((kv.shape[0], _MLA_RECORD_BYTES), dtype=torch.uint8)


@fake("dsa::indexer_cache_pack")
def _(k, ue8m0):
    pages = (k.shape[0] + _PAGE_TOKENS - 1) // _PAGE_TOKENS
    return k.new_empty((pages, _PAGE_TOKENS, 1, _INDEXER_RECORD_BYTES), dtype=torch.uint8)


@fake("dsa::indexer_quantize_fp8")
def _(q, k, w, ue8m0):
    return (q.new_empty(q.shape, dtype=torch.float8_e4m3fn), k.new_empty(k.shape, dtype=torch.float8_e4m3fn),
            k.new_empty((k.shape[0],), dtype=_F32), w.new_empty(w.shape, dtype=_F32))


@fake("dsa::hadamard_transform")
def _(x):
    return x.new_empty(x.shape)


@fake("dsa::rope")
def _(x, pos, inv_freq, offset, interleaved, inverse):
    return x.new_empty(x.shape)
