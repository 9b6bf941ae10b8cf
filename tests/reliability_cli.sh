#!/usr/bin/env bash
# reliability_cli.sh DSA WORKDIR CASE — one command-line reliability check (a CTest case each):
# hostile configs, a full disk, a killed writer, refused options; each checks the message AND that
# nothing was written. Exit 0 = the check holds.
set -uo pipefail
dsa="$1"
work="$2"
case_name="$3"
rm -rf "$work"
mkdir -p "$work"
cd "$work" || exit 1

fail() { echo "FAIL: $*" >&2; exit 1; }
# expect_error "needle" cmd… : the command fails and its stderr holds the needle
expect_error() {
  local needle="$1"
  shift
  local out
  if out=$("$@" 2>&1); then fail "accepted: $* ($out)"; fi
  grep -F -q -- "$needle" <<<"$out" || fail "message lacks '$needle': $out"
  echo "refused as expected: $out"
}
# A valid micro config with one key's value replaced (or a raw line added).
config() {
  cat <<'JSON'
{
  "vocab_size": 300, "hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 2,
  "num_attention_heads": 2, "q_lora_rank": 12, "kv_lora_rank": 10, "qk_nope_head_dim": 6,
  "qk_rope_head_dim": 4, "v_head_dim": 5, "index_n_heads": 3, "index_head_dim": 8, "index_topk": 3,
  "max_position_embeddings": 64, "first_k_dense_replace": 2, "initializer_range": 0.02, "rope_theta": 10000
}
JSON
}
with_key() { config | sed "s/\"$1\": [^,}]*/\"$1\": $2/"; }

case "$case_name" in
  huge_config)   # refused from the config alone, fast, naming the key and the bytes; no output folder
    with_key num_hidden_layers 2147483647 >huge.json
    start=$(date +%s%N)
    expect_error "num_hidden_layers = 2147483647" "$dsa" init --config huge.json --out out
    ms=$(( ($(date +%s%N) - start) / 1000000 ))
    [ "$ms" -lt 5000 ] || fail "took $ms ms"
    [ ! -e out ] || fail "out was created"
    with_key kv_lora_rank 2147483647 >overflow.json
    expect_error "kv_lora_rank + qk_rope_head_dim = 2147483651 exceeds 2147483647" "$dsa" init --config overflow.json --out out
    config >ok.json
    DSA_MAX_MEMORY=64K expect_error "available (DSA_MAX_MEMORY=64K)" "$dsa" init --config ok.json --out out
    [ ! -e out ] || fail "out was created"
    ;;
  strict_config)   # duplicate keys, non-finite numbers, init values that give non-finite weights
    config | sed 's/"vocab_size": 300,/"vocab_size": 300, "vocab_size": 512,/' >dup.json
    expect_error 'duplicate key "vocab_size"' "$dsa" init --config dup.json --out out
    with_key rope_theta 1e999 >inf.json
    expect_error "rope_theta" "$dsa" init --config inf.json --out out
    with_key initializer_range 1e300 >big.json
    expect_error "non-finite fp32 weights" "$dsa" init --config big.json --out out
    [ ! -e out ] || fail "out was created"
    ;;
  disk_full_tokenizer)   # ENOSPC at the first byte and mid-file: the cause named, no tok.* left
    for i in $(seq 1 200); do echo "It is a truth universally acknowledged, line $i."; done >corpus.txt
    for at in 0 3000; do
      DSA_INJECT_WRITE_FAULT=$at:ENOSPC expect_error "No space left on device (the disk is full)" \
        "$dsa" tokenizer train --data corpus.txt --out tok/tok --vocab-size 320 --threads 1
      [ -z "$(ls -A . | grep -v corpus.txt)" ] || fail "left: $(ls -AR .)"
    done
    DSA_INJECT_WRITE_FAULT=0:EROFS expect_error "Read-only file system" \
      "$dsa" tokenizer train --data corpus.txt --out tok/tok --vocab-size 320 --threads 1
    "$dsa" tokenizer train --data corpus.txt --out tok/tok --vocab-size 320 --threads 1 >/dev/null 2>&1 || fail "training failed"
    [ -s tok/tok.model ] && [ -s tok/tok.vocab ] || fail "no tokenizer written"
    ;;
  disk_full_init)   # a checkpoint write that fails mid-file leaves no folder and no temporary
    config >ok.json
    DSA_INJECT_WRITE_FAULT=2000:ENOSPC expect_error "No space left on device" "$dsa" init --config ok.json --out out
    [ -z "$(ls -A . | grep -v ok.json)" ] || fail "left: $(ls -A .)"
    ;;
  killed_writer)   # `dsa init` killed mid-save left OUT.tmp-PID-N: the next init into OUT removes it
    config >ok.json
    mkdir -p out.tmp-999999999-0 && echo partial >out.tmp-999999999-0/model.safetensors
    "$dsa" init --config ok.json --out out >/dev/null || fail "init failed"
    [ ! -e out.tmp-999999999-0 ] || fail "stale temporary kept"
    [ -s out/model.safetensors ] || fail "no checkpoint"
    "$dsa" inspect out >/dev/null || fail "inspect refused the checkpoint"
    ;;
  train_lr_nan)   # bad optimizer values are refused, naming the flag, before the run folder, data.json or tokens/ exist
    for i in $(seq 1 50); do echo "a training line $i"; done >train.txt
    expect_error "lr = nan" "$dsa" train --run run --stage pretrain --data train.txt --tokenizer byte --lr nan
    expect_error "--indexer-lr = inf" "$dsa" train --run run --stage pretrain --data train.txt --tokenizer byte --indexer-lr inf
    expect_error "--weight-decay = -1" "$dsa" train --run run --stage pretrain --data train.txt --tokenizer byte --weight-decay -1
    [ ! -e run ] || fail "run folder created: $(ls -AR run)"
    ;;
  *) fail "unknown case $case_name" ;;
esac
echo "ok: $case_name"
