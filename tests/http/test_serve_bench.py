"""tools/serve_bench.py against the running server at small sizes: every request streams exactly
its output length (ignore_eos; usage and the events agree), the summary has its fields, a
shared-prefix run hits the prefix cache, and --stop-after hangs up early (the server counts the
request cancelled). The device run (bench/serving_device.sh) uses the same client."""
import json
import os
import subprocess
import sys
import time

from fg_http import ROOT

TOOL = os.path.join(ROOT, "tools", "serve_bench.py")


def bench(server, *args):
    out = subprocess.run([sys.executable, TOOL, "--url", server.url, "--json", *args],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_closed_loop_counts(server):
    s = bench(server, "--clients", "2", "--requests", "4", "--prompt-len", "8",
              "--output-len", "5")
    assert s["requests_ok"] == 4 and s["requests_failed"] == 0
    assert s["output_tokens"] == 20
    assert s["ttft_ms"]["p50"] > 0 and s["itl_ms"]["p99"] >= s["itl_ms"]["p50"] > 0
    assert 1 <= s["running_max"] <= 2
    assert s["output_tokens_per_s"] > 0 and s["requests_per_s"] > 0


def test_shared_prefix_hits_the_cache(server):
    hits = server.metric("flashgen_prefix_cache_hits_total")
    s = bench(server, "--clients", "1", "--requests", "3", "--prompt-len", "4",
              "--shared-prefix", "48", "--output-len", "2", "--words")
    assert s["requests_ok"] == 3
    # the 2nd and 3rd requests find at least the first two full pages of the shared prefix
    assert server.metric("flashgen_prefix_cache_hits_total") - hits >= 2 * 32


def test_stop_after_hangs_up(server):
    cancelled = server.metric('flashgen_requests_total{outcome="cancelled"}')
    s = bench(server, "--clients", "2", "--requests", "2", "--prompt-len", "8",
              "--output-len", "200", "--stop-after", "3")
    assert s["requests_ok"] == 2 and s["output_tokens"] == 6
    for _ in range(100):
        if server.metric('flashgen_requests_total{outcome="cancelled"}') - cancelled == 2:
            break
        time.sleep(0.05)
    assert server.metric('flashgen_requests_total{outcome="cancelled"}') - cancelled == 2
