#!/usr/bin/env bash
# tools/gpu/run_all.sh — the ONE device-machine script: records the environment, configures and builds
# with CMake (sm_90a only, to save time on the device), runs the test table (CPU + GPU rows), a
# compute-sanitizer memcheck on a filtered subset, and the GPU benchmarks with their torch baselines.
# Logs go to $OUT (at most 8 files come back): env.log build.log tests.log sanitizer.log bench.log.
#
# Run from the repository root, with .deps (GoogleTest sources, built here when the machine has no
# GTest package):
#   mkdir -p .deps && cp -r /usr/src/googletest .deps/    (once, on the build machine; .deps is ignored)
# Environment knobs (all optional):
#   DSA_GTEST_FILTER      gtest filter of the table run                  (default: *)
#   DSA_SANITIZER_FILTER  gtest filter of the memcheck run ("" skips it)  (default: indexer-side GPU exact rows)
#   DSA_SANITIZER_TOOLS   compute-sanitizer tools, space separated        (default: memcheck)
#   DSA_BENCH             "indexer", "attention", "session", "all" or "none" (default: indexer); "all"
#                         also times one DSA layer at L = 128K (dsa_bench_layer, default and 1 GiB
#                         indexer workspace) against the SDPA time attention_torch.py measured just before,
#                         and the GPU inference session (bench/gpu/session_bench.sh through `dsa generate`)
#   DSA_BENCH_ARGS        arguments of dsa_bench_gpu ("quick", op names)  (default: none)
#   DSA_CUDA_ARCH         CMAKE_CUDA_ARCHITECTURES                        (default: 90a)
#   DSA_TEST_TIMEOUT / DSA_SANITIZER_TIMEOUT / DSA_BENCH_TIMEOUT  seconds per stage (200 / 120 / 200)
#   DSA_PREBUILT_DIR      a build folder made on another machine (built there with
#                         -DCMAKE_CUDA_ARCHITECTURES=90a): skips the device build; its shared
#                         libraries the image lacks (openblas, sentencepiece, …) are in .deps/lib
set -uo pipefail
OUT=${OUT:-/tmp/dsa_out}
mkdir -p "$OUT"
ROOT=$(pwd)
BUILD=${DSA_BUILD_DIR:-$ROOT/build-gpu}
JOBS=$(nproc)
FILTER=${DSA_GTEST_FILTER:-*}
SAN_FILTER=${DSA_SANITIZER_FILTER-"*fp8_block_quantize__cuda_exact*:*cache_records__cuda_exact*:*hadamard*cuda_exact*:*rope__cuda_exact*:*indexer_logits__cuda_exact*:*topk_select__cuda_exact*:*indexer_topk__cuda_exact*:*indexer_backward__cuda_exact*:*indexer_logits_paged__cuda_exact*:VariantRequests.TopkConfigsMatchCpu:VariantRequests.DeviceConversionsMatchCpuBitwise"}
SAN_TOOLS=${DSA_SANITIZER_TOOLS:-memcheck}
BENCH=${DSA_BENCH:-indexer}
ARCH=${DSA_CUDA_ARCH:-90a}
export PYTHONUNBUFFERED=1

stage() { echo "=== $* ($(date -u +%H:%M:%S))"; }

# ── environment ──
{
  stage env
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv 2>&1
  nvcc --version 2>&1 | tail -2
  cmake --version | head -1
  which ninja compute-sanitizer 2>&1
  python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.is_available())' 2>&1
  ls /usr/include/gtest >/dev/null 2>&1 && echo "gtest: system headers present" || echo "gtest: none (built from .deps)"
  echo "omp.h: $(echo '#include <omp.h>' | g++ -fopenmp -E -x c++ - >/dev/null 2>&1 && echo ok || echo missing)"
  date -u
} >"$OUT/env.log" 2>&1
cat "$OUT/env.log"

# ── build ──
if [ -n "${DSA_PREBUILT_DIR:-}" ]; then
  BUILD=$ROOT/$DSA_PREBUILT_DIR
  export LD_LIBRARY_PATH=$ROOT/.deps/lib:${LD_LIBRARY_PATH:-}
  { stage "prebuilt binaries from $BUILD"; ls -la "$BUILD/tests/dsa_tests" "$BUILD/bench/gpu/" 2>&1;
    ldd "$BUILD/tests/dsa_tests" | grep -i "not found"; } >"$OUT/build.log" 2>&1
