#!/usr/bin/env python3
"""fp8_requant_sim.py — what `--quantization fp8` does to an FP8 checkpoint's weights, in numpy.

An FP8 checkpoint is dequantized at load (model/fp8_ckpt.c: W = e4m3(q) * weight_scale in fp32);
on the GPU the engine rounds W to bf16 and the FP8 path re-quantizes each output row with its own
scale, s_r = amax_r / 448, q' = e4m3_rn_satfinite(W_r / s_r) (kernels/fp8.h). This script follows
those steps on a random weight (0.02 * N(0, 1), 0.1% outliers x20, as a Linear of an 8B model
looks) written as a per-channel (BF16 scales) and a per-tensor (F32 scale) checkpoint, and prints
how many of the checkpoint's codes survive and the relative L2 error of the GPU's weights against
the checkpoint's values. A simulation of the format, not a GPU run.

Usage: python3 tools/fp8_requant_sim.py [--rows 512] [--cols 2048]. Needs numpy, ml_dtypes
(its float8_e4m3fn / bfloat16 casts round to nearest even, as torch's and our kernels do).
"""
import argparse
import os
import sys

import numpy as np
import ml_dtypes

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_tiny_models as mtm  # noqa: E402


def gpu_requant(w32):
    """fp32 host weight -> the GPU's bf16 copy and its per-row e4m3 copy (codes, scales)."""
    b = w32.astype(ml_dtypes.bfloat16).astype(np.float32)
    amax = np.abs(b).max(axis=1, keepdims=True)
    s = np.where(amax > 0, (amax / np.float32(448)).astype(np.float32), np.float32(1))
    q = np.clip((b / s).astype(np.float32), -448, 448).astype(ml_dtypes.float8_e4m3fn)
    return b, q.view(np.uint8), s


def rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--cols", type=int, default=2048)
    a = ap.parse_args()
    rng = np.random.RandomState(1)
    w = (rng.standard_normal((a.rows, a.cols)) * 0.02).astype(np.float32)
    w[rng.rand(a.rows, a.cols) < 0.001] *= 20
    for form in ("per-channel BF16", "per-tensor F32"):
        if form.startswith("per-channel"):
            s = (np.abs(w).max(axis=1, keepdims=True) / np.float32(448)).astype(
                ml_dtypes.bfloat16).astype(np.float32)
        else:
            s = np.full((a.rows, 1), np.abs(w).max() / np.float32(448), dtype=np.float32)
        codes = mtm.e4m3_encode(w / s)
        ckpt = mtm.e4m3_decode(codes) * s  # what the loader makes
        b, q2, s2 = gpu_requant(ckpt)
        gpu = mtm.e4m3_decode(q2) * s2
        print(f"{form:17s} checkpoint vs the original weight {rel(ckpt, w):.2e}; GPU bf16 copy "
              f"{rel(b, ckpt):.2e}; --quantization fp8 copy {rel(gpu, ckpt):.2e} "
              f"({(q2 == codes).mean() * 100:.1f}% of the codes kept)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
