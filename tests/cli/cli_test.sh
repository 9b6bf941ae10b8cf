#!/usr/bin/env bash
# CLI convention checks (ctest -R cli_): cli_test.sh DSA WORK_DIR SOURCE_DIR CASE. Each case exits 0 on success.
set -u
DSA=$1 WORK=$2 SRC=$3 CASE=$4
fail() { echo "FAIL: $*" >&2; exit 1; }
# expect_refused NEEDLE CMD...: the command exits non-zero and its stderr names NEEDLE.
expect_refused() {
  local needle=$1; shift
  local err; err=$("$@" 2>&1 >/dev/null) && fail "accepted: $*"
  grep -qF -- "$needle" <<<"$err" || fail "\"$*\" said \"$err\", not \"$needle\""
}
rm -rf "$WORK"; mkdir -p "$WORK"; cd "$WORK" || exit 1
model() {   # a tiny random byte-level model in $WORK/m
  sed -e 's/"vocab_size": [0-9]*/"vocab_size": 257/' "$SRC/scripts/demo_model.json" > cfg.json
  "$DSA" init --config=cfg.json -o m >/dev/null || fail "init"
}
case $CASE in
help)
  for c in generate init inspect train eval tokenizer version; do
    for h in --help -h; do
      out=$("$DSA" $c $h) || fail "$c $h exited non-zero"
      grep -q "usage\|dsa" <<<"$out" || fail "$c $h printed no usage"
    done
  done
  "$DSA" generate -m x --help | grep -q -- "--max-new-tokens" || fail "generate --help lacks -n/--max-new-tokens"
  "$DSA" --version | grep -q "^dsa [0-9]" || fail "--version"
  ;;
stray)
  model
  expect_refused 'unexpected argument "stray"' "$DSA" generate -m m -p Hello stray
  expect_refused 'unexpected argument "stray"' "$DSA" init --config cfg.json --out m2 stray
  expect_refused 'unexpected argument "b"' "$DSA" inspect m b
  expect_refused 'unexpected argument "stray"' "$DSA" eval --run . stray
  expect_refused 'unexpected argument "stray"' "$DSA" train --run r --stage pretrain stray
  expect_refused 'unexpected argument "stray"' "$DSA" version stray
  expect_refused 'unknown flag -q' "$DSA" generate -m m -p Hello -q 3
  expect_refused 'flag --no-stream takes no value' "$DSA" generate -m m -p Hello --no-stream=1
  expect_refused '--topk is ambiguous' "$DSA" generate -m m -p Hello --topk 3
  test ! -e m2 && test ! -e r || fail "a refused command wrote something"
  ;;
ranges)
  model
  expect_refused 'flag --max-new = 4294967300 is out of range' "$DSA" generate -m m -p Hi --max-new 4294967300
  expect_refused 'flag --max-new-tokens = -1 is out of range' "$DSA" generate -m m -p Hi -n -1
  expect_refused 'flag --top-p = 5 is out of range' "$DSA" generate -m m -p Hi --top-p 5
  expect_refused 'flag --top-p = 0 must be in (0, 1]' "$DSA" generate -m m -p Hi --top-p 0
  expect_refused 'flag --top-k = -3 is out of range' "$DSA" generate -m m -p Hi --top-k -3
  expect_refused 'flag --top-k = 9999 exceeds the model' "$DSA" generate -m m -p Hi --top-k 9999
  expect_refused 'flag --temperature expects a number, got "hot"' "$DSA" generate -m m -p Hi --temperature hot
  expect_refused 'flag --temperature = nan' "$DSA" generate -m m -p Hi --temperature nan
  expect_refused 'flag --attn-topk = -3 is out of range' "$DSA" generate -m m -p Hi --attn-topk=-3
  expect_refused 'flag --threads = -2 is out of range' "$DSA" generate -m m -p Hi -t -2
  expect_refused 'flag --seed = 99999999999999999999 is out of range' "$DSA" init --config cfg.json -o m3 --seed 99999999999999999999
  expect_refused 'flag --seq-len = 4294967300 is out of range' "$DSA" train --run r --stage pretrain --data "$SRC/README.md" --seq-len 4294967300
  expect_refused 'flag --trials = 0 is out of range' "$DSA" eval --run . --trials 0
  expect_refused 'flag --ks item = 0 is out of range' "$DSA" eval --run . --ks 4,0
  expect_refused 'flag --vocab-size expects an integer' "$DSA" tokenizer train --data "$SRC/README.md" --out t --vocab-size 1e3
  test ! -e m3 && test ! -e r && test ! -e t.model || fail "a refused command wrote something"
  ;;
