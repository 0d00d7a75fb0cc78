#!/usr/bin/env bash
# Stages what a run on the GPU machine needs into .carry/ (git-ignored), for the device tool's
# `carry: [".carry"]`: the CUDA build's binaries, the shared libraries that machine lacks
# (OpenBLAS and its Fortran runtime, HDF5's high-level library for eval.h5's dimension scales,
# taken from this machine, xz-compressed: lib.tar.xz; MPI, HDF5, CUDA and NCCL are there
# already), this script's companion tools/bench_vs_torch.sh, the PyTorch reference
# tools/torch_gpt.py, and GPT-2's BPE files.
#   [CORPORA=quick|full|""] [TEXT=full] tools/gpu-stage.sh [BUILD_DIR]   (default: build-cuda, quick)
# TEXT=full stages data/full/text (tools/build_corpus.py's 8 + 2 domains) as text-full.tar.xz,
# for tools/study.sh to tokenize there (btm prepare on its cores takes seconds).
# Then, on the GPU machine:
#   source tools/gpu-env.sh        (unpacks lib.tar.xz, sets LD_LIBRARY_PATH)
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
[[ -f $root/data/gpt2/encoder.json ]] || "$root/tools/fetch-gpt2-bpe.sh" "$root/data/gpt2"
cp -r "$root/data/gpt2" "$carry/gpt2"

# The libraries the GPU machine does not have, resolved through this machine's loader.
for lib in libopenblas.so.0 libgfortran.so.5 libquadmath.so.0 libhdf5_serial_hl.so.100; do
  path=$(ldd "$build/btm" | awk -v l="$lib" '$1 == l { print $3 }')
  [[ -n $path ]] || path=$(ldconfig -p | awk -v l="$lib" '$1 == l { print $NF; exit }')
  [[ -n $path ]] || { echo "gpu-stage: $lib not found on this machine" >&2; exit 1; }
  cp -L "$path" "$carry/lib/$lib"
done
# 36 MB raw, 4 MB as xz: unpacked there by tools/gpu-env.sh.
tar cJf "$carry/lib.tar.xz" -C "$carry" lib
rm -rf "$carry/lib"

cp "$root/tools/bench_vs_torch.sh" "$root/tools/torch_gpt.py" "$carry/"

# Tokenized corpora for the end-to-end runs (tools/gpu-check.sh): CORPORA picks them, "quick"
# (the default; the e2e step), "full" (the full-size domains prepared in data/full/corpus; the
# 124m step; with the binaries and libraries both do not fit), or "" (tests and benchmarks).
for corpus in ${CORPORA-quick}; do
  if [[ -d $root/data/$corpus/corpus ]]; then
    mkdir -p "$carry/corpus-$corpus"
    cp "$root"/data/"$corpus"/corpus/*.h5 "$carry/corpus-$corpus/"
  fi
done

if [[ ${TEXT:-} == full ]]; then
  [[ -d $root/data/full/text ]] ||
    { echo "gpu-stage: no data/full/text: run tools/build_corpus.py --out data/full/text" >&2; exit 2; }
  XZ_OPT=-T0 tar cJf "$carry/text-full.tar.xz" -C "$root/data/full" text
fi

# The device tool carries 64 MiB in all.
mib=$(du -sm "$carry" | cut -f1)
if ((mib > 63)); then
  echo "gpu-stage: $carry holds $mib MiB, over the 64 MiB the device tool carries:" \
    "stage fewer corpora (CORPORA=quick, or CORPORA= for none)" >&2
  exit 1
fi
du -sh "$carry"
ls -la "$carry"
