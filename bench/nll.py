#!/usr/bin/env python3
"""nll.py — mean negative log-likelihood (and perplexity) of a fixed text under the engine.

Issue 13's perplexity-style check: the same text, the same tokens, scored under several ways of
running one model (the file's blocks on the CPU, the blocks dequantized to fp32, bf16 / FP8 /
resident blocks on the GPU, a requantized copy). The text's tokens come from the model's own
tokenizer (tools/gguf_to_tokenizer_json.py + the `tokenizers` library); tools/engine_check then
decodes them teacher-forced from the first token (--force), writing the logits each step chose
from, and this script takes -log softmax(logits)[next token] at every position.

  python3 bench/nll.py --engine-check build/tools/engine_check \\
      --run cpu_blocks,cpu,models/SmolLM2-135M-Instruct.Q4_1.gguf \\
      --run cpu_fp32,cpu,models/SmolLM2-135M-Instruct.Q4_1.gguf,FLASHGEN_CPU_WEIGHTS=fp32 \\
      [--text bench/data/nll_text.txt] [--tokens N]

Each --run is LABEL,DEVICE,MODEL[,ENV=VALUE ...] (extra engine_check flags: ARG=--flag=value).
Prints one row per run: tokens scored, mean NLL (nats), perplexity, and the difference from the
first run. Figures only; exit 1 when a run fails.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def tokenize(model, text):
    """The model's tokenizer over TEXT (no special tokens), as the tokenizers library runs it,
    after the BOS token where the file's tokenizer.ggml.add_bos_token asks for it (Gemma: a text
    without its <bos> scored 5.43 nats a token, 3.94 with it); the BOS itself is fed, not
    scored."""
    import gguf
    r = gguf.GGUFReader(model)
    f = r.fields.get("tokenizer.ggml.add_bos_token")
    bos = [int(r.fields["tokenizer.ggml.bos_token_id"].contents())] if f and f.contents() else []
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import gguf_to_tokenizer_json as g2t
    from tokenizers import Tokenizer
    tok = g2t.read_gguf_tokenizer(model)
    variant = "spm" if tok.get("model") == "llama" else "smollm2-pairs"
    t = Tokenizer.from_str(json.dumps(g2t.tokenizer_json(tok, variant)))
    return bos + t.encode(text, add_special_tokens=False).ids


def score(a, label, device, model, extra, ids, work):
    env = dict(os.environ)
    flags = []
    for e in extra:
        k, v = e.split("=", 1)
        if k == "ARG":
            flags += v.split("=", 1) if v.count("=") else [v]
        else:
            env[k] = v
    prompt = os.path.join(work, "prompt.txt")
    forced = os.path.join(work, "forced.txt")
    with open(prompt, "w") as f:
        f.write(f"{ids[0]}\n")
    with open(forced, "w") as f:  # step s feeds ids[s]; step 0's token is ids[1]'s prediction
        f.write(" ".join(str(t) for t in ids[1:]) + "\n")
    out = os.path.join(work, label)
    steps = len(ids) - 1
    cmd = [a.engine_check, "--model", model, "--device", device, "--prompts", prompt, "--steps",
           str(steps), "--out", out, "--force", forced, "--max-tokens", str(len(ids) + 16)] + flags
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        sys.stderr.write(p.stdout + p.stderr)
        return None
    lg = np.fromfile(out + ".logits", np.float32).reshape(steps, -1).astype(np.float64)
    m = lg.max(-1, keepdims=True)
    logp = lg - m - np.log(np.exp(lg - m).sum(-1, keepdims=True))
    nll = -logp[np.arange(steps), np.array(ids[1:])]
    return float(nll.mean()), steps


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine-check", default=os.path.join(ROOT, "build/tools/engine_check"))
    ap.add_argument("--run", action="append", required=True)
    ap.add_argument("--text", default=os.path.join(ROOT, "bench/data/nll_text.txt"))
    ap.add_argument("--tokens", type=int, default=0, help="score at most N tokens (0 = all)")
    ap.add_argument("--tokenizer", help="GGUF whose tokenizer to use (default: the first run's model)")
    a = ap.parse_args()
    runs = [r.split(",") for r in a.run]
    with open(a.text) as f:
        text = f.read()
    ids = tokenize(a.tokenizer or runs[0][2], text)
    if a.tokens:
        ids = ids[:a.tokens + 1]
    print(f"text: {a.text}, {len(text)} characters, {len(ids)} tokens ({len(ids) - 1} scored)")
    print(f"{'run':<24} {'device':<6} {'tokens':>6} {'mean NLL':>9} {'ppl':>8} {'vs first':>9}")
    base, ok = None, True
    with tempfile.TemporaryDirectory() as work:
        for r in runs:
            label, device, model, extra = r[0], r[1], r[2], r[3:]
            res = score(a, label, device, model, extra, ids, work)
            if res is None:
                print(f"{label:<24} {device:<6} FAILED")
                ok = False
                continue
            nll, n = res
            base = nll if base is None else base
            print(f"{label:<24} {device:<6} {n:>6} {nll:>9.4f} {np.exp(nll):>8.3f} {nll - base:>+9.4f}",
                  flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
