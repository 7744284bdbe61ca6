"""CORS as a real browser sees it: headless Chromium (Debian's `chromium`, installed by
tools/setup.sh) loads a page from a small page server on another 127.0.0.1 port, and the page's
script calls flashgen with fetch(): non-simple requests (a JSON body, Content-Type application/json,
Authorization and X-Request-Id headers), so the browser sends a real preflight OPTIONS first.

The allowed page reads /health, a completion (and the exposed X-Request-Id header), a streamed chat
reply and a TGI /generate_stream chunk by chunk, a 422 and a 401 (errors must be readable too);
the same page's fetch to a server without the option, and a page from a second origin not on the
list, must fail with the browser's TypeError. The script writes what it saw as JSON into the DOM,
which `--dump-dom` prints; flashgen's log must show the browser's preflights.

Where Chromium is missing or cannot start (or FLASHGEN_TEST_NO_CHROMIUM=1), the same preflights
and requests are sent with curl and the headers checked, with a warning saying so (issue 15 allows
this); with neither Chromium nor curl the tests fail."""
import html
import http.server
import json
import os
import re
import shutil
import subprocess
import threading
import time
import warnings

import pytest

from fg_http import Server

KEY = "k"
CHROMIUM_TIMEOUT = 120  # seconds: a loaded 2-core machine starts Chromium in 1-10 s

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>cors</title></head><body>
<pre id="result">pending</pre>
<script>
const FG = %(fg)s, NOCORS = %(nocors)s, KEY = %(key)s;
const hold = fetch("/hold");  /* answered after /release: keeps Chromium's virtual time still */
const out = {origin: location.origin};
const H = {"Content-Type": "application/json", "Authorization": "Bearer " + KEY,
           "X-Request-Id": "browser-req-1"};
