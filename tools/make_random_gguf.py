#!/usr/bin/env python3
"""make_random_gguf.py — a Llama-shape GGUF with random weights that flashgen and llama.cpp both
load, for serving benchmarks at real shapes (bench/serving_device.sh).

  python3 tools/make_random_gguf.py --shape llama3_8b --tokenizer models/SmolLM2-135M-Instruct.Q4_1.gguf \\
      --out /tmp/m8b.f16.gguf
  python3 tools/make_random_gguf.py --shape tiny --tokenizer ... --out /tmp/tiny.gguf   # CPU tests
  python3 tools/make_random_gguf.py --tokenizer-only --tokenizer models/SmolLM2-135M-Instruct.Q4_1.gguf \
      --out .gpu/smollm2_tokenizer.gguf   # the tokenizer keys alone (2 MB), to carry to the device

Numpy only (the device machine has no `gguf` package), GGUF v3: the llama metadata keys, every
`tokenizer.*` key copied byte for byte from --tokenizer (so both engines tokenize the same way and
the vocabulary is that file's), 2-D weights in F16 (or F32, or the GGUF blocks of Q8_0, Q4_0,
Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K: --type; q4_k_m: llama.cpp's Q4_K_M mix, Q4_K with Q6_K where
llama-quantize puts it, mix_types), norms in F32 (as llama.cpp writes them). The values: one block of N(0, std)
numbers drawn once (numpy RandomState(--seed)), quantized once for the block types (the rounding
llama.cpp's reference quantizer uses, written here from the format: model-format.md), and tiled
over every tensor, which writes a 14.7 GB file in seconds; Q2_K, Q3_K, Q4_K, Q5_K and Q6_K (no
quantizer here, as tools/make_kquant_models.py) are random super-blocks whose bytes define the
weights (kquant_blocks, q6k_blocks, k23_blocks: std about --std, centred), every 2-D weight's rows a multiple of 256 (the shapes small and
llama3_8b; the others are refused); the model's output is noise, which a
throughput benchmark does not mind (it runs with ignore_eos). --tied leaves output.weight out (the
head is the embedding, as SmolLM2's); the last line says the tensor bytes (tests/gpu/check_qengine.py
compares the GPU's resident bytes with them).
"""
import argparse
import os
import struct
import sys

import numpy as np

SHAPES = {
    # Llama-3-8B's body (the vocabulary is the tokenizer file's)
    "llama3_8b": dict(dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, ffn=14336, ctx=8192,
                      theta=500000.0),
    # small enough for the CPU tests of the benchmark scripts
    "tiny": dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn=128, ctx=2048, theta=10000.0),
    # Llama-3 head layout at a size the CPU backend runs quickly (tests/gpu/check_qengine.py):
    # dim and ffn multiples of 128, the quantized GEMV's full groups of 4 blocks
    "small": dict(dim=1024, n_layers=4, n_heads=8, n_kv_heads=2, ffn=2816, ctx=4096,
                  theta=500000.0),
    # SmolLM2-135M's body: 576 / 32 = 18 blocks a row, a partial group at each row's end
    "smollm2": dict(dim=576, n_layers=30, n_heads=9, n_kv_heads=3, ffn=1536, ctx=8192,
                    theta=100000.0),
}

# GGUF value types
T_U8, T_I8, T_U16, T_I16, T_U32, T_I32, T_F32, T_BOOL, T_STR, T_ARR, T_U64, T_I64, T_F64 = range(13)
SCALAR = {T_U8: "<B", T_I8: "<b", T_U16: "<H", T_I16: "<h", T_U32: "<I", T_I32: "<i", T_F32: "<f",
          T_BOOL: "<B", T_U64: "<Q", T_I64: "<q", T_F64: "<d"}
