#!/usr/bin/env python3
"""Generation throughput: `btm generate` (key/value cache) against Hugging Face transformers'
`generate` on the same model, in the same call, on the GPU machine. Cases: one model of GPT-2
small's shape (124M) at batch 1 and 32, and the 4-ELM ensemble at batch 1 (btm's posterior
mixture, and the same arithmetic as a Python loop over 4 HF models with their KV caches).
Sampling: temperature 1, no top-k/top-p, a fixed number of new tokens (no end-of-text stop).

usage (GPU machine, repository root, after `source tools/gpu-env.sh`):
  python3 tools/bench_generate.py --btm .carry/btm [--run DIR] [--new-tokens 256]
          [--prompt-words 24] [--out DIR]
  (--no-hf --device cpu --config inputs/tiny.cfg: btm's half alone, without torch, anywhere)
Without --run it makes a forest of 4 ELMs of GPT-2 small's shape in a temporary directory: btm
prepare on generated text and a 2-step btm run (the weights do not matter for speed). The HF
model is built from the btm checkpoint by tools/compare_hf.py's mapping (bf16 on the GPU, as
btm computes). Prints one JSON line per measurement and a markdown table for
docs/performance.md. Needs torch, transformers and h5py."""
import argparse, json, os, random, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

p = argparse.ArgumentParser()
p.add_argument("--btm", required=True)
p.add_argument("--run", default="", help="a forest with ELMs d0..d3 (default: make one)")
p.add_argument("--models", default="d0,d1,d2,d3", help="the ensemble's ELMs (the first: the single model)")
p.add_argument("--new-tokens", type=int, default=256)
p.add_argument("--prompt-words", type=int, default=24)
p.add_argument("--batches", default="1,32")
p.add_argument("--bpe-dir", default="")
p.add_argument("--out", default="")
p.add_argument("--config", default="", help="the forest's shape (default: inputs/gpt2-124m.cfg)")
p.add_argument("--device", default="cuda")
p.add_argument("--no-hf", action="store_true", help="btm alone (no torch needed)")
a = p.parse_args()
if not a.no_hf:
    import torch
    from compare_hf import hf_model_from_checkpoint

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
bpe = a.bpe_dir or next((d for d in (os.path.join(root, ".carry", "gpt2"), os.path.join(root, "data", "gpt2"))
                         if os.path.exists(os.path.join(d, "encoder.json"))), "")
if not bpe:
    sys.exit("bench_generate: no GPT-2 BPE files (give --bpe-dir)")
names = a.models.split(",")
results = []


def emit(**kv):
    results.append(kv)
    print(json.dumps(kv), flush=True)


