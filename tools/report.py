#!/usr/bin/env python3
"""Turns a btm run's evaluation into a report: RUN/eval.h5 (written by `btm eval`, format in
include/btm/io/eval_file.hpp, read by tools/btm_files.py) and RUN/metrics/*.h5
(include/btm/io/metrics.hpp) become

  DIR/report.md          header (ELMs, domains, tokens) and the paper-style perplexity table:
                         rows = methods, columns = in-domain mean, out-of-domain mean (where
                         there are held-out domains), each domain; the best (lowest) value of
                         each column in bold; under it the compute-match facts (steps, global
                         batches, tokens), a glossary of the methods, the compute per model,
                         the merges' parameters, the cached priors
  DIR/loss_vs_tokens.png validation perplexity per model and domain (seed, ELMs, dense) against
                         tokens seen, beside the smoothed training loss
  DIR/ppl_vs_topk.png    mean perplexity of the top-k ensemble against k, one panel for the
                         train domains and one for the held-out ones, with reference lines
  DIR/prior_heatmap.png  the cached prior of every evaluation domain over the ELMs

usage: python3 tools/report.py RUN [--out DIR]      (DIR defaults to RUN/report)
       python3 tools/report.py --merge OUT.md ROW [ROW ...]
RUN may also be the path of an eval file. --merge writes one table of rows from several eval
files (a study of several runs; the columns are the domains of the first row's file, and every
file must have them): each ROW is "LABEL|EVAL_FILE|METHOD[|NOTE]", the method's
perplexities with the training compute behind it (tokens, steps per model path, GPU-seconds:
the seed and every ELM for a forest method, the dense model's own trajectory for "dense"). Exit codes: 0 done, 2 the input is not a readable btm
eval file (the message says why), 1 anything else. Needs python3-h5py, python3-numpy and
python3-matplotlib (Debian packages)."""
import argparse
import math
import os
import re
import sys

EXIT_BAD_INPUT = 2

try:
    import h5py
    import numpy as np
    from btm_files import BadInput, as_str, read_eval
except ImportError as e:
    sys.exit(f"report.py: the Python module {e.name} is missing for {sys.executable}: install "
             "python3-h5py and python3-numpy (Debian), or run the tool with /usr/bin/python3")


def cost_of(ev, method):
    """(tokens, steps per model path, training GPU-seconds) behind a method's numbers: the dense
    model's trajectory for "dense", the seed and every ELM for a forest method."""
    if not (ev.compute and ev.compute.models):
        return None
    c = ev.compute.by_model()
    seed_s = c["seed"]["train_seconds"] if "seed" in c else 0.0
    if method == "dense":
        if "dense" not in c:
            return None
        d = c["dense"]
        return (int(d["tokens"]), int(d["steps"]),
                d["train_seconds"] + (seed_s if d["continues"] == "seed" else 0.0))
    elms = [name for name in c if name not in ("seed", "dense")]
    seconds = seed_s + sum(c[e]["train_seconds"] for e in elms)
    steps = int(c[elms[0]]["steps"]) if elms else 0
    return ev.compute.forest_tokens, steps, seconds


def read_metrics(metrics_dir):
    """{name: curve} of every readable btm metrics file, a curve being a dict of tokens, loss
    (the training loss of each logged step) and, where the file has its validation table
    (format 2), valid_tokens, valid_ppl [rows, domains] and valid_domains; other files are skipped
    with a warning (a report without one curve is still useful)."""
    curves = {}
    if not os.path.isdir(metrics_dir):
        return curves
    for entry in sorted(os.listdir(metrics_dir)):
        if not entry.endswith(".h5"):
            continue
        path = os.path.join(metrics_dir, entry)
        try:
            with h5py.File(path, "r") as f:
                if as_str(f.attrs.get("format", "")) != "btm-metrics":
                    raise ValueError("not a btm metrics file")
                name = as_str(f.attrs["name"]) if "name" in f.attrs else entry[:-3]
                curve = {"tokens": np.asarray(f["tokens"][()], dtype=float),
                         "loss": np.asarray(f["loss"][()], dtype=float)}
                if "valid" in f:
                    g = f["valid"]
                    curve["valid_domains"] = [as_str(d) for d in g.attrs["domains"]]
                    curve["valid_tokens"] = np.asarray(g["tokens"][()], dtype=float)
                    curve["valid_ppl"] = np.asarray(g["perplexity"][()], dtype=float).reshape(
                        len(curve["valid_tokens"]), len(curve["valid_domains"]))
            if curve["tokens"].shape != curve["loss"].shape:
                raise ValueError("tokens and loss have different lengths")
            curves[name] = curve
        except (OSError, KeyError, ValueError) as e:
            print(f"report.py: warning: skipping {path}: {e}", file=sys.stderr)
    return curves


