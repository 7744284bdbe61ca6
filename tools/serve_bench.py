#!/usr/bin/env python3
"""serve_bench.py — closed-loop serving benchmark over streaming OpenAI `/v1/completions`, for
flashgen and llama.cpp's llama-server alike (issue 14).

C clients each send one request, read its stream to the end, and send the next (closed loop),
for --duration seconds after a common start. Every request: a prompt of --prompt-len random
token ids (or random words with --words), optionally after a --shared-prefix of N ids common to
all requests, `max_tokens` --output-len, `ignore_eos`, greedy, `stream_options.include_usage`.
With --stop-after K a client reads K tokens and then hangs up (a request that asked for
`max_tokens` tokens and stopped early, as at an EOS: the server frees its KV when it sees the
connection go).
Each connection is closed after its response (`Connection: close`): llama-server drops about half
of the streams of a client that keeps connections alive (shared/reference/peers.md).

Reported over the measurement window [--warmup, --duration] (tokens whose event arrived in it,
a chunk worth usage.completion_tokens / chunks of its request; requests that ended in it; TTFT
and ITL, between chunks, of requests sent in it):
  output tokens/s, requests/s, TTFT p50/p99, ITL p50/p99, and the requests streaming at once as
  the clients see them (first token to end; time-averaged and max).
With --requests N instead: exactly N requests, the window is the whole run.

The clients are asyncio streams over the stdlib only, spread over --procs processes (one Python
process tops out at a few thousand events/s), so it runs on a machine with nothing installed.

  python3 tools/serve_bench.py --url http://127.0.0.1:8080 --clients 64 --prompt-len 128 \\
      --output-len 128 --duration 20 --warmup 3 --json
  python3 tools/serve_bench.py --start build/flashgen --server-arg=--model=M ...   # own server

Exit status 1 when a request failed.
"""
import argparse
import asyncio
import json
import multiprocessing as mp
import random
import sys
import time
import urllib.parse
import urllib.request

from benchutil import get_json, pct, start_server, wait_ready

WORDS = ("time year people way day man thing woman life child world school state family student "
         "group country problem hand part place case week company system program question work "
         "government number night point home water room mother area money story fact month lot "
         "right study book eye job word business issue side kind head house service friend father "
         "power hour game line end member law car city community name president team minute idea "
         "kid body information back parent face others level office door health person art war "
         "history party result change morning reason research girl guy moment air teacher force").split()


# ---- one request ---------------------------------------------------------------------------

async def read_body(reader, headers):
    """Yield the response body in pieces: chunked transfer encoding or read-to-close."""
    if "chunked" in headers.get("transfer-encoding", ""):
        while True:
            line = await reader.readline()
            if not line:
                return
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                return
            data = await reader.readexactly(size)
            await reader.readexactly(2)
            yield data
    else:
        left = int(headers["content-length"]) if "content-length" in headers else -1
        while left != 0:
            data = await reader.read(65536 if left < 0 else min(left, 65536))
            if not data:
                return
            if left > 0:
                left -= len(data)
            yield data


async def one_request(host, port, path, body, stop_after, timeout):
    """Send one streaming request; returns (t_send, [event times], tokens per usage, error)."""
    payload = json.dumps(body).encode()
    req = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
           f"Accept: text/event-stream\r\nConnection: close\r\nContent-Length: {len(payload)}\r\n\r\n"
           ).encode() + payload
    t_send = time.monotonic()
    times, usage, writer = [], None, None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        writer.write(req)
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), timeout)
        code = int(status.split()[1]) if len(status.split()) > 1 else 0
        headers = {}
        while True:
            line = await asyncio.wait_for(reader.readline(), timeout)
            if line in (b"\r\n", b"\n", b""):
                break
            k, _, v = line.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip().lower()
        if code != 200:
            text = b"".join([d async for d in read_body(reader, headers)])[:300]
            return t_send, times, usage, f"HTTP {code}: {text.decode(errors='replace')}"
        buf = b""
        body_iter = read_body(reader, headers).__aiter__()
        while True:
            try:
                data = await asyncio.wait_for(body_iter.__anext__(), timeout)
            except StopAsyncIteration:
                break
            now = time.monotonic()
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                line = line.strip()
                if not line.startswith(b"data:"):
                    continue
                line = line[5:].strip()
                if line == b"[DONE]":
                    continue
                ev = json.loads(line)
                if "error" in ev:
                    return t_send, times, usage, f"stream error: {ev['error']}"
                if ev.get("usage"):
                    usage = ev["usage"].get("completion_tokens")
                if ev.get("choices"):
                    c = ev["choices"][0]
                    if c.get("text") or c.get("finish_reason") is None:
                        times.append(now)
            if stop_after and len(times) >= stop_after:
                return t_send, times, usage, None  # hang up: the request ends here
        return t_send, times, usage, None
    except Exception as e:  # noqa: BLE001 - counted and reported
        return t_send, times, usage, f"{type(e).__name__}: {e}"
    finally:
        if writer:
            writer.close()


