#!/usr/bin/env bash
# dynamic_k_instructions.sh BUILD MODEL [TEXT] — the cost of the ragged selection path counted in
# instructions (valgrind callgrind: the same count for the same binary and inputs whatever else the
# machine runs), where wall times on a shared machine are too noisy to resolve a few percent
# (docs/perf.md "Dynamic k"). `dsa generate` on ~2500 tokens of held-out text, 32 greedy tokens, fp32
# caches and indexer, one thread, twice: fixed k = 32, and the same 32 keys per row through the
# per-row budget path (a 64-wide selection buffer, topk_length = 32, −1 fill). Prints each run's total
# instructions and the ratio.
set -euo pipefail
BUILD=${1:-build}
MODEL=${2:-runs/demo}
TEXT=${3:-data/txt/austen/persuasion.txt}
DSA="$BUILD/dsa"
[ -x "$DSA" ] || { echo "dynamic_k_instructions: $DSA not found" >&2; exit 1; }
command -v valgrind >/dev/null || { echo "dynamic_k_instructions: valgrind not found" >&2; exit 1; }
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive
PROMPT=$(head -c 6000 "$TEXT")
COMMON=(-m "$MODEL" -n 32 --kv-cache fp32 --indexer fp32 --chunk 256 --no-stream)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
count() {  # name flags… → total instructions of the run
  local name=$1
  shift
  valgrind --tool=callgrind --callgrind-out-file="$WORK/$name.out" "$DSA" generate "${COMMON[@]}" "$@" -p "$PROMPT" \
    >"$WORK/$name.log" 2>&1
  grep -q '^attended keys per query row and layer' "$WORK/$name.log" ||
    { echo "dynamic_k_instructions: $name failed:" >&2; tail -5 "$WORK/$name.log" >&2; exit 1; }
  callgrind_annotate "$WORK/$name.out" | sed -n 's/^ *\([0-9,]*\) .*PROGRAM TOTALS.*/\1/p' | tr -d ,
}
fixed=$(count fixed --attn-topk 32)
ragged=$(count ragged --attn-topk 64 --topk-policy fixed --topk-max 32)
keys=$(sed -n 's/^attended keys per query row and layer: //p' "$WORK/ragged.log")
echo "instructions, fixed k = 32: $fixed; per-row budget path (32 of a 64-wide buffer): $ragged (keys per row and layer: $keys)"
awk -v a="$fixed" -v b="$ragged" 'BEGIN { printf "ragged / fixed = %.5f (%+.3f %%)\n", b / a, 100 * (b / a - 1) }'
