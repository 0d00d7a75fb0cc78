#!/usr/bin/python3
"""The fault-injection suite (ctest -L faults): a tiny forest on the CPU, interrupted and misused
in every way the issue lists, each outcome checked against an uninterrupted reference run.

  kills         kill -9 of the whole job (or of one rank) at seeded points of every phase (seed,
                ELMs, dense, evaluation) and inside checkpoint writes (the BTM_FAULT_KILL_AT_COMMIT
                failpoint dies after the temporary file is complete, before its rename); the same
                command is run again until it completes, and the forest must equal the reference
                bit for bit (checkpoints, metrics with their validation table, eval.h5), with no
                temporary file left behind
  rank changes  killed in each phase on W ranks, continued on another W (2 -> 1, 1 -> 4, 4 -> 2):
                the same bits (each model keeps the global batch it started with)
  bad inputs    each must exit with its code, say its message fragment, and change no file of the
                run directory (checksums before and after)
  signals       SIGUSR1 to mpirun, SIGTERM and SIGINT to the ranks: each rank checkpoints, the
                job exits 75, then the rerun equals the reference; SIGTERM to mpirun: Open MPI
                exits 1 (whether it passes the signal on varies), and the rerun still equals the
                reference; SIGTERM to jobs/forest.sbatch's shell under mpirun (Slurm's variables
                set by hand): exit 75, the rerun equals the reference; a diverging run stops with the step named and its last good checkpoint
                intact

usage: run_faults.py BTM [--work DIR] [--kills N] [--seed S] [--only PART]
Prints one line per case and the tally, e.g. "faults: 24 kills, 24 identical; ..."; exits 1 if
any case failed, 77 (skipped) without h5py."""
import argparse
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

try:
    import h5py
    import numpy as np
except ImportError:
    print("faults: skipped, h5py and numpy are needed (python3-h5py)")
    sys.exit(77)

HERE = os.path.dirname(os.path.abspath(__file__))
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1", OMP_NUM_THREADS="1")


