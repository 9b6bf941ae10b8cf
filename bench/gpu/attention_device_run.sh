#!/usr/bin/env bash
# attention_device_run.sh — one GPU machine run for the attention side: builds the op table (the CPU
# ops, every CUDA kernel, the tests) without the model/tokenizer dependencies (OpenBLAS,
# sentencepiece are not on the device image), runs the attention rows on the GPU backends (the bf16
# tensor-core classes included) and the attention variant-request tests, compute-sanitizer memcheck
# + racecheck on them, then the benchmarks and the torch
# baselines. Logs go to $OUT. Usage (repo root, on the device):
#   OUT=... bench/gpu/attention_device_run.sh ["90a 80" archs, the first also sanitised and timed] [gtest_src]
# CudaBackend methods of ops whose wrappers are not in tests/cuda/ yet get throwing stubs (listed
# in $OUT/stubs.txt), so the attention rows can run while the rest of the backend is in progress.
set -uo pipefail
ROOT=$(pwd)
ARCH=${1:-90a}
GTEST_SRC=${2:-$ROOT/.h6b_gtest}
OUT=${OUT:-/tmp/attention_out}
B=/tmp/attention_build
mkdir -p "$OUT" "$B"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv | tee "$OUT/device.txt"
date -u | tee -a "$OUT/device.txt"

python3 - "$ROOT" > "$B/stubs.cu" 2> "$OUT/stubs.txt" <<'PY'
import glob, re, sys
root = sys.argv[1]
hdr = open(f"{root}/tests/cuda/cuda_backend.h").read()
defined = "".join(open(f).read() for f in glob.glob(f"{root}/tests/cuda/*.cu"))
print('#include <stdexcept>\n#include "cuda/cuda_backend.h"\nnamespace dsa::test {')
for decl in re.findall(r"void\s+(\w+)\(([^;]*?)\)\s*override;", hdr, re.S):
    name, args = decl
    if f"CudaBackend::{name}(" in defined:
        continue
    args = re.sub(r"\s+", " ", args)
    print(f'void CudaBackend::{name}({args}) {{ throw std::runtime_error("{name}: no GPU wrapper in this build"); }}')
    print(name, file=sys.stderr)
print("}")
PY

cat > "$B/CMakeLists.txt" <<CM
cmake_minimum_required(VERSION 3.25)
project(attention_device LANGUAGES CXX CUDA)
set(CMAKE_CXX_STANDARD 20)
set(CMAKE_CUDA_STANDARD 17)
find_package(OpenMP REQUIRED COMPONENTS CXX)
find_package(CUDAToolkit REQUIRED)
set(INSTALL_GTEST OFF CACHE BOOL "" FORCE)
add_subdirectory($GTEST_SRC gtest)
file(GLOB CPU $ROOT/src/common/*.cpp $ROOT/src/cpu/*.cpp)
list(FILTER CPU EXCLUDE REGEX "layers[.]cpp")
file(GLOB CU $ROOT/src/cuda/*.cu)
add_library(ops STATIC \${CPU} \${CU})
target_include_directories(ops PUBLIC $ROOT/include $ROOT/src)
target_link_libraries(ops PUBLIC OpenMP::OpenMP_CXX CUDA::cudart CUDA::cublas)
target_compile_options(ops PRIVATE \$<\$<COMPILE_LANGUAGE:CUDA>:--expt-relaxed-constexpr -lineinfo> \$<\$<COMPILE_LANGUAGE:CXX>:-O3>)
file(GLOB T $ROOT/tests/*.cpp)
list(FILTER T EXCLUDE REGEX "(op_layers|model_|train_)[a-z_]*[.]cpp")
file(GLOB TC $ROOT/tests/cuda/*.cu)
add_executable(dsa_tests \${T} \${TC} stubs.cu)
target_include_directories(dsa_tests PRIVATE $ROOT/tests)
target_compile_definitions(dsa_tests PRIVATE DSA_HAVE_CUDA=1)
target_compile_options(dsa_tests PRIVATE \$<\$<COMPILE_LANGUAGE:CUDA>:--expt-relaxed-constexpr>)
target_link_libraries(dsa_tests PRIVATE ops GTest::gtest GTest::gtest_main)
add_executable(attention_bench $ROOT/bench/gpu/attention_bench.cu)
target_link_libraries(attention_bench PRIVATE ops)
CM

ROWS='*sparse_attention_forward__cuda*:*sparse_attention_backward__cuda*:*dense_attention_*__cuda*:*sparse_equals_dense__cuda*:*indexer_kl__cuda*:*sparse_attention_decode__cuda*:VariantRequests.Attention*:VariantRequests.AutoPicks*:VariantRequests.CublasBackward*'
FIRST=""
for A in $ARCH; do
  echo "== build (sm_$A)"
  ( cmake -S "$B" -B "$B/b_$A" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="$A" &&
    cmake --build "$B/b_$A" -j 16 ) > "$OUT/build_$A.log" 2>&1 || { grep -E "error|Error" "$OUT/build_$A.log" | head -40; exit 1; }
  [ -n "$FIRST" ] || FIRST=$A
  echo "== test rows (built for sm_$A; a non-native arch runs through the driver's PTX JIT)"
  "$B/b_$A/dsa_tests" --gtest_filter="$ROWS" > "$OUT/tests_$A.log" 2>&1
  grep -E "^\[  (     OK|FAILED|  PASSED|  SKIPPED) " "$OUT/tests_$A.log" | sort | uniq | tail -30
  grep -E "Failure|error:|Expected|Which is|got " "$OUT/tests_$A.log" | head -30
done
echo "stubbed wrappers: $(tr '\n' ' ' < "$OUT/stubs.txt")"
BIN="$B/b_$FIRST"
echo "== compute-sanitizer memcheck (cuda_exact rows + the bf16 tensor-core rows)"
V1=${MEMCHECK_FILTER:-'*attention*__cuda_exact*:*sparse_equals_dense__cuda_exact*:*indexer_kl__cuda_exact*:*sparse_attention_forward__cuda_mma*:*sparse_attention_decode__cuda_mma*:*sparse_attention_backward__cuda_cublas*'}
timeout "${MEMCHECK_S:-240}" compute-sanitizer --tool memcheck --error-exitcode 9 "$BIN/dsa_tests" --gtest_filter="$V1" > "$OUT/memcheck.log" 2>&1
echo "memcheck rc=$?"; grep -E "ERROR SUMMARY|Invalid|PASSED|FAILED" "$OUT/memcheck.log" | sort | uniq -c | head
if [ "${SKIP_RACE:-0}" = 1 ]; then echo "racecheck skipped (SKIP_RACE=1)"; else
echo "== compute-sanitizer racecheck"
timeout 200 compute-sanitizer --tool racecheck --error-exitcode 9 "$BIN/dsa_tests" \
  --gtest_filter='*sparse_attention_forward__cuda_exact*:*indexer_kl__cuda_exact*:*sparse_attention_decode__cuda_exact*:*sparse_attention_forward__cuda_mma*:*sparse_attention_decode__cuda_mma*' > "$OUT/racecheck.log" 2>&1
echo "racecheck rc=$?"; grep -E "RACECHECK SUMMARY|ERROR SUMMARY|hazard|PASSED|FAILED" "$OUT/racecheck.log" | sort | uniq -c | head
fi

echo "== benchmarks"
"$BIN/attention_bench" 2>&1 | tee "$OUT/bench.log"
[ "${SKIP_TORCH:-0}" = 1 ] || PYTHONUNBUFFERED=1 python3 "$ROOT/bench/gpu/attention_torch.py" 2>&1 | tee -a "$OUT/bench.log"
