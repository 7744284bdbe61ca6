#!/usr/bin/env python3
"""gen_weight_golden.py — reference weight values for the loader test on the real model.

Loads models/SmolLM2-135M-Instruct.Q4_1.gguf with Hugging Face transformers (which dequantizes
the GGUF with the `gguf` package and un-permutes the llama Q/K rows back to HF order) and writes
tests/golden/smollm2_weights.json: the config transformers derived, and for a few rows of a few
tensors (HF names, HF row order) the first N values plus the sum and sum of squares of the whole
row. tests/unit/test_loader.c compares flashgen's model_load output with it.

Needs torch + transformers + gguf (run by hand, not in CI):
    python3 tools/gen_weight_golden.py [--model models/SmolLM2-135M-Instruct.Q4_1.gguf]
"""
import argparse
import json
import os

import numpy as np

ROWS = [  # (HF tensor, row): embedding (Q8_0), un-permuted Q/K rows (Q4_1), other weights, norms
    ("model.embed_tokens.weight", 0), ("model.embed_tokens.weight", 1),
    ("model.embed_tokens.weight", 12345), ("model.embed_tokens.weight", 49151),
    ("model.layers.0.self_attn.q_proj.weight", 0), ("model.layers.0.self_attn.q_proj.weight", 1),
    ("model.layers.0.self_attn.q_proj.weight", 32), ("model.layers.0.self_attn.q_proj.weight", 65),
    ("model.layers.0.self_attn.q_proj.weight", 575), ("model.layers.0.self_attn.k_proj.weight", 0),
    ("model.layers.0.self_attn.k_proj.weight", 33), ("model.layers.17.self_attn.k_proj.weight", 191),
    ("model.layers.29.self_attn.q_proj.weight", 100), ("model.layers.0.self_attn.v_proj.weight", 7),
    ("model.layers.5.self_attn.o_proj.weight", 3), ("model.layers.3.mlp.gate_proj.weight", 1000),
    ("model.layers.3.mlp.up_proj.weight", 2), ("model.layers.3.mlp.down_proj.weight", 2),
    ("model.layers.0.input_layernorm.weight", 0),
    ("model.layers.29.post_attention_layernorm.weight", 0), ("model.norm.weight", 0),
]
FIRST = 48


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--out", default="tests/golden/smollm2_weights.json")
    a = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM

    d, f = os.path.split(a.model)
    m = AutoModelForCausalLM.from_pretrained(d or ".", gguf_file=f, dtype=torch.float32)
    sd = m.state_dict()
    c = m.config
    rows = []
    for name, r in ROWS:
        t = sd[name].detach().cpu().numpy().astype(np.float32)
        row = t[r] if t.ndim == 2 else t
        rows.append({"tensor": name, "row": r, "first": [float(x) for x in row[:FIRST]],
                     "sum": float(np.sum(row, dtype=np.float64)),
                     "sumsq": float(np.sum(row.astype(np.float64) ** 2)),
                     "len": int(row.shape[0])})
    out = {
        "model": a.model, "file_size": os.path.getsize(a.model),
        "generator": "transformers %s AutoModelForCausalLM.from_pretrained(gguf_file=...)"
                     % __import__("transformers").__version__,
        "config": {"n_layers": c.num_hidden_layers, "dim": c.hidden_size,
                   "ffn_dim": c.intermediate_size, "n_heads": c.num_attention_heads,
                   "n_kv_heads": c.num_key_value_heads,
                   "head_dim": c.hidden_size // c.num_attention_heads,
                   "vocab_size": c.vocab_size, "max_seq_len": c.max_position_embeddings,
                   "rope_theta": float(getattr(c, "rope_theta", None) or
                                       c.rope_parameters["rope_theta"]),
                   "rms_eps": c.rms_norm_eps, "tied": bool(c.tie_word_embeddings)},
        "rows": rows,
    }
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as fp:
        json.dump(out, fp, indent=1)
        fp.write("\n")
    print("wrote", a.out)


if __name__ == "__main__":
    main()