def fmt_ppl(x):
    return "–" if not math.isfinite(x) else f"{x:.2f}"


def markdown_table(header, rows, bold):
    """rows: list of lists of cell strings; bold[r][c] marks cells to embolden."""
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for r, row in enumerate(rows):
        cells = [f"**{c}**" if bold[r][i] else c for i, c in enumerate(row)]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def best_mask(column):
    """True where the column holds its smallest finite value (ties all marked)."""
    finite = np.isfinite(column)
    if not finite.any():
        return np.zeros(len(column), dtype=bool)
    best = column[finite].min()
    return finite & (column <= best)


def ordered_domains(ev):
    return ev.train_domains() + ev.heldout_domains()


def merge_lines(merges):
    """The parameters of the merge rows (eval.h5's /merges)."""
    def num(x):
        return "–" if not math.isfinite(x) else f"{x:g}"
    rows = [[r, v["method"], v["scheme"], num(v["lambda"]), num(v["density"]), num(v["drop"])]
            for r, v in merges.by_row().items()]
    return ["## Merges", "",
            f"Task vectors relative to the {merges.base}, merged with the weights of the average "
            f"scheme named (DARE seed {merges.seed}; {merges.seconds:.1f} s to form and score).",
            "", markdown_table(["Row", "Method", "Weights", "Lambda", "Density", "Drop"], rows,
                               [[False] * 6 for _ in rows]), ""]


# What each row of the table is (report.md's "Methods"), by the start of the row's name.
GLOSSARY = (
    ("elm:D", "the expert LM (ELM) trained on domain D, alone."),
    ("ensemble:top-k", "per token, the mixture of the k ELMs with the largest cached prior of "
     "the evaluated domain, each weighted by its domain posterior (Bayes' rule over the prefix, "
     "starting from that cached prior renormalised over the k). k = 1 picks one expert; k = K "
     "is the whole forest. Only k ELMs run."),
    ("ensemble:uniform-mixture", "the mean of every ELM's next-token probabilities, with equal "
     "weights that never change (no posterior)."),
    ("ensemble:uniform-prior", "the domain posterior over every ELM, as top-K, but starting from "
     "a uniform prior instead of the cached one."),
    ("cached prior", "a prior over the ELMs for each evaluated domain, estimated once on its "
     "validation split (an exponential moving average of the batches' mean posterior) and then "
     "frozen for the test split (table \"Cached priors\")."),
    ("average:uniform", "one model: the mean of the ELMs' parameters (the cost of one ELM)."),
    ("average:cached-prior", "the parameters averaged with the evaluated domain's cached prior as "
     "weights (the paper's choice)."),
    ("average:argmax", "the single ELM with the largest cached prior for the evaluated domain."),
    ("merge:M:S", "a merge of the ELMs' task vectors (their parameters minus the seed's) by "
     "method M (task arithmetic, TIES, DARE) with the weights of average S (table \"Merges\")."),
    ("dense", "the compute-matched dense baseline: one model trained on every train domain with "
     "the forest's tokens."),
)


def glossary_lines(ev):
    """The glossary entries for the rows this report has (and the cached prior they use)."""
    prefixes = {"elm:D": "elm:", "ensemble:top-k": "ensemble:top-", "merge:M:S": "merge:",
                "cached prior": ("ensemble:top-", "average:cached-prior", "average:argmax")}

    def present(term):
        return (any(m.startswith(prefixes[term]) for m in ev.methods) if term in prefixes
                else term in ev.methods)
    lines = ["## Methods", ""]
    lines += [f"- **{term}**: {text}" for term, text in GLOSSARY if present(term)]
    return lines + ["", f"The domain posterior uses the {ev.posterior} likelihood "
                    "(prefix: the whole prefix of the block, as in the paper; prev-token: the "
                    "previous token only, as in the paper's code).", ""]


