"""Gradients of the differentiable ops on CPU tensors.

The ops take float32 / bfloat16 only (no float64 path exists in the library), so each backward is
checked twice: torch.autograd.gradcheck in float32 with a finite-difference step sized for fp32, and
against float64 autograd through the reference math of reference.py (the tight check)."""
import warnings

import pytest
import torch

import dsa
import reference as ref

# gradcheck in fp32: central differences with eps = 1e-3 have truncation error O(eps²) ≈ 1e-6 and
# rounding error ≈ 2^-24·|f|/eps ≈ 1e-4 for |f| ≈ 1, so a 5e-3 absolute / 1e-2 relative bound.
GC = dict(eps=1e-3, atol=5e-3, rtol=1e-2, nondet_tol=0.0)
# analytic fp32 gradients vs float64 autograd: sums of ≤ 64 O(1) terms in fp32 → ~1e-6; margin 1e-4.
ATOL = RTOL = 1e-4


def gradcheck(fn, inputs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # gradcheck warns for non-float64 inputs; the bounds above account for it
        assert torch.autograd.gradcheck(fn, inputs, **GC)


def leaf(x, dtype=torch.float32):
    return x.detach().to(dtype).requires_grad_()


def setup_attention(seed=0, T=5, S=7, H=2, D=12, Dv=8, K=4):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(T, H, D, generator=g) * 0.5
    kv = torch.randn(S, D, generator=g) * 0.5
    idx = torch.randint(-1, S, (T, K), generator=g, dtype=torch.int32)
    idx[1, :2] = torch.tensor([3, 3], dtype=torch.int32)        # a duplicated index counts twice
    return q, kv, idx, D ** -0.5, Dv


def test_sparse_attention_gradcheck_and_reference():
    q, kv, idx, scale, dv = setup_attention()
    gradcheck(lambda a, b: dsa.ops.sparse_attention(a, b, idx, scale, dv)[0], (leaf(q), leaf(kv)))
    qa, kva = leaf(q), leaf(kv)
    g = torch.randn(5, 2, dv, generator=torch.Generator().manual_seed(9))
    (dsa.ops.sparse_attention(qa, kva, idx, scale, dv)[0] * g).sum().backward()
    qr, kvr = leaf(q, torch.float64), leaf(kv, torch.float64)
    (ref.sparse_attention(qr, kvr, idx, scale, dv)[0] * g.double()).sum().backward()
    ref.close(qa.grad, qr.grad, ATOL, RTOL, "dq")
    ref.close(kva.grad, kvr.grad, ATOL, RTOL, "dkv")


def test_sparse_attention_bf16_inputs_get_bf16_gradients():
    q, kv, idx, scale, dv = setup_attention()
    qa, kva = leaf(q, torch.bfloat16), leaf(kv, torch.bfloat16)
    dsa.ops.sparse_attention(qa, kva, idx, scale, dv)[0].sum().backward()
    assert qa.grad.dtype == torch.bfloat16 and kva.grad.dtype == torch.bfloat16
    qr, kvr = leaf(qa.detach(), torch.float64), leaf(kva.detach(), torch.float64)
    ref.sparse_attention(qr, kvr, idx, scale, dv)[0].sum().backward()
    # the op computes exactly on the bf16 inputs; the gradient is rounded to bf16 once (2^-8 relative)
    ref.close(qa.grad, qr.grad, 1e-2, 1e-2, "dq bf16")


def test_dense_attention_gradcheck_and_reference():
    q, kv, _, scale, dv = setup_attention(T=6, S=6)
    ks = torch.tensor([0, 0, 0, 3, 3, 3], dtype=torch.int32)
    ke = torch.arange(1, 7, dtype=torch.int32)
    gradcheck(lambda a, b: dsa.ops.dense_attention(a, b, ks, ke, scale, dv)[0], (leaf(q), leaf(kv)))
    qa, kva = leaf(q), leaf(kv)
    dsa.ops.dense_attention(qa, kva, ks, ke, scale, dv)[0].pow(2).sum().backward()
    qr, kvr = leaf(q, torch.float64), leaf(kv, torch.float64)
    ref.dense_attention(qr, kvr, ks, ke, scale, dv)[0].pow(2).sum().backward()
    ref.close(qa.grad, qr.grad, ATOL, RTOL, "dq")
    ref.close(kva.grad, kvr.grad, ATOL, RTOL, "dkv")


def setup_indexer(seed=1, T=4, S=6, HI=3, DI=8):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(T, HI, DI, generator=g)
    k = torch.randn(S, DI, generator=g)
    w = torch.randn(T, HI, generator=g)
    ks = torch.tensor([0, 0, 1, 2], dtype=torch.int32)
    ke = torch.tensor([1, 3, 6, 6], dtype=torch.int32)
    return q, k, w, ks, ke


def _finite(x):
    return torch.where(torch.isfinite(x), x, torch.zeros_like(x))


def test_indexer_logits_dense_gradcheck_and_reference():
    q, k, w, ks, ke = setup_indexer()
    # the -inf outside the ranges carries no gradient; compare on the in-range entries
    fn = lambda a, b, c: _finite(dsa.ops.indexer_logits(a, b, c, ks, ke))  # noqa: E731
    gradcheck(fn, (leaf(q), leaf(k), leaf(w)))
    qa, ka, wa = leaf(q), leaf(k), leaf(w)
    fn(qa, ka, wa).pow(2).sum().backward()
    qr, kr, wr = leaf(q, torch.float64), leaf(k, torch.float64), leaf(w, torch.float64)
    _finite(ref.indexer_logits(qr, kr, wr, ks, ke)).pow(2).sum().backward()
    for a, r, name in ((qa, qr, "dq"), (ka, kr, "dk"), (wa, wr, "dw")):
        ref.close(a.grad, r.grad, ATOL, RTOL, name)


def test_indexer_logits_selected_gradcheck_and_reference():
    q, k, w, ks, ke = setup_indexer()
    idx = dsa.ops.topk(dsa.ops.indexer_logits(q, k, w, ks, ke), 2, ks=ks, ke=ke)
    fn = lambda a, b, c: _finite(dsa.autograd.indexer_logits_selected(a, b, c, ks, ke, idx))  # noqa: E731
    gradcheck(fn, (leaf(q), leaf(k), leaf(w)))
    qa, ka, wa = leaf(q), leaf(k), leaf(w)
    fn(qa, ka, wa).sum().backward()
    qr, kr, wr = leaf(q, torch.float64), leaf(k, torch.float64), leaf(w, torch.float64)
    full = ref.indexer_logits(qr, kr, wr, ks, ke)
    _finite(full.gather(1, idx.clamp_min(0).long()).masked_fill(idx < 0, float("-inf"))).sum().backward()
    for a, r, name in ((qa, qr, "dq"), (ka, kr, "dk"), (wa, wr, "dw")):
        ref.close(a.grad, r.grad, ATOL, RTOL, name)


@pytest.mark.parametrize("sparse", [False, True])
def test_indexer_kl_gradcheck_and_reference(sparse):
    q, kv, _, scale, dv = setup_attention(T=5, S=5)
    ks = torch.zeros(5, dtype=torch.int32)
    ke = torch.arange(1, 6, dtype=torch.int32)
    g = torch.Generator().manual_seed(2)
    if sparse:
        idx = dsa.ops.topk(torch.randn(5, 5, generator=g), 3, ks=ks, ke=ke)
        _, _, lse = dsa.ops.sparse_attention(q, kv, idx, scale, dv)
        I = torch.randn(5, 3, generator=g)
        kw = dict(indices=idx)
        target = (idx, True)
    else:
        _, _, lse = dsa.ops.dense_attention(q, kv, ks, ke, scale, dv)
        I = torch.randn(5, 5, generator=g)
        kw = dict(ks=ks, ke=ke)
        target = (ref.range_mask(ks, ke, 5), False)
    gradcheck(lambda i: dsa.autograd.indexer_kl_loss(q, kv, lse, scale, i, **kw), (leaf(I),))
    Ia = leaf(I)
    dsa.autograd.indexer_kl_loss(q, kv, lse, scale, Ia, **kw).backward()
    Ir = leaf(I, torch.float64)
    ref.indexer_kl(q, kv, lse, scale, Ir, target[0], sparse=target[1]).mean().backward()
    # outside A(t) the reference's gradient is exactly 0 and so is the op's
    ref.close(Ia.grad, Ir.grad, ATOL, RTOL, "dI")


def test_rotations_gradcheck():
    x = torch.randn(3, 2, 8)
    gradcheck(dsa.ops.hadamard_transform, (leaf(x),))
    pos = torch.tensor([0, 3, 9], dtype=torch.int32)
    inv_freq = torch.tensor([1.0, 0.1])
    for interleaved in (True, False):
        gradcheck(lambda a: dsa.ops.rope(a, pos, inv_freq, offset=4, interleaved=interleaved), (leaf(x),))
