#!/usr/bin/python3
"""Writes tiny synthetic byte-tokenizer corpora for the Slurm test, in the format of
include/btm/corpus.hpp (one HDF5 file per domain: /train /valid /test uint16 token ids, each
document ended by the end-of-text token 256, plus the btm-corpus attributes).

Each domain's text comes from its own small Markov chain over its own alphabet, so domains
differ and a small model learns them.

usage: make_corpus.py DIR DOMAIN [DOMAIN ...] [--train-tokens N]
"""
import argparse
import os
import random

import h5py
import numpy as np

EOT = 256
FORMAT_VERSION = 1  # kCorpusFormatVersion in include/btm/corpus.hpp


def domain_tokens(rng, alphabet, table, count):
    """Documents of 20-200 tokens, each ended by EOT, until `count` tokens exist."""
    tokens, docs, state = [], 0, 0
    while len(tokens) < count:
        for _ in range(rng.randint(20, 200)):
            state = table[state][rng.randrange(3)]
            tokens.append(alphabet[state])
        tokens.append(EOT)
        docs += 1
    return np.asarray(tokens, dtype=np.uint16), docs


def write_domain(directory, domain, seed, train_tokens):
    rng = random.Random(seed)
    alphabet = [ord("a") + (seed * 5 + i * 3) % 26 for i in range(12)]
    table = [[rng.randrange(12) for _ in range(3)] for _ in range(12)]
    held_out = train_tokens // 8 + 300
    path = os.path.join(directory, domain + ".h5")
    partial = path + ".partial"  # written whole, then renamed, like btm's own files
    with h5py.File(partial, "w") as f:
        f.attrs["format"] = "btm-corpus"
        f.attrs["format_version"] = np.int64(FORMAT_VERSION)
        f.attrs["domain"] = domain
        f.attrs["tokenizer"] = "byte"
        f.attrs["vocab_size"] = np.int64(257)
        f.attrs["eot_token"] = np.int64(EOT)
        f.attrs["source"] = "synthetic Markov-chain text (tests/slurm/make_corpus.py)"
        for split, count in (("train", train_tokens), ("valid", held_out), ("test", held_out)):
            tokens, docs = domain_tokens(rng, alphabet, table, count)
            f.create_dataset(split, data=tokens)  # contiguous: btm memory-maps it
            f.attrs["docs_" + split] = np.int64(docs)
            f.attrs["bytes_" + split] = np.int64(len(tokens))
            f.attrs["tokens_" + split] = np.int64(len(tokens))
    os.replace(partial, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir")
    parser.add_argument("domains", nargs="+")
    parser.add_argument("--train-tokens", type=int, default=20000)
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    for index, domain in enumerate(args.domains):
        write_domain(args.dir, domain, index + 1, args.train_tokens)


if __name__ == "__main__":
    main()
