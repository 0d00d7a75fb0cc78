#!/usr/bin/env bash
# fake_btm.sh: a stand-in for btm in the Slurm test of the real time-limit warning, where the
# signal comes only after tens of seconds (slurmctld checks time limits about twice a minute)
# and real training that long would be wasted. It behaves as btm does towards the job scripts:
# on its job's first run it "trains" until SIGUSR1 or SIGTERM, then exits 75 (checkpointed,
# rerun to continue); on a restart (SLURM_RESTART_COUNT > 0) it finishes and exits 0.
if [[ ${SLURM_RESTART_COUNT:-0} -gt 0 ]]; then
  echo "[fake] restart ${SLURM_RESTART_COUNT}: continuing and finishing: exit 0"
  exit 0
fi
start=$SECONDS
# shellcheck disable=SC2317  # called from the traps
stop() {
  echo "[fake] rank ${SLURM_PROCID:-?} got SIG$1 after $((SECONDS - start)) s: checkpointed, exit 75"
  exit 75
}
trap 'stop USR1' USR1
trap 'stop TERM' TERM
echo "[fake] rank ${SLURM_PROCID:-?} training until a stop signal"
while ((SECONDS - start < 600)); do sleep 0.2; done
echo "[fake] never signalled"
exit 1
