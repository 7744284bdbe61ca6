"""Continuous batching seen from outside: concurrent streams get exactly their solo output,
disconnects free their slots, overload is refused at once."""
import json
import socket
import threading
import time

import requests

from fg_http import sse_events, stream_generate


def test_16_concurrent_streams_match_solo(server):
    # different prompt lengths, so prefill chunks and decode steps mix in one batch
    prompts = [f"Request {i}: " + "tell me about the sea and " * (i % 5) + "the sky" for i in range(16)]
    solo = [server.post("/generate", {"inputs": p, "parameters": {"max_new_tokens": 8}}).json()
            ["generated_text"] for p in prompts]
    out = [None] * 16
    errors = []

    def run(i):
        try:
            events = stream_generate(server.url, prompts[i], max_new_tokens=8)
            out[i] = events[-1]["generated_text"]
            assert out[i] == "".join(e["token"]["text"] for e in events)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    for i in range(16):
        assert out[i] == solo[i], f"request {i}: batched {out[i]!r} != solo {solo[i]!r}"
    assert server.metric("flashgen_num_requests_running") == 0


def open_stream(port, inputs, n=200):
    """A raw streaming request; returns the socket after the first token event arrived."""
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    body = json.dumps({"inputs": inputs, "parameters": {"max_new_tokens": n, "ignore_eos": True}})
    s.sendall((f"POST /generate_stream HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n{body}").encode())
    got = b""
    while b"data:" not in got:
        chunk = s.recv(4096)
        assert chunk, "connection closed before the first event"
        got += chunk
    assert got.startswith(b"HTTP/1.1 200")
    return s


def wait_metric(server, name, value, timeout=30):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if server.metric(name) == value:
            return time.time() - t0
        time.sleep(0.05)
    raise AssertionError(f"{name} did not reach {value}: {server.metric(name)}")


def test_disconnects_free_slots(server):
    cancelled0 = requests.get(server.url + "/metrics").text.count("\n")  # warm up /metrics
    before = server.metric('flashgen_requests_total{outcome="cancelled"}')
    socks = [open_stream(server.port, f"Write a long essay number {i}") for i in range(4)]
    assert server.metric("flashgen_num_requests_running") + server.metric("flashgen_num_requests_waiting") > 0
    for s in socks:
        s.close()
    wait_metric(server, "flashgen_num_requests_running", 0)
    wait_metric(server, "flashgen_num_requests_waiting", 0)
    wait_metric(server, "flashgen_kv_cache_usage_perc", 0)
    assert server.metric('flashgen_requests_total{outcome="cancelled"}') == before + 4
    assert cancelled0 > 0
    # the server still serves
    r = server.post("/generate", {"inputs": "Hi", "parameters": {"max_new_tokens": 2}})
    assert r.status_code == 200


def test_disconnect_non_streaming(server):
    """A client that gives up on a plain /generate: the job is cancelled, not run to the end."""
    before = server.metric('flashgen_requests_total{outcome="cancelled"}')
    try:
        requests.post(server.url + "/generate", json={"inputs": "Write a very long story",
                                                      "parameters": {"max_new_tokens": 400,
                                                                     "ignore_eos": True}},
                      timeout=1.0)
    except requests.exceptions.ReadTimeout:
        pass
    wait_metric(server, "flashgen_num_requests_running", 0, timeout=20)
    assert server.metric('flashgen_requests_total{outcome="cancelled"}') == before + 1


def test_overload_429_at_once(start_server):
    s = start_server("--max-concurrent-requests", "2")
    socks = [open_stream(s.port, f"Long text {i}") for i in range(2)]
    t0 = time.time()
    r = s.post("/generate", {"inputs": "one more", "parameters": {"max_new_tokens": 2}})
    dt = time.time() - t0
    assert r.status_code == 429, r.text
    assert r.json()["error_type"] == "overloaded"
    assert dt < 1.0
    r = requests.post(s.url + "/v1/completions", json={"prompt": "x", "max_tokens": 1})
    assert r.status_code == 429
    assert r.json()["error"]["type"] == "overloaded"
    assert s.metric('flashgen_requests_total{outcome="overloaded"}') == 2
    for sk in socks:
        sk.close()
    wait_metric(s, "flashgen_num_requests_running", 0)
    assert s.post("/generate", {"inputs": "now", "parameters": {"max_new_tokens": 2}}).status_code == 200


def test_health_answers_while_busy(server):
    socks = [open_stream(server.port, f"Busy {i}", n=60) for i in range(3)]
    t0 = time.time()
    h = requests.get(server.url + "/health", timeout=5)
    assert h.status_code == 200
    assert time.time() - t0 < 0.5
    for s in socks:
        s.close()
    wait_metric(server, "flashgen_num_requests_running", 0)


def test_stream_ends_with_error_event_on_timeout(start_server):
    s = start_server("--request-timeout", "0.5")
    long = {"max_new_tokens": 500, "ignore_eos": True}
    with requests.post(s.url + "/generate_stream", json={"inputs": "Write a long story",
                       "parameters": long}, stream=True, timeout=60) as r:
        assert r.status_code == 200
        events = [json.loads(d) for d in sse_events(r)]
    assert events[-1]["error_type"] == "timeout"
    assert "error" in events[-1]
    r = s.post("/generate", {"inputs": "Write a long story", "parameters": long})
    assert r.status_code == 504
    assert r.json()["error_type"] == "timeout"
    with requests.post(s.url + "/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "Write a long story"}], "max_tokens": 500,
            "ignore_eos": True, "stream": True}, stream=True, timeout=60) as r:
        data = list(sse_events(r))
    assert data[-1] == "[DONE]"
    assert json.loads(data[-2])["error"]["type"] == "timeout"
    assert s.metric('flashgen_requests_total{outcome="timeout"}') == 3


def test_sse_keepalive_while_queued(start_server):
    """A stream waiting for a batch slot gets ":" comments (proxies keep it open); a client that
    leaves while queued is noticed through them and never runs."""
    s = start_server("--max-batch-seqs", "1", "--sse-ping", "0.2")
    busy = open_stream(s.port, "Occupy the only slot", n=300)
    waiting = socket.create_connection(("127.0.0.1", s.port), timeout=30)
    body = json.dumps({"inputs": "queued", "parameters": {"max_new_tokens": 4}})
    waiting.sendall((f"POST /generate_stream HTTP/1.1\r\nHost: t\r\nContent-Type: application/json"
                     f"\r\nContent-Length: {len(body)}\r\n\r\n{body}").encode())
    got = b""
    t0 = time.time()
    while time.time() - t0 < 5 and got.count(b":\n\n") < 2:
        got += waiting.recv(4096)
    assert got.startswith(b"HTTP/1.1 200")
    assert got.count(b":\n\n") >= 2 and b"data:" not in got, got
    assert s.metric("flashgen_num_requests_waiting") == 1
    waiting.close()
    wait_metric(s, "flashgen_num_requests_waiting", 0, timeout=10)
    assert s.metric('flashgen_requests_total{outcome="cancelled"}') == 1
    busy.close()
    wait_metric(s, "flashgen_num_requests_running", 0)
    assert s.metric('flashgen_requests_total{outcome="cancelled"}') == 2
