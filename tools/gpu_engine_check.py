#!/usr/bin/env python3
"""GPU engine proof and benchmark (issue 4), run on the GPU machine in one go per model shape.

For a seeded random-weight Llama model (bf16 safetensors written by transformers) at the shape
asked for, this script:
  1. runs our engine on the GPU (tools/engine_check) over 10 prompts, greedy, STEPS steps each,
     keeping every step's logits; again on the CPU backend (small shapes only); and once with all
     prompts in one batch;
  2. runs transformers on the same weights in fp32 on the GPU, teacher-forced on our tokens, for
     the reference logits of every step, and its own greedy generation for the reference tokens;
  3. prints per-prompt relative logits error (max over steps) GPU vs transformers and GPU vs CPU,
     greedy agreement with transformers over the first 32 steps, batched-vs-alone agreement;
  4. benchmarks our decode (batch 1/8/32/64) and prefill (512/2k/8k) with engine_check --bench,
     and transformers generate (bf16, sdpa) at batch 1 and 64 as the peer.
Results: a JSON summary (--json) and a table on stdout.

usage: python3 tools/gpu_engine_check.py --shape smollm2|llama3_8b --bin DIR --work DIR
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

SHAPES = {
    "smollm2": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                    num_attention_heads=9, num_key_value_heads=3, vocab_size=49152,
                    rope_theta=100000.0, tie_word_embeddings=True, max_position_embeddings=8192),
    "llama3_8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                      rope_theta=500000.0, tie_word_embeddings=False,
                      max_position_embeddings=16384,
                      rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                    "high_freq_factor": 4.0,
                                    "original_max_position_embeddings": 8192}),
}
N_PROMPTS = 10


def byte_tokenizer_json():
    """A minimal byte-level BPE tokenizer.json (256 byte tokens, no merges): the engine needs a
    tokenizer to load a checkpoint; the check feeds token ids directly."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    vocab = {chr(cs[bs.index(b)]): b for b in range(256)}
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
            "normalizer": None,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False,
                              "trim_offsets": True, "use_regex": True},
            "post_processor": None, "decoder": {"type": "ByteLevel"},
            "model": {"type": "BPE", "dropout": None, "unk_token": None,
                      "continuing_subword_prefix": None, "end_of_word_suffix": None,
                      "fuse_unk": False, "byte_fallback": False, "vocab": vocab, "merges": []}}


def make_model(shape, path, seed):
    cfg = LlamaConfig(**SHAPES[shape], rms_norm_eps=1e-5, attention_bias=False, mlp_bias=False,
                      torch_dtype="bfloat16")
    torch.manual_seed(seed)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(path, safe_serialization=True, max_shard_size="5GB")
    with open(os.path.join(path, "tokenizer.json"), "w") as f:
        json.dump(byte_tokenizer_json(), f)
    return model


def run(cmd, **kw):
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    sys.stderr.write(r.stderr)
    if r.returncode != 0:
        print(r.stdout)
        raise SystemExit(f"{cmd[0]} failed ({r.returncode})")
    return r.stdout, time.time() - t0


def read_tokens(path):
    with open(path) as f:
        return [[int(x) for x in line.split()] for line in f if line.strip()]


