"""`make test-gpu` on a machine without a CUDA GPU: it must say SKIPPED and fail, before building
anything, so nothing mistakes a machine that tested nothing for a pass (tests/gpu/gpu_skip.py)."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "gpu"))
import gpu_skip  # noqa: E402


@pytest.mark.skipif(gpu_skip.why_no_gpu() is None, reason="a CUDA GPU is here: make test-gpu runs")
@pytest.mark.parametrize("target", ["test-gpu", "bench-gpu"])
def test_gpu_targets_say_skipped_and_fail_without_a_gpu(target):
    p = subprocess.run(["make", "-s", target, f"PYTHON={sys.executable}"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    out = p.stdout + p.stderr
    assert p.returncode != 0, out
    assert f"{target}: SKIPPED ({gpu_skip.why_no_gpu()}): nothing was tested" in out, out
    assert "nvcc" not in out and "libfgattn" not in out, "the gate must come before the build"


def test_skip_line_and_status():
    assert gpu_skip.SKIP_EXIT == 77
    p = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "gpu", "gpu_skip.py"), "x"],
                       capture_output=True, text=True, timeout=60)
    if gpu_skip.why_no_gpu() is None:
        assert p.returncode == 0 and p.stdout == ""
    else:
        assert p.returncode == 77 and p.stdout.startswith("x: SKIPPED ("), p.stdout
