"""Each family flashgen runs = Hugging Face transformers, fp32, on the CPU (issue 12).

tools/gen_arch_golden.py builds tiny random checkpoints (Qwen2 with q/k/v biases and yarn RoPE,
Qwen2 with use_sliding_window / max_window_layers and yarn's betas and attention_factor set, Mistral with a sliding window shorter than every sequence and an explicit head_dim, Gemma 3 with
local + global layers and all its switches) from fixed seeds with numpy + safetensors, and keeps
the logits transformers computed for them in tests/golden/arch_logits.npz. Here the same
checkpoints are rebuilt (no torch) and tools/engine_check runs them on the CPU, prefilling each
sequence up to the first compared position and decoding the rest with the sequence's own tokens
(--force), so both the prefill and the decode path are compared, to 1e-4 of the logits' scale.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("safetensors")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, os.environ.get("FLASHGEN_BUILD", "build"))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import gen_arch_golden as gag  # noqa: E402

GOLDEN = np.load(os.path.join(ROOT, "tests", "golden", "arch_logits.npz"))
RTOL = 1e-4


def run_family(tmp_path, fam, edit=None, gguf_file=False):
    cfg = json.loads(json.dumps(gag.FAMILIES[fam]))
    if edit:  # change the config the checkpoint is made with
        edit(cfg)
    d = gag.build(str(tmp_path / fam), fam, cfg)
    if gguf_file:
        d = gag.write_gguf(str(tmp_path / f"{fam}.gguf"), fam, cfg)
    return engine_logits(tmp_path, d)


def engine_logits(tmp_path, d):
    """tools/engine_check's CPU logits (sequence, STEPS, vocab) for the model at D."""
    n0 = [len(s) - gag.STEPS + 1 for s in gag.SEQUENCES]
    (tmp_path / "prompts.txt").write_text(
        "".join(" ".join(map(str, s[:n])) + "\n" for s, n in zip(gag.SEQUENCES, n0)))
    (tmp_path / "force.txt").write_text(
        "".join(" ".join(map(str, s[n:])) + "\n" for s, n in zip(gag.SEQUENCES, n0)))
    out = str(tmp_path / "out")
    cmd = [os.path.join(BUILD, "tools", "engine_check"), "--model", d, "--device", "cpu",
           "--prompts", str(tmp_path / "prompts.txt"), "--force", str(tmp_path / "force.txt"),
           "--steps", str(gag.STEPS), "--out", out]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    x = np.fromfile(out + ".logits", dtype="<f4")
    return x.reshape(len(gag.SEQUENCES), gag.STEPS, gag.VOCAB)


@pytest.mark.parametrize("fam", list(gag.FAMILIES))
def test_cpu_logits_match_transformers(tmp_path, fam):
    ours, ref = run_family(tmp_path, fam), GOLDEN[fam]
    assert ref.shape == ours.shape
    scale = np.abs(ref).max()
    err = np.abs(ours - ref).max()
    assert err <= RTOL * scale, f"{fam}: max |ours - transformers| {err:.3g} > {RTOL} * {scale:.3g}"
    # every compared position's greedy pick agrees too
    assert (ours.argmax(-1) == ref.argmax(-1)).all()


def test_golden_sequences_outrun_the_windows():
    """The sliding windows are shorter than every compared context, so a forward pass that
    ignored them (or applied them to Gemma's global layers) could not match."""
    for fam, cfg in gag.FAMILIES.items():
        w = cfg.get("sliding_window")
        if w:
            assert all(len(s) > w + 1 for s in gag.SEQUENCES), fam
            assert any(len(s) - gag.STEPS + 1 > w for s in gag.SEQUENCES), fam
    assert gag.FAMILIES["gemma3"]["num_hidden_layers"] > gag.FAMILIES["gemma3"][
        "sliding_window_pattern"]


@pytest.mark.parametrize("fam,edit", [
    ("mistral", lambda c: c.update(sliding_window=None)),
    ("gemma3", lambda c: c.update(sliding_window_pattern=1)),  # every layer global
    ("gemma3", lambda c: c.update(query_pre_attn_scalar=32)),
    ("gemma3", lambda c: c.update(final_logit_softcapping=None)),
    ("qwen2", lambda c: c.update(rope_scaling=None)),
    ("qwen2_swa", lambda c: c.update(use_sliding_window=False)),
    ("qwen2_swa", lambda c: c.update(max_window_layers=0)),  # layer 0 local too
    ("qwen2_swa", lambda c: c["rope_scaling"].pop("attention_factor")),
    ("qwen2_swa", lambda c: c["rope_scaling"].update(beta_fast=32.0, beta_slow=1.0)),
])
def test_each_switch_matters(tmp_path, fam, edit):
    """The comparison can fail: the same weights with one switch turned the other way give
    logits far outside the tolerance."""
    ours, ref = run_family(tmp_path, fam, edit), GOLDEN[fam]
    assert np.abs(ours - ref).max() > 100 * RTOL * np.abs(ref).max()


