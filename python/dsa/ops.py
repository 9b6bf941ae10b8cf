"""The library's ops on torch tensors, with its own conventions (``include/dsa/ops.h``).

Vocabulary: T queries, S keys, H heads, Dqk / Dv attention dims, HI / DI indexer heads / dim, K top-k.
Every tensor must be contiguous and on one device (CPU → CPU backend, CUDA → CUDA backend on the current
stream). Invalid index = -1; causality and packed batches are key ranges ``[ks[t], ke[t])``; LSE is
natural-log; the softmax scale is explicit. A bad argument raises ``ValueError`` naming it, before
anything runs. Importing this module registers the fake (meta) kernels used by ``torch.compile`` and the
autograd formulas of the differentiable ops.
"""
from typing import Optional, Tuple

import torch

from . import _library  # noqa: F401  (loads torch.ops.dsa)
from . import _meta  # noqa: F401  (fake kernels)

_ops = torch.ops.dsa
Tensor = torch.Tensor


def sparse_attention(q: Tensor, kv: Tensor, indices: Tensor, scale: float, d_v: int,
                     topk_length: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
    """MQA attention of each query over its selected keys (op 6; differentiable in q and kv).

    Args:
        q: [T, H, Dqk] float32 or bfloat16.
        kv: [S, Dqk], the dtype of q; V is its first ``d_v`` dims.
        indices: [T, K] int32 key indices, -1 = invalid (any other value outside [0, S) is an error).
        scale: the softmax scale (explicit: V3.2 uses 192^-0.5 · mscale²).
        d_v: value dims (≤ Dqk).
        topk_length: optional [T] int32, row t uses only ``indices[t, :topk_length[t]]``.
    Returns:
        (out [T, H, d_v] float32, max_logits [T, H] float32, lse [T, H] float32); a row without a valid
        index has out 0, lse +inf, max_logits -inf.
    """
    return _ops.sparse_attention_forward(q, kv, indices, float(scale), int(d_v), topk_length)


def dense_attention(q: Tensor, kv: Tensor, ks: Tensor, ke: Tensor, scale: float,
                    d_v: int) -> Tuple[Tensor, Tensor, Tensor]:
    """MQA attention of query t over keys ``[ks[t], ke[t])`` (op 8; differentiable in q and kv).

    Shapes as :func:`sparse_attention` with ks, ke [T] int32 instead of indices.
    """
    return _ops.dense_attention_forward(q, kv, ks, ke, float(scale), int(d_v))


def indexer_logits(q: Tensor, k: Tensor, w: Tensor, ks: Tensor, ke: Tensor,
                   k_scale: Optional[Tensor] = None) -> Tensor:
    """Lightning-indexer logits I[t, s] = k_scale[s] · Σ_h w[t, h] · ReLU(q[t, h] · k[s]) (op 3).

    Args:
        q: [T, HI, DI] float32, bfloat16 or float8_e4m3fn (per-head q scales folded into w).
        k: [S, DI], the dtype of q.
        w: [T, HI] float32.
        ks, ke: [T] int32 key ranges.
        k_scale: [S] float32, required with float8_e4m3fn inputs, refused otherwise.
    Returns:
        [T, S] float32, -inf outside ``[ks[t], ke[t])``. Differentiable in q, k, w for float32 inputs.
    """
    return _ops.indexer_logits(q, k, k_scale, w, ks, ke)


def topk(logits: Tensor, k: int, ks: Optional[Tensor] = None, ke: Optional[Tensor] = None,
         lengths: Optional[Tensor] = None) -> Tensor:
    """Deterministic top-k per row (op 4): indices [T, k] int32 in descending score order, ties to the
    smaller key index, NaN counted as -inf, unfilled slots -1.

    Args:
        logits: [T, S] float32.
        k: the budget, a runtime value in [1, 8192].
        ks, ke: optional [T] int32 ranges per row; or ``lengths`` [T] int32 (ragged rows: keys
            ``[0, lengths[t])``); neither: every row covers all S keys.
    """
    T, S = (logits.shape[0], logits.shape[1]) if logits.dim() == 2 else (0, 0)
    if lengths is not None:
        if ks is not None or ke is not None:
            raise ValueError("dsa.topk: give either lengths or ks/ke, not both")
        ks, ke = torch.zeros_like(lengths), lengths
    if ks is None:
        ks = torch.zeros(T, dtype=torch.int32, device=logits.device)
    if ke is None:
        ke = torch.full((T,), S, dtype=torch.int32, device=logits.device)
    return _ops.topk_select(logits, ks, ke, int(k))


def indexer_topk(q: Tensor, k: Tensor, w: Tensor, ks: Tensor, ke: Tensor, topk: int,
                 k_scale: Optional[Tensor] = None) -> Tensor:
    """Fused indexer + top-k (op 5): ``topk(indexer_logits(...), topk)`` bit for bit, without holding
    the [T, S] logits. Arguments as :func:`indexer_logits`; returns [T, topk] int32."""
    return _ops.indexer_topk(q, k, k_scale, w, ks, ke, int(topk))


def indexer_kl(q: Tensor, kv: Tensor, lse: Tensor, scale: float, index_logits: Tensor,
               ks: Optional[Tensor] = None, ke: Optional[Tensor] = None, indices: Optional[Tensor] = None,
               topk_length: Optional[Tensor] = None) -> Tensor:
    """Per-row KL(p ‖ softmax(I)) of the indexer against the head-summed main attention (op 9).

    Dense mode (warm-up): ks, ke [T] and index_logits [T, S]. Sparse mode: indices [T, K] (+ topk_length)
    and index_logits [T, K] slot-aligned with the indices. q, kv, lse and scale are those of the main
    attention (lse from :func:`sparse_attention` / :func:`dense_attention` over the same keys); the target
    p is recomputed from them and is a constant: only index_logits receives a gradient.
    Returns loss [T] float32.
    """
    return _ops.indexer_kl_forward(q, kv, lse, float(scale), index_logits, ks, ke, indices, topk_length)


def sparse_attention_decode(q: Tensor, cache: Tensor, indices: Tensor, scale: float,
                            topk_length: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """Sparse MQA decode over an MLA cache (op 11).

    Args:
        q: [B, next_n, H, 576] float32 or bfloat16.
        cache: 656-byte FP8 records (uint8, last dim 656, e.g. [pages, 64, 1, 656]) or [slots, 576]
            float32 / bfloat16 rows.
        indices: [B, next_n, K] int32 physical slots (-1 invalid).
        topk_length: optional [B·next_n] int32.
    Returns:
        (out [B, next_n, H, 512] float32, lse [B, H, next_n] float32).
    """
    return _ops.sparse_attention_decode(q, cache, indices, topk_length, float(scale))


def indexer_logits_paged(q: Tensor, cache: Tensor, w: Tensor, context_lens: Tensor, block_table: Tensor,
                         max_context_len: int) -> Tensor:
    """Decode-time indexer logits over the paged 132 B FP8 key cache (op 11).

    Args:
        q: [B, next_n, HI, 128] float8_e4m3fn.
        cache: uint8 pages of 64 slots × 132 B (e.g. [pages, 64, 1, 132]; :func:`indexer_cache_pack`).
        w: [B·next_n, HI] float32 (q scales folded in).
        context_lens: [B, next_n] int32 valid keys per row.
        block_table: [B, max_blocks] int32 page ids.
    Returns:
        [B·next_n, max_context_len] float32, -inf beyond each row's context length.
    """
    return _ops.indexer_logits_paged(q, cache, w, context_lens, block_table, int(max_context_len))


def paged_to_physical(indices: Tensor, block_table: Tensor, next_n: int, num_pages: int) -> Tensor:
    """Logical top-k indices [B·next_n, K] → physical cache slots (page · 64 + offset); -1 stays -1."""
    return _ops.paged_to_physical(indices, block_table, int(next_n), int(num_pages))


def fp8_block_quantize(x: Tensor, ue8m0: bool = True) -> Tuple[Tensor, Tensor]:
    """x [N, C] float32 (C % 128 == 0) → (e4m3 [N, C] float8_e4m3fn, scales [N, C/128] float32)."""
    return _ops.fp8_block_quantize(x, bool(ue8m0))


def mla_cache_pack(kv: Tensor, ue8m0: bool = False) -> Tensor:
    """kv [N, 576] float32 → [N, 656] uint8 FP8 MLA records (FlashMLA's V3.2 cache format)."""
    return _ops.mla_cache_pack(kv, bool(ue8m0))


def indexer_cache_pack(k: Tensor, ue8m0: bool = True) -> Tensor:
    """k [N, 128] float32 → [ceil(N/64), 64, 1, 132] uint8 (DeepGEMM's paged indexer cache)."""
    return _ops.indexer_cache_pack(k, bool(ue8m0))


def indexer_quantize_fp8(q: Tensor, k: Tensor, w: Tensor,
                         ue8m0: bool = True) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """fp32 q [T, HI, DI], k [S, DI], w [T, HI] → (q e4m3, k e4m3, k_scale [S], w with q scales folded)."""
    return _ops.indexer_quantize_fp8(q, k, w, bool(ue8m0))


def hadamard_transform(x: Tensor) -> Tensor:
    """(1/√D) · H_D · x over the last dim D (a power of two) of float32 x; self-inverse (differentiable)."""
    return _ops.hadamard_transform(x)


def rope(x: Tensor, pos: Tensor, inv_freq: Tensor, offset: int = 0, interleaved: bool = True) -> Tensor:
    """RoPE on dims [offset, offset + 2·len(inv_freq)) of x [T, H, D] float32 at positions pos [T] int32;
    interleaved (GPT-J pairs, main MLA) or rotate-half (NeoX pairs, the indexer). Differentiable in x."""
    return _ops.rope(x, pos, inv_freq, int(offset), bool(interleaved), False)


from . import _autograd_formulas  # noqa: E402,F401  (register_autograd for the ops above)
