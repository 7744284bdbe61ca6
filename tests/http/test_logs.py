"""The server's log on stderr, and what the model side reports there: with --log-format json every
line is one JSON object (load progress, the engine's notices, requests, MHD's messages, shutdown);
/health probes answered 503 while the model loads are not logged one by one; a CPU-only build says
nothing about the missing CUDA library; a model whose chat template is neither ChatML nor Llama-3
loads and serves /generate and chat, its own template rendered by the Jinja interpreter (the
log says so)."""
import json
import os
import signal
import sys
import time

import numpy as np
import pytest
import requests

from fg_http import ROOT

# A Mistral-style template: no <|im_start|>, no <|start_header_id|>.
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% else %}"
    "{{ message['content'] + eos_token }}{% endif %}{% endfor %}")


@pytest.fixture(scope="module")
def odd_template_gguf(tmp_path_factory):
    """A tiny random GGUF (tools/make_tiny_models.py's gqa1_tied, F32) whose
    tokenizer.chat_template is MISTRAL_TEMPLATE."""
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    try:
        import make_tiny_models as mtm
    finally:
        sys.path.pop(0)
    cfg = mtm.MODELS["gqa1_tied"]
    tokens, types = mtm.tiny_vocab()
    weights = mtm.random_weights(cfg, len(tokens), np.random.RandomState(7))
    path = tmp_path_factory.mktemp("odd_template") / "mistral_template.F32.gguf"
    mtm.write_gguf(str(path), cfg, weights, "F32", tokens, types, chat_template=MISTRAL_TEMPLATE)
    return path


def test_unrecognised_chat_template_loads_and_serves(start_server, odd_template_gguf):
    s = start_server("--model", str(odd_template_gguf), "--device", "cpu")
    g = s.post("/generate", {"inputs": "hello world", "parameters": {"max_new_tokens": 4}})
    assert g.status_code == 200, g.text
    assert isinstance(g.json()["generated_text"], str)
    c = s.post("/v1/chat/completions", {"model": "x", "max_tokens": 4,
                                         "messages": [{"role": "user", "content": "hello"}]})
    assert c.status_code == 200, c.text
    assert c.json()["choices"][0]["message"]["role"] == "assistant"
    assert any("chat template: the model's own (jinja)" in l for l in s.lines), "\n".join(s.lines)
    assert not any("chat template does not parse" in l for l in s.lines), "\n".join(s.lines)


def test_json_log_every_line_is_an_object(start_server, odd_template_gguf):
    """--device auto (the default) in whatever build this is; the default model loads slowly
    enough on a CPU for /health to answer 503 first."""
    s = start_server("--log-format", "json", wait_ready=False)
    probes_503 = 0
    t0 = time.time()
    while time.time() - t0 < 120:
        r = requests.get(s.url + "/health", timeout=5)
        if r.status_code == 200:
            break
        assert r.status_code == 503, r.text
        probes_503 += 1
        time.sleep(0.02)
    assert probes_503 >= 1, "the server should answer 503 while the model loads"
    assert s.post("/generate", {"inputs": "Hi", "parameters": {"max_new_tokens": 2}}).status_code \
        == 200
    assert requests.get(s.url + "/no-such-route", timeout=10).status_code == 404
    assert s.stop(signal.SIGTERM) == 0
    objs = []
    for line in s.lines:
        try:
            o = json.loads(line)
        except ValueError:
            pytest.fail(f"not a JSON line: {line!r}\n" + "\n".join(s.lines))
        assert isinstance(o, dict) and "ts" in o, line
        objs.append(o)
    msgs = [o.get("msg", "") for o in objs]
    assert any(m.startswith("loading ") for m in msgs), msgs  # load progress, as JSON
    assert any(m.startswith("ready: ") for m in msgs), msgs
    assert any(o.get("path") == "/generate" and o.get("status") == 200 for o in objs), objs
    assert any(o.get("path") == "/no-such-route" and o.get("status") == 404 for o in objs), objs
    health = [o for o in objs if o.get("path") == "/health"]
    assert not health, f"{len(health)} /health lines for {probes_503} probes answered 503"
    # the missing CUDA library of a CPU-only build (dlopen fails) is not reported at each start
    assert not any("no CUDA backend" in m for m in msgs), msgs


def test_odd_template_notice_is_json_too(start_server, odd_template_gguf):
    s = start_server("--model", str(odd_template_gguf), "--device", "cpu", "--log-format", "json")
    assert s.stop(signal.SIGTERM) == 0
    objs = [json.loads(l) for l in s.lines]
    note = [o for o in objs if "chat template: the model's own (jinja)" in o.get("msg", "")]
    assert len(note) == 1 and note[0]["level"] == "info", objs
