#!/usr/bin/env python3
"""Writes a synthetic but format-correct btm run for testing tools/report.py:
RUN/eval.h5 (the format of include/btm/io/eval_file.hpp, written by tools/btm_files.py) and
RUN/metrics/NAME.h5 for the seed and each ELM (the format of include/btm/io/metrics.hpp), plus
the dense baseline with --dense.

usage: python3 tools/make_fake_eval.py RUN [--elms legal,code] [--heldout covid,tweets] [--dense]
                                           [--merges]
The numbers are made up (deterministic, seeded) but shaped like a real run: each ELM is best on
its own domain, the ensemble improves with k, held-out domains are harder."""
import argparse
import os
import sys

try:
    import h5py
    import numpy as np
    from btm_files import AVERAGE_SCHEMES, EvalCompute, EvalMerges, EvalResults, write_eval
except ImportError as e:
    sys.exit(f"make_fake_eval.py: {e.name} is missing for {sys.executable}: "
             "install python3-h5py and python3-numpy (Debian) or run /usr/bin/python3")


def write_metrics(path, name, steps, start_tokens, loss0, loss1, rng, domains=(), order=()):
    """Format 2: units on every dataset, and the validation table on `domains` every 25 steps
    (domain d of `order` 0.05 nats above the one before)."""
    step = np.arange(1, steps + 1, dtype=np.int64)
    tokens = start_tokens + step * 4096
    curve = loss1 + (loss0 - loss1) * np.exp(-step / (steps / 4))
    loss = curve + rng.normal(0, 0.02, steps)
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "btm-metrics"
        f.attrs["format_version"] = np.int64(2)
        f.attrs["name"] = name
        f.attrs["config"] = "[model]\nn_layer = 2\n"
        for key, values, units in (
                ("step", step, "steps"), ("tokens", tokens.astype(np.int64), "tokens"),
                ("loss", loss.astype(np.float64), "nats/token"),
                ("lr", np.linspace(5e-4, 0, steps), "1"),
                ("grad_norm", np.abs(rng.normal(1.0, 0.1, steps)), "1"),
                ("tokens_per_s", np.full(steps, 1e5), "tokens/s"),
                ("step_ms", np.full(steps, 40.0), "ms"), ("mfu", np.full(steps, np.nan), "1"),
                ("memory_bytes", np.full(steps, 1 << 30, dtype=np.int64), "bytes"),
                ("elapsed_s", step * 0.04, "s")):
            f[key] = values
            f[key].attrs["units"] = units
        if domains:
            g = f.create_group("valid")
            g.attrs["domains"] = list(domains)
            at = step % 25 == 0
            shift = np.array([0.05 * list(order).index(d) for d in domains])
            vloss = curve[at][:, None] + 0.1 + shift[None, :]
            for key, values, units in (
                    ("step", step[at], "steps"), ("tokens", tokens[at].astype(np.int64), "tokens"),
                    ("loss", vloss, "nats/token"), ("perplexity", np.exp(vloss), "1"),
                    ("tokens_scored", np.full(len(domains), 8 * 1024, dtype=np.int64), "tokens")):
                g[key] = values
                g[key].attrs["units"] = units


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="run directory to create or fill")
    p.add_argument("--elms", default="legal,code", help="train domains = ELM names")
    p.add_argument("--heldout", default="covid,tweets", help="held-out evaluation domains")
    p.add_argument("--dense", action="store_true", help="also a dense baseline")
    p.add_argument("--merges", action="store_true", help="also TIES and DARE merge rows")
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()

    rng = np.random.default_rng(a.seed)
    elms = [e for e in a.elms.split(",") if e]
    heldout = [d for d in a.heldout.split(",") if d]
    domains = elms + heldout
    K, D = len(elms), len(domains)
    in_domain = np.array([1.0] * K + [0.0] * len(heldout))

    # Cached priors: a train domain puts most mass on its own ELM; a held-out one is spread.
    priors = np.empty((D, K))
    for d in range(D):
        raw = rng.uniform(0.5, 1.5, K)
        if d < K:
            raw[d] += 4.0 * K
        priors[d] = raw / raw.sum()

    base = np.array([20.0] * K + [35.0] * len(heldout)) * rng.uniform(0.9, 1.1, D)
    methods, rows = [], []
    for j, name in enumerate(elms):
        own = np.where(np.arange(D) == j, 0.7, 1.25)
        methods.append(f"elm:{name}")
        rows.append(base * own)
    for k in range(1, K + 1):
        methods.append(f"ensemble:top-{k}")
        rows.append(base * (0.72 - 0.03 * (k - 1)))
    extra = {"ensemble:uniform-mixture": 0.95, "ensemble:uniform-prior": 0.74,
             "average:uniform": 1.05, "average:cached-prior": 0.82, "average:argmax": 0.8}
    for name, factor in extra.items():
        methods.append(name)
        rows.append(base * factor)
    merges = None
    if a.merges:
        merges = EvalMerges(rows=[], method=[], scheme=[], lambda_=np.ones(4),
                            density=np.array([0.2, 0.2, np.nan, np.nan]),
                            drop=np.array([np.nan, np.nan, 0.9, 0.9]), seed=1, seconds=1.5)
        for method, factor in (("ties", 0.9), ("dare", 1.0)):
            for scheme in ("uniform", "cached-prior"):
                merges.rows.append(f"merge:{method}:{scheme}")
                merges.method.append(method)
                merges.scheme.append(scheme)
                methods.append(merges.rows[-1])
                rows.append(base * factor * (0.85 if scheme == "cached-prior" else 1.0))
    if a.dense:
        methods.append("dense")
        rows.append(base * 0.85)
    ppl = np.array(rows)
    if K >= 2 and heldout:
        ppl[methods.index(f"elm:{elms[1]}"), D - 1] = np.nan  # a method not evaluated somewhere

    def group_mean(mask):
        return ppl[:, mask].mean(axis=1) if mask.any() else np.full(len(methods), np.nan)

    weights = np.stack([np.full((D, K), 1.0 / K), priors,
                        np.eye(K)[np.argmax(priors, axis=1)]])

    # The compute of the compared models (the paper's rule: every path 200 steps, the seed's and
    # the dense's batch K times an ELM's 4 sequences of 1024 tokens).
    elm_tokens, seed_tokens = 100 * 4 * 1024, 100 * 4 * K * 1024
    tokens = [seed_tokens] + [seed_tokens + elm_tokens] * K + ([2 * seed_tokens] if a.dense else [])
    compute = EvalCompute(
        models=["seed"] + elms + (["dense"] if a.dense else []),
        continues=[""] + ["seed"] * K + (["seed"] if a.dense else []),
        steps=np.array([100] + [200] * K + ([200] if a.dense else []), dtype=np.int64),
        global_batch=np.array([4 * K] + [4] * K + ([4 * K] if a.dense else []), dtype=np.int64),
        tokens=np.array(tokens, dtype=np.int64),
        flops=np.array(tokens, dtype=np.float64) * 1e6,
        train_seconds=np.array([4.0] + [2.0] * K + ([4.0] if a.dense else [])),
        forest_tokens=seed_tokens + K * elm_tokens,
        dense_tokens=2 * seed_tokens if a.dense else 0)

    os.makedirs(os.path.join(a.run, "metrics"), exist_ok=True)
    write_eval(os.path.join(a.run, "eval.h5"), EvalResults(
        config="[eval]\nblocks = 4\nposterior = prefix\n", elms=elms, domains=domains,
        in_domain=in_domain, posterior="prefix", methods=methods, perplexity=ppl,
        mean_in_domain=group_mean(in_domain == 1.0), mean_out_domain=group_mean(in_domain == 0.0),
        priors=priors, schemes=list(AVERAGE_SCHEMES), average_weights=weights,
        tokens=np.full(D, 4 * 1024, dtype=np.int64), compute=compute, merges=merges,
        checkpoints=elms + (["dense"] if a.dense else []),
        checkpoint_steps=np.full(K + (1 if a.dense else 0), 200, dtype=np.int64),
        btm_version="fake", btm_commit="unknown"))

    mdir = os.path.join(a.run, "metrics")
    write_metrics(os.path.join(mdir, "seed.h5"), "seed", 100, 0, 6.0, 3.2, rng, elms, elms)
    for name in elms:
        write_metrics(os.path.join(mdir, f"{name}.h5"), name, 100, 100 * 4096, 3.2, 2.6, rng,
                      [name], elms)
    if a.dense:
        write_metrics(os.path.join(mdir, "dense.h5"), "dense", 200, 0, 6.0, 2.9, rng, elms, elms)
    print(f"wrote {a.run}/eval.h5 ({len(methods)} methods x {D} domains) and metrics")


if __name__ == "__main__":
    main()
