#!/usr/bin/env python3
"""make_tiny_models.py — tiny random Llama models in every format flashgen's loader reads.

Usage: python3 tools/make_tiny_models.py --out DIR [--seed 1234]

For each model variant (GQA ratios 1, 3, 4, 8; tied and untied heads; one llama3 rope-scaling
config) it writes, from ONE set of random fp32 weights (numpy RandomState(seed)):

  DIR/<model>/hf/            config.json, model.safetensors (F32), tokenizer.json (merges
                             as "a b" strings, or as ["a", "b"] pairs for gqa4_untied),
                             tokenizer_config.json
  DIR/<model>/hf_sharded/    the same as 2 shards + model.safetensors.index.json
  DIR/<model>/hf_bf16/, hf_f16/   single-file safetensors in BF16 / F16 (some models)
  DIR/<model>/hf_fp8_*/      FP8 checkpoints (issue 13; one as 2 shards): the linear weights of the layers as
                             F8_E4M3 codes with their weight_scale (and input_scale), the rest
                             in BF16 / F16, config.json with the quantization_config of
                             compressed-tensors (per-tensor F32 scales, static activations,
                             kv_cache_scheme; per-channel BF16 scales, dynamic activations)
                             or of AutoFP8 / vLLM "fp8" (scalar F32 scales); see FP8_FORMS
  DIR/<model>/hf_fp8_*.f32   what the loader must produce for it (dump layout below): the codes
                             decoded here in numpy times their scale in float32, the BF16 / F16
                             tensors widened
  DIR/<model>/hf_fp8_*_deq/  the same values as an F32 checkpoint (the engine's oracle)
  DIR/<model>/<model>.<T>.gguf    GGUF with 2-D weights in type T (F32 F16 BF16 Q8_0 Q4_0 Q4_1),
                             1-D norms in F32 (as llama.cpp does), Q/K rows permuted as
                             convert_hf_to_gguf.py does
  DIR/<model>/<model>.<T>.ref     the fp32 values the loader must produce for that GGUF: the
                             `gguf` package's dequantize of the file's own bytes, Q/K un-permuted
  DIR/<model>/weights.f32    the original fp32 weights (what F32 GGUF and F32 safetensors give)

.ref / weights.f32 layout: float32 little-endian, tensors concatenated in flashgen's plan order:
tok_embd, per layer (attn_norm, wq, wk, wv, wo, ffn_norm, w_gate, w_up, w_down), out_norm,
output (untied only), then rope_freqs (head_dim/2 effective inverse frequencies).
DIR/manifest.json lists the models, their configs and files.

Needs: numpy, gguf, safetensors (no torch).
"""
import argparse
import json
import math
import os
import shutil
import sys

import numpy as np

import gguf
from gguf import GGMLQuantizationType as QT
from safetensors.numpy import save_file

from bytelevel import bytes_to_unicode

# variants: name -> shape. head_dim given explicitly where dim != n_heads * head_dim.
MODELS = {
    # GQA ratio 1, tied head, every GGUF type, every safetensors form
    "gqa1_tied": dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=4, head_dim=16, ffn=96,
                      tied=True, gguf=["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1"],
                      st=["hf", "hf_sharded", "hf_bf16", "hf_f16"], fp8=["hf_fp8_channel"]),
    # GQA ratio 4, untied head, explicit head_dim (8*16 != 64)
    "gqa4_untied": dict(dim=64, n_layers=2, n_heads=8, n_kv_heads=2, head_dim=16, ffn=96,
                        tied=False, gguf=["F32", "Q8_0", "Q4_1"], st=["hf", "hf_sharded"],
                        fp8=["hf_fp8_tensor", "hf_fp8_channel", "hf_fp8_autofp8",
                             "hf_fp8_channel_sharded"],
                        pair_merges=True),
    # GQA ratio 3 (heads 3 -> kv 1), tied
    "gqa3": dict(dim=96, n_layers=2, n_heads=3, n_kv_heads=1, head_dim=32, ffn=64, tied=True,
                 gguf=["F32", "Q4_0"], st=["hf"]),
    # GQA ratio 8, untied, llama3 rope scaling (GGUF carries it as rope_freqs.weight)
    "gqa8_llama3": dict(dim=64, n_layers=1, n_heads=8, n_kv_heads=1, head_dim=8, ffn=96,
                        tied=False, gguf=["F32", "Q8_0"], st=["hf"],
                        rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                          high_freq_factor=4.0,
                                          original_max_position_embeddings=64)),
}
THETA = 10000.0
EPS = 1e-5
CTX = 256

CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("e", "r"), ("Ġ", "a"), ("o", "n"),
          ("r", "e"), ("Ġ", "s"), ("a", "t"), ("e", "n"), ("Ġ", "w"), ("o", "r"), ("i", "s"),
          ("Ġ", "i"), ("l", "l"), ("he", "ll"), ("hell", "o"), ("Ġw", "or"), ("Ġwor", "l"),
          ("Ġworl", "d"), ("Ċ", "Ċ"), ("Ġ", "Ġ")]


def tiny_vocab():
    """ids 0-2 specials, 3-258 the 256 byte symbols (in byte order), then one token per merge."""
    b2u = bytes_to_unicode()
    tokens = SPECIALS + [b2u[b] for b in range(256)]
    for a, b in MERGES:
        assert a in tokens and b in tokens, (a, b)
        tokens.append(a + b)
    assert len(set(tokens)) == len(tokens)
    types = [3] * len(SPECIALS) + [1] * (len(tokens) - len(SPECIALS))
    return tokens, types


def tokenizer_json(tokens, pair_merges=False):
    """tokenizer.json; PAIR_MERGES writes merges in the tokenizers >= 0.20 ["a", "b"] form."""
    added = [dict(id=i, content=t, single_word=False, lstrip=False, rstrip=False,
                  normalized=False, special=True) for i, t in enumerate(SPECIALS)]
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
             "use_regex": True}]},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {t: i for i, t in enumerate(tokens)},
                  "merges": ([[a, b] for a, b in MERGES] if pair_merges
                             else [f"{a} {b}" for a, b in MERGES])},
    }


def random_weights(cfg, vocab, rng):
    """HF-named fp32 weights, in plan order."""
    d, hd, f = cfg["dim"], cfg["head_dim"], cfg["ffn"]
    q, kv = cfg["n_heads"] * hd, cfg["n_kv_heads"] * hd
    w = {}

    def mat(rows, cols):
        return (rng.standard_normal((rows, cols)) * 0.5).astype(np.float32)

    def norm(n):
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    w["model.embed_tokens.weight"] = mat(vocab, d)
    for l in range(cfg["n_layers"]):
        p = f"model.layers.{l}."
        w[p + "input_layernorm.weight"] = norm(d)
        w[p + "self_attn.q_proj.weight"] = mat(q, d)
        w[p + "self_attn.k_proj.weight"] = mat(kv, d)
        w[p + "self_attn.v_proj.weight"] = mat(kv, d)
        w[p + "self_attn.o_proj.weight"] = mat(d, q)
        w[p + "post_attention_layernorm.weight"] = norm(d)
        w[p + "mlp.gate_proj.weight"] = mat(f, d)
        w[p + "mlp.up_proj.weight"] = mat(f, d)
        w[p + "mlp.down_proj.weight"] = mat(d, f)
    w["model.norm.weight"] = norm(d)
    if not cfg["tied"]:
        w["lm_head.weight"] = mat(vocab, d)
    return w


def rope_inv_freq(cfg):
    """Effective inverse frequencies (llama3 scaling applied), float64."""
    hd = cfg["head_dim"]
    inv = 1.0 / THETA ** (np.arange(0, hd, 2, dtype=np.float64) / hd)
    rs = cfg.get("rope_scaling")
    if not rs:
        return inv, None
    factor, low, high = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
    L = rs["original_max_position_embeddings"]
    out, divisors = [], []
    for f in inv:
        wl = 2 * math.pi / f
        if wl < L / high:
            g = f
        elif wl > L / low:
            g = f / factor
        else:
            smooth = (L / wl - low) / (high - low)
            g = (1 - smooth) * f / factor + smooth * f
        out.append(g)
        divisors.append(f / g)  # convert_hf_to_gguf writes these as rope_freqs.weight
    return np.array(out), np.array(divisors, dtype=np.float32)