async function run(name, f) {
  try { out[name] = await f(); }
  catch (e) { out[name] = {error: e.name, message: String(e.message)}; }
}
async function post(base, path, body, headers) {
  return fetch(base + path, {method: "POST", headers: headers || H, body: JSON.stringify(body)});
}
(async () => {
  await run("health", async () => {
    const r = await fetch(FG + "/health", {headers: {"Authorization": "Bearer " + KEY}});
    return {status: r.status, body: (await r.text()).slice(0, 100)};
  });
  await run("completion", async () => {
    const r = await post(FG, "/v1/completions", {prompt: "Hi", max_tokens: 2});
    const j = await r.json();
    return {status: r.status, rid: r.headers.get("x-request-id"), object: j.object,
            text: typeof j.choices[0].text};
  });
  async function readStream(r) {
    const reader = r.body.getReader(), dec = new TextDecoder();
    let text = "", chunks = 0;
    for (;;) {
      const {done, value} = await reader.read();
      if (done) break;
      chunks++;
      text += dec.decode(value, {stream: true});
    }
    return {status: r.status, ctype: r.headers.get("content-type"), chunks,
            events: (text.match(/^data:/gm) || []).length, done: text.includes("data: [DONE]"),
            rid: r.headers.get("x-request-id")};
  }
  await run("stream", async () => readStream(await post(FG, "/v1/chat/completions",
      {messages: [{role: "user", content: "Hi"}], max_tokens: 3, stream: true})));
  await run("tgi_stream", async () => readStream(await post(FG, "/generate_stream",
      {inputs: "Hi", parameters: {max_new_tokens: 2}})));
  await run("error422", async () => {
    const r = await post(FG, "/v1/completions", {prompt: 1});
    const j = await r.json();
    return {status: r.status, type: j.error.type};
  });
  await run("unauth", async () => {
    const r = await post(FG, "/v1/completions", {prompt: "Hi", max_tokens: 1},
                         {"Content-Type": "application/json"});
    return {status: r.status, type: (await r.json()).error.type};
  });
  if (NOCORS) {
    await run("nocors", async () => {
      const r = await post(NOCORS, "/v1/completions", {prompt: "Hi", max_tokens: 1});
      return {status: r.status};
    });
  }
  document.getElementById("result").textContent = JSON.stringify(out);
  document.title = "done";
  await fetch("/release");
  await hold;
})();
</script></body></html>
"""


class PageServer:
    """A page server on 127.0.0.1 (its own origin) in a thread; .pages maps path to HTML.
    GET /hold answers once GET /release came (or after HOLD_S): while a page's /hold is pending,
    Chromium's virtual time stands still, so --dump-dom waits for everything the script does
    (a fetch whose body is still streaming does not hold it)."""

    HOLD_S = 100

    def __init__(self):
        pages = self.pages = {}
        released = self.released = threading.Event()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path == "/hold":
                    released.wait(PageServer.HOLD_S)
                elif self.path == "/release":
                    released.set()
                body = pages.get(self.path, "").encode()
                self.send_response(200 if body else 204 if self.path in ("/hold", "/release")
                                   else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Cache-Control", "no-store")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.origin = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def page(self, path, fg, nocors=None):
        """The URL of a new page calling flashgen at fg (and nocors, a server without CORS)."""
        self.released.clear()
        self.pages[path] = PAGE % {"fg": json.dumps(fg), "nocors": json.dumps(nocors),
                                   "key": json.dumps(KEY)}
        return self.origin + path

    def stop(self):
        self.released.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def chromium_dump(url, profile, budget_ms=60000):
    """Load url in headless Chromium and return the DOM it dumps (stdout) and its stderr.
    --no-sandbox: CI runs as root, where the sandbox refuses to start. --virtual-time-budget: the
    dump comes once that much virtual time has passed, and virtual time stands still while a fetch
    waits for its reply (the page's /hold, see PageServer), so it comes after the script's end."""
    exe = shutil.which("chromium")
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--no-first-run", "--no-default-browser-check", "--disable-extensions",
           f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}", "--dump-dom", url]
    p = subprocess.run(cmd, capture_output=True, text=True, errors="replace",
                       timeout=CHROMIUM_TIMEOUT)
    return p.returncode, p.stdout, p.stderr


class Browser:
    """Headless Chromium's profile folder (None where it cannot be used, with the reason)."""

    def __init__(self, profile=None, reason=""):
        self.profile, self.reason = profile, reason


@pytest.fixture(scope="module")
def chromium(tmp_path_factory):
    if os.environ.get("FLASHGEN_TEST_NO_CHROMIUM") == "1":
        return Browser(reason="FLASHGEN_TEST_NO_CHROMIUM=1")
    if not shutil.which("chromium"):
        return Browser(reason="no `chromium` on PATH (tools/setup.sh installs it)")
    profile = tmp_path_factory.mktemp("chromium-profile")
    probe = ("data:text/html,<p id=p></p>"
             "<script>document.getElementById('p').textContent='fg'+'-ok'</script>")
    try:
        rc, dom, err = chromium_dump(probe, profile, 1000)
    except (OSError, subprocess.TimeoutExpired) as e:
        return Browser(reason=f"chromium did not start: {e}")
    if rc != 0 or "fg-ok" not in dom:
        return Browser(reason=f"chromium did not run a page (rc {rc}): {err[-500:]}")
    return Browser(profile)


def browser_results(profile, url):
    rc, dom, err = chromium_dump(url, profile)
    m = re.search(r'<pre id="result">(.*?)</pre>', dom, re.S)
    assert rc == 0 and m and m.group(1) != "pending", \
        f"rc {rc}\nDOM:\n{dom}\nstderr:\n{err[-2000:]}"
    return json.loads(html.unescape(m.group(1)))


def curl(*args):
    """curl -i: (status, lowercased headers, body) of the last response."""
    p = subprocess.run(["curl", "-sS", "-i", "--max-time", "120", "-H", "Expect:", *args],
                       capture_output=True, timeout=150)  # bytes: text mode eats the CRs
    assert p.returncode == 0, p.stderr
    head, _, body = p.stdout.decode(errors="replace").partition("\r\n\r\n")
    lines = head.split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, body


def preflight(url, origin, method="POST", req_headers="authorization,content-type,x-request-id"):
    return curl("-X", "OPTIONS", "-H", f"Origin: {origin}", "-H",
                f"Access-Control-Request-Method: {method}", "-H",
                f"Access-Control-Request-Headers: {req_headers}", url)


def curl_post(url, origin, body, auth=True):
    h = ["-H", f"Origin: {origin}", "-H", "Content-Type: application/json", "-H",
         "X-Request-Id: browser-req-1"]
    if auth:
        h += ["-H", f"Authorization: Bearer {KEY}"]
    return curl(*h, "--data-binary", json.dumps(body), url)


def fallback(chromium_reason):
    if not shutil.which("curl"):
        pytest.fail(f"neither Chromium ({chromium_reason}) nor curl: CORS cannot be checked")
    warnings.warn(f"CORS checked with curl, not a browser: {chromium_reason}")


@pytest.fixture(scope="module")
def pages():
    p = PageServer()
    other = PageServer()  # a second origin, not on the server's list
    yield p, other
    p.stop()
    other.stop()


@pytest.fixture(scope="module")
def cors_server(pages):
    s = Server("--cors-allow-origins", f"https://app.example, {pages[0].origin}", "--api-key", KEY)
    yield s
    s.stop()


def wait_log(server, start, text, timeout=10):
    """Whether a log line from index start on contains text (waiting up to timeout)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if any(text in ln for ln in server.lines[start:]):
            return True
        time.sleep(0.05)
    return False


def test_allowed_origin(chromium, pages, cors_server, server):
    origin = pages[0].origin
    if chromium.profile is None:
        fallback(chromium.reason)
        check_allowed_with_curl(cors_server, server, origin)
        return
    seen, seen_off = len(cors_server.lines), len(server.lines)
    r = browser_results(chromium.profile, pages[0].page("/ok.html", cors_server.url, server.url))
    assert r["origin"] == origin
    assert r["health"]["status"] == 200, r
    assert r["completion"] == {"status": 200, "rid": "browser-req-1",
                               "object": "text_completion", "text": "string"}, r
    s = r["stream"]
    assert s["status"] == 200 and s["ctype"].startswith("text/event-stream"), r
    assert s["done"] and s["events"] >= 2 and s["rid"] == "browser-req-1", r
    t = r["tgi_stream"]  # TGI's stream: one event per token, no [DONE]
    assert t["status"] == 200 and t["ctype"].startswith("text/event-stream"), r
    assert 1 <= t["events"] <= 2 and t["rid"] == "browser-req-1", r
    assert r["error422"]["status"] == 422, r
    assert r["unauth"] == {"status": 401, "type": "unauthorized"}, r
    assert r["nocors"]["error"] == "TypeError", r  # the server without the option refuses
    # the browser did send real preflights, which flashgen approved (204) or refused (405)
    assert wait_log(cors_server, seen, "OPTIONS /v1/completions 204"), "\n".join(cors_server.lines)
    assert wait_log(cors_server, seen, "OPTIONS /v1/chat/completions 204")
    assert wait_log(cors_server, seen, "OPTIONS /generate_stream 204")
    assert wait_log(server, seen_off, "OPTIONS /v1/completions 405"), "\n".join(server.lines[-20:])


def test_other_origin_refused(chromium, pages, cors_server):
    if chromium.profile is None:
        fallback(chromium.reason)
        check_other_origin_with_curl(cors_server, pages[1].origin)
        return
    r = browser_results(chromium.profile, pages[1].page("/other.html", cors_server.url))
    assert r["origin"] == pages[1].origin
    for name in ["health", "completion", "stream", "tgi_stream", "error422", "unauth"]:
        assert r[name]["error"] == "TypeError", (name, r)


def check_allowed_with_curl(cors_server, server, origin):
    url = cors_server.url
    st, h, body = preflight(url + "/v1/completions", origin)
    assert st == 204 and body == "", (st, h)
    assert h["access-control-allow-origin"] == origin and h["vary"] == "Origin"
    assert "POST" in h["access-control-allow-methods"]
    allowed = {x.strip() for x in h["access-control-allow-headers"].lower().split(",")}
    assert {"authorization", "content-type", "x-request-id"} <= allowed
    st, h, _ = preflight(url + "/health", origin, "GET", "authorization")
    assert st == 204 and h["access-control-allow-origin"] == origin
    st, h, body = curl_post(url + "/v1/completions", origin, {"prompt": "Hi", "max_tokens": 2})
    assert st == 200 and h["access-control-allow-origin"] == origin, (st, h, body)
    assert "x-request-id" in h["access-control-expose-headers"].lower()
    assert h["x-request-id"] == "browser-req-1"
    st, h, body = curl_post(url + "/v1/chat/completions", origin,
                            {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3,
                             "stream": True})
    assert st == 200 and h["content-type"].startswith("text/event-stream")
    assert h["access-control-allow-origin"] == origin and "data: [DONE]" in body
    st, h, body = curl_post(url + "/generate_stream", origin,
                            {"inputs": "Hi", "parameters": {"max_new_tokens": 2}})
    assert st == 200 and h["content-type"].startswith("text/event-stream")
    assert h["access-control-allow-origin"] == origin and "data:" in body
    st, h, body = curl("-H", f"Origin: {origin}", "-H", f"Authorization: Bearer {KEY}",
                       url + "/health")
    assert st == 200 and h["access-control-allow-origin"] == origin, (st, h, body)
    st, h, _ = curl_post(url + "/v1/completions", origin, {"prompt": 1})
    assert st == 422 and h["access-control-allow-origin"] == origin
    st, h, _ = curl_post(url + "/v1/completions", origin, {"prompt": "Hi"}, auth=False)
    assert st == 401 and h["access-control-allow-origin"] == origin
    st, h, _ = preflight(server.url + "/v1/completions", origin)
    assert st == 405 and "access-control-allow-origin" not in h


def check_other_origin_with_curl(cors_server, origin):
    st, h, _ = preflight(cors_server.url + "/v1/completions", origin)
    assert st != 204 and "access-control-allow-origin" not in h
    st, h, _ = curl("-H", f"Origin: {origin}", cors_server.url + "/health")
    assert st == 200 and "access-control-allow-origin" not in h
