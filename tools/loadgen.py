#!/usr/bin/env python3
"""Load generator for `flashgen serve`: N concurrent streaming clients, bounded in requests and time.

Each client sends POST /generate_stream (server-sent events) back to back and timestamps every
token event, so one run measures
  requests/s and generated tokens/s over the whole run,
  TTFT  (time to first token: request sent -> first token event),
  ITL   (inter-token latency: gaps between consecutive token events of one request),
  E2E   (request sent -> last event),
each as p50/p90/p99. Greedy, ignore_eos so every request generates exactly --max-new-tokens.

  python3 tools/loadgen.py --url http://127.0.0.1:8080 --clients 8 --requests 32 --max-new-tokens 32
  python3 tools/loadgen.py --start build/flashgen ...   # start a server on a free port for the run

Exit status 1 when any request failed. --json prints the summary as one JSON object.
"""
import argparse
import json
import statistics
import sys
import threading
import time

import requests

from benchutil import pct, start_server, wait_ready


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.ttft, self.itl, self.e2e = [], [], []
        self.tokens = 0
        self.ok = 0
        self.errors = []


def one_request(url, prompt, max_new, stats, timeout):
    body = {"inputs": prompt, "parameters": {"max_new_tokens": max_new, "ignore_eos": True}}
    t0 = time.perf_counter()
    times = []
    try:
        with requests.post(url + "/generate_stream", json=body, stream=True, timeout=timeout) as r:
            if r.status_code != 200:
                raise RuntimeError(f"HTTP {r.status_code}: {r.text[:200]}")
            for line in r.iter_lines():
                if not line.startswith(b"data:"):
                    continue
                ev = json.loads(line[5:])
                if "error" in ev:
                    raise RuntimeError(f"stream error: {ev}")
                times.append(time.perf_counter())
    except Exception as e:  # noqa: BLE001 - counted and reported
        with stats.lock:
            stats.errors.append(str(e))
        return
    t_end = time.perf_counter()
    with stats.lock:
        stats.ok += 1
        stats.tokens += len(times)
        if times:
            stats.ttft.append(times[0] - t0)
            stats.itl.extend(b - a for a, b in zip(times, times[1:]))
        stats.e2e.append(t_end - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--start", metavar="BINARY", help="start BINARY serve on a free port for the run")
    ap.add_argument("--server-arg", action="append", default=[], help="extra flag for --start")
    ap.add_argument("--clients", type=int, default=8, help="concurrent clients")
    ap.add_argument("--requests", type=int, default=32, help="requests in total")
    ap.add_argument("--duration", type=float, default=300, help="stop sending new requests after S seconds")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--prompt", default="Write a short story about a lighthouse keeper.")
    ap.add_argument("--timeout", type=float, default=300, help="per request, seconds")
    ap.add_argument("--json", action="store_true", help="print the summary as JSON")
    a = ap.parse_args()

    proc = None
    url = a.url.rstrip("/")
    if a.start:
        proc, url = start_server(a.start, a.server_arg, "loadgen")
    try:
        if proc:
            wait_ready(url, 120, "loadgen")
        info = requests.get(url + "/info", timeout=10).json()
        stats = Stats()
        counter = iter(range(a.requests))
        counter_lock = threading.Lock()
        t_start = time.perf_counter()

        def client(cid):
            while True:
                with counter_lock:
                    i = next(counter, None)
                if i is None or time.perf_counter() - t_start > a.duration:
                    return
                one_request(url, f"[{cid}:{i}] {a.prompt}", a.max_new_tokens, stats, a.timeout)

        threads = [threading.Thread(target=client, args=(c,)) for c in range(a.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t_start
    finally:
        if proc:
            proc.terminate()
            proc.wait(60)

    ms = lambda x: round(x * 1e3, 2)  # noqa: E731
    summary = {
        "url": url, "device": info.get("model_device_type"), "model": info.get("model_id"),
        "clients": a.clients, "requests_ok": stats.ok, "requests_failed": len(stats.errors),
        "max_new_tokens": a.max_new_tokens, "wall_s": round(wall, 3),
        "requests_per_s": round(stats.ok / wall, 3), "tokens_per_s": round(stats.tokens / wall, 2),
        "ttft_ms": {p: ms(pct(stats.ttft, p)) for p in (50, 90, 99)},
        "itl_ms": {p: ms(pct(stats.itl, p)) for p in (50, 90, 99)},
        "e2e_ms": {p: ms(pct(stats.e2e, p)) for p in (50, 90, 99)},
        "itl_mean_ms": ms(statistics.mean(stats.itl)) if stats.itl else None,
    }
    if a.json:
        print(json.dumps(summary))
    else:
        print(f"flashgen loadgen: {url} ({summary['device']}, {summary['model']})")
        print(f"  clients {a.clients}, requests {stats.ok} ok / {len(stats.errors)} failed, "
              f"{a.max_new_tokens} new tokens each, {wall:.2f} s")
        print(f"  throughput   {summary['requests_per_s']:.3f} req/s   {summary['tokens_per_s']:.2f} tokens/s")
        for k in ("ttft_ms", "itl_ms", "e2e_ms"):
            v = summary[k]
            print(f"  {k[:-3].upper():5s} ms    p50 {v[50]:9.2f}   p90 {v[90]:9.2f}   p99 {v[99]:9.2f}")
    for e in stats.errors[:5]:
        print("  error:", e, file=sys.stderr)
    return 1 if stats.errors else 0


if __name__ == "__main__":
    sys.exit(main())
