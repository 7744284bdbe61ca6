"""The short soak (tools/soak.py) in `make test`: 24 clients for 55 s against a fresh server on the
default model; `make soak` runs the long one.

It asserts behaviour only: every answer as expected, no problem at the end (pages, gauges, RSS),
every kind of request exercised. How many requests went through depends on the machine (about 600
on 2 idle CPU cores, 127 on a loaded one): the rate is a figure, printed (soak.py's summary
line "soak: N requests in T s from C clients (R/s)", shown by `pytest -s` or on failure), never
a pass/fail condition."""
import json
import os
import subprocess
import sys

from fg_http import BINARY, ROOT

SECONDS = float(os.environ.get("SOAK_TEST_SECONDS", "55"))


def test_short_soak(tmp_path):
    out = tmp_path / "soak.json"
    p = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "soak.py"),
                        "--duration", str(SECONDS), "--clients", "24",
                        "--binary", os.path.relpath(BINARY, ROOT), "--json", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=SECONDS + 240)
    print(p.stdout[-4000:])
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    s = json.loads(out.read_text())
    assert s["unexpected"] == 0 and not s["problems"], s
    print(f"soak figures: {s['requests']} requests in {s['seconds']} s, "
          f"{s['requests_per_s']} requests/s from {s['clients']} clients")
    kinds = set(s["by_kind"])
    for k in ("generate", "generate_stream", "completions", "chat", "chat_stream",
              "disconnect_stream", "invalid", "long_prompt", "big_body"):
        assert k in kinds, k
