#!/usr/bin/env python3
"""GPU engine proof and benchmark (issue 4), run on the GPU machine in one go per model shape.

For a seeded random-weight model (bf16 safetensors written by transformers) at the shape asked
for: Llama (SmolLM2, Llama-3 layouts) or one of the other families (FAMILY_SHAPES, issue 12):
Qwen2 with q/k/v biases, Mistral with a sliding window shorter than the prompts, Gemma 3 at the
270M model's shape (hd 256, one KV head, window 512, local/global RoPE) and a small Gemma 3 whose
window (16) and logit soft-capping bite. Family models get random biases and norm weights on top
of transformers' initialisation (which makes biases 0 and norms 1 or 0, hiding those paths):
  1. transformers on the same weights: greedy generation of STEPS tokens per prompt in fp32 (the
     reference tokens), the fp32 logits of every step teacher-forced on those tokens (the
     reference logits), the same in bf16 (how far transformers' own bf16 path is from fp32: the
     yardstick for ours), and the `generate` peer benchmark in bf16 at batch 1 and 64;
  2. our engine on the GPU (tools/engine_check), teacher-forced on the reference tokens so every
     step sees the same context: each step's logits and argmax, alone and with all prompts in one
     batch; then our benchmark in the same process; on the CPU backend too when --cpu;
  3. prints per prompt: max relative logits error over the steps (ours vs transformers fp32, ours
     vs our CPU, transformers bf16 vs fp32), whether our argmax equals the reference token at each
     of the first 32 steps (identical greedy output), and batched vs alone.
Results: a JSON summary (--json) and the tables on stdout.

usage: python3 tools/gpu_engine_check.py --shape smollm2|llama3_8b|qwen2|mistral|gemma3_270m|...
       --bin DIR --work DIR
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import torch
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from bytelevel import bytes_to_unicode

SHAPES = {
    "smollm2": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                    num_attention_heads=9, num_key_value_heads=3, vocab_size=49152,
                    rope_theta=100000.0, tie_word_embeddings=True, max_position_embeddings=8192),
    # Llama-3-8B's head layout (hd 128, GQA 4:1, llama3 RoPE, untied head) at a size the CPU
    # backend can also run: separates kernel or layout errors from bf16 rounding at 8B scale.
    "llama3_small": dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=4,
                         num_attention_heads=8, num_key_value_heads=2, vocab_size=32000,
                         rope_theta=500000.0, tie_word_embeddings=False,
                         max_position_embeddings=16384,
                         rope_scaling={"rope_type": "llama3", "factor": 8.0,
                                       "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                       "original_max_position_embeddings": 8192}),
    "llama3_8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                      rope_theta=500000.0, tie_word_embeddings=False,
                      max_position_embeddings=16384,
                      rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                    "high_freq_factor": 4.0,
                                    "original_max_position_embeddings": 8192}),
}
# The other families (issue 12): config.json as a checkpoint carries it (read back by
# transformers' AutoConfig, so the legacy keys work across transformers versions), random
# weights from transformers' initialisation plus the perturbations of family_perturb.
FAMILY_SHAPES = {
    # Qwen2.5-0.5B's layer (896, 14/2 heads, hd 64, biases, tied), 4 layers, a smaller vocab
    "qwen2": {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
              "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 4,
              "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 32000,
              "max_position_embeddings": 4096, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
              "hidden_act": "silu", "tie_word_embeddings": True, "use_sliding_window": False},
    # Mistral-7B's head layout (hd 128, GQA 4:1), 4 layers, window 16 (< every prompt + steps)
    "mistral": {"architectures": ["MistralForCausalLM"], "model_type": "mistral",
                "hidden_size": 1024, "intermediate_size": 2816, "num_hidden_layers": 4,
                "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 128,
                "vocab_size": 32000, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5,
                "rope_theta": 10000.0, "hidden_act": "silu", "tie_word_embeddings": False,
                "sliding_window": 16},
    # gemma-3-270m's config.json (18 layers, 640, 4/1 heads, hd 256, window 512 every 6th layer
    # global, local RoPE base 1e4, vocab 262144), random weights
    "gemma3_270m": {"architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text",
                    "hidden_size": 640, "intermediate_size": 2048, "num_hidden_layers": 18,
                    "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256,
                    "vocab_size": 262144, "max_position_embeddings": 32768,
                    "rms_norm_eps": 1e-6, "hidden_activation": "gelu_pytorch_tanh",
                    "tie_word_embeddings": True, "sliding_window": 512,
                    "sliding_window_pattern": 6, "rope_theta": 1000000.0,
                    "rope_local_base_freq": 10000.0, "query_pre_attn_scalar": 256,
                    "final_logit_softcapping": None, "attn_logit_softcapping": None,
                    "attention_bias": False, "pad_token_id": 0, "bos_token_id": 2,
                    "eos_token_id": 1},
    # the same layer with a window that bites (16) and logit soft-capping, 7 layers (5 local, 1
    # global, 1 local)
    "gemma3_win": {"architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text",
                   "hidden_size": 640, "intermediate_size": 2048, "num_hidden_layers": 7,
                   "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256,
                   "vocab_size": 32000, "max_position_embeddings": 4096, "rms_norm_eps": 1e-6,
                   "hidden_activation": "gelu_pytorch_tanh", "tie_word_embeddings": True,
                   "sliding_window": 16, "sliding_window_pattern": 6, "rope_theta": 1000000.0,
                   "rope_local_base_freq": 10000.0, "query_pre_attn_scalar": 256,
                   "final_logit_softcapping": 30.0, "attn_logit_softcapping": None,
                   "attention_bias": False, "pad_token_id": 0, "bos_token_id": 2,
                   "eos_token_id": 1},
}
N_PROMPTS = 10


def byte_tokenizer_json():
    """A minimal byte-level BPE tokenizer.json (256 byte tokens, no merges): the engine needs a
    tokenizer to load a checkpoint; the check feeds token ids directly."""
    vocab = {ch: b for b, ch in bytes_to_unicode().items()}
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
            "normalizer": None,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False,
                              "trim_offsets": True, "use_regex": True},
            "post_processor": None, "decoder": {"type": "ByteLevel"},
            "model": {"type": "BPE", "dropout": None, "unk_token": None,
                      "continuing_subword_prefix": None, "end_of_word_suffix": None,
                      "fuse_unk": False, "byte_fallback": False, "vocab": vocab, "merges": []}}


def exact_rope(model):
    """Give MODEL's rotary embedding fp32 frequencies again. `.to(torch.bfloat16)` on a model
    also rounds the inv_freq buffer to bf16 (1.0, 0.8164, 0.6641 ... instead of 1.0, 0.8146,
    0.6636 at Llama-3's theta), which a checkpoint loaded with from_pretrained does not have; with
    rounded frequencies the reference drifts from any exact RoPE as positions grow."""
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding
    rot = model.model.rotary_emb
    fresh = LlamaRotaryEmbedding(model.config).to(rot.inv_freq.device)
    rot.inv_freq = fresh.inv_freq.float()
    rot.original_inv_freq = fresh.inv_freq.float()
    return model


def fp32_buffers(model):
    """Every buffer of a model built in fp32 (RoPE frequencies, Gemma's embedding scale), kept
    in fp32."""
    return {(name, b): buf.detach().clone()
            for name, mod in model.named_modules()
            for b, buf in mod.named_buffers(recurse=False) if buf.is_floating_point()}


def keep_buffers(model, saved, dtype):
    """Put the fp32 buffers SAVED back after MODEL went to DTYPE: all of them for fp32 (the
    reference is the exact model: `.to(torch.bfloat16)` rounded them, e.g. Gemma's sqrt(640) =
    25.298 embedding scale to 25.25, 1.5e-3 of logits), the RoPE frequencies alone for bf16
    (exact_rope's reason, for every family's rotary modules, whatever they are called; other
    buffers stay rounded, as transformers' bf16 models have them)."""
    mods = dict(model.named_modules())
    for (name, b), buf in saved.items():
        if dtype == torch.float32 or "inv_freq" in b:
            setattr(mods[name], b, buf.to(getattr(mods[name], b).device))
    return model


def family_perturb(model, seed):
    """Random q/k/v biases and norm weights: transformers initialises biases to 0 and norms to 1
    (Gemma: 0, for 1 + w), which would leave the bias add and the norm weights unchecked."""
    g = torch.Generator(device="cuda").manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.add_(torch.randn(p.shape, generator=g, device=p.device) * 0.5)
            elif "norm" in name:
                p.add_(torch.randn(p.shape, generator=g, device=p.device) * 0.1)


def make_family_model(shape, path, seed):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(dict(FAMILY_SHAPES[shape], torch_dtype="float32"), f, indent=1)
    cfg = AutoConfig.from_pretrained(path)
    torch.manual_seed(seed)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(cfg)
    family_perturb(model, seed)
    saved = fp32_buffers(model)
    model = keep_buffers(model.to(torch.bfloat16), saved, torch.bfloat16)
    model.save_pretrained(path, safe_serialization=True, max_shard_size="5GB")
    with open(os.path.join(path, "tokenizer.json"), "w") as f:
        json.dump(byte_tokenizer_json(), f)
    model.fg_rope = saved
    return model


def to_dtype(model, dtype):
    """MODEL in DTYPE with exact fp32 RoPE frequencies."""
    if hasattr(model, "fg_rope"):
        saved = model.fg_rope
        model = keep_buffers(model.to(dtype), saved, dtype)
        model.fg_rope = saved
        return model
    return exact_rope(model.to(dtype))


def make_model(shape, path, seed):
    if shape in FAMILY_SHAPES:
        return make_family_model(shape, path, seed)
    cfg = LlamaConfig(**SHAPES[shape], rms_norm_eps=1e-5, attention_bias=False, mlp_bias=False,
                      torch_dtype="bfloat16")
    torch.manual_seed(seed)
    with torch.device("cuda"):
        model = exact_rope(LlamaForCausalLM(cfg).to(torch.bfloat16))
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
    ap.add_argument("--shape", choices=list(SHAPES) + list(FAMILY_SHAPES), required=True)
    ap.add_argument("--bin", required=True, help="folder with engine_check")
    ap.add_argument("--work", required=True)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--cpu", action="store_true", help="also run the CPU backend")
    ap.add_argument("--cpu-prompts", type=int, default=None,
                    help="run the CPU backend on the first N prompts only (large shapes)")
    ap.add_argument("--cpu-steps", type=int, default=None,
                    help="and for the first S steps only")
    ap.add_argument("--bench", action="store_true")
    ap.add_argument("--invariant", action="store_true",
                    help="also run the engine with FLASHGEN_BATCH_INVARIANT=1 (batched = alone)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    mdir = os.path.join(args.work, args.shape)
    t0 = time.time()
    model = make_model(args.shape, mdir, args.seed).eval()
    V = model.config.vocab_size
    steps = args.steps
    print(f"[{args.shape}] random model written in {time.time() - t0:.1f} s", flush=True)
    summary = {"shape": args.shape, "device": torch.cuda.get_device_name(0),
               "date": time.strftime("%Y-%m-%d"), "steps": steps}

    rng = np.random.RandomState(args.seed)
    prompts = [rng.randint(0, V, size=rng.randint(4, 40)).tolist() for _ in range(N_PROMPTS)]
    pfile = os.path.join(args.work, "prompts.txt")
    with open(pfile, "w") as f:
        for p in prompts:
            f.write(" ".join(map(str, p)) + "\n")

    # 1. transformers: bf16 teacher-forced logits and the peer benchmark, then fp32 reference
    t0 = time.time()
    hf_tok, ref, ref_bf16 = [], [], []
    peer = {}
    with torch.no_grad():
        if args.bench:
            for b in (1, 64):
                x = torch.randint(0, V, (b, 512), device="cuda")
                model.generate(x, max_new_tokens=4, do_sample=False, eos_token_id=None,
                               pad_token_id=0)
                torch.cuda.synchronize()
                t = time.time()
                model.generate(x, max_new_tokens=32, min_new_tokens=32, do_sample=False,
                               eos_token_id=None, pad_token_id=0)
                torch.cuda.synchronize()
                peer[b] = b * 32 / (time.time() - t)
            summary["hf_generate_tokens_per_s"] = peer
        model32 = to_dtype(model, torch.float32)  # in place: the bf16 copy is gone after this
        for p in prompts:
            out = model32.generate(torch.tensor([p], device="cuda"), max_new_tokens=steps,
                                   min_new_tokens=steps, do_sample=False, eos_token_id=None,
                                   pad_token_id=0)
            toks = out[0, len(p):].tolist()
            hf_tok.append(toks)
            seq = torch.tensor([p + toks[:-1]], device="cuda")
            ref.append(model32(seq).logits[0, len(p) - 1:].float().cpu().numpy())
        model16 = to_dtype(model32, torch.bfloat16)
        for p, toks in zip(prompts, hf_tok):
            seq = torch.tensor([p + toks[:-1]], device="cuda")
            ref_bf16.append(model16(seq).logits[0, len(p) - 1:].float().cpu().numpy())
    del model, model32, model16
    torch.cuda.empty_cache()
    ffile = os.path.join(args.work, "hf.tok")
    with open(ffile, "w") as f:
        for t in hf_tok:
            f.write(" ".join(map(str, t)) + "\n")
    print(f"[{args.shape}] transformers reference in {time.time() - t0:.1f} s", flush=True)

    # 2. our engine, teacher-forced on the reference tokens; benchmark in the same process
    ec = os.path.join(args.bin, "engine_check")
    cmd = [ec, "--model", mdir, "--device", "cuda", "--prompts", pfile, "--force", ffile,
           "--steps", str(steps), "--out", os.path.join(args.work, "gpu"), "--also-batch"]
    if args.bench:
        cmd += ["--bench", "--batches", "1,8,32,64", "--context", "512", "--gen", "32",
                "--prefill", "512,2048,8192"]
    bench_out, t = run(cmd)
    print(f"[{args.shape}] engine GPU run {t:.1f} s", flush=True)
    inv = None
    if args.invariant:
        icmd = [ec, "--model", mdir, "--device", "cuda", "--prompts", pfile, "--force", ffile,
                "--steps", str(steps), "--out", os.path.join(args.work, "gpu_inv"), "--also-batch"]
        if args.bench:
            icmd += ["--bench", "--batches", "1,8,64", "--context", "512", "--gen", "32",
                     "--prefill", "2048"]
        inv_bench, t = run(icmd, env=dict(os.environ, FLASHGEN_BATCH_INVARIANT="1"))
        print(f"[{args.shape}] engine GPU run, batch-invariant mode, {t:.1f} s", flush=True)
        it = read_tokens(os.path.join(args.work, "gpu_inv.tok"))
        ib = read_tokens(os.path.join(args.work, "gpu_inv_batch.tok"))
        il = np.fromfile(os.path.join(args.work, "gpu_inv.logits"), dtype=np.float32)
        il = il.reshape(N_PROMPTS, steps, V)
        inv = {"batched_same": sum(ib[i] == it[i] for i in range(N_PROMPTS)),
               "max_rel_err_vs_hf": max(rel(il[i, s], ref[i][s]) for i in range(N_PROMPTS)
                                        for s in range(steps)),
               "greedy32_same": sum(all(it[i][k] == hf_tok[i][k] for k in range(32))
                                    for i in range(N_PROMPTS)),
               "bench": inv_bench if args.bench else None}
        summary["batch_invariant"] = inv
        del il
    gpu_tok = read_tokens(os.path.join(args.work, "gpu.tok"))
    batch_tok = read_tokens(os.path.join(args.work, "gpu_batch.tok"))
    gpu_logits = np.fromfile(os.path.join(args.work, "gpu.logits"), dtype=np.float32)
    gpu_logits = gpu_logits.reshape(N_PROMPTS, steps, V)
    cpu_logits = None
    n_cpu = min(args.cpu_prompts or N_PROMPTS, N_PROMPTS)
    s_cpu = min(args.cpu_steps or steps, steps)
    if args.cpu:
        cpf = os.path.join(args.work, "prompts_cpu.txt")
        with open(cpf, "w") as f:
            for p in prompts[:n_cpu]:
                f.write(" ".join(map(str, p)) + "\n")
        _, t = run([ec, "--model", mdir, "--device", "cpu", "--prompts", cpf, "--force", ffile,
                    "--steps", str(s_cpu), "--out", os.path.join(args.work, "cpu")])
        print(f"[{args.shape}] engine CPU run ({n_cpu} prompts, {s_cpu} steps) {t:.1f} s",
              flush=True)
        cpu_logits = np.fromfile(os.path.join(args.work, "cpu.logits"), dtype=np.float32)
        cpu_logits = cpu_logits.reshape(n_cpu, s_cpu, V)
        for i in range(n_cpu):
            print(f"[{args.shape}] prompt {i}: our CPU (fp32) vs transformers fp32, per step: " +
                  " ".join(f"{rel(cpu_logits[i, s], ref[i][s]):.1e}" for s in range(s_cpu)))
            print(f"[{args.shape}] prompt {i}: our GPU vs our CPU, per step:               " +
                  " ".join(f"{rel(gpu_logits[i, s], cpu_logits[i, s]):.1e}" for s in range(s_cpu)))
    for i in range(min(2, N_PROMPTS)):
        print(f"[{args.shape}] prompt {i}: our GPU vs transformers fp32, per step: " +
              " ".join(f"{rel(gpu_logits[i, s], ref[i][s]):.1e}" for s in range(steps)))
        print(f"[{args.shape}] prompt {i}: transformers bf16 vs fp32, per step:    " +
              " ".join(f"{rel(ref_bf16[i][s], ref[i][s]):.1e}" for s in range(steps)))

    # 3. compare
    rows = []
    for i, p in enumerate(prompts):
        e_hf = max(rel(gpu_logits[i, s], ref[i][s]) for s in range(steps))
        e_hf0 = rel(gpu_logits[i, 0], ref[i][0])
        e_cpu = (max(rel(gpu_logits[i, s], cpu_logits[i, s]) for s in range(s_cpu))
                 if cpu_logits is not None and i < n_cpu else None)
        e_bf = max(rel(ref_bf16[i][s], ref[i][s]) for s in range(steps))
        e_bf0 = rel(ref_bf16[i][0], ref[i][0])
        e_vs16 = max(rel(gpu_logits[i, s], ref_bf16[i][s]) for s in range(steps))
        first = next((k for k in range(32) if gpu_tok[i][k] != hf_tok[i][k]), None)
        hf16_arg = ref_bf16[i].argmax(axis=1).tolist()
        first16 = next((k for k in range(32) if hf16_arg[k] != hf_tok[i][k]), None)
        first_vs16 = next((k for k in range(32) if gpu_tok[i][k] != hf16_arg[k]), None)
        rows.append({"prompt": i, "len": len(p), "max_rel_err_vs_hf": e_hf, "step0_vs_hf": e_hf0,
                     "max_rel_err_vs_cpu": e_cpu, "hf_bf16_rel_err": e_bf,
                     "hf_bf16_step0": e_bf0, "max_rel_err_vs_hf_bf16": e_vs16,
                     "greedy32_same_as_hf": first is None, "first_diff": first,
                     "hf_bf16_greedy32_same_as_hf": first16 is None, "hf_bf16_first_diff": first16,
                     "greedy32_same_as_hf_bf16": first_vs16 is None,
                     "batched_same_as_alone": batch_tok[i] == gpu_tok[i]})
    summary["prompts"] = rows
    summary["greedy32_same"] = sum(r["greedy32_same_as_hf"] for r in rows)
    summary["hf_bf16_greedy32_same"] = sum(r["hf_bf16_greedy32_same_as_hf"] for r in rows)
    summary["greedy32_same_as_hf_bf16"] = sum(r["greedy32_same_as_hf_bf16"] for r in rows)
    summary["batched_same"] = sum(r["batched_same_as_alone"] for r in rows)
    summary["max_rel_err_vs_hf"] = max(r["max_rel_err_vs_hf"] for r in rows)
    summary["max_hf_bf16_rel_err"] = max(r["hf_bf16_rel_err"] for r in rows)
    if cpu_logits is not None:
        summary["max_rel_err_vs_cpu"] = max(r["max_rel_err_vs_cpu"] for r in rows
                                            if r["max_rel_err_vs_cpu"] is not None)
    print(f"\n[{args.shape}] correctness over {steps} steps ({summary['device']}, "
          f"{summary['date']}); relative logits error, max over steps:")
    print(f"{'prompt':>6} {'len':>4} {'step0 vs HF32':>13} {'ours vs HF32':>12} {'ours vs CPU':>11} "
          f"{'HF16 vs HF32':>12} {'HF16 step0':>10} {'ours vs HF16':>12} {'greedy32':>9} "
          f"{'HF16 greedy':>11} {'batched':>8}")
    for r in rows:
        cpu = f"{r['max_rel_err_vs_cpu']:.2e}" if r["max_rel_err_vs_cpu"] is not None else "-"
        g = "same" if r["greedy32_same_as_hf"] else "diff@%s" % r["first_diff"]
        g16 = "same" if r["hf_bf16_greedy32_same_as_hf"] else "diff@%s" % r["hf_bf16_first_diff"]
        print(f"{r['prompt']:>6} {r['len']:>4} {r['step0_vs_hf']:>13.2e} "
              f"{r['max_rel_err_vs_hf']:>12.2e} {cpu:>11} "
              f"{r['hf_bf16_rel_err']:>12.2e} {r['hf_bf16_step0']:>10.2e} "
              f"{r['max_rel_err_vs_hf_bf16']:>12.2e} {g:>9} {g16:>11} "
              f"{'same' if r['batched_same_as_alone'] else 'diff':>8}")
    print(f"greedy 32 same as transformers fp32: ours {summary['greedy32_same']}/{N_PROMPTS}, "
          f"transformers' own bf16 {summary['hf_bf16_greedy32_same']}/{N_PROMPTS}; ours same as "
          f"transformers bf16: {summary['greedy32_same_as_hf_bf16']}/{N_PROMPTS}")
    print(f"batched same "
          f"as alone: {summary['batched_same']}/{N_PROMPTS}", flush=True)
    if inv:
        print(f"batch-invariant mode (FLASHGEN_BATCH_INVARIANT=1): batched same as alone "
              f"{inv['batched_same']}/{N_PROMPTS}; max rel err vs transformers fp32 "
              f"{inv['max_rel_err_vs_hf']:.2e}; greedy 32 same as transformers fp32 "
              f"{inv['greedy32_same']}/{N_PROMPTS}", flush=True)
        if inv["bench"]:
            print(f"batch-invariant mode benchmark:\n{inv['bench']}", flush=True)
    if args.bench:
        summary["bench"] = bench_out
        print(f"\n[{args.shape}] benchmark ({summary['device']}, {summary['date']}):")
        print(bench_out)
        print("transformers generate (bf16, prompt 512, 32 new tokens, incl. its prefill): " +
              ", ".join(f"batch {b}: {v:.1f} tokens/s" for b, v in peer.items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
