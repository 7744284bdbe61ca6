#!/usr/bin/env python3
"""soak.py — a soak test of `flashgen serve`: tens of concurrent clients, every route, faults mixed in.

Usage:
  python3 tools/soak.py [--duration 300] [--requests 0] [--clients 24] [--seed 1]
                        [--binary build/flashgen] [--model models/SmolLM2-135M-Instruct.Q4_1.gguf]
                        [--url http://HOST:PORT [--pid PID]] [--json FILE]

Without --url it starts the binary itself (CPU, ephemeral port, log in build*/tmp/soak-server.log)
and stops it with SIGTERM at the end (exit 0 and no sanitizer report required). With --url it
targets a running server; RSS is sampled only when --pid names its process.

What it sends (every kind once first, then weighted as in KINDS): greedy /generate,
/generate_stream, /v1/completions and /v1/chat/completions, streaming and not; sampled generations
with unknown fields (ignored, as TGI and OpenAI do); clients that hang up mid-stream or while a
plain request is running; invalid bodies (bad JSON, wrong types, out-of-range and unsupported
parameters); prompts over max_input_tokens (422); bodies over max_body_bytes (413, by
Content-Length and chunked); cheap GETs.

What it checks:
  * every answer: status, content type and JSON shape; greedy answers must equal the reference
    taken once per (route, prompt) at the start, before any load (batched == solo is the server's
    contract); 429 "overloaded" is an accepted answer for generations (a server with a low
    max_concurrent_requests), anything else unexpected is an error;
  * /health answers 200 within 1 s throughout (polled every 0.2 s by its own thread);
  * at the end flashgen_num_requests_running and _waiting return to 0 (within 30 s);
  * resident memory (VmRSS) sampled every second: after warm-up (the first quarter of the run, at
    least 10 s: every client is busy from the first second, so the allocator's arenas, MHD's
    per-connection pools and the KV pages at peak concurrency are all touched by then) the peak
    must stay under warm-up peak * 1.10 + 20 MiB. A leak grows with the request count; the
    bound leaves room for allocator noise and for the KV free-list (LIFO) reaching a few more pages
    at a rare higher peak of concurrency, while a leak of even 1 KiB per request over a long run
    passes it. Ends with a summary: requests by kind and outcome, errors, the RSS curve.
Exit status: 0 when every check passed, 1 otherwise.
"""
import argparse
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter

import requests

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
DEFAULT_MODEL = "models/SmolLM2-135M-Instruct.Q4_1.gguf"

# (prompt, max_new_tokens): short generations, the CPU forward is ~12 tokens/s for one stream.
PROMPTS = [
    ("The capital of France is", 6),
    ("Once upon a time, in a small village,", 8),
    ("def fibonacci(n):", 8),
    ("List three colours:", 5),
    ("Water boils at", 4),
    ("My favourite animal is the", 7),
]

# kind -> weight; the mix per request is drawn from these.
KINDS = {
    "generate": 12, "generate_stream": 10, "completions": 7, "completions_stream": 6,
    "chat": 7, "chat_stream": 6, "sampled": 5, "disconnect_stream": 6, "disconnect_plain": 3,
    "invalid": 14, "long_prompt": 4, "big_body": 3, "get": 4,
}

SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


class Unexpected(Exception):
    """An answer the server must not give."""


def check(cond, msg):
    if not cond:
        raise Unexpected(msg)


def tgi_error_shape(r, status, etype=None):
    check(r.status_code == status, f"status {r.status_code} != {status}: {r.text[:200]}")
    check(r.headers.get("Content-Type", "").startswith("application/json"), "error not JSON")
    b = r.json()
    check(isinstance(b.get("error"), str) and b["error"], f"no error message: {b}")
    check(isinstance(b.get("error_type"), str), f"no error_type: {b}")
    if etype:
        check(b["error_type"] == etype, f"error_type {b['error_type']} != {etype}")


