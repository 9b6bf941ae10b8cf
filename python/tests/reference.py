"""Float64 reference math of the ops, in plain torch (the test oracles; tests/op_*.cpp hold the same
references on the C++ side). Conventions of include/dsa/ops.h: -1 invalid, ranges [ks, ke), natural-log
LSE, +inf LSE / zero output for a row without keys, top-k ties to the smaller index."""
import torch

F64 = torch.float64
MLA_LATENT = 512
MLA_ROPE = 64
MLA_SCALES_AT = 512          # byte offset of the 4 fp32 block scales in a 656 B record
MLA_ROPE_AT = 528            # byte offset of the 64 bf16 RoPE values
QUANT_BLOCK = 128
PAGE = 64
INDEXER_DIM = 128


def attention_over(q, kv, mask, scale, d_v):
    """q [T,H,D], kv [S,D], mask [T,S] counts (a duplicated index counts twice) → out, lse, max_logits."""
    q, kv = q.to(F64), kv.to(F64)
    z = scale * torch.einsum("thd,sd->ths", q, kv)                       # [T,H,S]
    counts = mask.to(F64).unsqueeze(1)                                    # [T,1,S]
    z_masked = torch.where(counts > 0, z, torch.full_like(z, float("-inf")))
    m = z_masked.amax(dim=2)                                              # [T,H]
    safe_m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = counts * torch.exp(z_masked - safe_m.unsqueeze(2))
    denom = e.sum(dim=2)
    empty = denom == 0
    lse = torch.where(empty, torch.full_like(denom, float("inf")), torch.log(denom.clamp_min(1e-300)) + safe_m)
    p = torch.where(empty.unsqueeze(2), torch.zeros_like(e), e / denom.clamp_min(1e-300).unsqueeze(2))
    out = torch.einsum("ths,sv->thv", p, kv[:, :d_v])
    return out, lse, m


def selection_mask(indices, S, topk_length=None):
    T, K = indices.shape
    valid = indices >= 0
    if topk_length is not None:
        valid &= torch.arange(K).unsqueeze(0) < topk_length.long().unsqueeze(1)
    mask = torch.zeros(T, S, dtype=F64)
    mask.scatter_add_(1, indices.clamp_min(0).long(), valid.to(F64))
    return mask


def range_mask(ks, ke, S):
    s = torch.arange(S).unsqueeze(0)
    return ((s >= ks.long().unsqueeze(1)) & (s < ke.long().unsqueeze(1))).to(F64)


def sparse_attention(q, kv, indices, scale, d_v, topk_length=None):
    return attention_over(q, kv, selection_mask(indices, kv.shape[0], topk_length), scale, d_v)


def dense_attention(q, kv, ks, ke, scale, d_v):
    return attention_over(q, kv, range_mask(ks, ke, kv.shape[0]), scale, d_v)


def indexer_logits(q, k, w, ks, ke, k_scale=None):
    """I[t,s] = k_scale[s] · Σ_h w[t,h] · ReLU(q[t,h]·k[s]) inside [ks, ke), -inf outside."""
    dots = torch.einsum("thd,sd->ths", q.to(F64), k.to(F64)).clamp_min(0)
    logits = torch.einsum("th,ths->ts", w.to(F64), dots)
    if k_scale is not None:
        logits = logits * k_scale.to(F64).unsqueeze(0)
    inside = range_mask(ks, ke, k.shape[0]) > 0
    return torch.where(inside, logits, torch.full_like(logits, float("-inf")))


def topk(logits, ks, ke, k):
    """Descending score, ties to the smaller index, NaN as -inf, -1 fill."""
    T, S = logits.shape
    out = torch.full((T, k), -1, dtype=torch.int32)
    for t in range(T):
        lo, hi = int(ks[t]), int(ke[t])
        row = logits[t, lo:hi].to(F64)
        row = torch.where(torch.isnan(row), torch.full_like(row, float("-inf")), row)
        order = torch.sort(row, descending=True, stable=True).indices[:k]
        out[t, :order.numel()] = (order + lo).to(torch.int32)
    return out


def indexer_kl(q, kv, lse, scale, index_logits, mask_or_indices, sparse):
    """Per-row KL(p ‖ softmax(I)) with p the head-summed attention renormalised over A(t)."""
    q, kv, lse = q.to(F64), kv.to(F64), lse.to(F64)
    T = q.shape[0]
    if sparse:
        idx = mask_or_indices
        valid = idx >= 0
        keys = kv[idx.clamp_min(0).long()]                                   # [T,K,D]
        z = scale * torch.einsum("thd,tkd->thk", q, keys)
        I = index_logits.to(F64)
    else:
        valid = mask_or_indices > 0                                          # [T,S]
        z = scale * torch.einsum("thd,sd->ths", q, kv)
        I = index_logits.to(F64)
    P = torch.exp(z - lse.unsqueeze(2)).sum(dim=1)                           # [T, K or S]
    P = torch.where(valid, P, torch.zeros_like(P))
    p = P / P.sum(dim=1, keepdim=True).clamp_min(1e-300)
    I = torch.where(valid, I, torch.full_like(I, float("-inf")))
    log_pi = torch.log_softmax(I, dim=1)
    terms = torch.where(p > 0, p * (torch.log(p.clamp_min(1e-300)) - log_pi), torch.zeros_like(p))
    loss = terms.sum(dim=1)
    return torch.where(valid.any(dim=1), loss, torch.zeros(T, dtype=F64))


def mla_records_to_rows(records):
    """[N, 656] uint8 FP8 records → [N, 576] float64 (e4m3 · block scale | bf16 RoPE)."""
    N = records.shape[0]
    nope = records[:, :MLA_LATENT].contiguous().view(torch.float8_e4m3fn).to(F64)
    scales = records[:, MLA_SCALES_AT:MLA_ROPE_AT].contiguous().view(torch.float32).to(F64)     # [N, 4]
    nope = nope * scales.repeat_interleave(QUANT_BLOCK, dim=1)
    rope = records[:, MLA_ROPE_AT:].contiguous().view(torch.bfloat16).to(F64)
    return torch.cat([nope.view(N, MLA_LATENT), rope], dim=1)


def indexer_cache_rows(cache):
    """[pages, 64, 1, 132] uint8 DeepGEMM pages → (k [pages·64, 128] float64 e4m3 values, scale [pages·64])."""
    pages = cache.shape[0]
    flat = cache.reshape(pages, PAGE * (INDEXER_DIM + 4))
    k = flat[:, :PAGE * INDEXER_DIM].contiguous().view(torch.float8_e4m3fn).to(F64).view(pages * PAGE, INDEXER_DIM)
    s = flat[:, PAGE * INDEXER_DIM:].contiguous().view(torch.float32).to(F64).reshape(pages * PAGE)
    return k, s


def close(actual, expected, atol, rtol, what=""):
    """Same positions of ±inf / NaN, then |a − e| ≤ atol + rtol·|e| on the finite entries."""
    a, e = actual.to(F64), expected.to(F64)
    assert torch.equal(torch.isposinf(a), torch.isposinf(e)), f"{what}: +inf positions differ"
    assert torch.equal(torch.isneginf(a), torch.isneginf(e)), f"{what}: -inf positions differ"
    assert torch.equal(torch.isnan(a), torch.isnan(e)), f"{what}: NaN positions differ"
    f = torch.isfinite(e)
    err = (a[f] - e[f]).abs()
    bound = atol + rtol * e[f].abs()
    assert bool((err <= bound).all()), f"{what}: max |diff| {err.max().item():.3g} beyond atol {atol} rtol {rtol}"