GGML_F32, GGML_F16, GGML_Q4_0, GGML_Q4_1, GGML_Q5_0, GGML_Q5_1 = 0, 1, 2, 3, 6, 7
GGML_Q8_0, GGML_Q2_K, GGML_Q3_K, GGML_Q4_K, GGML_Q5_K, GGML_Q6_K = 8, 10, 11, 12, 13, 14
ALIGN = 32
# --type: (ggml type of the 2-D weights, general.file_type (llama_ftype; 8 MOSTLY_Q5_0, 9
# MOSTLY_Q5_1, 10 MOSTLY_Q2_K, 11 MOSTLY_Q3_K_S, 14 MOSTLY_Q4_K_S, 16 MOSTLY_Q5_K_S, 18
# MOSTLY_Q6_K: every matrix in that type; 15
# MOSTLY_Q4_K_M:
# mix_types), bytes per block of BLOCK_VALUES values)
TYPES = {"f32": (GGML_F32, 0, 128), "f16": (GGML_F16, 1, 64), "q4_0": (GGML_Q4_0, 2, 18),
         "q4_1": (GGML_Q4_1, 3, 20), "q5_0": (GGML_Q5_0, 8, 22), "q5_1": (GGML_Q5_1, 9, 24),
         "q8_0": (GGML_Q8_0, 7, 34), "q4_k": (GGML_Q4_K, 14, 144), "q5_k": (GGML_Q5_K, 16, 176),
         "q6_k": (GGML_Q6_K, 18, 210), "q4_k_m": (GGML_Q4_K, 15, 144),
         "q3_k": (GGML_Q3_K, 11, 110), "q2_k": (GGML_Q2_K, 10, 84)}
BLOCK_VALUES = {GGML_Q2_K: 256, GGML_Q3_K: 256, GGML_Q4_K: 256, GGML_Q5_K: 256,
                GGML_Q6_K: 256}  # values per block (32 for the others)


