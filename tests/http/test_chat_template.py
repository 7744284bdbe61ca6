"""Chat templates end to end: a model's own Jinja template renders the chat prompt (the interpreter
in model/jinja*.c); a template that refuses the messages (raise_exception) makes that request a
422 carrying the template's message while other requests go on; a template that does not parse
still loads, with a warning naming line and column, and chat falls back to ChatML; /info says
which renderer is in use."""
import os
import sys

import numpy as np
import pytest
import requests

from fg_http import ROOT

# Gemma-2's rule (no system role) and Mistral's roles-must-alternate, in one small template.
STRICT_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{{ '<start_of_turn>' + message['role'] + '\\n' + message['content'] | trim + "
    "'<end_of_turn>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}"
    "{% endif %}")
BROKEN_TEMPLATE = "{% for message in messages %}\n{{ message['content'] }\n{% endfor %}"


def tiny_gguf(tmp_path_factory, name, template):
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    try:
        import make_tiny_models as mtm
    finally:
        sys.path.pop(0)
    cfg = mtm.MODELS["gqa1_tied"]
    tokens, types = mtm.tiny_vocab()
    weights = mtm.random_weights(cfg, len(tokens), np.random.RandomState(7))
    path = tmp_path_factory.mktemp(name) / f"{name}.F32.gguf"
    mtm.write_gguf(str(path), cfg, weights, "F32", tokens, types, chat_template=template)
    return path


@pytest.fixture(scope="module")
def strict_gguf(tmp_path_factory):
    return tiny_gguf(tmp_path_factory, "strict_template", STRICT_TEMPLATE)


@pytest.fixture(scope="module")
def broken_gguf(tmp_path_factory):
    return tiny_gguf(tmp_path_factory, "broken_template", BROKEN_TEMPLATE)


def chat(s, messages):
    return s.post("/v1/chat/completions", {"model": "x", "max_tokens": 2, "messages": messages})


def test_raise_exception_is_a_422_with_the_templates_message(start_server, strict_gguf):
    s = start_server("--model", str(strict_gguf), "--device", "cpu")
    assert requests.get(s.url + "/info", timeout=10).json()["chat_template"] == "jinja"
    r = chat(s, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}])
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["message"].endswith(": System role not supported"), err  # the server's prefix
    assert err["param"] == "messages", err
    r = chat(s, [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    assert r.status_code == 422, r.text
    assert "roles must alternate" in r.json()["error"]["message"], r.text
    # the same server goes on serving messages the template accepts
    ok = chat(s, [{"role": "user", "content": "  hello  "}])
    assert ok.status_code == 200, ok.text
    # the prompt is the template's: <bos><start_of_turn>user\nhello<end_of_turn>\n<start_of_turn>
    # model\n, trimmed content, tokenized with the specials parsed (the tiny vocab's own ids)
    assert ok.json()["usage"]["prompt_tokens"] > 0


def test_unparseable_template_loads_and_falls_back_to_chatml(start_server, broken_gguf):
    s = start_server("--model", str(broken_gguf), "--device", "cpu")
    warn = [l for l in s.lines if "chat template does not parse" in l]
    assert len(warn) == 1, "\n".join(s.lines)
    assert "line 2, column" in warn[0] and "as chatml" in warn[0], warn[0]
    assert str(broken_gguf) in warn[0], warn[0]
    assert requests.get(s.url + "/info", timeout=10).json()["chat_template"] == "chatml"
    r = chat(s, [{"role": "user", "content": "hello"}])
    assert r.status_code == 200, r.text
    g = s.post("/generate", {"inputs": "hello world", "parameters": {"max_new_tokens": 2}})
    assert g.status_code == 200, g.text