def btm(*args, capture=True):
    r = subprocess.run([a.btm, *args], capture_output=capture, text=True)
    if r.returncode != 0:
        sys.exit(f"bench_generate: btm {' '.join(args[:3])} ... failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r.stdout


def make_forest(tmp):
    rng = random.Random(7)
    words = ["".join(rng.choice("etaoinshrdlucmfwypvbgk") for _ in range(rng.randint(2, 9))) for _ in range(3000)]
    text = os.path.join(tmp, "text")
    for d in names:
        os.makedirs(os.path.join(text, d))
        for i in range(40):
            with open(os.path.join(text, d, f"{i}.txt"), "w") as f:
                f.write(" ".join(rng.choice(words) for _ in range(1500)))
    corpus, run = os.path.join(tmp, "corpus"), os.path.join(tmp, "run")
    btm("prepare", "--input", text, "--out", corpus, "--tokenizer", "gpt2", "--bpe-dir", bpe)
    btm("run", "--config", a.config or os.path.join(root, "inputs", "gpt2-124m.cfg"), "--data.corpus",
        corpus, "--data.domains", ",".join(names), "--data.eval_domains", "", "--run.dir", run,
        "--run.steps", "2", "--run.dense", "false", "--data.batch", "1", "--run.device", a.device,
        "--no-eval")
    return run


with tempfile.TemporaryDirectory() as tmp:
    run = a.run or make_forest(tmp)
    prompt = " ".join(random.Random(3).choice(["the", "forest", "of", "experts", "grows", "and", "each",
                                               "tree", "learns", "its", "domain"]) for _ in range(a.prompt_words))
    ids = [int(x) for x in btm("encode", "--tokenizer", "gpt2", "--bpe-dir", bpe, "--text", prompt).split()]
    N = a.new_tokens
    common = ["--run.dir", run, "--run.device", a.device, "--prompt", prompt, "--max-tokens", str(N),
              "--ignore-eot", "--format", "jsonl", "--tokenizer", "gpt2", "--bpe-dir", bpe, "--seed", "1"]

    def btm_case(case, batch, source):
        best = None
        for _ in range(2):  # the second run: warm GPU clocks and file cache
            out = btm("generate", *source, "--batch", str(batch), *common)
            s = [json.loads(l) for l in out.splitlines() if l.startswith("{") and '"summary"' in l][-1]
            total = s["tokens"] / (s["prefill_s"] + s["decode_s"])
            if best is None or total > best[0]:
                best = (total, s)
        total, s = best
        emit(system="btm", case=case, batch=batch, prompt_tokens=len(ids), new_tokens=N,
             tokens_per_s=round(total, 1), decode_tokens_per_s=round(s["tokens_per_s"], 1),
             prefill_s=round(s["prefill_s"], 4), engine=s["engine"])
        return total

    models = {}

    def hf(name):
        if name not in models:
            m, _ = hf_model_from_checkpoint(os.path.join(run, "elms", name + ".h5"))
            models[name] = m.to("cuda", torch.bfloat16)
        return models[name]

    def timed(f):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        f()
        torch.cuda.synchronize()
        return time.perf_counter() - t0

    def hf_case(case, batch):
        m = hf(names[0])
        x = torch.tensor([ids] * batch, device="cuda")
        mask = torch.ones_like(x)
        gen = lambda n: m.generate(x, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=True,
                                   top_k=0, top_p=1.0, temperature=1.0, pad_token_id=0)
        with torch.no_grad():
            gen(8)  # warm-up
            torch.manual_seed(1)
            t = min(timed(lambda: gen(N)) for _ in range(2))
        emit(system="hf", case=case, batch=batch, prompt_tokens=len(ids), new_tokens=N,
             tokens_per_s=round(batch * N / t, 1), transformers=__import__("transformers").__version__,
             torch=torch.__version__)
        return batch * N / t

    def hf_ensemble():
        # The btm ensemble's arithmetic (uniform prior, prefix posterior), batch 1, each model
        # with its own KV cache, as a Python loop: what a user of transformers would write.
        ms = [hf(n) for n in names]
        x = torch.tensor([ids], device="cuda")

        def loop():
            with torch.no_grad():
                outs = [m(x, use_cache=True) for m in ms]
                past = [o.past_key_values for o in outs]
                lp = [torch.log_softmax(o.logits[0].float(), -1) for o in outs]
                w = torch.stack([l[:-1].gather(-1, x[0, 1:, None]).sum() for l in lp]) - torch.log(
                    torch.tensor(float(len(ms)), device="cuda"))
                last = torch.stack([l[-1] for l in lp])
                for _ in range(N):
                    mix = torch.logsumexp(last + torch.log_softmax(w, 0)[:, None], 0)
                    tok = torch.multinomial(mix.exp(), 1)
                    w = w + last[:, tok[0]]
                    outs = [m(tok[None], past_key_values=pk, use_cache=True) for m, pk in zip(ms, past)]
                    past = [o.past_key_values for o in outs]
                    last = torch.stack([torch.log_softmax(o.logits[0, -1].float(), -1) for o in outs])

        loop()  # warm-up
        t = min(timed(loop) for _ in range(2))
        emit(system="hf-loop", case=f"ensemble-{len(ms)}", batch=1, prompt_tokens=len(ids), new_tokens=N,
             tokens_per_s=round(N / t, 1))
        return N / t

    table = []
    none = lambda *_: float("nan")
    for b in [int(x) for x in a.batches.split(",")]:
        table.append((f"one model, batch {b}", btm_case("model", b, ["--model", names[0]]),
                      none() if a.no_hf else hf_case("model", b)))
    table.append((f"{len(names)}-ELM ensemble, batch 1",
                  btm_case(f"ensemble-{len(names)}", 1, ["--ensemble", "--parents", ",".join(names)]),
                  none() if a.no_hf else hf_ensemble()))

where = "btm alone" if a.no_hf else f"one GPU ({torch.cuda.get_device_name(0)}), bf16 weights in both"
print(f"\n{len(ids)}-token prompt, {N} new tokens, sampling at temperature 1, {where}:\n")
print("| case | btm tokens/s | HF tokens/s | btm / HF |\n|---|---:|---:|---:|")
for name, ours, theirs in table:
    print(f"| {name} | {ours:.0f} | {theirs:.0f} | {ours / theirs:.2f} |")
if a.out:
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "bench_generate.json"), "w") as f:
        json.dump(results, f, indent=1)
