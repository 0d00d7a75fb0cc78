# cluster.sh: a throw-away single-node Slurm cluster for tests, sourced by a bash script.
#   slurm_cluster_start DIR [CPUS] [GPUS]   munged + slurmctld + slurmd, all state under DIR
#   slurm_cluster_stop                      stops them by PID (safe to call twice; use a trap)
# After start, SLURM_CONF points at DIR/slurm.conf, so sbatch/srun/scontrol talk to this
# cluster only. No systemd, no files outside DIR, no root-owned system state touched.
#
# Choices that matter (all verified with Slurm 22.05 and Debian's Open MPI):
#   - the node advertises CPUS cpus even on a smaller machine (SlurmdParameters=config_overrides),
#     so a 4-rank job fits on a 2-core test machine;
#   - GPUS fake GPUs (gres gpu, File= links to /dev/null): GPU job scripts run unchanged, and
#     Slurm sets CUDA_VISIBLE_DEVICES per task as on a real GPU node;
#   - EnforcePartLimits=ALL: a job that can never run is refused at submission, not left pending;
#   - MpiDefault=pmix: the only plugin that starts Open MPI ranks here (pmi2 and none do not);
#   - cred_expire=10 (default 120): also how long slurmctld holds a requeued job before it may
#     start again (slurmd refuses the job's revoked credential until then), so a requeue test
#     waits ~10 s instead of ~2 minutes;
#   - MinJobAge=600: finished jobs stay visible to `scontrol show job` for the checks
#     (there is no slurmdbd, so no sacct);
#   - task/none, proctrack/linuxproc: no cgroups needed.

SLURM_CLUSTER_PIDS=()
SLURM_CLUSTER_DIR=""

# A free TCP port on the loopback interface.
_slurm_free_port() {
  /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits up to $2 seconds for command $1 to succeed.
_slurm_wait_for() {
  local deadline=$((SECONDS + $2))
  until eval "$1" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

slurm_cluster_start() {
  local dir=$1 cpus=${2:-4} gpus=${3:-4}
  SLURM_CLUSTER_DIR=$dir
  local node
  node=$(hostname -s)
  mkdir -p "$dir"/{munge,state,spool,log,dev}
  chmod 700 "$dir/munge"

  # munge: own key, socket and pid file.
  head -c 1024 /dev/urandom >"$dir/munge/munge.key"
  chmod 400 "$dir/munge/munge.key"
  munged --force --foreground --socket="$dir/munge/munge.sock" --key-file="$dir/munge/munge.key" \
    --log-file="$dir/log/munged.log" --pid-file="$dir/munge/munged.pid" \
    --seed-file="$dir/munge/munged.seed" >>"$dir/log/munged.out" 2>&1 &
  SLURM_CLUSTER_PIDS+=($!)
  _slurm_wait_for "test -S '$dir/munge/munge.sock'" 10 || {
    echo "cluster.sh: munged did not start; its log:" >&2
    cat "$dir/log/munged.log" "$dir/log/munged.out" >&2
    return 1
  }

  # Fake GPUs: character devices Slurm can hand out (it checks File= exists).
  local gres_line="" gres_conf=""
  if ((gpus > 0)); then
    for ((g = 0; g < gpus; ++g)); do ln -sf /dev/null "$dir/dev/nvidia$g"; done
    gres_line="Gres=gpu:$gpus"
    gres_conf="Name=gpu File=$dir/dev/nvidia[0-$((gpus - 1))]"
  fi
  echo "$gres_conf" >"$dir/gres.conf"

  local ctld_port node_port
  ctld_port=$(_slurm_free_port)
  node_port=$(_slurm_free_port)
  while [[ $node_port == "$ctld_port" ]]; do node_port=$(_slurm_free_port); done

  cat >"$dir/slurm.conf" <<EOF
ClusterName=btmtest
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$node_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.sock,cred_expire=10
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/builtin
MpiDefault=pmix
GresTypes=gpu
JobRequeue=1
EnforcePartLimits=ALL
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=600
KillWait=10
InactiveLimit=0
Waittime=0
SchedulerParameters=sched_interval=1
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=4000 $gres_line State=UNKNOWN
PartitionName=test Nodes=$node Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
  export SLURM_CONF=$dir/slurm.conf

  slurmctld -D -i -f "$dir/slurm.conf" >>"$dir/log/slurmctld.out" 2>&1 &
  SLURM_CLUSTER_PIDS+=($!)
  slurmd -D -f "$dir/slurm.conf" -N "$node" >>"$dir/log/slurmd.out" 2>&1 &
  SLURM_CLUSTER_PIDS+=($!)
  if ! _slurm_wait_for "sinfo -h -N -o '%T' | grep -Eq '^(idle|mixed|allocated)'" 30; then
    echo "cluster.sh: the node did not become idle; logs:" >&2
    sinfo -N -l >&2 || true
    tail -n 30 "$dir"/log/slurmctld.* "$dir"/log/slurmd.* >&2
    return 1
  fi
}

slurm_cluster_stop() {
  local pid
  # Jobs first, so no step outlives the daemons that track it.
  # (slurmstepd and the tasks are no children of slurmd: they would outlive it.)
  if [[ -n $SLURM_CLUSTER_DIR && -n ${SLURM_CONF:-} && ${#SLURM_CLUSTER_PIDS[@]} -gt 0 ]]; then
    scancel --quiet --full --user="$(id -un)" 2>/dev/null || true
    for _ in $(seq 100); do
      [[ -z $(squeue -h -o %i 2>/dev/null) ]] && break
      sleep 0.2
    done
  fi
  # slurmd, slurmctld, munged: the reverse of the start order.
  for ((i = ${#SLURM_CLUSTER_PIDS[@]} - 1; i >= 0; --i)); do
    pid=${SLURM_CLUSTER_PIDS[i]}
    kill -TERM "$pid" 2>/dev/null || continue
    for _ in $(seq 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  SLURM_CLUSTER_PIDS=()
}