def oai_error_shape(r, status, etype=None):
    check(r.status_code == status, f"status {r.status_code} != {status}: {r.text[:200]}")
    e = r.json().get("error")
    check(isinstance(e, dict) and e.get("message") and e.get("code") == status and "param" in e,
          f"bad OpenAI error: {r.text[:200]}")
    if etype:
        check(e["type"] == etype, f"error type {e['type']} != {etype}")


def error_shape(path, r, status, etype=None):
    (oai_error_shape if path.startswith("/v1/") else tgi_error_shape)(r, status, etype)


def sse_data(resp):
    """The data fields of an event stream. Event streams are UTF-8 by definition; requests would
    decode a text/* body without a charset as ISO-8859-1, so lines are decoded here."""
    for raw in resp.iter_lines():
        line = raw.decode("utf-8")
        if line.startswith("data:"):
            yield line[5:].lstrip(" ")


# ---- the requests of each route -----------------------------------------------------------------

def body_for(route, i, stream=False, **extra):
    prompt, n = PROMPTS[i]
    if route == "generate":
        return {"inputs": prompt, "parameters": {"max_new_tokens": n, **extra}}
    if route == "completions":
        return {"prompt": prompt, "max_tokens": n, "temperature": 0, "stream": stream, **extra}
    return {"messages": [{"role": "user", "content": prompt}], "max_tokens": n, "temperature": 0,
            "stream": stream, **extra}


PATHS = {"generate": "/generate", "completions": "/v1/completions",
         "chat": "/v1/chat/completions"}


def text_plain(route, r):
    """The generated text of a 200 non-streaming answer, its shape checked."""
    check(r.headers.get("Content-Type", "").startswith("application/json"), "answer not JSON")
    b = r.json()
    if route == "generate":
        check(isinstance(b.get("generated_text"), str), f"no generated_text: {b}")
        return b["generated_text"]
    check(b.get("object") == ("text_completion" if route == "completions" else "chat.completion"),
          f"bad object: {b}")
    u = b.get("usage", {})
    check(u.get("total_tokens") == u.get("prompt_tokens", -1) + u.get("completion_tokens", -1),
          f"bad usage: {u}")
    c = b["choices"]
    check(len(c) == 1 and c[0]["finish_reason"] in ("length", "stop"), f"bad choices: {c}")
    return c[0]["text"] if route == "completions" else c[0]["message"]["content"]


def text_stream(route, r):
    """Read a 200 event stream to its end; the generated text, every event's shape checked."""
    check(r.headers.get("Content-Type", "").startswith("text/event-stream"), "not an event stream")
    if route == "generate":
        events = [json.loads(d) for d in sse_data(r)]
        check(events, "empty stream")
        for e in events:
            check("error" not in e, f"error event: {e}")
            check(isinstance(e["token"]["text"], str) and isinstance(e["token"]["id"], int),
                  f"bad token event: {e}")
        final = events[-1].get("generated_text")
        check(final == "".join(e["token"]["text"] for e in events),
              "generated_text != concatenated tokens")
        return final
    parts, done = [], False
    for d in sse_data(r):
        check(not done, "data after [DONE]")
        if d == "[DONE]":
            done = True
            continue
        e = json.loads(d)
        check("error" not in e, f"error event: {e}")
        for c in e.get("choices", []):
            if route == "completions":
                parts.append(c.get("text") or "")
            else:
                parts.append((c.get("delta") or {}).get("content") or "")
    check(done, "stream did not end with [DONE]")
    return "".join(parts)


