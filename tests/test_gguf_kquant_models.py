"""Mixed K-quant GGUF models (the mixes llama.cpp's quantizer writes) load and run like their
weights dequantized by the `gguf` package and stored as F32 (issue 12, "Formats").

tools/make_kquant_models.py writes, per mix (Q4_K_M, Q5_K_M, Q6_K, Q3_K_M, Q2_K), a tiny random
Llama in that mix of types (K-quants with their Q5_0/Q5_1/Q8_0/Q4_0 fallbacks) and the same
weights as gguf.quants.dequantize gives them, in F32. The loader's fp32 weights of the two must be
the same bits, so greedy runs on the CPU give byte-identical logits at every step (a wrong nibble,
scale or Q/K row shows up as a different logit); the load log names the dequantized types.
"""
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("gguf")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, os.environ.get("FLASHGEN_BUILD", "build"))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import make_kquant_models as mk  # noqa: E402

# token ids (engine_check reads ids, not words) of the tiny byte-level vocabulary (282 ids)
PROMPTS = ["104 101 108 108 111 32 119", "116 104 101 32 99 97 116 32 115 97 116 32 49 50",
           "260 105 110 32 275 98 101 103"]
STEPS = 8


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("kquant")
    mk.build(str(d), 12)
    (d / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    return d


def engine_check(models, name, fp32=True):
    """FP32: the CPU dequantizes the blocks at load (FLASHGEN_CPU_WEIGHTS=fp32), the path that
    must equal the gguf-dequantized F32 file bit for bit; else it multiplies the blocks."""
    out = str(models / name) + ("" if fp32 else ".blocks")  # PREFIX.logits, PREFIX.tok
    env = dict(os.environ, FLASHGEN_CPU_WEIGHTS="fp32" if fp32 else "blocks")
    r = subprocess.run([os.path.join(BUILD, "tools", "engine_check"), "--model",
                        str(models / f"{name}.gguf"), "--device", "cpu", "--prompts",
                        str(models / "prompts.txt"), "--steps", str(STEPS), "--out", out],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    with open(out + ".logits", "rb") as f, open(out + ".tok") as t:
        return f.read(), t.read(), r.stderr


@pytest.mark.parametrize("mix", list(mk.MIXES))
def test_mixed_file_runs_like_gguf_dequantized_f32(models, mix):
    logits, toks, log = engine_check(models, mix)
    ref_logits, ref_toks, ref_log = engine_check(models, f"{mix}.F32")
    x = np.frombuffer(logits, dtype="<f4")
    assert x.size == len(PROMPTS) * STEPS * len(mk.tiny_vocab()[0])
    assert np.isfinite(x).all() and x.std() > 0
    assert toks == ref_toks
    assert logits == ref_logits, f"{mix}: logits differ from the gguf-dequantized F32 file"
    types = {qt.name for _, _, qt in mk.tensor_types(mix).values()}
    line = next(l for l in log.splitlines() if "dequantized to fp32 at load" in l)
    assert set(line.split(": ")[2].split(" tensors")[0].split(", ")) == types, line
    assert "dequantized" not in ref_log  # an all-F32 file has nothing to say


@pytest.mark.parametrize("mix", list(mk.MIXES))
def test_mixed_file_runs_in_its_blocks_close_to_f32(models, mix):
    """The block path (kernels/cpu_quant.c, 8-bit activations per block) on the same mixes: the
    types with a block product stay in blocks (the log says which), and each prompt's first-step
    logits stay within 12% (relative L2) of the F32 file's. The bound: quantizing activations
    to 8 bits per block (per 256 for the K-quants) measured 0.6-0.8% for Q4_K_M, Q5_K_M and Q2_K,
    2.7-4.0% for Q3_K_M and 4.8-6.2% for the all-Q6_K mix (2026-12-02, with Q2_K/Q3_K in blocks
    too; the 256-blocks carry the coarsest activation scales); a wrong nibble, scale or row moves
    them by tens of percent."""
    logits, _, log = engine_check(models, mix, fp32=False)
    ref_logits, _, _ = engine_check(models, f"{mix}.F32")
    x = np.frombuffer(logits, dtype="<f4").reshape(len(PROMPTS) * STEPS, -1)
    ref = np.frombuffer(ref_logits, dtype="<f4").reshape(x.shape)
    assert np.isfinite(x).all()
    # teacher forcing is not available, so compare only each prompt's first step
    for p in range(len(PROMPTS)):
        a, b = x[p * STEPS], ref[p * STEPS]
        err = np.linalg.norm(a - b) / np.linalg.norm(b)
        assert err < 0.12, f"{mix} prompt {p}: relative logit error {err:.3g}"
    line = next(l for l in log.splitlines() if "kept in their blocks" in l)
    kept = {qt.name for _, _, qt in mk.tensor_types(mix).values()}  # every type has a product
    assert set(line.split(": ")[2].split(" tensors")[0].split(", ")) == kept, line


def test_mixes_cover_every_storage_type():
    seen = {qt.name for mix in mk.MIXES for _, _, qt in mk.tensor_types(mix).values()}
    assert seen == {"Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q4_0", "Q5_0", "Q5_1", "Q8_0"}


def test_generate_names_the_types_once(models):
    r = subprocess.run([os.path.join(BUILD, "flashgen"), "generate", "--model",
                        str(models / "Q4_K_M.gguf"), "--prompt", "hello", "--max-new-tokens", "4",
                        "--device", "cpu", "--print-ids"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    lines = [l for l in r.stderr.splitlines() if "MB of weights resident" in l]
    assert len(lines) == 1, r.stderr
    assert "Q4_K.gguf" not in lines[0] and "Q4_K_M.gguf" in lines[0]
    assert "tensors kept in their blocks" in lines[0], lines[0]


def tensor_type_offset(data, name):
    """Byte offset of NAME's ggml type field in a GGUF image (after its name, n_dims and ne)."""
    key = struct.pack("<Q", len(name)) + name.encode()
    at = data.index(key) + len(key)
    n_dims = struct.unpack_from("<I", data, at)[0]
    return at + 4 + 8 * n_dims


def generate_error(path):
    r = subprocess.run([os.path.join(BUILD, "flashgen"), "generate", "--model", str(path),
                        "--prompt", "hi", "--max-new-tokens", "1", "--device", "cpu"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0, r.stderr
    return r.stderr


def test_bad_tensors_are_named(models, tmp_path):
    data = bytearray((models / "Q4_K_M.gguf").read_bytes())
    name = "blk.1.ffn_gate.weight"
    at = tensor_type_offset(data, name)
    assert struct.unpack_from("<I", data, at)[0] == 12  # Q4_K
    bad = tmp_path / "iq4_xs.gguf"  # a known type (IQ4_XS: 136 bytes per 256) we cannot read
    bad.write_bytes(bytes(data[:at]) + struct.pack("<I", 23) + bytes(data[at + 4:]))
    err = generate_error(bad)
    assert str(bad) in err and f"tensor '{name}' has type IQ4_XS" in err, err
    assert "Q4_K" in err and "Q6_K" in err, err  # the supported list
    bad = tmp_path / "unknown.gguf"
    bad.write_bytes(bytes(data[:at]) + struct.pack("<I", 99) + bytes(data[at + 4:]))
    err = generate_error(bad)
    assert str(bad) in err and f"tensor '{name}' has unknown ggml type id 99" in err, err
    bad = tmp_path / "truncated.gguf"  # the last tensor in the file cut short
    bad.write_bytes(bytes(data[:-100]))
    err = generate_error(bad)
    assert str(bad) in err and "runs past the end of the file" in err and "tensor '" in err, err


def test_gemma3_file_loads_and_generates():
    """The real Q4_K_M file (F32, Q5_0, Q4_K, Q6_K, Q8_0 tensors, architecture gemma3) loads and
    generates (it used to be refused for its architecture); tests/unit/test_golden.c holds its
    tokens to transformers. Uses the file tests/test_gguf_quant.py fetches."""
    path = os.environ.get("FLASHGEN_GEMMA_GGUF",
                          os.path.join(ROOT, "models", "gemma-3-270m-q4_k_m.gguf"))
    if not os.path.exists(path):
        pytest.skip(f"{path} not fetched (tools/fetch_model.py --gemma)")
    r = subprocess.run([os.path.join(BUILD, "flashgen"), "generate", "--model", path, "--prompt",
                        "The capital of France is", "--max-new-tokens", "4", "--device", "cpu"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip(), r.stderr
    assert "Q4_K" in r.stderr and "Q6_K" in r.stderr  # the load log names the dequantized types
