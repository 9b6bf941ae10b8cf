"""``python -m dsa.bench`` — bench/cpu_scaling.cpp (``dsa_bench_cpu``) through the torch ops: the same
layer (H = 16, Dqk = 192, Dv = 128, HI = 16, DI = 64, K = 512, one sequence of L tokens, causal
ranges), the same repetitions, timing rule, FLOP conventions and tab-separated columns, so the two
tables compare line by line and show what the Python / dispatcher layer costs.

    python -m dsa.bench {dense|dsa_fp32|fused|unfused} L      one line, as dsa_bench_cpu MODE L
    python -m dsa.bench --header                              the column names
    python -m dsa.bench --all L [L ...]                       header + every mode at each L, one process each

Mode ``dsa`` (the FP8 indexer) of the C++ benchmark quantises DI = 64 rows with its own loop; the library's
quantiser takes DI multiples of 128, so that mode is not offered here. Inputs are random normal with the
C++ benchmark's standard deviations (not its exact values: a different generator).
"""
import math
import os
import resource
import subprocess
import sys
import time

import torch

from . import ops

H, DQK, DV, HI, DI, TOPK = 16, 192, 128, 16, 64, 512     # bench/cpu_scaling.cpp's configuration
REPS_SMALL, SMALL_L = 3, 4096                             # 3 medians up to L = 4096, else 1 run
MIB = 1024.0 * 1024.0
MODES = ("dense", "dsa_fp32", "fused", "unfused")
HEADER = ("mode\tL\treps\tt_indexer_s\tt_attention_s\tt_total_s\tgflops_indexer\tgflops_attention\t"
          "rss_inputs_mib\trss_peak_mib\twork_mib\tcpu_indexer_s\tcpu_attention_s")


def _rss_now_mib():
    with open("/proc/self/statm") as f:
        resident = int(f.read().split()[1])
    return resident * os.sysconf("SC_PAGE_SIZE") / MIB


def _rss_peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0   # Linux: KiB


def _cpu_s():
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def _time_median(reps, fn):
    """Median wall and CPU seconds of fn over reps runs, after one warm-up when reps > 1."""
    if reps > 1:
        fn()
    t, c = [], []
    for _ in range(reps):
        t0, c0 = time.perf_counter(), _cpu_s()
        fn()
        t.append(time.perf_counter() - t0)
        c.append(_cpu_s() - c0)
    return sorted(t)[len(t) // 2], sorted(c)[len(c) // 2]


def _layer(L):
    def rnd(shape, seed, std):
        return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * std
    return dict(q=rnd((L, H, DQK), 1, 1.0), kv=rnd((L, DQK), 2, 1.0), iq=rnd((L, HI, DI), 3, 1.0),
                ik=rnd((L, DI), 4, 1.0), w=rnd((L, HI), 5, 1.0 / math.sqrt(HI)),
                ks=torch.zeros(L, dtype=torch.int32), ke=torch.arange(1, L + 1, dtype=torch.int32))


def run(mode, L):
    """One benchmark line (the columns of HEADER)."""
    if mode not in MODES:
        raise ValueError(f"dsa.bench: mode {mode!r} must be one of {', '.join(MODES)}")
    x = _layer(L)
    reps = REPS_SMALL if L <= SMALL_L else 1
    rss_inputs = _rss_now_mib()
    pairs = L * (L + 1) / 2
    scale = 1.0 / math.sqrt(DQK)
    t_i = t_a = c_i = c_a = f_i = f_a = 0.0
    with torch.inference_mode():
        if mode == "dense":
            t_a, c_a = _time_median(reps, lambda: ops.dense_attention(x["q"], x["kv"], x["ks"], x["ke"], scale, DV))
            f_a = 2.0 * H * (DQK + DV) * pairs
        elif mode == "dsa_fp32":
            box = {}
            t_i, c_i = _time_median(reps, lambda: box.update(
                idx=ops.indexer_topk(x["iq"], x["ik"], x["w"], x["ks"], x["ke"], TOPK)))
            t_a, c_a = _time_median(reps, lambda: ops.sparse_attention(x["q"], x["kv"], box["idx"], scale, DV))
            f_i, f_a = 2.0 * HI * DI * pairs, 2.0 * H * (DQK + DV) * L * TOPK
        elif mode == "fused":
            t_i, c_i = _time_median(reps, lambda: ops.indexer_topk(x["iq"], x["ik"], x["w"], x["ks"], x["ke"], TOPK))
            f_i = 2.0 * HI * DI * pairs
        else:
            t_i, c_i = _time_median(reps, lambda: ops.topk(
                ops.indexer_logits(x["iq"], x["ik"], x["w"], x["ks"], x["ke"]), TOPK, ks=x["ks"], ke=x["ke"]))
            f_i = 2.0 * HI * DI * pairs
    peak = _rss_peak_mib()

    def gflops(flop, t):
        return flop / t / 1e9 if t > 0 else 0.0

    return (f"{mode}\t{L}\t{reps}\t{t_i:.6f}\t{t_a:.6f}\t{t_i + t_a:.6f}\t{gflops(f_i, t_i):.2f}\t"
            f"{gflops(f_a, t_a):.2f}\t{rss_inputs:.1f}\t{peak:.1f}\t{peak - rss_inputs:.1f}\t{c_i:.6f}\t{c_a:.6f}")


def main(argv):
    usage = "usage: python -m dsa.bench {dense|dsa_fp32|fused|unfused} L | --header | --all L [L ...]"
    if argv[:1] == ["--header"]:
        print(HEADER)
        return 0
    if argv[:1] == ["--all"] and len(argv) > 1:
        print(HEADER, flush=True)
        for L in argv[1:]:
            for mode in MODES:   # one process per line: each peak RSS belongs to its configuration
                subprocess.run([sys.executable, "-m", "dsa.bench", mode, L], check=True)
        return 0
    if len(argv) != 2 or argv[0] not in MODES or not argv[1].isdigit() or int(argv[1]) < 1:
        print(usage, file=sys.stderr)
        return 2
    print(run(argv[0], int(argv[1])), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