INVALID = [  # (path, raw body bytes, expected status)
    ("/generate", b"{not json", 400),
    ("/generate", b"", 400),
    ("/generate", b"[1,2]", 400),
    ("/generate", b'{"inputs": "x"', 400),
    ("/generate", b'{"inputs": 5}', 422),
    ("/generate", b'{"inputs": "x", "parameters": {"max_new_tokens": "8"}}', 422),
    ("/generate", b'{"inputs": "x", "parameters": {"max_new_tokens": 0}}', 422),
    ("/generate", b'{"inputs": "x", "parameters": {"temperature": -1}}', 422),
    ("/generate", b'{"inputs": "x", "parameters": {"top_p": 2}}', 422),
    ("/generate", b'{"inputs": "x", "parameters": {"best_of": 17, "do_sample": true}}', 422),
    ("/generate", b'{"inputs": "x", "parameters": {"stop": "x"}}', 422),
    ("/generate", b'{"inputs": "x", "parameters": {"max_new_tokens": 100000000}}', 422),
    ("/generate_stream", b'{"inputs": ["x"]}', 422),
    ("/generate_stream", b"\xff\xfe\x00garbage", 400),
    ("/v1/completions", b"nope", 400),
    ("/v1/completions", b'{"prompt": 3}', 422),
    ("/v1/completions", b'{"prompt": "x", "max_tokens": -2}', 422),
    ("/v1/completions", b'{"prompt": [1, 2, 99999999]}', 422),
    ("/v1/chat/completions", b'{"messages": "hi"}', 422),
    ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": 5}]}', 422),
    ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "x"}], "n": 1000}', 422),
    ("/v1/chat/completions",
     b'{"messages": [{"role": "user", "content": "x"}], "tools": [{}]}', 422),
    ("/tokenize", b"{]", 400),
]