generate)
  model
  out=$("$DSA" generate -m m -p Hello -n 5 --seed=3 --temperature=0.8 --top-k=5 --top-p=0.9 -t 1 2>err.txt) || fail "generate: $(cat err.txt)"
  grep -q "decode: 4 tokens" err.txt || fail "-n 5 did not decode 4 steps: $(cat err.txt)"
  [[ $out == Hello* ]] || fail "the output does not start with the prompt"
  "$DSA" generate --model=m --prompt=Hello --max-new-tokens=3 --no-stream 2>err.txt >/dev/null || fail "long forms"
  grep -q "decode: 2 tokens" err.txt || fail "--max-new-tokens=3: $(cat err.txt)"
  a=$("$DSA" generate -m m -p Hello -n 6 --temperature 1 --top-k 1 -s 5 2>/dev/null)
  b=$("$DSA" generate -m m -p Hello -n 6 2>/dev/null)
  [[ $a == "$b" ]] || fail "--top-k 1 differs from greedy: '$a' vs '$b'"
  # batched generation: each prompt's greedy completion equals its own single-prompt run
  printf 'Hello\nOnce upon a time\n\nHi\n' > prompts.txt
  "$DSA" generate -m m --prompts prompts.txt -n 6 >batch.txt 2>err.txt || fail "--prompts: $(cat err.txt)"
  grep -q "batch of 3: prefill" err.txt || fail "--prompts did not report the batch: $(cat err.txt)"
  for i in 0 1 2; do
    p=$(sed -n "$((i + 1))p" <(grep -v '^$' prompts.txt))
    one=$("$DSA" generate -m m -p "$p" -n 6 --no-stream 2>/dev/null)
    grep -qxF "[$i] $one" batch.txt || fail "batched completion $i differs from '$one': $(cat batch.txt)"
  done
  "$DSA" generate -m m --random-prompt 20 --batch 4 -n 3 2>err.txt >/dev/null || fail "--batch: $(cat err.txt)"
  grep -q "batch of 4: prefill 80 tokens" err.txt || fail "--batch 4: $(cat err.txt)"
  grep -q "decode 8 tokens" err.txt || fail "--batch 4 -n 3 did not run 2 decode steps of 4 rows: $(cat err.txt)"
  # numerics: auto follows the stored weights (dsa init writes F32), --numerics chooses, a bad name is refused
  "$DSA" generate -m m -p Hello -n 2 2>err.txt >/dev/null || fail "generate: $(cat err.txt)"
  grep -q "numerics: fp32 (weights stored as F32)" err.txt || fail "auto on F32 weights: $(cat err.txt)"
  "$DSA" generate -m m -p Hello -n 2 --numerics reference 2>err.txt >/dev/null || fail "--numerics reference: $(cat err.txt)"
  grep -q "numerics: reference" err.txt || fail "--numerics reference: $(cat err.txt)"
  "$DSA" init --config=cfg.json -o mb --bf16 >/dev/null || fail "init --bf16"
  "$DSA" generate -m mb -p Hello -n 2 2>err.txt >/dev/null || fail "generate bf16: $(cat err.txt)"
  grep -q "numerics: reference (weights stored as BF16)" err.txt || fail "auto on BF16 weights: $(cat err.txt)"
  expect_refused "unknown value 'bf17'" "$DSA" generate -m m -p Hi --numerics bf17
  expect_refused '--prompts missing.txt: cannot be read' "$DSA" generate -m m --prompts missing.txt
  expect_refused '--batch B needs --random-prompt N' "$DSA" generate -m m -p Hi --batch 2
  expect_refused 'give one of -p/--prompt, --prompts FILE' "$DSA" generate -m m -p Hi --prompts prompts.txt
  # speculative decoding with the MTP module: the same text as plain greedy decoding
  sed -e 's/"num_hidden_layers": 2,/"num_hidden_layers": 2, "num_nextn_predict_layers": 1,/' cfg.json > cfg_mtp.json
  "$DSA" init --config=cfg_mtp.json -o mm >/dev/null || fail "init with an MTP module"
  a=$("$DSA" generate -m mm -p Hello -n 24 --speculative mtp 2>err.txt) || fail "--speculative mtp: $(cat err.txt)"
  grep -q "speculative (mtp): accepted [0-9]* of [0-9]* drafts" err.txt || fail "no acceptance report: $(cat err.txt)"
  b=$("$DSA" generate -m mm -p Hello -n 24 2>/dev/null)
  [[ $a == "$b" ]] || fail "--speculative mtp differs from greedy: '$a' vs '$b'"
  expect_refused 'needs a checkpoint with a multi-token-prediction module' "$DSA" generate -m m -p Hi --speculative mtp
  expect_refused 'greedy only' "$DSA" generate -m mm -p Hi --speculative mtp --temperature 0.7
  expect_refused '--speculative must be mtp' "$DSA" generate -m mm -p Hi --speculative eagle
  ;;
