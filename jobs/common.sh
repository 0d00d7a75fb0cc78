# jobs/common.sh: what every btm Slurm job shares. Sourced by jobs/*.sbatch; see docs/slurm.md.
#
# A job script calls, in order:
#   btm_job_init NAME          settings from the environment, signal forwarding, a header
#   btm_step "what" CMD ARGS   runs `btm CMD ARGS` on every rank of the allocation; returns btm's
#                              exit code (0 ok, 2 bad input, 75 checkpointed and stopped)
#   btm_job_end RC             ends the job: 0 -> done; 75 -> requeue this job to continue;
#                              anything else -> the job fails with that code (never requeued)
#
# Settings (environment variables; sbatch passes the submitting shell's environment on):
#   BTM_CONFIG        INI config file(s), space separated          (default inputs/tiny.cfg)
#   BTM_RUN_DIR       the forest directory (--run.dir)             (default: the config's run.dir)
#   BTM_RANKS_PER_ELM ranks that train one ELM (--run.ranks_per_elm) (default: the config's)
#   BTM_DEVICE        cuda | cpu (--run.device)        (default: cuda when the job has GPUs, else cpu)
#   BTM_THREADS       CPU threads per rank (--run.threads)          (default: --cpus-per-task)
#   BTM_ARGS          more btm flags for every command, e.g. "--run.steps 4000 --max-steps-per-run 500"
#                     (a setting named here wins over BTM_DEVICE/BTM_THREADS; BTM_RUN_DIR or
#                     BTM_RANKS_PER_ELM together with its flag here is refused)
#   BTM_LAUNCHER      srun (default: srun --mpi=pmix) | mpirun (Open MPI's, inside the allocation)
#   BTM_BIN           the btm executable  (default: BTM_ROOT/build-cuda/btm for cuda if it exists,
#                                          else BTM_ROOT/build/btm)
#   BTM_REQUEUE       1 (default): requeue on exit 75 | 0: end the job with 75 instead
#   BTM_MAX_RESTARTS  stop requeueing after this many restarts                        (default 100)
#
# Signals. The scripts ask for `#SBATCH --signal=B:USR1@120`: 120 s before the time limit Slurm
# sends SIGUSR1 to this batch shell only. The shell forwards it to the launcher (srun or mpirun),
# and both forward SIGUSR1 to every btm rank; btm then checkpoints every unfinished model and
# exits 75. Without "B:" Slurm signals the job steps instead, which reaches the ranks under srun
# but never the ranks of mpirun on the batch node (they are no step of their own).
# A SIGTERM (scancel, preemption, the time limit itself) is forwarded too, so btm also checkpoints
# then, but the job is not requeued by this script: Slurm decides what happens to it.

set -uo pipefail

# Exit codes of btm (include/btm/error.hpp).
readonly BTM_EXIT_OK=0 BTM_EXIT_BAD_INPUT=2 BTM_EXIT_PREEMPTED=75

BTM_LAUNCHER_PID=""
BTM_SIGNAL_SEEN=""  # USR1 | TERM: the last stop signal this shell received
BTM_FLAGS=()        # flags common to every btm command of the job

btm_log() { echo "[job $(date '+%F %T')] $*"; }

# SIGUSR1 (the time-limit warning) or SIGTERM: remember it and pass it on to the ranks. mpirun
# exits 1 on SIGTERM and does not reliably pass it on, but forwards SIGUSR1 and passes 75 on
# (btm treats both alike): so mpirun is sent SIGUSR1 for either.
_btm_on_signal() {
  BTM_SIGNAL_SEEN=$1
  local forward=$1
  [[ $BTM_LAUNCHER == mpirun ]] && forward=USR1
  if [[ -n $BTM_LAUNCHER_PID ]] && kill -0 "$BTM_LAUNCHER_PID" 2>/dev/null; then
    btm_log "SIG$1 received: forwarding it to the btm ranks (they checkpoint and stop)"
    kill -s "$forward" "$BTM_LAUNCHER_PID" 2>/dev/null || true
  else
    btm_log "SIG$1 received between steps: no further step starts"
  fi
}

# The forest directory: BTM_RUN_DIR, else what btm makes of the config files and BTM_ARGS
# (`btm config --get run.dir`, so a flag in BTM_ARGS counts as it does for the job's steps).
_btm_run_dir() {
  if [[ -n ${BTM_RUN_DIR:-} ]]; then
    echo "$BTM_RUN_DIR"
    return
  fi
  local flags=() file
  for file in $BTM_CONFIG; do flags+=(--config "$file"); done
  # shellcheck disable=SC2206  # BTM_ARGS is a list of flags
  flags+=(${BTM_ARGS:-})
  "$BTM_BIN" config "${flags[@]}" --get run.dir
}

# Whether BTM_ARGS holds the flag --KEY (as "--KEY VALUE" or "--KEY=VALUE").
_btm_args_name() {
  local arg
  # shellcheck disable=SC2206  # BTM_ARGS is a list of flags
  local args=(${BTM_ARGS:-})
  for arg in "${args[@]}"; do
    [[ $arg == "--$1" || $arg == "--$1="* ]] && return 0
  done
  return 1
}

