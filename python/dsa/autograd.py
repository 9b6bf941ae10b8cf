"""Differentiable building blocks for training with DSA from PyTorch.

The registered ops of :mod:`dsa.ops` already carry their backward (``torch.library.register_autograd``):
:func:`dsa.ops.sparse_attention`, :func:`dsa.ops.dense_attention`, :func:`dsa.ops.indexer_logits` and
:func:`dsa.ops.indexer_kl` work with ``loss.backward()`` and ``torch.compile``. This module adds the
indexer's selected-set form and the two training losses of the V3.2 recipe:

* dense warm-up: :func:`indexer_kl_loss` with ``ks, ke`` over the indexer's dense logits;
* sparse training: :func:`indexer_logits_selected` (logits at the top-k indices only, backward through
  the library's sparse indexer backward) and :func:`indexer_kl_loss` with ``indices``.
"""
from typing import Optional

import torch

from . import ops

Tensor = torch.Tensor
sparse_attention = ops.sparse_attention
dense_attention = ops.dense_attention
indexer_logits = ops.indexer_logits


class _IndexerLogitsSelected(torch.autograd.Function):
    """I[t, j] = indexer logit of key indices[t, j] (-inf at -1 slots); backward = op 10 in sparse mode."""

    @staticmethod
    def forward(ctx, q, k, w, ks, ke, indices):
        full = torch.ops.dsa.indexer_logits(q, k, None, w, ks, ke)   # [T, S]
        valid = indices >= 0
        # Gathering at the selected slots is indexing, not math: -1 slots read key 0 and are masked.
        out = full.gather(1, indices.clamp_min(0).long()).masked_fill(~valid, float("-inf"))
        ctx.save_for_backward(q, k, w, ks, ke, indices)
        return out

    @staticmethod
    def backward(ctx, d_logits):
        q, k, w, ks, ke, indices = ctx.saved_tensors
        dq, dk, dw = torch.ops.dsa.indexer_backward(q, k, w, ks, ke, indices, d_logits.contiguous())
        return dq, dk, dw, None, None, None


def indexer_logits_selected(q: Tensor, k: Tensor, w: Tensor, ks: Tensor, ke: Tensor, indices: Tensor) -> Tensor:
    """Indexer logits at the selected keys only (float32).

    Args:
        q: [T, HI, DI], k: [S, DI], w: [T, HI] float32.
        ks, ke: [T] int32 key ranges; every index must be -1 or inside its row's range.
        indices: [T, K] int32 selection (e.g. from :func:`dsa.ops.topk`).
    Returns:
        [T, K] float32, -inf at -1 slots; differentiable in q, k, w (the library's sparse backward).
    """
    return _IndexerLogitsSelected.apply(q, k, w, ks, ke, indices)


def indexer_kl_loss(q: Tensor, kv: Tensor, lse: Tensor, scale: float, index_logits: Tensor,
                    ks: Optional[Tensor] = None, ke: Optional[Tensor] = None, indices: Optional[Tensor] = None,
                    topk_length: Optional[Tensor] = None) -> Tensor:
    """Mean over query rows of KL(p ‖ softmax(I)), the indexer's training loss (op 9).

    Dense warm-up: ``ks, ke`` and index_logits [T, S]. Sparse training: ``indices`` [T, K] and
    index_logits [T, K] (:func:`indexer_logits_selected`). q [T, H, Dqk], kv [S, Dqk], lse [T, H] and
    scale are those of the main attention over the same keys; they are detached here (the target p is a
    constant of the indexer's loss). Returns a float32 scalar; only index_logits gets a gradient.
    """
    loss = ops.indexer_kl(q.detach(), kv.detach(), lse.detach(), scale, index_logits, ks=ks, ke=ke,
                          indices=indices, topk_length=topk_length)
    return loss.mean()
