"""tools/make_random_gguf.py (the benchmarks' random models): its block quantizer writes the bytes
the `gguf` package's quantizer writes, and each --type gives a file that `gguf` reads with the
right tensor types and that flashgen loads and runs."""
import os
import subprocess
import sys

import gguf
import numpy as np
import pytest
from gguf.quants import dequantize, quantize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import make_random_gguf as mrg  # noqa: E402

TOKENIZER = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
GT = gguf.GGMLQuantizationType
BLOCK_TYPES = {"q8_0": (mrg.GGML_Q8_0, GT.Q8_0), "q4_0": (mrg.GGML_Q4_0, GT.Q4_0),
               "q4_1": (mrg.GGML_Q4_1, GT.Q4_1), "q5_0": (mrg.GGML_Q5_0, GT.Q5_0),
               "q5_1": (mrg.GGML_Q5_1, GT.Q5_1)}


@pytest.mark.parametrize("name", sorted(BLOCK_TYPES))
def test_blocks_equal_gguf_quantizer(name):
    ours_t, theirs_t = BLOCK_TYPES[name]
    rng = np.random.RandomState(7)
    x = rng.standard_normal(1 << 15) * 0.02
    x[:32] = 0.0  # an all-zero block: d = 0 must not divide by zero
    x[32:64] = 0.5  # a constant block (Q4_1 / Q5_1: max = min)
    x[64:96] = -0.5  # Q4_0 / Q5_0: the largest magnitude negative (d > 0, q = 0 for it)
    ours = np.frombuffer(mrg.quantize_blocks(x, ours_t), np.uint8)
    theirs = quantize(x.astype(np.float32).reshape(-1, 1024), theirs_t).reshape(-1)
    assert ours.size == theirs.size
    assert np.array_equal(ours, theirs), f"{np.count_nonzero(ours != theirs)} bytes differ"


