#!/usr/bin/env python3
"""attention_torch.py — the torch baselines the attention-side GPU numbers are compared with, measured
in the same run as bench/gpu/attention_bench (docs/perf.md GPU section):

  * torch SDPA dense causal attention (cuDNN backend when available, else torch's default pick),
    bf16, MHA with 128 heads, d_qk = 192, d_v = 128 (the dense layer V3.1 ran) at L = 4096 and at
    L = 131072 (the layer-level comparison point of docs/perf.md);
  * a naive torch gather implementation of sparse MQA attention (bf16, H = 128, 576/512, K = 2048):
    kv[indices] gathered per query chunk, scores, softmax, P·V — at FlashMLA's case T = 4096, S = 8192.

FLOPs: dense causal 2·(L²/2)·H·(d_qk + d_v); sparse 2·T·K·H·(d_qk + d_v) (FlashMLA).
Median of `reps` CUDA-event-timed runs after one warm-up. Inputs random normal.
Usage: attention_torch.py [quick]
"""
import sys

import torch
import torch.nn.functional as F


def time_ms(fn, reps):
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


def report(op, shape, ms, flop):
    print(f"{op:<26} {shape:<44} {ms * 1e3:12.1f} us {flop / ms / 1e9:9.2f} TFLOP/s", flush=True)


def sdpa_causal(L, H=128, dqk=192, dv=128, reps=3):
    q = torch.randn(1, H, L, dqk, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1, H, L, dqk, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(1, H, L, dv, device="cuda", dtype=torch.bfloat16)
    scale = dqk ** -0.5
    flop = 2.0 * (L * L / 2) * H * (dqk + dv)
    from torch.nn.attention import SDPBackend, sdpa_kernel
    for name, backends in (("cudnn", [SDPBackend.CUDNN_ATTENTION]), ("default", None)):
        try:
            if backends is None:
                fn = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
            else:
                def fn():
                    with sdpa_kernel(backends):
                        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
            ms = time_ms(fn, reps)
            report(f"torch_sdpa_{name}", f"causal L={L} H={H} {dqk}/{dv} bf16 MHA", ms, flop)
            return ms
        except Exception as e:  # backend not available for this shape: try the next one
            print(f"torch_sdpa_{name}: unavailable ({type(e).__name__}: {str(e)[:120]})", flush=True)
    return None


def gather_sparse(T, S, K, H=128, dqk=576, dv=512, chunk=256, reps=3):
    q = torch.randn(T, H, dqk, device="cuda", dtype=torch.bfloat16)
    kv = torch.randn(S, dqk, device="cuda", dtype=torch.bfloat16)
    idx = torch.randint(0, S, (T, K), device="cuda", dtype=torch.int64)
    scale = 0.1352
    out = torch.empty(T, H, dv, device="cuda", dtype=torch.bfloat16)

    def fn():
        for t0 in range(0, T, chunk):
            kc = kv[idx[t0:t0 + chunk]]                                      # [c, K, dqk]
            s = torch.bmm(q[t0:t0 + chunk], kc.transpose(1, 2)).float() * scale   # [c, H, K]
            p = torch.softmax(s, dim=-1).to(torch.bfloat16)
            out[t0:t0 + chunk] = torch.bmm(p, kc[:, :, :dv])
    ms = time_ms(fn, reps)
    report("torch_gather_sparse", f"T={T} S={S} K={K} H={H} {dqk}/{dv} bf16", ms, 2.0 * T * K * H * (dqk + dv))
    return ms


def main():
    quick = len(sys.argv) > 1 and sys.argv[1] == "quick"
    print(f"torch {torch.__version__}, device {torch.cuda.get_device_name()}", flush=True)
    div = 8 if quick else 1
    gather_sparse(4096 // div, 8192 // div, 2048 // div)
    sdpa_causal(4096 // div)
    ms_128k = sdpa_causal(131072 // (div * 4 if quick else 1))
    if ms_128k is not None and not quick:
        print(f"layer target: DSA attention part at L=128K must take <= {ms_128k / 3:.1f} ms "
              f"(1/3 of SDPA) together with the indexer", flush=True)


if __name__ == "__main__":
    main()
