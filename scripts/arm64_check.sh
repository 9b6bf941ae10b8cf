#!/usr/bin/env bash
# arm64_check.sh — the CPU backend on ARM64: cross-compiles the library and the test binary for
# aarch64-linux-gnu (Debian's cross g++) and runs the op table and the ISA tests under qemu-user
# emulation, on the NEON path and on the generic one.
#
#   scripts/arm64_check.sh [BUILD_DIR]      (default build-arm64)
#
# Set-up (Debian/Ubuntu, as root or with sudo): g++-aarch64-linux-gnu and qemu-user-static are
# installed when missing; the arm64 libraries the build links (BLIS, GoogleTest, SentencePiece) are
# downloaded as Debian packages and unpacked into BUILD_DIR/sysroot — the host's own packages are not
# touched (some -dev packages cannot be installed for two architectures at once).
# DSA_ARM64_FILTER narrows the tests (a gtest filter; default: the op table and the ISA tests).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-build-arm64}
case "$BUILD" in /*) ;; *) BUILD="$ROOT/$BUILD" ;; esac
FILTER=${DSA_ARM64_FILTER:-'Ops/*:CpuIsa.*'}
SYSROOT="$BUILD/sysroot"
PACKAGES=(libblis4-openmp libblis-openmp-dev libgtest-dev libgmock-dev libsentencepiece0 libsentencepiece-dev
          libprotobuf-lite32)

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

need=()
command -v aarch64-linux-gnu-g++ >/dev/null || need+=(g++-aarch64-linux-gnu)
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  as_root dpkg --add-architecture arm64
  as_root apt-get update -qq
fi
if [ ${#need[@]} -gt 0 ]; then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [ ! -f "$SYSROOT/.unpacked" ]; then
  rm -rf "$SYSROOT" "$BUILD/debs"
  mkdir -p "$SYSROOT" "$BUILD/debs"
  (cd "$BUILD/debs" && apt-get download -qq "${PACKAGES[@]/%/:arm64}" 2>/dev/null) ||
    { echo "arm64_check: could not download the arm64 packages ${PACKAGES[*]} (is arm64 in apt's sources?)" >&2; exit 1; }
  for deb in "$BUILD"/debs/*.deb; do dpkg-deb -x "$deb" "$SYSROOT"; done
  touch "$SYSROOT/.unpacked"
fi

cmake -S "$ROOT" -B "$BUILD" -DCMAKE_TOOLCHAIN_FILE="$ROOT/cmake/aarch64-linux-gnu.cmake" -DDSA_ARM64_SYSROOT="$SYSROOT" \
  -DCMAKE_BUILD_TYPE=Release -DDSA_ENABLE_CUDA=OFF -DDSA_BUILD_BENCH=OFF -DDSA_FUZZ_SECONDS=0 >/dev/null
cmake --build "$BUILD" -j "$(nproc)" --target dsa_tests dsa_cli

# The emulated loader finds the toolchain's libraries (-L) and the unpacked ones (LD_LIBRARY_PATH).
export QEMU_LD_PREFIX=/usr/aarch64-linux-gnu
export LD_LIBRARY_PATH="$SYSROOT/usr/lib/aarch64-linux-gnu:$SYSROOT/usr/lib/aarch64-linux-gnu/blis-openmp"
# One OpenMP thread: emulation gains nothing from two, and two threads under qemu-user on a busy machine
# were measured to run more than 50x slower than one.
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive
run() { qemu-aarch64-static "$@"; }
echo "== $(file -b "$BUILD/dsa" 2>/dev/null || echo "$BUILD/dsa") =="
run "$BUILD/dsa" version
for isa in neon generic; do
  echo "== op table, DSA_CPU_ISA=$isa (qemu-aarch64) =="
  DSA_CPU_ISA=$isa run "$BUILD/tests/dsa_tests" --gtest_filter="$FILTER" --gtest_brief=1
done
