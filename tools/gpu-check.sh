#!/usr/bin/env bash
# The GPU machine's acceptance run, from the directory tools/gpu-stage.sh filled (.carry) and a
# copy of the source tree (inputs/). Each step's full output goes to OUT/NAME.txt; a summary
# line per step is printed. Steps (default: all): tests e2e scaling 124m hf valid
#   tests  the GPU test suite through ctest (every kernel vs the CPU reference, model, resume),
#          then the NCCL tests on 2 ranks
#   e2e    btm run with inputs/gpu-small.cfg: 2 groups x 1 GPU, then 1 ELM per 2 GPUs (with one
#          GPU: the same layouts with both ranks sharing it)
#   scaling  tools/bench_scaling.sh: 1 GPU vs R GPUs as R ELM groups and as one data-parallel ELM
#   124m   the GPT-2 124M shape, a few hundred steps on one real domain
#   hf     the seed of the e2e forest against Hugging Face GPT2LMHeadModel (tools/compare_hf.py)
#   valid  validation during training on the GPU: a short forest with and without it
#          (run.eval_blocks 0) has the same bits in every checkpoint; the validation table is
#          there; the progress lines show MFU and memory
#   tools/gpu-check.sh [STEP...]       (OUT defaults to /tmp/btm-gpu-check)
set -uo pipefail
carry=$(cd "${CARRY:-.carry}" && pwd)
out=${OUT:-/tmp/btm-gpu-check}
runs=${RUNS:-/tmp/btm-gpu-runs}  # run directories (checkpoints are large); their small files go to OUT
mkdir -p "$out" "$runs"
source "$(dirname "$0")/gpu-env.sh"
gpus=$(nvidia-smi -L | grep -c '^GPU')
status=0

step() {  # step NAME COMMAND...: runs, times, records
  local name=$1; shift
  local start=$SECONDS
  "$@" >"$out/$name.txt" 2>&1
  local rc=$?
  echo "[$name] rc=$rc in $((SECONDS - start)) s: $*"
  tail -4 "$out/$name.txt" | sed 's/^/    /'
  ((rc == 0)) || status=1
}

tests() {
  cat >"$carry/CTestTestfile.cmake" <<CT
add_test(gpu_tests "$carry/btm_gpu_tests")
set_tests_properties(gpu_tests PROPERTIES ENVIRONMENT "BTM_BINARY=$carry/btm;BTM_GPU_LARGE_TESTS=1")
CT
  ((gpus < 2)) || echo "add_test(nccl_tests_2_ranks mpirun -np 2 \"$carry/btm_gpu_tests\" --gtest_filter=Nccl*)" >>"$carry/CTestTestfile.cmake"
  step ctest bash -c "cd '$carry' && ctest --output-on-failure -V"
  grep -E '(PASSED|FAILED|SKIPPED) +\]|tests passed|==========\]' "$out/ctest.txt" | sed 's/^/    /'
}

# staged CORPUS STEP: whether tools/gpu-stage.sh staged corpus-CORPUS; says so when it did not.
staged() {
  [[ -d $carry/corpus-$1 ]] && return
  echo "[$2] skipped: no corpus-$1 in $carry (stage with CORPORA=$1 tools/gpu-stage.sh)"
  return 1
}

e2e() {
  staged quick e2e || return 0
  local common=(--config inputs/gpu-small.cfg --data.corpus "$carry/corpus-quick")
  if ((gpus >= 2)); then
    step e2e_2groups mpirun -np 2 "$carry/btm" run "${common[@]}" --run.dir "$runs/e2e-2x1" --run.ranks_per_elm 1
    step e2e_1elm_2gpus mpirun -np 2 "$carry/btm" run "${common[@]}" --run.dir "$runs/e2e-1x2" --run.ranks_per_elm 2
  else
    # The same two layouts with both ranks on the one GPU (run.share_gpus): the groups, the
    # collective phase and data parallelism run as on two GPUs, the gradients over MPI, not NCCL.
    echo "[e2e] one GPU: the 2-rank layouts share it (run.share_gpus; NCCL needs 2 GPUs)"
    step e2e_2groups_shared mpirun -np 2 "$carry/btm" run "${common[@]}" --run.dir "$runs/e2e-2x1" \
      --run.ranks_per_elm 1 --run.share_gpus true
    # Shorter (200 steps, no dense baseline: the run above had one) so that both fit in one
    # 10-minute device call (on an H200: 250 s and 116 s; at full length the second had not
    # finished after 190 s).
    step e2e_1elm_2ranks_shared mpirun -np 2 "$carry/btm" run "${common[@]}" \
      --run.dir "$runs/e2e-1x2" --run.ranks_per_elm 2 --run.share_gpus true \
      --run.steps 200 --run.dense false
  fi
}

