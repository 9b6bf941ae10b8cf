#!/usr/bin/env bash
# dynamic_k.sh BUILD RUN — per-row k (include/dsa/ops.h TopkPolicy) on a trained demo run
# (docs/perf.md "Dynamic k"):
#   1. the sparse stage retrained from RUN's warm-up checkpoint with other data-order seeds
#      (RUN-seed2, RUN-seed3), fixed k = 32 as in `make demo`: the seed-to-seed spread of every number;
#   2. the sparse stage trained with a per-row policy (RUN-mass: --topk 64 --topk-policy mass
#      --topk-p $DSA_DYNK_TRAIN_P), the policy it is evaluated with;
#   3. `dsa eval --dynamic-k` on each (fixed k vs mass / per-layer table / fitted entropy policies at
#      matched average k: PPL, recall, passkey, k per layer; prefill/decode at 8192 tokens),
#      results in <run>/eval-dynamic/ (dynamic_k.csv, ppl_vs_avg_k.png, summary.txt).
# RUN must hold a finished warm-up stage (runs/demo after `make demo`). The copies share its tokens.
# Environment: DSA_DYNK_SEEDS (default "2 3"), DSA_DYNK_TRAIN_P (default 0.9), DSA_DYNK_SKIP_TRAIN=1
# (evaluate the existing runs only).
set -euo pipefail
BUILD=${1:-build}
RUN=${2:-runs/demo}
DSA="$BUILD/dsa"
[ -x "$DSA" ] || { echo "dynamic_k: $DSA not found (build first)" >&2; exit 1; }
[ -f "$RUN/warmup/final" ] || { echo "dynamic_k: $RUN has no finished warm-up stage (run make demo)" >&2; exit 1; }
SEEDS=${DSA_DYNK_SEEDS:-"2 3"}
TRAIN_P=${DSA_DYNK_TRAIN_P:-0.9}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}   # as scripts/demo.sh: sleeping waits on a shared 2-core box
# The sparse stage and the evaluation of scripts/demo.sh.
SPARSE="--stage sparse --checkpoint-every 100 --seq-len 256 --batch 4 --steps 450 --lr 5e-4 --indexer-lr 1e-3 --synthetic 0.5 --no-progress"
EVAL="--seq-len 256 --val-sequences 8 --trials 4 --speed-context 8192 --decode-tokens 16 --dynamic-k"

# A copy of RUN up to its warm-up stage (the token cache and checkpoints are shared read-only).
fork() {
  local dst=$1
  rm -rf "$dst"
  mkdir -p "$dst"
  for f in data.json tokenizer.model tokenizer.vocab; do cp "$RUN/$f" "$dst/"; done
  cp -r "$RUN/pretrain" "$RUN/warmup" "$dst/"
  ln -s "$(cd "$RUN" && pwd)/tokens" "$dst/tokens"
}

if [ "${DSA_DYNK_SKIP_TRAIN:-0}" != 1 ]; then
  for s in $SEEDS; do
    fork "$RUN-seed$s"
    # shellcheck disable=SC2086
    /usr/bin/time -f "sparse stage seed $s: %e s" "$DSA" train --run "$RUN-seed$s" $SPARSE --topk 32 --seed "$s"
  done
  fork "$RUN-mass"
  # shellcheck disable=SC2086
  /usr/bin/time -f "sparse stage mass p=$TRAIN_P: %e s" "$DSA" train --run "$RUN-mass" $SPARSE --topk 64 --topk-policy mass --topk-p "$TRAIN_P"
fi
for r in "$RUN" $(for s in $SEEDS; do echo "$RUN-seed$s"; done) "$RUN-mass"; do
  echo "== $r"
  # shellcheck disable=SC2086
  "$DSA" eval --run "$r" --topk 32 $EVAL --out "$r/eval-dynamic" > "$r/eval-dynamic.txt"
  sed -n '/per-row k/,$p' "$r/eval-dynamic.txt"
done
# The matched-budget comparison over the fixed-k runs (seeds), then the policy-trained run alone.
python3 "$(dirname "$0")/dynamic_k_summary.py" "$RUN" $(for s in $SEEDS; do echo "$RUN-seed$s"; done)
python3 "$(dirname "$0")/dynamic_k_summary.py" "$RUN-mass"
