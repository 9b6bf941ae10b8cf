"""dsa.compat against the peers' documented semantics: FlashMLA (tests/ref.py: natural-log LSE, +inf
for a row without keys, indices outside [0, s_kv) invalid, the attention sink in the denominator) and
DeepGEMM (ref_fp8_mqa_logits / the paged form with its MTP causal rule)."""
import torch

import dsa
from dsa import compat
import reference as ref

ATOL = RTOL = 1e-4          # fp32 results vs float64 references (see test_ops.py)
BF16_TOL = 1e-2             # outputs returned in bf16: one rounding, 2^-8 relative


def flashmla_reference(q, kv, indices, sm_scale, d_v, attn_sink=None, topk_length=None):
    """FlashMLA tests/ref.py ref_sparse_attn_fwd, in float64."""
    s_q, s_kv, topk = q.shape[0], kv.shape[0], indices.shape[-1]
    idx = indices.view(s_q, topk).clone()
    if topk_length is not None:
        idx[torch.arange(topk).unsqueeze(0) >= topk_length.unsqueeze(1)] = -1
    invalid = (idx < 0) | (idx >= s_kv)
    g = kv.view(s_kv, -1).double()[idx.masked_fill(invalid, 0).long()]          # [s_q, topk, d_qk]
    P = torch.einsum("thd,tkd->thk", q.double(), g) * sm_scale
    P = P.masked_fill(invalid.unsqueeze(1), float("-inf"))
    lse = torch.logsumexp(P, dim=-1)
    max_logits = P.amax(dim=-1)
    lse_o = lse if attn_sink is None else torch.logsumexp(torch.stack([lse, attn_sink.double().expand_as(lse)]), 0)
    lse_o = lse_o.masked_fill(lse_o == float("-inf"), float("inf"))
    out = torch.exp(P - lse_o.unsqueeze(-1)) @ g[..., :d_v]
    return out, max_logits, lse.masked_fill(lse == float("-inf"), float("inf"))


def test_flash_mla_sparse_fwd_contract():
    g = torch.Generator().manual_seed(0)
    s_q, s_kv, h_q, d_qk, d_v, topk = 6, 20, 4, 64, 32, 8
    q = torch.randn(s_q, h_q, d_qk, generator=g).bfloat16()
    kv = torch.randn(s_kv, 1, d_qk, generator=g).bfloat16()
    indices = torch.randint(-1, s_kv + 5, (s_q, 1, topk), generator=g, dtype=torch.int32)   # some ≥ s_kv
    indices[2] = -1
    sink = torch.randn(h_q, generator=g)
    tl = torch.tensor([8, 3, 8, 0, 5, 8], dtype=torch.int32)
    scale = 0.1352                                            # V3.2's explicit scale, not d_qk^-0.5
    for attn_sink in (None, sink):
        for topk_length in (None, tl):
            out, max_logits, lse = compat.flash_mla_sparse_fwd(q, kv, indices, scale, d_v, attn_sink, topk_length)
            e_out, e_max, e_lse = flashmla_reference(q, kv, indices, scale, d_v, attn_sink, topk_length)
            assert out.dtype == torch.bfloat16 and out.shape == (s_q, h_q, d_v)
            assert lse.dtype == max_logits.dtype == torch.float32 and lse.shape == (s_q, h_q)
            ref.close(out.float(), e_out, BF16_TOL, BF16_TOL, "out")
            ref.close(lse, e_lse, ATOL, RTOL, "lse (natural log)")
            ref.close(max_logits, e_max, ATOL, RTOL, "max_logits")
    assert torch.isposinf(lse[2]).all() and (out[2] == 0).all()


def test_flash_mla_with_kvcache_sparse_fp8():
    g = torch.Generator().manual_seed(1)
    b, s_q, h_q, topk, blocks = 2, 2, 8, 16, 3
    rows = torch.randn(blocks * 64, 576, generator=g)
    k_cache = dsa.ops.mla_cache_pack(rows).view(blocks, 64, 1, 656)
    q = torch.randn(b, s_q, h_q, 576, generator=g).bfloat16()
    indices = torch.randint(-1, blocks * 64, (b, s_q, topk), generator=g, dtype=torch.int32)
    topk_length = torch.tensor([16, 9], dtype=torch.int32)
    sink = torch.randn(h_q, generator=g)
    sched, splits = compat.get_mla_metadata()
    assert splits is None
    compat.get_mla_metadata(torch.tensor([64, 64], dtype=torch.int32), s_q * h_q, 1, h_q, True, topk)   # first form
    for attn_sink in (None, sink):
        out, lse = compat.flash_mla_with_kvcache(q, k_cache, None, None, 512, sched, splits, softmax_scale=0.1352,
                                                 is_fp8_kvcache=True, indices=indices, attn_sink=attn_sink,
                                                 topk_length=topk_length)
        assert out.shape == (b, s_q, h_q, 512) and out.dtype == torch.bfloat16 and lse.shape == (b, h_q, s_q)
        deq = ref.mla_records_to_rows(k_cache.view(-1, 656)).float()
        idx = indices.view(b * s_q, 1, topk)
        e_out, _, e_lse = flashmla_reference(q.view(b * s_q, h_q, 576), deq.view(-1, 1, 576), idx, 0.1352, 512,
                                             attn_sink, topk_length.repeat_interleave(s_q))
        ref.close(out.view(b * s_q, h_q, 512).float(), e_out, BF16_TOL, BF16_TOL, "out")
        ref.close(lse.transpose(1, 2).reshape(b * s_q, h_q), e_lse, ATOL, RTOL, "lse")


