#!/usr/bin/env bash
# decode_busy.sh DSA_BINARY [OUT_DIR] — `dsa generate` decode throughput on the demo's model shape
# (scripts/demo_model.json, random weights: speed does not depend on them) with a 256-token random
# prompt and 256 new tokens, on a quiet machine and with a busy loop on one core, for the OpenMP
# wait policies the program can run under: passive (its default), active (spinning: OpenMP's own
# default) and one thread. Prints a table of decode tokens/s (docs/perf.md "Decode on a busy machine").
set -euo pipefail
DSA=${1:?usage: decode_busy.sh DSA_BINARY [OUT_DIR]}
OUT=${2:-$(mktemp -d)}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"
[ -d "$OUT/model" ] || "$DSA" init --config "$ROOT/scripts/demo_model.json" --out "$OUT/model" >/dev/null
decode_rate() {   # env assignments...; prints decode tok/s (best of 3 runs)
  local best=0 r
  for _ in 1 2 3; do
    r=$(env "$@" "$DSA" generate -m "$OUT/model" --random-prompt 256 -n 256 --tokenizer byte 2>&1 >/dev/null |
        sed -n 's/.*decode: [0-9]* tokens in [0-9.]* s (\([0-9.]*\) tok\/s).*/\1/p')
    best=$(awk -v a="$best" -v b="$r" 'BEGIN { print (b > a) ? b : a }')
  done
  echo "$best"
}
busy_start() { ( while :; do :; done ) & BUSY=$!; }
busy_stop() { kill "$BUSY"; wait "$BUSY" 2>/dev/null || true; }
printf "%-34s %12s %12s\n" "policy (cores: $(nproc))" "quiet tok/s" "busy tok/s"
for policy in "default (passive)|" "OMP_WAIT_POLICY=active|OMP_WAIT_POLICY=active" "OMP_NUM_THREADS=1|OMP_NUM_THREADS=1"; do
  name=${policy%%|*}; envs=${policy#*|}
  quiet=$(decode_rate $envs DSA_UNUSED=1)
  busy_start
  busy=$(decode_rate $envs DSA_UNUSED=1)
  busy_stop
  printf "%-34s %12s %12s\n" "$name" "$quiet" "$busy"
done
