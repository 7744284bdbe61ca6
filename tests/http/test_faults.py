"""Fault tests against the real binary: broken model files, a bad config, a busy port, slow and
greedy clients, request storms, KV-cache exhaustion, oversized headers. The server must refuse
with a message that names the culprit, or keep serving; it must never crash."""
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests

from fg_http import BINARY, MODEL, ROOT, sse_events

G = "/generate"


def serve_fails(*args, timeout=60):
    """Run `flashgen serve` expecting it to stop by itself; returns the CompletedProcess."""
    p = subprocess.run([BINARY, "serve", "--host", "127.0.0.1", "--port", "0", "--device", "cpu",
                        *args], cwd=ROOT, capture_output=True, text=True, errors="replace",
                       timeout=timeout)
    assert p.returncode > 0, f"expected a failure exit, got {p.returncode}:\n{p.stderr[-2000:]}"
    return p


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Tiny random models in every format (tools/make_tiny_models.py, ~2 s)."""
    out = tmp_path_factory.mktemp("tiny")
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_tiny_models.py"),
                    "--out", str(out)], check=True, capture_output=True)
    return out


# ---- model files --------------------------------------------------------------------------------

def copy_prefix(src, dst, n):
    with open(src, "rb") as f, open(dst, "wb") as g:
        g.write(f.read(n))


@pytest.mark.parametrize("case,needle", [
    ("empty", "empty"),
    ("bad_magic", "not a GGUF"),
    ("truncated_header", "truncated"),
    ("truncated_data", "truncated"),
    ("corrupt_metadata", ""),
])
def test_broken_gguf_exits_naming_the_file(tmp_path, case, needle):
    path = tmp_path / f"{case}.gguf"
    size = os.path.getsize(MODEL)
    if case == "empty":
        path.write_bytes(b"")
    elif case == "bad_magic":
        path.write_bytes(b"GGML" + b"\0" * 4096)
    elif case == "truncated_header":
        copy_prefix(MODEL, path, 100)
    elif case == "truncated_data":
        copy_prefix(MODEL, path, size // 2)
    else:  # every byte of the metadata after the header counts is garbage
        with open(MODEL, "rb") as f:
            head = bytearray(f.read(1 << 20))
        head[24:4096] = b"\xff" * (4096 - 24)
        path.write_bytes(bytes(head))
    t0 = time.time()
    p = serve_fails("--model", str(path))
    assert p.returncode == 1
    assert str(path) in p.stderr, p.stderr
    assert "model load failed" in p.stderr and needle in p.stderr, p.stderr
    assert time.time() - t0 < 30


def test_random_header_corruption_never_crashes(tiny, start_server, tmp_path):
    """Bytes flipped at random in a tiny GGUF's header and metadata: start-up either fails with a
    message naming the file (exit 1) or the model loads and serves; never a signal."""
    src = tiny / "gqa1_tied" / "gqa1_tied.Q8_0.gguf"
    data = src.read_bytes()
    rng = random.Random(6)
    loaded = failed = 0
    for k in range(10):
        b = bytearray(data)
        for _ in range(8):
            b[rng.randrange(8, 2048)] = rng.randrange(256)
        path = tmp_path / f"c{k}.gguf"
        path.write_bytes(bytes(b))
        p = subprocess.Popen([BINARY, "serve", "--host", "127.0.0.1", "--port", "0", "--device",
                              "cpu", "--model", str(path), "--log-requests", "false"], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             errors="replace")
        out = ""
        t0 = time.time()
        while time.time() - t0 < 30:
            line = p.stdout.readline()
            out += line
            if not line or " ready: " in line or "load failed" in line:
                break
        if " ready: " in out:
            loaded += 1
            port = int(out.split("listening on http://127.0.0.1:")[1].split()[0])
            r = requests.post(f"http://127.0.0.1:{port}{G}",
                              json={"inputs": "ab", "parameters": {"max_new_tokens": 2}}, timeout=30)
            assert r.status_code in (200, 422), r.text
            p.terminate()
        else:
            failed += 1
            assert str(path) in out, out
        rest, _ = p.communicate(timeout=30)
        assert p.returncode in (0, 1), f"corruption {k}: exit {p.returncode}\n{out}{rest}"
    assert loaded + failed == 10


def test_nan_weights_serve_without_crash(tiny, start_server, tmp_path):
    """A GGUF whose tensor data is garbage (NaN everywhere) loads; generation must answer (any
    text, or an error) and the server must stay healthy."""
    src = tiny / "gqa1_tied" / "gqa1_tied.F32.gguf"
    b = bytearray(src.read_bytes())
    tail = len(b) // 2  # the tensor data sits in the second half of this file
    b[tail:] = b"\xff" * (len(b) - tail)
    path = tmp_path / "nan.gguf"
    path.write_bytes(bytes(b))
    s = start_server("--model", str(path))
    for path_, body in ((G, {"inputs": "ab", "parameters": {"max_new_tokens": 3}}),
                        (G, {"inputs": "ab", "parameters": {"max_new_tokens": 3,
                                                            "temperature": 0.7, "seed": 1}}),
                        ("/generate_stream", {"inputs": "ab", "parameters": {"max_new_tokens": 3}})):
        r = s.post(path_, body)
        assert r.status_code in (200, 500), r.text
    assert requests.get(s.url + "/health", timeout=5).status_code == 200
    assert s.stop() == 0


def test_hf_directory_with_missing_shard(tiny, tmp_path):
    d = tmp_path / "sharded"
    shutil.copytree(tiny / "gqa1_tied" / "hf_sharded", d)
    (d / "model-00002-of-00002.safetensors").unlink()
    p = serve_fails("--model", str(d))
    assert p.returncode == 1
    assert "model-00002-of-00002.safetensors" in p.stderr, p.stderr
    # a shard cut short
    shutil.copy(tiny / "gqa1_tied" / "hf_sharded" / "model-00002-of-00002.safetensors", d)
    with open(d / "model-00001-of-00002.safetensors", "r+b") as f:
        f.truncate(os.path.getsize(d / "model-00001-of-00002.safetensors") // 2)
    p = serve_fails("--model", str(d))
    assert "model-00001-of-00002.safetensors" in p.stderr, p.stderr
    # no config.json
    e = tmp_path / "noconfig"
    shutil.copytree(tiny / "gqa1_tied" / "hf", e)
    (e / "config.json").unlink()
    p = serve_fails("--model", str(e))
    assert "config.json" in p.stderr or str(e) in p.stderr, p.stderr


# ---- configuration and start-up -----------------------------------------------------------------

@pytest.mark.parametrize("cfg,option", [
    ({"port": "eighty"}, "port"),
    ({"max_batch_tokens": [512]}, "max_batch_tokens"),
    ({"threads": 1.5}, "threads"),
    ({"kv_fraction": "most"}, "kv_fraction"),
    ({"log_requests": "maybe"}, "log_requests"),
    ({"device": "tpu"}, "device"),
    ({"max_connections": 0}, "max_connections"),
    ({"max_header_bytes": {"a": 1}}, "max_header_bytes"),
    ({"no_such_option": 1}, "no_such_option"),
])
def test_config_file_with_wrong_types(tmp_path, cfg, option):
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(cfg))
    p = serve_fails("--config", str(f), timeout=20)
    assert p.returncode == 2
    assert option in p.stderr and str(f) in p.stderr, p.stderr


def test_config_file_not_json(tmp_path):
    f = tmp_path / "bad.json"
    f.write_text('{"port": 80,')
    p = serve_fails("--config", str(f), timeout=20)
    assert p.returncode == 2 and str(f) in p.stderr, p.stderr


def test_port_already_in_use(start_server):
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    t0 = time.time()
    p = serve_fails("--port", str(port), "--model", MODEL)
    assert p.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in p.stderr, p.stderr
    assert time.time() - t0 < 10
    blocker.close()
    # a second flashgen on a port a flashgen holds must fail too (no SO_REUSEPORT sharing)
    s = start_server()
    p = serve_fails("--port", str(s.port), "--model", MODEL)
    assert p.returncode == 1 and "cannot listen" in p.stderr, p.stderr
    assert requests.get(s.url + "/health", timeout=5).status_code == 200


def test_kv_cache_too_small_to_start():
    p = serve_fails("--kv-cache-mb", "1", "--model", MODEL)
    assert p.returncode == 1 and "kv_cache" in p.stderr and "pages" in p.stderr, p.stderr


# ---- clients ------------------------------------------------------------------------------------

def test_slow_clients_are_dropped_after_the_timeout(start_server):
    s = start_server("--connection-timeout", "2")
    # The generation below must outlast the 2 s timeout whatever the build's speed: a fixed
    # count does not (1000 tokens took over 120 s under the sanitizers in CI on 2026-12-02, and
    # 160 tokens took 1.6 s on a quiet optimized build), so size it from a measured rate.
    t = time.time()
    r = s.post(G, {"inputs": "Tell a story", "parameters": {"max_new_tokens": 32,
                                                           "ignore_eos": True}})
    assert r.status_code == 200, r.text
    rate = 32 / max(time.time() - t, 1e-3)
    tokens = max(64, min(4000, int(rate * 5.0)))
    # 1. a request that never finishes arriving (slowloris)
    loris = socket.create_connection(("127.0.0.1", s.port), timeout=15)
    loris.sendall(b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"inp")
    # 2. a client that pipelines many requests and never reads the answers
    reader = socket.socket()
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    reader.connect(("127.0.0.1", s.port))
    reader.settimeout(2)
    req = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 2000
    sent = 0
    try:
        while sent < len(req):
            sent += reader.send(req[sent:])
    except socket.timeout:
        pass
    t0 = time.time()
    # others are served meanwhile, including a non-streamed generation of about 5 s, longer than
    # the timeout, on a connection idle until its answer
    r = s.post(G, {"inputs": "Tell a story", "parameters": {"max_new_tokens": tokens,
                                                           "ignore_eos": True}})
    assert r.status_code == 200, r.text
    assert time.time() - t0 > 2.0, "the generation should outlast the connection timeout"
    assert requests.get(s.url + "/health", timeout=1).status_code == 200
    # the slowloris was closed by the server without an answer
    assert loris.recv(100) == b""
    # the non-reader was dropped: the stream of answers ends long before 2000 answers
    got = 0
    metrics_len = len(requests.get(s.url + "/metrics").content)
    try:
        while True:
            d = reader.recv(65536)
            if not d:
                break
            got += len(d)
    except ConnectionResetError:
        pass
    except socket.timeout:
        pytest.fail(f"the non-reading client was not dropped ({got} bytes read)")
    assert got < 200 * metrics_len, got
    loris.close()
    reader.close()
    assert requests.get(s.url + "/health", timeout=1).status_code == 200


def test_connection_limit(start_server):
    """max_connections bounds the open connections, but idle ones (owing a request) are evicted,
    oldest first, when a new client needs a slot: a probe is served with every slot taken
    (issue 11: a slowloris held them all)."""
    s = start_server("--max-connections", "4")
    idle = [socket.create_connection(("127.0.0.1", s.port)) for _ in range(4)]
    time.sleep(0.3)
    assert requests.get(s.url + "/health", timeout=2).status_code == 200
    idle[0].settimeout(2)
    assert idle[0].recv(1) == b"", "the oldest idle connection was not evicted"
    for c in idle:
        c.close()
    assert requests.get(s.url + "/health", timeout=2).status_code == 200
    assert s.proc.poll() is None


def test_request_storm_past_the_limit(start_server):
    s = start_server("--max-concurrent-requests", "4")
    n = 40
    results = [None] * n

    def fire(i):
        path = [G, "/v1/completions", "/generate_stream"][i % 3]
        body = ({"prompt": f"storm {i}", "max_tokens": 4} if path == "/v1/completions" else
                {"inputs": f"storm {i}", "parameters": {"max_new_tokens": 4}})
        try:
            r = requests.post(s.url + path, json=body, timeout=120)
            results[i] = (path, r.status_code, r.text)
        except requests.RequestException as e:
            results[i] = (path, -1, str(e))

    threads = [threading.Thread(target=fire, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    health = [requests.get(s.url + "/health", timeout=1).status_code for _ in range(5)]
    for t in threads:
        t.join(180)
    codes = [c for _, c, _ in results]
    assert set(codes) <= {200, 429}, results
    assert codes.count(429) > 0 and codes.count(200) >= 4, codes
    for path, code, text in results:
        if code == 429:
            body = json.loads(text)
            etype = body["error"]["type"] if path.startswith("/v1/") else body["error_type"]
            assert etype == "overloaded"
    assert health == [200] * 5
    assert s.metric('flashgen_requests_total{outcome="overloaded"}') == codes.count(429)
    assert s.metric("flashgen_num_requests_running") == 0
    assert s.metric("flashgen_num_requests_waiting") == 0
    assert s.post(G, {"inputs": "after", "parameters": {"max_new_tokens": 2}}).status_code == 200
    assert s.stop() == 0


def kv_run(s, n, max_new):
    out = [None] * n

    def go(i):
        t = time.time()
        r = s.post(G, {"inputs": "Hi", "parameters": {"max_new_tokens": max_new,
                                                     "ignore_eos": True}})
        out[i] = (r.status_code, r.json(), time.time() - t)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return out


def test_kv_cache_exhaustion_waits(start_server):
    # 2 MiB = 2 pages of 16 tokens: a request of 1 + 20 tokens reserves both, so one runs at a time
    s = start_server("--kv-cache-mb", "2")
    info = requests.get(s.url + "/info").json()
    assert info["max_total_tokens"] == 32, info
    out = kv_run(s, 3, 20)
    assert [o[0] for o in out] == [200] * 3, out
    assert len({o[1]["generated_text"] for o in out}) == 1
    times = sorted(o[2] for o in out)
    assert times[2] > 1.8 * times[0], f"requests should have run one after another: {times}"
    # what can never fit is refused at once with the limit in the message
    r = s.post(G, {"inputs": "word " * 40, "parameters": {"max_new_tokens": 2}})
    assert r.status_code == 422 and "less than 32 tokens" in r.json()["error"]
    r = s.post(G, {"inputs": "Hi", "parameters": {"max_new_tokens": 100}})
    assert r.status_code == 422 and "must be <= 32" in r.json()["error"]
    assert s.metric("flashgen_kv_cache_usage_perc") == 0
    assert s.stop() == 0


def test_kv_cache_exhaustion_queue_timeout(start_server):
    s = start_server("--kv-cache-mb", "2", "--queue-timeout", "0.5")
    out = kv_run(s, 3, 20)
    codes = sorted(o[0] for o in out)
    # Pages are taken on demand now (issue 14): a request needs 1 page + 1 spare to be admitted,
    # so how many of the three are admitted before the 0.5 s queue deadline depends on how fast
    # the first one's tokens come; what must hold: one runs, the others run or time out as 504.
    assert codes[0] == 200 and all(c in (200, 504) for c in codes), out
    for code, body, _ in out:
        if code == 504:
            assert body["error_type"] == "timeout" and body["error"]
    assert s.metric("flashgen_num_requests_waiting") == 0
    assert s.post(G, {"inputs": "Hi", "parameters": {"max_new_tokens": 2}}).status_code == 200


def test_header_limit_431(start_server):
    s = start_server("--max-header-bytes", "4096")
    ok = requests.get(s.url + "/health", headers={"X-Pad": "a" * 3000}, timeout=5)
    assert ok.status_code == 200
    r = requests.get(s.url + "/health", headers={"X-Pad": "a" * 5000}, timeout=5)
    assert r.status_code == 431
    assert r.json()["error_type"] == "header_too_large" and "4096" in r.json()["error"]
    r = requests.post(s.url + "/v1/completions", json={"prompt": "x"},
                      headers={"X-Pad": "a" * 5000}, timeout=5)
    assert r.status_code == 431 and r.json()["error"]["type"] == "header_too_large"
    # far past MHD's own pool: still refused, the server still serves
    with socket.create_connection(("127.0.0.1", s.port), timeout=5) as c:
        try:
            c.sendall(b"GET /health HTTP/1.1\r\nX-Pad: " + b"a" * 300000 + b"\r\n\r\n")
        except OSError:
            pass
        try:
            head = c.recv(100)
        except ConnectionResetError:
            head = b""
        assert head == b"" or head.startswith(b"HTTP/1.1 431"), head
    assert requests.get(s.url + "/health", timeout=5).status_code == 200


def test_limits_are_configurable_with_defaults():
    p = subprocess.run([BINARY, "serve", "--help"], cwd=ROOT, capture_output=True, text=True)
    for opt, default in (("--max-body-bytes", "2000000"), ("--max-header-bytes", "32768"),
                         ("--max-connections", "1024"), ("--connection-timeout", "60"),
                         ("--max-input-tokens", "0"), ("--max-total-tokens", "0"),
                         ("--max-concurrent-requests", "0"), ("--queue-timeout", "60"),
                         ("--request-timeout", "600"), ("--default-max-new-tokens", "100")):
        i = p.stdout.index(opt + " ")
        assert f"default: {default} " in p.stdout[i:i + 400], opt


def test_stream_survives_queue_wait_longer_than_the_timeout(start_server):
    """Waiting for a batch slot is not inactivity: a queued stream with no keep-alive pings
    outlives --connection-timeout."""
    s = start_server("--connection-timeout", "1", "--sse-ping", "0", "--max-batch-seqs", "1")
    busy = threading.Thread(target=s.post, args=(G, {"inputs": "x", "parameters": {
        "max_new_tokens": 30, "ignore_eos": True}}))
    busy.start()
    time.sleep(0.3)
    with requests.post(s.url + "/generate_stream", json={"inputs": "y", "parameters": {
            "max_new_tokens": 3}}, stream=True, timeout=60) as r:
        events = [json.loads(d) for d in sse_events(r)]
    busy.join(60)
    assert r.status_code == 200 and events[-1]["generated_text"] is not None
