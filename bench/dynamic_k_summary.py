#!/usr/bin/env python3
"""dynamic_k_summary.py RUN [RUN ...] — the matched-budget comparison of `dsa eval --dynamic-k` over
several runs (seeds) of the same recipe: each dynamic policy's PPL and recall against the fixed-k
curve of the same run, interpolated (linear in log k) at the policy's measured average k; then the mean
of those differences over the runs, next to the run-to-run spread of the fixed-k numbers themselves.
Reads RUN/eval-dynamic/dynamic_k.csv; prints a markdown table (docs/perf.md "Dynamic k")."""
import csv
import math
import statistics
import sys

ENTROPY_SCALES = [0.25, 0.5, 1, 2, 4]   # src/train/eval_dynamic_k.cpp kEntropyScales


def load(run):
    with open(f"{run}/eval-dynamic/dynamic_k.csv", newline="") as f:
        return list(csv.DictReader(f))


def interp(curve, x, key):
    """curve: fixed rows sorted by avg_k; linear in log(avg_k); None outside the curve."""
    pts = [(math.log(float(r["avg_k"])), float(r[key])) for r in curve]
    lx = math.log(x)
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x0 <= lx <= x1:
            return y0 + (y1 - y0) * (lx - x0) / (x1 - x0)
    return None


def main(runs):
    tables = [load(r) for r in runs]
    # Rows are matched by (family, position in the family's sweep): the entropy policy's fitted a, b
    # differ from run to run, the sweep does not.
    def keyed(t):
        seen, out = {}, {}
        for r in t:
            i = seen.get(r["family"], 0)
            seen[r["family"]] = i + 1
            out[(r["family"], i)] = r
        return out
    keyed_tables = [keyed(t) for t in tables]
    policies = [k for k in keyed_tables[0] if k[0] != "fixed"]
    print(f"runs: {', '.join(runs)}\n")
    print("| policy | avg k (runs) | PPL − fixed-k PPL at that avg k | recall − fixed-k recall | passkey (all runs) | fixed k at that avg k: PPL / recall run-to-run sd |")
    print("| --- | --- | --- | --- | --- | --- |")
    for pol in policies:
        ks, dppl, drec, fppl, frec, hits, trials = [], [], [], [], [], 0, 0
        name = keyed_tables[0][pol]["policy"] if pol[0] != "entropy" else f"entropy, fitted a × {ENTROPY_SCALES[pol[1]]}"
        for t, kt in zip(tables, keyed_tables):
            row = kt[pol]
            curve = sorted((r for r in t if r["family"] == "fixed"), key=lambda r: float(r["avg_k"]))
            k = float(row["avg_k"])
            p, rc = interp(curve, k, "ppl"), interp(curve, k, "recall")
            ks.append(k)
            hits += int(row["passkey_correct"])
            trials += int(row["passkey_trials"])
            if p is None:
                continue
            dppl.append(float(row["ppl"]) - p)
            drec.append(float(row["recall"]) - rc)
            fppl.append(p)
            frec.append(rc)
        if not dppl:
            print(f"| {name} | {min(ks):.1f}–{max(ks):.1f} | outside the fixed-k curve | | {hits}/{trials} | |")
            continue
        sd = lambda v: statistics.stdev(v) if len(v) > 1 else float("nan")
        print(f"| {name} | {min(ks):.1f}–{max(ks):.1f} | {statistics.mean(dppl):+.3f} [{min(dppl):+.3f}, {max(dppl):+.3f}] | "
              f"{statistics.mean(drec):+.4f} [{min(drec):+.4f}, {max(drec):+.4f}] | {hits}/{trials} | {sd(fppl):.3f} / {sd(frec):.4f} |")
    print("\nfixed k (avg k, PPL, recall, passkey) per run:")
    for run, t in zip(runs, tables):
        cells = [f"{r['budget']}: {float(r['avg_k']):.1f} / {float(r['ppl']):.3f} / {float(r['recall']):.4f} / "
                 f"{r['passkey_correct']}/{r['passkey_trials']}" for r in t if r["family"] == "fixed"]
        print(f"  {run}: " + "; ".join(cells))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: dynamic_k_summary.py RUN [RUN ...]")
    main(sys.argv[1:])