@pytest.mark.parametrize("kind", ["f16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1"])
def test_file_reads_and_runs(tmp_path, kind):
    out = str(tmp_path / f"tiny_{kind}.gguf")
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_random_gguf.py"), "--shape", "tiny",
                    "--tokenizer", TOKENIZER, "--out", out, "--type", kind], check=True,
                   capture_output=True)
    want = mrg.TYPES[kind][0]
    r = gguf.GGUFReader(out)
    for t in r.tensors:
        expect = mrg.GGML_F32 if len(t.shape) == 1 else want
        assert int(t.tensor_type) == expect, t.name
    gate = next(t for t in r.tensors if t.name == "blk.0.ffn_gate.weight")
    values = np.random.RandomState(1234).standard_normal(1 << 22) * 0.02  # the tool's draw
    w = dequantize(gate.data, gate.tensor_type).reshape(-1)
    # a step of each grid at std 0.02 (Q5_x: half Q4_x's, 31 steps for 15)
    tol = {"f16": 1e-4, "q8_0": 2e-3, "q4_0": 8e-3, "q4_1": 6e-3, "q5_0": 4e-3, "q5_1": 3e-3}[kind]
    assert np.abs(w - values[:w.size]).max() < tol
    run = subprocess.run([os.path.join(ROOT, os.environ.get("FLASHGEN_BUILD", "build"), "flashgen"), "generate", "--model", out, "--prompt",
                          "hello", "--max-new-tokens", "3", "--ignore-eos"], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip()


def test_tied_leaves_the_head_out_and_counts_the_bytes(tmp_path):
    """--tied (check_qengine's SmolLM2-shape models): no output.weight, flashgen runs it, and the
    tensor bytes the tool prints are gguf's."""
    out = str(tmp_path / "tiny_tied.gguf")
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_random_gguf.py"), "--shape", "tiny",
                        "--tokenizer", TOKENIZER, "--out", out, "--type", "q4_0", "--tied"], check=True,
                       capture_output=True, text=True)
    reader = gguf.GGUFReader(out)
    names = {t.name for t in reader.tensors}
    assert "output.weight" not in names and "token_embd.weight" in names
    want = sum(int(t.n_bytes) for t in reader.tensors)
    plan = mrg.tensor_plan(mrg.SHAPES["tiny"], 49152, mrg.GGML_Q4_0, tied=True)
    assert sum(mrg.tensor_nbytes(sh, t) for _, sh, t in plan) == want
    assert f"tensor bytes {want}" in r.stdout
    run = subprocess.run([os.path.join(ROOT, os.environ.get("FLASHGEN_BUILD", "build"), "flashgen"), "generate",
                          "--model", out, "--prompt", "hello", "--max-new-tokens", "3", "--ignore-eos"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr


@pytest.mark.parametrize("five", [False, True])
def test_kquant_blocks_are_the_drawn_values(five):
    """kquant_blocks' Q4_K (five: Q5_K) bytes, read by gguf-py, are the scales, mins and quants it
    drew (the same RandomState draws, in its order), centred with about the asked std."""
    n, std = 256 * 64, 0.02
    bs, qt = (176, GT.Q5_K) if five else (144, GT.Q4_K)
    raw = np.frombuffer(mrg.kquant_blocks(np.random.RandomState(5), n, std, five=five), np.uint8)
    assert raw.size == n // 256 * bs
    got = dequantize(raw.reshape(-1, bs), qt).reshape(-1, 8, 32)
    rng = np.random.RandomState(5)
    nb = n // 256
    sc = rng.randint(0, 64, (nb, 8))
    m = np.clip(sc + rng.randint(-3, 4, (nb, 8)), 0, 63)
    q = rng.randint(0, 32 if five else 16, (nb, 4, 2, 32)).reshape(nb, 8, 32)  # sub-block 2c + h
    d = (std / (341.0 if five else 170.0) * rng.uniform(0.5, 1.5, nb)).astype(np.float16)
    d = d.astype(np.float32)
    dmin = (d * (15.5 if five else 7.5)).astype(np.float16).astype(np.float32)
    want = ((d[:, None] * sc.astype(np.float32))[:, :, None] * q.astype(np.float32)
            - (dmin[:, None] * m.astype(np.float32))[:, :, None])
    assert np.array_equal(got, want.astype(np.float32))
    assert abs(float(got.mean())) < 0.05 * std and 0.8 * std < float(got.std()) < 1.2 * std


@pytest.mark.parametrize("kind", ["q3_k", "q2_k"])
def test_k23_blocks_bytes(kind):
    """k23_blocks' Q3_K / Q2_K bytes, read by gguf-py, are the RandomState's bytes with only d (Q2_K:
    and dmin = fp16(1.5 d)) set, centred with about the asked std."""
    n, std = 256 * 256, 0.02
    t, _, bs = mrg.TYPES[kind]
    raw = np.frombuffer(mrg.k23_blocks(np.random.RandomState(5), n, std, t), np.uint8).reshape(-1, bs)
    assert raw.shape[0] == n // 256
    rng = np.random.RandomState(5)
    want = rng.randint(0, 256, (n // 256, bs)).astype(np.uint8)
    dpos = 108 if kind == "q3_k" else 80
    assert np.array_equal(raw[:, :dpos], want[:, :dpos])
    d = raw[:, dpos:dpos + 2].copy().view(np.float16)[:, 0].astype(np.float32)
    if kind == "q2_k":
        assert np.array_equal(raw[:, 82:84].copy().view(np.float16)[:, 0], (d * 1.5).astype(np.float16))
    got = dequantize(raw, GT.Q3_K if kind == "q3_k" else GT.Q2_K)
    assert abs(float(got.mean())) < 0.05 * std and 0.8 * std < float(got.std()) < 1.2 * std


@pytest.mark.parametrize("kind", ["q4_k", "q5_k", "q6_k", "q3_k", "q2_k"])
def test_kquant_file_reads_and_runs(tmp_path, kind):
    """--type q4_k / q5_k / q6_k / q3_k / q2_k on a shape whose rows are multiples of 256 (small, one layer, --shift):
    every matrix in that type, the printed tensor bytes gguf's, weights of about --std, flashgen
    runs it; a shape with other rows is refused."""
    out = str(tmp_path / f"small_{kind}.gguf")
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_random_gguf.py"), "--shape", "small",
                        "--layers", "1", "--shift", "--tokenizer", TOKENIZER, "--out", out, "--type", kind],
                       check=True, capture_output=True, text=True)
    reader = gguf.GGUFReader(out)
    want = mrg.TYPES[kind][0]
    for t in reader.tensors:
        assert int(t.tensor_type) == (mrg.GGML_F32 if len(t.shape) == 1 else want), t.name
    assert f"tensor bytes {sum(int(t.n_bytes) for t in reader.tensors)}" in r.stdout
    gate = next(t for t in reader.tensors if t.name == "blk.0.ffn_gate.weight")
    w = dequantize(gate.data, gate.tensor_type)
    assert 0.016 < float(w.std()) < 0.024 and abs(float(w.mean())) < 1e-3
    run = subprocess.run([os.path.join(ROOT, os.environ.get("FLASHGEN_BUILD", "build"), "flashgen"), "generate",
                          "--model", out, "--prompt", "hello", "--max-new-tokens", "3", "--ignore-eos"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    bad = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_random_gguf.py"), "--shape", "tiny",
                          "--tokenizer", TOKENIZER, "--out", str(tmp_path / "tiny.gguf"), "--type", kind],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "multiple of 256" in bad.stderr
    assert not os.path.exists(tmp_path / "tiny.gguf")


def test_q4_k_m_mix(tmp_path):
    """--type q4_k_m: llama.cpp's Q4_K_M mix on the small shape (4 layers): Q4_K everywhere but the
    head and, in layers 2 and 3 (use_more_bits of 4 layers: the last eighth and every third),
    attn_v and ffn_down in Q6_K; general.file_type 15 (MOSTLY_Q4_K_M); the printed tensor bytes
    gguf's; flashgen runs it."""
    out = str(tmp_path / "small_q4_k_m.gguf")
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_random_gguf.py"), "--shape", "small",
                        "--tokenizer", TOKENIZER, "--out", out, "--type", "q4_k_m"],
                       check=True, capture_output=True, text=True)
    reader = gguf.GGUFReader(out)
    assert int(reader.fields["general.file_type"].contents()) == 15
    six = {"output.weight"} | {f"blk.{i}.{n}.weight" for i in (2, 3) for n in ("attn_v", "ffn_down")}
    for t in reader.tensors:
        want = mrg.GGML_F32 if len(t.shape) == 1 else mrg.GGML_Q6_K if t.name in six else mrg.GGML_Q4_K
        assert int(t.tensor_type) == want, t.name
    assert f"tensor bytes {sum(int(t.n_bytes) for t in reader.tensors)}" in r.stdout
    run = subprocess.run([os.path.join(ROOT, os.environ.get("FLASHGEN_BUILD", "build"), "flashgen"), "generate",
                          "--model", out, "--prompt", "hello", "--max-new-tokens", "3", "--ignore-eos"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
