#!/usr/bin/env python3
"""Checks `btm export` and `btm import` against Hugging Face transformers (fp32, CPU torch):

1. export: a model of a forest (--model, default its first ELM) and the uniform average of its
   ELMs are written with `btm export`; GPT2LMHeadModel.from_pretrained(DIR) gives the logits of
   `btm logits` within --tolerance (the ELM: on its own checkpoint; the average: on the checkpoint
   `btm import` makes of the exported directory), and AutoTokenizer.from_pretrained(DIR) gives the
   ids of `btm encode` on a set of texts;
2. import: a GPT2LMHeadModel that transformers initialises at random (GPT2Config, small) and
   saves (save_pretrained: safetensors, fp32 and bf16) is read by `btm import`; `btm logits`
   on it equals HF's logits within --tolerance.

usage: python3 tools/check_hf.py --btm .carry/btm [--run RUN] [--model NAME] [--bpe-dir DIR]
Without --run it builds a small forest first (GPT-2 BPE over two domains of this repository's
own text: docs and sources; btm prepare + btm run, a minute on CPU). Needs torch, transformers
and h5py (the GPU machine has them). Prints one JSON line per check; exit 0 when all pass."""
import argparse, glob, json, os, subprocess, sys, tempfile

import h5py
import numpy as np
import torch
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

p = argparse.ArgumentParser()
p.add_argument("--btm", required=True)
p.add_argument("--run", help="a forest directory with a GPT-2-vocabulary model (default: build one)")
p.add_argument("--model", help="the model of the forest to export (default: its first ELM)")
p.add_argument("--bpe-dir", default=os.environ.get("BTM_GPT2_DIR") or
               (os.path.join(ROOT, ".carry", "gpt2") if os.path.isdir(os.path.join(ROOT, ".carry", "gpt2"))
                else os.path.join(ROOT, "data", "gpt2")))
p.add_argument("--tolerance", type=float, default=1e-4)
p.add_argument("--batch", type=int, default=2)
p.add_argument("--seq", type=int, default=0, help="tokens per sequence (default: the context)")
a = p.parse_args()
env = dict(os.environ, BTM_GPT2_DIR=os.path.abspath(a.bpe_dir))
results = []


def btm(*args, capture=False):
    r = subprocess.run([a.btm, *map(str, args)], env=env, text=True,
                       stdout=subprocess.PIPE if capture else None)
    if r.returncode != 0:
        sys.exit(f"check_hf: btm {' '.join(map(str, args))} exited {r.returncode}")
    return r.stdout


def report(**row):
    results.append(row)
    print(json.dumps(row), flush=True)


def btm_logits(checkpoint, tokens, work):
    out = os.path.join(work, "logits.h5")
    spec = ";".join(",".join(str(int(t)) for t in row) for row in tokens)
    btm("logits", "--checkpoint", checkpoint, "--tokens", spec, "--out", out, capture=True)
    with h5py.File(out, "r") as f:
        V = int(f.attrs["vocab_size"])
        return f["logits"][...].reshape(tokens.shape[0], tokens.shape[1] - 1, -1)[..., :V]


def hf_logits(model, tokens):
    with torch.no_grad():
        return model(torch.from_numpy(tokens[:, :-1]).long()).logits.float().numpy()


def compare(what, checkpoint, model, work, seed=0):
    cfg = model.config
    seq = min(a.seq or cfg.n_positions, cfg.n_positions)
    tokens = np.random.default_rng(seed).integers(0, cfg.vocab_size, size=(a.batch, seq + 1))
    ours, theirs = btm_logits(checkpoint, tokens, work), hf_logits(model, tokens)
    diff = float(np.abs(ours - theirs).max())
    report(check=what, max_abs_logit_diff=diff, max_abs_logit=float(np.abs(theirs).max()),
           vocab=cfg.vocab_size, seq=seq, batch=a.batch, ok=diff < a.tolerance)


