#!/usr/bin/env bash
# session_bench.sh DSA [OUT_DIR] — GPU inference through the default path of `dsa generate --device cuda`
# (a BatchSession on the GPU: bf16 weights, the bf16 (1152 B) or FP8 (656 B) MLA cache + the 132 B FP8
# indexer cache, the default kernel variants) on a random model with DeepSeek-V3.2's attention shapes (bench/configs/
# v32_attention_2layer.json: hidden 7168, 128 heads, q_lora 1536, kv_lora 512, rope 64, indexer 64 × 128,
# k 2048; 2 layers; a 256-wide MLP so the attention side dominates). Rows: prompt length, batch, mode, cache;
# prefill and decode tokens/s as `dsa generate` prints them, in OUT_DIR/session_bench.csv. DSA_DEVICE=cpu runs
# the same rows on the CPU.
set -euo pipefail
DSA=${1:?usage: session_bench.sh DSA [OUT_DIR]}
OUT=${2:-.}
HERE=$(cd "$(dirname "$0")/../.." && pwd)
MODEL=$OUT/v32_attention_2layer
[ -d "$MODEL" ] || "$DSA" init --config "$HERE/bench/configs/v32_attention_2layer.json" -o "$MODEL" --bf16 >/dev/null
CSV=$OUT/session_bench.csv
echo "prompt,batch,mode,kv_cache,new_tokens,prefill_tok_s,decode_tok_s,cache_bytes_per_token" > "$CSV"
run() {   # prompt batch mode cache new
  local err pre dec bytes
  err=$("$DSA" generate -m "$MODEL" --device "${DSA_DEVICE:-cuda}" --random-prompt "$1" --batch "$2" --mode "$3" --kv-cache "$4" -n "$5" 2>&1 >/dev/null)
  echo "$err" | sed "s/^/[$1 x $2 $3 $4] /" >&2
  pre=$(echo "$err" | sed -n 's/.*prefill [0-9]* tokens in [0-9.]* s (\([0-9.]*\) tok\/s).*/\1/p')
  dec=$(echo "$err" | sed -n 's/.*decode [0-9]* tokens in [0-9.]* s (\([0-9.]*\) tok\/s).*/\1/p')
  bytes=$(echo "$err" | sed -n 's/^cache: \([0-9]*\) bytes per token.*/\1/p')
  echo "$1,$2,$3,$4,$5,$pre,$dec,$bytes" >> "$CSV"
}
# prompt:batch:mode:kv-cache:new-tokens, comma-separated (DSA_SESSION_BENCH overrides)
SPECS=${DSA_SESSION_BENCH:-4032:1:sparse:bf16:64,4032:1:dense:bf16:64,4032:1:sparse:fp8:64,32704:1:sparse:bf16:32,4032:64:sparse:bf16:16,4032:64:sparse:fp8:16,4032:64:dense:bf16:16}
IFS=, read -ra LIST <<< "$SPECS"
for spec in "${LIST[@]}"; do
  IFS=: read -r p b m c n <<< "$spec"
  run "$p" "$b" "$m" "$c" "$n"
done
cat "$CSV"
