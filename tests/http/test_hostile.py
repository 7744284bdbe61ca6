"""Hostile input at the HTTP layer (issue 11): request smuggling, slow clients, early refusals,
log forging, HEAD, /tokenize off the loop thread, host and model-path validation.

Raw sockets are used where a client library would hide the behaviour (it would normalise the
headers, or retry). Slow-client tests lower the limits by flag and stay well under 20 s.
"""
import http.client
import os
import re
import signal
import socket
import stat
import subprocess
import threading
import time

import pytest
import requests

from fg_http import BINARY, MODEL, ROOT

BODY = b'{"inputs":"hi"}'


def raw(server, data, timeout=3.0):
    """Send DATA on a fresh connection; return everything read until the server closes (or the
    timeout passes) and whether the server closed."""
    s = socket.create_connection(("127.0.0.1", server.port))
    s.sendall(data)
    s.settimeout(timeout)
    out, closed = b"", False
    try:
        while True:
            d = s.recv(65536)
            if not d:
                closed = True
                break
            out += d
    except socket.timeout:
        pass
    except ConnectionResetError:
        closed = True
    s.close()
    return out, closed


def statuses(reply):
    return [int(m) for m in re.findall(rb"HTTP/1\.1 (\d{3}) ", reply)]


# ---- request smuggling ------------------------------------------------------------------------