gpt2_124m() {
  staged full 124m || return 0
  step gpt2_124m "$carry/btm" run --config inputs/gpt2-124m.cfg --data.corpus "$carry/corpus-full" \
    --data.domains religious --data.eval_domains "" --data.batch 16 \
    --run.steps 300 --run.seed_share 0 --run.dense false --run.log_every 25 \
    --run.checkpoint_every 400 --eval.blocks 32 --eval.prior_blocks 16 --run.dir "$runs/gpt2-124m"
}

scaling() {
  if ((gpus < 2)); then
    echo "[scaling] one GPU: the group and data-parallel scaling rows need 2 or more"
    return
  fi
  step scaling env OUT="$out" "$(dirname "$0")/bench_scaling.sh" "$carry"
}

hf() {
  # A small trained checkpoint: HF_CHECKPOINT, else the e2e forest's seed.
  step compare_hf python3 tools/compare_hf.py --btm "$carry/btm" \
    --checkpoint "${HF_CHECKPOINT:-$runs/e2e-2x1/elms/seed.h5}" --batch 2
}

valid() {
  staged quick valid || return 0
  local common=(--config inputs/gpu-small.cfg --data.corpus "$carry/corpus-quick" --run.steps 120
                --run.log_every 20 --run.eval_every 20 --run.checkpoint_every 50 --no-eval)
  step valid_on "$carry/btm" run "${common[@]}" --run.dir "$runs/valid-on"
  step valid_off "$carry/btm" run "${common[@]}" --run.dir "$runs/valid-off" --run.eval_blocks 0
  grep -m2 -E '^\[(seed|religious)\] step' "$out/valid_on.txt" | sed 's/^/    /'
  grep -m2 -E '^\[(seed|religious)\] valid' "$out/valid_on.txt" | sed 's/^/    /'
  step valid_compare python3 - "$runs/valid-on" "$runs/valid-off" <<'PY'
import os, sys
import h5py
on, off = sys.argv[1], sys.argv[2]
bad = 0
for name in sorted(os.listdir(os.path.join(on, "elms"))):
    with h5py.File(os.path.join(on, "elms", name)) as a, h5py.File(os.path.join(off, "elms", name)) as b:
        same = all(a[k][()].tobytes() == b[k][()].tobytes() for k in ("params", "adam_m", "adam_v"))
    with h5py.File(os.path.join(on, "metrics", name)) as m:
        v = m["valid"]
        ppl = v["perplexity"][()]
        print(f"{name[:-3]}: checkpoints {'identical' if same else 'DIFFER'} with and without "
              f"validation; {len(v['step'])} validations at steps {v['step'][()].tolist()}, last "
              f"perplexity {dict(zip([d.decode() if isinstance(d, bytes) else d for d in v.attrs['domains']], [round(float(x), 2) for x in ppl[-1]]))}; "
              f"units {m['loss'].attrs['units']}, {v['perplexity'].attrs['units']}")
    bad += not same
print("valid: " + ("every checkpoint identical" if not bad else f"{bad} checkpoints differ"))
sys.exit(1 if bad else 0)
PY
}

steps=${*:-tests e2e scaling 124m hf valid}
echo "gpu-check on $gpus GPU(s): $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
for s in $steps; do
  case $s in
    tests) tests ;;
    e2e) e2e ;;
    124m) gpt2_124m ;;
    scaling) scaling ;;
    hf) hf ;;
    valid) valid ;;
    *) echo "gpu-check: unknown step $s" >&2; exit 2 ;;
  esac
done
# Forest manifests, metrics and eval files (not the checkpoints) come back in OUT.
(cd "$runs" && find . -name '*.h5' -not -path '*/elms/*' -exec cp --parents {} "$out/" \;)
exit $status