def compute_match_lines(ev):
    """The compute-match facts under the perplexity table: steps per model path, the global batch
    of each kind of model and the tokens of forest and dense (from eval.h5's /compute)."""
    if not (ev.compute and ev.compute.models):
        return []
    c = ev.compute.by_model()
    elms = [n for n in c if n not in ("seed", "dense")]

    def values(names, key):
        found = sorted({int(c[n][key]) for n in names})
        return " or ".join(f"{v:,}" for v in found)

    parts = []
    seed_steps = int(c["seed"]["steps"]) if "seed" in c else 0
    if elms:
        own = sorted({int(c[n]["steps"]) - (seed_steps if c[n]["continues"] == "seed" else 0)
                      for n in elms})
        elm_text = (f"each ELM {' or '.join(f'{v:,}' for v in own)}"
                    f"{' more' if seed_steps else ' steps'} with {values(elms, 'global_batch')}")
        if "seed" in c:
            parts.append(f"every model path takes {values(elms, 'steps')} optimizer steps: the seed "
                         f"{seed_steps:,} with a global batch of {values(['seed'], 'global_batch')} "
                         f"sequences, then {elm_text}")
        else:
            parts.append(elm_text.replace("each ELM", "each ELM trains", 1) + " sequences per step")
    if "dense" in c:
        parts.append(f"the dense baseline {values(['dense'], 'steps')} steps with "
                     f"{values(['dense'], 'global_batch')}")
    forest, dense = ev.compute.forest_tokens, ev.compute.dense_tokens
    tokens = f"Tokens trained: forest (seed + every ELM's own steps) {forest:,}"
    if "dense" in c:
        tokens += f", dense {dense:,} ({'equal' if forest == dense else 'NOT equal'})"
    return [f"**Compute match:** {'; '.join(parts)}. {tokens}. Per model: \"Compute\" below.", ""]


