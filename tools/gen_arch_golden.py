#!/usr/bin/env python3
"""gen_arch_golden.py — tiny random checkpoints of each family flashgen runs, and the fp32 logits
Hugging Face transformers gives for them (issue 12, "Random-weight checkpoints of each family").

Families (FAMILIES below), each exercising its switches:
  qwen2   Qwen2ForCausalLM: q/k/v biases, GQA 4:2, untied head, yarn rope scaling
  qwen2_swa  the same with use_sliding_window: layer 0 global (max_window_layers 1), layers 1-2
          local with window 5; tied head; yarn with beta_fast 8, beta_slow 2, attention_factor
  mistral MistralForCausalLM: sliding window 5 (shorter than every test sequence), GQA 4:1,
          head_dim given explicitly (32, not hidden / heads = 16), tied head, linear rope scaling
  gemma3  Gemma3ForCausalLM: 7 layers, local sliding-window layers (window 4) with every 6th
          global, local RoPE base 10000 vs global 1e6 (+ linear scaling on the global layers),
          QK-norm, (1 + w) RMSNorms, four norms per layer, GELU-tanh MLP, sqrt(hidden) embedding
          scale, query_pre_attn_scalar 24 (not head_dim), final logit soft-capping 5

build(dir, family) writes DIR/config.json, DIR/model.safetensors (F32 weights from
numpy RandomState(SEED + family index): the same bytes on every machine) and DIR/tokenizer.json
(make_tiny_models' 282-token byte-level BPE). write_gguf(path, family, cfg) writes the same weights as an F32 GGUF file the way llama.cpp's
converter lays out qwen2 / gemma3 (with gguf-py). It needs numpy + safetensors (+ gguf) only, so
the test
(tests/test_arch_golden.py) rebuilds the checkpoints in CI without torch.

Run by hand (needs torch + transformers) to rewrite the golden file:
    python3 tools/gen_arch_golden.py [--out tests/golden/arch_logits.npz]
For each family and each sequence of SEQUENCES it runs transformers' fp32 forward over the whole
sequence and keeps the logits of the last STEPS positions; flashgen (tools/engine_check with
--force) prefills the first len - STEPS + 1 tokens and decodes the rest, so the comparison covers
prefill and decode, windows shorter than the context, and both RoPE tables.
"""
import argparse
import json
import os
import sys

import numpy as np
from safetensors.numpy import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_tiny_models as mtm  # noqa: E402

SEED = 4242
VOCAB = 282  # make_tiny_models.tiny_vocab()
STEPS = 8    # positions compared per sequence (the first from prefill, the rest decoded)
# token-id sequences (no tokenizer involved): lengths 14, 20 and 11
SEQUENCES = [
    [1, 72, 101, 108, 108, 111, 32, 119, 111, 114, 108, 100, 259, 260],
    [5, 17, 200, 201, 202, 33, 34, 35, 36, 270, 271, 272, 100, 99, 98, 97, 3, 4, 5, 6],
    [281, 280, 10, 20, 30, 40, 50, 60, 70, 80, 90],
]

FAMILIES = {
    "qwen2": {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
        "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": VOCAB,
        "max_position_embeddings": 256, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
        "hidden_act": "silu", "tie_word_embeddings": False, "use_sliding_window": False,
        "rope_scaling": {"rope_type": "yarn", "factor": 4.0,
                         "original_max_position_embeddings": 64},
        "torch_dtype": "float32",
    },
    "mistral": {
        "architectures": ["MistralForCausalLM"], "model_type": "mistral",
        "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 32, "vocab_size": VOCAB,
        "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "hidden_act": "silu", "tie_word_embeddings": True, "sliding_window": 5,
        "rope_scaling": {"rope_type": "linear", "factor": 2.0},
        "torch_dtype": "float32",
    },
    "gemma3": {
        "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text",
        "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 7,
        "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 32, "vocab_size": VOCAB,
        "max_position_embeddings": 256, "rms_norm_eps": 1e-6,
        "hidden_activation": "gelu_pytorch_tanh", "tie_word_embeddings": True,
        "sliding_window": 4, "sliding_window_pattern": 6,
        "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0,
        "rope_scaling": {"rope_type": "linear", "factor": 2.0},
        "query_pre_attn_scalar": 24, "final_logit_softcapping": 5.0,
        "attn_logit_softcapping": None, "attention_bias": False,
        "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2,
        "torch_dtype": "float32",
    },
    # Qwen2 with its own window layout: use_sliding_window, the first max_window_layers layers
    # global and the later ones local (window 5, shorter than every sequence), and yarn
    # with other betas and an explicit attention_factor (ROPE_INIT_FUNCTIONS' knobs)
    "qwen2_swa": {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
        "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 3,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": VOCAB,
        "max_position_embeddings": 256, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
        "hidden_act": "silu", "tie_word_embeddings": True, "use_sliding_window": True,
        "sliding_window": 5, "max_window_layers": 1,
        "rope_scaling": {"rope_type": "yarn", "factor": 4.0,
                         "original_max_position_embeddings": 64, "beta_fast": 8.0,
                         "beta_slow": 2.0, "attention_factor": 1.25},
        "torch_dtype": "float32",
    },
}


