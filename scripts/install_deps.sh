#!/usr/bin/env bash
# Installs the Debian packages the build needs, only those that are missing. Called by `make`.
set -euo pipefail
need=()
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
for pkg in cmake g++ make libgtest-dev libgmock-dev libbenchmark-dev libomp-dev libopenblas-dev \
           libblis-openmp-dev pkg-config libsentencepiece-dev sentencepiece gnuplot-nox clang; do
  have "$pkg" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "install_deps: installing ${need[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# libFuzzer's runtime for the fuzz tests (fuzz/run_fuzz.sh): a separate package for some clang versions.
clang_major=$(clang++ --version 2>/dev/null | sed -n 's/.*clang version \([0-9]*\).*/\1/p' | head -n 1)
rt="libclang-rt-${clang_major}-dev"
if [ -n "$clang_major" ] && ! have "$rt" && apt-cache show "$rt" >/dev/null 2>&1; then
  echo "install_deps: installing $rt"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$rt" >/dev/null
fi
