"""FlashMLA and DeepGEMM call contracts over the dsa ops: argument for argument, for engines that call
those packages (``from dsa.compat import flash_mla_sparse_fwd`` as a drop-in).

Where a peer's documentation and its code disagree, the code that engines pin wins:
* ``flash_mla_sparse_fwd`` returns a **natural-log** LSE (FlashMLA's current kernels and tests/ref.py;
  its README still says base 2, which was the first sparse release's convention), +inf for a row with
  no valid index, and max_logits in natural units (-inf for such a row).
* ``fp8_paged_mqa_logits`` takes ``context_lens`` [B] (DeepGEMM's first form: row n of request b sees
  keys j ≤ context_lens[b] − next_n + n) or [B, next_n] (its current form: per-row lengths).

Our kernels need no precomputed schedule: ``get_mla_metadata`` and ``get_paged_mqa_logits_metadata``
validate their arguments and return placeholders the decode calls accept and ignore.
"""
from dataclasses import dataclass
from typing import Optional, Tuple, Union

import torch

from . import ops

Tensor = torch.Tensor
_MLA_DV = 512                 # FlashMLA's d_v (the NoPE latent)
_MLA_RECORD_BYTES = 656       # FP8 MLA record
_PAGE_TOKENS = 64             # page size of both paged caches (block_kv / page_block_size)


def _require(cond: bool, fn: str, msg: str) -> None:
    if not cond:
        raise ValueError(f"{fn}: {msg}")


def _sink_rescale(out: Tensor, lse: Tensor, attn_sink: Tensor) -> Tensor:
    # FlashMLA's attention sink is one more logit per head in the softmax denominator only:
    # out · e^lse / (e^lse + e^sink) = out · sigmoid(lse − sink); a row with lse = +inf keeps out = 0.
    return out * torch.sigmoid(lse - attn_sink.float()).unsqueeze(-1)


