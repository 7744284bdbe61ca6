#!/usr/bin/env python3
"""make_kquant_models.py — tiny random Llama GGUFs in the mixes llama.cpp's quantizer writes.

Usage: python3 tools/make_kquant_models.py --out DIR [--seed 12]

For each mix (Q4_K_M, Q5_K_M, Q6_K, Q3_K_M, Q2_K) it writes two files of ONE set of weights:

  DIR/<mix>.gguf      each 2-D tensor in the type llama.cpp's llama-quant.cpp gives it under that
                      file type (attn_v / ffn_down / the output with more bits, the embedding as the
                      output when tied), with its fallback type where a row is not a multiple of
                      256 (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, Q2_K/Q3_K -> Q4_0). The blocks
                      are random bytes with random scales of sane size (gguf-py cannot quantize to
                      K-quants, so the quantized bytes come first and define the weights).
  DIR/<mix>.F32.gguf  the same weights as gguf.quants.dequantize makes of those bytes, in F32.

Both have the same metadata and tokenizer (tools/make_tiny_models.py's byte-level vocabulary), so
`flashgen generate` must give the same tokens on both (tests/test_gguf_kquant_models.py): the
loader's dequantization, Q/K row un-permutation included, equals gguf-py's on every mixed type.

Needs: numpy, gguf.
"""
import argparse
import os
import sys

import numpy as np

import gguf
from gguf import GGMLQuantizationType as QT

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_tiny_models import (CHAT_TEMPLATE, CTX, EPS, THETA, add_tiny_tokenizer,  # noqa: E402
                              tiny_vocab)

# dim and head_dim multiples of 256 / 64; ffn 384 is not a multiple of 256, so ffn_down's rows
# take the fallback type as in real files with such widths
CFG = dict(dim=256, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=64, ffn=384)

# mix -> (default type, attn_v, ffn_down, output / tied embedding, untied?), after llama-quant.cpp's
# llama_tensor_get_type: attn_v and ffn_down get more bits in the layers where its use_more_bits
# holds (of two layers, the last), the other layer keeps the default type
MIXES = {
    "Q4_K_M": (QT.Q4_K, QT.Q6_K, QT.Q6_K, QT.Q6_K, False),
    "Q5_K_M": (QT.Q5_K, QT.Q6_K, QT.Q6_K, QT.Q6_K, True),
    "Q6_K": (QT.Q6_K, QT.Q6_K, QT.Q6_K, QT.Q6_K, False),
    "Q3_K_M": (QT.Q3_K, QT.Q5_K, QT.Q5_K, QT.Q6_K, True),
    "Q2_K": (QT.Q2_K, QT.Q4_K, QT.Q3_K, QT.Q6_K, False),
}
FALLBACK = {QT.Q4_K: QT.Q5_0, QT.Q5_K: QT.Q5_1, QT.Q6_K: QT.Q8_0, QT.Q2_K: QT.Q4_0,
            QT.Q3_K: QT.Q4_0}

# per type: (offset, "h" f16 or "i8" int8 scales) fields and the scale size that keeps weights
# around +-0.5 given the largest quant and sub-scale of the type
SCALES = {
    QT.Q4_0: [(0, 0.06)], QT.Q4_1: [(0, 0.06), (2, -0.4)], QT.Q5_0: [(0, 0.03)],
    QT.Q5_1: [(0, 0.03), (2, -0.4)], QT.Q8_0: [(0, 0.004)],
    QT.Q2_K: [(80, 0.01), (82, 0.006)], QT.Q3_K: [(108, 0.004)],
    QT.Q4_K: [(0, 6e-4), (2, 6e-4)], QT.Q5_K: [(0, 3e-4), (2, 6e-4)], QT.Q6_K: [(208, 2e-4)],
}