def rel(a, b):
    return float(np.linalg.norm(a - b) / (np.linalg.norm(b) + 1e-30))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", choices=SHAPES, required=True)
    ap.add_argument("--bin", required=True, help="folder with engine_check")
    ap.add_argument("--work", required=True)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--cpu", action="store_true", help="also run the CPU backend")
    ap.add_argument("--bench", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    mdir = os.path.join(args.work, args.shape)
    t0 = time.time()
    model = make_model(args.shape, mdir, args.seed)
    V = model.config.vocab_size
    print(f"[{args.shape}] random model written in {time.time() - t0:.1f} s", flush=True)

    rng = np.random.RandomState(args.seed)
    prompts = [rng.randint(0, V, size=rng.randint(4, 40)).tolist() for _ in range(N_PROMPTS)]
    pfile = os.path.join(args.work, "prompts.txt")
    with open(pfile, "w") as f:
        for p in prompts:
            f.write(" ".join(map(str, p)) + "\n")
    ec = os.path.join(args.bin, "engine_check")
    steps = args.steps
    summary = {"shape": args.shape, "device": torch.cuda.get_device_name(0),
               "date": time.strftime("%Y-%m-%d"), "steps": steps}

    _, t = run([ec, "--model", mdir, "--device", "cuda", "--prompts", pfile, "--steps",
                str(steps), "--out", os.path.join(args.work, "gpu")])
    print(f"[{args.shape}] engine GPU run {t:.1f} s", flush=True)
    run([ec, "--model", mdir, "--device", "cuda", "--prompts", pfile, "--steps", "32", "--out",
         os.path.join(args.work, "gpu_batch"), "--batch"])
    gpu_tok = read_tokens(os.path.join(args.work, "gpu.tok"))
    batch_tok = read_tokens(os.path.join(args.work, "gpu_batch.tok"))
    gpu_logits = np.fromfile(os.path.join(args.work, "gpu.logits"), dtype=np.float32)
    gpu_logits = gpu_logits.reshape(N_PROMPTS, steps, V)
    cpu_logits = None
    if args.cpu:
        _, t = run([ec, "--model", mdir, "--device", "cpu", "--prompts", pfile, "--steps",
                    str(steps), "--out", os.path.join(args.work, "cpu")])
        print(f"[{args.shape}] engine CPU run {t:.1f} s", flush=True)
        cpu_logits = np.fromfile(os.path.join(args.work, "cpu.logits"), dtype=np.float32)
        cpu_logits = cpu_logits.reshape(N_PROMPTS, steps, V)

    # transformers reference: fp32 on the GPU, same bf16 weights upcast
    model = model.float().eval()
    rows = []
    greedy_same = 0
    for i, p in enumerate(prompts):
        seq = torch.tensor([p + gpu_tok[i][:-1]], device="cuda")
        with torch.no_grad():
            ref = model(seq).logits[0, len(p) - 1:].float().cpu().numpy()
            out = model.generate(torch.tensor([p], device="cuda"), max_new_tokens=32,
                                 do_sample=False, eos_token_id=None, pad_token_id=0)
        hf_tok = out[0, len(p):].tolist()
        e_gpu = [rel(gpu_logits[i, s], ref[s]) for s in range(steps)]
        e_cpu = ([rel(gpu_logits[i, s], cpu_logits[i, s]) for s in range(steps)]
                 if cpu_logits is not None else None)
        same = hf_tok == gpu_tok[i][:32]
        greedy_same += same
        first = next((k for k in range(32) if hf_tok[k] != gpu_tok[i][k]), None)
        rows.append({"prompt": i, "len": len(p), "max_rel_err_vs_hf": max(e_gpu),
                     "max_rel_err_vs_cpu": max(e_cpu) if e_cpu else None,
                     "greedy32_same_as_hf": same, "first_diff": first,
                     "batched_same_as_alone": batch_tok[i] == gpu_tok[i][:32]})
    summary["prompts"] = rows
    summary["greedy32_same"] = greedy_same
    summary["max_rel_err_vs_hf"] = max(r["max_rel_err_vs_hf"] for r in rows)
    if cpu_logits is not None:
        summary["max_rel_err_vs_cpu"] = max(r["max_rel_err_vs_cpu"] for r in rows)
    summary["batched_same"] = sum(r["batched_same_as_alone"] for r in rows)
    print(f"\n[{args.shape}] correctness ({summary['device']}, {summary['date']}):")
    print(f"{'prompt':>6} {'len':>4} {'relerr vs HF':>13} {'vs CPU':>9} {'greedy32':>9} "
          f"{'batched':>8}")
    for r in rows:
        cpu = f"{r['max_rel_err_vs_cpu']:.2e}" if r["max_rel_err_vs_cpu"] is not None else "-"
        print(f"{r['prompt']:>6} {r['len']:>4} {r['max_rel_err_vs_hf']:>13.2e} {cpu:>9} "
              f"{'same' if r['greedy32_same_as_hf'] else 'diff@%s' % r['first_diff']:>9} "
              f"{'same' if r['batched_same_as_alone'] else 'diff':>8}")
    print(f"greedy 32 same as transformers: {greedy_same}/{N_PROMPTS}; batched same as alone: "
          f"{summary['batched_same']}/{N_PROMPTS}; max rel err vs HF {summary['max_rel_err_vs_hf']:.2e}",
          flush=True)

    if args.bench:
        model = model.to(torch.bfloat16)
        peer = {}
        for b in (1, 64):
            x = torch.randint(0, V, (b, 512), device="cuda")
            with torch.no_grad():
                model.generate(x, max_new_tokens=4, do_sample=False, eos_token_id=None,
                               pad_token_id=0)
                torch.cuda.synchronize()
                t = time.time()
                model.generate(x, max_new_tokens=32, min_new_tokens=32, do_sample=False,
                               eos_token_id=None, pad_token_id=0)
                torch.cuda.synchronize()
            peer[b] = b * 32 / (time.time() - t)
        summary["hf_generate_tokens_per_s"] = peer
        del model
        torch.cuda.empty_cache()
        out, _ = run([ec, "--model", mdir, "--device", "cuda", "--bench", "--batches",
                      "1,8,32,64", "--context", "512", "--gen", "32", "--prefill",
                      "512,2048,8192"])
        summary["bench"] = out
        print(f"\n[{args.shape}] benchmark ({summary['device']}, {summary['date']}):")
        print(out)
        print("transformers generate (bf16, prompt 512, 32 new tokens, incl. its prefill): " +
              ", ".join(f"batch {b}: {v:.1f} tokens/s" for b, v in peer.items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