# ── FlashMLA ────────────────────────────────────────────────────────────────────────────────────
def flash_mla_sparse_fwd(q: Tensor, kv: Tensor, indices: Tensor, sm_scale: float, d_v: int = _MLA_DV,
                         attn_sink: Optional[Tensor] = None,
                         topk_length: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
    """FlashMLA's sparse prefill contract.

    Args:
        q: [s_q, h_q, d_qk] bfloat16 (float32 accepted).
        kv: [s_kv, h_kv = 1, d_qk], the dtype of q.
        indices: [s_q, h_kv, topk] int32; -1 or any value outside [0, s_kv) is invalid.
        sm_scale: the softmax scale.
        d_v: value dims (512 for V3.2).
        attn_sink: optional [h_q] float32, an extra per-head logit in the softmax denominator.
        topk_length: optional [s_q] int32, row t uses only its first topk_length[t] indices.
    Returns:
        (out [s_q, h_q, d_v] in q's dtype, max_logits [s_q, h_q] float32, lse [s_q, h_q] float32,
        natural log, +inf for a row with no valid index).
    """
    fn = "flash_mla_sparse_fwd"
    _require(q.dim() == 3, fn, f"q has shape {tuple(q.shape)}; expected [s_q, h_q, d_qk]")
    _require(kv.dim() == 3 and kv.shape[1] == 1, fn, f"kv has shape {tuple(kv.shape)}; expected [s_kv, 1, d_qk]")
    _require(indices.dim() == 3 and indices.shape[1] == 1, fn,
             f"indices has shape {tuple(indices.shape)}; expected [s_q, 1, topk]")
    _require(kv.is_contiguous(), fn, "kv must be contiguous")
    _require(indices.is_contiguous(), fn, "indices must be contiguous")
    s_q, topk, s_kv = indices.shape[0], indices.shape[2], kv.shape[0]
    idx = indices.view(s_q, topk)
    if idx.dtype == torch.int32:
        # FlashMLA treats every index outside [0, s_kv) as invalid; the core op refuses those but -1.
        idx = torch.where((idx < 0) | (idx >= s_kv), torch.full_like(idx, -1), idx)
    out, max_logits, lse = ops.sparse_attention(q, kv.view(s_kv, kv.shape[2]), idx, sm_scale, d_v, topk_length)
    if attn_sink is not None:
        _require(attn_sink.shape == (q.shape[1],), fn, f"attn_sink has shape {tuple(attn_sink.shape)}; expected [h_q]")
        out = _sink_rescale(out, lse, attn_sink)
    return out.to(q.dtype), max_logits, lse


@dataclass(frozen=True)
class DecodeSchedule:
    """What ``get_mla_metadata`` returns: dsa's decode kernels plan their own split, so there is no
    schedule to carry; the object exists so that FlashMLA call sites run unchanged."""


def get_mla_metadata(*args, **kwargs) -> Tuple[DecodeSchedule, None]:
    """FlashMLA's decode metadata call, both forms: ``get_mla_metadata()`` (current) and
    ``get_mla_metadata(cache_seqlens, num_q_tokens_per_head_k, h_kv, h_q, is_fp8, topk)`` (first sparse
    release). Returns ``(DecodeSchedule(), None)`` for ``tile_scheduler_metadata, num_splits``."""
    if args and isinstance(args[0], Tensor):
        _require(args[0].dtype == torch.int32, "get_mla_metadata", f"cache_seqlens has dtype {args[0].dtype}; expected torch.int32")
    return DecodeSchedule(), None


def flash_mla_with_kvcache(q: Tensor, k_cache: Tensor, block_table: Optional[Tensor], cache_seqlens: Optional[Tensor],
                           head_dim_v: int, tile_scheduler_metadata=None, num_splits=None,
                           softmax_scale: Optional[float] = None, causal: bool = False, is_fp8_kvcache: bool = False,
                           indices: Optional[Tensor] = None, attn_sink: Optional[Tensor] = None,
                           extra_k_cache: Optional[Tensor] = None, extra_indices_in_kvcache: Optional[Tensor] = None,
                           topk_length: Optional[Tensor] = None,
                           extra_topk_length: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """FlashMLA's decode contract, sparse form (the one DSA uses).

    Args:
        q: [b, s_q, h_q, 576] bfloat16 (float32 accepted).
        k_cache: [num_blocks, 64, 1, 656] uint8 FP8 records with ``is_fp8_kvcache=True``
            (:func:`dsa.ops.mla_cache_pack`), or [num_blocks, 64, 1, 576] bfloat16 / float32 rows.
        block_table, cache_seqlens: accepted and unused by the sparse form (indices are physical slots).
        head_dim_v: 512.
        softmax_scale: default 576^-0.5 (FlashMLA's default; V3.2 needs its own scale passed).
        causal: must be False with indices (as in FlashMLA).
        indices: [b, s_q, topk] int32 physical slots (page · 64 + offset), -1 invalid. Required.
        attn_sink: optional [h_q] float32. topk_length: optional [b] int32.
    Returns:
        (out [b, s_q, h_q, 512] in q's dtype, lse [b, h_q, s_q] float32).
    """
    fn = "flash_mla_with_kvcache"
    _require(indices is not None, fn, "indices is None: dsa provides the sparse decode only (pass indices)")
    _require(not causal, fn, "causal must be False with indices (causality is in the indices)")
    _require(head_dim_v == _MLA_DV, fn, f"head_dim_v = {head_dim_v}; expected 512")
    _require(extra_k_cache is None and extra_indices_in_kvcache is None and extra_topk_length is None, fn,
             "extra_k_cache / extra_indices_in_kvcache / extra_topk_length are not supported")
    _require(q.dim() == 4, fn, f"q has shape {tuple(q.shape)}; expected [b, s_q, h_q, 576]")
    is_record = k_cache.dtype in (torch.uint8, torch.float8_e4m3fn)
    _require(is_record == bool(is_fp8_kvcache), fn,
             f"is_fp8_kvcache = {is_fp8_kvcache} but k_cache has dtype {k_cache.dtype}")
    b, s_q = q.shape[0], q.shape[1]
    if softmax_scale is None:
        softmax_scale = q.shape[-1] ** -0.5
    if topk_length is not None:
        _require(topk_length.shape == (b,), fn, f"topk_length has shape {tuple(topk_length.shape)}; expected [b]")
        topk_length = topk_length.repeat_interleave(s_q)   # per request → per query row
    cache = k_cache if is_record else k_cache.reshape(-1, k_cache.shape[-1])
    out, lse = ops.sparse_attention_decode(q, cache, indices, softmax_scale, topk_length)
    if attn_sink is not None:
        _require(attn_sink.shape == (q.shape[2],), fn, f"attn_sink has shape {tuple(attn_sink.shape)}; expected [h_q]")
        out = _sink_rescale(out, lse.transpose(1, 2), attn_sink)
    return out.to(q.dtype), lse


# ── DeepGEMM ────────────────────────────────────────────────────────────────────────────────────
def fp8_mqa_logits(q: Tensor, kv: Tuple[Tensor, Tensor], weights: Tensor, cu_seq_len_k_start: Tensor,
                   cu_seq_len_k_end: Tensor, clean_logits: bool = True, max_seqlen_k: int = 0) -> Tensor:
    """DeepGEMM's prefill indexer contract: logits[i, j] = Σ_h weights[i, h] · ReLU(q[i, h] · kv[j] · scale[j])
    for j in [ks[i], ke[i]).

    Args:
        q: [seq_len, H, D] float8_e4m3fn (per-head q scales folded into weights).
        kv: (kv [seq_len_kv, D] float8_e4m3fn, kv_scale [seq_len_kv] float32).
        weights: [seq_len, H] float32.
        cu_seq_len_k_start, cu_seq_len_k_end: [seq_len] int32 key ranges.
        clean_logits: DeepGEMM leaves entries outside the ranges unspecified when False; dsa always
            writes -inf there, which satisfies both settings.
        max_seqlen_k: 0, or DeepGEMM's "compressed logits": row i holds keys ks[i] + j for
            j < max_seqlen_k (≥ every ke − ks), -inf past its range.
    Returns:
        [seq_len, seq_len_kv] float32 (contiguous), or [seq_len, max_seqlen_k] when compressed.
    """
    fn = "fp8_mqa_logits"
    _require(isinstance(kv, (tuple, list)) and len(kv) == 2, fn, "kv must be the pair (kv_fp8, kv_scale)")
    k, k_scale = kv
    if k_scale.dim() == 2 and k_scale.shape[-1] == 1:
        k_scale = k_scale.view(-1)
    logits = ops.indexer_logits(q, k, weights, cu_seq_len_k_start, cu_seq_len_k_end, k_scale=k_scale)
    if max_seqlen_k <= 0:
        return logits
    # Compressed form: a gather of each row's window (indexing only; the logits are the op's).
    j = torch.arange(max_seqlen_k, device=logits.device).unsqueeze(0)
    col = cu_seq_len_k_start.long().unsqueeze(1) + j
    inside = col < cu_seq_len_k_end.long().unsqueeze(1)
    width = cu_seq_len_k_end.long() - cu_seq_len_k_start.long()
    _require(bool((width <= max_seqlen_k).all()), fn, f"max_seqlen_k = {max_seqlen_k} is less than a row's ke - ks")
    out = logits.gather(1, col.clamp_max(logits.shape[1] - 1))
    return out.masked_fill(~inside, float("-inf"))


def get_paged_mqa_logits_metadata(context_lens: Tensor, block_kv: int, num_sms: int) -> Tensor:
    """DeepGEMM's paged-indexer schedule call: validates the arguments (block_kv must be 64, the cache's
    page size) and returns a zero [num_sms + 1, 2] int32 tensor; dsa's kernel schedules itself."""
    fn = "get_paged_mqa_logits_metadata"
    _require(block_kv == _PAGE_TOKENS, fn, f"block_kv = {block_kv}; dsa's paged cache has 64-slot pages")
    _require(num_sms >= 1, fn, f"num_sms = {num_sms} must be >= 1")
    _require(context_lens.dtype == torch.int32, fn, f"context_lens has dtype {context_lens.dtype}; expected torch.int32")
    return torch.zeros((num_sms + 1, 2), dtype=torch.int32, device=context_lens.device)


def fp8_paged_mqa_logits(q: Tensor, kv_cache: Tensor, weights: Tensor, context_lens: Tensor, block_table: Tensor,
                         schedule_meta: Optional[Tensor], max_context_len: int, clean_logits: bool = False,
                         indices: Optional[Tensor] = None) -> Tensor:
    """DeepGEMM's decode indexer contract over the paged 132 B cache.

    Args:
        q: [B, next_n, H, 128] float8_e4m3fn.
        kv_cache: [num_blocks, 64, 1, 132] uint8 (:func:`dsa.ops.indexer_cache_pack`).
        weights: [B·next_n, H] float32.
        context_lens: [B] int32 (row n of request b sees keys j ≤ context_lens[b] − next_n + n) or
            [B, next_n] int32 per-row lengths.
        block_table: [B, max_blocks] int32. schedule_meta: accepted and unused.
        max_context_len: the logits row length.
        clean_logits: dsa always writes -inf beyond each row's length (valid for both settings).
    Returns:
        [B·next_n, max_context_len] float32.
    """
    fn = "fp8_paged_mqa_logits"
    _require(indices is None, fn, "indices (logits at given keys only) is not supported; pass None")
    _require(q.dim() == 4, fn, f"q has shape {tuple(q.shape)}; expected [B, next_n, H, 128]")
    B, next_n = q.shape[0], q.shape[1]
    if context_lens.dim() == 1:
        _require(context_lens.shape[0] == B, fn, f"context_lens has shape {tuple(context_lens.shape)}; expected [B] or [B, next_n]")
        n = torch.arange(next_n, dtype=torch.int32, device=context_lens.device)
        # Row n of a request whose cache holds L keys sees the first L − next_n + n + 1 of them.
        context_lens = (context_lens.view(B, 1) - next_n + n.view(1, next_n) + 1).clamp_min(0).to(torch.int32)
    return ops.indexer_logits_paged(q, kv_cache, weights, context_lens.contiguous(), block_table, max_context_len)


def indexer_topk(q: Tensor, kv: Union[Tensor, Tuple[Tensor, Tensor]], weights: Tensor, ks: Tensor, ke: Tensor,
                 k: int) -> Tensor:
    """The fused indexer + top-k with ``fp8_mqa_logits``' arguments plus the runtime budget k:
    ``topk(fp8_mqa_logits(...), k)`` without the [seq_len, seq_len_kv] logits. Returns [seq_len, k] int32."""
    if isinstance(kv, (tuple, list)):
        key, k_scale = kv
        k_scale = k_scale.view(-1) if k_scale.dim() == 2 else k_scale
    else:
        key, k_scale = kv, None
    return ops.indexer_topk(q, key, weights, ks, ke, k, k_scale=k_scale)
