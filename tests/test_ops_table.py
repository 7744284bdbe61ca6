"""tests/gpu/fgattn.py mirrors struct fg_ops (kernels/ops.h) field by field for ctypes; a field
missing there shifts every later function pointer by one slot, and the GPU checks then call the
wrong C twin (this happened once: `copy` was left out). Checked here, without torch or a GPU."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def header_fields():
    text = (ROOT / "kernels/ops.h").read_text()
    body = re.search(r"^struct fg_ops \{(.*?)^\};", text, re.S | re.M).group(1)
    body = re.sub(r"/\*.*?\*/", "", body, flags=re.S)
    return re.findall(r"\(\*\s*([a-z_0-9]+)\s*\)", body)


def mirror_fields():
    tree = ast.parse((ROOT / "tests/gpu/fgattn.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "_OPS_FIELDS":
            return ast.literal_eval(node.value)
    raise AssertionError("_OPS_FIELDS not found in tests/gpu/fgattn.py")


def test_fgattn_mirrors_fg_ops():
    fields = header_fields()
    assert len(fields) > 30
    assert mirror_fields() == fields