def random_blocks(rng, qtype, rows, cols):
    """(rows, row_bytes) uint8: random quants, scale fields random in (0.5, 1.5) * their size."""
    blck, size = gguf.GGML_QUANT_SIZES[qtype]
    nb = rows * cols // blck
    b = rng.integers(0, 256, size=(nb, size), dtype=np.uint16).astype(np.uint8)
    for off, scale in SCALES[qtype]:
        v = (scale * rng.uniform(0.5, 1.5, nb)).astype(np.float16)
        b[:, off:off + 2] = v.view(np.uint8).reshape(nb, 2)
    return b.reshape(rows, -1)


def tensor_types(mix):
    """GGUF name -> (rows, cols, type) for the 2-D tensors of MIX."""
    base, attn_v, ffn_down, out, untied = MIXES[mix]
    d, hd, f, L = CFG["dim"], CFG["head_dim"], CFG["ffn"], CFG["n_layers"]
    q, kv = CFG["n_heads"] * hd, CFG["n_kv_heads"] * hd
    vocab = len(tiny_vocab()[0])
    t = {"token_embd.weight": (vocab, d, base if untied else out)}
    for l in range(L):
        p = f"blk.{l}."
        t[p + "attn_q.weight"] = (q, d, base)
        t[p + "attn_k.weight"] = (kv, d, base)
        more = l == L - 1
        t[p + "attn_v.weight"] = (kv, d, attn_v if more else base)
        t[p + "attn_output.weight"] = (d, q, base)
        t[p + "ffn_gate.weight"] = (f, d, base)
        t[p + "ffn_up.weight"] = (f, d, base)
        t[p + "ffn_down.weight"] = (d, f, ffn_down if more else base)
    if untied:
        t["output.weight"] = (vocab, d, out)
    return {n: (r, c, FALLBACK.get(qt, qt) if c % 256 else qt) for n, (r, c, qt) in t.items()}


def write(path, tensors, norms):
    """TENSORS: name -> (array, raw type or None for F32); NORMS: name -> fp32 vector."""
    tokens, types = tiny_vocab()
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(CFG["n_layers"])
    w.add_context_length(CTX)
    w.add_embedding_length(CFG["dim"])
    w.add_feed_forward_length(CFG["ffn"])
    w.add_head_count(CFG["n_heads"])
    w.add_head_count_kv(CFG["n_kv_heads"])
    w.add_layer_norm_rms_eps(EPS)
    w.add_rope_freq_base(THETA)
    w.add_rope_dimension_count(CFG["head_dim"])
    w.add_vocab_size(len(tokens))
    add_tiny_tokenizer(w, tokens, types, CHAT_TEMPLATE)
    for name, v in norms.items():
        w.add_tensor(name, v)
    for name, (a, qt) in tensors.items():
        if qt is None:
            w.add_tensor(name, a)
        else:
            w.add_tensor(name, a, raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def build(out, seed):
    os.makedirs(out, exist_ok=True)
    made = []
    for i, mix in enumerate(MIXES):
        rng = np.random.default_rng(seed + i)
        d = CFG["dim"]
        norms = {f"blk.{l}.{n}.weight": (1 + 0.1 * rng.standard_normal(d)).astype(np.float32)
                 for l in range(CFG["n_layers"]) for n in ("attn_norm", "ffn_norm")}
        norms["output_norm.weight"] = (1 + 0.1 * rng.standard_normal(d)).astype(np.float32)
        quant, f32 = {}, {}
        for name, (rows, cols, qt) in tensor_types(mix).items():
            raw = random_blocks(rng, qt, rows, cols)
            quant[name] = (raw, qt)
            f32[name] = (np.ascontiguousarray(gguf.quants.dequantize(raw, qt), np.float32), None)
        p = os.path.join(out, f"{mix}.gguf")
        write(p, quant, norms)
        write(os.path.join(out, f"{mix}.F32.gguf"), f32, norms)
        made.append(p)
    return made


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=12)
    a = ap.parse_args()
    for p in build(a.out, a.seed):
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