train)
  # One document, byte tokenizer, relative paths: the hold-out is the document's tail; a refused
  # --seq-len leaves nothing; the run moves to another folder and still evaluates; `final` works as a model.
  mkdir data && cp "$SRC/README.md" data/novel.txt
  expect_refused '--seq-len = 40 is too short for the synthetic' "$DSA" train --run run --stage pretrain --data data/novel.txt --seq-len 40
  expect_refused 'no document under --data matches --holdout "persuasion"' "$DSA" train --run run --stage pretrain --data data/novel.txt --holdout persuasion
  test ! -e run || fail "a refused train wrote the run folder"
  "$DSA" train --run run --stage pretrain --data data/novel.txt --tokenizer byte --steps 2 --seq-len 128 --batch 2 --hidden 32 --heads 2 \
    --intermediate 64 --layers 1 --q-lora 32 --kv-lora 32 --nope 16 --rope 8 --v-dim 16 --index-heads 2 --index-dim 16 --topk 8 \
    --synthetic 0 --no-progress --no-plots >/dev/null 2>log.txt || fail "train: $(cat log.txt)"
  grep -q '"base": "run"' run/data.json && grep -q '"../data/novel.txt"' run/data.json || fail "data.json: $(cat run/data.json)"
  head -1 run/pretrain/metrics.csv | grep -q "val_lm_loss" || fail "metrics.csv has no validation column"
  tail -1 run/pretrain/metrics.csv | grep -qE ',[0-9.]+$' || fail "the last metrics row has no validation loss"
  mkdir moved && mv run data moved/
  "$DSA" inspect moved/run/pretrain/final >/dev/null || fail "inspect final"
  "$DSA" generate -m moved/run -p The -n 2 >/dev/null 2>&1 || fail "generate on a run folder"
  "$DSA" eval --run moved/run --checkpoint moved/run/pretrain/final --out ev --seq-len 128 --val-sequences 3 --ks 8 --passkey-lengths 128 \
    --trials 1 --speed-context 64 --decode-tokens 2 --no-plots >table.txt 2>log.txt || fail "eval on the moved run: $(cat log.txt)"
  test -f ev/ppl.csv && test ! -e moved/run/eval || fail "eval --out did not write ev/ only"
  grep -q "ppl_lo95" ev/ppl.csv && grep -q "95% intervals" table.txt || fail "no confidence intervals in the eval output"
  rm -rf moved/data
  expect_refused 'data.json names' "$DSA" eval --run moved/run --checkpoint moved/run/pretrain/final --out ev2
  test ! -e ev2 || fail "a refused eval wrote its folder"
  ;;
*) fail "unknown case $CASE" ;;
esac
echo "ok: $CASE"
