#!/usr/bin/env bash
# tools/gpu/train_gpu.sh — the training recipe on a GPU machine, against the same machine's CPU, in one
# run (docs/perf.md "Training on the GPU"): the GPU rows of the model-layer ops and the model executor,
# `make demo`'s pipeline with --device cuda, the same pretraining steps on the host CPU (speed and the
# loss curve side by side), and the retrieval recipe at several times the demo's budget.
# Run from the repository root. Inputs (all optional):
#   DSA_BIN      folder with the prebuilt dsa + dsa_tests (built for sm_90a on another machine) [.gpu-prof/bin]
#   DSA_LIB      shared libraries the image lacks (BLIS, SentencePiece)                       [.gpu-prof/lib]
#   DSA_DATA     corpus folder with txt/.complete (scripts/fetch_corpus.sh output; the device has no network)
#                                                                                              [.gpu-data]
#   DSA_SCALES   retrieval-recipe budgets, multiples of 2400 pretraining steps  ["4 16"]
# Logs: $OUT/tests.log, demo_gpu.log, cpu_vs_gpu.log, retrieval.log (+ summary.txt).
# shellcheck source=tools/gpu/prebuilt_env.sh
. "$(dirname "$0")/prebuilt_env.sh"
SCALES=${DSA_SCALES:-"4 16"}
WORK=/tmp/dsa_train_gpu_runs
rm -rf "$WORK"; mkdir -p "$WORK/build"
ln -s "$BIN/dsa" "$WORK/build/dsa"
stage() { echo "=== $* ($(date -u +%H:%M:%S))" | tee -a "$OUT/summary.txt"; }

stage "env"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; nproc; date -u; } | tee -a "$OUT/summary.txt"

stage "tests: model-layer rows on the GPU, the model executor"
timeout 300 "$BIN/dsa_tests" --gtest_filter='*linear*:*rmsnorm*:*layernorm*:*swiglu*:*embedding*:*cross_entropy*:ModelExecCuda*' \
  >"$OUT/tests.log" 2>&1
echo "tests exit $?" | tee -a "$OUT/summary.txt"
grep -E "^\[  (FAILED|PASSED|SKIPPED) |tests from .* ran" "$OUT/tests.log" | tee -a "$OUT/summary.txt"

stage "demo pipeline on the GPU (DSA_DEMO_DEVICE=cuda)"
OMP_NUM_THREADS=$(nproc) DSA_DEMO_DEVICE=cuda DSA_DEMO_DATA="$DATA" DSA_DEMO_RUN="$WORK/demo_gpu" \
  timeout 400 "$ROOT/scripts/demo.sh" "$WORK/build" >"$OUT/demo_gpu.log" 2>&1
echo "demo exit $?" | tee -a "$OUT/summary.txt"
cat "$WORK/demo_gpu/timings.txt" >>"$OUT/summary.txt" 2>/dev/null
grep -E "ratio|recall|passkey|all |prefill|decode" "$OUT/demo_gpu.log" | tail -20 >>"$OUT/summary.txt"

stage "the same 200 pretraining steps (the 2-head demo config, a 200-step schedule): host CPU ($(nproc) threads) vs GPU"
PRE="--stage pretrain --data $DATA/txt --tokenizer $WORK/demo_gpu/tokenizer.model --config $ROOT/scripts/demo_model.json --topk 32
     --heads 2 --kv-lora 64 --shared-embedding 2 --steps 200 --lr 6e-3 --synthetic 0.5 --seq-len 256 --batch 4 --checkpoint-every 100000 --no-progress --no-plots"
{
  for dev in cuda cpu; do
    t0=$(date +%s.%N)
    # shellcheck disable=SC2086
    OMP_NUM_THREADS=$(nproc) timeout 300 "$BIN/dsa" train --run "$WORK/speed_$dev" $PRE --device $dev 2>&1 | tail -1
    t1=$(date +%s.%N)
    echo "$dev: 200 steps in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s (process wall, corpus load included)"
    awk -F, 'NR > 1 && $1 > 20 { s += $8; n++ } END { printf "%s: mean step %.4f s over steps 21-200, %.0f tokens/s\n", dev, s / n, 1024 * n / s }' \
      dev=$dev "$WORK/speed_$dev/pretrain/metrics.csv"
  done
  echo "loss at steps 1, 50, 100, 200 (GPU | CPU):"
  for s in 1 50 100 200; do
    g=$(awk -F, -v s=$s '$1 == s { print $3 }' "$WORK/speed_cuda/pretrain/metrics.csv")
    c=$(awk -F, -v s=$s '$1 == s { print $3 }' "$WORK/speed_cpu/pretrain/metrics.csv")
    echo "  step $s: $g | $c"
  done
} >"$OUT/cpu_vs_gpu.log" 2>&1
cat "$OUT/cpu_vs_gpu.log" >>"$OUT/summary.txt"

# The retrieval recipe of docs/perf.md (kv_lora 128, no shared embedding, lr 3e-3, synthetic
# curriculum), every stage's steps × scale, on the GPU.
for scale in $SCALES; do
  stage "retrieval recipe at ${scale}x the demo's pretraining"
  R="$WORK/retrieval_$scale"
  C="--run $R --checkpoint-every 100000 --seq-len 256 --batch 4 --device cuda --no-progress --no-plots"
  {
    # shellcheck disable=SC2086
    timeout 500 "$BIN/dsa" train $C --stage pretrain --data "$DATA/txt" --tokenizer "$WORK/demo_gpu/tokenizer.model" \
      --config "$ROOT/scripts/demo_model.json" --heads 2 --kv-lora 128 --topk 32 --steps $((2400 * scale)) --lr 3e-3 --synthetic 0.5 \
      --synthetic-mix 2,1,1 --synthetic-min-len 48 --synthetic-ramp $((150 * scale)) --synthetic-first $((375 * scale)) &&
    timeout 200 "$BIN/dsa" train $C --stage warmup --steps $((300 * scale)) --indexer-lr 1e-3 --synthetic 0.5 &&
    timeout 200 "$BIN/dsa" train $C --stage sparse --topk 32 --steps $((300 * scale)) --lr 5e-4 --indexer-lr 1e-3 --synthetic 0.5 &&
    OMP_NUM_THREADS=$(nproc) timeout 300 "$BIN/dsa" eval --run "$R" --device cuda --topk 32 --seq-len 256 --val-sequences 8 \
      --trials 8 --speed-context 2048 --decode-tokens 8 --no-plots
  } >>"$OUT/retrieval.log" 2>&1
  echo "retrieval x$scale exit $?" | tee -a "$OUT/summary.txt"
  grep -E "done in|ratio|recall|all |^ +(128|256|512) " "$OUT/retrieval.log" | tail -12 >>"$OUT/summary.txt"
done
stage "end"
