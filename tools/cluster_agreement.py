#!/usr/bin/env python3
"""How well c-BTM's clusters agree with the labels the corpus had: the contingency table of
cluster against original label and the purity (the share of documents in their cluster's
majority label), from the corpora `btm prepare --clusters` wrote. Each CORPUS/cluster_NN.h5
records in its "source" attribute how many of its documents came from each top folder of the
input ("folders: legal=120 news=3;"): a labelled tree read as unlabelled keeps its labels there.

usage: python3 tools/cluster_agreement.py CORPUS [--out FILE.md]
Exit codes: 0 done, 2 CORPUS has no cluster corpora or one records no folders. Needs h5py.
"""
import argparse
import glob
import os
import re
import sys

import h5py


def folders_of(path):
    with h5py.File(path, "r") as f:
        source = f.attrs["source"]
    source = source.decode() if isinstance(source, bytes) else str(source)
    m = re.search(r"folders:((?: \S+=\d+)*);", source)
    if not m:
        raise ValueError(f"{path}: its source records no folders (not written by "
                         f"btm prepare --clusters?): {source!r}")
    return {k: int(v) for k, v in (p.split("=") for p in m.group(1).split())}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("corpus")
    ap.add_argument("--out", help="write the table here too (markdown)")
    a = ap.parse_args()
    files = sorted(glob.glob(os.path.join(a.corpus, "cluster_*.h5")))
    if not files:
        print(f"cluster_agreement: no cluster_*.h5 in {a.corpus} (btm prepare --clusters)",
              file=sys.stderr)
        return 2
    try:
        table = {os.path.basename(p)[:-3]: folders_of(p) for p in files}
    except (ValueError, OSError, KeyError) as e:
        print(f"cluster_agreement: {e}", file=sys.stderr)
        return 2
    labels = sorted({l for row in table.values() for l in row})
    total = sum(sum(r.values()) for r in table.values())
    majority = sum(max(r.values()) if r else 0 for r in table.values())
    # Inverse purity: the share of each label's documents in its largest cluster.
    inverse = sum(max(table[c].get(l, 0) for c in table) for l in labels)
    lines = ["| cluster | " + " | ".join(labels) + " | documents | majority |",
             "|---|" + "---|" * (len(labels) + 2)]
    for c, row in table.items():
        n = sum(row.values())
        top = max(row, key=row.get) if row else "-"
        lines.append(f"| {c} | " + " | ".join(str(row.get(l, 0)) for l in labels) +
                     f" | {n} | {top} ({100 * row.get(top, 0) / max(n, 1):.0f}%) |")
    lines.append("")
    lines.append(f"purity {majority / total:.3f} (documents in their cluster's majority label), "
                 f"inverse purity {inverse / total:.3f} (in their label's largest cluster), "
                 f"{len(table)} clusters, {len(labels)} labels, {total} documents")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
