"""The short soak (tools/soak.py) in `make test`: 24 clients for 55 s against a fresh server on the
default model (about 600 requests on 2 CPU cores); `make soak` runs the long one."""
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
    assert s["unexpected"] == 0 and not s["problems"]
    assert s["requests"] >= 4 * SECONDS, "the soak sent fewer requests than expected"
    kinds = set(s["by_kind"])
    for k in ("generate", "generate_stream", "completions", "chat", "chat_stream",
              "disconnect_stream", "invalid", "long_prompt", "big_body"):
        assert k in kinds, k
