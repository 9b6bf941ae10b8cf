#!/usr/bin/env bash
# run_bench.sh BUILD — the CPU scaling benchmark behind `make bench` (docs/perf.md, CPU section).
# One attention layer forward, H=16 Dqk=192 Dv=128 HI=16 DI=64 K=512, dense causal vs DSA (fused
# FP8 indexer + top-k as in V3.2, its quantisation timed, then sparse attention; and the same with
# an fp32 indexer, "dsa_fp32"), each (mode, L) in its own process so its peak RSS
# is its own. Then the unfused indexer (logits [L, L] + top-k) at one large L for memory, and
# cblas_sgemm of BLIS and OpenBLAS (the libraries found) as the GFLOP/s yardstick. Writes BUILD/bench/cpu_scaling.{tsv,md} and a
# log-log plot of time vs L. The table names the CPU model and the ISA path of each op
# (dsa_bench_cpu --isa = dsa::cpu::isa_report(); DSA_CPU_ISA=generic|avx2|avx512|neon forces a path).
#
# Environment:
#   DSA_BENCH_L          sequence lengths (default "1024 2048 4096 8192 16384 32768")
#   DSA_BENCH_UNFUSED_L  L of the unfused-indexer memory run (default 16384; 0 skips it)
#   DSA_BENCH_GEMM_N     sgemm size n×n×n (default 2048)
#   DSA_BENCH_PLOT       plot path (default BUILD/bench/perf_cpu_scaling.png)
#   DSA_BENCH_TIMEOUT    seconds allowed per process (default 1200)
#   DSA_BENCH_NATIVE     0 (default): the portable library of BUILD as it is — the binary that ships,
#                        its kernels chosen at run time (include/dsa/cpu_isa.h); 1: build the
#                        benchmark and the library with -march=native in BUILD/native (DSA_NATIVE=ON)
#   DSA_CPU_ISA          generic | avx2 | avx512: force an ISA path (default: the best of the CPU)
#   OMP_NUM_THREADS      threads of the dsa kernels (default: all cores)
set -euo pipefail
BUILD=${1:-build}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
LS=${DSA_BENCH_L:-"1024 2048 4096 8192 16384 32768"}
LS=${LS//,/ }
UNFUSED_L=${DSA_BENCH_UNFUSED_L:-16384}
GEMM_N=${DSA_BENCH_GEMM_N:-2048}
TIMEOUT=${DSA_BENCH_TIMEOUT:-1200}
OUT="$BUILD/bench"
PLOT=${DSA_BENCH_PLOT:-"$OUT/perf_cpu_scaling.png"}
NATIVE=${DSA_BENCH_NATIVE:-0}

if [ "$NATIVE" = "1" ]; then
  NB="$BUILD/native"
  cmake -S "$ROOT" -B "$NB" -DCMAKE_BUILD_TYPE=Release -DDSA_NATIVE=ON -DDSA_BUILD_TESTS=OFF \
        -DDSA_ENABLE_CUDA=OFF >/dev/null
else
  NB="$BUILD"
fi
cmake --build "$NB" --target dsa_bench_cpu -j "$(nproc)"
BIN="$NB/bench/dsa_bench_cpu"
GEMM_BINS=()
for lib in blis openblas; do
  if cmake --build "$NB" --target "dsa_bench_sgemm_$lib" -j "$(nproc)" >/dev/null 2>&1; then
    GEMM_BINS+=("$NB/bench/dsa_bench_sgemm_$lib")
  fi
done
mkdir -p "$OUT"
TSV="$OUT/cpu_scaling.tsv"
MD="$OUT/cpu_scaling.md"

"$BIN" --header > "$TSV"
ISA_REPORT=$("$BIN" --isa)
echo "$ISA_REPORT" >&2
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
run() {  # run MODE L: one process, its line appended to the TSV (a failure or timeout is reported)
  echo "bench: $1 L=$2 ..." >&2
  local line
  if line=$(timeout "$TIMEOUT" "$BIN" "$1" "$2"); then
    echo "$line" >> "$TSV"
    echo "  $line" >&2
  else
    echo "bench: $1 $2 FAILED or exceeded ${TIMEOUT}s" >&2
  fi
}

# The yardstick: cblas_sgemm of each BLAS library found. OpenBLAS 0.3.21 does not know every recent
# CPU model and then falls back to a generic SSE3 ("Prescott") kernel; its row is measured both as
# detected and with the core type forced to the best one the CPU supports (only these sgemm runs get
# OPENBLAS_CORETYPE). BLIS picks its kernel from the CPU's feature bits; dsa links BLIS by default.
FORCE_CORE=""
gemm() {
  local bin
  for bin in "${GEMM_BINS[@]}"; do
    case "$bin" in
      *openblas)
        local core
        core=$(OPENBLAS_VERBOSE=2 "$bin" 64 2>&1 | sed -n 's/^Core: //p' | head -n1)
        if [ -z "${OPENBLAS_CORETYPE:-}" ]; then
          if grep -qw avx512f /proc/cpuinfo; then FORCE_CORE=SkylakeX; elif grep -qw avx2 /proc/cpuinfo; then FORCE_CORE=Haswell; fi
          [ "$FORCE_CORE" = "$core" ] && FORCE_CORE=""
        fi
        "$bin" "$GEMM_N" | sed "s/^sgemm_OpenBLAS/sgemm_OpenBLAS-${core:-auto}/" >> "$TSV"
        if [ -n "$FORCE_CORE" ]; then
          OPENBLAS_CORETYPE=$FORCE_CORE "$bin" "$GEMM_N" | sed "s/^sgemm_OpenBLAS/sgemm_OpenBLAS-forced-$FORCE_CORE/" >> "$TSV"
        fi ;;
      *) "$bin" "$GEMM_N" >> "$TSV" ;;
    esac
  done
}

