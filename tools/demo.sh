#!/usr/bin/env bash
# README's main-job command: the whole BTM pipeline on the embedded default, from nothing.
#   1. installs the Debian packages (tools/install-deps.sh) and GPT-2's BPE files
#   2. builds btm: the CUDA configuration when a GPU is visible (build-cuda/), else CPU (build/)
#   3. builds the quick corpus once: 3 train domains + 1 held-out domain of real English text
#      from Debian packages, 3 MB each (tools/build_corpus.py --quick), tokenized with GPT-2 BPE
#   4. runs `btm run --config inputs/tiny.cfg` on one rank per GPU (2 ranks on a CPU machine):
#      seed -> branch -> train 3 ELMs -> merge -> dense baseline -> evaluation (runs/tiny)
#   5. renders the report: runs/tiny/report/report.md and its plots
# Rerunning continues an interrupted run and trains nothing that is finished.
# Extra arguments go to `btm run`, e.g. tools/demo.sh --run.steps 400 --run.dir runs/longer
set -euo pipefail
cd "$(dirname "$0")/.."
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
jobs=$(nproc)

tools/install-deps.sh
tools/fetch-gpt2-bpe.sh data/gpt2

gpus=0
if command -v nvidia-smi >/dev/null 2>&1; then
  gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
fi
nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
if ((gpus > 0)) && [[ -x "$nvcc" ]]; then
  build=build-cuda
  cmake -S . -B "$build" -DBTM_CUDA=ON -DCMAKE_CUDA_COMPILER="$nvcc" >/dev/null
  ranks=$gpus
else
  build=build
  cmake -S . -B "$build" -DBTM_CUDA=OFF >/dev/null
  ranks=$((jobs >= 2 ? 2 : 1))
fi
echo "== building btm in $build"
cmake --build "$build" -j"$jobs" --target btm

if [[ ! -f data/quick/corpus/.complete ]]; then
  echo "== building the quick corpus (real text from Debian packages)"
  /usr/bin/python3 tools/build_corpus.py --quick --out data/quick/text --work data/work
  mpirun -np "$ranks" "$build/btm" prepare --input data/quick/text --out data/quick/corpus \
    --tokenizer gpt2 --bpe-dir data/gpt2
  touch data/quick/corpus/.complete
fi

echo "== btm run on $ranks rank(s): mpirun -np $ranks $build/btm run --config inputs/tiny.cfg $*"
mpirun -np "$ranks" "$build/btm" run --config inputs/tiny.cfg "$@"

run_dir=runs/tiny
for ((i = 1; i <= $#; i++)); do
  if [[ "${!i}" == "--run.dir" ]]; then j=$((i + 1)); run_dir="${!j}"; fi
done
/usr/bin/python3 tools/report.py "$run_dir"
echo "== done: $run_dir/eval.h5, $run_dir/report/report.md"
