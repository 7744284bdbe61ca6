"""FP8 checkpoints in the compressed-tensors and AutoFP8 safetensors layouts run like their
weights dequantized in numpy and stored as F32 (issue 13).

tools/make_tiny_models.py writes, for the tiny untied Llama (GQA 4) and the tied one (GQA 1),
FP8 checkpoints whose Linear weights are F8_E4M3 codes with their weight_scale (per tensor with
static input_scale and an FP8 kv_cache_scheme; per channel in BF16 with dynamic activations; the
AutoFP8 "fp8" form with scalar scales), the other tensors in BF16 / F16, and beside each the same
model as F32: the codes decoded in numpy (from the e4m3 definition, not our decoder) times their
scale in float32. Greedy runs through the engine on the CPU must give the same tokens and
byte-identical logits at every step, one by one and batched: a wrong code, scale, row or ignored
tensor shows up as a different logit. The load log says what was found.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("safetensors")
pytest.importorskip("gguf")  # make_tiny_models.py writes its GGUF files too

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, os.environ.get("FLASHGEN_BUILD", "build"))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import make_tiny_models as mtm  # noqa: E402

STEPS = 6
CASES = [(m, f) for m, cfg in mtm.MODELS.items() for f in cfg.get("fp8", [])]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("fp8")
    mtm.build(str(d), 4321)
    vocab = len(mtm.tiny_vocab()[0])
    rng = np.random.RandomState(7)
    lines = [" ".join(str(t) for t in rng.randint(3, vocab, size=n)) for n in (1, 5, 12)]
    (d / "prompts.txt").write_text("\n".join(lines) + "\n")
    return d


def engine_check(models, model, form):
    out = str(models / f"{model}.{form}")
    r = subprocess.run([os.path.join(BUILD, "tools", "engine_check"), "--model",
                        str(models / model / form), "--device", "cpu", "--prompts",
                        str(models / "prompts.txt"), "--steps", str(STEPS), "--out", out,
                        "--also-batch"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    with open(out + ".logits", "rb") as f, open(out + ".tok") as t, \
            open(out + "_batch.tok") as b:
        return f.read(), t.read(), b.read(), r.stderr


@pytest.mark.parametrize("model,form", CASES)
def test_fp8_checkpoint_runs_like_numpy_dequantized_f32(models, model, form):
    logits, toks, btoks, log = engine_check(models, model, form)
    ref_logits, ref_toks, ref_btoks, ref_log = engine_check(models, model, form + "_deq")
    x = np.frombuffer(logits, dtype="<f4")
    assert x.size == 3 * STEPS * len(mtm.tiny_vocab()[0])
    assert np.isfinite(x).all() and x.std() > 0
    assert toks == ref_toks and btoks == ref_btoks
    assert logits == ref_logits, f"{model} {form}: logits differ from the numpy-dequantized F32"
    spec = mtm.FP8_FORMS[form]
    line = next(l for l in log.splitlines() if "fp8 checkpoint" in l)
    how = "per-channel" if spec["scale"] == "channel" else "per-tensor"
    assert f"{how} {spec['scale_dtype']} weight scales" in line, line
    assert "e4m3 weights dequantized to fp32 on load" in line, line
    assert ("static input_scale values were checked" in line) == spec["input_scale"], line
    assert ("k_scale / v_scale are not used" in line) == spec["kv"], line
    assert "fp8 checkpoint" not in ref_log


def test_e4m3_codec_is_the_format():
    """The writer's own codec, the oracle's half: decode = the e4m3 definition at the corners,
    encode(decode(c)) = c for every finite code, ties to the even code."""
    codes = np.arange(256, dtype=np.uint8)
    v = mtm.e4m3_decode(codes)
    assert v[0x7E] == 448 and v[0xFE] == -448 and v[0x01] == 2.0 ** -9 and v[0x08] == 2.0 ** -6
    assert v[0x38] == 1 and v[0x39] == 1.125 and np.isnan(v[[0x7F, 0xFF]]).all()
    assert np.signbit(v[0x80]) and v[0x80] == 0
    finite = ~np.isnan(v)
    assert (mtm.e4m3_encode(v[finite]) == codes[finite]).all()
    assert mtm.e4m3_encode(np.float32([1.0625, 1.1875, 500.0, -1e9]))[:4].tolist() == \
        [0x38, 0x3A, 0x7E, 0xFE]