# What a GGUF file can say: Gemma 3's query scale is llama.cpp's fixed 1/sqrt(head_dim), and a
# qwen2 file has no sliding window (llama.cpp's qwen2 reads none). Yarn is there, in the
# {arch}.rope.scaling.* keys convert_hf_to_gguf writes (type, factor, original_context_length,
# yarn_beta_fast / yarn_beta_slow / yarn_attn_factor when the checkpoint sets them).
GGUF_EDITS = {
    "qwen2": lambda c: None,
    "qwen2_swa": lambda c: c.update(use_sliding_window=False),
    "gemma3": lambda c: c.update(query_pre_attn_scalar=c["head_dim"]),
}


@pytest.mark.parametrize("fam", list(GGUF_EDITS))
def test_gguf_file_runs_like_its_hf_checkpoint(tmp_path, fam):
    """The GGUF loader's qwen2 / gemma3 paths (tensor names, no Q/K permutation, Gemma's stored
    1 + w norms, gemma3.* keys, llama.cpp's fixed Gemma values) give the same model as the HF
    loader, which the tests above hold to transformers."""
    pytest.importorskip("gguf")
    hf = run_family(tmp_path / "hf", fam, GGUF_EDITS[fam])
    gg = run_family(tmp_path / "gguf", fam, GGUF_EDITS[fam], gguf_file=True)
    assert np.isfinite(hf).all() and hf.std() > 0
    err = np.abs(hf - gg).max()
    assert err <= 1e-5 * np.abs(hf).max(), f"{fam}: GGUF vs HF max diff {err:.3g}"


def yarn_mscale(s, m=1.0):
    return 1.0 if s <= 1 else 0.1 * m * np.log(s) + 1.0


@pytest.mark.parametrize("key,val,attention_factor", [
    # yarn_log_multiplier = mscale_all_dim, llama.cpp taking mscale = 1
    ("yarn_log_multiplier", 0.5, yarn_mscale(4.0) / yarn_mscale(4.0, 0.5)),
    # attn_factor multiplies the default magnitude 0.1 ln(factor) + 1
    ("attn_factor", 1.1, 1.1 * yarn_mscale(4.0)),
])
def test_gguf_yarn_attention_factor_keys(tmp_path, key, val, attention_factor):
    """The two llama.cpp keys that change yarn's cos/sin magnitude without a transformers field:
    the GGUF runs like the HF checkpoint given the attention_factor llama.cpp derives from them."""
    pytest.importorskip("gguf")
    cfg = json.loads(json.dumps(gag.FAMILIES["qwen2"]))
    d = gag.write_gguf(str(tmp_path / "q.gguf"), "qwen2", cfg, extra=lambda w: w.add_float32(
        f"qwen2.rope.scaling.{key}", val))
    gg = engine_logits(tmp_path, d)
    cfg["rope_scaling"]["attention_factor"] = float(attention_factor)
    hf = engine_logits(tmp_path, gag.build(str(tmp_path / "hf"), "qwen2", cfg))
    plain = GOLDEN["qwen2"]  # the same weights with the default factor: must differ
    assert np.abs(hf - gg).max() <= 1e-5 * np.abs(hf).max()
    assert np.abs(hf - plain).max() > 100 * RTOL * np.abs(plain).max()


def test_gguf_yarn_ext_factor_other_than_one_is_refused(tmp_path):
    """yarn_ext_factor (convert_hf_to_gguf writes it from an 'extrapolation_factor') scales the
    ramp in llama.cpp; only 1 is implemented, so another value is an error naming the key."""
    pytest.importorskip("gguf")
    cfg = json.loads(json.dumps(gag.FAMILIES["qwen2"]))
    cfg["rope_scaling"]["extrapolation_factor"] = 0.5
    path = gag.write_gguf(str(tmp_path / "q.gguf"), "qwen2", cfg)
    (tmp_path / "p.txt").write_text("1 2 3\n")
    r = subprocess.run([os.path.join(BUILD, "tools", "engine_check"), "--model", path, "--device",
                        "cpu", "--prompts", str(tmp_path / "p.txt"), "--steps", "1", "--out",
                        str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert "qwen2.rope.scaling.yarn_ext_factor' = 0.5 is not supported" in r.stderr, r.stderr


def test_gemma3_multimodal_checkpoint_runs_its_text_model(tmp_path):
    """Gemma3ForConditionalGeneration: config under text_config, text weights under
    model.language_model. (transformers 5's layout); the vision tower is not read."""
    from safetensors.numpy import load_file, save_file
    d = gag.build(str(tmp_path / "gemma3"), "gemma3")
    st = os.path.join(d, "model.safetensors")
    w = {k.replace("model.", "model.language_model.", 1): v for k, v in load_file(st).items()}
    w["model.vision_tower.vision_model.post_layernorm.weight"] = np.ones(8, np.float32)
    save_file(w, st)
    text = dict(gag.FAMILIES["gemma3"])
    for k in ("architectures", "torch_dtype"):
        text.pop(k)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump({"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
                   "text_config": text, "vision_config": {"hidden_size": 8}}, f)
    ours = engine_logits(tmp_path, d)
    ref = GOLDEN["gemma3"]
    assert np.abs(ours - ref).max() <= RTOL * np.abs(ref).max()