def write_markdown(ev, curves, out_dir, plots):
    order = ordered_domains(ev)
    heldout = set(ev.heldout_domains())
    # Without held-out domains there is no out-of-domain mean (a mean over nothing).
    means = [ev.mean_in_domain] + ([ev.mean_out_domain] if heldout else [])
    columns = means + [ev.perplexity[:, d] for d in order]
    header = ["Method", "In-domain mean"] + (["Out-of-domain mean"] if heldout else []) + [
        ev.domains[d] + (" †" if d in heldout else "") for d in order]
    masks = [best_mask(c) for c in columns]
    rows, bold = [], []
    for m, method in enumerate(ev.methods):
        rows.append([method] + [fmt_ppl(c[m]) for c in columns])
        bold.append([False] + [mask[m] for mask in masks])

    lines = ["# btm evaluation report", ""]
    lines.append(f"- Eval file: `{ev.path}`")
    lines.append(f"- ELMs (K = {len(ev.elms)}): " + ", ".join(ev.elms))
    lines.append("- Train domains (in-domain): " +
                 (", ".join(ev.domains[d] for d in ev.train_domains()) or "none"))
    lines.append("- Held-out domains (out-of-domain, †): " +
                 (", ".join(ev.domains[d] for d in ev.heldout_domains()) or "none"))
    lines.append("- Test tokens scored per domain: " +
                 ", ".join(f"{ev.domains[d]} {int(ev.tokens[d]):,}" for d in order) +
                 f" (total {int(ev.tokens.sum()):,})")
    lines.append(f"- Domain posterior: {ev.posterior}")
    lines += ["", "## Perplexity", "",
              "Lower is better; the best value of each column is in bold; – = not evaluated.", "",
              markdown_table(header, rows, bold), ""]
    lines += compute_match_lines(ev)
    lines += glossary_lines(ev)

    if ev.merges and ev.merges.rows:
        lines += merge_lines(ev.merges)

    if ev.compute and ev.compute.models:
        lines += ["## Compute", "",
                  "What each compared model trained on (tokens and FLOPs over its lineage; "
                  "seconds of its own phase).", ""]
        crow = [[name, f"{int(v['steps']):,}", f"{int(v['global_batch']):,}",
                 f"{int(v['tokens']):,}", f"{v['flops']:.3e}", f"{v['train_seconds']:.1f}"]
                for name, v in ev.compute.by_model().items()]
        lines += [markdown_table(["Model", "Steps", "Global batch (sequences)", "Tokens", "FLOPs",
                                  "Train seconds"], crow, [[False] * 6 for _ in crow]), ""]

    lines += ["## Cached priors", "",
              "The prior over ELMs estimated on each evaluation domain's validation split "
              "(used for top-k and for the cached-prior average).", ""]
    prior_rows = [[ev.domains[d] + (" †" if d in heldout else "")] +
                  [f"{ev.priors[d, j]:.3f}" for j in range(len(ev.elms))] for d in order]
    prior_bold = [[False] + list(best_mask(-ev.priors[d])) for d in order]
    lines += [markdown_table(["Domain"] + ev.elms, prior_rows, prior_bold), ""]

    lines += ["## Plots", ""]
    for file, caption in plots:
        lines.append(f"![{caption}]({file})" if file else f"- {caption}")
    lines.append("")
    if not curves:
        lines.append("No training metrics were found (RUN/metrics/*.h5).")
    path = os.path.join(out_dir, "report.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path


def short_tokens(n):
    """1500 -> "1.5K", 2000000 -> "2M"."""
    for scale, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            return f"{n / scale:g}{unit}"
    return f"{n:g}"


def smoothed(values, window):
    """The mean over a trailing window of `window` logged steps (fewer at the start)."""
    if len(values) == 0:
        return values
    sums = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(idx - window, 0)
    return (sums[idx] - sums[lo]) / (idx - lo)


def plot_loss(plt, curves, path):
    """Validation perplexity against tokens seen (the paper's curves), when the metrics have
    their validation table: one colour per domain, the seed dotted, each ELM solid on its own
    domain (starting where the seed ended), the dense baseline dashed; beside it the training
    loss per model, the mean over a trailing window of logged steps over the raw values drawn
    faint. Returns whether it drew the validation panel."""
    def order(name):
        return (0 if name == "seed" else 2 if name == "dense" else 1, name)

    names = sorted(curves, key=order)
    valid = [n for n in names if "valid_ppl" in curves[n] and len(curves[n]["valid_tokens"])]
    domains = []
    for n in valid:
        domains += [d for d in curves[n]["valid_domains"] if d not in domains]
    colours = {d: plt.cm.tab10(i % 10) for i, d in enumerate(domains)}
    styles = {"seed": dict(ls=":", lw=1.8), "dense": dict(ls="--", lw=1.5)}
    if valid:
        fig, (ax, lx) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [3, 2]})
        seed = curves.get("seed")
        for n in valid:
            c = curves[n]
            for d, domain in enumerate(c["valid_domains"]):
                x, y = c["valid_tokens"], c["valid_ppl"][:, d]
                if n != "seed" and seed is not None and "valid_ppl" in seed \
                        and domain in seed["valid_domains"] and len(seed["valid_tokens"]):
                    # An ELM (and a dense model continuing the seed) starts where the seed
                    # ended: draw its curve from the seed's last point before its own.
                    s = seed["valid_domains"].index(domain)
                    before = seed["valid_tokens"] < x[0]
                    if before.any():
                        x = np.insert(x, 0, seed["valid_tokens"][before][-1])
                        y = np.insert(y, 0, seed["valid_ppl"][before, s][-1])
                ax.plot(x, y, color=colours[domain], marker="o", ms=3,
                        **styles.get(n, dict(ls="-", lw=1.8)))
        ax.set_yscale("log")
        from matplotlib.ticker import FuncFormatter
        plain = FuncFormatter(lambda v, _: f"{v:g}")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
        ax.tick_params(axis="y", which="minor", labelsize=7)
        ax.set_xlabel("tokens seen (over the model's lineage)")
        ax.set_ylabel("validation perplexity")
        ax.set_title("Validation perplexity")
        ax.grid(alpha=0.3, which="both")
        from matplotlib.lines import Line2D
        handles = [Line2D([], [], color=colours[d], lw=2) for d in domains]
        labels = list(domains)
        for label, n in (("seed (every domain)", "seed"), ("ELM (its domain)", None),
                         ("dense (every domain)", "dense")):
            if n is None and not any(m not in ("seed", "dense") for m in valid):
                continue
            if n is not None and n not in valid:
                continue
            handles.append(Line2D([], [], color="black", **styles.get(n, dict(ls="-", lw=1.8))))
            labels.append(label)
        ax.legend(handles, labels, fontsize=8, loc="upper left", bbox_to_anchor=(0.0, -0.14),
                  ncol=len(handles) if len(handles) <= 4 else (len(handles) + 1) // 2,
                  frameon=False)
    else:
        fig, lx = plt.subplots(figsize=(7, 4.5))
    elm_colours = {n: plt.cm.tab10(i % 10) for i, n in
                   enumerate(n for n in names if n not in ("seed", "dense"))}
    for n in names:
        tokens, loss = curves[n]["tokens"], curves[n]["loss"]
        colour = {"seed": "black", "dense": "gray"}.get(n, elm_colours.get(n))
        window = max(1, len(loss) // 20)
        lx.plot(tokens, loss, color=colour, lw=0.6, alpha=0.25)
        lx.plot(tokens, smoothed(loss, window), color=colour, label=n,
                **styles.get(n, dict(ls="-", lw=1.4)))
    for axis in ([ax, lx] if valid else [lx]):
        axis.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: short_tokens(v)))
    lx.set_xlabel("tokens seen")
    lx.set_ylabel("training loss (nats / token)")
    lx.set_title("Training loss (mean over a window of logged steps; raw faint)")
    lx.title.set_fontsize(10)
    lx.grid(alpha=0.3)
    lx.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return bool(valid)


