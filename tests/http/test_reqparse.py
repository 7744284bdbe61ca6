"""Issue 11's parsing defects as a client sees them, through HTTP (the pure functions are tested in
tests/unit/test_reqparse.c): trailing data after the JSON, the chat max_tokens default, the no-op
defaults of the openai client, temperature underflow, repetition_penalty, token ids past int, and
invalid UTF-8 that return_full_text / echo would send back."""
import json

import requests
from openai import OpenAI

CHAT = "/v1/chat/completions"
MSGS = [{"role": "user", "content": "Count from one to one thousand."}]


def raw(server, path, data):
    return requests.post(server.url + path, data=data, timeout=60,
                         headers={"Content-Type": "application/json"})


def test_trailing_data_after_json_is_400(server):
    r = raw(server, "/generate", b'{"inputs":"x","parameters":{"max_new_tokens":1}} junk')
    assert r.status_code == 400, r.text
    assert r.json()["error_type"] == "invalid_json"
    r = raw(server, CHAT, json.dumps({"messages": MSGS, "max_tokens": 1}).encode() + b"{}")
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"] == "invalid_json"
    r = raw(server, "/generate", b'{"inputs":"x","parameters":{"max_new_tokens":1}}\r\n')
    assert r.status_code == 200, r.text


def test_chat_without_max_tokens_runs_to_the_context(start_server):
    """Not 100 (default_max_new_tokens): what is left of max_total_tokens after the prompt."""
    s = start_server("--max-input-tokens", "64", "--max-total-tokens", "140")
    r = s.post(CHAT, {"messages": MSGS, "temperature": 0, "ignore_eos": True}, timeout=300)
    assert r.status_code == 200, r.text
    u = r.json()["usage"]
    assert u["completion_tokens"] == 140 - u["prompt_tokens"] > 100, u
    assert r.json()["choices"][0]["finish_reason"] == "length"


def test_openai_client_noop_defaults_accepted(server):
    c = OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    out = c.chat.completions.create(
        model="any", messages=MSGS, max_completion_tokens=2, temperature=0, tools=[],
        tool_choice="none", response_format={"type": "text"}, logit_bias={},
        parallel_tool_calls=False, user="u-1", stream_options=None)
    assert out.usage.completion_tokens == 2
    r = server.post(CHAT, {"messages": MSGS, "max_tokens": 1,
                           "response_format": {"type": "xml"}})
    assert r.status_code == 422 and r.json()["error"]["param"] == "response_format", r.text
    r = server.post(CHAT, {"messages": MSGS, "max_tokens": 1,
                           "tools": [{"type": "function", "function": {"name": "not a name"}}]})
    assert r.status_code == 422 and r.json()["error"]["param"] == "tools", r.text


def test_underflowing_temperature_is_greedy(server):
    greedy = server.post("/generate", {"inputs": "The weather today is", "parameters": {
        "max_new_tokens": 8, "ignore_eos": True}}).json()["generated_text"]
    for seed in (1, 2, 3):
        r = server.post("/generate", {"inputs": "The weather today is", "parameters": {
            "max_new_tokens": 8, "ignore_eos": True, "temperature": 1e-50, "seed": seed}})
        assert r.status_code == 200, r.text
        assert r.json()["generated_text"] == greedy, f"seed {seed}: temperature 1e-50 sampled"
    r = server.post(CHAT, {"messages": MSGS, "max_tokens": 8, "temperature": 0})
    want = r.json()["choices"][0]["message"]["content"]
    for seed in (1, 2):
        r = server.post(CHAT, {"messages": MSGS, "max_tokens": 8, "temperature": 1e-50, "seed": seed})
        assert r.json()["choices"][0]["message"]["content"] == want


def test_tiny_repetition_penalty_refused(server):
    for v in (1e-30, 1e-50, 1e30):
        r = server.post("/generate", {"inputs": "x", "parameters": {"repetition_penalty": v}})
        assert r.status_code == 422, (v, r.text)
        assert r.json()["param"] == "repetition_penalty"


def test_token_ids_past_int_refused_by_range(server):
    r = server.post("/v1/completions", {"prompt": [1, 2147483648], "max_tokens": 1})
    assert r.status_code == 422, r.text
    e = r.json()["error"]
    assert e["param"] == "prompt" and "2147483647" in e["message"], e


def test_invalid_utf8_input_is_not_echoed(server):
    r = raw(server, "/generate",
            b'{"inputs":"ab\xff\xfe","parameters":{"max_new_tokens":1,"return_full_text":true}}')
    assert r.status_code == 422, r.content
    assert r.json()["param"] == "inputs"
    r = raw(server, "/v1/completions", b'{"prompt":"\xc0\xafhi","max_tokens":1,"echo":true}')
    assert r.status_code == 422, r.content
    assert r.json()["error"]["param"] == "prompt"
    r = raw(server, CHAT, b'{"messages":[{"role":"user","content":"\xed\xa0\x80"}],"max_tokens":1}')
    assert r.status_code == 422 and r.json()["error"]["param"] == "messages", r.content
    r = raw(server, "/generate", '{"inputs":"café","parameters":{"max_new_tokens":1,'
            '"return_full_text":true}}'.encode())
    assert r.status_code == 200 and r.json()["generated_text"].startswith("café"), r.content