_btm_fail_setup() {
  btm_log "error: $*"
  btm_log "job not started: bad setup (exit $BTM_EXIT_BAD_INPUT, not requeued)"
  exit "$BTM_EXIT_BAD_INPUT"
}

btm_job_init() {
  BTM_JOB_NAME=$1
  # First thing: an early warning must not kill the shell (SIGUSR1's default action).
  trap '_btm_on_signal USR1' USR1
  trap '_btm_on_signal TERM' TERM
  : "${SLURM_JOB_ID:?jobs/common.sh: run this script with sbatch}"
  BTM_ROOT=${BTM_ROOT:-$SLURM_SUBMIT_DIR}
  BTM_CONFIG=${BTM_CONFIG:-$BTM_ROOT/inputs/tiny.cfg}
  BTM_LAUNCHER=${BTM_LAUNCHER:-srun}
  BTM_REQUEUE=${BTM_REQUEUE:-1}
  BTM_MAX_RESTARTS=${BTM_MAX_RESTARTS:-100}
  BTM_RESTART=${SLURM_RESTART_COUNT:-0}
  BTM_RANKS=${SLURM_NTASKS:?jobs/common.sh: the job has no task count (sbatch --ntasks-per-node)}
  local gpus=${SLURM_GPUS_ON_NODE:-0}
  if [[ -z ${BTM_DEVICE:-} ]]; then
    if ((gpus > 0)); then BTM_DEVICE=cuda; else BTM_DEVICE=cpu; fi
  fi
  if [[ -z ${BTM_BIN:-} ]]; then
    BTM_BIN=$BTM_ROOT/build/btm
    if [[ $BTM_DEVICE != cpu && -x $BTM_ROOT/build-cuda/btm ]]; then BTM_BIN=$BTM_ROOT/build-cuda/btm; fi
  fi
  BTM_THREADS=${BTM_THREADS:-${SLURM_CPUS_PER_TASK:-}}

  [[ -x $BTM_BIN ]] || _btm_fail_setup "no btm executable at $BTM_BIN (build it, or set BTM_BIN)"
  local file
  for file in $BTM_CONFIG; do
    [[ -r $file ]] || _btm_fail_setup "config $file not found (set BTM_CONFIG; relative paths start at $PWD)"
  done
  case $BTM_LAUNCHER in
    srun | mpirun) ;;
    *) _btm_fail_setup "BTM_LAUNCHER=$BTM_LAUNCHER: use srun or mpirun" ;;
  esac
  if [[ $BTM_DEVICE == cuda && ${SLURM_NTASKS_PER_NODE:-} =~ ^[0-9]+$ && $gpus -gt 0 &&
        $SLURM_NTASKS_PER_NODE -ne $gpus ]]; then
    btm_log "warning: $SLURM_NTASKS_PER_NODE ranks per node but $gpus GPUs per node: btm wants one" \
      "rank per GPU (sbatch --ntasks-per-node=G --gpus-per-node=G)"
  fi

  if [[ -n ${BTM_RUN_DIR:-} ]] && _btm_args_name run.dir; then
    _btm_fail_setup "BTM_RUN_DIR and --run.dir in BTM_ARGS: set one of them"
  fi
  BTM_RUN_DIR=$(_btm_run_dir) || _btm_fail_setup "btm could not read the configuration (BTM_CONFIG=$BTM_CONFIG BTM_ARGS=${BTM_ARGS:-})"
  BTM_FLAGS=()
  for file in $BTM_CONFIG; do BTM_FLAGS+=(--config "$file"); done
  # A setting BTM_ARGS names is left to it (btm refuses a flag given twice).
  _btm_args_name run.dir || BTM_FLAGS+=(--run.dir "$BTM_RUN_DIR")
  _btm_args_name run.device || BTM_FLAGS+=(--run.device "$BTM_DEVICE")
  if [[ -n ${BTM_RANKS_PER_ELM:-} ]]; then
    _btm_args_name run.ranks_per_elm &&
      _btm_fail_setup "BTM_RANKS_PER_ELM and --run.ranks_per_elm in BTM_ARGS: set one of them"
    BTM_FLAGS+=(--run.ranks_per_elm "$BTM_RANKS_PER_ELM")
  fi
  if [[ -n $BTM_THREADS ]]; then
    _btm_args_name run.threads || BTM_FLAGS+=(--run.threads "$BTM_THREADS")
    export OMP_NUM_THREADS=$BTM_THREADS
  fi
  # Slurm 22.05+ srun no longer inherits the job's --cpus-per-task; without this every rank
  # would be bound to one core.
  [[ -n ${SLURM_CPUS_PER_TASK:-} ]] && export SRUN_CPUS_PER_TASK=$SLURM_CPUS_PER_TASK
  # shellcheck disable=SC2206  # BTM_ARGS is a list of flags
  BTM_FLAGS+=(${BTM_ARGS:-})

  mkdir -p "$BTM_RUN_DIR"
  btm_log "btm $BTM_JOB_NAME: job $SLURM_JOB_ID, restart $BTM_RESTART," \
    "${SLURM_JOB_NUM_NODES:-1} node(s) [${SLURM_JOB_NODELIST:-?}], $BTM_RANKS ranks," \
    "$gpus GPU(s) per node, device $BTM_DEVICE, launcher $BTM_LAUNCHER"
  btm_log "run directory: $(cd "$BTM_RUN_DIR" && pwd)   (forest.h5, elms/, metrics/, eval.h5)"
  btm_log "btm: $BTM_BIN   config: $BTM_CONFIG"
  if ((BTM_RESTART > 0)); then
    btm_log "restart $BTM_RESTART: continuing the forest (finished models are kept, unfinished ones resume)"
  fi
  echo "$(date '+%F %T') job $SLURM_JOB_ID restart $BTM_RESTART $BTM_JOB_NAME started" \
    >>"$BTM_RUN_DIR/jobs.log"
}

