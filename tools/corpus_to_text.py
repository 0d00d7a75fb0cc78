#!/usr/bin/env python3
"""One split of btm corpora back to text, for the c-BTM study (tools/study_clusters.sh): the
train documents of the labelled domains, clustered without their labels, so that no document of
a labelled test split reaches a cluster's training text. CORPUS/DOMAIN.h5 (gpt2 or byte ids,
include/btm/data/corpus.hpp) -> OUT/DOMAIN/SPLIT.jsonl, one {"text": ...} per document, the text
exact (GPT-2's byte-level BPE decodes to the bytes it encoded).

usage: python3 tools/corpus_to_text.py CORPUS OUT --domains A,B,... [--split train]
       [--bpe-dir data/gpt2]
Needs h5py and numpy.
"""
import argparse
import json
import os
import sys

import h5py
import numpy as np


def byte_decoder():
    # GPT-2's table of printable characters standing for bytes (its encoder.json keys).
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("corpus")
    ap.add_argument("out")
    ap.add_argument("--domains", required=True)
    ap.add_argument("--split", default="train", choices=["train", "valid", "test"])
    ap.add_argument("--bpe-dir", default="data/gpt2")
    a = ap.parse_args()
    pieces = None
    for domain in a.domains.split(","):
        path = os.path.join(a.corpus, domain + ".h5")
        with h5py.File(path, "r") as f:
            tokenizer = f.attrs["tokenizer"]
            tokenizer = tokenizer.decode() if isinstance(tokenizer, bytes) else str(tokenizer)
            eot = int(f.attrs["eot_token"])
            ids = np.asarray(f[a.split][()], dtype=np.int64)
        if tokenizer == "gpt2" and pieces is None:
            with open(os.path.join(a.bpe_dir, "encoder.json")) as e:
                encoder = json.load(e)
            table = byte_decoder()
            pieces = [b""] * len(encoder)
            for text, i in encoder.items():
                pieces[i] = bytes(table[c] for c in text) if i != eot else b""
        elif tokenizer == "byte":
            pieces = [bytes([i]) for i in range(256)] + [b""]
        ends = np.flatnonzero(ids == eot)
        os.makedirs(os.path.join(a.out, domain), exist_ok=True)
        out_path = os.path.join(a.out, domain, a.split + ".jsonl")
        with open(out_path + ".tmp", "w") as out:
            start = 0
            for end in list(ends) + ([len(ids)] if len(ids) and (not len(ends) or ends[-1] != len(ids) - 1) else []):
                text = b"".join(pieces[i] for i in ids[start:end]).decode("utf-8", "replace")
                start = end + 1
                if text:
                    out.write(json.dumps({"text": text}) + "\n")
        os.replace(out_path + ".tmp", out_path)
        print(f"corpus_to_text: {path} {a.split}: {len(ends)} documents -> {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