def topk_rows(ev):
    found = []
    for m, method in enumerate(ev.methods):
        match = re.fullmatch(r"ensemble:top-(\d+)", method)
        if match:
            found.append((int(match.group(1)), m))
    return sorted(found)


def plot_topk(plt, ev, path):
    """Mean perplexity of the top-k ensemble against k, one panel per group of domains (in-domain,
    held out: their scales differ), with the dense baseline and the cached-prior average as
    reference lines; one legend below the panels, off the data."""
    rows = topk_rows(ev)
    ks = [k for k, _ in rows]
    panels = [(series, title) for series, title in
              ((ev.mean_in_domain, "In-domain mean"),
                               (ev.mean_out_domain, "Held-out (out-of-domain) mean"))
              if any(math.isfinite(series[m]) for _, m in rows)]
    refs = (("dense", "--", "tab:red"), ("average:cached-prior", ":", "tab:green"),
            ("ensemble:uniform-mixture", "-.", "tab:purple"))
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(5.5 * max(1, len(panels)), 4.2),
                             squeeze=False)
    handles = {}
    for ax, (series, title) in zip(axes[0], panels):
        ys = [series[m] for _, m in rows]
        handles["ensemble top-k"], = ax.plot(ks, ys, "o-", color="tab:blue", lw=2)
        for ref, ls, color in refs:
            if ref in ev.methods and math.isfinite(series[ev.methods.index(ref)]):
                handles[ref] = ax.axhline(series[ev.methods.index(ref)], color=color, ls=ls, lw=1.3)
        ax.set_title(title)
        ax.set_xlabel("k (ELMs in the ensemble, largest cached prior first)")
        ax.set_ylabel("perplexity")
        ax.set_xticks(ks)
        ax.grid(alpha=0.3)
    fig.suptitle("Perplexity vs top-k")
    ncol = len(handles) if len(panels) > 1 else 2
    fig.tight_layout(rect=(0, 0.035 * -(-len(handles) // ncol), 1, 1))
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=ncol, fontsize=8,
               frameon=False)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def plot_priors(plt, ev, path):
    order = ordered_domains(ev)
    heldout = set(ev.heldout_domains())
    data = ev.priors[order]
    K = len(ev.elms)
    fig, ax = plt.subplots(figsize=(max(5.0, 2.5 + 0.8 * K), max(3.0, 1.5 + 0.45 * len(order))))
    image = ax.imshow(data, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(K))
    ax.set_xticklabels(ev.elms, rotation=45, ha="right")
    ax.set_yticks(range(len(order)))
    ax.set_yticklabels([ev.domains[d] + (" (held-out)" if d in heldout else "") for d in order])
    if len(ev.train_domains()) and len(ev.heldout_domains()):
        ax.axhline(len(ev.train_domains()) - 0.5, color="white", lw=2)
    if K * len(order) <= 400:
        for r in range(len(order)):
            for j in range(K):
                ax.text(j, r, f"{data[r, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if data[r, j] < 0.6 else "black")
    ax.set_xlabel("ELM")
    ax.set_ylabel("evaluation domain")
    ax.set_title("Cached prior over the ELMs")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def merge(out_path, specs):
    """One markdown table of rows taken from several eval files (tools/report.py --merge)."""
    rows, files = [], {}
    for spec in specs:
        parts = spec.split("|")
        if len(parts) not in (3, 4):
            raise BadInput(f"--merge row '{spec}': use LABEL|EVAL_FILE|METHOD[|NOTE]")
        label, path, method = parts[:3]
        if path not in files:
            files[path] = read_eval(path)
        ev = files[path]
        if method not in ev.methods:
            raise BadInput(f"{path}: no method '{method}' (it has {', '.join(ev.methods)})")
        rows.append((label, ev, ev.methods.index(method), method, parts[3] if len(parts) == 4 else ""))
    # The columns and the two means are the first row's file's: its train domains (in-domain)
    # and its held-out ones. Another file may evaluate more domains, and group them otherwise (a
    # c-BTM forest trains on clusters and reads the labelled domains as held-out ones); each
    # row's perplexities are taken by domain name and averaged over the first file's groups.
    first = rows[0][1]
    domains = [first.domains[d] for d in ordered_domains(first)]
    heldout = {first.domains[d] for d in first.heldout_domains()}
    for _, ev, _, _, _ in rows:
        missing = [d for d in domains if d not in ev.domains]
        if missing:
            raise BadInput(f"{ev.path}: no evaluation domain {', '.join(missing)} (the first "
                           f"row's file, {first.path}, has them): evaluate it on them too")

    def mean(values):
        return float(np.mean(values)) if values else math.nan
    header = ["Row", "In-domain mean", "Out-of-domain mean"] + [
        d + (" †" if d in heldout else "") for d in domains] + [
        "Tokens", "Steps per path", "GPU-s (train)", "Paper"]
    cells, values = [], []
    for label, ev, m, method, note in rows:
        per_domain = [ev.perplexity[m, ev.domains.index(d)] for d in domains]
        values.append([mean([v for d, v in zip(domains, per_domain) if d not in heldout]),
                       mean([v for d, v in zip(domains, per_domain) if d in heldout])] +
                      per_domain)
        cost = cost_of(ev, method)
        compute = ([f"{cost[0]:,}", f"{cost[1]:,}", f"{cost[2]:.0f}"] if cost else ["?"] * 3)
        cells.append([label] + [fmt_ppl(v) for v in values[-1]] + compute + [note])
    columns = np.array(values, dtype=float).T
    masks = [best_mask(c) for c in columns]
    bold = [[False] + [mask[r] for mask in masks] + [False] * 4 for r in range(len(rows))]
    text = markdown_table(header, cells, bold)
    with open(out_path, "w", encoding="utf-8") as f:
        f.write(text + "\n")
    print(f"report.py: wrote {out_path} ({len(rows)} rows from {len(files)} eval files)")
    return 0


def main(argv):
    if argv and argv[0] == "--merge":
        if len(argv) < 3:
            print("report.py: --merge OUT.md ROW [ROW ...]", file=sys.stderr)
            return EXIT_BAD_INPUT
        try:
            return merge(argv[1], argv[2:])
        except BadInput as e:
            print(f"report.py: {e}", file=sys.stderr)
            return EXIT_BAD_INPUT
    p = argparse.ArgumentParser(description="Report of a btm run's evaluation: markdown + plots.")
    p.add_argument("run", help="run directory (holding eval.h5 and metrics/), or an eval file")
    p.add_argument("--out", help="output directory (default RUN/report)")
    a = p.parse_args(argv)

    if os.path.isdir(a.run):
        run_dir, eval_path = a.run, os.path.join(a.run, "eval.h5")
    else:
        run_dir, eval_path = os.path.dirname(os.path.abspath(a.run)), a.run
    try:
        ev = read_eval(eval_path)
    except BadInput as e:
        print(f"report.py: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"report.py: matplotlib is missing for {sys.executable}: install "
              "python3-matplotlib (Debian)", file=sys.stderr)
        return 1

    out_dir = a.out or os.path.join(run_dir, "report")
    os.makedirs(out_dir, exist_ok=True)
    curves = read_metrics(os.path.join(run_dir, "metrics"))
    plots = []
    if curves:
        with_valid = plot_loss(plt, curves, os.path.join(out_dir, "loss_vs_tokens.png"))
        plots.append(("loss_vs_tokens.png", ("validation perplexity and " if with_valid else "")
                      + "training loss vs tokens"))
    else:
        plots.append((None, "loss_vs_tokens.png: not drawn, no metrics files"))
    if topk_rows(ev):
        plot_topk(plt, ev, os.path.join(out_dir, "ppl_vs_topk.png"))
        plots.append(("ppl_vs_topk.png", "perplexity vs top-k"))
    else:
        plots.append((None, "ppl_vs_topk.png: not drawn, no ensemble:top-k results"))
    plot_priors(plt, ev, os.path.join(out_dir, "prior_heatmap.png"))
    plots.append(("prior_heatmap.png", "cached prior of each evaluation domain"))
    report = write_markdown(ev, curves, out_dir, plots)
    print(f"report.py: wrote {report} and {sum(1 for f, _ in plots if f)} plots in {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
