#!/usr/bin/env python3
"""Golden greedy generations from Hugging Face transformers, for tests/unit/test_golden.c.

transformers loads the same GGUF file flashgen serves (dequantized to fp32, Q/K rows un-permuted
by its GGUF loader), runs greedy decoding for N_NEW tokens on each prompt, raw and through the
model's chat template, and writes tests/golden/generate_smollm2.json:

  {"model": ..., "transformers": version, "torch": version, "n_new": 32, "raw_bos": bool,
   "cases": [{"name", "kind": "raw"|"chat", "text": rendered prompt, "prompt_ids": [...],
              "generated_ids": [...], "step0_top": [[id, logit], ...]}, ...]}

The generation runs with eos disabled so every case has N_NEW tokens to compare. Run it where
torch and transformers are installed (not needed in CI, which only reads the JSON):
  python3 tools/gen_golden.py --model models/SmolLM2-135M-Instruct.Q4_1.gguf
  python3 tools/gen_golden.py --model models/gemma-3-270m-q4_k_m.gguf --raw-bos \
      --out tests/golden/generate_gemma3.json
"""
import argparse
import json
import os

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

N_NEW = 32

RAW_PROMPTS = [
    ("capital", "The capital of France is"),
    ("story", "Once upon a time, in a small village by the sea,"),
    ("code", "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"),
    ("list", "Here are three tips for staying healthy:\n1."),
    ("science", "Photosynthesis is the process by which"),
    ("json", '{"name": "Alice", "age": 30, "city":'),
]
CHAT_PROMPTS = [
    ("chat_hello", "Hi! Who are you?"),
    ("chat_math", "What is 12 times 7?"),
    ("chat_poem", "Write a two-line poem about autumn leaves."),
    ("chat_explain", "Explain in one sentence why the sky is blue."),
    ("chat_translate", "Translate 'good morning' into Spanish and French."),
    ("chat_code", "Write a Python function that reverses a string."),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--out", default="tests/golden/generate_smollm2.json")
    ap.add_argument("--raw-bos", action="store_true",
                    help="raw prompts get the tokenizer's special tokens (BOS), as flashgen adds "
                         "them; Gemma needs its <bos> (chat templates write their own)")
    args = ap.parse_args()
    d, f = os.path.split(os.path.abspath(args.model))
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float32)
    model.eval()
    torch.manual_seed(0)

    cases = []
    # a base model without a chat template (Gemma 3 270M) gets the chat prompts as raw text
    chat = "chat" if tok.chat_template else "raw"
    prompts = [(n, "raw", t) for n, t in RAW_PROMPTS] + [(n, chat, t) for n, t in CHAT_PROMPTS]
    for name, kind, text in prompts:
        if kind == "chat":
            rendered = tok.apply_chat_template([{"role": "user", "content": text}],
                                               add_generation_prompt=True, tokenize=False)
        else:
            rendered = text
        ids = tok(rendered, add_special_tokens=args.raw_bos and kind == "raw")["input_ids"]
        x = torch.tensor([ids])
        with torch.no_grad():
            out = model.generate(x, max_new_tokens=N_NEW, do_sample=False, eos_token_id=None,
                                 pad_token_id=0, output_scores=True, return_dict_in_generate=True,
                                 min_new_tokens=N_NEW)
        gen = out.sequences[0, len(ids):].tolist()
        s0 = out.scores[0][0]
        top = torch.topk(s0, 5)
        cases.append({
            "name": name, "kind": kind, "user": text, "text": rendered, "prompt_ids": ids,
            "generated_ids": gen,
            "step0_top": [[int(i), float(v)] for v, i in zip(top.values, top.indices)],
            "generated_text": tok.decode(gen),
        })
        print(f"{name:16s} {len(ids):3d} prompt ids -> {tok.decode(gen)!r}")
    doc = {"model": os.path.basename(args.model), "transformers": transformers.__version__,
           "torch": torch.__version__, "n_new": N_NEW, "raw_bos": args.raw_bos, "dtype": "float32", "cases": cases}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(doc, fh, indent=1, ensure_ascii=False)
        fh.write("\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
