"""torch.ops.dsa on CPU tensors against the float64 references (reference.py), their registration
(torch.library.opcheck: schema, fake kernel, autograd registration, AOT dispatch) and torch.compile
(fullgraph) tracing."""
import pytest
import torch

import dsa
import reference as ref

# fp32 outputs of O(1) magnitude from sums of ≤ 64 terms, accumulated in fp32/fp64 on the CPU:
# observed errors are ≤ 1e-6; 1e-4 leaves margin without hiding an indexing error (those are O(1)).
ATOL = RTOL = 1e-4


def make_attention(T=6, S=9, H=3, D=24, Dv=16, K=5, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(T, H, D, generator=g).to(dtype)
    kv = torch.randn(S, D, generator=g).to(dtype)
    indices = torch.randint(-1, S, (T, K), generator=g, dtype=torch.int32)
    indices[T - 1] = -1                     # a row with no valid key
    return q, kv, indices, D ** -0.5, Dv


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sparse_attention_matches_reference(dtype):
    q, kv, idx, scale, dv = make_attention(dtype=dtype)
    topk_length = torch.tensor([5, 3, 0, 5, 1, 5], dtype=torch.int32)
    for tl in (None, topk_length):
        out, max_logits, lse = dsa.ops.sparse_attention(q, kv, idx, scale, dv, tl)
        e_out, e_lse, e_max = ref.sparse_attention(q, kv, idx, scale, dv, tl)
        assert out.dtype == torch.float32 and out.shape == (6, 3, dv)
        ref.close(out, e_out, ATOL, RTOL, "out")
        ref.close(lse, e_lse, ATOL, RTOL, "lse")
        ref.close(max_logits, e_max, ATOL, RTOL, "max_logits")
    assert torch.isposinf(lse[-1]).all() and (out[-1] == 0).all()


def test_dense_attention_matches_reference_and_sparse_with_every_key():
    q, kv, _, scale, dv = make_attention(T=7, S=7)
    ks = torch.tensor([0, 0, 0, 3, 3, 3, 6], dtype=torch.int32)      # packed sequences of 3, 3, 1
    ke = torch.arange(1, 8, dtype=torch.int32)
    out, _, lse = dsa.ops.dense_attention(q, kv, ks, ke, scale, dv)
    e_out, e_lse, _ = ref.dense_attention(q, kv, ks, ke, scale, dv)
    ref.close(out, e_out, ATOL, RTOL, "out")
    ref.close(lse, e_lse, ATOL, RTOL, "lse")
    # top-k ≥ the causal length ≡ dense causal attention (the DSA identity)
    idx = torch.full((7, 7), -1, dtype=torch.int32)
    for t in range(7):
        idx[t, : ke[t] - ks[t]] = torch.arange(ks[t], ke[t], dtype=torch.int32)
    s_out, _, s_lse = dsa.ops.sparse_attention(q, kv, idx, scale, dv)
    ref.close(s_out, out, 1e-6, 1e-6, "sparse vs dense out")
    ref.close(s_lse, lse, 1e-6, 1e-6, "sparse vs dense lse")


def make_indexer(T=5, S=11, HI=4, DI=32, seed=1):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(T, HI, DI, generator=g)
    k = torch.randn(S, DI, generator=g)
    w = torch.randn(T, HI, generator=g)
    ks = torch.tensor([0, 0, 2, 5, 4], dtype=torch.int32)
    ke = torch.tensor([1, 7, 9, 11, 4], dtype=torch.int32)           # the last row is empty
    return q, k, w, ks, ke


def test_indexer_logits_fp32_bf16():
    q, k, w, ks, ke = make_indexer()
    ref.close(dsa.ops.indexer_logits(q, k, w, ks, ke), ref.indexer_logits(q, k, w, ks, ke), ATOL, RTOL, "fp32")
    qb, kb = q.bfloat16(), k.bfloat16()
    ref.close(dsa.ops.indexer_logits(qb, kb, w, ks, ke), ref.indexer_logits(qb, kb, w, ks, ke), ATOL, RTOL, "bf16")


def test_indexer_logits_fp8_two_references():
    q, k, w, ks, ke = make_indexer(DI=128)
    q8, k8, k_scale, w_folded = dsa.ops.indexer_quantize_fp8(q, k, w)
    got = dsa.ops.indexer_logits(q8, k8, w_folded, ks, ke, k_scale=k_scale)
    # Tight: the same quantised inputs in float64.
    ref.close(got, ref.indexer_logits(q8.float(), k8.float(), w_folded, ks, ke, k_scale), ATOL, RTOL, "fp8 exact")
    # Loose: the unquantised fp32 inputs; e4m3 keeps 3 mantissa bits (relative step 2^-3 per value, errors
    # averaging over 128-term dots), so logits of O(10) agree to about 5 % of their scale.
    exact = ref.indexer_logits(q, k, w, ks, ke)
    finite = torch.isfinite(exact)
    scale = exact[finite].abs().max()
    assert ((got[finite].double() - exact[finite]).abs() <= 0.05 * scale).all()


def test_topk_deterministic_ties_ragged_runtime_k():
    logits = torch.tensor([[1.0, 3.0, 3.0, float("nan"), 2.0, 3.0],
                           [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                           [5.0, 4.0, 3.0, 2.0, 1.0, 0.0]])
    lengths = torch.tensor([6, 4, 2], dtype=torch.int32)
    for k in (1, 3, 8):
        got = dsa.ops.topk(logits, k, lengths=lengths)
        expect = ref.topk(logits, torch.zeros(3, dtype=torch.int32), lengths, k)
        assert torch.equal(got, expect), (k, got, expect)
    got = dsa.ops.topk(logits, 3, lengths=lengths)
    assert got[0].tolist() == [1, 2, 5]          # ties → smaller index first
    assert dsa.ops.topk(logits, 8, lengths=lengths)[2].tolist() == [0, 1] + [-1] * 6
    for _ in range(5):                           # deterministic
        assert torch.equal(dsa.ops.topk(logits, 3, lengths=lengths), got)


def test_fused_indexer_topk_equals_logits_then_topk():
    q, k, w, ks, ke = make_indexer(T=5, S=40)
    ke = torch.tensor([1, 20, 33, 40, 4], dtype=torch.int32)
    for K in (1, 4, 16):
        fused = dsa.ops.indexer_topk(q, k, w, ks, ke, K)
        unfused = dsa.ops.topk(dsa.ops.indexer_logits(q, k, w, ks, ke), K, ks=ks, ke=ke)
        assert torch.equal(fused, unfused)


@pytest.mark.parametrize("sparse", [False, True])
def test_indexer_kl_matches_reference(sparse):
    q, kv, _, scale, dv = make_attention(T=6, S=6, D=16, Dv=8)
    ks = torch.zeros(6, dtype=torch.int32)
    ke = torch.arange(1, 7, dtype=torch.int32)
    g = torch.Generator().manual_seed(3)
    if sparse:
        idx = dsa.ops.topk(torch.randn(6, 6, generator=g), 3, ks=ks, ke=ke)
        _, _, lse = dsa.ops.sparse_attention(q, kv, idx, scale, dv)
        I = torch.randn(6, 3, generator=g)
        got = dsa.ops.indexer_kl(q, kv, lse, scale, I, indices=idx)
        expect = ref.indexer_kl(q, kv, lse, scale, I, idx, sparse=True)
    else:
        _, _, lse = dsa.ops.dense_attention(q, kv, ks, ke, scale, dv)
        I = torch.randn(6, 6, generator=g)
        got = dsa.ops.indexer_kl(q, kv, lse, scale, I, ks=ks, ke=ke)
        expect = ref.indexer_kl(q, kv, lse, scale, I, ref.range_mask(ks, ke, 6), sparse=False)
    ref.close(got, expect, ATOL, RTOL, "kl")


def test_decode_over_fp8_records_matches_reference():
    g = torch.Generator().manual_seed(4)
    B, n, H, K, slots = 2, 2, 4, 8, 128
    rows = torch.randn(slots, 576, generator=g)
    records = dsa.ops.mla_cache_pack(rows)
    q = torch.randn(B, n, H, 576, generator=g)
    idx = torch.randint(-1, slots, (B, n, K), generator=g, dtype=torch.int32)
    scale = 192 ** -0.5
    out, lse = dsa.ops.sparse_attention_decode(q, records.view(2, 64, 1, 656), idx, scale)
    deq = ref.mla_records_to_rows(records)
    e_out, e_lse, _ = ref.sparse_attention(q.view(B * n, H, 576), deq, idx.view(B * n, K), scale, 512)
    ref.close(out.view(B * n, H, 512), e_out, ATOL, RTOL, "out")
    ref.close(lse.transpose(1, 2).reshape(B * n, H), e_lse, ATOL, RTOL, "lse")     # lse is [B, H, next_n]


def test_paged_indexer_and_paged_to_physical():
    g = torch.Generator().manual_seed(5)
    B, n, HI, pages = 2, 2, 4, 4
    keys = torch.randn(pages * 64, 128, generator=g)
    cache = dsa.ops.indexer_cache_pack(keys)
    q8, _ = dsa.ops.fp8_block_quantize(torch.randn(B * n * HI, 128, generator=g))
    q8 = q8.view(B, n, HI, 128)
    w = torch.randn(B * n, HI, generator=g)
    block_table = torch.tensor([[2, 0], [3, 1]], dtype=torch.int32)
    context_lens = torch.tensor([[99, 100], [7, 8]], dtype=torch.int32)
    logits = dsa.ops.indexer_logits_paged(q8, cache, w, context_lens, block_table, 128)
    k_all, s_all = ref.indexer_cache_rows(cache)
    for b in range(B):
        slots = torch.cat([torch.arange(p * 64, p * 64 + 64) for p in block_table[b].tolist()])
        for j in range(n):
            r = b * n + j
            L = int(context_lens[b, j])
            e = ref.indexer_logits(q8[b, j].float().unsqueeze(0), k_all[slots], w[r:r + 1],
                                   torch.tensor([0], dtype=torch.int32), torch.tensor([L], dtype=torch.int32),
                                   s_all[slots])
            ref.close(logits[r:r + 1], e, ATOL, RTOL, f"row {r}")
    idx = dsa.ops.topk(logits, 4, lengths=context_lens.view(-1))
    phys = dsa.ops.paged_to_physical(idx, block_table, n, pages)
    bt = block_table.repeat_interleave(n, dim=0)
    expect = torch.where(idx >= 0, torch.gather(bt, 1, (idx.clamp_min(0) // 64).long()) * 64 + idx % 64, idx)
    assert torch.equal(phys, expect.to(torch.int32))


def test_rotations():
    g = torch.Generator().manual_seed(6)
    x = torch.randn(3, 2, 16, generator=g)
    h = dsa.ops.hadamard_transform(x)
    ref.close(dsa.ops.hadamard_transform(h), x, 1e-5, 1e-5, "hadamard self-inverse")
    ref.close(h.norm(dim=-1), x.norm(dim=-1), 1e-5, 1e-5, "hadamard orthonormal")
    pos = torch.tensor([0, 5, 17], dtype=torch.int32)
    inv_freq = 10000.0 ** (-torch.arange(4, dtype=torch.float32) / 4)
    for interleaved in (True, False):
        y = dsa.ops.rope(x, pos, inv_freq, offset=8, interleaved=interleaved)
        assert torch.equal(y[..., :8], x[..., :8])
        ref.close(y[0], x[0], 0, 0, "position 0 is the identity")
        ref.close(y.norm(dim=-1), x.norm(dim=-1), 1e-5, 1e-5, "rotation keeps norms")


def _opcheck_cases():
    q, kv, idx, scale, dv = make_attention(T=4, S=6, H=2, D=8, Dv=4, K=3)
    ks = torch.zeros(4, dtype=torch.int32)
    ke = torch.tensor([1, 2, 3, 6], dtype=torch.int32)
    qi, ki, wi, iks, ike = make_indexer(T=4, S=6, HI=2, DI=16)
    iks, ike = ks, ke
    logits = dsa.ops.indexer_logits(qi, ki, wi, iks, ike)
    _, _, lse = dsa.ops.dense_attention(q, kv, ks, ke, scale, dv)
    d = torch.ops.dsa
    return [
        (d.sparse_attention_forward, (q.requires_grad_(), kv.requires_grad_(), idx, scale, dv, None)),
        (d.dense_attention_forward, (q, kv, ks, ke, scale, dv)),
        (d.indexer_logits, (qi.requires_grad_(), ki.requires_grad_(), None, wi.requires_grad_(), iks, ike)),
        (d.topk_select, (logits, iks, ike, 3)),
        (d.indexer_topk, (qi.detach(), ki.detach(), None, wi.detach(), iks, ike, 3)),
        (d.indexer_kl_forward, (q.detach(), kv.detach(), lse, scale, torch.randn(4, 6).requires_grad_(), ks, ke, None, None)),
        (d.hadamard_transform, (torch.randn(3, 8, requires_grad=True),)),
        (d.rope, (torch.randn(2, 1, 8, requires_grad=True), ks[:2], torch.ones(2), 4, True, False)),
        (d.fp8_block_quantize, (torch.randn(2, 128), True)),
        (d.mla_cache_pack, (torch.randn(3, 576), False)),
    ]


@pytest.mark.parametrize("case", range(10))
def test_opcheck(case):
    op, args = _opcheck_cases()[case]
    torch.library.opcheck(op, args)


def test_torch_compile_fullgraph_traces_the_ops():
    q, kv, idx, scale, dv = make_attention(T=6, S=6, D=16, Dv=8)
    qi, ki, wi, _, _ = make_indexer(T=6, S=6, HI=2, DI=16)
    ks = torch.zeros(6, dtype=torch.int32)
    ke = torch.arange(1, 7, dtype=torch.int32)

    def step(q, kv, qi, ki, wi):
        sel = dsa.ops.indexer_topk(qi, ki, wi, ks, ke, 4)
        out, _, lse = dsa.ops.sparse_attention(q, kv, sel, scale, dv)
        return out.sum() + dsa.ops.indexer_logits(qi, ki, wi, ks, ke).clamp_min(-1e4).sum(), sel

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    args = [q.clone().requires_grad_(), kv.clone().requires_grad_(), qi, ki, wi]
    loss_c, sel_c = compiled(*args)
    loss_c.backward()
    eager_args = [q.clone().requires_grad_(), kv.clone().requires_grad_(), qi, ki, wi]
    loss_e, sel_e = step(*eager_args)
    loss_e.backward()
    assert torch.equal(sel_c, sel_e)
    ref.close(loss_c.detach(), loss_e.detach(), 1e-6, 1e-6, "loss")
    ref.close(args[0].grad, eager_args[0].grad, 1e-6, 1e-6, "dq")
    ref.close(args[1].grad, eager_args[1].grad, 1e-6, 1e-6, "dkv")