gemm
for L in $LS; do
  run dsa "$L"
  run dsa_fp32 "$L"
  run dense "$L"
done
if [ "$UNFUSED_L" != "0" ]; then
  run fused "$UNFUSED_L"
  run unfused "$UNFUSED_L"
fi
gemm   # again at the end: the yardstick under the same load

# ── table ──
{
  echo "Machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, OMP_NUM_THREADS=${OMP_NUM_THREADS:-unset}, DSA_BENCH_NATIVE=$NATIVE"
  echo "Date: $(date -u '+%Y-%m-%d %H:%M UTC'); load average (1/5/15 min) at start: $LOAD_START, at end: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "ISA paths (dsa_bench_cpu --isa):"
  echo '```'
  echo "$ISA_REPORT"
  echo '```'
  echo
  awk -F'\t' '
    NR == 1 { next }
    $1 ~ /^sgemm_/ { name = substr($1, 7); if (!(name in gemm)) { gemm[name] = ""; gnames[++ng] = name }
                     gemm[name] = gemm[name] (gemm[name] != "" ? ", " : "") sprintf("%.1f", $8); gn = $2
                     if (name ~ /^BLIS/ && $8 > blis_best) blis_best = $8
                     if (name ~ /^BLIS/ && $13 > 0 && 2 * $2 * $2 * $2 / $13 / 1e9 > blis_cpu) blis_cpu = 2 * $2 * $2 * $2 / $13 / 1e9
                     next }
    $1 == "dense" { dt[$2] = $6; dg[$2] = $8; dp[$2] = $10; dw[$2] = $11; dc[$2] = ($13 > 0 ? $8 * $5 / $13 : 0)
                    if (!($2 in seen)) { seen[$2] = 1; Ls[++n] = $2 + 0 }; next }
    $1 == "dsa" { it[$2] = $4; at[$2] = $5; st[$2] = $6; ig[$2] = $7; ag[$2] = $8; sp[$2] = $10; sw[$2] = $11
                  ic[$2] = ($12 > 0 ? $7 * $4 / $12 : 0); ac[$2] = ($13 > 0 ? $8 * $5 / $13 : 0)
                  if (!($2 in seen)) { seen[$2] = 1; Ls[++n] = $2 + 0 }; next }
    $1 == "dsa_fp32" { ft32[$2] = $6; fi32[$2] = $4; fg32[$2] = $7; next }
    $1 == "unfused" { uL = $2; ut = $4; ui = $9; up = $10; uw = $11; next }
    $1 == "fused" { fL = $2; ft = $4; fp = $10; fw = $11; next }
    END {
      printf "| L | dense (s) | DSA (s) = FP8 indexer + sparse | speed-up | dense GFLOP/s | indexer GFLOP/s | sparse GFLOP/s | dense peak / work MiB | DSA peak / work MiB | DSA, fp32 indexer (s) = indexer + sparse | speed-up | fp32 indexer GFLOP/s |\n"
      printf "|---|---|---|---|---|---|---|---|---|---|---|---|\n"
      for (i = 2; i <= n; i++)  # insertion sort (portable awk: no asorti)
        for (j = i; j > 1 && Ls[j - 1] > Ls[j]; j--) { tmp = Ls[j]; Ls[j] = Ls[j - 1]; Ls[j - 1] = tmp }
      for (i = 1; i <= n; i++) {
        L = Ls[i]
        ratio = (L in dt && L in st && st[L] > 0) ? sprintf("%.2f×", dt[L] / st[L]) : "–"
        ratio32 = (L in dt && L in ft32 && ft32[L] > 0) ? sprintf("%.2f×", dt[L] / ft32[L]) : "–"
        printf "| %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", L,
          (L in dt) ? sprintf("%.3f", dt[L]) : "–",
          (L in st) ? sprintf("%.3f = %.3f + %.3f", st[L], it[L], at[L]) : "–",
          ratio,
          (L in dg) ? sprintf("%.1f", dg[L]) : "–",
          (L in ig) ? sprintf("%.1f", ig[L]) : "–",
          (L in ag) ? sprintf("%.1f", ag[L]) : "–",
          (L in dp) ? sprintf("%.0f / %.0f", dp[L], dw[L]) : "–",
          (L in sp) ? sprintf("%.0f / %.0f", sp[L], sw[L]) : "–",
          (L in ft32) ? sprintf("%.3f = %.3f + %.3f", ft32[L], fi32[L], ft32[L] - fi32[L]) : "–",
          ratio32,
          (L in fg32) ? sprintf("%.1f", fg32[L]) : "–"
      }
      printf "\ncblas_sgemm %d×%d×%d, GFLOP/s at the start and the end of the run:", gn, gn, gn
      for (i = 1; i <= ng; i++) printf " %s: %s;", gnames[i], gemm[gnames[i]]
      printf "\n"
      if (blis_best > 0) {
        printf "\nAgainst the faster of the two BLIS sgemm runs (%.1f GFLOP/s), and GFLOP per CPU-second (user + system time of\n", blis_best
        printf "the process: what contention from other jobs distorts least; on an idle machine it is the wall rate ÷ threads):\n"
        if (blis_cpu > 0) printf "BLIS sgemm per CPU-second: %.1f GFLOP/CPU-s (the better of its two runs).\n", blis_cpu
        printf "\n"
        printf "| L | dense %% of sgemm | FP8 indexer %% | sparse %% | fp32 indexer %% | dense GFLOP/CPU-s | FP8 indexer GFLOP/CPU-s | sparse GFLOP/CPU-s |\n"
        printf "|---|---|---|---|---|---|---|---|\n"
        for (i = 1; i <= n; i++) {
          L = Ls[i]
          printf "| %d | %s | %s | %s | %s | %s | %s | %s |\n", L,
            (L in dg) ? sprintf("%.0f %%", 100 * dg[L] / blis_best) : "–",
            (L in ig) ? sprintf("%.0f %%", 100 * ig[L] / blis_best) : "–",
            (L in ag) ? sprintf("%.0f %%", 100 * ag[L] / blis_best) : "–",
            (L in fg32) ? sprintf("%.0f %%", 100 * fg32[L] / blis_best) : "–",
            (L in dc && dc[L] > 0) ? sprintf("%.1f", dc[L]) : "–",
            (L in ic && ic[L] > 0) ? sprintf("%.1f", ic[L]) : "–",
            (L in ac && ac[L] > 0) ? sprintf("%.1f", ac[L]) : "–"
        }
      }
      if (uL || fL) {
        printf "\nIndexer + top-k alone at L = %d, K = 512 (own processes; layer inputs %.0f MiB):\n\n", (uL ? uL : fL), ui
        printf "| indexer path | time (s) | peak RSS MiB | work MiB (peak − inputs) |\n|---|---|---|---|\n"
        if (fL) printf "| fused indexer_topk | %.3f | %.0f | %.0f |\n", ft, fp, fw
        if (uL) printf "| unfused indexer_logits [L,L] + topk_select | %.3f | %.0f | %.0f |\n", ut, up, uw
      }
    }' "$TSV"
} > "$MD"
cat "$MD"

