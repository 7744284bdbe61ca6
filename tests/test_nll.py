"""bench/nll.py (issue 13's perplexity-style check, kernels/BENCH.md's FP8 accuracy table) on the
CPU at a small size: its mean NLL is the one numpy computes from the logits tools/engine_check
writes for the same teacher-forced tokens, the first run is the baseline of the others' column,
and a Gemma file's text starts with its BOS (tokenizer.ggml.add_bos_token) while SmolLM2's does
not."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("gguf")
pytest.importorskip("tokenizers")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, os.environ.get("FLASHGEN_BUILD", "build"))
SMOLLM2 = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
GEMMA = os.path.join(ROOT, "models", "gemma-3-270m-q4_k_m.gguf")
sys.path.insert(0, os.path.join(ROOT, "bench"))
import nll  # noqa: E402


def run_nll(*args):
    p = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "nll.py"), "--engine-check",
                        os.path.join(BUILD, "tools", "engine_check"), *args],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    rows = re.findall(r"^(\S+)\s+(\S+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([+-][\d.]+)$", p.stdout, re.M)
    return {r[0]: (int(r[2]), float(r[3]), float(r[4]), float(r[5])) for r in rows}


def test_nll_matches_numpy_on_engine_check_logits(tmp_path):
    rows = run_nll("--tokens", "24", "--run", f"blocks,cpu,{SMOLLM2}",
                   "--run", f"fp32,cpu,{SMOLLM2},FLASHGEN_CPU_WEIGHTS=fp32")
    assert set(rows) == {"blocks", "fp32"}
    (n, base, ppl, d0), (n2, other, _, d1) = rows["blocks"], rows["fp32"]
    assert n == n2 == 24 and d0 == 0.0
    assert abs(ppl - np.exp(base)) < 1e-3 * ppl
    assert abs(d1 - (other - base)) < 2e-4
    # the oracle: the same 25 tokens through engine_check directly, -log softmax by hand
    with open(os.path.join(ROOT, "bench", "data", "nll_text.txt")) as f:
        ids = nll.tokenize(SMOLLM2, f.read())[:25]
    (tmp_path / "p.txt").write_text(f"{ids[0]}\n")
    (tmp_path / "f.txt").write_text(" ".join(map(str, ids[1:])) + "\n")
    subprocess.run([os.path.join(BUILD, "tools", "engine_check"), "--model", SMOLLM2, "--device",
                    "cpu", "--prompts", str(tmp_path / "p.txt"), "--steps", "24", "--out",
                    str(tmp_path / "o"), "--force", str(tmp_path / "f.txt"), "--max-tokens", "64"],
                   check=True, capture_output=True, timeout=300)
    lg = np.fromfile(str(tmp_path / "o.logits"), np.float32).reshape(24, -1).astype(np.float64)
    m = lg.max(-1)
    lse = m + np.log(np.exp(lg - m[:, None]).sum(-1))
    want = float(np.mean(lse - lg[np.arange(24), ids[1:]]))
    assert abs(want - base) < 1e-4, (want, base)
    assert 1.0 < base < 8.0  # a real model on English text, not noise (ln 49152 = 10.8)


def test_bos_where_the_file_asks_for_it():
    text = "The weights are read once per step."
    smol, gemma = nll.tokenize(SMOLLM2, text), nll.tokenize(GEMMA, text)
    assert smol[0] != 1  # SmolLM2: add_bos_token false
    assert gemma[0] == 2 and gemma[1] != 2  # Gemma 3: <bos> (id 2) first, then the text