# ---- one client process --------------------------------------------------------------------

def make_prompt(a, rng, prefix):
    if a.words:
        return " ".join(prefix + [rng.choice(WORDS) for _ in range(a.prompt_len)])
    return prefix + [rng.randrange(a.id_lo, a.id_hi) for _ in range(a.prompt_len)]


async def run_clients(a, host, port, path, model, client_ids, t0, quota):
    records, dropped = [], [0]
    prefix_rng = random.Random(a.seed)
    if a.words:
        prefix = [prefix_rng.choice(WORDS) for _ in range(a.shared_prefix)]
    else:
        prefix = [prefix_rng.randrange(a.id_lo, a.id_hi) for _ in range(a.shared_prefix)]
    t_stop = t0 + a.duration

    async def client(cid):
        rng = random.Random(a.seed * 1000003 + cid)
        await asyncio.sleep(max(0.0, t0 - time.monotonic()))
        while time.monotonic() < t_stop:
            if quota is not None:
                if quota[0] <= 0:
                    return
                quota[0] -= 1
            body = {"model": model, "prompt": make_prompt(a, rng, prefix), "max_tokens": a.max_tokens,
                    "stream": True, "ignore_eos": not a.no_ignore_eos, "temperature": 0,
                    "stream_options": {"include_usage": True}, **a.extra}
            left = t_stop - time.monotonic() + a.grace if quota is None else a.timeout
            try:
                r = await asyncio.wait_for(
                    one_request(host, port, path, body, a.stop_after, a.timeout), max(left, 0.1))
            except asyncio.TimeoutError:
                dropped[0] += 1  # past the end of the run: the window has what it needs
                return
            records.append((cid,) + r + (time.monotonic(),))

    await asyncio.gather(*(client(c) for c in client_ids))
    return records, dropped[0]


def proc_main(a, host, port, path, model, client_ids, t0, quota, q):
    q.put(asyncio.run(run_clients(a, host, port, path, model, client_ids, t0,
                                  [quota] if quota is not None else None)))


# ---- server start (flashgen) and summary ---------------------------------------------------

