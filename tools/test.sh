#!/usr/bin/env bash
# Builds btm and runs its whole test suite: the CPU configuration with every test, then the
# CUDA configuration (compiled and linked; its GPU tests run where a GPU is visible and are
# reported as skipped elsewhere). Installs what it needs first. Used by CI (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

tools/install-deps.sh
tools/fetch-gpt2-bpe.sh data/gpt2

echo "== CPU configuration"
cmake -S . -B build -DBTM_CUDA=OFF -DBTM_WERROR=ON >/dev/null
cmake --build build -j"$jobs"
(cd build && ctest --output-on-failure --timeout 1800)

nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
if [[ -x "$nvcc" ]]; then
  echo "== CUDA configuration (sm_90a)"
  cmake -S . -B build-cuda -DBTM_CUDA=ON -DBTM_WERROR=ON -DCMAKE_CUDA_COMPILER="$nvcc" >/dev/null
  cmake --build build-cuda -j"$jobs"
  # Without a GPU every GPU test reports itself as skipped; the CPU tests already ran above.
  (cd build-cuda && ctest --output-on-failure -R 'Gpu|Cuda|Nccl' --timeout 1800) || exit 1
else
  echo "== CUDA configuration skipped: no nvcc found"
fi
echo "all tests passed"
