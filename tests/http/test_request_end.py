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