def summarize(a, records, t0, wall):
    if a.requests:
        w0, w1 = t0, t0 + wall
    else:
        w0, w1 = t0 + a.warmup, t0 + a.duration
    span = max(w1 - w0, 1e-9)
    tokens = ok = failed = 0
    ttft, itl, errors, busy = [], [], [], []
    for _cid, t_send, times, usage, err, t_end in records:
        if err:
            failed += 1
            errors.append(err)
            continue
        # a chunk may carry several tokens (text held back until a character is whole): the
        # request's usage says how many it had, spread over its chunks
        per_event = usage / len(times) if usage and times else 1.0
        tokens += per_event * sum(1 for t in times if w0 <= t <= w1)
        if w0 <= t_end <= w1:
            ok += 1
        if times:
            busy.append((times[0], t_end))
        if t_send >= w0 and times:
            ttft.append(times[0] - t_send)
            itl.extend(y - x for x, y in zip(times, times[1:]) if x >= w0 and y <= w1)
    # requests streaming at once: time-averaged over the window, and the most at any time
    mean_running = sum(max(0.0, min(e, w1) - max(s, w0)) for s, e in busy) / span
    edges = sorted([(s, 1) for s, e in busy if e >= w0 and s <= w1] +
                   [(e, -1) for s, e in busy if e >= w0 and s <= w1])
    cur = max_running = 0
    for _, d in edges:
        cur += d
        max_running = max(max_running, cur)
    ms = lambda x: round(x * 1e3, 2)  # noqa: E731
    return {
        "label": a.label, "clients": a.clients, "prompt_len": a.prompt_len,
        "shared_prefix": a.shared_prefix, "output_len": a.output_len, "max_tokens": a.max_tokens,
        "stop_after": a.stop_after, "window_s": round(span, 3), "requests_ok": ok,
        "requests_failed": failed, "output_tokens": round(tokens),
        "output_tokens_per_s": round(tokens / span, 2), "requests_per_s": round(ok / span, 3),
        "ttft_ms": {"p50": ms(pct(ttft, 50)), "p99": ms(pct(ttft, 99))},
        "itl_ms": {"p50": ms(pct(itl, 50)), "p99": ms(pct(itl, 99))},
        "running_mean": round(mean_running, 1), "running_max": max_running,
        "errors": errors[:5],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--start", metavar="BINARY", help="start BINARY serve on a free port for the run")
    ap.add_argument("--server-arg", action="append", default=[], help="extra flag for --start")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--prompt-len", type=int, default=128, help="unique prompt tokens (or words)")
    ap.add_argument("--shared-prefix", type=int, default=0, help="tokens common to every prompt, first")
    ap.add_argument("--output-len", type=int, default=128, help="max_tokens of each request")
    ap.add_argument("--stop-after", type=int, default=0,
                    help="hang up after K tokens (requests that ask for --output-len and stop early)")
    ap.add_argument("--duration", type=float, default=20, help="seconds from the common start")
    ap.add_argument("--warmup", type=float, default=3, help="seconds not measured at the start")
    ap.add_argument("--grace", type=float, default=0.5,
                    help="seconds past --duration a request may still run (then it is dropped)")
    ap.add_argument("--requests", type=int, default=0, help="exactly N requests instead of a duration")
    ap.add_argument("--words", action="store_true", help="random words instead of token ids")
    ap.add_argument("--id-range", default="1000,40000", help="token ids drawn from [lo, hi)")
    ap.add_argument("--no-ignore-eos", action="store_true")
    ap.add_argument("--extra-body", default="{}",
                    help='JSON merged into every body, e.g. \'{"cache_prompt": false}\' for llama-server')
    ap.add_argument("--procs", type=int, default=0, help="client processes (default: clients/32, 1..8)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=600, help="per request read timeout, seconds")
    ap.add_argument("--ready-timeout", type=float, default=600)
    ap.add_argument("--label", default="")
    ap.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    a = ap.parse_args()
    a.id_lo, a.id_hi = (int(x) for x in a.id_range.split(","))
    a.max_tokens = a.output_len
    a.extra = json.loads(a.extra_body)
    if a.requests:
        a.duration, a.warmup = 1e9, 0.0

    proc = None
    url = a.url.rstrip("/")
    if a.start:
        proc, url = start_server(a.start, a.server_arg, "serve_bench")
    try:
        wait_ready(url, a.ready_timeout, "serve_bench")
        u = urllib.parse.urlparse(url)
        host, port = u.hostname, u.port or 80
        try:
            model = get_json(url + "/v1/models")["data"][0]["id"]
        except Exception:  # noqa: BLE001 - a server without /v1/models takes any name
            model = "default"
        n_procs = a.procs or min(8, max(1, a.clients // 32))
        n_procs = min(n_procs, a.clients)
        ctx = mp.get_context("fork")
        q = ctx.Queue()
        t0 = time.monotonic() + 0.5 + 0.05 * n_procs  # every process starts its clients together
        procs = []
        for p in range(n_procs):
            ids = list(range(p, a.clients, n_procs))
            quota = None
            if a.requests:
                quota = a.requests // n_procs + (1 if p < a.requests % n_procs else 0)
            procs.append(ctx.Process(target=proc_main,
                                     args=(a, host, port, "/v1/completions", model, ids, t0, quota, q)))
        for p in procs:
            p.start()
        records, dropped = [], 0
        for _ in procs:
            r, d = q.get()
            records += r
            dropped += d
        for p in procs:
            p.join()
        wall = time.monotonic() - t0
    finally:
        if proc:
            proc.terminate()
            proc.wait(60)

    s = summarize(a, records, t0, wall)
    s["url"], s["model"] = url, model
    s["requests_dropped"] = dropped  # still running at --duration + --grace (not failures)
    if a.json:
        print(json.dumps(s))
    else:
        print(f"serve_bench {a.label or url}: {a.clients} clients, prompt {a.shared_prefix}+{a.prompt_len}, "
              f"output {a.output_len}{f' (stop after {a.stop_after})' if a.stop_after else ''}, "
              f"window {s['window_s']} s")
        print(f"  {s['output_tokens_per_s']:.1f} output tokens/s  {s['requests_per_s']:.2f} req/s  "
              f"ok {s['requests_ok']} failed {s['requests_failed']}")
        print(f"  TTFT ms p50 {s['ttft_ms']['p50']}  p99 {s['ttft_ms']['p99']}   "
              f"ITL ms p50 {s['itl_ms']['p50']}  p99 {s['itl_ms']['p99']}   "
              f"running mean {s['running_mean']} max {s['running_max']}")
    for e in s["errors"]:
        print("  error:", e, file=sys.stderr)
    return 1 if s["requests_failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
