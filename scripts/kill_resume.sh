#!/usr/bin/env bash
# kill_resume.sh DSA [KILLS=70] [WORK=/tmp/dsa_kill_resume] — crash consistency of `dsa train`:
# a reference pretraining run goes uninterrupted; the same run is then started, killed with SIGKILL at
# a random moment (anywhere: mid-step, mid-checkpoint, mid-rename), and restarted, KILLS times, then
# left to finish. Passes when every restart resumed and the final checkpoint (weights, optimizer
# state, step record) is byte for byte the reference's. docs/reliability.md reports a run.
set -euo pipefail
dsa="$(realpath "${1:?usage: kill_resume.sh DSA [KILLS] [WORK]}")"
kills="${2:-70}"
work="${3:-/tmp/dsa_kill_resume}"
rm -rf "$work"
mkdir -p "$work/data"
for i in $(seq 1 400); do echo "Line $i of a small corpus: the quick brown fox jumps over the lazy dog $((i * 7919 % 1000))."; done >"$work/data/train.txt"
for i in $(seq 1 60); do echo "Held-out line $i: pack my box with five dozen liquor jugs."; done >"$work/data/held.txt"
args=(train --stage pretrain --data "$work/data" --holdout held --tokenizer byte --hidden 32 --layers 2 --heads 2
      --intermediate 64 --q-lora 24 --kv-lora 16 --nope 8 --rope 8 --v-dim 8 --index-heads 2 --index-dim 16 --topk 8
      --max-pos 128 --steps 600 --batch 2 --seq-len 64 --checkpoint-every 3 --keep 2 --synthetic 0 --no-progress --no-plots --threads 1)
export OMP_NUM_THREADS=1

"$dsa" "${args[@]}" --run "$work/ref" >/dev/null 2>&1
ref="$work/ref/pretrain/$(cat "$work/ref/pretrain/final")"

done_kills=0 restarts=0
while :; do
  "$dsa" "${args[@]}" --run "$work/killed" >"$work/last.log" 2>&1 &
  pid=$!
  restarts=$((restarts + 1))
  if [ "$done_kills" -lt "$kills" ]; then
    sleep "0.$(printf '%03d' $((RANDOM % 400 + 20)))"
    if kill -9 "$pid" 2>/dev/null; then
      wait "$pid" 2>/dev/null || true
      done_kills=$((done_kills + 1))
      continue
    fi
  fi
  wait "$pid" || { echo "kill_resume: a restart failed:"; cat "$work/last.log"; exit 1; }
  [ -f "$work/killed/pretrain/final" ] && break
done
got="$work/killed/pretrain/$(cat "$work/killed/pretrain/final")"
for f in model.safetensors optimizer.safetensors trainer_state.json config.json; do
  [ -f "$ref/$f" ] || continue
  cmp -s "$ref/$f" "$got/$f" || { echo "kill_resume: $f differs after $done_kills kills"; exit 1; }
done
left=$(find "$work/killed" -name '*.tmp-*' | wc -l)
echo "kill_resume: $done_kills SIGKILLs, $restarts starts; final checkpoint $(basename "$got") byte-identical to the uninterrupted run; $left temporaries left"
