"""How a request ends as the server sees it: the log line of a stream cancelled by its client
carries the tokens it was sent; a client that sends part of a body and hangs up neither holds its
connection until the timeout nor delays shutdown; many over-limit bodies at once each get the
413 (issue 11)."""
import json
import signal
import socket
import time

from fg_http import sse_events

import requests


def _log_objects(lines):
    out = []
    for line in lines:
        try:
            o = json.loads(line)
        except ValueError:
            continue
        if isinstance(o, dict) and o.get("path"):
            out.append(o)
    return out


def test_cancelled_stream_logs_tokens_out(start_server):
    s = start_server("--log-format", "json", "--log-requests")
    body = {"inputs": "Once upon a time", "parameters": {"max_new_tokens": 400}}
    got = 0
    with requests.post(s.url + "/generate_stream", json=body, stream=True, timeout=120) as r:
        assert r.status_code == 200, r.text
        for _ in sse_events(r):
            got += 1
            if got == 3:
                break  # leaving the block closes the connection mid-stream
    assert got == 3
    deadline = time.time() + 20
    while time.time() < deadline:
        logs = [o for o in _log_objects(s.lines) if o["path"] == "/generate_stream"]
        if logs:
            break
        time.sleep(0.05)
    assert logs, "\n".join(s.lines)
    assert logs[0].get("outcome") == "cancelled", logs[0]
    assert logs[0]["tokens_out"] >= 3, logs[0]


def _half_body(port, path="/generate", declared=1000, sent=100):
    c = socket.create_connection(("127.0.0.1", port), timeout=10)
    c.sendall((f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               f"Content-Length: {declared}\r\n\r\n").encode() + b"{" + b" " * (sent - 1))
    return c


def test_half_body_then_close_does_not_delay_shutdown(start_server):
    s = start_server("--log-format", "json", "--log-requests")
    c = _half_body(s.port)
    time.sleep(0.3)
    c.close()
    time.sleep(0.5)
    t0 = time.time()
    s.proc.send_signal(signal.SIGTERM)
    rc = s.proc.wait(30)
    took = time.time() - t0
    assert rc == 0, "\n".join(s.lines)
    assert took < 4, f"shutdown took {took:.1f} s\n" + "\n".join(s.lines)


def test_half_body_still_open_does_not_delay_shutdown(start_server):
    """A client still sending its body when the signal comes is closed, not waited for."""
    s = start_server("--log-format", "json", "--log-requests")
    c = _half_body(s.port)
    time.sleep(0.3)
    t0 = time.time()
    s.proc.send_signal(signal.SIGTERM)
    rc = s.proc.wait(30)
    took = time.time() - t0
    c.close()
    assert rc == 0, "\n".join(s.lines)
    assert took < 4, f"shutdown took {took:.1f} s\n" + "\n".join(s.lines)


def _read_reply(c):
    got = b""
    while b"\r\n\r\n" not in got or not got.rstrip().endswith(b"}"):
        chunk = c.recv(4096)
        if not chunk:
            break
        got += chunk
    return got


def _big_partial(port, limit):
    """Declares a body over the limit, sends a part, waits for the answer (tools/soak.py)."""
    c = _half_body(port, declared=limit + 1, sent=1000)
    try:
        return _read_reply(c)
    finally:
        c.close()


def _big_whole(port, limit):
    """Sends the whole over-limit body before it reads (python's http.client, requests)."""
    c = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        c.sendall((f"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {4 * limit}\r\n\r\n").encode() + b"y" * (4 * limit))
        return _read_reply(c)
    finally:
        c.close()


def test_many_big_bodies_at_once_all_get_413(start_server):
    """Before: a client that sent part of an over-limit body and waited got nothing until the
    receive deadline closed the connection (the soak's `big body answer: b''`)."""
    from concurrent.futures import ThreadPoolExecutor
    limit = 65536
    s = start_server("--max-body-bytes", str(limit), "--request-read-timeout", "8",
                     "--max-connections", "64")
    kinds = [_big_partial, _big_whole] * 12
    t0 = time.time()
    with ThreadPoolExecutor(len(kinds)) as ex:
        answers = list(ex.map(lambda f: f(s.port, limit), kinds))
    for f, got in zip(kinds, answers):
        assert got.startswith(b"HTTP/1.1 413"), (f.__name__, got[:120])
        body = json.loads(got.split(b"\r\n\r\n", 1)[1])
        assert body["error_type"] == "payload_too_large", body
    assert time.time() - t0 < 8, "the answers came at the receive deadline"
    assert s.post("/generate", {"inputs": "x", "parameters": {"max_new_tokens": 1}}).status_code \
        == 200


def test_upload_mid_body_is_not_evicted_as_idle(start_server):
    """--max-connections 8 keeps 1 free: the 8th open connection evicts the one that has owed a
    whole request the longest. Seven uploads whose bodies are arriving are not idle: before, the
    first of them was evicted (an empty answer); now /health gets in and every upload its 413."""
    limit = 65536
    s = start_server("--max-body-bytes", str(limit), "--request-read-timeout", "8",
                     "--max-connections", "8")
    uploads = []
    for _ in range(7):
        uploads.append(_half_body(s.port, declared=limit + 1, sent=1000))
        time.sleep(0.15)  # its headers are read: a request is in progress on it
    h = requests.get(s.url + "/health", timeout=10)
    assert h.status_code == 200
    for c in uploads:
        try:
            got = _read_reply(c)
        finally:
            c.close()
        assert got.startswith(b"HTTP/1.1 413"), got[:120]
