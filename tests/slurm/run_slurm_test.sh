#!/usr/bin/env bash
# tests/slurm/run_slurm_test.sh BTM_BINARY: the jobs/ scripts on a real single-node Slurm that
# this test starts and stops itself (tests/slurm/cluster.sh), with a tiny CPU config on
# synthetic corpora. ctest runs it (label "slurm"). What it submits and checks:
#   1. forest.sbatch with an unknown domain: fails at once with exit 2, never requeued;
#   2. forest.sbatch, 2 ranks on 2 fake GPUs, BTM_DEVICE=cpu: while the second wave of ELMs
#      trains, SIGUSR1 goes to the batch shell (`scancel --batch --signal=USR1`, exactly what
#      `#SBATCH --signal=B:USR1@120` does before the time limit); btm checkpoints and exits 75,
#      the job requeues itself, runs again and completes; models finished before the signal are
#      not trained again; forest.h5 lists every ELM trained, with complete metrics;
#   3. add-domain.sbatch (after 2, by --dependency): branches ELM 'e' as a weighted average of
#      a..d, trains it, evaluates;
#   4. dense.sbatch with BTM_LAUNCHER=mpirun on a CPU-only allocation (no GPUs asked for);
#   5. eval.sbatch;
#   6. (alongside the others) the real time-limit warning: forest.sbatch with --time=1
#      --signal=B:USR1@50 around a stand-in for btm (fake_btm.sh), so Slurm itself sends the
#      signal: the job must exit 75 on it, requeue itself and complete on the restart.
# Exit 0 when every check holds, 1 otherwise, 77 (skipped) without Slurm, munge or h5py.
# BTM_SLURM_KEEP=1 keeps the temporary directory (cluster logs, job outputs, run directories).
set -uo pipefail

