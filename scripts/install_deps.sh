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

# `install_deps.sh --python` (what `make test` runs): the Python test environment in .venv at the
# repository root — torch (the CPU wheel from download.pytorch.org when that index answers, else PyPI's
# default wheel), pytest and numpy — for the package tests (python/tests, run by ctest). Without network
# this prints why and goes on; the Python tests are then reported as skipped by ctest.
if [ "${1:-}" = "--python" ]; then
  root="$(cd "$(dirname "$0")/.." && pwd)"
  venv="$root/.venv"
  py="${DSA_PYTHON:-python3}"
  if ! "$py" -m venv --help >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-venv python3-pip >/dev/null || true
  fi
  if ! "$venv/bin/python" -c "import torch, pytest, numpy" >/dev/null 2>&1; then
    echo "install_deps: creating $venv with torch, pytest, numpy (a few minutes, ~1-6 GB)"
    if ! { [ -x "$venv/bin/python" ] || "$py" -m venv "$venv"; } ||
       ! { "$venv/bin/pip" install -q --retries 0 --timeout 15 torch --index-url https://download.pytorch.org/whl/cpu 2>/dev/null ||
           "$venv/bin/pip" install -q torch; } ||
       ! "$venv/bin/pip" install -q pytest numpy; then
      echo "install_deps: could not install torch into $venv; the Python tests will be reported as skipped" >&2
    fi
  fi
fi
