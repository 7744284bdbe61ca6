#!/usr/bin/env python3
"""requant_gguf.py — copy a GGUF file with its quantized 2-D tensors requantized to another type.

Usage: python3 bench/requant_gguf.py IN.gguf OUT.gguf [--type Q8_0]

Every tensor of a quantized type (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, ...) is dequantized with gguf-py
(gguf.quants.dequantize) and quantized to --type with gguf.quants.quantize (F16 and BF16 too: the
same weights unquantized, for bf16 and FP8 runs of a quantized file's values, bench/nll.py); F32/F16 tensors
(norms) and every metadata key are copied as they are (general.file_type set to the new type's
llama.cpp file-type number). bench/cpu_peer.sh makes its Q8_0 copy of the default SmolLM2 Q4_1
file this way, so both engines run the same weights in Q8_0 blocks (the Q4_1 values are exactly
representable in Q8_0 up to Q8_0's own rounding of each block's scale).

Needs: numpy, gguf.
"""
import argparse
import sys

import numpy as np

import gguf
from gguf import GGMLQuantizationType as QT
from gguf import GGUFValueType as VT

# llama.cpp's enum llama_ftype for an all-TYPE file
FILE_TYPE = {QT.F16: 1, QT.Q4_0: 2, QT.Q4_1: 3, QT.Q8_0: 7, QT.Q5_0: 8, QT.Q5_1: 9, QT.BF16: 32}
KEEP = {QT.F32, QT.F16, QT.BF16}
SKIP_KEYS = ("GGUF.", "general.architecture")  # written by GGUFWriter itself


def copy_field(w, key, field):
    vtype = field.types[0]
    if vtype == VT.ARRAY:
        w.add_array(key, field.contents())
    elif vtype == VT.STRING:
        w.add_string(key, field.contents())
    else:
        w.add_key_value(key, field.contents(), vtype)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--type", default="Q8_0", choices=[t.name for t in FILE_TYPE])
    a = ap.parse_args()
    to = QT[a.type]
    r = gguf.GGUFReader(a.src)
    arch = r.fields["general.architecture"].contents()
    w = gguf.GGUFWriter(a.dst, arch)
    for key, field in r.fields.items():
        if key.startswith(SKIP_KEYS):
            continue
        if key == "general.file_type":
            w.add_file_type(FILE_TYPE[to])
            continue
        copy_field(w, key, field)
    for t in r.tensors:
        shape = [int(x) for x in reversed(t.shape)]  # numpy order: (rows, cols)
        if t.tensor_type in KEEP:
            w.add_tensor(t.name, np.asarray(t.data).reshape(shape))
            continue
        x = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).reshape(shape)
        w.add_tensor(t.name, gguf.quants.quantize(x.astype(np.float32), to), raw_dtype=to)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"{a.dst}: {len(r.tensors)} tensors, quantized ones as {to.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
