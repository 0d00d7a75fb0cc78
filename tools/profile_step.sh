#!/usr/bin/env bash
# Per-kernel time breakdown of btm's training step on the GPU machine: Nsight Compute times
# every kernel of two training steps (one warm-up, one timed; kernels run serialised, so the
# sum is the step's GPU time without overlap) and the kernels are grouped by name. The GPU runs
# at its own clocks (--clock-control none; Nsight Compute would otherwise lock them to base,
# about 25% slower than a training run's), so the times compare with the wall clock and with
# tools/profile_torch.py.
#   [CASE=train|eval] tools/profile_step.sh [CARRY_DIR] [LAYERS DIM HEADS SEQ BATCH]
# (default the 124M shape and the training step; CASE=eval profiles two evaluation batches)
set -euo pipefail
carry=${1:-.carry}
layers=${2:-12} dim=${3:-768} heads=${4:-12} seq=${5:-1024} batch=${6:-32}
case=${CASE:-train}
[[ $case == train || $case == eval ]] || { echo "profile_step: CASE must be train or eval, not '$case'" >&2; exit 2; }
out=${OUT:-/tmp}
csv="$out/profile_${case}_${layers}x${dim}_b${batch}.csv"
ncu --clock-control none --metrics gpu__time_duration.sum --csv --print-units base \
  "$carry/btm" bench --run.device cuda --model.n_layer "$layers" --model.d_model "$dim" \
  --model.n_head "$heads" --model.context "$seq" --model.vocab_size 50304 \
  --model.vocab_multiple 128 --data.batch "$batch" --steps 1 --warmup 1 --cases "$case" >"$csv" 2>/dev/null || true
# (the bench line printed under ncu is not a throughput figure: ncu serialises and replays kernels)
python3 - "$csv" "$case" <<'PY'
import csv, re, sys, collections
lines = open(sys.argv[1], errors="replace").read().splitlines()
start = next((i for i, l in enumerate(lines) if l.startswith('"ID"')), None)
if start is None:
    sys.exit("profile_step: no kernel table in the ncu output; its first lines:\n" + "\n".join(lines[:8]))
rows = list(csv.reader(lines[start:]))
head = rows[0]
name_i, value_i = head.index("Kernel Name"), head.index("Metric Value")
total = collections.Counter(); count = collections.Counter()
for r in rows[1:]:
    if len(r) <= max(name_i, value_i):
        continue
    name = r[name_i].replace("void ", "").replace("(anonymous namespace)::", "").replace("<unnamed>::", "")
    name = re.sub(r"[<(].*", "", name).strip()
    ns = float(r[value_i].replace(",", ""))
    total[name] += ns; count[name] += 1
all_ns = sum(total.values())
what = "training steps" if sys.argv[2] == "train" else "evaluation batches"
print(f"kernel time of 2 {what}: {all_ns / 1e6:.2f} ms GPU, {sum(count.values())} kernel launches")
print(f"{'kernel':60s} {'launches':>8s} {'ms':>9s} {'share':>7s}")
for name, ns in total.most_common(25):
    print(f"{name[:60]:60s} {count[name]:8d} {ns / 1e6:9.3f} {ns / all_ns:7.1%}")
PY
