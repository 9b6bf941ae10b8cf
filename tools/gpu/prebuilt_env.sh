# tools/gpu/prebuilt_env.sh — sourced by the GPU training scripts (train_gpu.sh, retrieval_sweep.sh):
# the prebuilt binaries, the shared libraries the device image lacks, the corpus copied alongside, $OUT.
#   DSA_BIN  [.gpu-prof/bin]   DSA_LIB  [.gpu-prof/lib]   DSA_DATA (txt/.complete inside) [.gpu-data]
set -uo pipefail
OUT=${OUT:-/tmp/dsa_gpu_out}
mkdir -p "$OUT"
ROOT=$(pwd)
BIN=$(cd "${DSA_BIN:-.gpu-prof/bin}" && pwd)
LIB=$(cd "${DSA_LIB:-.gpu-prof/lib}" && pwd)
DATA=$(cd "${DSA_DATA:-.gpu-data}" && pwd)
export LD_LIBRARY_PATH=$LIB:${LD_LIBRARY_PATH:-}
export OMP_WAIT_POLICY=passive