def weights(family, cfg):
    """HF-named fp32 weights for FAMILY, from its own seed."""
    rng = np.random.RandomState(SEED + list(FAMILIES).index(family))
    qwen = family in ("qwen2", "qwen2_swa")
    d, f, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    hd = cfg.get("head_dim", d // cfg["num_attention_heads"])
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    gemma = family == "gemma3"

    def mat(rows, cols):
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    def norm(n):  # Gemma stores w for (1 + w)
        return ((0.0 if gemma else 1.0) + 0.2 * rng.standard_normal(n)).astype(np.float32)

    w = {"model.embed_tokens.weight": (rng.standard_normal((V, d)) *
                                       (0.2 if gemma else 1.0)).astype(np.float32)}
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        w[p + "input_layernorm.weight"] = norm(d)
        w[p + "self_attn.q_proj.weight"] = mat(q, d)
        w[p + "self_attn.k_proj.weight"] = mat(kv, d)
        w[p + "self_attn.v_proj.weight"] = mat(kv, d)
        w[p + "self_attn.o_proj.weight"] = mat(d, q)
        if qwen:
            for n, r in (("q", q), ("k", kv), ("v", kv)):
                w[p + f"self_attn.{n}_proj.bias"] = (0.5 * rng.standard_normal(r)).astype(
                    np.float32)
        if gemma:
            w[p + "self_attn.q_norm.weight"] = norm(hd)
            w[p + "self_attn.k_norm.weight"] = norm(hd)
            w[p + "post_attention_layernorm.weight"] = norm(d)
            w[p + "pre_feedforward_layernorm.weight"] = norm(d)
            w[p + "post_feedforward_layernorm.weight"] = norm(d)
        else:
            w[p + "post_attention_layernorm.weight"] = norm(d)
        w[p + "mlp.gate_proj.weight"] = mat(f, d)
        w[p + "mlp.up_proj.weight"] = mat(f, d)
        w[p + "mlp.down_proj.weight"] = mat(d, f)
    w["model.norm.weight"] = norm(d)
    if not cfg["tie_word_embeddings"]:
        w["lm_head.weight"] = mat(V, d)
    return w


def build(d, family, cfg=None):
    """Write FAMILY's checkpoint (config CFG, default FAMILIES[family]) into directory D (created
    if needed); returns D."""
    cfg = cfg or FAMILIES[family]
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    save_file(weights(family, cfg), os.path.join(d, "model.safetensors"))
    tokens, _ = mtm.tiny_vocab()
    assert len(tokens) == VOCAB
    with open(os.path.join(d, "tokenizer.json"), "w") as f:
        json.dump(mtm.tokenizer_json(tokens), f)
    return d


# HF module names → GGUF (llama.cpp's tensor names for qwen2 and gemma3)
GGUF_LAYER = {
    "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
    "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
    "pre_feedforward_layernorm": "ffn_norm", "post_feedforward_layernorm": "post_ffw_norm",
}


def write_gguf(path, family, cfg, extra=None):
    """FAMILY's weights (cfg as given, e.g. edited) as an F32 GGUF the way llama.cpp's converter
    writes qwen2 / gemma3: no Q/K permutation (NEOX RoPE); Gemma's norms stored as 1 + w
    (convert_hf_to_gguf's norm_shift); Gemma's local base, window pattern and query scale are
    not in the file (so CFG must use llama.cpp's fixed values). EXTRA(writer), when given, adds
    metadata (keys a converter may write that the HF config has no field for)."""
    import gguf
    arch = {"qwen2": "qwen2", "qwen2_swa": "qwen2", "gemma3": "gemma3"}[family]
    gemma = family == "gemma3"
    d, hd = cfg["hidden_size"], cfg.get("head_dim", cfg["hidden_size"] // cfg["num_attention_heads"])
    w = gguf.GGUFWriter(path, arch)
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(d)
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_key_length(hd)
    w.add_value_length(hd)
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_freq_base(cfg["rope_theta"])
    rs = cfg.get("rope_scaling")
    if rs and rs["rope_type"] == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(rs["factor"])
    elif rs:  # yarn, as convert_hf_to_gguf's set_gguf_parameters writes it
        assert rs["rope_type"] == "yarn", rs
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(rs["factor"])
        w.add_rope_scaling_orig_ctx_len(rs["original_max_position_embeddings"])
        if "extrapolation_factor" in rs:
            w.add_rope_scaling_yarn_ext_factor(rs["extrapolation_factor"])
        if "attention_factor" in rs:
            w.add_rope_scaling_yarn_attn_factor(rs["attention_factor"])
        if "beta_fast" in rs:
            w.add_rope_scaling_yarn_beta_fast(rs["beta_fast"])
        if "beta_slow" in rs:
            w.add_rope_scaling_yarn_beta_slow(rs["beta_slow"])
    if gemma:
        w.add_sliding_window(cfg["sliding_window"])
        if cfg.get("final_logit_softcapping"):
            w.add_final_logit_softcapping(cfg["final_logit_softcapping"])
    if extra:
        extra(w)
    w.add_file_type(0)
    tokens, types = mtm.tiny_vocab()
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges([f"{a} {b}" for a, b in mtm.MERGES])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    for name, arr in weights(family, cfg).items():
        if name == "model.embed_tokens.weight":
            g = "token_embd.weight"
        elif name == "model.norm.weight":
            g = "output_norm.weight"
        elif name == "lm_head.weight":
            g = "output.weight"
        else:
            parts = name.split(".")
            mid, kind = ".".join(parts[3:-1]), parts[-1]
            if mid == "post_attention_layernorm":
                mid = "post_attention_norm" if gemma else "ffn_norm"
            else:
                mid = GGUF_LAYER[mid]
            g = f"blk.{parts[2]}.{mid}.{kind}"
        if gemma and name.endswith("norm.weight"):
            arr = arr + np.float32(1.0)
        w.add_tensor(g, np.ascontiguousarray(arr))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def hf_logits(d):
    """transformers' fp32 logits (sequence, STEPS, vocab) over SEQUENCES for the checkpoint D."""
    import torch
    from transformers import AutoModelForCausalLM
    m = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager")
    m.eval()
    out = []
    with torch.no_grad():
        for seq in SEQUENCES:
            lg = m(torch.tensor([seq])).logits[0].float().numpy()
            out.append(lg[len(seq) - STEPS:])
    return np.stack(out).astype(np.float32), m


def main():
    ap = argparse.ArgumentParser()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--out", default=os.path.join(root, "tests", "golden", "arch_logits.npz"))
    ap.add_argument("--work", default="/tmp/fg_arch_golden")
    ap.add_argument("--families", nargs="*", default=None,
                    help="recompute only these, keeping the others' logits from --out")
    a = ap.parse_args()
    import transformers
    res, gen = {}, []
    if a.families:
        old = np.load(a.out)
        res = {k: old[k] for k in old.files if k != "generator"}
        gen = [str(old["generator"])]
    for fam in a.families or FAMILIES:
        lg, m = hf_logits(build(os.path.join(a.work, fam), fam))
        c = m.config
        print(f"{fam}: {type(m).__name__}, layer_types={getattr(c, 'layer_types', None)}, "
              f"sliding_window={getattr(c, 'sliding_window', None)}, "
              f"rope={getattr(c, 'rope_parameters', None)}, |logits| max {abs(lg).max():.3f}")
        res[fam] = lg
    gen.append(f"transformers {transformers.__version__} fp32 eager, tools/gen_arch_golden.py"
               + (f" ({', '.join(a.families)})" if a.families else ""))
    np.savez_compressed(a.out, generator=np.array("; ".join(gen)), **res)
    print("wrote", a.out)


if __name__ == "__main__":
    main()
