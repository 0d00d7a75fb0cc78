#!/usr/bin/env bash
# Runs `btm bench` (training step, and the evaluation forward) and the PyTorch reference
# torch_gpt.py (torch.compile, bf16 autocast, fused AdamW, SDPA flash attention) on the same
# GPU, one after the other in the same call, and prints the JSON lines and the ratios
# btm / torch. Meant for the GPU machine, from the directory tools/gpu-stage.sh filled:
#   bench_vs_torch.sh [CARRY_DIR] [LAYERS DIM HEADS SEQ BATCH [VOCAB [STEPS]]]
# e.g. bench_vs_torch.sh .carry 12 768 12 1024 32 50304 20
# ATTENTIONS="flash materialized" benchmarks both attention kernels (default: auto).
# BASELINE=PATH/btm also benchmarks another build (an earlier commit's) with the same flags, in
# the same call, and prints its line beside this one's ("baseline").
# OUT (if set) receives btm_<attention>.json, torch.json and ratio.txt.
set -euo pipefail

carry=${1:-.carry}
layers=${2:-12} dim=${3:-768} heads=${4:-12} seq=${5:-1024} batch=${6:-32}
vocab=${7:-50304} steps=${8:-20}
out=${OUT:-/tmp}
tag="${layers}x${dim}_b${batch}"

bench() {  # bench BINARY TAG ATTENTION
  local attention=$3
  "$1" bench --run.device cuda --model.n_layer "$layers" --model.d_model "$dim" \
    --model.n_head "$heads" --model.context "$seq" --model.vocab_size "$vocab" \
    --model.vocab_multiple 128 --data.batch "$batch" --steps "$steps" --warmup 5 \
    --attention "$attention" --cases train,eval >"$out/btm_${tag}_$2.txt"
  grep '"case": "train"' "$out/btm_${tag}_$2.txt" | tee "$out/btm_${tag}_$2.json"
  grep '"case": "eval"' "$out/btm_${tag}_$2.txt" | tee "$out/btm_eval_${tag}_$2.json"
}
for attention in ${ATTENTIONS:-auto}; do
  bench "$carry/btm" "$attention" "$attention"
  [[ -z ${BASELINE:-} ]] || bench "$BASELINE" "baseline-$attention" "$attention"
done

PYTHONUNBUFFERED=1 python3 "$carry/torch_gpt.py" --layers "$layers" --dim "$dim" \
  --heads "$heads" --seq "$seq" --batch "$batch" --vocab "$vocab" --steps "$steps" |
  grep '^{' | tail -1 | tee "$out/torch_$tag.json"

python3 - "$out/torch_$tag.json" "$out"/btm_"${tag}"_*.json <<'PY' | tee "$out/ratio_$tag.txt"
import json, os, sys
torch = json.load(open(sys.argv[1]))
for path in sys.argv[2:]:
    btm = json.load(open(path))
    evalp = path.replace("btm_", "btm_eval_")
    ev = json.load(open(evalp)) if os.path.exists(evalp) else None
    label = os.path.basename(path)[:-5].split("_")[-1]  # the attention, or baseline-ATTENTION
    print(f"{btm['layers']}x{btm['dim']} T={btm['seq']} B={btm['batch_per_rank']}: btm ({label}) "
          f"/ torch tokens/s = {btm['tokens_per_s'] / torch['tokens_per_s']:.3f} "
          f"({btm['tokens_per_s']:.0f} vs {torch['tokens_per_s']:.0f} {torch['system']}); "
          f"MFU {btm.get('mfu', 0):.3f} vs {torch['mfu']:.3f}; btm memory {btm['mem_gib']:.1f} GiB"
          + (f"; eval forward {ev['tokens_per_s']:.0f} tok/s = {ev['tokens_per_s'] / btm['tokens_per_s']:.2f}x btm training" if ev else ""))
PY
