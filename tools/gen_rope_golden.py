#!/usr/bin/env python3
"""gen_rope_golden.py — the RoPE frequency tables and attention factors transformers computes for
each rope_scaling flashgen reads (tests/golden/rope_freqs.json; issue 12).

For every case in CASES (a config.json: family, head size, base, rope_scaling) it builds the
transformers config and the model's own rotary embedding (Qwen2RotaryEmbedding /
LlamaRotaryEmbedding, whose init calls ROPE_INIT_FUNCTIONS[rope_type]), keeping its inv_freq
(head_dim / 2 floats) and attention_scaling (the cos/sin multiplier; 1 for the types without
one). tests/unit/test_rope_scaling.c loads
each config with flashgen's hf_config_load, computes model_rope_freqs and compares, without Python.

The yarn cases cover what the formula has knobs for: the default betas, other betas, an explicit
attention_factor, mscale / mscale_all_dim, truncate false, and a max_position_embeddings that is
not factor * original_max_position_embeddings (transformers then takes the ratio as the factor).

Usage (needs torch + transformers):  python3 tools/gen_rope_golden.py
"""
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "golden", "rope_freqs.json")


def qwen2(max_pos, theta, rope_scaling, hidden=1024, heads=8):
    return {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
            "hidden_size": hidden, "intermediate_size": 2048, "num_hidden_layers": 2,
            "num_attention_heads": heads, "num_key_value_heads": 2, "vocab_size": 282,
            "max_position_embeddings": max_pos, "rope_theta": theta,
            "rope_scaling": rope_scaling}


def llama(max_pos, theta, rope_scaling, hidden=4096, heads=32):
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "hidden_size": hidden, "intermediate_size": 2048, "num_hidden_layers": 2,
            "num_attention_heads": heads, "num_key_value_heads": 8, "vocab_size": 282,
            "max_position_embeddings": max_pos, "rope_theta": theta,
            "rope_scaling": rope_scaling}


def yarn(**kw):
    return {"rope_type": "yarn", **kw}


CASES = [
    ("default", qwen2(32768, 1000000.0, None)),
    ("linear", llama(8192, 10000.0, {"rope_type": "linear", "factor": 2.0})),
    ("dynamic", llama(4096, 10000.0, {"rope_type": "dynamic", "factor": 2.0})),
    ("llama3", llama(131072, 500000.0, {"rope_type": "llama3", "factor": 8.0,
                                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                         "original_max_position_embeddings": 8192})),
    # Qwen2.5's long-context recipe with max_position_embeddings raised to match
    ("yarn_qwen25", qwen2(131072, 1000000.0, yarn(factor=4.0,
                                                  original_max_position_embeddings=32768))),
    # as Qwen's model cards show it: the block added, max_position_embeddings left at 32768
    ("yarn_maxpos_unchanged", qwen2(32768, 1000000.0, yarn(factor=4.0,
                                                           original_max_position_embeddings=32768))),
    ("yarn_no_original", qwen2(32768, 1000000.0, yarn(factor=4.0))),
    ("yarn_betas", qwen2(65536, 10000.0, yarn(factor=2.0, original_max_position_embeddings=32768,
                                              beta_fast=16.0, beta_slow=2.0))),
    ("yarn_attention_factor", qwen2(131072, 1000000.0, yarn(
        factor=4.0, original_max_position_embeddings=32768, attention_factor=0.9))),
    ("yarn_mscale", qwen2(163840, 10000.0, yarn(
        factor=40.0, original_max_position_embeddings=4096, mscale=1.0, mscale_all_dim=0.5),
        hidden=512, heads=8)),
    ("yarn_no_truncate", qwen2(131072, 1000000.0, yarn(
        factor=4.0, original_max_position_embeddings=32768, truncate=False))),
    ("yarn_small_dim", qwen2(256, 10000.0, yarn(factor=4.0, original_max_position_embeddings=64),
                             hidden=64, heads=4)),
]


def main():
    import torch
    import transformers
    from transformers import AutoConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding
    from transformers.models.qwen2.modeling_qwen2 import Qwen2RotaryEmbedding
    rotary = {"qwen2": Qwen2RotaryEmbedding, "llama": LlamaRotaryEmbedding}
    out = []
    for name, cfg in CASES:
        c = AutoConfig.for_model(**{k: v for k, v in cfg.items() if k != "architectures"})
        # the model's own rotary embedding: its init calls ROPE_INIT_FUNCTIONS[rope_type] (or the
        # class's default table) and keeps inv_freq and attention_scaling
        emb = rotary[cfg["model_type"]](c)
        inv, att = emb.inv_freq.float(), float(emb.attention_scaling)
        out.append({"name": name, "config": cfg, "inv_freq": [float(x) for x in inv.tolist()],
                    "attention_factor": att})
        print(f"{name}: {emb.rope_type}, {len(inv)} freqs, attention factor {att:.6f}")
    with open(OUT, "w") as f:
        json.dump({"generator": f"transformers {transformers.__version__} "
                                f"Qwen2/LlamaRotaryEmbedding (ROPE_INIT_FUNCTIONS), torch "
                                f"{torch.__version__}, tools/gen_rope_golden.py",
                   "cases": out}, f, indent=1)
        f.write("\n")
    print("wrote", OUT)


if __name__ == "__main__":
    sys.exit(main())