def test_content_length_with_chunked_is_400_and_closes(server):
    """A chunked body with a Content-Length too: the empty chunked body used to run, then the
    GET hidden after it as a second request."""
    req = (b"POST /tokenize HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
           b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    reply, closed = raw(server, req)
    assert statuses(reply) == [400], reply
    assert closed, "the connection stays open after an ambiguous request"
    assert b"Content-Length and Transfer-Encoding" in reply


def test_two_different_content_lengths_are_400(server):
    req = (b"POST /tokenize HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nContent-Length: 3\r\n\r\n"
           % len(BODY) + BODY)
    reply, closed = raw(server, req)
    assert statuses(reply) == [400], reply
    assert closed


def test_space_before_colon_is_400(server):
    """`Content-Length : N` was ignored, so the body was parsed as the next request."""
    req = b"POST /tokenize HTTP/1.1\r\nHost: x\r\nContent-Length : %d\r\n\r\n" % len(BODY) + BODY
    reply, closed = raw(server, req)
    assert statuses(reply) == [400], reply
    assert closed


def test_unknown_transfer_encoding_gets_a_reply(server):
    req = b"POST /tokenize HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n" + BODY
    reply, closed = raw(server, req)
    assert statuses(reply) == [501], reply
    assert b"gzip" in reply and closed


def test_one_content_length_still_works(server):
    req = (b"POST /tokenize HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
           % len(BODY) + BODY)
    reply, _ = raw(server, req)
    assert statuses(reply) == [200], reply


# ---- HEAD and /v1/models/{id} -----------------------------------------------------------------

def test_head_on_every_get_route(server):
    model = requests.get(server.url + "/v1/models", timeout=10).json()["data"][0]["id"]
    for path in ["/health", "/info", "/metrics", "/v1/models", "/v1/models/" + model]:
        r = requests.head(server.url + path, timeout=10)
        assert r.status_code == 200, (path, r.status_code)
        assert r.content == b"" and int(r.headers["Content-Length"]) > 0, path
    assert requests.head(server.url + "/v1/models/other", timeout=10).status_code == 404


def test_retrieve_model_with_the_openai_client(server):
    openai = pytest.importorskip("openai")
    c = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    listed = c.models.list().data[0]
    got = c.models.retrieve(listed.id)
    assert got.id == listed.id and got.object == "model" and got.owned_by == listed.owned_by
    with pytest.raises(openai.NotFoundError):
        c.models.retrieve("no-such-model")


# ---- API key, 413, metrics --------------------------------------------------------------------

def test_api_key_checked_when_the_headers_arrive(start_server):
    """The 401 comes before the body: headers promising 1.9 MB, no body sent."""
    s = start_server("--api-key", "sekrit")
    sock = socket.create_connection(("127.0.0.1", s.port))
    sock.sendall(b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 1900000\r\n\r\n")
    sock.settimeout(3)
    try:
        reply = sock.recv(65536)
    except socket.timeout:
        reply = b""
    sock.close()
    assert statuses(reply) == [401], reply
    # a request with the key still works on the same server
    r = s.post("/generate", {"inputs": "x", "parameters": {"max_new_tokens": 1}},
               headers={"Authorization": "Bearer sekrit"})
    assert r.status_code == 200, r.text


def test_unauthorized_requests_are_counted(start_server):
    s = start_server("--api-key", "sekrit")
    for _ in range(5):
        assert requests.get(s.url + "/info", timeout=10).status_code == 401
        assert s.post("/generate", {"inputs": "x"}).status_code == 401
    assert s.metric('flashgen_requests_total{outcome="unauthorized"}') == 10


def test_large_body_gets_413_not_a_reset(start_server):
    """requests and http.client send the whole body before reading: they see the 413."""
    s = start_server("--max-body-bytes", "100000")
    big = b'{"inputs":"' + b"x" * 3_000_000 + b'"}'
    r = requests.post(s.url + "/generate", data=big, timeout=30,
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error_type"] == "payload_too_large"
    c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
    c.request("POST", "/generate", body=big, headers={"Content-Type": "application/json"})
    assert c.getresponse().status == 413
    c.close()


# ---- log forging ------------------------------------------------------------------------------

def test_control_bytes_in_the_path_are_escaped_in_the_log(start_server):
    s = start_server()
    requests.get(s.url + "/x%0d%0a2026-01-01T00:00:00.000Z%20GET%20/forged%20200", timeout=10)
    time.sleep(0.3)
    assert not any(line.startswith("2026-01-01") for line in s.lines), s.lines[-5:]
    line = next(l for l in s.lines if "/x" in l and " 404 " in l)
    assert "\\x0d\\x0a" in line and "\\x20GET\\x20/forged" in line


# ---- slow clients -----------------------------------------------------------------------------

def test_trickling_client_is_dropped_at_the_read_deadline(start_server):
    """A byte every 0.3 s defeats an idle timeout; the receive deadline still drops it."""
    s = start_server("--request-read-timeout", "2")
    sock = socket.create_connection(("127.0.0.1", s.port))
    t0 = time.time()
    closed = False
    try:
        for b in b"GET /health HTTP/1.1\r\nX-Slow: " + b"a" * 200:
            sock.sendall(bytes([b]))
            time.sleep(0.3)
            if time.time() - t0 > 8:
                break
    except (BrokenPipeError, ConnectionResetError):
        closed = True
    if not closed:
        sock.settimeout(1)
        try:
            closed = sock.recv(100) == b""
        except (ConnectionResetError, socket.timeout):
            closed = True
    sock.close()
    assert closed and time.time() - t0 < 6, "the trickling connection was not dropped"
    assert requests.get(s.url + "/health", timeout=5).status_code == 200


def test_slowloris_from_one_address_leaves_health_reachable(start_server):
    """300 trickling connections from 127.0.0.2 against 64 slots: the per-client limit keeps
    the rest free for other clients (127.0.0.1 here)."""
    s = start_server("--max-connections", "64", "--max-connections-per-client", "16",
                     "--request-read-timeout", "30")
    socks = []
    for _ in range(300):
        try:
            c = socket.socket()
            c.bind(("127.0.0.2", 0))
            c.settimeout(2)
            c.connect(("127.0.0.1", s.port))
            c.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            socks.append(c)
        except OSError:
            pass
    try:
        time.sleep(0.5)
        for _ in range(5):
            r = requests.get(s.url + "/health", timeout=3)
            assert r.status_code == 200
    finally:
        for c in socks:
            c.close()


# ---- /tokenize --------------------------------------------------------------------------------

def test_tokenize_runs_off_the_loop_and_is_bounded(start_server):
    """A large input used to block /health for seconds and return ~100 MB; now /health answers
    while it is tokenized, and more tokens than max_input_tokens get 422."""
    s = start_server("--max-input-tokens", "1000")
    text = " ".join(f"w{i}" for i in range(250_000))  # ~1.7 MB, ~500k tokens
    result = {}

    def tokenize():
        t0 = time.time()
        result["r"] = requests.post(s.url + "/tokenize", json={"inputs": text}, timeout=120)
        result["t"] = time.time() - t0

    th = threading.Thread(target=tokenize)
    th.start()
    worst = 0.0
    while th.is_alive():
        t0 = time.time()
        assert requests.get(s.url + "/health", timeout=5).status_code == 200
        worst = max(worst, time.time() - t0)
        time.sleep(0.05)
    th.join()
    r = result["r"]
    assert r.status_code == 422 and "1001 tokens" in r.text, r.text[:300]
    assert len(r.content) < 10_000
    assert worst < 1.0, f"/health took {worst:.2f} s while tokenizing ({result['t']:.2f} s)"


def test_tokenize_text_is_valid_utf8(server, tmp_path):
    """Byte-level BPE splits characters across tokens; each "text" must still be valid UTF-8
    (the partial bytes become U+FFFD, as the tokenizers library's decode([id]) gives)."""
    text = "日本語のテキスト 🙂 naïve"
    r = requests.post(server.url + "/tokenize", json={"inputs": text, "add_special_tokens": False},
                      timeout=30)
    assert r.status_code == 200
    toks = __import__("json").loads(r.content.decode("utf-8"))  # strict: raises on bad UTF-8
    raw_bytes = text.encode()
    assert b"".join(raw_bytes[t["start"]:t["stop"]] for t in toks) == raw_bytes
    tokenizers = pytest.importorskip("tokenizers")
    pytest.importorskip("gguf")
    subprocess.run(["python3", os.path.join(ROOT, "tools", "gguf_to_tokenizer_json.py"), MODEL,
                    str(tmp_path), "--only", "smollm2-legacy"], check=True, timeout=120)
    ref = tokenizers.Tokenizer.from_file(str(tmp_path / "smollm2-legacy" / "tokenizer.json"))
    assert [t["id"] for t in toks] == ref.encode(text, add_special_tokens=False).ids
    for t in toks:
        assert t["text"] == ref.decode([t["id"]]), t


# ---- host and model path ----------------------------------------------------------------------

def run_serve(*flags, timeout=15):
    return subprocess.run([BINARY, "serve", "--port", "0", *flags], cwd=ROOT, timeout=timeout,
                          capture_output=True, text=True)


def test_empty_host_is_refused_with_exit_2():
    p = run_serve("--host", "", "--model", MODEL)
    assert p.returncode == 2 and "host" in p.stderr, p.stderr


def test_unresolvable_host_exits_2():
    p = run_serve("--host", "no-such-host.invalid", "--model", MODEL)
    assert p.returncode == 2 and "no-such-host.invalid" in p.stderr, p.stderr


def test_host_name_localhost_is_resolved(start_server):
    s = start_server("--host", "localhost", wait_ready=False)
    assert s.proc.poll() is None, "\n".join(s.lines)
    socket.create_connection(("localhost", s.port), timeout=5).close()


def test_fifo_as_model_is_refused(tmp_path):
    """open() on a FIFO without a writer blocks forever (and SIGTERM was ignored)."""
    fifo = tmp_path / "model.gguf"
    os.mkfifo(fifo)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    p = run_serve("--model", str(fifo))
    assert p.returncode == 2 and "not a regular file" in p.stderr, p.stderr


# ---- bounded shutdown -------------------------------------------------------------------------

def test_shutdown_does_not_wait_for_a_long_forward_pass(start_server):
    """An ~8000-token prompt in one prefill chunk is a forward pass of tens of seconds on a CPU;
    SIGTERM with a 0.5 s grace used to wait for all of it. Exit comes a few seconds after the
    grace period however long the pass is."""
    s = start_server("--max-batch-tokens", "8192", "--shutdown-grace", "0.5")
    text = " ".join(f"w{i % 50}" for i in range(2800))  # ~7800 tokens
    n = len(requests.post(s.url + "/tokenize", json={"inputs": text}, timeout=30).json())
    assert 7000 < n < 8100, n
    threading.Thread(target=lambda: requests.post(
        s.url + "/generate", json={"inputs": text, "parameters": {"max_new_tokens": 1}},
        timeout=300), daemon=True).start()
    t0 = time.time()
    while s.metric("flashgen_num_requests_running") < 1:
        assert time.time() - t0 < 20, "the request was not admitted"
        time.sleep(0.1)
    time.sleep(0.5)
    t0 = time.time()
    s.proc.send_signal(signal.SIGTERM)
    try:
        rc = s.proc.wait(12)
    except subprocess.TimeoutExpired:
        pytest.fail("still running 12 s after SIGTERM (grace 0.5 s)")
    assert rc == 0, "\n".join(s.lines[-10:])
    assert time.time() - t0 < 12


def test_slowloris_from_many_connections_leaves_health_reachable(start_server):
    """No per-client limit: 200 trickling connections against 64 slots used to hold every slot
    until the idle timeout; the reserve evicts the longest-waiting ones so a probe gets in."""
    s = start_server("--max-connections", "64", "--max-connections-per-client", "0",
                     "--request-read-timeout", "60")
    socks = []
    try:
        for _ in range(200):
            try:
                c = socket.create_connection(("127.0.0.1", s.port), timeout=2)
                c.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
                socks.append(c)
            except OSError:
                pass
        time.sleep(0.5)
        for _ in range(5):
            assert requests.get(s.url + "/health", timeout=3).status_code == 200
    finally:
        for c in socks:
            c.close()
