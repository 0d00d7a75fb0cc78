#!/usr/bin/env bash
# How btm's training scales over the GPUs of one machine: the same model and per-rank batch on
# 1 rank, then on R ranks (a) as R independent ELM groups (BTM's groups never communicate, so
# the aggregate should be R times one rank's) and (b) as one ELM data-parallel over R ranks (the
# gradients all-reduced per layer over NCCL while the backward continues). Prints every JSON
# line of `btm bench` and a ratio line per R. Meant for the GPU machine, from the directory
# tools/gpu-stage.sh filled:
#   tools/bench_scaling.sh [CARRY_DIR] [LAYERS DIM HEADS SEQ BATCH]   (default: 124M shape, B=32)
# Environment: RANKS (default: 2, 4, 8 ... up to the visible GPUs), STEPS (default 20),
# DEVICE (default cuda; cpu for a dry run without GPUs, with RANKS given), MPIRUN_FLAGS (extra
# mpirun flags, e.g. --oversubscribe), OUT (if set, receives scaling.jsonl and scaling.txt).
set -euo pipefail
carry=${1:-.carry}
layers=${2:-12} dim=${3:-768} heads=${4:-12} seq=${5:-1024} batch=${6:-32}
steps=${STEPS:-20} device=${DEVICE:-cuda}
out=${OUT:-$(mktemp -d)}
mkdir -p "$out"
lines="$out/scaling.jsonl"
: >"$lines"
if (($(id -u) == 0)); then  # Open MPI refuses root without these (the GPU machine runs as root)
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi

ranks=${RANKS:-}
if [[ -z $ranks ]]; then
  gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
  for ((r = 2; r <= gpus; r *= 2)); do ranks+="$r "; done
fi
[[ -n $ranks ]] || { echo "bench_scaling: fewer than 2 GPUs visible (set RANKS for a dry run)" >&2; exit 2; }

bench=(bench --run.device "$device" --model.n_layer "$layers" --model.d_model "$dim"
  --model.n_head "$heads" --model.context "$seq" --model.vocab_size 50304
  --model.vocab_multiple 128 --data.batch "$batch" --steps "$steps" --warmup 5)

# run NAME RANKS RANKS_PER_ELM CASES: the bench's JSON lines, each tagged with "run": NAME.
run() {
  # shellcheck disable=SC2086  # MPIRUN_FLAGS is a list of flags
  mpirun ${MPIRUN_FLAGS:-} -np "$2" "$carry/btm" "${bench[@]}" --run.ranks_per_elm "$3" \
    --cases "$4" | grep '^{' | sed "s/^{/{\"run\": \"$1\", /" | tee -a "$lines"
}

run single 1 1 train
for r in $ranks; do
  run "groups_$r" "$r" 1 train
  run "parallel_$r" "$r" "$r" train,allreduce
done

python3 - "$lines" $ranks <<'PY' | tee "$out/scaling.txt"
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
def one(run, case):
    found = [r for r in rows if r["run"] == run and r["case"] == case]
    if not found:
        sys.exit(f"bench_scaling: no {case} line from the {run} run")
    return found[0]
base = one("single", "train")
print(f"{base['layers']}x{base['dim']} T={base['seq']} B={base['batch_per_rank']} per rank, "
      f"{base['system']}: 1 rank {base['tokens_per_s']:.0f} tok/s")
for r in map(int, sys.argv[2:]):
    groups = one(f"groups_{r}", "aggregate")["tokens_per_s"]
    parallel = one(f"parallel_{r}", "train")["tokens_per_s"]
    reduce = one(f"parallel_{r}", "allreduce")
    print(f"{r} ranks: {r} ELM groups {groups:.0f} tok/s = {groups / base['tokens_per_s']:.2f}x; "
          f"1 ELM data-parallel {parallel:.0f} tok/s = {parallel / base['tokens_per_s']:.2f}x "
          f"(all-reduce of {reduce['bytes'] / 2**20:.0f} MiB: busbw {reduce['busbw_gbs']:.1f} GB/s)")
PY
