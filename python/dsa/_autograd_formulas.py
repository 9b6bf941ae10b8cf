"""Autograd formulas of the differentiable torch.ops.dsa ops (torch.library.register_autograd): each
backward is the library's backward op; nothing is differentiated in Python.

* sparse / dense attention: d(q, kv) from (dout, out, lse) (ops 7, 8). lse and max_logits are outputs
  for merging and diagnostics, not differentiable (as in FlashMLA).
* indexer_logits (float32): d(q, k, w) from d_logits (op 10).
* indexer_kl_forward: d(index_logits) (op 9); q, kv, lse define the target p and get no gradient (the
  V3.2 recipe trains the indexer against a detached target).
* hadamard_transform: self-adjoint; rope: the transposed rotation.
"""
import torch

_ops = torch.ops.dsa
register = torch.library.register_autograd


def _as(grad, like):
    return grad if grad.dtype == like.dtype else grad.to(like.dtype)


# ── attention ────────────────────────────────────────────────────────────────────────────────────
def _sparse_setup(ctx, inputs, output):
    q, kv, indices, scale, d_v, topk_length = inputs
    out, max_logits, lse = output
    ctx.mark_non_differentiable(max_logits, lse)
    ctx.save_for_backward(q, kv, indices, topk_length, out, lse)
    ctx.scale = scale


def _sparse_backward(ctx, dout, _dmax_logits, _dlse):
    q, kv, indices, topk_length, out, lse = ctx.saved_tensors
    dq, dkv = _ops.sparse_attention_backward(q, kv, indices, topk_length, out, lse,
                                             dout.float().contiguous(), ctx.scale)
    return _as(dq, q), _as(dkv, kv), None, None, None, None


register("dsa::sparse_attention_forward", _sparse_backward, setup_context=_sparse_setup)


def _dense_setup(ctx, inputs, output):
    q, kv, ks, ke, scale, d_v = inputs
    out, max_logits, lse = output
    ctx.mark_non_differentiable(max_logits, lse)
    ctx.save_for_backward(q, kv, ks, ke, out, lse)
    ctx.scale = scale


def _dense_backward(ctx, dout, _dmax_logits, _dlse):
    q, kv, ks, ke, out, lse = ctx.saved_tensors
    dq, dkv = _ops.dense_attention_backward(q, kv, ks, ke, out, lse, dout.float().contiguous(), ctx.scale)
    return _as(dq, q), _as(dkv, kv), None, None, None, None


register("dsa::dense_attention_forward", _dense_backward, setup_context=_dense_setup)


# ── indexer ──────────────────────────────────────────────────────────────────────────────────────
def _indexer_setup(ctx, inputs, output):
    q, k, k_scale, w, ks, ke = inputs
    ctx.save_for_backward(q, k, w, ks, ke)


def _indexer_backward(ctx, d_logits):
    q, k, w, ks, ke = ctx.saved_tensors
    # The op's backward is float32 only and says so by name when q is not.
    dq, dk, dw = _ops.indexer_backward(q, k, w, ks, ke, None, d_logits.contiguous())
    return dq, dk, None, dw, None, None


register("dsa::indexer_logits", _indexer_backward, setup_context=_indexer_setup)


def _kl_setup(ctx, inputs, output):
    q, kv, lse, scale, index_logits, ks, ke, indices, topk_length = inputs
    ctx.save_for_backward(q, kv, lse, index_logits, ks, ke, indices, topk_length)
    ctx.scale = scale


def _kl_backward(ctx, dloss):
    q, kv, lse, index_logits, ks, ke, indices, topk_length = ctx.saved_tensors
    d = _ops.indexer_kl_backward(q, kv, lse, ctx.scale, index_logits, ks, ke, indices, topk_length,
                                 dloss.float().contiguous())
    return None, None, None, None, d, None, None, None, None


register("dsa::indexer_kl_forward", _kl_backward, setup_context=_kl_setup)


# ── rotations ────────────────────────────────────────────────────────────────────────────────────
def _hadamard_backward(ctx, grad):
    return _ops.hadamard_transform(grad.contiguous())


register("dsa::hadamard_transform", _hadamard_backward)


def _rope_setup(ctx, inputs, output):
    x, pos, inv_freq, offset, interleaved, inverse = inputs
    ctx.save_for_backward(pos, inv_freq)
    ctx.offset, ctx.interleaved, ctx.inverse = offset, interleaved, inverse


def _rope_backward(ctx, grad):
    pos, inv_freq = ctx.saved_tensors
    dx = _ops.rope(grad.contiguous(), pos, inv_freq, ctx.offset, ctx.interleaved, not ctx.inverse)
    return dx, None, None, None, None, None


register("dsa::rope", _rope_backward, setup_context=_rope_setup)