def build_forest(work):
    """Two domains of this repository's text, GPT-2 BPE, a forest of 2 ELMs + dense."""
    text = os.path.join(work, "text")
    for domain, pattern in (("docs", "docs/*.md"), ("code", "src/*/*.cpp")):
        os.makedirs(os.path.join(text, domain))
        # Documents of 40 lines, so that every split (by document) holds many.
        lines = []
        for path in sorted(glob.glob(os.path.join(ROOT, pattern))):
            with open(path, encoding="utf-8") as src:
                lines += src.read().splitlines(keepends=True)
        for i in range(0, len(lines), 40):
            with open(os.path.join(text, domain, f"{i:06d}.txt"), "w", encoding="utf-8") as dst:
                dst.write("".join(lines[i:i + 40]))
    corpus, run = os.path.join(work, "corpus"), os.path.join(work, "run")
    btm("prepare", "--input", text, "--out", corpus, "--tokenizer", "gpt2", "--bpe-dir", a.bpe_dir,
        capture=True)
    btm("run", "--data.corpus", corpus, "--data.domains", "docs,code", "--run.dir", run,
        "--model.n_layer", 2, "--model.n_head", 2, "--model.d_model", 64, "--model.context", 64,
        "--model.vocab_size", 50257, "--run.steps", 8, "--run.device", "cpu",
        "--eval.blocks", 2, "--eval.prior_blocks", 2, "--eval.prior_batch", 1, capture=True)
    return run


TEXTS = ["Hello world! It's a test of GPT-2's byte-level BPE.",
         "  leading spaces,\ttabs\tand\nnewlines\n\n  and trailing   ",
         "numbers 12345 6.78e-9 and   runs of     spaces",
         "Unicode: naïve café, Ελληνικά, 日本語のテキスト, emoji 🙂🚀, combining é",
         "def f(x):\n    return x ** 2  # code\n",
         "they're we'll I'd you've SHE'S don't"]

with tempfile.TemporaryDirectory() as work:
    # 1. export
    run = a.run or build_forest(work)
    listing = btm("forest", "list", "--run.dir", run, capture=True).splitlines()[1:]
    elms = [l.split()[0] for l in listing if l.split()[1:3] == ["elm", "trained"]]
    model_name = a.model or elms[0]
    out = os.path.join(work, "hf-" + model_name)
    btm("export", "--run.dir", run, "--model", model_name, "--out", out, "--bpe-dir", a.bpe_dir)
    model = GPT2LMHeadModel.from_pretrained(out, torch_dtype=torch.float32).eval()
    compare(f"export {model_name}: from_pretrained vs btm logits",
            os.path.join(run, "elms", model_name + ".h5"), model, work)

    has_tokenizer = os.path.exists(os.path.join(out, "vocab.json"))
    if not has_tokenizer:  # a byte-vocabulary model: btm export writes no tokenizer files
        report(check="tokenizer", skipped="the model has no GPT-2 vocabulary", ok=True)
    tok = AutoTokenizer.from_pretrained(out) if has_tokenizer else None
    for text in TEXTS if has_tokenizer else []:
        ours = [int(x) for x in btm("encode", "--text", text, "--bpe-dir", a.bpe_dir,
                                    capture=True).split()]
        theirs = tok(text)["input_ids"]
        report(check="tokenizer ids vs btm encode", text=text, tokens=len(ours), ok=ours == theirs,
               **({} if ours == theirs else {"btm": ours, "hf": theirs}))
    if has_tokenizer:
        report(check="tokenizer decode", ok=tok.decode(tok(TEXTS[3])["input_ids"]) == TEXTS[3],
               tokenizer=type(tok).__name__)

    avg = os.path.join(work, "hf-average")
    btm("export", "--run.dir", run, "--parents", ",".join(elms), "--out", avg,
        "--bpe-dir", a.bpe_dir)
    btm("import", "--hf", avg, "--out", os.path.join(work, "average.h5"), capture=True)
    compare("export average: from_pretrained vs btm logits of its import",
            os.path.join(work, "average.h5"),
            GPT2LMHeadModel.from_pretrained(avg, torch_dtype=torch.float32).eval(), work, seed=1)

    # 2. import of a model transformers initialised and saved
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=2, n_head=4, n_embd=64, n_positions=64, vocab_size=1000)
    ref = GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # biases and LayerNorms away from 0 and 1, so a misplaced one shows
        for name, t in ref.named_parameters():
            if t.ndim == 1:
                t.add_(0.1 * torch.randn_like(t))
    for dtype in (torch.float32, torch.bfloat16):
        saved = os.path.join(work, f"saved-{dtype}".replace("torch.", ""))
        ref.to(dtype).save_pretrained(saved)  # safetensors
        checkpoint = os.path.join(work, f"imported-{dtype}.h5".replace("torch.", ""))
        btm("import", "--hf", saved, "--out", checkpoint, capture=True)
        compare(f"import of a transformers-saved {dtype} model: btm logits vs HF",
                checkpoint, ref.to(dtype).float().eval(), work, seed=2)
        ref = ref.float()

ok = all(r["ok"] for r in results)
print(json.dumps({"check_hf": "pass" if ok else "FAIL", "checks": len(results),
                  "failed": [r["check"] for r in results if not r["ok"]]}))
sys.exit(0 if ok else 1)