# ── plot: time vs L, log-log ──
if command -v gnuplot >/dev/null; then
  awk -F'\t' '$1 == "dense" { print $2, $6 }' "$TSV" | sort -n > "$OUT/dense.dat"
  awk -F'\t' '$1 == "dsa" { print $2, $6, $4, $5 }' "$TSV" | sort -n > "$OUT/dsa.dat"
  gnuplot <<GP
set terminal pngcairo size 760,480 font ",10"
set output "$PLOT"
set logscale xy 2
set format y "%g"
set xlabel "sequence length L (T = S = L, causal)"
set ylabel "time of one layer forward (s)"
set title "CPU, one attention layer: dense causal vs DSA (H=16, Dqk=192, Dv=128, HI=16, DI=64, K=512)"
set key top left
set grid
plot "$OUT/dense.dat" using 1:2 with linespoints lw 2 title "dense attention", \
     "$OUT/dsa.dat" using 1:2 with linespoints lw 2 title "DSA total", \
     "$OUT/dsa.dat" using 1:3 with linespoints dt 2 title "  indexer + top-k (fused, FP8 incl. quantisation)", \
     "$OUT/dsa.dat" using 1:4 with linespoints dt 2 title "  sparse attention"
GP
  echo "plot: $PLOT"
else
  echo "gnuplot not found: no plot (scripts/install_deps.sh installs gnuplot-nox)" >&2
fi