# btm_step DESCRIPTION COMMAND [ARGS...]: `btm COMMAND ARGS` on every rank; returns its exit code.
btm_step() {
  local what=$1
  shift
  if [[ -n $BTM_SIGNAL_SEEN ]]; then
    btm_log "step '$what' not started: a stop was requested"
    return "$BTM_EXIT_PREEMPTED"
  fi
  local launcher=()
  if [[ $BTM_LAUNCHER == srun ]]; then
    # The ranks inherit the allocation's geometry: --ntasks-per-node ranks per node, and on each
    # node the GPUs of --gpus-per-node, which btm binds one per rank by node-local rank.
    launcher=(srun --mpi=pmix)
  else
    [[ $(id -u) -eq 0 ]] && export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    # Open MPI reads the allocation from Slurm; btm sizes its own threads, so no core binding.
    launcher=(mpirun -np "$BTM_RANKS" --bind-to none)
    # The same ranks per node as srun would start (uneven layouts like "2(x3),1" keep mpirun's).
    if [[ ${SLURM_NTASKS_PER_NODE:-} =~ ^[0-9]+$ ]]; then
      launcher+=(--map-by "ppr:$SLURM_NTASKS_PER_NODE:node")
    fi
  fi
  btm_log "step '$what': ${launcher[*]} $BTM_BIN $(printf '%q ' "$@")"
  local start=$SECONDS rc
  # In the background, so this shell can take signals while btm runs (bash runs a trap only
  # between commands, and `wait` is one it can interrupt).
  "${launcher[@]}" "$BTM_BIN" "$@" &
  BTM_LAUNCHER_PID=$!
  while kill -0 "$BTM_LAUNCHER_PID" 2>/dev/null; do wait "$BTM_LAUNCHER_PID"; done
  wait "$BTM_LAUNCHER_PID"
  rc=$?
  BTM_LAUNCHER_PID=""
  btm_log "step '$what' ended with exit code $rc after $((SECONDS - start)) s"
  return "$rc"
}

# btm_job_end RC: ends the job with what btm's exit code means for it.
btm_job_end() {
  local rc=$1
  echo "$(date '+%F %T') job $SLURM_JOB_ID restart $BTM_RESTART $BTM_JOB_NAME exit $rc" \
    >>"$BTM_RUN_DIR/jobs.log"
  case $rc in
    "$BTM_EXIT_OK")
      btm_log "complete (exit 0): outputs in $BTM_RUN_DIR"
      exit 0
      ;;
    "$BTM_EXIT_BAD_INPUT")
      btm_log "bad input (exit 2): see btm's error above; not requeued, fix it and resubmit"
      exit "$rc"
      ;;
    "$BTM_EXIT_PREEMPTED")
      if [[ $BTM_SIGNAL_SEEN == TERM ]]; then
        btm_log "checkpointed and stopped on SIGTERM (exit 75): not requeued by this script;" \
          "resubmit the same script to continue"
      elif [[ $BTM_REQUEUE != 1 ]]; then
        btm_log "checkpointed and stopped (exit 75); BTM_REQUEUE=$BTM_REQUEUE: resubmit to continue"
      elif ((BTM_RESTART >= BTM_MAX_RESTARTS)); then
        btm_log "checkpointed and stopped (exit 75) after $BTM_RESTART restarts" \
          "(BTM_MAX_RESTARTS): not requeued again; resubmit to continue"
      else
        btm_log "checkpointed and stopped (exit 75): requeueing job $SLURM_JOB_ID to continue"
        # Slurm ends this shell at once (SIGTERM: the default action, so no trap); the job runs
        # again from the top with SLURM_RESTART_COUNT + 1, by Slurm's design not sooner than
        # about 2 minutes later.
        trap - USR1 TERM
        if scontrol requeue "$SLURM_JOB_ID"; then
          sleep 600 &
          wait $!
        fi
        btm_log "scontrol requeue failed (is the job --requeue? does the site allow it?): resubmit to continue"
      fi
      exit "$rc"
      ;;
    *)
      btm_log "failed (exit $rc): not requeued"
      exit "$rc"
      ;;
  esac
}
