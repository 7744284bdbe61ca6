"""tools/bench_grammar_step (the mask-cost benchmark, bench/grammar.md) on the CPU at tiny sizes:
it runs the worker's constrained step through the CPU backend's mask op, exits 0 only when no row
picked a token its grammar refuses, prints every mode for both schemas, and the one-mask-per-state
call computes no more masks than the per-row path (equal at 1 row, fewer or equal at 3 rows of one
schema)."""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, os.environ.get("FLASHGEN_BUILD", "build"))
TOKENIZER = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
MODES = ["none", "shared", "shared, per row", "distinct", "distinct, per row", "none"]


def test_bench_grammar_step_cpu(tmp_path):
    model = tmp_path / "tiny.gguf"
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_random_gguf.py"), "--shape",
                    "tiny", "--tokenizer", TOKENIZER, "--out", str(model)], check=True,
                   capture_output=True)
    p = subprocess.run([os.path.join(BUILD, "tools", "bench_grammar_step"), "--model", str(model),
                        "--device", "cpu", "--rows", "1,3", "--steps", "6", "--context", "8",
                        "--threads", "2"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    tables = re.findall(r"^(\d+) rows, (\w+) schema.*\n.*\n((?:.+\n){6})", p.stdout, re.M)
    assert [(r, s) for r, s, _ in tables] == [("1", "bounded"), ("1", "free"), ("3", "bounded"),
                                              ("3", "free")], p.stdout
    for rows, schema, body in tables:
        lines = body.strip().split("\n")
        names = [re.match(r"(\D+?)\s+[-\d.]+\s", ln).group(1) for ln in lines]
        assert names == MODES, lines
        cols = {n + str(i): ln[len(n):].split() for i, (n, ln) in enumerate(zip(names, lines))}
        # ms/step p50 max mask fwd_mask accept states overhead docs dead refused
        for key, c in cols.items():
            assert c[-1] == "0", (rows, schema, key, c)  # refused
            assert float(c[0]) > 0
        assert float(cols["shared1"][6]) <= float(cols["shared, per row2"][6]) == float(rows)
        assert float(cols["distinct3"][6]) == float(rows)
