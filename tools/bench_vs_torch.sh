#!/usr/bin/env bash
# Runs the btm CUDA engine's training benchmark and the PyTorch reference (torch_gpt.py,
# torch.compile) on the same GPU, one after the other, and prints the JSON lines and the
# throughput ratios btm / torch. Meant for the GPU machine, from the directory that
# tools/gpu-stage.sh filled (default .carry):
#   bench_vs_torch.sh [CARRY_DIR] [LAYERS DIM HEADS SEQ BATCH [VOCAB [STEPS]]]
# e.g. bench_vs_torch.sh .carry 12 768 12 1024 32 50304 20
# ATTENTIONS="flash materialized" benchmarks both attention kernels (default: auto).
# OUT (if set) receives btm_<attention>.json, torch.json and ratio.txt.
set -euo pipefail

carry=${1:-.carry}
layers=${2:-12} dim=${3:-768} heads=${4:-12} seq=${5:-1024} batch=${6:-32}
vocab=${7:-50304} steps=${8:-20}
out=${OUT:-/tmp}

for attention in ${ATTENTIONS:-auto}; do
  line=$(BTM_BENCH="$layers,$dim,$heads,$seq,$batch,$vocab" BTM_BENCH_STEPS=$steps \
    BTM_BENCH_WARMUP=5 BTM_BENCH_ATTENTION=$attention \
    "$carry/btm_gpu_tests" --gtest_filter=CudaBench.FromEnvironment |
    grep '^{"system": "btm-cuda"' || true)
  [[ -n $line ]] || { echo "bench_vs_torch: btm ($attention) printed no JSON line" >&2; exit 1; }
  echo "$line" | tee "$out/btm_$attention.json"
done

torch_line=$(PYTHONUNBUFFERED=1 python3 "$carry/torch_gpt.py" --layers "$layers" --dim "$dim" \
  --heads "$heads" --seq "$seq" --batch "$batch" --vocab "$vocab" --steps "$steps" |
  grep '^{' | tail -1)
echo "$torch_line" | tee "$out/torch.json"

python3 - "$out/torch.json" "$out"/btm_*.json <<'PY' | tee "$out/ratio.txt"
import json, sys
torch = json.load(open(sys.argv[1]))
for path in sys.argv[2:]:
    btm = json.load(open(path))
    print(f"btm ({btm['attention']}) / torch tokens/s = "
          f"{btm['tokens_per_s'] / torch['tokens_per_s']:.3f} "
          f"({btm['tokens_per_s']:.0f} vs {torch['tokens_per_s']:.0f}, {torch['system']})")
PY
