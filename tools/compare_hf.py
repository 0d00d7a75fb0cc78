#!/usr/bin/env python3
"""Checks that a btm model is the standard GPT-2 architecture: loads a btm HDF5 checkpoint into
Hugging Face transformers' GPT2LMHeadModel and compares logits and loss with `btm logits` on the
same tokens (fp32, CPU).

usage: python3 tools/compare_hf.py --btm build/btm --checkpoint RUN/elms/seed.h5 [--batch 2 --seq 64]
Needs torch and transformers (present on the GPU machine) and h5py. Exit code 0 when the largest
|logit difference| is below --tolerance (default 1e-4)."""
import argparse, json, os, subprocess, sys, tempfile

import h5py
import numpy as np
import torch
from transformers import GPT2Config, GPT2LMHeadModel


def hf_model_from_checkpoint(checkpoint):
    """GPT2LMHeadModel (fp32, CPU, eval mode) holding a btm checkpoint's parameters, and the
    checkpoint's shape (L, H, C, T, V, Vp). tools/bench_generate.py uses it too."""
    with h5py.File(checkpoint, "r") as f:
        if f.attrs.get("format") not in ("btm-checkpoint", b"btm-checkpoint"):
            sys.exit(f"{checkpoint}: not a btm checkpoint")
        L, H, C = int(f.attrs["n_layer"]), int(f.attrs["n_head"]), int(f.attrs["d_model"])
        T, V, mult = int(f.attrs["context"]), int(f.attrs["vocab_size"]), int(f.attrs["vocab_multiple"])
        flat = f["params"][...].astype(np.float32)
    Vp = (V + mult - 1) // mult * mult

    # The documented flat layout (include/btm/model/params.hpp).
    shapes = [("wte", (Vp, C)), ("wpe", (T, C))]
    for l in range(L):
        shapes += [(f"h.{l}.ln_1.weight", (C,)), (f"h.{l}.ln_1.bias", (C,)),
                   (f"h.{l}.attn.c_attn.weight", (3 * C, C)), (f"h.{l}.attn.c_attn.bias", (3 * C,)),
                   (f"h.{l}.attn.c_proj.weight", (C, C)), (f"h.{l}.attn.c_proj.bias", (C,)),
                   (f"h.{l}.ln_2.weight", (C,)), (f"h.{l}.ln_2.bias", (C,)),
                   (f"h.{l}.mlp.c_fc.weight", (4 * C, C)), (f"h.{l}.mlp.c_fc.bias", (4 * C,)),
                   (f"h.{l}.mlp.c_proj.weight", (C, 4 * C)), (f"h.{l}.mlp.c_proj.bias", (C,))]
    shapes += [("ln_f.weight", (C,)), ("ln_f.bias", (C,))]
    tensors, off = {}, 0
    for name, shape in shapes:
        n = int(np.prod(shape))
        tensors[name] = flat[off:off + n].reshape(shape)
        off += n
    assert off == flat.size, f"layout mismatch: {off} != {flat.size}"

    cfg = GPT2Config(vocab_size=Vp, n_positions=T, n_embd=C, n_layer=L, n_head=H,
                     activation_function="gelu_new", layer_norm_epsilon=1e-5, resid_pdrop=0.0,
                     embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True)
    model = GPT2LMHeadModel(cfg).eval()
    sd = model.state_dict()
    with torch.no_grad():
        for name, value in tensors.items():
            key = "transformer." + name + (".weight" if name in ("wte", "wpe") else "")
            w = torch.from_numpy(value.copy())
            if name.endswith(".weight") and value.ndim == 2 and name not in ("wte", "wpe"):
                w = w.t().contiguous()  # HF Conv1D stores [in, out]
            assert sd[key].shape == w.shape, (key, sd[key].shape, w.shape)
            sd[key].copy_(w)
        model.load_state_dict(sd)
        model.lm_head.weight = model.transformer.wte.weight
    return model, (L, H, C, T, V, Vp)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--btm", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq", type=int, default=0, help="tokens per sequence (default: the context)")
    p.add_argument("--tolerance", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    model, (L, H, C, T, V, Vp) = hf_model_from_checkpoint(a.checkpoint)
    seq = a.seq or T
    rng = np.random.default_rng(a.seed)
    tokens = rng.integers(0, V, size=(a.batch, seq + 1))
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "logits.h5")
        spec = ";".join(",".join(str(int(t)) for t in row) for row in tokens)
        subprocess.run([a.btm, "logits", "--checkpoint", a.checkpoint, "--tokens", spec, "--out", out],
                       check=True)
        with h5py.File(out, "r") as f:
            btm_logits = f["logits"][...].reshape(a.batch, seq, Vp)[..., :V]
            btm_logprobs = f["logprobs"][...].reshape(a.batch, seq)

    with torch.no_grad():
        x = torch.from_numpy(tokens[:, :-1]).long()
        y = torch.from_numpy(tokens[:, 1:]).long()
        hf_logits = model(x).logits[..., :V].float()
        hf_logprobs = torch.log_softmax(hf_logits.double(), -1).gather(-1, y[..., None])[..., 0]
        hf_loss = float(-hf_logprobs.mean())
    diff = float(np.abs(hf_logits.numpy() - btm_logits).max())
    btm_loss = float(-btm_logprobs.mean())
    result = dict(checkpoint=a.checkpoint, layers=L, dim=C, heads=H, vocab=V, seq=seq, batch=a.batch,
                  max_abs_logit_diff=diff, max_abs_logit=float(np.abs(btm_logits).max()),
                  btm_loss=btm_loss, hf_loss=hf_loss, loss_diff=abs(btm_loss - hf_loss),
                  transformers=__import__("transformers").__version__, ok=diff < a.tolerance)
    print(json.dumps(result))
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
