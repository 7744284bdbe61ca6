"""CORS (cors_allow_origins) and x-request-id, with python's http.client as a browser would speak:
the preflight OPTIONS gets 204 with the allowed methods, headers and max-age (no API key needed,
browsers send none there); replies, streams and errors carry Access-Control-Allow-Origin for an
allowed origin only; without the option no CORS header is sent. x-request-id: the client's (up to
128 printable characters) is echoed and written in the request's log line, any other gets a
generated 32-hex-digit one. Here http.client plays the browser, header by header; a real one,
headless Chromium, runs fetch() against the server in test_cors_browser.py."""
import http.client
import json
import re
import time

import pytest

ALLOWED = "https://app.example"


def request(server, method, path, body=None, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    h = dict(headers or {})
    data = None
    if body is not None:
        data = json.dumps(body)
        h["Content-Type"] = "application/json"
    c.request(method, path, body=data, headers=h)
    r = c.getresponse()
    payload = r.read()
    c.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, payload


@pytest.fixture(scope="module")
def cors_server():
    from fg_http import Server
    s = Server("--cors-allow-origins", f"{ALLOWED}, http://localhost:3000", "--api-key", "k")
    yield s
    s.stop()


AUTH = {"Authorization": "Bearer k"}


def test_preflight(cors_server):
    st, h, body = request(cors_server, "OPTIONS", "/v1/chat/completions", headers={
        "Origin": ALLOWED, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert st == 204 and body == b""
    assert h["access-control-allow-origin"] == ALLOWED
    assert "POST" in h["access-control-allow-methods"]
    assert h["access-control-allow-headers"] == "authorization, content-type"
    assert int(h["access-control-max-age"]) > 0
    assert h["vary"] == "Origin"
    # a preflight from an origin not on the list is not approved
    st, h, _ = request(cors_server, "OPTIONS", "/v1/chat/completions", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert st != 204 and "access-control-allow-origin" not in h


def test_replies_and_streams_carry_the_origin(cors_server):
    body = {"prompt": "Hi", "max_tokens": 2}
    st, h, _ = request(cors_server, "POST", "/v1/completions", body,
                       {"Origin": "http://localhost:3000", **AUTH})
    assert st == 200 and h["access-control-allow-origin"] == "http://localhost:3000"
    assert "x-request-id" in h["access-control-expose-headers"].lower()
    st, h, payload = request(cors_server, "POST", "/v1/completions", {**body, "stream": True},
                             {"Origin": ALLOWED, **AUTH})
    assert st == 200 and h["content-type"].startswith("text/event-stream")
    assert h["access-control-allow-origin"] == ALLOWED and b"[DONE]" in payload
    st, h, _ = request(cors_server, "POST", "/v1/completions", {"prompt": 1},
                       {"Origin": ALLOWED, **AUTH})
    assert st == 422 and h["access-control-allow-origin"] == ALLOWED  # errors too
    st, h, _ = request(cors_server, "GET", "/health", headers={"Origin": "https://evil.example"})
    assert st == 200 and "access-control-allow-origin" not in h


def test_off_by_default(server):
    st, h, _ = request(server, "OPTIONS", "/v1/completions", headers={
        "Origin": ALLOWED, "Access-Control-Request-Method": "POST"})
    assert st == 405 and "access-control-allow-origin" not in h
    st, h, _ = request(server, "GET", "/health", headers={"Origin": ALLOWED})
    assert "access-control-allow-origin" not in h


def test_star(start_server):
    s = start_server("--cors-allow-origins", "*")
    st, h, _ = request(s, "GET", "/v1/models", headers={"Origin": "https://any.example"})
    assert st == 200 and h["access-control-allow-origin"] == "*" and "vary" not in h


def test_request_id_echoed_and_logged(server):
    rid = "req-" + "x" * 100 + "-7"
    st, h, _ = request(server, "POST", "/v1/completions", {"prompt": "Hi", "max_tokens": 1},
                       {"X-Request-Id": rid})
    assert st == 200 and h["x-request-id"] == rid
    deadline = time.time() + 10
    while time.time() < deadline and not any(f"request_id={rid}" in ln for ln in server.lines):
        time.sleep(0.05)
    line = next(ln for ln in server.lines if f"request_id={rid}" in ln)
    assert "POST /v1/completions 200" in line
    for bad in ["a b", "x" * 129, "é"]:
        st, h, _ = request(server, "GET", "/v1/models", headers={"X-Request-Id": bad})
        assert re.fullmatch(r"[0-9a-f]{32}", h["x-request-id"]), h["x-request-id"]
    st, h1, _ = request(server, "GET", "/v1/models")
    st, h2, _ = request(server, "GET", "/v1/models")
    assert h1["x-request-id"] != h2["x-request-id"]
