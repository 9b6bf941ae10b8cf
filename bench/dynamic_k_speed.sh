#!/usr/bin/env bash
# dynamic_k_speed.sh BUILD MODEL [TEXT] — prefill and decode time of per-row k policies against fixed k
# on the CPU (docs/perf.md "Dynamic k"): `dsa generate` on ~8000 tokens of held-out text (default: the
# first part of Persuasion, held out of the demo's training), fp32 caches and indexer, one thread, 64
# greedy tokens. The configurations run in turn, ROUNDS times (default 5), and each reports the fastest
# of its rounds: on a shared machine the noise only ever adds time. Per configuration: prefill s, decode
# ms/token and the keys attended per query row and layer over the whole session. DSA_DEVICE=cuda (or
# cuda:N) runs the sessions on a GPU (default cpu).
set -euo pipefail
BUILD=${1:-build}
MODEL=${2:-runs/demo}
TEXT=${3:-data/txt/austen/persuasion.txt}
ROUNDS=${ROUNDS:-5}
DSA="$BUILD/dsa"
[ -x "$DSA" ] || { echo "dynamic_k_speed: $DSA not found" >&2; exit 1; }
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive
# ~7900 tokens of the demo tokenizer (≈ 2.5 characters per token on Austen): the model's 8192 positions
# hold the prompt and the 64 new tokens.
PROMPT=$(head -c 19500 "$TEXT")
COMMON=(-m "$MODEL" -n 64 --kv-cache fp32 --indexer fp32 --chunk 256 --no-stream --device "${DSA_DEVICE:-cpu}")
CONFIGS=(
  "fixed k=32|--attn-topk 32"
  "fixed k=32 through topk_length (buffer 64)|--attn-topk 64 --topk-policy fixed --topk-max 32"
  "fixed k=16|--attn-topk 16"
  "fixed k=64|--attn-topk 64"
  "mass p=0.9 in [8,64]|--attn-topk 64 --topk-policy mass --topk-p 0.9 --topk-min 8"
  "mass p=0.9 in [8,32]|--attn-topk 32 --topk-policy mass --topk-p 0.9 --topk-min 8"
  "entropy (demo fit) in [1,64]|--attn-topk 64 --topk-policy entropy --topk-a ${DSA_DYNK_A:-1.13874} --topk-b ${DSA_DYNK_B:-1.03183}"
)
declare -A PRE DEC KEYS
for ((r = 1; r <= ROUNDS; ++r)); do
  for c in "${CONFIGS[@]}"; do
    name=${c%%|*}
    # shellcheck disable=SC2206
    flags=(${c#*|})
    log=$("$DSA" generate "${COMMON[@]}" "${flags[@]}" -p "$PROMPT" 2>&1 >/dev/null)
    pre=$(sed -n 's/^prefill: [0-9]* tokens in \([0-9.]*\) s.*/\1/p' <<<"$log")
    dec=$(sed -n 's/.*decode: \([0-9]*\) tokens in \([0-9.]*\) s.*/\2 \1/p' <<<"$log" | awk '{ printf "%.4f", 1000 * $1 / $2 }')
    keys=$(sed -n 's/^attended keys per query row and layer: \([0-9.]*\).*/\1/p' <<<"$log")
    ntok=$(sed -n 's/^prefill: \([0-9]*\) tokens.*/\1/p' <<<"$log")
    if [ -z "${PRE[$name]:-}" ] || awk -v a="$pre" -v b="${PRE[$name]}" 'BEGIN { exit !(a < b) }'; then PRE[$name]=$pre; fi
    if [ -z "${DEC[$name]:-}" ] || awk -v a="$dec" -v b="${DEC[$name]}" 'BEGIN { exit !(a < b) }'; then DEC[$name]=$dec; fi
    KEYS[$name]=$keys
  done
done
echo "prompt $ntok tokens, 64 decoded, 1 thread, fastest of $ROUNDS rounds ($(date -u '+%Y-%m-%d %H:%M UTC'), load $(cut -d' ' -f1-3 /proc/loadavg))"
printf '| %-44s | %9s | %11s | %15s |\n' configuration "prefill s" "decode ms/t" "keys/row/layer"
for c in "${CONFIGS[@]}"; do
  name=${c%%|*}
  printf '| %-44s | %9.3f | %11.3f | %15s |\n' "$name" "${PRE[$name]}" "${DEC[$name]}" "${KEYS[$name]}"
done
