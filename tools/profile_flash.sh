#!/usr/bin/env bash
# Where the flash attention kernels' warps stall: Nsight Compute's speed-of-light, pipe
# utilisation, warp-state and scheduler sections for one launch of each flash kernel (forward,
# dK/dV, dQ) in a 124M training step, at the GPU's own clocks. Prints ncu's tables.
#   tools/profile_flash.sh [CARRY_DIR] [LAYERS DIM HEADS SEQ BATCH]
set -euo pipefail
carry=${1:-.carry}
layers=${2:-12} dim=${3:-768} heads=${4:-12} seq=${5:-1024} batch=${6:-32}
for kernel in flash_forward_kernel flash_backward_dkdv_kernel flash_backward_dq_kernel; do
  echo "=== $kernel"
  # Skip the warm-up step's launches (one per layer) so the profiled launch is a timed step's.
  ncu --clock-control none --kernel-name "$kernel" --launch-skip "$layers" --launch-count 1 \
    --section SpeedOfLight --section ComputeWorkloadAnalysis --section WarpStateStats \
    --section SchedulerStats --section Occupancy --section LaunchStats --section InstructionStats \
    --metrics "regex:^(smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio|sm__pipe_.*_cycles_active\.avg\.pct_of_peak_sustained_active)$" \
    "$carry/btm" bench --run.device cuda --model.n_layer "$layers" --model.d_model "$dim" \
    --model.n_head "$heads" --model.context "$seq" --model.vocab_size 50304 \
    --model.vocab_multiple 128 --data.batch "$batch" --steps 1 --warmup 1 --cases train 2>&1 |
    grep -v '^{' | sed -n '/Section:/,$p'
done