def permute(w, n_head):
    """convert_hf_to_gguf LlamaModel.permute: HF rows -> GGUF (interleaved-RoPE) rows."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def unpermute(w, n_head):
    return (w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


GGUF_NAMES = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q",
              "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
              "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
              "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}


def gguf_name(hf):
    if hf == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf == "model.norm.weight":
        return "output_norm.weight"
    if hf == "lm_head.weight":
        return "output.weight"
    parts = hf.split(".")  # model.layers.N.<a>.<b>.weight or model.layers.N.<a>.weight
    l, mid = parts[2], ".".join(parts[3:-1])
    return f"blk.{l}.{GGUF_NAMES[mid]}.weight"


def add_tiny_tokenizer(w, tokens, types, chat_template):
    """The byte-level tokenizer keys of every tiny GGUF (tiny_vocab's tokens and MERGES)."""
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges([f"{a} {b}" for a, b in MERGES])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(2)
    w.add_add_bos_token(False)
    w.add_chat_template(chat_template)


def write_gguf(path, cfg, weights, qtype, tokens, types, chat_template=CHAT_TEMPLATE):
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(cfg["n_layers"])
    w.add_context_length(CTX)
    w.add_embedding_length(cfg["dim"])
    w.add_feed_forward_length(cfg["ffn"])
    w.add_head_count(cfg["n_heads"])
    w.add_head_count_kv(cfg["n_kv_heads"])
    if cfg["n_heads"] * cfg["head_dim"] != cfg["dim"]:
        w.add_key_length(cfg["head_dim"])
        w.add_value_length(cfg["head_dim"])
    w.add_layer_norm_rms_eps(EPS)
    w.add_rope_freq_base(THETA)
    w.add_rope_dimension_count(cfg["head_dim"])
    w.add_vocab_size(len(tokens))
    w.add_file_type(0)
    add_tiny_tokenizer(w, tokens, types, chat_template)
    qt = QT[qtype]
    _, divisors = rope_inv_freq(cfg)
    if divisors is not None:
        w.add_tensor("rope_freqs.weight", divisors)
    for name, arr in weights.items():
        a = arr
        if name.endswith("q_proj.weight"):
            a = permute(a, cfg["n_heads"])
        elif name.endswith("k_proj.weight"):
            a = permute(a, cfg["n_kv_heads"])
        if a.ndim == 1 or qt == QT.F32:
            w.add_tensor(gguf_name(name), np.ascontiguousarray(a))
        elif qt == QT.F16:
            w.add_tensor(gguf_name(name), a.astype(np.float16))
        else:
            q = gguf.quants.quantize(np.ascontiguousarray(a), qt)
            w.add_tensor(gguf_name(name), q, raw_shape=q.shape, raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def gguf_reference(path, cfg, order):
    """Dequantize PATH's tensors with the gguf package, un-permute Q/K, return plan order."""
    r = gguf.GGUFReader(path)
    by = {t.name: t for t in r.tensors}
    out = []
    for hf in order:
        t = by[gguf_name(hf)]
        a = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        if len(t.shape) > 1:  # t.shape is ggml ne order: ne[0] = row length
            a = a.reshape(-1, int(t.shape[0]))
        else:
            a = a.ravel()
        if hf.endswith("q_proj.weight"):
            a = unpermute(a, cfg["n_heads"])
        elif hf.endswith("k_proj.weight"):
            a = unpermute(a, cfg["n_kv_heads"])
        out.append(np.ascontiguousarray(a, dtype=np.float32).ravel())
    return out


def hf_config(cfg, vocab):
    c = {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
         "hidden_size": cfg["dim"], "intermediate_size": cfg["ffn"],
         "num_hidden_layers": cfg["n_layers"], "num_attention_heads": cfg["n_heads"],
         "num_key_value_heads": cfg["n_kv_heads"], "vocab_size": vocab,
         "max_position_embeddings": CTX, "rope_theta": THETA, "rms_norm_eps": EPS,
         "hidden_act": "silu", "attention_bias": False, "mlp_bias": False,
         "tie_word_embeddings": cfg["tied"], "torch_dtype": "float32",
         "bos_token_id": 1, "eos_token_id": 2,
         "rope_scaling": cfg.get("rope_scaling")}
    if cfg["n_heads"] * cfg["head_dim"] != cfg["dim"]:
        c["head_dim"] = cfg["head_dim"]
    return c


def write_hf_dir(d, cfg, weights, tokens, form, extra_config=None):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump({**hf_config(cfg, len(tokens)), **(extra_config or {})}, f, indent=1)
    with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer_json(tokens, cfg.get("pair_merges", False)), f, ensure_ascii=False)
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({"add_bos_token": False, "add_prefix_space": False,
                   "bos_token": "<|im_start|>", "eos_token": "<|im_end|>",
                   "pad_token": "<|im_end|>", "chat_template": CHAT_TEMPLATE,
                   "model_max_length": CTX, "tokenizer_class": "GPT2Tokenizer"}, f, indent=1)
    if form == "hf_bf16":
        import gguf.quants as gq
        st = {k: gq.quantize(v, QT.BF16).view(np.uint16).reshape(v.shape) for k, v in
              weights.items()}
        # safetensors.numpy has no bfloat16 dtype: write the header by hand
        write_raw_safetensors(os.path.join(d, "model.safetensors"), st, "BF16")
        return
    if form == "hf_f16":
        save_file({k: v.astype(np.float16) for k, v in weights.items()},
                  os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
        return
    if form == "hf":
        save_file(weights, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
        return
    if form == "raw":  # WEIGHTS: name -> (safetensors dtype, array of that dtype's bytes)
        write_raw_safetensors(os.path.join(d, "model.safetensors"),
                              {k: v[1] for k, v in weights.items()},
                              {k: v[0] for k, v in weights.items()})
        return
    if form == "raw_sharded":  # the same in 2 shards, layer 1's up_proj weight | its scale
        names = sorted(weights)
        cut = names.index("model.layers.1.mlp.up_proj.weight") + 1
        assert names[cut] == "model.layers.1.mlp.up_proj.weight_scale"
        wm = {}
        for i, part in enumerate((names[:cut], names[cut:])):
            fn = f"model-{i + 1:05d}-of-00002.safetensors"
            write_raw_safetensors(os.path.join(d, fn), {k: weights[k][1] for k in part},
                                  {k: weights[k][0] for k in part})
            wm.update({k: fn for k in part})
        with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {}, "weight_map": wm}, f, indent=1)
        return
    names = list(weights)
    half = len(names) // 2
    shards = [names[:half], names[half:]]
    wm = {}
    total = 0
    for i, part in enumerate(shards):
        fn = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file({k: weights[k] for k in part}, os.path.join(d, fn), metadata={"format": "pt"})
        for k in part:
            wm[k] = fn
            total += weights[k].nbytes
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": wm}, f, indent=1)


def write_raw_safetensors(path, tensors, dtype):
    """DTYPE: one safetensors dtype for all, or a dict name -> dtype."""
    header, off, blobs = {}, 0, []
    for k in sorted(tensors):
        b = np.ascontiguousarray(tensors[k]).tobytes()
        header[k] = {"dtype": dtype[k] if isinstance(dtype, dict) else dtype,
                     "shape": list(tensors[k].shape),
                     "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - (8 + len(h)) % 8) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for b in blobs:
            f.write(b)


# --- FP8 checkpoints (issue 13) -------------------------------------------------------------------
# e4m3 (torch.float8_e4m3fn, OCP FP8 E4M3): sign, 4 exponent bits (bias 7), 3 mantissa bits;
# exponent 0 is subnormal (m/8 * 2^-6), S.1111.111 is NaN, no infinities, 448 the largest.


def e4m3_decode(codes):
    """uint8 codes -> float32 values, from the format's definition (float64 maths, exact)."""
    c = np.asarray(codes).astype(np.int64)
    e, m = (c >> 3) & 15, c & 7
    v = np.where(e == 0, m / 8.0 * 2.0 ** -6, (1.0 + m / 8.0) * 2.0 ** (e - 7.0))
    v = np.where((e == 15) & (m == 7), np.nan, v)
    return np.where(c & 0x80, -v, v).astype(np.float32)


_E4M3_POS = e4m3_decode(np.arange(0x7F)).astype(np.float64)  # codes 0..126: 0 .. 448, ascending


def e4m3_encode(x):
    """float32 -> nearest e4m3 code, ties to the even code, saturated to +-448 (as torch's
    .to(float8_e4m3fn) after the clamp that llm-compressor and AutoFP8 apply)."""
    a = np.minimum(np.abs(np.asarray(x, dtype=np.float64)), 448.0)
    i = np.clip(np.searchsorted(_E4M3_POS, a), 1, 126)
    lo, hi = _E4M3_POS[i - 1], _E4M3_POS[i]
    up = (hi - a < a - lo) | ((hi - a == a - lo) & (i % 2 == 0))
    code = np.where(up, i, i - 1)
    return (code | np.where(np.signbit(x), 0x80, 0)).astype(np.uint8)


def bf16_bits(x):
    import gguf.quants as gq
    return gq.quantize(np.ascontiguousarray(x, dtype=np.float32), QT.BF16).view(np.uint16) \
        .reshape(np.shape(x))


def bf16_value(bits):
    return (np.asarray(bits).astype(np.uint32) << 16).view(np.float32)


LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def fp8_group(strategy, act):
    """A compressed-tensors config group: FP8 weights with STRATEGY, activations ACT."""
    def args(**kw):
        return {"num_bits": 8, "type": "float", "symmetric": True, "group_size": None,
                "block_structure": None, "observer": "minmax", "observer_kwargs": {},
                "actorder": None, **kw}
    return {"targets": ["Linear"], "weights": args(strategy=strategy, dynamic=False),
            "input_activations": args(**act), "output_activations": None}


# form -> how it is written. scale: the weight_scale shape ([] / [1] per tensor, [out, 1] per
# channel) and dtype; rest: the dtype of every tensor that is not a quantized Linear weight.
FP8_FORMS = {
    # llm-compressor's FP8 scheme: per-tensor scales, static per-tensor activation scales, an
    # FP8 KV-cache scheme (k_scale / v_scale), lm_head ignored
    "hf_fp8_tensor": dict(
        scale="tensor1", scale_dtype="F32", input_scale=True, rest="BF16", kv=True,
        config={"quant_method": "compressed-tensors", "format": "naive-quantized",
                "quantization_status": "compressed", "global_compression_ratio": None,
                "config_groups": {"group_0": fp8_group(
                    "tensor", dict(strategy="tensor", dynamic=False))},
                "kv_cache_scheme": {"num_bits": 8, "type": "float", "symmetric": True,
                                    "strategy": "tensor", "dynamic": False},
                "ignore": ["lm_head"]}),
    # FP8_DYNAMIC: per-channel scales in the model's dtype, dynamic per-token activations
    "hf_fp8_channel": dict(
        scale="channel", scale_dtype="BF16", input_scale=False, rest="BF16", kv=False,
        config={"quant_method": "compressed-tensors", "format": "float-quantized",
                "quantization_status": "compressed", "global_compression_ratio": None,
                "config_groups": {"group_0": fp8_group(
                    "channel", dict(strategy="token", dynamic=True))},
                "kv_cache_scheme": None, "ignore": ["lm_head"]}),
    # the same as 2 shards cut between a weight and its weight_scale, as large checkpoints are
    "hf_fp8_channel_sharded": dict(
        scale="channel", scale_dtype="BF16", input_scale=False, rest="BF16", kv=False,
        shards=True, config={"quant_method": "compressed-tensors", "format": "float-quantized",
                             "quantization_status": "compressed",
                             "config_groups": {"group_0": fp8_group(
                                 "channel", dict(strategy="token", dynamic=True))},
                             "kv_cache_scheme": None, "ignore": ["lm_head"]}),
    # AutoFP8 (quant_method "fp8"): scalar F32 weight_scale and input_scale
    "hf_fp8_autofp8": dict(
        scale="scalar", scale_dtype="F32", input_scale=True, rest="F16", kv=False,
        config={"quant_method": "fp8", "activation_scheme": "static",
                "ignored_layers": ["lm_head"]}),
}


def fp8_checkpoint(cfg, weights, form, rng):
    """(tensors name -> (dtype, raw array), oracle name -> float32 values) for FORM."""
    spec = FP8_FORMS[form]
    out, oracle = {}, {}
    for name, w in weights.items():
        quant = name.split(".")[-2] in LINEAR
        if not quant:
            if spec["rest"] == "BF16":
                bits = bf16_bits(w)
                out[name], oracle[name] = ("BF16", bits), bf16_value(bits)
            else:
                h = w.astype(np.float16)
                out[name], oracle[name] = ("F16", h), h.astype(np.float32)
            continue
        base = name[:-len(".weight")]
        amax = np.abs(w).max(axis=1, keepdims=True) if spec["scale"] == "channel" \
            else np.abs(w).max(keepdims=True).reshape(1, 1)
        s32 = (amax / np.float32(448.0)).astype(np.float32)
        if spec["scale_dtype"] == "BF16":
            sbits = bf16_bits(s32)
            s32 = bf16_value(sbits)
            sraw = sbits
        else:
            sraw = s32
        codes = e4m3_encode(w / s32)
        shape = {"channel": (w.shape[0], 1), "tensor1": (1,), "scalar": ()}[spec["scale"]]
        out[name] = ("F8_E4M3", codes)
        out[base + ".weight_scale"] = (spec["scale_dtype"], np.asarray(sraw).reshape(shape))
        if spec["input_scale"]:
            out[base + ".input_scale"] = ("F32", np.asarray(
                rng.uniform(0.01, 0.1), dtype=np.float32).reshape(
                (1,) if spec["scale"] == "tensor1" else ()))
        oracle[name] = e4m3_decode(codes) * s32  # float32 * float32: one rounding
    if spec["kv"]:
        for l in range(cfg["n_layers"]):
            for kv in ("k_scale", "v_scale"):
                out[f"model.layers.{l}.self_attn.{kv}"] = ("F32", np.asarray(
                    [rng.uniform(0.01, 0.1)], dtype=np.float32))
    return out, oracle


def write_f32(path, arrays):
    with open(path, "wb") as f:
        for a in arrays:
            f.write(np.ascontiguousarray(a, dtype="<f4").tobytes())


def build(out, seed):
    tokens, types = tiny_vocab()
    manifest = {"seed": seed, "vocab": len(tokens), "models": {}}
    for mi, (name, cfg) in enumerate(MODELS.items()):
        rng = np.random.RandomState(seed + mi)
        weights = random_weights(cfg, len(tokens), rng)
        order = list(weights)
        inv, _ = rope_inv_freq(cfg)
        md = os.path.join(out, name)
        os.makedirs(md, exist_ok=True)
        write_f32(os.path.join(md, "weights.f32"),
                  [weights[k].ravel() for k in order] + [inv.astype(np.float32)])
        for form in cfg["st"]:
            write_hf_dir(os.path.join(md, form), cfg, weights, tokens, form)
        for form in cfg.get("fp8", []):
            tensors, oracle = fp8_checkpoint(cfg, weights, form, rng)
            spec = FP8_FORMS[form]
            write_hf_dir(os.path.join(md, form), cfg, tensors, tokens,
                         "raw_sharded" if spec.get("shards") else "raw",
                         {"quantization_config": spec["config"],
                          "torch_dtype": "float16" if spec["rest"] == "F16" else "bfloat16"})
            write_hf_dir(os.path.join(md, form + "_deq"), cfg, oracle, tokens, "hf")
            write_f32(os.path.join(md, form + ".f32"),
                      [oracle[k].ravel() for k in order] + [inv.astype(np.float32)])
        for qt in cfg["gguf"]:
            p = os.path.join(md, f"{name}.{qt}.gguf")
            write_gguf(p, cfg, weights, qt, tokens, types)
            write_f32(p[:-5] + ".ref",
                      gguf_reference(p, cfg, order) + [inv.astype(np.float32)])
        manifest["models"][name] = {k: v for k, v in cfg.items()}
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=1234)
    a = ap.parse_args()
    # build next to the target, then swap in, so a reader never sees a half-written tree
    tmp = f"{a.out.rstrip('/')}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    build(tmp, a.seed)
    old = f"{a.out.rstrip('/')}.old{os.getpid()}"
    if os.path.exists(a.out):
        os.rename(a.out, old)
    os.rename(tmp, a.out)
    shutil.rmtree(old, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
