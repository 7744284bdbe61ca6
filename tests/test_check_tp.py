"""tests/gpu/check_tp.py (tensor parallelism emulated on one GPU, `make test-gpu`) run here on the
CPU backend at the tiny shape, so the script that carries the GPU proof is exercised in CI too: the
same comparisons (TP = 2 and 4 teacher-forced against TP = 1, alone and batched), fp32."""
import os
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
BUILD = os.environ.get("FLASHGEN_BUILD", "build")


def test_check_tp_passes_on_the_cpu(tmp_path):
    p = subprocess.run([sys.executable, os.path.join(ROOT, "tests/gpu/check_tp.py"),
                        "--engine-check", os.path.join(ROOT, BUILD, "tools/engine_check"),
                        "--cuda", os.path.join(ROOT, BUILD, "libflashgen_cuda.so"),
                        "--tokenizer", os.path.join(ROOT, "models/SmolLM2-135M-Instruct.Q4_1.gguf"),
                        "--shape", "tiny", "--device", "cpu", "--no-bench", "--steps", "8",
                        "--work", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "check_tp: PASS" in p.stdout
    # both shard counts ran every prompt
    assert sum(1 for l in p.stdout.splitlines() if l.strip().endswith(" ok")) == 8, p.stdout
