"""bench/torch_peers.py — the same inputs through dsa's peer-contract ops (dsa.compat), plain-torch
reference math, and the peer's own package where it is importable (flash_mla, deep_gemm): outputs
compared within each op's tolerance, median times printed.

    python bench/torch_peers.py [--device cpu|cuda] [--reps N] [--scale small|v32]

Exits 1 when an output disagrees beyond its tolerance. ``small`` (default on the CPU) keeps every shape a
few seconds long on 2 cores; ``v32`` uses V3.2's shapes (h 128, d 576/512, top-k 2048; meant for a GPU).
"""
import argparse
import importlib
import math
import sys
import time

import torch

import dsa
from dsa import compat

# bf16 outputs (FlashMLA's out dtype) carry one rounding of 2^-8 relative; fp32 results of the exact CPU
# path agree with fp32 torch math to ~1e-5 relative; the GPU's bf16 tensor-core variants to ~1e-2.
TOL = {"cpu": {"attention": 1e-2, "logits": 1e-4}, "cuda": {"attention": 2e-2, "logits": 2e-2}}
SHAPES = {
    "small": dict(s_q=256, s_kv=2048, h_q=16, d_qk=576, d_v=512, topk=256, h_i=16, batch=8, next_n=2),
    "v32": dict(s_q=4096, s_kv=8192, h_q=128, d_qk=576, d_v=512, topk=2048, h_i=64, batch=64, next_n=2),
}
V32_SCALE = 0.1352      # 192^-0.5 · mscale² of V3.2 (explicit, never d_qk^-0.5)


