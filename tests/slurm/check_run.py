#!/usr/bin/python3
"""Reads a btm run directory with h5py for the Slurm test (include/btm/io/forest.hpp,
checkpoint.hpp, metrics.hpp give the formats).

  check_run.py snapshot RUN
      prints JSON: per checkpoint in RUN/elms, its step, target_steps, the modification
      times (ns) of the checkpoint and its metrics file and the last step in the metrics
      (reading them all shows they are complete HDF5 files)
  check_run.py forest RUN --trained NAME,... [--parents NAME=P1:W1,P2:W2] [--dense-steps N]
      checks that forest.h5 lists every NAME as trained (steps == the checkpoint's target), that
      RUN/metrics/NAME.h5 holds strictly increasing steps ending at that target, and, with
      --parents, the recorded parents and weights of a branched model
  check_run.py unchanged RUN SNAPSHOT.json
      checks that every model finished in the snapshot has the same checkpoint and metrics
      files now (same modification times): it was not trained again

Exits 1 with one line per problem, 0 with a summary line when everything holds.
"""
import argparse
import json
import os
import sys

import h5py
import numpy as np


def text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def texts(value):
    return [text(v) for v in np.atleast_1d(value)]


def snapshot(run):
    out = {}
    elms = os.path.join(run, "elms")
    for file in sorted(os.listdir(elms)):
        if not file.endswith(".h5"):
            continue
        name = file[:-3]
        path = os.path.join(elms, file)
        with h5py.File(path, "r") as f:
            entry = {"step": int(f.attrs["step"]), "target_steps": int(f.attrs["target_steps"])}
        entry["checkpoint_mtime_ns"] = os.stat(path).st_mtime_ns
        metrics = os.path.join(run, "metrics", file)
        entry["metrics_mtime_ns"] = None
        entry["metrics_last_step"] = None
        if os.path.exists(metrics):
            entry["metrics_mtime_ns"] = os.stat(metrics).st_mtime_ns
            with h5py.File(metrics, "r") as m:  # readable: complete after a stop
                steps = m["step"][:]
                entry["metrics_last_step"] = int(steps[-1]) if len(steps) else None
        out[name] = entry
    return out


def check_forest(run, trained, parents, dense_steps):
    problems = []
    with h5py.File(os.path.join(run, "forest.h5"), "r") as f:
        if text(f.attrs["format"]) != "btm-forest":
            problems.append("forest.h5: format is not btm-forest")
        order = texts(f.attrs["order"])
        models = {name: dict(f["models"][name].attrs) for name in order}
    for name in trained:
        if name not in models:
            problems.append(f"forest.h5 does not list '{name}' (it lists {order})")
            continue
        record = models[name]
        with h5py.File(os.path.join(run, text(record["checkpoint"])), "r") as c:
            step, target = int(c.attrs["step"]), int(c.attrs["target_steps"])
        if text(record["status"]) != "trained" or step != target or int(record["steps"]) != target:
            problems.append(f"'{name}': status {text(record['status'])}, manifest steps "
                            f"{int(record['steps'])}, checkpoint at {step} of {target}")
        metrics = os.path.join(run, "metrics", name + ".h5")
        if not os.path.exists(metrics):
            problems.append(f"'{name}': no metrics file {metrics}")
            continue
        with h5py.File(metrics, "r") as m:
            steps = m["step"][:]
            if text(m.attrs["format"]) != "btm-metrics":
                problems.append(f"{metrics}: format is not btm-metrics")
            lengths = {key: len(m[key]) for key in ("tokens", "loss", "lr", "grad_norm")}
            loss = m["loss"][:]
        if len(steps) == 0 or steps[-1] != target:
            problems.append(f"'{name}': metrics end at step {steps[-1] if len(steps) else None}, not {target}")
        if np.any(np.diff(steps) <= 0):
            problems.append(f"'{name}': metrics steps are not strictly increasing: {steps.tolist()}")
        if any(n != len(steps) for n in lengths.values()):
            problems.append(f"'{name}': metrics columns differ in length: {lengths}")
        if not np.all(np.isfinite(loss)):
            problems.append(f"'{name}': non-finite loss in the metrics")
    for spec in parents:
        name, _, pairs = spec.partition("=")
        want = [(p.split(":")[0], float(p.split(":")[1])) for p in pairs.split(",")]
        record = models.get(name)
        if record is None:
            problems.append(f"forest.h5 does not list '{name}'")
            continue
        got = list(zip(texts(record["parents"]), np.atleast_1d(record["parent_weights"]).tolist()))
        if [p for p, _ in got] != [p for p, _ in want] or not np.allclose(
                [w for _, w in got], [w for _, w in want], atol=1e-9):
            problems.append(f"'{name}': parents {got}, expected {want}")
    if dense_steps is not None:
        record = models.get("dense")
        if record is None or int(record["steps"]) != dense_steps or text(record["kind"]) != "dense":
            problems.append(f"dense baseline: {record and {k: record[k] for k in ('kind', 'steps')}}, "
                            f"expected kind dense with {dense_steps} steps")
    return problems, order


def check_unchanged(run, before):
    problems, kept = [], []
    now = snapshot(run)
    for name, entry in before.items():
        if entry["step"] != entry["target_steps"]:
            continue
        kept.append(name)
        for key in ("step", "checkpoint_mtime_ns", "metrics_mtime_ns"):
            if now.get(name, {}).get(key) != entry[key]:
                problems.append(f"'{name}' was finished before the restart but its {key} changed: "
                                f"{entry[key]} -> {now.get(name, {}).get(key)}")
    return problems, kept


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("snapshot")
    p.add_argument("run")
    p = sub.add_parser("forest")
    p.add_argument("run")
    p.add_argument("--trained", required=True)
    p.add_argument("--parents", action="append", default=[])
    p.add_argument("--dense-steps", type=int)
    p = sub.add_parser("unchanged")
    p.add_argument("run")
    p.add_argument("snapshot")
    args = parser.parse_args()

    if args.command == "snapshot":
        print(json.dumps(snapshot(args.run), indent=1, sort_keys=True))
        return 0
    if args.command == "forest":
        problems, order = check_forest(args.run, args.trained.split(","), args.parents, args.dense_steps)
        summary = f"forest.h5 lists {order}; trained and with complete metrics: {args.trained}"
    else:
        with open(args.snapshot) as f:
            before = json.load(f)
        problems, kept = check_unchanged(args.run, before)
        summary = f"models finished before the restart and untouched after it: {kept}"
        if not kept:
            problems.append("no model was finished before the restart: nothing to compare")
    for line in problems:
        print("check_run.py: " + line)
    if not problems:
        print("check_run.py: " + summary)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
