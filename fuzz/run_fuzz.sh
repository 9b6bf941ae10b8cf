#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (libFuzzer + ASan + UBSan, every UBSan report fatal) and
# runs them on the committed seed corpus (fuzz/corpus/<target>/; new inputs go to WORK/corpus/<target>).
#   fuzz/run_fuzz.sh build [WORK]                      build every target
#   fuzz/run_fuzz.sh run TARGET SECONDS [WORK]         run one (built) target for SECONDS
#   fuzz/run_fuzz.sh all SECONDS [WORK]                build, then run every target for SECONDS each
# Targets: safetensors (the safetensors parser), config (config.json parsing and size arithmetic),
# tokenizer (encode/decode round trips, id decoding, tokenizer model loading). WORK: build-fuzz.
# `make test` runs build + each target for a bounded time (tests/CMakeLists.txt); `make fuzz` runs all.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
mode="${1:-all}"
CXX="${CXX_FUZZ:-clang++}"
targets=(safetensors config tokenizer)

# Library sources each target links (compiled once per build into WORK/obj).
sources_of() {
  local common="src/model/json.cpp src/common/check.cpp src/common/op_checks.cpp src/common/file_io.cpp"
  case "$1" in
    safetensors) echo "$common src/model/safetensors.cpp src/cpu/numerics.cpp" ;;
    config) echo "$common src/model/config.cpp src/model/resources.cpp src/cpu/rotations.cpp" ;;
    tokenizer) echo "$common src/train/tokenizer.cpp" ;;
    *) echo "run_fuzz: unknown target '$1' (${targets[*]})" >&2; exit 2 ;;
  esac
}
libs_of() { [ "$1" = tokenizer ] && pkg-config --libs sentencepiece || true; }

flags=(-std=c++20 -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all
       -I"$root/include" -I"$root/src" $(pkg-config --cflags sentencepiece 2>/dev/null))

build() {
  local work="$1"
  command -v "$CXX" >/dev/null || { echo "run_fuzz: $CXX not found (scripts/install_deps.sh installs clang)" >&2; exit 1; }
  mkdir -p "$work/obj"
  local all=""
  for t in "${targets[@]}"; do all="$all $(sources_of "$t")"; done
  # Every library source once, in parallel (-fsanitize=fuzzer-no-link: coverage without a main); an
  # object newer than its source and every header is kept.
  local stale=()
  for s in $(printf '%s\n' $all | sort -u); do
    local o="$work/obj/$(echo "$s" | tr / _).o"
    if [ -f "$o" ] && [ "$o" -nt "$root/$s" ] && [ -z "$(find "$root/include" "$root/src" -name '*.h' -newer "$o" | head -n 1)" ]; then
      continue
    fi
    stale+=("$s")
  done
  if [ ${#stale[@]} -gt 0 ]; then
    printf '%s\n' "${stale[@]}" | xargs -P "$(nproc)" -I{} sh -c \
      "'$CXX' $(printf "'%s' " "${flags[@]}") -fsanitize=fuzzer-no-link -c '$root/{}' -o '$work/obj/'\$(echo '{}' | tr / _).o"
  fi
  for t in "${targets[@]}"; do
    local objs=""
    for s in $(sources_of "$t"); do objs="$objs $work/obj/$(echo "$s" | tr / _).o"; done
    # shellcheck disable=SC2086
    "$CXX" "${flags[@]}" -fsanitize=fuzzer "$root/fuzz/${t}_fuzz.cpp" $objs $(libs_of "$t") -o "$work/${t}_fuzz"
  done
  echo "run_fuzz: built ${targets[*]} in $work"
}

run() {
  local t="$1" secs="$2" work="$3"
  sources_of "$t" >/dev/null
  [ -x "$work/${t}_fuzz" ] || { echo "run_fuzz: $work/${t}_fuzz is not built (fuzz/run_fuzz.sh build)" >&2; exit 1; }
  mkdir -p "$work/corpus/$t" "$work/artifacts/$t"
  # -timeout: one input taking > 10 s is a hang; -rss_limit_mb: an input growing memory without bound
  # is a bug too. libFuzzer exits non-zero on any crash, leak, sanitizer report, timeout or OOM.
  "$work/${t}_fuzz" "$work/corpus/$t" "$root/fuzz/corpus/$t" -max_total_time="$secs" -max_len=8192 -timeout=10 \
    -rss_limit_mb=2048 -artifact_prefix="$work/artifacts/$t/" -print_final_stats=1 2>&1 | tail -n 25
  return "${PIPESTATUS[0]}"
}

case "$mode" in
  build) build "${2:-$root/build-fuzz}" ;;
  run) run "${2:?target}" "${3:?seconds}" "${4:-$root/build-fuzz}" ;;
  all)
    secs="${2:-60}"
    work="${3:-$root/build-fuzz}"
    build "$work"
    for t in "${targets[@]}"; do run "$t" "$secs" "$work"; done
    ;;
  *) echo "usage: fuzz/run_fuzz.sh build [WORK] | run TARGET SECONDS [WORK] | all SECONDS [WORK]" >&2; exit 2 ;;
esac
