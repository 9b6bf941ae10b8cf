#!/usr/bin/env bash
# Builds the safetensors parser fuzz target with clang (libFuzzer + ASan + UBSan) and runs it.
# Usage: fuzz/run_fuzz.sh [seconds=60] [workdir=build-fuzz]. Not part of `make test`.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
secs="${1:-60}"
work="${2:-$root/build-fuzz}"
mkdir -p "$work/corpus"
CXX="${CXX:-clang++}"
flags=(-std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -I"$root/include" -I"$root/src")
"$CXX" "${flags[@]}" "$root/fuzz/safetensors_fuzz.cpp" "$root/src/model/safetensors.cpp" "$root/src/model/json.cpp" \
  "$root/src/cpu/numerics.cpp" "$root/src/common/check.cpp" -o "$work/safetensors_fuzz"
# Seeds: a valid two-tensor file and a few header fragments.
python3 - "$work/corpus" <<'PY'
import struct, sys, os
d = sys.argv[1]
def f(name, header, data):
    h = header.encode()
    open(os.path.join(d, name), "wb").write(struct.pack("<Q", len(h)) + h + data)
f("valid", '{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
           '"b":{"dtype":"BF16","shape":[1,2],"data_offsets":[8,12]},"c":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[12,16]}}',
  bytes(range(16)))
f("empty", '{}', b"")
f("f16", '{"h":{"dtype":"F16","shape":[3],"data_offsets":[0,6]}}', bytes([0, 60, 0, 124, 1, 0]))
PY
"$work/safetensors_fuzz" "$work/corpus" -max_total_time="$secs" -max_len=4096 -print_final_stats=1 2>&1 | tail -25