def timed(fn, reps, device):
    fn()                                                         # warm-up
    ts = []
    for _ in range(reps):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        ts.append(time.perf_counter() - t0)
    return sorted(ts)[len(ts) // 2]


def rel_err(a, b):
    a, b = a.float(), b.float()
    f = torch.isfinite(b)
    if not torch.equal(f, torch.isfinite(a)):
        return math.inf
    return ((a[f] - b[f]).abs().max() / b[f].abs().max().clamp_min(1e-30)).item()


def ref_sparse_fwd(q, kv, idx, scale, d_v):
    """Gather the selected rows and run softmax attention in fp32 (FlashMLA's tests/ref.py math)."""
    invalid = idx < 0
    g = kv.float()[idx.clamp_min(0).long()]                                       # [s_q, topk, d_qk]
    P = torch.einsum("thd,tkd->thk", q.float(), g) * scale
    P = P.masked_fill(invalid.unsqueeze(1), float("-inf"))
    lse = torch.logsumexp(P, dim=-1)
    return torch.softmax(P, dim=-1).nan_to_num(0.0) @ g[..., :d_v], lse


def ref_mqa_logits(q, kv, scale, w, ks, ke):
    score = torch.einsum("mhd,nd->mhn", q.float(), kv.float() * scale.unsqueeze(1)).relu()
    logits = torch.einsum("mh,mhn->mn", w, score)
    n = torch.arange(kv.shape[0], device=q.device)
    inside = (n >= ks.unsqueeze(1)) & (n < ke.unsqueeze(1))
    return logits.masked_fill(~inside, float("-inf"))


def row(name, ours, reference, peer, err, tol):
    ok = err <= tol
    peer_s = f"{peer * 1e3:9.2f}" if peer is not None else "        -"
    ref_s = f"{reference * 1e3:12.2f}" if reference is not None else "           -"
    print(f"{name:<28}{ours * 1e3:10.2f}{ref_s}{peer_s}   {err:9.2e} <= {tol:.0e}  {'ok' if ok else 'FAIL'}")
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--scale", choices=list(SHAPES), default=None)
    a = ap.parse_args()
    dev = a.device
    c = SHAPES[a.scale or ("v32" if dev == "cuda" else "small")]
    tol = TOL[dev]
    gen = torch.Generator().manual_seed(0)
    peers = {m: importlib.util.find_spec(m) is not None for m in ("flash_mla", "deep_gemm")}
    print(f"dsa {dsa.__version__}, torch {torch.__version__}, device {dev}, shapes {c}")
    print(f"peers importable: {peers}")
    print(f"{'op':<28}{'dsa ms':>10}{'torch ms':>12}{'peer ms':>9}   {'rel err':>9}")
    ok = True

    # sparse prefill: flash_mla_sparse_fwd
    q = torch.randn(c["s_q"], c["h_q"], c["d_qk"], generator=gen).bfloat16().to(dev)
    kv = torch.randn(c["s_kv"], 1, c["d_qk"], generator=gen).bfloat16().to(dev)
    pos = torch.arange(c["s_kv"] - c["s_q"], c["s_kv"]).unsqueeze(1)                 # the last s_q positions
    idx = (torch.rand(c["s_q"], c["topk"], generator=gen) * (pos + 1)).long().to(torch.int32).unsqueeze(1).to(dev)
    ours = lambda: compat.flash_mla_sparse_fwd(q, kv, idx, V32_SCALE, c["d_v"])  # noqa: E731
    refn = lambda: ref_sparse_fwd(q, kv.squeeze(1), idx.squeeze(1), V32_SCALE, c["d_v"])  # noqa: E731
    peer_t = None
    if peers["flash_mla"] and dev == "cuda":
        fm = importlib.import_module("flash_mla")
        peer_t = timed(lambda: fm.flash_mla_sparse_fwd(q, kv, idx, V32_SCALE, c["d_v"]), a.reps, dev)
    out, _, lse = ours()
    r_out, r_lse = refn()
    err = max(rel_err(out, r_out), rel_err(lse, r_lse))
    ok &= row("flash_mla_sparse_fwd", timed(ours, a.reps, dev), timed(refn, a.reps, dev), peer_t, err, tol["attention"])

    # indexer logits: fp8_mqa_logits
    qi = torch.randn(c["s_q"], c["h_i"], 128, generator=gen).to(torch.float8_e4m3fn).to(dev)
    ki = torch.randn(c["s_kv"], 128, generator=gen).to(torch.float8_e4m3fn).to(dev)
    ksc = (torch.rand(c["s_kv"], generator=gen) + 0.5).to(dev)
    w = torch.randn(c["s_q"], c["h_i"], generator=gen).to(dev)
    ks = torch.zeros(c["s_q"], dtype=torch.int32, device=dev)
    ke = pos.squeeze(1).to(torch.int32).to(dev) + 1
    ours = lambda: compat.fp8_mqa_logits(qi, (ki, ksc), w, ks, ke)  # noqa: E731
    refn = lambda: ref_mqa_logits(qi, ki, ksc, w, ks, ke)  # noqa: E731
    peer_t = None
    if peers["deep_gemm"] and dev == "cuda":
        dg = importlib.import_module("deep_gemm")
        peer_t = timed(lambda: dg.fp8_mqa_logits(qi, (ki, ksc), w, ks, ke), a.reps, dev)
    logits = ours()
    ok &= row("fp8_mqa_logits", timed(ours, a.reps, dev), timed(refn, a.reps, dev), peer_t,
              rel_err(logits, refn()), tol["logits"])

    # top-k over those logits: dsa's deterministic top-k vs torch.topk (same set up to ties of equal score)
    k = c["topk"]
    ours = lambda: dsa.ops.topk(logits, k, ks=ks, ke=ke)  # noqa: E731
    refn = lambda: torch.topk(logits, k, dim=1)  # noqa: E731
    sel = ours()
    vals_ours = logits.gather(1, sel.clamp_min(0).long()).masked_fill(sel < 0, float("-inf"))
    vals_ref = refn().values
    err = rel_err(vals_ours.sort(dim=1, descending=True).values, vals_ref)
    ok &= row("topk (values)", timed(ours, a.reps, dev), timed(refn, a.reps, dev), None, err, tol["logits"])

    # fused indexer + top-k vs logits then top-k: the same indices, bit for bit
    ours = lambda: compat.indexer_topk(qi, (ki, ksc), w, ks, ke, k)  # noqa: E731
    same = torch.equal(ours(), sel)
    ok &= row("fused indexer+topk (==)", timed(ours, a.reps, dev), None, None, 0.0 if same else math.inf, 0.0)

    # sparse FP8 decode: flash_mla_with_kvcache over 656 B records
    B, n = c["batch"], c["next_n"]
    blocks = max(1, c["s_kv"] // 64)
    rows = torch.randn(blocks * 64, 576, generator=gen)
    cache = dsa.ops.mla_cache_pack(rows).view(blocks, 64, 1, 656).to(dev)
    qd = torch.randn(B, n, c["h_q"], 576, generator=gen).bfloat16().to(dev)
    idx_d = torch.randint(-1, blocks * 64, (B, n, k), generator=gen, dtype=torch.int32).to(dev)
    sched, splits = compat.get_mla_metadata()
    ours = lambda: compat.flash_mla_with_kvcache(qd, cache, None, None, 512, sched, splits,  # noqa: E731
                                                 softmax_scale=V32_SCALE, is_fp8_kvcache=True, indices=idx_d)
    # the reference dequantises the records itself: e4m3 · block scale | bf16 RoPE (the 656 B layout)
    nope = cache.view(-1, 656)[:, :512].contiguous().view(torch.float8_e4m3fn).float()
    sc = cache.view(-1, 656)[:, 512:528].contiguous().view(torch.float32).repeat_interleave(128, dim=1)
    rope = cache.view(-1, 656)[:, 528:].contiguous().view(torch.bfloat16).float()
    kv_rows = torch.cat([nope * sc, rope], dim=1)
    refn = lambda: ref_sparse_fwd(qd.view(B * n, c["h_q"], 576), kv_rows, idx_d.view(B * n, k), V32_SCALE, 512)  # noqa: E731
    out_d, lse_d = ours()
    r_out, r_lse = refn()
    err = max(rel_err(out_d.view(B * n, c["h_q"], 512), r_out), rel_err(lse_d.transpose(1, 2).reshape(B * n, -1), r_lse))
    ok &= row("flash_mla_with_kvcache fp8", timed(ours, a.reps, dev), timed(refn, a.reps, dev), None, err,
              tol["attention"])
    print("all outputs agree" if ok else "an output DISAGREES")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
