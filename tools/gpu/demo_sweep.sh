#!/usr/bin/env bash
# tools/gpu/demo_sweep.sh — `make demo`'s recipe (scripts/demo.sh, unchanged) at several step budgets and
# model sizes on one GPU: how many steps whole-key passkey retrieval needs, before a budget is tried in
# the 10-minute CPU demo (docs/perf.md "Training on the GPU"). The runs go side by side: each is
# launch-bound (a 5 ms step of tiny kernels), so they overlap on the GPU.
# Inputs as tools/gpu/train_gpu.sh (DSA_BIN, DSA_LIB, DSA_DATA), plus DSA_TOKENIZER (the demo's trained
# tokenizer.model: every run starts from it instead of training its own) and DSA_SWEEP, a list of
#   name:scale[:key=value,...]   scale = DSA_DEMO_SCALE (every stage's steps × scale); key=value edits
#                                of scripts/demo_model.json (integers), e.g. intermediate_size=128
# Logs: $OUT/<name>.log (the demo's output) and $OUT/demo_sweep_summary.txt (the result tables).
# shellcheck source=tools/gpu/prebuilt_env.sh
. "$(dirname "$0")/prebuilt_env.sh"
TOK=${DSA_TOKENIZER:?DSA_TOKENIZER must name a tokenizer.model}
SWEEP=${DSA_SWEEP:?DSA_SWEEP must list name:scale[:key=value,...] runs}
WORK=/tmp/dsa_demo_sweep
rm -rf "$WORK"; mkdir -p "$WORK"
n=$(echo "$SWEEP" | wc -w)
threads=$(( $(nproc) / n )); [ "$threads" -ge 1 ] || threads=1

pids=()
for spec in $SWEEP; do
  IFS=: read -r name scale edits <<<"$spec"
  run="$WORK/$name"; mkdir -p "$run"
  cp "$TOK" "$run/tokenizer.model"
  cfg="$run/model_config.json"
  python3 - "$ROOT/scripts/demo_model.json" "$cfg" "${edits:-}" <<'PY' || exit 1
import json, sys
src, dst, edits = sys.argv[1:4]
c = json.load(open(src))
for kv in filter(None, edits.split(",")):
    k, v = kv.split("=")
    if k not in c: sys.exit(f"demo_sweep: {k} is not a key of {src}")
    c[k] = int(v)
json.dump(c, open(dst, "w"), indent=1)
PY
  DSA_DEMO_DATA="$DATA" DSA_DEMO_RUN="$run" DSA_DEMO_RESUME=1 DSA_DEMO_SCALE="$scale" DSA_DEMO_DEVICE=cuda \
    DSA_DEMO_CONFIG="$cfg" OMP_NUM_THREADS=$threads \
    bash "$ROOT/scripts/demo.sh" "$BIN" >"$OUT/$name.log" 2>&1 &
  pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
for spec in $SWEEP; do
  name=${spec%%:*}
  {
    echo "== $spec"
    grep -E "^== stage|elapsed|ratio at|recall at k=32|^ +(128|256|512|all) |per key token|speed-up|finished" "$OUT/$name.log"
    cat "$WORK/$name/timings.txt" 2>/dev/null | tr '\n' ' '; echo
  } >>"$OUT/demo_sweep_summary.txt"
done
cat "$OUT/demo_sweep_summary.txt"
exit $rc
