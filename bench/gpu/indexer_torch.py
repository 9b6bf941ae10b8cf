#!/usr/bin/env python3
"""indexer_torch.py — the torch baselines of the indexer-side GPU numbers (docs/perf.md GPU section),
measured in the same run as bench/gpu/indexer_bench (tools/gpu/run_all.sh):

  * torch.topk over 4096 rows x 131072 fp32 logits, k = 2048 (the top-k case of docs/perf.md);
  * a torch implementation of the indexer logits I = sum_h w * relu(q_h . k): bf16 matmul per query
    chunk ([chunk*HI, DI] x [DI, S]), relu, weighted head sum — at HI = 64, DI = 128, S = 131072 on a
    query subset (the [chunk, HI, S] intermediate is what a framework implementation must hold);
  * the same with torch._scaled_mm (fp8 e4m3 tensor cores) when it is available.

FLOPs: 2 * #pairs * HI * DI (DeepGEMM). Median of `reps` CUDA-event-timed runs after one warm-up.
Usage: indexer_torch.py [quick]
"""
import sys

import torch


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


def report(op, shape, ms, flop, nbytes):
    print(f"{op:<30} {shape:<46} {ms * 1e3:12.1f} us {flop / ms / 1e9:9.2f} TFLOP/s {nbytes / ms / 1e6:9.1f} GB/s",
          flush=True)


def main():
    quick = len(sys.argv) > 1 and sys.argv[1] == "quick"
    div = 8 if quick else 1
    reps = 3 if quick else 10
    dev = torch.device("cuda")
    print(f"device: {torch.cuda.get_device_name(0)} (torch {torch.__version__})")
    T, S, K = 4096 // div, 131072 // div, 2048 // (4 if quick else 1)
    torch.manual_seed(0)
    x = torch.rand(T, S, device=dev, dtype=torch.float32) * 2 - 1
    ms = time_ms(lambda: torch.topk(x, K, dim=1, largest=True, sorted=True), reps)
    report("torch.topk", f"T={T} S={S} K={K}", ms, 0, T * S * 4 + T * K * 8)
    del x
    torch.cuda.empty_cache()

    HI, DI = 64, 128
    Tq, chunk = 256 // (4 if quick else 1), 16
    q = torch.randn(Tq, HI, DI, device=dev, dtype=torch.bfloat16)
    k = torch.randn(S, DI, device=dev, dtype=torch.bfloat16)
    w = torch.randn(Tq, HI, device=dev, dtype=torch.float32)
    out = torch.empty(Tq, S, device=dev, dtype=torch.float32)

    def logits_bf16():
        for c in range(0, Tq, chunk):
            u = (q[c:c + chunk].reshape(-1, DI) @ k.t()).float().view(chunk, HI, S)
            out[c:c + chunk] = torch.einsum("ths,th->ts", torch.relu(u), w[c:c + chunk])

    ms = time_ms(logits_bf16, max(2, reps // 3))
    report("torch_indexer_logits_bf16", f"T={Tq} S={S} HI={HI} DI={DI}", ms, 2.0 * Tq * S * HI * DI,
           Tq * S * 4 + S * DI * 2)

    if hasattr(torch, "_scaled_mm") and hasattr(torch, "float8_e4m3fn"):
        try:
            q8 = q.to(torch.float8_e4m3fn).reshape(-1, DI)
            k8 = k.to(torch.float8_e4m3fn)
            one = torch.ones((), device=dev, dtype=torch.float32)

            def logits_fp8():
                for c in range(0, Tq, chunk):
                    a = q8[c * HI:(c + chunk) * HI]
                    u = torch._scaled_mm(a, k8.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
                    out[c:c + chunk] = torch.einsum("ths,th->ts", torch.relu(u.float().view(chunk, HI, S)),
                                                    w[c:c + chunk])

            ms = time_ms(logits_fp8, max(2, reps // 3))
            report("torch_indexer_logits_fp8mm", f"T={Tq} S={S} HI={HI} DI={DI}", ms, 2.0 * Tq * S * HI * DI,
                   Tq * S * 4 + S * DI)
            # The matmul alone (what a fused epilogue would leave): the tensor-core ceiling torch reaches.
            a = q8[: chunk * HI]
            ms = time_ms(lambda: torch._scaled_mm(a, k8.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16),
                         reps)
            report("torch_scaled_mm_fp8_only", f"M={chunk * HI} N={S} K={DI}", ms, 2.0 * chunk * HI * S * DI,
                   chunk * HI * S * 2)
        except Exception as e:  # noqa: BLE001 — report and go on: a baseline, not a requirement
            print(f"torch._scaled_mm unavailable: {e}")


if __name__ == "__main__":
    main()
