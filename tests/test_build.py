"""Build hygiene, checked on what `make` produced: the CUDA backend library exports exactly its one
entry point (hidden visibility plus kernels/cuda_backend.map), while build/libfgattn.so, which the
GPU checks drive through ctypes, keeps the symbols they resolve."""
import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, os.environ.get("FLASHGEN_BUILD", "build"))


def dynamic_symbols(lib):
    out = subprocess.run(["nm", "-D", "--defined-only", lib], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    return {line.split()[-1] for line in out.splitlines() if line.strip()}


def test_cuda_backend_exports_its_entry_point_only():
    """The table's entry point, and the two tensor parallelism over NCCL looks up (model/tp.h)."""
    lib = os.path.join(BUILD, "libflashgen_cuda.so")
    if not os.path.exists(lib):
        pytest.skip(f"{lib} not built (no nvcc, or CUDA=0)")
    with open(os.path.join(ROOT, "kernels", "ops.h")) as f:
        entry = re.search(r'#define FG_CUDA_BACKEND_SYMBOL "(\w+)"', f.read()).group(1)
    with open(os.path.join(ROOT, "model", "tp.h")) as f:
        tp = set(re.findall(r'#define TP_CUDA_\w+_SYMBOL "(\w+)"', f.read()))
    assert len(tp) == 2
    syms = dynamic_symbols(lib)
    assert syms == {entry} | tp, sorted(syms)[:40]


def test_fgattn_keeps_the_symbols_the_gpu_checks_use():
    lib = os.path.join(BUILD, "libfgattn.so")
    if not os.path.exists(lib):
        pytest.skip(f"{lib} not built (make {os.path.relpath(lib, ROOT)})")
    syms = dynamic_symbols(lib)
    for name in ("sample_ref_pick", "fg_sample_launch", "attn_select", "attn_ref_lse",
                 "kv_write_launch", "fg_gemv_pick"):
        assert name in syms, name
