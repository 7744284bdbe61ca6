"""Real clients, unchanged: the `openai` package (chat and completions, streaming and not) and
huggingface_hub's InferenceClient.text_generation (streaming, details); greedy output over HTTP
equals `flashgen generate` for the same prompt."""
import os
import subprocess

import openai
import requests
from huggingface_hub import InferenceClient

from fg_http import BINARY, MODEL, ROOT, stream_generate

PROMPT = "The capital of France is"


def oai(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def cli_generate(prompt, n, chat=False):
    cmd = [BINARY, "generate", "--model", MODEL, "--prompt", prompt, "--max-new-tokens", str(n),
           "--print-ids"]
    if chat:
        cmd.append("--chat")
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    ids = next(l for l in p.stderr.splitlines() if l.startswith("generated_ids:"))
    return p.stdout[:-1] if p.stdout.endswith("\n") else p.stdout, [int(x) for x in ids.split()[1:]]


def test_greedy_generate_equals_cli(server):
    text, ids = cli_generate(PROMPT, 12)
    r = server.post("/generate", {"inputs": PROMPT,
                                  "parameters": {"max_new_tokens": 12, "details": True}})
    assert r.status_code == 200, r.text
    out = r.json()
    assert [t["id"] for t in out["details"]["tokens"]] == ids
    assert out["generated_text"] == text
    assert out["details"]["finish_reason"] in ("length", "eos_token")
    assert out["details"]["generated_tokens"] == len(ids)
    assert out["details"]["seed"] is None


def test_greedy_chat_equals_cli(server):
    text, ids = cli_generate("What is the capital of France?", 10, chat=True)
    r = oai(server).chat.completions.create(
        model="any", messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=10, temperature=0)
    assert r.choices[0].message.content == text
    assert r.usage.completion_tokens == len(ids)


def test_openai_chat(server):
    c = oai(server)
    msgs = [{"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Name a colour."}]
    r = c.chat.completions.create(model="x", messages=msgs, max_tokens=8, temperature=0)
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 0 and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    chunks = list(c.chat.completions.create(model="x", messages=msgs, max_tokens=8, temperature=0,
                                            stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == r.choices[0].message.content
    finals = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finals == [r.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == r.usage.completion_tokens


def test_openai_completions(server):
    c = oai(server)
    r = c.completions.create(model="x", prompt=PROMPT, max_tokens=8, temperature=0)
    assert r.object == "text_completion"
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 0
    chunks = list(c.completions.create(model="x", prompt=PROMPT, max_tokens=8, temperature=0,
                                       stream=True))
    assert "".join(ch.choices[0].text for ch in chunks) == r.choices[0].text
    # the same tokens as /generate
    g = server.post("/generate", {"inputs": PROMPT, "parameters": {"max_new_tokens": 8}}).json()
    assert g["generated_text"] == r.choices[0].text


def test_openai_logprobs_and_stop(server):
    c = oai(server)
    r = c.completions.create(model="x", prompt=PROMPT, max_tokens=12, temperature=0, stop=["."],
                             logprobs=1)
    assert "." not in r.choices[0].text  # OpenAI cuts the stop sequence
    assert r.choices[0].finish_reason == "stop"
    assert all(lp <= 0 for lp in r.choices[0].logprobs.token_logprobs)
    ch = c.chat.completions.create(model="x", messages=[{"role": "user", "content": "Hi"}],
                                   max_tokens=4, temperature=0, logprobs=True, top_logprobs=1)
    assert len(ch.choices[0].logprobs.content) == ch.usage.completion_tokens


def test_openai_models(server):
    models = oai(server).models.list()
    assert len(models.data) == 1
    assert models.data[0].id == "SmolLM2-135M-Instruct.Q4_1"


def test_hf_text_generation(server):
    hf = InferenceClient(model=server.url)
    text = hf.text_generation(PROMPT, max_new_tokens=8)
    out = hf.text_generation(PROMPT, max_new_tokens=8, details=True)
    assert out.generated_text == text
    assert out.details.finish_reason in ("length", "eos_token")
    assert out.details.generated_tokens == len(out.details.tokens)
    pieces = list(hf.text_generation(PROMPT, max_new_tokens=8, stream=True))
    assert "".join(pieces) == text
    events = list(hf.text_generation(PROMPT, max_new_tokens=8, stream=True, details=True))
    assert [e.token.id for e in events] == [t.id for t in out.details.tokens]
    assert events[-1].generated_text == text
    assert events[-1].details.finish_reason == out.details.finish_reason
    assert all(e.generated_text is None for e in events[:-1])


def test_tgi_stream_schema(server):
    events = stream_generate(server.url, PROMPT, max_new_tokens=6, details=True)
    assert [e["index"] for e in events] == list(range(1, len(events) + 1))
    assert all(set(e["token"]) >= {"id", "text", "logprob", "special"} for e in events)
    assert events[-1]["details"]["generated_tokens"] == len(events)
    assert events[-1]["details"]["input_length"] > 0
    assert events[-1]["generated_text"] == "".join(e["token"]["text"] for e in events)


def test_tgi_details_prefill_and_full_text(server):
    r = server.post("/generate", {"inputs": PROMPT, "parameters": {
        "max_new_tokens": 4, "details": True, "decoder_input_details": True,
        "return_full_text": True}})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["generated_text"].startswith(PROMPT)
    prefill = out["details"]["prefill"]
    tok = requests.post(server.url + "/tokenize", json={"inputs": PROMPT}).json()
    assert [p["id"] for p in prefill] == [t["id"] for t in tok]
    assert prefill[0]["logprob"] is None
    assert all(p["logprob"] is not None and p["logprob"] <= 0 for p in prefill[1:])
    # prompt logprobs do not change the generation
    plain = server.post("/generate", {"inputs": PROMPT, "parameters": {"max_new_tokens": 4}}).json()
    assert out["generated_text"] == PROMPT + plain["generated_text"]


def test_tgi_stop_sequence_kept(server):
    out = server.post("/generate", {"inputs": PROMPT, "parameters": {
        "max_new_tokens": 12, "stop": ["."], "details": True}}).json()
    assert out["details"]["finish_reason"] == "stop_sequence"
    assert out["generated_text"].endswith(".")


def test_sampling_seeded_is_reproducible(server):
    params = {"max_new_tokens": 8, "do_sample": True, "temperature": 0.9, "top_k": 40,
              "seed": 1234, "details": True}
    a = server.post("/generate", {"inputs": PROMPT, "parameters": params}).json()
    b = server.post("/generate", {"inputs": PROMPT, "parameters": params}).json()
    assert a["generated_text"] == b["generated_text"]
    assert a["details"]["seed"] == 1234
    c = server.post("/generate", {"inputs": PROMPT, "parameters": {
        "max_new_tokens": 4, "do_sample": True, "details": True}}).json()
    assert isinstance(c["details"]["seed"], int)  # a random seed is reported


def test_tokenize_info_health(server):
    tok = requests.post(server.url + "/tokenize", json={"inputs": "Hello world"}).json()
    assert "".join(t["text"] for t in tok) == "Hello world"
    assert tok[-1]["stop"] == len("Hello world")
    info = requests.get(server.url + "/info").json()
    # the default Q4_1 file stays in its blocks on the CPU: ~92 MB, not ~513 MB of fp32, most of
    # them read in place from the file's mapping (the token table is copied: its rows move)
    if info["model_device_type"] == "cpu":
        res = info["weights_resident"]
        blocks = res["block_bytes"] + res["mapped_bytes"]
        assert 80e6 < blocks < 110e6 and res["mapped_bytes"] > 50e6, res
        assert res["fp32_bytes"] < 5e6 and res["device_bytes"] == 0, res
        assert res["device_block_bytes"] == 0 and res["gpu_weights"] == "none", res
    for key in ("model_id", "model_dtype", "model_device_type", "max_input_tokens",
                "max_total_tokens", "max_concurrent_requests", "version"):
        assert key in info
    assert info["model_device_type"] in ("cpu", "cuda")
    h = requests.get(server.url + "/health")
    assert h.status_code == 200 and h.json()["status"] == "ok"