if (($# != 1)); then
  echo "usage: $0 BTM_BINARY" >&2
  exit 2
fi
BTM_BIN=$(realpath "$1")
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/../.." && pwd)
PY=/usr/bin/python3  # Debian's, which has h5py (not a pyenv or venv python)

for tool in munged slurmctld slurmd sbatch scontrol scancel srun mpirun; do
  if ! command -v "$tool" >/dev/null; then
    echo "SKIP: $tool not found (tools/install-deps.sh installs Slurm, munge and Open MPI)"
    exit 77
  fi
done
if ! "$PY" -c 'import h5py' 2>/dev/null; then
  echo "SKIP: $PY has no h5py (apt-get install python3-h5py)"
  exit 77
fi

TEST_START=$SECONDS
WORK=$(mktemp -d /tmp/btm-slurm-XXXXXX)
PASSED=0
FAILED=0

# shellcheck source=tests/slurm/cluster.sh
source "$HERE/cluster.sh"

finish() {
  local rc=$?
  slurm_cluster_stop
  if ((FAILED > 0 || rc != 0)); then
    echo "---- slurmctld log (tail)"
    tail -n 25 "$WORK/cluster/log/slurmctld.log" 2>/dev/null
    echo "---- slurmd log (tail)"
    tail -n 25 "$WORK/cluster/log/slurmd.log" 2>/dev/null
  fi
  if [[ ${BTM_SLURM_KEEP:-0} == 1 ]]; then
    echo "kept $WORK"
  else
    rm -rf "$WORK"
  fi
}
trap finish EXIT
trap 'exit 1' INT TERM

pass() {
  PASSED=$((PASSED + 1))
  echo "ok: $*"
}
fail() {
  FAILED=$((FAILED + 1))
  echo "FAILED: $*"
}
# check DESCRIPTION COMMAND...: passes when the command succeeds.
check() {
  local what=$1
  shift
  if "$@"; then pass "$what"; else fail "$what"; fi
}
elapsed() { echo "$((SECONDS - TEST_START)) s"; }

# One field of `scontrol show job` (JobState, Restarts, ExitCode, ...).
job_field() {
  scontrol -o show job "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p"
}
# wait_job JOB TIMEOUT STATE...: waits until the job is in one of the states; prints it.
wait_job() {
  local job=$1 timeout=$2 state
  shift 2
  local deadline=$((SECONDS + timeout))
  while ((SECONDS < deadline)); do
    state=$(job_field "$job" JobState)
    for want in "$@"; do
      if [[ $state == "$want" ]]; then
        echo "$state"
        return 0
      fi
    done
    sleep 0.3
  done
  echo "${state:-unknown}"
  return 1
}
# wait_output JOB FILE PATTERN TIMEOUT: waits until FILE has a line matching PATTERN (grep -E);
# gives up early when the job has ended.
wait_output() {
  local deadline=$((SECONDS + $4))
  until grep -Eq "$3" "$2" 2>/dev/null; do
    ((SECONDS < deadline)) || return 1
    case $(job_field "$1" JobState) in
      COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY) return 1 ;;
    esac
    sleep 0.2
  done
}
show_output() {
  echo "---- $1"
  cat "$1" 2>/dev/null
  echo "----"
}
# not_trained_in NAME TEXT: btm's log TEXT shows no training of model NAME.
not_trained_in() { ! grep -Eq "^\[$1\] (starting at|continuing at|step )" <<<"$2"; }
last_line_has() { tail -n 1 "$1" | grep -qF "$2"; }
submit() {
  local job
  job=$(sbatch --parsable "$@") || {
    fail "sbatch $*"
    exit 1
  }
  echo "${job%%;*}"
}

cd "$WORK" || exit 1
echo "== starting a single-node Slurm in $WORK/cluster"
slurm_cluster_start "$WORK/cluster" 8 4 || exit 1
pass "cluster up: $(sinfo -h -N -o '%N %T cpus=%c gres=%G') ($(elapsed))"

echo "== synthetic corpora a b c d (train) and e (held out)"
"$PY" "$HERE/make_corpus.py" "$WORK/corpus" a b c d e --train-tokens 20000 || exit 1
cat >"$WORK/tiny-slurm.cfg" <<EOF
# A tiny forest for the Slurm test: 2 ranks train 4 ELMs of 500 steps in 2 waves, a few
# seconds each, so the signal lands while the second wave trains.
[model]
n_layer = 2
n_head = 2
d_model = 64
context = 32
vocab_size = 257

[optim]
lr = 2e-3
warmup_fraction = 0.05

[data]
corpus = $WORK/corpus
domains = a,b,c,d
eval_domains = e
batch = 4

[run]
dir = $WORK/run
steps = 1000
seed_share = 0.5
ranks_per_elm = 1
checkpoint_every = 50
log_every = 10
threads = 1
dense = false

[eval]
blocks = 4
prior_blocks = 4
prior_batch = 2
EOF

# What every job gets (sbatch passes the environment on). BTM_ROOT is left unset: the scripts
# find jobs/common.sh beside themselves.
export BTM_BIN BTM_CONFIG=$WORK/tiny-slurm.cfg BTM_DEVICE=cpu
unset BTM_ROOT BTM_RUN_DIR BTM_ARGS BTM_LAUNCHER
# The GPU scripts' resources, scaled to the test node: 2 ranks, 2 (fake) GPUs, 1 core each.
two_gpu_ranks=(--nodes=1 --ntasks-per-node=2 --gpus-per-node=2 --cpus-per-task=1)

echo "== 1. bad input: forest.sbatch with a domain that has no corpus"
bad=$(BTM_RUN_DIR=$WORK/run-bad BTM_ARGS="--data.domains a,nosuch" \
  submit --job-name=bad "${two_gpu_ranks[@]}" "$SRC/jobs/forest.sbatch")
echo "submitted job $bad"

echo "== 6. (in the background) forest.sbatch around a stand-in btm, stopped by its time limit"
cp "$HERE/fake_btm.sh" "$WORK/fake_btm" && chmod +x "$WORK/fake_btm"
timelimit=$(BTM_BIN=$WORK/fake_btm BTM_RUN_DIR=$WORK/run-timelimit \
  submit --job-name=timelimit --nodes=1 --ntasks-per-node=1 --gpus-per-node=0 --cpus-per-task=1 \
  --time=1 --signal=B:USR1@50 "$SRC/jobs/forest.sbatch")
echo "submitted job $timelimit"

echo "== 2. forest.sbatch, preempted by SIGUSR1 during the second wave, requeued, completed"
forest=$(submit --job-name=forest "${two_gpu_ranks[@]}" "$SRC/jobs/forest.sbatch")
echo "submitted job $forest"
forest_out=$WORK/forest-$forest.out

state=$(wait_job "$bad" 60 FAILED COMPLETED CANCELLED TIMEOUT)
show_output "$WORK/bad-$bad.out"
check "bad input: job $bad ended FAILED (got $state)" test "$state" = FAILED
check "bad input: exit code 2:0 (got $(job_field "$bad" ExitCode))" test "$(job_field "$bad" ExitCode)" = 2:0
check "bad input: not requeued (Restarts=$(job_field "$bad" Restarts))" test "$(job_field "$bad" Restarts)" = 0
check "bad input: btm named the missing corpus" grep -q "domain 'nosuch': no corpus" "$WORK/bad-$bad.out"
check "bad input: the job said it is not requeued" grep -q "bad input (exit 2).*not requeued" "$WORK/bad-$bad.out"

# ELMs c and d are the second wave: once c logs a step, a (the first wave of c's group) is done.
if wait_output "$forest" "$forest_out" '^\[c\] step ' 180; then
  pass "forest: second wave training ($(elapsed)): $(grep -E '^\[c\] step ' "$forest_out" | head -1)"
else
  fail "forest: ELM c never started training"
  show_output "$forest_out"
  exit 1
fi
scancel --batch --signal=USR1 "$forest"
echo "sent SIGUSR1 to the batch shell of job $forest"
state=$(wait_job "$forest" 60 PENDING)
check "forest: job $forest back to PENDING after exit 75 (got $state)" test "$state" = PENDING
check "forest: Restarts=1 (got $(job_field "$forest" Restarts))" test "$(job_field "$forest" Restarts)" = 1
"$PY" "$HERE/check_run.py" snapshot "$WORK/run" >"$WORK/before-restart.json"
echo "checkpoints at the requeue: $("$PY" -c 'import json, sys
print(", ".join(k + " " + str(v["step"]) + "/" + str(v["target_steps"]) for k, v in json.load(open(sys.argv[1])).items()))' \
  "$WORK/before-restart.json")"
check "forest: ELM c was stopped mid-training" "$PY" -c 'import json, sys
c = json.load(open(sys.argv[1]))["c"]; sys.exit(not 0 < c["step"] < c["target_steps"])' "$WORK/before-restart.json"
echo "requeued job $forest: $(scontrol -o show job "$forest" | grep -o 'EligibleTime=[^ ]*') (cred_expire)"
state=$(wait_job "$forest" 180 COMPLETED FAILED CANCELLED TIMEOUT)
show_output "$forest_out"
check "forest: job $forest COMPLETED after the restart (got $state)" test "$state" = COMPLETED
check "forest: exit code 0:0 (got $(job_field "$forest" ExitCode))" test "$(job_field "$forest" ExitCode)" = 0:0
check "forest: Restarts=1 at the end (got $(job_field "$forest" Restarts))" test "$(job_field "$forest" Restarts)" = 1
first_run=$(sed '/restart 1, /,$d' "$forest_out")
second_run=$(sed -n '/restart 1, /,$p' "$forest_out")
check "forest: the batch shell forwarded SIGUSR1" grep -q "SIGUSR1 received: forwarding" <<<"$first_run"
check "forest: btm checkpointed c on the signal" grep -q '^\[c\] stop requested: checkpointed at step' <<<"$first_run"
check "forest: the first run ended with exit 75 and requeued" \
  grep -q "checkpointed and stopped (exit 75): requeueing job $forest" <<<"$first_run"
check "forest: the restart continued c from its checkpoint" grep -q '^\[c\] continuing at step' <<<"$second_run"
check "forest: the restart skipped the trained seed" grep -q '^\[seed\] already trained' <<<"$second_run"
for name in $("$PY" -c 'import json, sys
print(" ".join(k for k, v in json.load(open(sys.argv[1])).items() if v["step"] == v["target_steps"]))' \
  "$WORK/before-restart.json"); do
  check "forest: '$name', finished before the signal, was not trained after the restart" \
    not_trained_in "$name" "$second_run"
done
check "forest: finished models' checkpoint and metrics files untouched by the restart" \
  "$PY" "$HERE/check_run.py" unchanged "$WORK/run" "$WORK/before-restart.json"
check "forest: forest.h5 lists seed and ELMs a-d trained, metrics complete" \
  "$PY" "$HERE/check_run.py" forest "$WORK/run" --trained seed,a,b,c,d
check "forest: the job's last line says complete" last_line_has "$forest_out" "complete (exit 0)"
check "forest: RUN/jobs.log records both segments (start, exit 75, start, exit 0)" \
  test "$(grep "job $forest restart" "$WORK/run/jobs.log" | sed 's/^[^ ]* [^ ]* //' | tr '\n' '|')" = \
  "job $forest restart 0 forest started|job $forest restart 0 forest exit 75|job $forest restart 1 forest started|job $forest restart 1 forest exit 0|"

# btm eval arrives with the evaluation engineer's work; until then its steps are skipped here.
if "$BTM_BIN" eval --help >/dev/null 2>&1; then have_eval=1; else have_eval=0; fi

echo "== 3. add-domain.sbatch: ELM e <- 0.4 a + 0.3 b + 0.2 c + 0.1 d, trained, evaluated"
add=$(BTM_NEW_DOMAIN=e BTM_PARENTS=a,b,c,d BTM_WEIGHTS=4,3,2,1 BTM_EVAL=$have_eval \
  submit --job-name=add --nodes=1 --ntasks-per-node=1 --gpus-per-node=1 --cpus-per-task=1 \
  "$SRC/jobs/add-domain.sbatch")
echo "submitted job $add"
state=$(wait_job "$add" 120 COMPLETED FAILED CANCELLED TIMEOUT)
show_output "$WORK/add-$add.out"
check "add-domain: job $add COMPLETED (got $state, exit $(job_field "$add" ExitCode))" test "$state" = COMPLETED
check "add-domain: forest.h5 has e trained, branched from a-d with the normalised weights" \
  "$PY" "$HERE/check_run.py" forest "$WORK/run" --trained a,b,c,d,e --parents e=a:0.4,b:0.3,c:0.2,d:0.1

echo "== 4. dense.sbatch with mpirun on a CPU-only allocation, after the add-domain job"
dense=$(BTM_LAUNCHER=mpirun submit --job-name=dense --dependency=afterok:"$add" --nodes=1 \
  --ntasks-per-node=2 --gpus-per-node=0 --cpus-per-task=1 "$SRC/jobs/dense.sbatch")
echo "submitted job $dense"
state=$(wait_job "$dense" 180 COMPLETED FAILED CANCELLED TIMEOUT)
show_output "$WORK/dense-$dense.out"
check "dense: job $dense COMPLETED (got $state, exit $(job_field "$dense" ExitCode))" test "$state" = COMPLETED
check "dense: CPU-only allocation (no GPUs)" grep -q "0 GPU(s) per node, device cpu, launcher mpirun" "$WORK/dense-$dense.out"
# The dense budget (the paper's rule): run.steps = 1000 steps at 4 x an ELM's batch.
check "dense: forest.h5 has the dense baseline trained for 1000 steps" \
  "$PY" "$HERE/check_run.py" forest "$WORK/run" --trained dense --dense-steps 1000

if ((have_eval)); then
  echo "== 5. eval.sbatch"
  ev=$(submit --job-name=eval "${two_gpu_ranks[@]}" "$SRC/jobs/eval.sbatch")
  echo "submitted job $ev"
  state=$(wait_job "$ev" 180 COMPLETED FAILED CANCELLED TIMEOUT)
  show_output "$WORK/eval-$ev.out"
  check "eval: job $ev COMPLETED (got $state, exit $(job_field "$ev" ExitCode))" test "$state" = COMPLETED
  check "eval: RUN/eval.h5 written" test -s "$WORK/run/eval.h5"
else
  echo "== 5. eval.sbatch: skipped (this btm has no eval command yet)"
fi

echo "== 6. the time-limit job $timelimit"
state=$(wait_job "$timelimit" 150 COMPLETED FAILED CANCELLED TIMEOUT)
show_output "$WORK/timelimit-$timelimit.out"
check "time limit: job $timelimit COMPLETED (got $state, exit $(job_field "$timelimit" ExitCode))" \
  test "$state" = COMPLETED
check "time limit: Restarts=1 (got $(job_field "$timelimit" Restarts))" test "$(job_field "$timelimit" Restarts)" = 1
check "time limit: Slurm's warning reached the ranks through the batch shell" \
  grep -q "^\[fake\] rank 0 got SIGUSR1" "$WORK/timelimit-$timelimit.out"
check "time limit: exit 75, requeued, then complete" grep -Pzq \
  "(?s)exit 75\): requeueing job $timelimit.*restart 1: continuing.*complete \(exit 0\)" \
  "$WORK/timelimit-$timelimit.out"

echo "slurm test took $(elapsed)"
echo "$PASSED passed, $FAILED failed"
((FAILED == 0))
