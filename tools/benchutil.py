"""What tools/serve_bench.py and tools/loadgen.py share: percentiles of latency samples, and
starting `flashgen serve` on a free port for a run (parsing the port from its startup log).
Standard library only, so both tools keep their own dependencies."""
import json
import re
import subprocess
import sys
import threading
import time
import urllib.request


def pct(values, p):
    """The P-th percentile (0..100) of VALUES, interpolating linearly between the two nearest
    ranks (numpy.percentile's default "linear" method); nan for no values."""
    if not values:
        return float("nan")
    v = sorted(values)
    k = (len(v) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def start_server(binary, extra, who):
    """Start BINARY serve on 127.0.0.1 with a free port (EXTRA: more flags). Returns (process,
    base URL) once it logs where it listens; its later output is drained in the background. WHO
    names the calling tool in the error when the server does not start."""
    proc = subprocess.Popen([binary, "serve", "--host", "127.0.0.1", "--port", "0",
                             "--log-requests", "false", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    port = None
    for line in proc.stdout:
        m = re.search(r"listening on http://[^ ]*:(\d+)", line)
        if m:
            port = int(m.group(1))
            break
    if port is None:
        proc.kill()
        sys.exit(f"{who}: the server did not start")
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    return proc, f"http://127.0.0.1:{port}"


def get_json(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def wait_ready(url, limit, who):
    """Wait until URL/health answers 200 (503 while the model loads), at most LIMIT seconds."""
    t = time.time()
    while time.time() - t < limit:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:  # noqa: BLE001 - not up yet (503 while loading, refused)
            pass
        time.sleep(0.2)
    sys.exit(f"{who}: {url} did not become ready in {limit} s")