def more_bits(i, n):
    """llama.cpp's use_more_bits(i_layer, n_layers) (src/llama-quant.cpp): the layers whose
    attn_v and ffn_down its Q4_K_M / Q5_K_M give 6 bits: the first and last eighth, and every third
    layer between."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def mix_types(plan, kind, n_layers):
    """The PLAN (tensor_plan's) with the types of llama.cpp's --type KIND mix: q4_k_m = Q4_K but
    output.weight and, in more_bits layers, attn_v and ffn_down Q6_K (what llama-quantize writes
    for a Llama with an untied head, the embedding Q4_K)."""
    if kind != "q4_k_m":
        return plan
    out = []
    for name, shape, t in plan:
        parts = name.split(".")
        six = name == "output.weight" or (parts[0] == "blk" and parts[2] in ("attn_v", "ffn_down") and
                                          more_bits(int(parts[1]), n_layers))
        out.append((name, shape, GGML_Q6_K if six and t != GGML_F32 else t))
    return out


def type_bytes(n, t):
    """Bytes of N values of ggml type T (F32, or a --type's; N whole blocks)."""
    if t in (GGML_F32, GGML_F16):
        return (4 if t == GGML_F32 else 2) * n
    return n // BLOCK_VALUES.get(t, 32) * next(v[2] for v in TYPES.values() if v[0] == t)


def quantize_blocks(x, t):
    """The GGUF blocks of the fp32 values x (a multiple of 32) in type t, as bytes.
    Q8_0: fp16 d = amax / 127, q = round(x / d) int8. Q4_0: d = m / -8 where m is the value of
    largest magnitude, q = min(15, trunc(x / d + 8.5)), low nibbles elements 0-15, high 16-31.
    Q4_1: d = (max - min) / 15, fp16 m = min, q = min(15, trunc((x - min) / d + 0.5)).
    Q5_0 / Q5_1: as Q4_0 / Q4_1 on 5 bits (d = m / -16, q = min(31, trunc(x / d + 16.5)); d =
    (max - min) / 31, q = min(31, trunc((x - min) / d + 0.5))): the low nibbles as Q4_x's, after
    the f16 d (and m) the 4 bytes qh whose little-endian bit j is the fifth bit of element j."""
    b = x.astype(np.float32).reshape(-1, 32)
    if t == GGML_Q8_0:
        d = np.abs(b).max(axis=1) / 127.0
        inv = np.divide(1.0, d, out=np.zeros_like(d), where=d > 0)
        q = np.round(b * inv[:, None]).astype(np.int8)
        return np.concatenate([d.astype(np.float16)[:, None].view(np.uint8),
                               q.view(np.uint8)], axis=1).tobytes()
    if t in (GGML_Q5_0, GGML_Q5_1):
        return quantize_q5(b, t)
    if t == GGML_Q4_0:
        m = b[np.arange(len(b)), np.abs(b).argmax(axis=1)]
        d = m / -8.0
        inv = np.divide(1.0, d, out=np.zeros_like(d), where=d != 0)
        q = np.minimum(15, (b * inv[:, None] + 8.5).astype(np.int32)).astype(np.uint8)
        nib = q[:, :16] | (q[:, 16:] << 4)
        return np.concatenate([d.astype(np.float16)[:, None].view(np.uint8), nib], axis=1).tobytes()
    lo, hi = b.min(axis=1), b.max(axis=1)
    d = (hi - lo) / 15.0
    inv = np.divide(1.0, d, out=np.zeros_like(d), where=d > 0)
    q = np.minimum(15, ((b - lo[:, None]) * inv[:, None] + 0.5).astype(np.int32)).astype(np.uint8)
    nib = q[:, :16] | (q[:, 16:] << 4)
    return np.concatenate([d.astype(np.float16)[:, None].view(np.uint8),
                           lo.astype(np.float16)[:, None].view(np.uint8), nib], axis=1).tobytes()


def quantize_q5(b, t):
    """quantize_blocks' Q5_0 / Q5_1 of the (n, 32) fp32 blocks b."""
    if t == GGML_Q5_0:
        m = b[np.arange(len(b)), np.abs(b).argmax(axis=1)]
        d = m / -16.0
        inv = np.divide(1.0, d, out=np.zeros_like(d), where=d != 0)
        q = np.minimum(31, (b * inv[:, None] + 16.5).astype(np.int32))
        head = [d.astype(np.float16)[:, None].view(np.uint8)]
    else:
        lo, hi = b.min(axis=1), b.max(axis=1)
        d = (hi - lo) / 31.0
        inv = np.divide(1.0, d, out=np.zeros_like(d), where=d > 0)
        q = np.minimum(31, ((b - lo[:, None]) * inv[:, None] + 0.5).astype(np.int32))
        head = [d.astype(np.float16)[:, None].view(np.uint8),
                lo.astype(np.float16)[:, None].view(np.uint8)]
    q = q.astype(np.uint32)
    qh = ((q >> 4) << np.arange(32, dtype=np.uint32)).sum(axis=1, dtype=np.uint32)
    nib = ((q[:, :16] & 15) | (q[:, 16:] & 15) << 4).astype(np.uint8)
    return np.concatenate(head + [qh.astype("<u4")[:, None].view(np.uint8), nib], axis=1).tobytes()


def kquant_blocks(rng, n, std, five=False):
    """N / 256 random Q4_K super-blocks (bytes): per sub-block j a 6-bit scale sc_j uniform in
    0..63 and a min m_j = sc_j + U{-3..3} (clipped to 0..63; never the scale's bytes), nibbles
    uniform in 0..15, d = fp16(std / 170 · U(0.5, 1.5)), dmin = fp16(7.5 d): a value
    d·sc·q − dmin·m ≈ d·sc·(q − 7.5) has mean about 0 and std about 170 d (sc's rms 36.9 times
    q's std 4.6). Packed as model-format.md's Q4_K: f16 d, f16 dmin, the 12 bytes of scales and
    mins (get_scale_min_k4's inverse), then qs[32c + l] = q[64c + l] | q[64c + 32 + l] << 4.
    five: Q5_K super-blocks (176 bytes) the same way with q uniform in 0..31, d = fp16(std / 341 ·
    U(0.5, 1.5)), dmin = fp16(15.5 d) (q's std 9.2), qh[l] (32 bytes between the scales and qs)
    holding the fifth bit of element l of sub-block j at bit j, qs the low nibbles as Q4_K's."""
    nb = n // 256
    sc = rng.randint(0, 64, (nb, 8))
    m = np.clip(sc + rng.randint(-3, 4, (nb, 8)), 0, 63)
    q = rng.randint(0, 32 if five else 16, (nb, 4, 2, 32))  # pair c, low / high nibble, l
    d = (std / (341.0 if five else 170.0) * rng.uniform(0.5, 1.5, nb)).astype(np.float16)
    dmin = (d.astype(np.float32) * (15.5 if five else 7.5)).astype(np.float16)
    s = np.zeros((nb, 12), np.int64)
    s[:, 0:4] = sc[:, 0:4] | (sc[:, 4:8] >> 4) << 6
    s[:, 4:8] = m[:, 0:4] | (m[:, 4:8] >> 4) << 6
    s[:, 8:12] = (sc[:, 4:8] & 15) | (m[:, 4:8] & 15) << 4
    qs = ((q[:, :, 0, :] & 15) | (q[:, :, 1, :] & 15) << 4).reshape(nb, 128)
    qh = [] if not five else [((q.reshape(nb, 8, 32) >> 4) << np.arange(8)[None, :, None])
                              .sum(axis=1).astype(np.uint8)]  # sub-block j = 2c + h at bit j
    return np.concatenate([d[:, None].view(np.uint8), dmin[:, None].view(np.uint8),
                           s.astype(np.uint8)] + qh + [qs.astype(np.uint8)], axis=1).tobytes()


def q6k_blocks(rng, n, std):
    """N / 256 random Q6_K super-blocks (bytes): ql, qh and the 16 int8 scales uniform random
    bytes, d = fp16(std / 1367 · U(0.5, 1.5)): a value d·sc·(q − 32) has mean about 0 and std
    about 1367 d (sc's rms 73.9 times the std 18.5 of q − 32); at std 0.02 d is an fp16
    subnormal, whose bits are as exact as any."""
    nb = n // 256
    b = rng.randint(0, 256, (nb, 210)).astype(np.uint8)
    d = (std / 1367.0 * rng.uniform(0.5, 1.5, nb)).astype(np.float16)
    b[:, 208:210] = d[:, None].view(np.uint8)
    return b.tobytes()


def k23_blocks(rng, n, std, t):
    """N / 256 random Q3_K (t GGML_Q3_K, 110 bytes) or Q2_K (84 bytes) super-blocks. Q3_K: hmask,
    qs and the 12 bytes of packed 6-bit scales uniform random bytes (sc − 32 uniform in −32..31, q
    in −4..3), d = fp16(std / 45.1 · U(0.5, 1.5)) at bytes 108-109: a value d·(sc − 32)·q has mean
    about 0 and std about 45.1 d (measured). Q2_K: the 16 scale / min bytes and qs uniform random
    bytes (sc, m, q uniform in 0..15, 0..15, 0..3), d = fp16(std / 14.4 · U(0.5, 1.5)) at 80-81 and
    dmin = fp16(1.5 d) at 82-83: d·sc·q − dmin·m has mean about 0 (E sc·q = 11.25 = 1.5 E m) and
    std about 14.4 d."""
    nb = n // 256
    q3 = t == GGML_Q3_K
    bs = 110 if q3 else 84
    b = rng.randint(0, 256, (nb, bs)).astype(np.uint8)
    d = (std / (45.1 if q3 else 14.4) * rng.uniform(0.5, 1.5, nb)).astype(np.float16)
    dpos = 108 if q3 else 80
    b[:, dpos:dpos + 2] = d[:, None].view(np.uint8)
    if not q3:
        b[:, 82:84] = (d.astype(np.float32) * 1.5).astype(np.float16)[:, None].view(np.uint8)
    return b.tobytes()


class Reader:
    def __init__(self, data):
        self.d, self.o = data, 0

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.d, self.o)[0]
        self.o += struct.calcsize(fmt)
        return v

    def string(self):
        n = self.take("<Q")
        s = bytes(self.d[self.o:self.o + n])
        self.o += n
        return s

    def skip_value(self, t):
        if t == T_STR:
            self.string()
        elif t == T_ARR:
            et, n = self.take("<I"), self.take("<Q")
            if et in SCALAR:
                self.o += struct.calcsize(SCALAR[et]) * n
            else:
                for _ in range(n):
                    self.skip_value(et)
        else:
            self.o += struct.calcsize(SCALAR[t])


def tokenizer_entries(path):
    """The tokenizer.* key/value entries of a GGUF file, as raw bytes, and the vocabulary size."""
    with open(path, "rb") as f:
        head = f.read(64 << 20)  # the metadata of the default SmolLM2 file is about 2 MB
    r = Reader(memoryview(head))
    if bytes(head[:4]) != b"GGUF":
        sys.exit(f"{path}: not a GGUF file")
    r.o = 4
    version, _n_tensors, n_kv = r.take("<I"), r.take("<Q"), r.take("<Q")
    if version < 2:
        sys.exit(f"{path}: GGUF version {version} is too old")
    raw, vocab = [], None
    for _ in range(n_kv):
        start = r.o
        key = r.string().decode()
        t = r.take("<I")
        vstart = r.o
        r.skip_value(t)
        if key.startswith("tokenizer."):
            raw.append(bytes(head[start:r.o]))
            if key == "tokenizer.ggml.tokens":
                vocab = struct.unpack_from("<Q", head, vstart + 4)[0]
    if not vocab:
        sys.exit(f"{path}: no tokenizer.ggml.tokens")
    return raw, vocab


def kv_string(key, s):
    k, v = key.encode(), s.encode()
    return struct.pack("<Q", len(k)) + k + struct.pack("<I", T_STR) + struct.pack("<Q", len(v)) + v


def kv_scalar(key, t, v):
    k = key.encode()
    return struct.pack("<Q", len(k)) + k + struct.pack("<I", t) + struct.pack(SCALAR[t], v)


def tensor_nbytes(shape, t):
    """Bytes of a tensor of SHAPE in ggml type T (F32 norms or a 2-D weight of a --type)."""
    return type_bytes(int(np.prod(shape)), t)


def tensor_plan(s, vocab, wtype, tied=False):
    """(name, numpy shape (rows, cols) or (n,), ggml type) in file order."""
    D, F, hd = s["dim"], s["ffn"], s["dim"] // s["n_heads"]
    kvd = s["n_kv_heads"] * hd
    plan = [("token_embd.weight", (vocab, D), wtype)]
    for i in range(s["n_layers"]):
        b = f"blk.{i}."
        plan += [(b + "attn_norm.weight", (D,), GGML_F32), (b + "attn_q.weight", (D, D), wtype),
                 (b + "attn_k.weight", (kvd, D), wtype), (b + "attn_v.weight", (kvd, D), wtype),
                 (b + "attn_output.weight", (D, D), wtype), (b + "ffn_norm.weight", (D,), GGML_F32),
                 (b + "ffn_gate.weight", (F, D), wtype), (b + "ffn_up.weight", (F, D), wtype),
                 (b + "ffn_down.weight", (D, F), wtype)]
    plan += [("output_norm.weight", (D,), GGML_F32)]
    if not tied:
        plan += [("output.weight", (vocab, D), wtype)]
    return plan


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=SHAPES, default="llama3_8b")
    ap.add_argument("--tokenizer", required=True, help="a GGUF file whose tokenizer.* keys are copied")
    ap.add_argument("--out", required=True)
    ap.add_argument("--type", choices=TYPES, default="f16")
    ap.add_argument("--tied", action="store_true", help="no output.weight: the head is the embedding")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--std", type=float, default=0.02)
    ap.add_argument("--ctx", type=int, default=None, help="context length (default: the shape's)")
    ap.add_argument("--layers", type=int, default=None, help="decoder blocks (default: the shape's)")
    ap.add_argument("--block", type=int, default=1 << 22,
                    help="numbers drawn and tiled; a prime keeps the tiles off head boundaries")
    ap.add_argument("--shift", action="store_true",
                    help="start each tensor at another place of the block, so no two tensors, heads "
                         "or layers begin alike (for correctness checks such as tests/gpu/check_tp.py)")
    ap.add_argument("--tokenizer-only", action="store_true",
                    help="write a GGUF of the tokenizer keys alone (no tensors), a --tokenizer for later")
    a = ap.parse_args()
    if a.tokenizer_only:
        tok, vocab = tokenizer_entries(a.tokenizer)
        with open(a.out, "wb") as f:
            f.write(b"GGUF" + struct.pack("<IQQ", 3, 0, len(tok)) + b"".join(tok))
        print(f"{a.out}: the tokenizer of {a.tokenizer} (vocab {vocab}), {os.path.getsize(a.out)} bytes")
        return

    s = dict(SHAPES[a.shape])
    if a.ctx:
        s["ctx"] = a.ctx
    if a.layers:
        s["n_layers"] = a.layers
    tok, vocab = tokenizer_entries(a.tokenizer)
    wtype, ftype, _ = TYPES[a.type]
    hd = s["dim"] // s["n_heads"]
    kvs = [kv_string("general.architecture", "llama"),
           kv_string("general.name", f"random-{a.shape}-{a.type}"),
           kv_scalar("general.alignment", T_U32, ALIGN),
           kv_scalar("general.file_type", T_U32, ftype),
           kv_scalar("llama.context_length", T_U32, s["ctx"]),
           kv_scalar("llama.embedding_length", T_U32, s["dim"]),
           kv_scalar("llama.block_count", T_U32, s["n_layers"]),
           kv_scalar("llama.feed_forward_length", T_U32, s["ffn"]),
           kv_scalar("llama.attention.head_count", T_U32, s["n_heads"]),
           kv_scalar("llama.attention.head_count_kv", T_U32, s["n_kv_heads"]),
           kv_scalar("llama.rope.freq_base", T_F32, s["theta"]),
           kv_scalar("llama.attention.layer_norm_rms_epsilon", T_F32, 1e-5),
           kv_scalar("llama.rope.dimension_count", T_U32, hd),
           kv_scalar("llama.vocab_size", T_U32, vocab)] + tok
    plan = mix_types(tensor_plan(s, vocab, wtype, a.tied), a.type, s["n_layers"])

    infos, offset = [], 0
    for name, shape, t in plan:
        n = int(np.prod(shape))
        nb = type_bytes(n, t)
        k = name.encode()
        dims = list(reversed(shape))  # ne[0] is the innermost (column) dimension
        infos.append(struct.pack("<Q", len(k)) + k + struct.pack("<I", len(dims)) +
                     b"".join(struct.pack("<Q", d) for d in dims) + struct.pack("<IQ", t, offset))
        offset += (nb + ALIGN - 1) // ALIGN * ALIGN

    rng = np.random.RandomState(a.seed)
    types = list(dict.fromkeys(t for _, sh, t in plan if len(sh) == 2))  # of the 2-D weights
    for t in types:
        bv = BLOCK_VALUES.get(t, 32)
        if a.block % bv and t not in (GGML_F16, GGML_F32):
            sys.exit(f"--block: a multiple of {bv} values for --type {a.type} (whole quantization blocks)")
    bad = [(n, sh) for n, sh, t in plan
           if len(sh) == 2 and t not in (GGML_F16, GGML_F32) and sh[-1] % BLOCK_VALUES.get(t, 32)]
    if bad:
        sys.exit(f"--type {a.type}: rows must be a multiple of {BLOCK_VALUES.get(wtype, 32)} values; "
                 f"shape {a.shape} has {bad[0][0]} with rows of {bad[0][1][-1]}")
    blocks = {}  # ggml type -> the one block of values tiled over that type's tensors, as bytes
    for t in types:
        if t in (GGML_Q4_K, GGML_Q5_K):
            blocks[t] = memoryview(kquant_blocks(rng, a.block, a.std, five=t == GGML_Q5_K))
        elif t == GGML_Q6_K:
            blocks[t] = memoryview(q6k_blocks(rng, a.block, a.std))
        elif t in (GGML_Q2_K, GGML_Q3_K):
            blocks[t] = memoryview(k23_blocks(rng, a.block, a.std, t))
        elif t in (GGML_F16, GGML_F32):
            values = rng.standard_normal(a.block) * a.std
            blocks[t] = memoryview(values.astype(np.float16 if t == GGML_F16 else np.float32)).cast("B")
        else:
            blocks[t] = memoryview(quantize_blocks(rng.standard_normal(a.block) * a.std, t))
    ones = np.ones(max(s["dim"], 1), np.float32)
    tmp = a.out + ".part"
    with open(tmp, "wb") as f:
        f.write(b"GGUF" + struct.pack("<IQQ", 3, len(plan), len(kvs)))
        for kv in kvs:
            f.write(kv)
        for info in infos:
            f.write(info)
        f.write(b"\0" * (-f.tell() % ALIGN))
        for ti, (name, shape, t) in enumerate(plan):
            n = int(np.prod(shape))
            pos = (ti * 1000003) % a.block if a.shift else 0  # in values; block types: whole blocks
            bv = 1 if t in (GGML_F16, GGML_F32) else BLOCK_VALUES.get(t, 32)  # tiles on whole blocks
            pos = type_bytes(pos - pos % bv, t)  # in bytes
            if t == GGML_F32 and len(shape) == 1:
                f.write(ones[:n].tobytes())
                nb = 4 * n
            else:
                block = blocks[t]
                left = nb = type_bytes(n, t)
                while left:  # whole blocks: the block's byte size and every tensor's are multiples of one
                    m = min(left, len(block) - pos)
                    f.write(block[pos:pos + m])
                    pos = 0
                    left -= m
            f.write(b"\0" * (-nb % ALIGN))
    os.replace(tmp, a.out)
    n_params = sum(int(np.prod(sh)) for _, sh, _ in plan)
    tensor_bytes = sum(tensor_nbytes(sh, t) for _, sh, t in plan)
    print(f"{a.out}: {a.shape} {a.type}, vocab {vocab}, {n_params / 1e9:.3f} B parameters, "
          f"{os.path.getsize(a.out) / 1e9:.2f} GB, tensor bytes {tensor_bytes}")


if __name__ == "__main__":
    main()