else
{
  stage build
  EXTRA=()
  if ! ls /usr/include/gtest >/dev/null 2>&1 && [ -d .deps/googletest ]; then
    cmake -S .deps/googletest -B /tmp/gtest-build -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_GMOCK=OFF \
      -DCMAKE_INSTALL_PREFIX=/tmp/gtest >/dev/null && cmake --build /tmp/gtest-build -j "$JOBS" >/dev/null &&
      cmake --install /tmp/gtest-build >/dev/null && echo "built GoogleTest into /tmp/gtest"
    EXTRA+=(-DCMAKE_PREFIX_PATH=/tmp/gtest)
  fi
  GEN=()
  command -v ninja >/dev/null && GEN=(-G Ninja)
  cmake -S . -B "$BUILD" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="$ARCH" "${EXTRA[@]}" 2>&1 | tail -5
  TARGETS=(--target dsa_tests --target dsa_bench_gpu --target dsa_cli)
  [ "$BENCH" = attention ] || [ "$BENCH" = all ] && TARGETS+=(--target dsa_bench_attention)
  [ "$BENCH" = all ] && TARGETS+=(--target dsa_bench_layer)
  time cmake --build "$BUILD" -j "$JOBS" "${TARGETS[@]}" 2>&1 | grep -E "error|FAILED|warning: .*(cu|cuh):" | head -60
  echo "build exit: ${PIPESTATUS[0]}"
  ls -la "$BUILD/tests/dsa_tests" "$BUILD/bench/gpu/" 2>&1
} >"$OUT/build.log" 2>&1
fi
tail -25 "$OUT/build.log"

# ── the test table ──
if [ -x "$BUILD/tests/dsa_tests" ]; then
  stage "tests ($FILTER)" | tee "$OUT/tests.log"
  timeout "${DSA_TEST_TIMEOUT:-200}" "$BUILD/tests/dsa_tests" --gtest_filter="$FILTER" >>"$OUT/tests.log" 2>&1
  echo "tests exit: $?" >>"$OUT/tests.log"
  grep -E "^\[  (FAILED|PASSED|SKIPPED) |tests exit|Failure|error" "$OUT/tests.log" | head -60
fi

# ── benchmarks ──
{
  stage bench
  if [ "$BENCH" = indexer ] || [ "$BENCH" = all ]; then
    timeout "${DSA_BENCH_TIMEOUT:-200}" "$BUILD/bench/gpu/dsa_bench_gpu" ${DSA_BENCH_ARGS:-}
    echo "dsa_bench_gpu exit: $?"
    timeout 150 python3 bench/gpu/indexer_torch.py $( [[ "${DSA_BENCH_ARGS:-}" == *quick* ]] && echo quick )
    echo "indexer_torch exit: $?"
  fi
  if [ "$BENCH" = attention ] || [ "$BENCH" = all ]; then
    timeout "${DSA_BENCH_TIMEOUT:-200}" "$BUILD/bench/gpu/dsa_bench_attention" ${DSA_BENCH_ARGS:-}
    echo "dsa_bench_attention exit: $?"
    timeout 150 python3 bench/gpu/attention_torch.py | tee "$OUT/attention_torch.txt"
    echo "attention_torch exit: ${PIPESTATUS[0]}"
  fi
  if [ "$BENCH" = all ] && [ -x "$BUILD/bench/gpu/dsa_bench_layer" ]; then
    # the fastest dense baseline at L = 131072 (microseconds column → ms) is the layer's yardstick
    sdpa_ms=$(grep -E "^torch_sdpa_[a-z]+ +causal L=131072 " "$OUT/attention_torch.txt" 2>/dev/null |
              awk '{for (i = 1; i <= NF; i++) if ($i == "us") print $(i - 1) / 1000}' | sort -n | head -1)
    for ws in "" 1024; do
      timeout "${DSA_BENCH_TIMEOUT:-200}" "$BUILD/bench/gpu/dsa_bench_layer" "${sdpa_ms:-0}" $ws
      echo "dsa_bench_layer ${ws:+(workspace $ws MiB) }exit: $?"
    done
    rm -f "$OUT/attention_torch.txt"
  fi
  if [ "$BENCH" = session ] || [ "$BENCH" = all ]; then
    mkdir -p /tmp/dsa_session_bench
    timeout "${DSA_BENCH_TIMEOUT:-200}" bench/gpu/session_bench.sh "$BUILD/dsa" /tmp/dsa_session_bench
    echo "session_bench exit: $?"
    cp /tmp/dsa_session_bench/session_bench.csv "$OUT/" 2>/dev/null
  fi
  nvidia-smi --query-gpu=name,clocks.sm,temperature.gpu,power.draw --format=csv 2>&1
} >"$OUT/bench.log" 2>&1
cat "$OUT/bench.log"

# ── compute-sanitizer on a subset (may be unsupported on some machines: recorded) ──
if [ -n "$SAN_FILTER" ] && [ -x "$BUILD/tests/dsa_tests" ]; then
  {
    for tool in $SAN_TOOLS; do
      stage "compute-sanitizer --tool $tool ($SAN_FILTER)"
      timeout "${DSA_SANITIZER_TIMEOUT:-120}" compute-sanitizer --tool "$tool" --error-exitcode 3 \
        "$BUILD/tests/dsa_tests" --gtest_filter="$SAN_FILTER" 2>&1 | grep -vE "^\[ +(RUN|OK) " | tail -40
      echo "sanitizer $tool exit: ${PIPESTATUS[0]}"
    done
  } >"$OUT/sanitizer.log" 2>&1
  tail -30 "$OUT/sanitizer.log"
fi
stage done
