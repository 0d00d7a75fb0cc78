#!/usr/bin/env bash
# Stages what a run on the GPU machine needs into .carry/ (git-ignored), for the device tool's
# `carry: [".carry"]`: the CUDA build's binaries, the shared libraries that machine lacks
# (OpenBLAS and its Fortran runtime, taken from this machine; MPI, HDF5, CUDA and NCCL are
# there already), this script's companion tools/bench_vs_torch.sh and the PyTorch reference
# shared/bench/torch_gpt.py.
#   tools/gpu-stage.sh [BUILD_DIR]      (default: build-cuda)
# Then, on the GPU machine:
#   export LD_LIBRARY_PATH=$PWD/.carry/lib:/usr/local/cuda/lib64:$LD_LIBRARY_PATH
#   .carry/btm_gpu_tests
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build-cuda}
carry=$root/.carry

binaries=("$build/btm" "$build/tests/btm_gpu_tests")
for b in "${binaries[@]}"; do
  [[ -x $b ]] || { echo "gpu-stage: $b is missing: build the CUDA configuration first" >&2; exit 2; }
done

rm -rf "$carry"
mkdir -p "$carry/lib"
cp "${binaries[@]}" "$carry/"

# The libraries the GPU machine does not have, resolved through this machine's loader.
for lib in libopenblas.so.0 libgfortran.so.5 libquadmath.so.0; do
  path=$(ldd "$build/btm" | awk -v l="$lib" '$1 == l { print $3 }')
  [[ -n $path ]] || path=$(ldconfig -p | awk -v l="$lib" '$1 == l { print $NF; exit }')
  [[ -n $path ]] || { echo "gpu-stage: $lib not found on this machine" >&2; exit 1; }
  cp -L "$path" "$carry/lib/$lib"
done

cp "$root/tools/bench_vs_torch.sh" "$carry/"
for torch_script in "$root/shared/bench/torch_gpt.py" "$root/../shared/bench/torch_gpt.py"; do
  if [[ -f $torch_script ]]; then
    cp "$torch_script" "$carry/"
    break
  fi
done

# Tokenized corpora for the end-to-end runs (tools/gpu-check.sh): the quick corpus, and the
# full-size domains that were prepared (data/full/corpus). The device tool carries 64 MiB.
if [[ -d $root/data/quick/corpus ]]; then
  mkdir -p "$carry/corpus-quick"
  cp "$root"/data/quick/corpus/*.h5 "$carry/corpus-quick/"
fi
if [[ -d $root/data/full/corpus ]]; then
  mkdir -p "$carry/corpus-full"
  cp "$root"/data/full/corpus/*.h5 "$carry/corpus-full/"
fi

du -sh "$carry"
ls -la "$carry" "$carry/lib"
