"""Helpers for the black-box tests of `flashgen serve`: the real binary on an ephemeral port with the default model.

FLASHGEN_BUILD (default "build") names the build folder holding the `flashgen` binary; the model is
models/SmolLM2-135M-Instruct.Q4_1.gguf (`make model`). The session-wide server is shared by most
tests; tests that need other flags (limits, API key, shutdown) start their own through
`start_server`. Generations stay short (8-16 tokens): the CPU backend on 2 cores is slow.
"""
import json
import os
import re
import signal
import subprocess
import threading
import time

import pytest
import requests

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("FLASHGEN_BUILD", "build")
BINARY = os.path.join(ROOT, BUILD, "flashgen")
MODEL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")


class Server:
    """One `flashgen serve` process; its log lines are collected in .lines."""

    def __init__(self, *flags, wait_ready=True, env=None):
        if not os.path.exists(BINARY):
            pytest.fail(f"{BINARY} not found: run `make` first (FLASHGEN_BUILD={BUILD})")
        if not os.path.exists(MODEL):
            pytest.fail(f"{MODEL} not found: run `make model` first")
        cmd = [BINARY, "serve", "--host", "127.0.0.1", "--port", "0", "--model", MODEL, *flags]
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     env=full_env, text=True, errors="replace")
        self.lines = []
        self.port = None
        self._port_seen = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._port_seen.wait(20):
            self.stop()
            raise RuntimeError("server did not report its port:\n" + "\n".join(self.lines))
        self.url = f"http://127.0.0.1:{self.port}"
        if wait_ready:
            self.wait_ready()

    def _read(self):
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            self.lines.append(line)
            m = re.search(r"listening on http://[^ ]*:(\d+)", line)
            if m and self.port is None:
                self.port = int(m.group(1))
                self._port_seen.set()
        self._port_seen.set()

    def wait_ready(self, timeout=120):
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited:\n" + "\n".join(self.lines))
            try:
                if requests.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        raise RuntimeError("server not ready in time:\n" + "\n".join(self.lines))

    def metric(self, name):
        text = requests.get(self.url + "/metrics", timeout=10).text
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
        raise KeyError(name)

    def post(self, path, body, **kw):
        return requests.post(self.url + path, json=body, timeout=kw.pop("timeout", 120), **kw)

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        return self.proc.returncode


def sse_events(resp):
    """Parse server-sent events from a streaming requests response: yields the data strings."""
    for line in resp.iter_lines(decode_unicode=True):
        if line and line.startswith("data:"):
            yield line[5:].lstrip(" ")


def stream_generate(url, inputs, **params):
    """/generate_stream to the end; returns (events as dicts)."""
    with requests.post(url + "/generate_stream", json={"inputs": inputs, "parameters": params},
                       stream=True, timeout=120) as r:
        assert r.status_code == 200, r.text
        assert r.headers["Content-Type"].startswith("text/event-stream")
        return [json.loads(d) for d in sse_events(r)]
