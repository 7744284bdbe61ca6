"""tools/make_random_gguf.py's quantized files (the GPU engine check's models, issue 13): its block
writer against gguf-py's quantizer (the oracle) byte for byte, and the files it writes read back by
gguf-py with every tensor of the planned shape and type, and the planned tensor bytes."""
import os
import subprocess
import sys

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import make_random_gguf as mrg  # noqa: E402

QT = gguf.GGMLQuantizationType
CASES = [("q8_0", QT.Q8_0), ("q4_0", QT.Q4_0), ("q4_1", QT.Q4_1)]


@pytest.mark.parametrize("name,qt", CASES)
def test_blocks_equal_gguf_py(name, qt):
    rng = np.random.RandomState(3)
    x = (rng.standard_normal(32 * 777) * 0.02).astype(np.float32)
    x[:32] = 0  # an all-zero block (d = 0)
    x[32:64] = -x[32:64] * 50  # a block of large values
    ours = np.frombuffer(mrg.quantize(x, mrg.TYPES[name]), np.uint8)
    theirs = gguf.quants.quantize(x.reshape(7, -1), qt).reshape(-1)
    assert ours.size == theirs.size
    assert (ours == theirs).all(), int((ours != theirs).sum())


# gguf-py reads the 49152-token vocabulary slowly (~10 s a file): one file per type, tied once
@pytest.mark.parametrize("name,tied", [("q8_0", False), ("q4_0", True), ("q4_1", False)])
def test_file_reads_back(tmp_path, name, tied):
    tok = tmp_path / "tok.gguf"
    src = os.path.join(ROOT, "models/SmolLM2-135M-Instruct.Q4_1.gguf")
    if not os.path.exists(src):
        pytest.skip("models/ missing (make model)")
    tool = os.path.join(ROOT, "tools/make_random_gguf.py")
    subprocess.run([sys.executable, tool, "--tokenizer-only", "--tokenizer", src, "--out", str(tok)],
                   check=True, capture_output=True)
    out = tmp_path / f"m_{name}.gguf"
    r = subprocess.run([sys.executable, tool, "--shape", "tiny", "--type", name, "--tokenizer",
                        str(tok), "--out", str(out)] + (["--tied"] if tied else []),
                       check=True, capture_output=True, text=True)
    reader = gguf.GGUFReader(str(out))
    plan = mrg.tensor_plan(mrg.SHAPES["tiny"], 49152, mrg.TYPES[name], tied)
    got = {t.name: t for t in reader.tensors}
    assert sorted(got) == sorted(n for n, _, _ in plan)
    assert ("output.weight" in got) != tied
    for n, shape, t in plan:
        ten = got[n]
        assert int(ten.tensor_type) == t, n
        w = gguf.quants.dequantize(ten.data, ten.tensor_type).reshape(shape)
        if len(shape) == 2:  # N(0, 0.02) through the blocks
            assert 0.015 < float(w.std()) < 0.025 and np.isfinite(w).all(), n
    want = sum(mrg.tensor_nbytes(sh, t) for _, sh, t in plan)
    assert f"tensor bytes {want}" in r.stdout
    assert sum(int(t.n_bytes) for t in reader.tensors) == want
