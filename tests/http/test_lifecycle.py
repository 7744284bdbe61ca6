"""Start-up, configuration, shutdown, logging and metrics of the daemon."""
import json
import os
import shutil
import signal
import subprocess
import threading
import time

import pytest
import requests

from fg_http import BINARY, MODEL, ROOT, Server, sse_events


def run_cli(*args, env=None, timeout=60):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([BINARY, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=e)


def test_health_503_while_loading_then_200(start_server):
    s = start_server(wait_ready=False)
    first = None
    t0 = time.time()
    while time.time() - t0 < 60:
        r = requests.get(s.url + "/health", timeout=5)
        if first is None:
            first = r
        if r.status_code == 200:
            break
        assert r.status_code == 503 and r.json()["status"] == "loading"
        g = s.post("/generate", {"inputs": "x", "parameters": {"max_new_tokens": 1}})
        if g.status_code != 503:  # the load finished between the two requests
            assert g.status_code == 200
            break
        assert g.json()["error_type"] == "unavailable"
        time.sleep(0.01)
    assert first.status_code == 503, "the server should listen before the model is loaded"
    assert first.json()["status"] == "loading"
    h = requests.get(s.url + "/health")
    assert h.status_code == 200 and h.json() == {"status": "ok"}


def test_invalid_config_stops_startup():
    p = run_cli("serve", "--port", "99999")
    assert p.returncode == 2 and "port" in p.stderr
    p = run_cli("serve", "--device", "tpu")
    assert p.returncode == 2 and "device" in p.stderr and "auto|cpu|cuda" in p.stderr
    p = run_cli("serve", env={"FLASHGEN_MAX_BATCH_TOKENS": "lots"})
    assert p.returncode == 2 and "FLASHGEN_MAX_BATCH_TOKENS" in p.stderr
    p = run_cli("serve", "--bogus", "1")
    assert p.returncode == 2 and "bogus" in p.stderr


def test_help_lists_options_with_defaults():
    p = run_cli("serve", "--help")
    assert p.returncode == 0
    for opt in ("--host", "--port", "--model", "--device", "--max-batch-tokens", "--kv-fraction",
                "--max-concurrent-requests", "--request-timeout", "--api-key", "--log-format",
                "FLASHGEN_PORT", "default: 8080"):
        assert opt in p.stdout, opt


def test_missing_model_exits_nonzero():
    p = run_cli("serve", "--port", "0", "--model", "models/does-not-exist.gguf", timeout=60)
    assert p.returncode == 1
    assert "does-not-exist" in p.stderr


def test_config_file_and_env(start_server, tmp_path):
    cfg = tmp_path / "fg.json"
    cfg.write_text(json.dumps({"model_id": "from-file", "max_stop_sequences": 2}))
    s = start_server("--config", str(cfg), env={"FLASHGEN_MAX_CONCURRENT_REQUESTS": "7"})
    info = requests.get(s.url + "/info").json()
    assert info["model_id"] == "from-file"
    assert info["max_stop_sequences"] == 2
    assert info["max_concurrent_requests"] == 7


def test_sigterm_drains_in_flight(start_server):
    s = start_server()
    results = {}

    def plain(i):
        r = s.post("/generate", {"inputs": f"Count to ten {i}",
                                 "parameters": {"max_new_tokens": 16, "ignore_eos": True}})
        results[i] = (r.status_code, r.json())

    def streamed():
        with requests.post(s.url + "/generate_stream", json={
                "inputs": "Stream please", "parameters": {"max_new_tokens": 16, "ignore_eos": True}},
                stream=True, timeout=120) as r:
            results["stream"] = (r.status_code, [json.loads(d) for d in sse_events(r)])

    threads = [threading.Thread(target=plain, args=(i,)) for i in range(3)]
    threads.append(threading.Thread(target=streamed))
    for t in threads:
        t.start()
    t0 = time.time()
    while s.metric("flashgen_num_requests_running") < 4 and time.time() - t0 < 30:
        time.sleep(0.01)  # all four admitted
    s.proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    h = requests.get(s.url + "/health", timeout=5)
    assert h.status_code == 503 and h.json()["status"] == "draining"
    g = s.post("/generate", {"inputs": "late"})
    assert g.status_code == 503 and g.json()["error_type"] == "shutting_down"
    for t in threads:
        t.join(120)
    for i in range(3):
        status, body = results[i]
        assert status == 200, body
        assert body["generated_text"]
    status, events = results["stream"]
    assert status == 200 and events[-1]["generated_text"] is not None
    assert len(events) == 16
    assert s.proc.wait(30) == 0
    assert any("stopped (exit 0)" in l for l in s.lines)


def test_sigterm_grace_cancels_the_rest(start_server):
    s = start_server("--shutdown-grace", "0.5")
    out = {}

    def long():
        r = s.post("/generate", {"inputs": "Go on forever",
                                 "parameters": {"max_new_tokens": 2000, "ignore_eos": True}})
        out["r"] = r

    t = threading.Thread(target=long)
    t.start()
    while s.metric("flashgen_num_requests_running") < 1:
        time.sleep(0.02)
    t0 = time.time()
    s.proc.send_signal(signal.SIGTERM)
    assert s.proc.wait(30) == 0
    assert time.time() - t0 < 10
    t.join(30)
    assert out["r"].status_code == 503
    assert out["r"].json()["error_type"] == "shutting_down"


def test_json_request_log(start_server):
    s = start_server("--log-format", "json")
    s.post("/generate", {"inputs": "Hello", "parameters": {"max_new_tokens": 3}})
    s.post("/generate", {"inputs": ""})
    time.sleep(0.2)
    entries = []
    for line in s.lines:
        try:
            entries.append(json.loads(line))
        except ValueError:
            pass
    gen = [e for e in entries if e.get("path") == "/generate"]
    assert len(gen) == 2, s.lines
    ok, bad = gen
    assert ok["status"] == 200 and ok["outcome"] == "success"
    for key in ("id", "tokens_in", "tokens_out", "queue_ms", "ttft_ms", "duration_ms", "finish"):
        assert key in ok, key
    assert ok["tokens_out"] == 3 or ok["finish"] == "eos_token"
    assert bad["status"] == 422 and bad["outcome"] == "validation_error"


def test_text_request_log(server):
    server.post("/generate", {"inputs": "Hello", "parameters": {"max_new_tokens": 2}})
    time.sleep(0.2)
    line = [l for l in server.lines if "POST /generate 200" in l][-1]
    for key in ("id=", "tokens_in=", "tokens_out=", "queue_ms=", "ttft_ms=", "duration_ms=",
                "outcome=success"):
        assert key in line, line


def test_metrics_pass_promtool(server):
    server.post("/generate", {"inputs": "Hello", "parameters": {"max_new_tokens": 2}})
    text = requests.get(server.url + "/metrics").text
    for name in ("flashgen_requests_total", "flashgen_time_to_first_token_seconds_bucket",
                 "flashgen_inter_token_latency_seconds_bucket", "flashgen_e2e_request_latency_seconds",
                 "flashgen_request_queue_time_seconds", "flashgen_num_requests_running",
                 "flashgen_num_requests_waiting", "flashgen_batch_size",
                 "flashgen_kv_cache_usage_perc", "flashgen_prompt_tokens_total",
                 "flashgen_generation_tokens_total"):
        assert name in text, name
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool not installed (apt-get install prometheus); format checked only by "
                    "the unit test")
    p = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
