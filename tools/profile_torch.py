#!/usr/bin/env python3
"""Per-kernel GPU time of the PyTorch reference (torch_gpt.py, torch.compile) for comparison with
tools/profile_step.sh: runs the script under torch.profiler (CUPTI kernel timestamps) and prints
the kernels grouped like profile_step.sh's table, per training step (the totals over warm-up and
timed steps divided by their number; compilation launches few kernels of its own).
usage: profile_torch.py TORCH_GPT_PY [torch_gpt.py arguments...]   (on the GPU machine)"""
import collections, re, runpy, sys

import torch
from torch.profiler import ProfilerActivity, profile

script, args = sys.argv[1], sys.argv[2:]
steps = 30 + 10  # torch_gpt.py's defaults for --steps and --warmup
for flag in ("--steps", "--warmup"):
    if flag in args:
        steps += int(args[args.index(flag) + 1]) - (30 if flag == "--steps" else 10)
sys.argv = [script] + args
with profile(activities=[ProfilerActivity.CUDA]) as prof:
    runpy.run_path(script, run_name="__main__")
    torch.cuda.synchronize()

total = collections.Counter()
count = collections.Counter()
for event in prof.events():
    if event.device_type != torch.autograd.DeviceType.CUDA:
        continue
    name = re.sub(r"[<(].*", "", event.name.replace("void ", "")).strip()
    total[name] += event.time_range.elapsed_us()
    count[name] += 1
all_us = sum(total.values())
if all_us == 0:  # no kernel events in this torch version's event list: its own table instead
    sys.exit(prof.key_averages().table(sort_by="self_device_time_total", row_limit=30))
print(f"torch kernel time per step: {all_us / steps / 1e3:.2f} ms GPU over {steps} steps")
print(f"{'kernel':60s} {'per step':>8s} {'ms/step':>9s} {'share':>7s}")
for name, us in total.most_common(25):
    print(f"{name[:60]:60s} {count[name] / steps:8.1f} {us / steps / 1e3:9.3f} {us / all_us:7.1%}")