def deepgemm_reference(q, kv, kv_scale, weights, ks, ke):
    """DeepGEMM ref_fp8_mqa_logits: Σ_h w · ReLU(q_h · (kv · scale)), -inf outside [ks, ke)."""
    k = kv.double() * kv_scale.double().unsqueeze(1)
    score = torch.einsum("mhd,nd->hmn", q.double(), k).relu()
    logits = (score * weights.double().t().unsqueeze(-1)).sum(0)
    n = torch.arange(kv.shape[0])
    inside = (n >= ks.long().unsqueeze(1)) & (n < ke.long().unsqueeze(1))
    return logits.masked_fill(~inside, float("-inf"))


def test_fp8_mqa_logits_and_fused_topk():
    g = torch.Generator().manual_seed(2)
    seq, seq_kv, H, D = 7, 30, 8, 128
    q = torch.randn(seq, H, D, generator=g).to(torch.float8_e4m3fn)
    kv = torch.randn(seq_kv, D, generator=g).to(torch.float8_e4m3fn)
    scale = torch.rand(seq_kv, generator=g) + 0.5
    weights = torch.randn(seq, H, generator=g)
    ks = torch.tensor([0, 0, 5, 5, 5, 12, 12], dtype=torch.int32)
    ke = torch.tensor([1, 5, 8, 9, 12, 20, 30], dtype=torch.int32)
    for clean in (True, False):
        logits = compat.fp8_mqa_logits(q, (kv, scale), weights, ks, ke, clean_logits=clean)
        ref.close(logits, deepgemm_reference(q.float(), kv.float(), scale, weights, ks, ke), ATOL, RTOL, "logits")
    # compressed logits (max_seqlen_k): row i holds keys ks[i] + j
    packed = compat.fp8_mqa_logits(q, (kv, scale), weights, ks, ke, max_seqlen_k=18)
    assert packed.shape == (seq, 18)
    for i in range(seq):
        n = int(ke[i] - ks[i])
        assert torch.equal(packed[i, :n], logits[i, int(ks[i]):int(ke[i])])
        assert torch.isneginf(packed[i, n:]).all()
    top = compat.indexer_topk(q, (kv, scale), weights, ks, ke, 6)
    assert torch.equal(top, dsa.ops.topk(logits, 6, ks=ks, ke=ke))


def test_fp8_paged_mqa_logits_mtp_rule_both_context_forms():
    g = torch.Generator().manual_seed(3)
    B, next_n, H, blocks = 2, 2, 8, 4
    cache = dsa.ops.indexer_cache_pack(torch.randn(blocks * 64, 128, generator=g))
    q = torch.randn(B, next_n, H, 128, generator=g).to(torch.float8_e4m3fn)
    weights = torch.randn(B * next_n, H, generator=g)
    block_table = torch.tensor([[3, 1], [0, 2]], dtype=torch.int32)
    context_lens = torch.tensor([100, 37], dtype=torch.int32)
    meta = compat.get_paged_mqa_logits_metadata(context_lens, 64, 132)
    assert meta.shape == (133, 2) and meta.dtype == torch.int32
    logits = compat.fp8_paged_mqa_logits(q, cache, weights, context_lens, block_table, meta, 128)
    k_all, s_all = ref.indexer_cache_rows(cache)
    for b in range(B):
        slots = torch.cat([torch.arange(p * 64, p * 64 + 64) for p in block_table[b].tolist()])
        for n in range(next_n):
            r = b * next_n + n
            last = int(context_lens[b]) - next_n + n          # key j valid iff j ≤ last (DeepGEMM)
            e = deepgemm_reference(q[b, n].unsqueeze(0).float(), k_all[slots], s_all[slots], weights[r:r + 1],
                                   torch.tensor([0]), torch.tensor([last + 1]))
            ref.close(logits[r:r + 1], e, ATOL, RTOL, f"row {r}")
    rows = torch.tensor([[99, 100], [36, 37]], dtype=torch.int32)
    assert torch.equal(compat.fp8_paged_mqa_logits(q, cache, weights, rows, block_table, meta, 128), logits)