class Suite:
    def __init__(self, btm, work):
        self.btm, self.work = btm, work
        self.corpus = os.path.join(work, "corpus")
        self.failures = []
        self.tally = {}

    # --- running ------------------------------------------------------------------------------

    def flags(self, run_dir, **over):
        """The tiny forest's flags; over = {"model.d_model": "64", ...} replaces or adds some."""
        settings = {"data.corpus": self.corpus, "data.domains": "a,b", "data.eval_domains": "c",
                    "model.n_layer": "2", "model.d_model": "32", "model.n_head": "2",
                    "model.context": "16", "data.batch": "2", "data.accum": "2",
                    "run.steps": "120", "run.checkpoint_every": "5", "run.log_every": "1",
                    "run.threads": "1", "run.device": "cpu", "eval.blocks": "4",
                    "eval.prior_blocks": "4", "eval.prior_batch": "2", "run.dir": run_dir}
        settings.update(over)
        return [x for key, value in settings.items() for x in ("--" + key, value)]

    def command(self, ranks, args):
        return ["mpirun", "-np", str(ranks), self.btm, *args] if ranks > 1 else [self.btm, *args]

    def run(self, ranks, args, env=None, timeout=300, argv=None):
        p = subprocess.run(argv or self.command(ranks, args), env=dict(ENV, **(env or {})),
                           timeout=timeout,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        return p.returncode, p.stdout

    def run_until(self, ranks, args, line_prefix, nth, action, env=None, argv=None):
        """Runs the command (argv, else btm with args on `ranks` ranks) and, at the nth output line
        starting with line_prefix, does action(p) (a kill or a signal); returns (exit code,
        output, whether the line was reached)."""
        p = subprocess.Popen(argv or self.command(ranks, args), env=dict(ENV, **(env or {})),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
        seen, out, hit = 0, [], False
        for line in p.stdout:
            out.append(line)
            if not hit and line.startswith(line_prefix):
                seen += 1
                if seen == nth:
                    hit = True
                    action(p)
        p.wait(timeout=120)
        return p.returncode, "".join(out), hit

    def kill_job(self, p, run_dir):
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        # Ranks outside mpirun's process group, if any, die too: nothing may write afterwards.
        subprocess.run(["pkill", "-9", "-f", "--", "--run.dir " + run_dir], env=ENV)

    def rank_pids(self, run_dir):
        # Anchored at the start: mpirun's own command line holds the same words.
        out = subprocess.run(["pgrep", "-f", "--", "^" + self.btm + " run .*--run.dir " + run_dir],
                             stdout=subprocess.PIPE, text=True).stdout.split()
        return [int(x) for x in out]

    def complete(self, ranks, args):
        """Runs the command until it exits 0 (it may need several runs after a stop)."""
        for _ in range(6):
            rc, out = self.run(ranks, args)
            if rc == 0:
                return True, out
            if rc != 75:
                return False, out
        return False, out

    # --- comparing ----------------------------------------------------------------------------

    def differences(self, ref, other):
        diffs = []
        for sub, keys, attrs in (("elms", ("params", "adam_m", "adam_v"),
                                  ("step", "target_steps", "tokens", "sampler_position")),
                                 ("metrics", ("step", "tokens", "loss", "lr", "grad_norm", "valid/step",
                                              "valid/loss"), ())):
            for name in sorted(os.listdir(os.path.join(ref, sub))):
                a_path, b_path = os.path.join(ref, sub, name), os.path.join(other, sub, name)
                if not os.path.exists(b_path):
                    diffs.append(f"{sub}/{name} missing")
                    continue
                with h5py.File(a_path, "r") as a, h5py.File(b_path, "r") as b:
                    for k in keys:
                        if k not in a or k not in b:
                            diffs.append(f"{sub}/{name}:/{k} missing")
                            continue
                        x, y = a[k][()], b[k][()]
                        if x.shape != y.shape or x.tobytes() != y.tobytes():
                            diffs.append(f"{sub}/{name}:/{k}")
                    for k in attrs:
                        if a.attrs[k] != b.attrs[k]:
                            diffs.append(f"{sub}/{name}@{k}: {a.attrs[k]} vs {b.attrs[k]}")
        with h5py.File(os.path.join(ref, "eval.h5"), "r") as a, \
                h5py.File(os.path.join(other, "eval.h5"), "r") as b:
            for k in ("perplexity", "priors", "average_weights"):
                if a[k][()].tobytes() != b[k][()].tobytes():
                    diffs.append(f"eval.h5:/{k}")
        for root, _, files in os.walk(other):
            diffs += [f"left behind: {f}" for f in files if ".h5.tmp." in f]
        return diffs

    @staticmethod
    def digest(run_dir):
        sums = {}
        for root, _, files in os.walk(run_dir):
            for f in files:
                if f == ".lock":  # the lock's holder note, not data
                    continue
                path = os.path.join(root, f)
                with open(path, "rb") as fh:
                    sums[os.path.relpath(path, run_dir)] = hashlib.sha256(fh.read()).hexdigest()
        return sums

    def record(self, kind, ok, name, detail=""):
        total, good = self.tally.get(kind, (0, 0))
        self.tally[kind] = (total + 1, good + (1 if ok else 0))
        print(f"  {'ok  ' if ok else 'FAIL'} {kind}: {name}{(': ' + detail) if detail and not ok else ''}",
              flush=True)
        if not ok:
            self.failures.append(f"{kind}: {name}: {detail}")

    def fresh(self, name):
        path = os.path.join(self.work, name)
        shutil.rmtree(path, ignore_errors=True)
        return path

    # --- the cases ----------------------------------------------------------------------------

    def reference(self):
        subprocess.run(["/usr/bin/python3", os.path.join(HERE, "..", "slurm", "make_corpus.py"),
                        self.corpus, "a", "b", "c", "--train-tokens", "20000"], check=True,
                       stdout=subprocess.DEVNULL)
        self.ref = self.fresh("reference")
        rc, out = self.run(2, ["run", *self.flags(self.ref)])
        if rc != 0:
            sys.exit(f"faults: the reference run failed (exit {rc}):\n{out}")
        # Checkpoint commits of a whole run, for the failpoint's range.
        self.commits = out.count("\n")  # an upper bound is enough: later draws past the end
        self.phase_lines = {"[seed] step": 60, "[a] step": 60, "[b] step": 60, "[dense] step": 60,
                            "[eval] perplexity": 1}

    def kills(self, count, rng):
        phases = list(self.phase_lines.items())
        for i in range(count):
            run_dir = self.fresh(f"kill-{i}")
            args = ["run", *self.flags(run_dir)]
            how = rng.choice(["job at a line", "one rank at a line", "inside a checkpoint write"])
            if how == "inside a checkpoint write":
                at = rng.randint(1, 40)
                rc, out = self.run(2, args, env={"BTM_FAULT_KILL_AT_COMMIT": str(at)})
                where = f"commit {at} (exit {rc})"
            else:
                prefix, lines = rng.choice(phases)
                nth = rng.randint(1, lines)
                where = f"'{prefix}' line {nth}"

                def act(p, one=how.startswith("one")):
                    # One listing: the ranks may exit between two (after the last line).
                    pids = self.rank_pids(run_dir) if one else []
                    if pids:
                        try:
                            os.kill(rng.choice(pids), signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                    else:
                        self.kill_job(p, run_dir)
                rc, out, hit = self.run_until(2, args, prefix, nth, act)
                subprocess.run(["pkill", "-9", "-f", "--", "--run.dir " + run_dir], env=ENV)
            ok, out2 = self.complete(2, args)
            diffs = self.differences(self.ref, run_dir) if ok else ["the rerun failed: " + out2[-300:]]
            self.record("kills", not diffs, f"{how}, {where}", "; ".join(diffs[:4]))

    def rank_changes(self, rng):
        for before, after in ((2, 1), (1, 4), (4, 2)):
            for prefix in ("[seed] step", "[a] step", "[dense] step"):
                run_dir = self.fresh(f"ranks-{before}-{after}-{prefix[1:5]}")
                args = ["run", *self.flags(run_dir)]
                nth = rng.randint(5, 55)
                rc, out, hit = self.run_until(before, args, prefix, nth,
                                              lambda p: self.kill_job(p, run_dir))
                subprocess.run(["pkill", "-9", "-f", "--", "--run.dir " + run_dir], env=ENV)
                ok, out2 = self.complete(after, args)
                diffs = self.differences(self.ref, run_dir) if ok else ["the rerun failed: " + out2[-300:]]
                if not hit:
                    diffs.append(f"the run ended before '{prefix}' line {nth}")
                self.record("rank changes", not diffs,
                            f"{before} -> {after} ranks, killed at '{prefix}' line {nth}",
                            "; ".join(diffs[:4]))

    def bad_inputs(self):
        base = self.fresh("bad-base")
        shutil.copytree(self.ref, base)
        good = self.flags("RUN")

        def flags(**over):
            return self.flags("RUN", **over)

        other_shape = os.path.join(self.work, "other-shape.h5")

        def make_other_shape():
            d = self.fresh("other-shape-run")
            self.run(1, ["run", *self.flags(d, **{"model.d_model": "64", "run.steps": "2",
                                                  "run.dense": "false"}), "--no-eval"])
            shutil.copy(os.path.join(d, "elms", "a.h5"), other_shape)

        def no_forest(run_dir):
            shutil.rmtree(run_dir)

        def flip_byte(rel):
            def go(run_dir):
                path = os.path.join(run_dir, rel)
                with h5py.File(path, "r") as f:
                    info = f["params"].id.get_chunk_info(0)
                with open(path, "r+b") as f:
                    f.seek(info.byte_offset + 3)
                    c = f.read(1)
                    f.seek(info.byte_offset + 3)
                    f.write(bytes([c[0] ^ 1]))
            return go

        def truncate(rel):
            def go(run_dir):
                path = os.path.join(run_dir, rel)
                with open(path, "r+b") as f:
                    f.truncate(os.path.getsize(path) // 2)
            return go

        def hold_lock(run_dir):
            return subprocess.Popen(["/usr/bin/python3", "-c",
                                     "import fcntl,sys,time\n"
                                     f"f=open('{run_dir}/.lock','a+')\n"
                                     "fcntl.lockf(f,fcntl.LOCK_EX)\n"
                                     "f.seek(0);f.truncate();f.write('host test, pid 1');f.flush()\n"
                                     "print('held',flush=True)\ntime.sleep(60)\n"],
                                    stdout=subprocess.PIPE, text=True)

        # (name, ranks, args with RUN for the run directory, exit code, fragment, setup)
        cases = [
            ("an unknown option", 1, ["run", *good, "--no-such"], 2, "unrecognised option"),
            ("a word for an integer", 1, ["run", *flags(**{"model.n_layer": "two"})], 2, "is not an integer"),
            ("an unknown decay", 1, ["run", *flags(**{"optim.decay": "cos"})], 2, "use linear or cosine"),
            ("a negative learning rate", 1, ["run", *flags(**{"optim.lr": "-1"})], 2, "optim.lr must be > 0"),
            ("a missing config file", 1, ["run", *good, "--config", "/no/such.cfg"], 2, "not found"),
            ("a domain without a corpus", 1, ["run", *flags(**{"data.domains": "a,zz"})], 2, "domain 'zz': no corpus"),
            ("a world that cannot form the batch", 3, ["run", *good], 2, "3 ranks cannot form"),
            ("more ranks per ELM than ranks", 2, ["run", *flags(**{"run.ranks_per_elm": "4"})], 2, "run.ranks_per_elm"),
            ("another micro-batch for an unfinished forest", 1, ["run", *flags(**{"data.batch": "4", "data.accum": "1"})], 2, "data.batch", "unfinished"),
            ("another model shape", 1, ["eval", *flags(**{"model.d_model": "48"})], 2, "differs from the forest's"),
            ("eval.topk above K", 1, ["eval", *good, "--eval.topk", "1,5"], 2, "eval.topk lists 5"),
            ("a new domain without a corpus", 1, ["branch", *good, "--new-domain", "zz", "--weights", "1,1"], 2, "domain 'zz': no corpus"),
            ("forest add of another shape", 1, ["forest", "add", "--run.dir", "RUN", "--name", "x", "--checkpoint", other_shape], 2, "differs from the forest's", make_other_shape),
            ("forest remove of an unknown model", 1, ["forest", "remove", "--run.dir", "RUN", "--name", "zz"], 2, "no model named 'zz'"),
            ("a damaged checkpoint", 1, ["eval", *good], 2, "checksum", flip_byte("elms/a.h5")),
            ("a truncated checkpoint", 1, ["eval", *good], 2, "a.h5", truncate("elms/a.h5")),
            ("a truncated manifest", 1, ["eval", *good], 2, "forest.h5", truncate("forest.h5")),
            ("an unknown posterior", 1, ["eval", *good, "--eval.posterior", "prior"], 2, "use prefix or prev-token"),
            ("own initialisations with a seed", 1, ["run", *good, "--run.elm_init", "random"], 2, "run.seed_share = 0"),
            ("a seed share of 1", 1, ["run", *flags(**{"run.seed_share": "1"})], 2, "run.seed_share must be in [0, 1)"),
            ("zero steps", 1, ["run", *flags(**{"run.steps": "0"})], 2, "run.steps must be >= 1"),
            ("a domain listed twice", 1, ["run", *flags(**{"data.domains": "a,a"})], 2, "lists 'a' twice"),
            ("a held-out domain that is also trained", 1, ["run", *flags(**{"data.eval_domains": "a"})], 2, "also a train domain"),
            ("a reserved domain name", 1, ["run", *flags(**{"data.domains": "a,seed"})], 2, "reserved"),
            # New forests: on the trained one, any other model shape is refused first.
            ("a context longer than a corpus", 1, ["run", *flags(**{"model.context": "60000"})], 2, "fewer than one block", no_forest),
            ("a model too big for memory", 1, ["run", *flags(**{"model.d_model": "16384", "model.n_head": "16", "model.n_layer": "64"})], 2, "the model needs about", no_forest),
            ("a run.dir that is a file", 1, ["run", *flags(**{"run.dir": "RUN/forest.h5"})], 2, "cannot"),
            ("an average under a taken name", 1, ["average", *good, "--name", "a"], 2, "already exists"),
            ("a negative step limit", 1, ["run", *good, "--max-steps-per-run", "-1"], 2, "--max-steps-per-run must be >= 0"),
            ("a layout for 3 ranks", 1, ["layout", *good, "--world", "3"], 2, "3 ranks cannot form"),
            ("a second writer", 1, ["eval", *good], 2, "is in use by another btm (host test, pid 1)", "lock"),
            ("verify of a directory that is no run", 1, ["verify", os.path.join(self.work, "corpus")], 2, "not a btm run directory"),
            ("an unknown bench case", 1, ["bench", "--run.device", "cpu", "--cases", "fly"], 2, "unknown case"),
            ("an unknown command", 1, ["frobnicate"], 2, "unknown command"),
        ]
        for case in cases:
            name, ranks, args, code, fragment = case[:5]
            setup = case[5] if len(case) > 5 else None
            run_dir = self.fresh("bad")
            shutil.copytree(base, run_dir)
            holder = None
            if setup == "lock":
                holder = hold_lock(run_dir)
                holder.stdout.readline()
            elif setup == "unfinished":
                # The ELMs half trained: stopped by the step limit.
                shutil.rmtree(run_dir)
                for _ in range(2):
                    self.run(1, ["run", *self.flags(run_dir), "--max-steps-per-run", "30"])
            elif setup is not None:
                setup(run_dir) if setup.__code__.co_argcount == 1 else setup()
            before = self.digest(run_dir)
            rc, out = self.run(ranks, [a.replace("RUN", run_dir) for a in args])
            if holder:
                holder.kill()
            after = self.digest(run_dir)
            problems = []
            if rc != code:
                problems.append(f"exit {rc}, not {code}")
            if fragment not in out:
                problems.append(f"no '{fragment}' in: {out.strip().splitlines()[-1:] }")
            changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
            if changed:
                problems.append("changed: " + ", ".join(changed[:4]))
            self.record("bad inputs", not problems, name, "; ".join(problems))

    def signals(self):
        def send_to_mpirun(sig):
            return lambda p: p.send_signal(sig)

        def send_to_ranks(sig, run_dir):
            return lambda p: [os.kill(pid, sig) for pid in self.rank_pids(run_dir)]

        for name, maker, expect in (
                ("SIGUSR1 to mpirun", lambda d: send_to_mpirun(signal.SIGUSR1), 75),
                ("SIGTERM to the ranks", lambda d: send_to_ranks(signal.SIGTERM, d), 75),
                ("SIGINT to the ranks", lambda d: send_to_ranks(signal.SIGINT, d), 75),
                ("SIGTERM to mpirun (Open MPI exits 1 and may not pass it on)",
                 lambda d: send_to_mpirun(signal.SIGTERM), 1)):
            run_dir = self.fresh("signal")
            args = ["run", *self.flags(run_dir)]
            rc, out, hit = self.run_until(2, args, "[b] step", 20, maker(run_dir))
            problems = []
            if rc != expect:
                problems.append(f"exit {rc}, not {expect}")
            if expect == 75 and "stop requested: checkpointed at step" not in out:
                problems.append("no checkpoint on the signal")
            ok, out2 = self.complete(2, args)
            problems += self.differences(self.ref, run_dir) if ok else ["the rerun failed"]
            self.record("signals", not problems, name, "; ".join(problems[:4]))

        # The job scripts under mpirun (no Slurm: its variables set by hand, no requeue): SIGTERM
        # to the batch shell reaches the ranks as SIGUSR1 through mpirun, and the job exits 75.
        run_dir = self.fresh("signal-job")
        empty = os.path.join(self.work, "empty.cfg")
        open(empty, "w").close()
        root = os.path.abspath(os.path.join(HERE, "..", ".."))
        job_env = {"SLURM_JOB_ID": "1", "SLURM_NTASKS": "2", "SLURM_SUBMIT_DIR": root,
                   "BTM_ROOT": root, "BTM_LAUNCHER": "mpirun", "BTM_BIN": self.btm,
                   "BTM_CONFIG": empty, "BTM_REQUEUE": "0", "BTM_DEVICE": "cpu",
                   "BTM_ARGS": " ".join(self.flags(run_dir))}
        job = ["bash", os.path.join(root, "jobs", "forest.sbatch")]
        rc, out, hit = self.run_until(1, [], "[b] step", 20, lambda p: p.send_signal(signal.SIGTERM),
                                      env=job_env, argv=job)
        problems = [] if rc == 75 else [f"exit {rc}, not 75"]
        if "stop requested: checkpointed at step" not in out or not hit:
            problems.append("no checkpoint on the signal")
        rc2, out2 = self.run(1, [], env=job_env, argv=job)
        problems += self.differences(self.ref, run_dir) if rc2 == 0 else [f"the rerun: exit {rc2}"]
        self.record("signals", not problems, "SIGTERM to the job script (mpirun)",
                    "; ".join(problems[:4]))

        # A diverging run stops naming the step; its last checkpoint stays good.
        run_dir = self.fresh("diverge")
        rc, out = self.run(1, ["run", *self.flags(run_dir, **{"optim.lr": "1e30",
                                                               "optim.grad_clip": "0"})])
        problems = []
        if rc == 0 or "not finite at step" not in out:
            problems.append(f"exit {rc}: {out.strip().splitlines()[-1:]}")
        seed = os.path.join(run_dir, "elms", "seed.h5")
        if os.path.exists(seed):
            with h5py.File(seed, "r") as f:
                if not np.isfinite(f["params"][()]).all():
                    problems.append("the kept checkpoint is not finite")
        self.record("signals", not problems, "a diverging run", "; ".join(problems))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("btm")
    p.add_argument("--work")
    p.add_argument("--kills", type=int, default=24)
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--only", choices=("kills", "rank-changes", "bad-inputs", "signals"),
                   help="run one part (and the reference)")
    a = p.parse_args()
    work = a.work or tempfile.mkdtemp(prefix="btm-faults-")
    os.makedirs(work, exist_ok=True)
    start = time.time()
    suite = Suite(os.path.abspath(a.btm), work)
    suite.reference()
    rng = random.Random(a.seed)
    for name, part in (("kills", lambda: suite.kills(a.kills, rng)),
                       ("rank-changes", lambda: suite.rank_changes(rng)),
                       ("bad-inputs", suite.bad_inputs), ("signals", suite.signals)):
        if a.only in (None, name):
            print("== " + name.replace("-", " "), flush=True)
            part()
    t = suite.tally
    parts = [f"{t[k][0]} {k}, {t[k][1]} {w}" for k, w in
             (("kills", "identical"), ("rank changes", "identical"), ("bad inputs", "clean"),
              ("signals", "as expected")) if k in t]
    print(f"faults: {'; '.join(parts)} ({time.time() - start:.0f} s)")
    if suite.failures:
        print("failed:\n  " + "\n  ".join(suite.failures))
        return 1
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
