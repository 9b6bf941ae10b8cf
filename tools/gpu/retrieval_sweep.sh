#!/usr/bin/env bash
# tools/gpu/retrieval_sweep.sh — what passkey retrieval needs in the demo's model family, on the GPU
# (docs/perf.md "Training on the GPU"): the retrieval recipe (kv_lora 128, no shared embedding,
# lr 3e-3, synthetic curriculum; 2 heads as in the 2-head demo config) at SCALE × the demo's steps, one architecture or data change per
# variant, each run pretrain → warm-up → sparse → eval on `--device cuda`.
# Inputs as tools/gpu/train_gpu.sh (DSA_BIN, DSA_LIB, DSA_DATA), plus DSA_TOKENIZER (a trained
# tokenizer.model), DSA_SCALE (default 4), DSA_VARIANTS (names from the table below, default all).
# Logs: $OUT/sweep.log (every eval table) and $OUT/sweep_summary.txt.
# shellcheck source=tools/gpu/prebuilt_env.sh
. "$(dirname "$0")/prebuilt_env.sh"
TOK=${DSA_TOKENIZER:?DSA_TOKENIZER must name a tokenizer.model}
SCALE=${DSA_SCALE:-4}
export OMP_NUM_THREADS=$(nproc)
WORK=/tmp/dsa_sweep_runs
rm -rf "$WORK"; mkdir -p "$WORK"

# name → extra pretraining flags (appended after the recipe's, so they override it)
declare -A VARIANT=(
  [base]=""
  [heads4]="--heads 4"
  [layers3]="--layers 3"
  [wide256]="--hidden 256 --intermediate 768 --q-lora 192 --kv-lora 256"
  [ctx512]="--seq-len 512 --batch 2"
  [passkey_heavy]="--synthetic-mix 4,1,1"
  [heads4_passkey_heavy]="--heads 4 --synthetic-mix 4,1,1"
)
NAMES=${DSA_VARIANTS:-"base heads4 layers3 wide256 ctx512 passkey_heavy"}
for name in $NAMES; do
  extra=${VARIANT[$name]-}
  R="$WORK/$name"
  ctx=256
  [ "$name" = ctx512 ] && ctx=512
  C="--run $R --checkpoint-every 100000 --device cuda --no-progress --no-plots"
  t0=$(date +%s)
  {
    echo "### variant $name: $extra (scale $SCALE)"
    # shellcheck disable=SC2086
    timeout 300 "$BIN/dsa" train $C --stage pretrain --data "$DATA/txt" --tokenizer "$TOK" --config "$ROOT/scripts/demo_model.json" \
      --heads 2 --kv-lora 128 --topk 32 --seq-len 256 --batch 4 --steps $((2400 * SCALE)) --lr 3e-3 --synthetic 0.5 --synthetic-mix 2,1,1 \
      --synthetic-min-len 48 --synthetic-ramp $((150 * SCALE)) --synthetic-first $((375 * SCALE)) $extra &&
    timeout 120 "$BIN/dsa" train $C --stage warmup --seq-len $ctx --batch $((1024 / ctx)) --steps $((300 * SCALE)) --indexer-lr 1e-3 --synthetic 0.5 &&
    timeout 120 "$BIN/dsa" train $C --stage sparse --seq-len $ctx --batch $((1024 / ctx)) --topk 32 --steps $((300 * SCALE)) --lr 5e-4 \
      --indexer-lr 1e-3 --synthetic 0.5 &&
    timeout 120 "$BIN/dsa" eval --run "$R" --device cuda --topk 32 --seq-len 256 --val-sequences 8 --trials 8 --speed-context 512 \
      --decode-tokens 2 --no-plots
  } >>"$OUT/sweep.log" 2>&1
  rc=$?
  {
    echo "== $name ($extra): exit $rc, $(( $(date +%s) - t0 )) s"
    sed -n "/### variant $name:/,\$p" "$OUT/sweep.log" | grep -E "ratio at|recall at|per key token|^ +(128|256|512) " | head -8
  } | tee -a "$OUT/sweep_summary.txt"
done
