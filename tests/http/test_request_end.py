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