class Soak:
    def __init__(self, a):
        self.a = a
        self.proc = None
        self.log_path = None
        self.url = a.url.rstrip("/") if a.url else None
        self.pid = a.pid
        self.lock = threading.Lock()
        self.outcomes = Counter()  # (kind, outcome) -> count
        self.errors = []           # unexpected answers: (kind, message)
        self.n_sent = 0
        self.stop = threading.Event()
        self.refs = {}
        self.rss = []              # (seconds since start, KiB)
        self.health = {"n": 0, "bad": 0, "max_s": 0.0, "bad_msgs": []}
        self.t0 = time.time()

    # ---- server ---------------------------------------------------------------------------------
    def start_server(self):
        a = self.a
        binary = os.path.join(ROOT, a.binary)
        if not os.path.exists(binary):
            sys.exit(f"soak: {binary} not found (make first)")
        tmp = os.path.join(ROOT, os.path.dirname(a.binary) or "build", "tmp")
        os.makedirs(tmp, exist_ok=True)
        self.log_path = os.path.join(tmp, "soak-server.log")
        cmd = [binary, "serve", "--host", "127.0.0.1", "--port", "0", "--device", "cpu",
               "--model", a.model, "--max-input-tokens", "256", "--max-body-bytes", "65536",
               "--log-requests", "false", *a.server_flag]
        self.logf = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self.logf, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        t0 = time.time()
        while time.time() - t0 < 30 and not self.url:
            m = re.search(r"listening on http://[^ ]*:(\d+)", open(self.log_path).read())
            if m:
                self.url = f"http://127.0.0.1:{m.group(1)}"
            elif self.proc.poll() is not None:
                break
            time.sleep(0.05)
        if not self.url:
            sys.exit("soak: server did not start:\n" + open(self.log_path).read()[-3000:])

    def wait_ready(self):
        t0 = time.time()
        while time.time() - t0 < 120:
            try:
                if requests.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if self.proc and self.proc.poll() is not None:
                break
            time.sleep(0.1)
        sys.exit("soak: server not ready")

    def stop_server(self):
        """SIGTERM; returns a list of problems (exit status, sanitizer reports)."""
        if not self.proc:
            return []
        probs = []
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
            probs.append("server did not stop within 60 s of SIGTERM")
        self.logf.close()
        if rc != 0:
            probs.append(f"server exit status {rc}")
        log = open(self.log_path, errors="replace").read()
        for mark in SANITIZER_MARKS:
            if mark in log:
                probs.append(f"server log contains '{mark}' (see {self.log_path})")
        return probs

    def metric(self, name):
        text = requests.get(self.url + "/metrics", timeout=5).text
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
        raise KeyError(name)

    # ---- references -----------------------------------------------------------------------------
    def take_references(self):
        for route, path in PATHS.items():
            for i in range(len(PROMPTS)):
                r = requests.post(self.url + path, json=body_for(route, i), timeout=120)
                if r.status_code != 200:
                    sys.exit(f"soak: reference {path} #{i}: {r.status_code} {r.text[:300]}")
                self.refs[(route, i)] = text_plain(route, r)

    # ---- one request of each kind (return the outcome; raise Unexpected) -----------------------
    def plain(self, sess, route, rng):
        i = rng.randrange(len(PROMPTS))
        r = sess.post(self.url + PATHS[route], json=body_for(route, i), timeout=120)
        if r.status_code == 429:
            error_shape(PATHS[route], r, 429, "overloaded")
            return "429"
        check(r.status_code == 200, f"status {r.status_code}: {r.text[:200]}")
        got = text_plain(route, r)
        check(got == self.refs[(route, i)], f"#{i}: {got!r} != reference {self.refs[(route, i)]!r}")
        return "ok"

    def streamed(self, sess, route, rng):
        i = rng.randrange(len(PROMPTS))
        path = "/generate_stream" if route == "generate" else PATHS[route]
        with sess.post(self.url + path, json=body_for(route, i, stream=True), stream=True,
                       timeout=120) as r:
            if r.status_code == 429:
                error_shape(path, r, 429, "overloaded")
                return "429"
            check(r.status_code == 200, f"status {r.status_code}: {r.text[:200]}")
            got = text_stream(route, r)
        check(got == self.refs[(route, i)], f"#{i}: {got!r} != reference {self.refs[(route, i)]!r}")
        return "ok"

    def sampled(self, sess, rng):
        route = rng.choice(list(PATHS))
        i = rng.randrange(len(PROMPTS))
        extra = {"temperature": 0.9, "seed": rng.randrange(1 << 30), "x_unknown_field": [1, {}]}
        if route == "generate":
            body = body_for(route, i, **extra)
            body["parameters"]["top_k"] = rng.choice([None, 5, 50])
            body["client_tag"] = "soak"  # unknown top-level field: ignored
        else:
            body = body_for(route, i, **extra)
            body["top_p"] = 0.9
        r = sess.post(self.url + PATHS[route], json=body, timeout=120)
        if r.status_code == 429:
            error_shape(PATHS[route], r, 429, "overloaded")
            return "429"
        check(r.status_code == 200, f"status {r.status_code}: {r.text[:200]}")
        check(isinstance(text_plain(route, r), str), "no text")
        return "ok"

    def raw_request(self, path, body, extra_headers=""):
        s = socket.create_connection(("127.0.0.1", int(self.url.rsplit(":", 1)[1])), timeout=60)
        s.sendall((f"POST {path} HTTP/1.1\r\nHost: soak\r\nContent-Type: application/json\r\n"
                   f"{extra_headers}Content-Length: {len(body)}\r\n\r\n").encode() + body)
        return s

    def disconnect_stream(self, rng):
        route = rng.choice(list(PATHS))
        path = "/generate_stream" if route == "generate" else PATHS[route]
        body = body_for(route, rng.randrange(len(PROMPTS)), stream=True)
        if route == "generate":
            body["parameters"].update(max_new_tokens=40, ignore_eos=True)
        else:
            body.update(max_tokens=40, ignore_eos=True)
        s = self.raw_request(path, json.dumps(body).encode())
        want = rng.randint(1, 3)  # hang up after this many events
        got = b""
        try:
            while got.count(b"data:") < want:
                chunk = s.recv(4096)
                if not chunk:
                    break
                got += chunk
        finally:
            s.close()
        if got.startswith(b"HTTP/1.1 429"):
            return "429"
        check(got.startswith(b"HTTP/1.1 200"), f"stream answer: {got[:120]!r}")
        return "hung_up"

    def disconnect_plain(self, rng):
        body = body_for("generate", rng.randrange(len(PROMPTS)))
        body["parameters"].update(max_new_tokens=40, ignore_eos=True)
        s = self.raw_request("/generate", json.dumps(body).encode())
        time.sleep(rng.uniform(0, 0.5))
        s.close()
        return "hung_up"

    def invalid(self, sess, rng):
        path, raw, status = rng.choice(INVALID)
        r = sess.post(self.url + path, data=raw, headers={"Content-Type": "application/json"},
                      timeout=60)
        error_shape(path, r, status, "invalid_json" if status == 400 else "validation")
        return str(status)

    def long_prompt(self, sess, rng):
        words = "word " * (self.max_input + rng.randint(5, 200))
        route = rng.choice(list(PATHS))
        body = body_for(route, 0)
        if route == "generate":
            body["inputs"] = words
        elif route == "completions":
            body["prompt"] = words
        else:
            body["messages"][0]["content"] = words
        r = sess.post(self.url + PATHS[route], json=body, timeout=60)
        error_shape(PATHS[route], r, 422, "validation")
        return "422"

    def big_body(self, rng):
        """Over max_body_bytes: by Content-Length (refused before the body is read) or chunked
        (refused once the limit is passed)."""
        port = int(self.url.rsplit(":", 1)[1])
        s = socket.create_connection(("127.0.0.1", port), timeout=60)
        try:
            chunked = rng.random() < 0.5
            head = "POST /generate HTTP/1.1\r\nHost: soak\r\nContent-Type: application/json\r\n"
            if chunked:
                s.sendall((head + "Transfer-Encoding: chunked\r\n\r\n").encode())
                part = b"x" * 8192
                sent = 0
                s.settimeout(0.0)
                got = b""
                while sent <= self.max_body + 8192:  # stop as soon as the answer arrives
                    try:
                        got = s.recv(4096)
                        break
                    except BlockingIOError:
                        pass
                    s.settimeout(60)
                    s.sendall(b"%x\r\n%s\r\n" % (len(part), part))
                    sent += len(part)
                    s.settimeout(0.0)
                s.settimeout(60)
                if not got:
                    try:
                        s.sendall(b"0\r\n\r\n")
                    except OSError:
                        pass
            else:
                s.sendall((head + f"Content-Length: {self.max_body + 1}\r\n\r\n").encode() +
                          b'{"inputs":"' + b"y" * 1000)
                got = b""
            while b"\r\n\r\n" not in got or not got.rstrip().endswith(b"}"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                got += chunk
        finally:
            s.close()
        check(got.startswith(b"HTTP/1.1 413"), f"big body answer: {got[:120]!r}")
        b = json.loads(got.split(b"\r\n\r\n", 1)[1])
        check(b.get("error_type") == "payload_too_large", f"413 body: {b}")
        return "413"

    def get(self, sess, rng):
        path = rng.choice(["/info", "/v1/models", "/metrics", "/tokenize"])
        if path == "/tokenize":
            r = sess.post(self.url + path, json={"inputs": PROMPTS[0][0]}, timeout=30)
        else:
            r = sess.get(self.url + path, timeout=30)
        check(r.status_code == 200, f"{path}: {r.status_code}")
        if path != "/metrics":
            r.json()
        return "ok"

    def one(self, sess, kind, rng):
        if kind in ("generate", "completions", "chat"):
            return self.plain(sess, kind, rng)
        if kind.endswith("_stream") and kind != "disconnect_stream":
            return self.streamed(sess, kind[:-len("_stream")], rng)
        return {
            "sampled": lambda: self.sampled(sess, rng),
            "disconnect_stream": lambda: self.disconnect_stream(rng),
            "disconnect_plain": lambda: self.disconnect_plain(rng),
            "invalid": lambda: self.invalid(sess, rng),
            "long_prompt": lambda: self.long_prompt(sess, rng),
            "big_body": lambda: self.big_body(rng),
            "get": lambda: self.get(sess, rng),
        }[kind]()

    # ---- threads ------------------------------------------------------------------------------
    def client(self, cid):
        rng = random.Random(self.a.seed * 1000 + cid)
        kinds, weights = list(KINDS), list(KINDS.values())
        sess = requests.Session()
        n = 0
        while not self.stop.is_set():
            with self.lock:
                if self.a.requests and self.n_sent >= self.a.requests:
                    break
                self.n_sent += 1
            # the clients' first requests send every kind once, however slow the machine; then
            # the weighted mix
            seq = n * self.a.clients + cid
            n += 1
            kind = kinds[seq] if seq < len(kinds) else rng.choices(kinds, weights)[0]
            try:
                outcome = self.one(sess, kind, rng)
            except Unexpected as e:
                outcome = "UNEXPECTED"
                with self.lock:
                    self.errors.append((kind, str(e)))
            except (requests.RequestException, OSError, ValueError, KeyError) as e:
                outcome = "UNEXPECTED"
                with self.lock:
                    self.errors.append((kind, f"{type(e).__name__}: {e}"))
                sess = requests.Session()
            with self.lock:
                self.outcomes[(kind, outcome)] += 1

    def health_loop(self):
        while not self.stop.is_set():
            t = time.time()
            try:
                r = requests.get(self.url + "/health", timeout=1.0)
                dt = time.time() - t
                ok = r.status_code == 200 and dt <= 1.0
                msg = f"{r.status_code} in {dt:.2f} s"
            except requests.RequestException as e:
                dt, ok, msg = time.time() - t, False, f"{type(e).__name__}"
            with self.lock:
                self.health["n"] += 1
                self.health["max_s"] = max(self.health["max_s"], dt)
                if not ok:
                    self.health["bad"] += 1
                    self.health["bad_msgs"].append(f"t={t - self.t0:.1f}s {msg}")
            self.stop.wait(0.2)

    def rss_kib(self):
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            return None
        return None

    def rss_loop(self):
        while True:
            v = self.rss_kib() if self.pid else None
            if v is not None:
                self.rss.append((time.time() - self.t0, v))
            if self.stop.wait(1.0):
                break

    # ---- the run -----------------------------------------------------------------------------
    def run(self):
        a = self.a
        if not self.url:
            self.start_server()
        self.wait_ready()
        info = requests.get(self.url + "/info", timeout=10).json()
        self.max_input = int(info["max_input_tokens"])
        self.max_body = int(info["max_body_bytes"])
        self.take_references()
        self.t0 = time.time()
        aux = [threading.Thread(target=self.health_loop, daemon=True),
               threading.Thread(target=self.rss_loop, daemon=True)]
        clients = [threading.Thread(target=self.client, args=(c,), daemon=True)
                   for c in range(a.clients)]
        for t in aux + clients:
            t.start()
        while time.time() - self.t0 < a.duration and any(t.is_alive() for t in clients):
            time.sleep(0.2)
            if self.proc and self.proc.poll() is not None:
                self.errors.append(("server", f"server exited with {self.proc.returncode}"))
                break
        self.stop.set()
        for t in clients:
            t.join(180)
        elapsed = time.time() - self.t0
        problems = []
        # running / waiting back to 0
        counts = {}
        t0 = time.time()
        while time.time() - t0 < 30:
            try:
                counts = {n: self.metric(f"flashgen_num_requests_{n}") for n in ("running", "waiting")}
            except (requests.RequestException, KeyError) as e:
                counts = {"error": str(e)}
                break
            if counts == {"running": 0, "waiting": 0}:
                break
            time.sleep(0.2)
        if counts != {"running": 0, "waiting": 0}:
            problems.append(f"running/waiting did not return to 0: {counts}")
        for t in aux:
            t.join(5)
        rss_verdict = self.rss_check(elapsed)
        if rss_verdict:
            problems.append(rss_verdict)
        if self.health["bad"]:
            problems.append(f"/health failed {self.health['bad']} times: "
                            f"{self.health['bad_msgs'][:5]}")
        problems += self.stop_server()
        if self.errors:
            problems.append(f"{len(self.errors)} unexpected answers")
        return self.summary(elapsed, counts, problems)

    def rss_check(self, elapsed):
        if not self.rss:
            return None if not self.pid else "no RSS samples"
        warm = max(10.0, elapsed / 4)
        early = [v for t, v in self.rss if t <= warm]
        late = [v for t, v in self.rss if t > warm]
        if not early or not late:
            return None
        self.rss_base, self.rss_peak = max(early), max(late)
        self.rss_limit = self.rss_base * 1.10 + 20 * 1024
        if self.rss_peak > self.rss_limit:
            return (f"RSS grew after warm-up: peak {self.rss_peak / 1024:.1f} MiB > limit "
                    f"{self.rss_limit / 1024:.1f} MiB (warm-up peak {self.rss_base / 1024:.1f})")
        return None

    def summary(self, elapsed, counts, problems):
        total = sum(self.outcomes.values())
        kinds = sorted({k for k, _ in self.outcomes})
        out = {"seconds": round(elapsed, 1), "clients": self.a.clients, "requests": total,
               "requests_per_s": round(total / max(elapsed, 1e-9), 1),
               "by_kind": {k: {o: n for (kk, o), n in sorted(self.outcomes.items()) if kk == k}
                           for k in kinds},
               "unexpected": len(self.errors), "first_errors": self.errors[:20],
               "health": {k: v for k, v in self.health.items() if k != "bad_msgs"},
               "final_counts": counts, "problems": problems}
        if self.rss:
            step = max(1, len(self.rss) // 8)
            pts = self.rss[::step] + ([self.rss[-1]] if (len(self.rss) - 1) % step else [])
            out["rss_mib"] = [[round(t), round(v / 1024, 1)] for t, v in pts]
            if hasattr(self, "rss_base"):
                out["rss_warmup_peak_mib"] = round(self.rss_base / 1024, 1)
                out["rss_after_peak_mib"] = round(self.rss_peak / 1024, 1)
                out["rss_limit_mib"] = round(self.rss_limit / 1024, 1)
        print(f"soak: {total} requests in {elapsed:.0f} s from {self.a.clients} clients "
              f"({out['requests_per_s']}/s)")
        for k in kinds:
            print(f"  {k:20s} " + "  ".join(f"{o}={n}" for o, n in out["by_kind"][k].items()))
        print(f"  /health: {self.health['n']} probes, {self.health['bad']} failed, "
              f"slowest {self.health['max_s'] * 1000:.0f} ms")
        if self.rss:
            print("  RSS (s, MiB): " + "  ".join(f"{t}:{v}" for t, v in out["rss_mib"]))
            if hasattr(self, "rss_base"):
                print(f"  RSS warm-up peak {out['rss_warmup_peak_mib']} MiB, after warm-up peak "
                      f"{out['rss_after_peak_mib']} MiB, limit {out['rss_limit_mib']} MiB")
        print(f"  running/waiting at the end: {counts}")
        for kind, msg in self.errors[:20]:
            print(f"  UNEXPECTED {kind}: {msg}")
        for p in problems:
            print(f"  FAIL: {p}")
        print("soak: " + ("PASS" if not problems else "FAIL"))
        if self.a.json:
            with open(self.a.json, "w") as f:
                json.dump(out, f, indent=1)
        return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=300, help="seconds of load (default 300)")
    ap.add_argument("--requests", type=int, default=0, help="stop after this many (0 = no limit)")
    ap.add_argument("--clients", type=int, default=24, help="concurrent clients (default 24)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--binary", default=os.path.join(os.environ.get("FLASHGEN_BUILD", "build"),
                                                     "flashgen"))
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--server-flag", action="append", default=[],
                    help="extra flag for the started server (repeat; e.g. --server-flag=--threads=2)")
    ap.add_argument("--url", help="target a running server instead of starting one")
    ap.add_argument("--pid", type=int, help="with --url: the server's pid, for RSS sampling")
    ap.add_argument("--json", help="write the summary as JSON here")
    a = ap.parse_args(argv)
    out = Soak(a).run()
    return 0 if not out["problems"] else 1


if __name__ == "__main__":
    sys.exit(main())
