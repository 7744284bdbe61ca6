"""logit_bias, presence/frequency penalties and top_logprobs / top_n_tokens on the real SmolLM2,
against an oracle of our own logits: tools/engine_check (build/tools/engine_check) runs the same
model on the CPU with the server's tokens teacher-forced and writes the raw logits of every step;
numpy applies the bias and penalties as OpenAI defines them and takes the log-softmax. The
server's greedy picks must be the argmax of those adjusted logits, its top_logprobs their
log-softmax. Tokens come back as ids through vLLM's return_tokens_as_token_ids.

Tolerance: 2e-3 on logprobs. The server prefills in chunks of max_batch_tokens and engine_check
in one pass, so float sums are reordered (observed differences ~1e-7); a wrong op (temperature,
a missing bias, an off-by-one penalty count) moves values by far more than 1e-2.
"""
import os
import subprocess

import numpy as np
import pytest
import requests

from fg_http import BUILD, MODEL, ROOT

# FLASHGEN_ENGINE_CHECK: another build's engine_check (the oracle need not be the build tested)
ENGINE_CHECK = os.environ.get("FLASHGEN_ENGINE_CHECK",
                              os.path.join(ROOT, BUILD, "tools", "engine_check"))
PROMPT = [504, 3575, 282, 4649, 314]  # "The capital of France is"
TOL = 2e-3


def oracle_logits(tmp_path, prompt, forced):
    """Raw logits (len(forced), vocab) of each step of PROMPT with FORCED fed back (CPU)."""
    if not os.path.exists(ENGINE_CHECK):
        pytest.fail(f"{ENGINE_CHECK} not found: run `make` first")
    p, f, out = tmp_path / "p.txt", tmp_path / "f.txt", tmp_path / "o"
    p.write_text(" ".join(map(str, prompt)) + "\n")
    f.write_text(" ".join(map(str, forced)) + "\n")
    subprocess.run([ENGINE_CHECK, "--model", MODEL, "--device", "cpu", "--prompts", str(p),
                    "--steps", str(len(forced)), "--out", str(out), "--force", str(f)],
                   check=True, capture_output=True, cwd=ROOT, timeout=120)
    return np.fromfile(str(out) + ".logits", dtype=np.float32).reshape(len(forced), -1)


def log_softmax(x):
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def ids_of(names):
    assert all(n.startswith("token_id:") for n in names), names
    return [int(n.split(":", 1)[1]) for n in names]


def complete(server, **body):
    body = {"prompt": PROMPT, "temperature": 0, "logprobs": 5,
            "return_tokens_as_token_ids": True, **body}
    r = requests.post(server.url + "/v1/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]


def check_against(logits_adj, choice, k=5):
    """Greedy picks = argmax of the adjusted logits (up to a float near-tie); top-k = their
    log-softmax."""
    lp = choice["logprobs"]
    ids = ids_of(lp["tokens"])
    ref = log_softmax(logits_adj)
    for s, tok in enumerate(ids):
        assert ref[s][tok] >= ref[s].max() - TOL, (s, tok, int(ref[s].argmax()))
        alts = lp["top_logprobs"][s]
        got = sorted(((ids_of([n])[0], v) for n, v in alts.items()), key=lambda t: -t[1])
        assert len(got) == k
        order = np.argsort(-ref[s], kind="stable")[:k]
        for (gid, gv), rid in zip(got, order):
            assert abs(gv - ref[s][gid]) < TOL, (s, gid, gv, ref[s][gid])
            assert gid == rid or abs(ref[s][gid] - ref[s][rid]) < TOL
    return ids


def test_top_logprobs_equal_log_softmax_of_our_logits(server, tmp_path):
    ch = complete(server, max_tokens=6)
    ids = ids_of(ch["logprobs"]["tokens"])
    logits = oracle_logits(tmp_path, PROMPT, ids)
    check_against(logits, ch)
    # the chosen token's logprob (greedy) is the same log-softmax value
    ref = log_softmax(logits)
    for s, v in enumerate(ch["logprobs"]["token_logprobs"]):
        assert abs(v - ref[s][ids[s]]) < TOL


def test_chat_top_logprobs_and_tgi_top_n_tokens(server):
    body = {"messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 4,
            "temperature": 0, "logprobs": True, "top_logprobs": 3}
    r = requests.post(server.url + "/v1/chat/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text
    content = r.json()["choices"][0]["logprobs"]["content"]
    for e in content:
        tops = e["top_logprobs"]
        assert len(tops) == 3
        assert [t["logprob"] for t in tops] == sorted((t["logprob"] for t in tops), reverse=True)
        assert tops[0]["token"] == e["token"] and abs(tops[0]["logprob"] - e["logprob"]) < 1e-6
        for t in tops:
            assert bytes(t["bytes"]).decode("utf-8", "replace") == t["token"]
    # TGI: top_n_tokens, the same distribution as the completions route for the same prompt
    r = requests.post(server.url + "/generate", json={
        "inputs": "The capital of France is",
        "parameters": {"max_new_tokens": 3, "details": True, "top_n_tokens": 2}}, timeout=120)
    assert r.status_code == 200, r.text
    d = r.json()["details"]
    assert len(d["top_tokens"]) == 3
    ch = complete(server, max_tokens=3)
    for s, tops in enumerate(d["top_tokens"]):
        assert tops[0]["id"] == d["tokens"][s]["id"]
        alts = {ids_of([n])[0]: v for n, v in ch["logprobs"]["top_logprobs"][s].items()}
        for t in tops:
            assert abs(t["logprob"] - alts[t["id"]]) < TOL


def test_logit_bias_forces_and_bans(server, tmp_path):
    base = ids_of(complete(server, max_tokens=5)["logprobs"]["tokens"])
    london = 4528 if base[0] != 4528 else 260
    forced = complete(server, max_tokens=5, logit_bias={str(london): 100})
    assert ids_of(forced["logprobs"]["tokens"]) == [london] * 5
    banned = complete(server, max_tokens=5, logit_bias={str(base[0]): -100})
    bids = ids_of(banned["logprobs"]["tokens"])
    assert base[0] not in bids
    # the banned run against the oracle: our logits with the bias added
    logits = oracle_logits(tmp_path, PROMPT, bids)
    logits[:, base[0]] -= 100
    check_against(logits, banned)
    # {} and a zero bias change nothing
    assert ids_of(complete(server, max_tokens=5, logit_bias={})["logprobs"]["tokens"]) == base
    assert ids_of(complete(server, max_tokens=5,
                           logit_bias={str(london): 0})["logprobs"]["tokens"]) == base


@pytest.mark.parametrize("presence,frequency", [(2.0, 0.0), (0.0, 1.5), (0.5, 1.0), (0.0, -2.0)])
def test_penalties_follow_openai_semantics(server, tmp_path, presence, frequency):
    n = 24
    base = ids_of(complete(server, max_tokens=n, ignore_eos=True)["logprobs"]["tokens"])
    ch = complete(server, max_tokens=n, ignore_eos=True, presence_penalty=presence,
                  frequency_penalty=frequency)
    ids = ids_of(ch["logprobs"]["tokens"])
    assert ids != base, "the penalty changed nothing: the test could not tell"
    logits = oracle_logits(tmp_path, PROMPT, ids).astype(np.float64)
    counts = np.zeros(logits.shape[1])
    for s, tok in enumerate(ids):  # mu[j] - c[j] * frequency - (c[j] > 0) * presence
        logits[s] -= counts * frequency + (counts > 0) * presence
        counts[tok] += 1
    check_against(logits.astype(np.float32), ch)


def test_echo_prompt_logprobs_equal_decoder_input_details(server, tmp_path):
    text = "The capital of France is"
    ch = requests.post(server.url + "/v1/completions", json={
        "prompt": text, "max_tokens": 2, "temperature": 0, "echo": True, "logprobs": 2},
        timeout=120).json()["choices"][0]
    g = requests.post(server.url + "/generate", json={
        "inputs": text, "parameters": {"max_new_tokens": 2, "details": True,
                                       "decoder_input_details": True}}, timeout=120).json()
    pre = g["details"]["prefill"]
    lp = ch["logprobs"]
    assert ch["text"].startswith(text)
    assert lp["tokens"][:len(pre)] == [p["text"] for p in pre]
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    for i in range(1, len(pre)):
        assert abs(lp["token_logprobs"][i] - pre[i]["logprob"]) < 1e-6
    assert lp["text_offset"][:len(pre)] == list(np.cumsum([0] + [len(p["text"]) for p in pre[:-1]]))
    assert lp["text_offset"][len(pre)] == len(text)
    # the last prompt token's alternatives: our logits after the prompt minus that token
    ids = [p["id"] for p in pre]
    ref = log_softmax(oracle_logits(tmp_path, ids[:-1], [ids[-1]]))[0]
    toks = requests.post(server.url + "/v1/completions", json={
        "prompt": ids, "max_tokens": 1, "temperature": 0, "echo": True, "logprobs": 2,
        "return_tokens_as_token_ids": True}, timeout=120).json()["choices"][0]["logprobs"]
    alts = toks["top_logprobs"][len(ids) - 1]
    for name, v in alts.items():
        assert abs(v - ref[ids_of([name])[0]]) < TOL
    assert max(alts.values()) == pytest.approx(ref.max(), abs=TOL)


@pytest.mark.parametrize("body,field", [
    ({"logit_bias": {"x": 1}}, "logit_bias"),
    ({"logit_bias": {"01": 1}}, "logit_bias"),
    ({"logit_bias": {"5": 100.5}}, "logit_bias"),
    ({"logit_bias": {"5": "1"}}, "logit_bias"),
    ({"logit_bias": [1]}, "logit_bias"),
    ({"logit_bias": {"49152": 1}}, "logit_bias"),  # past the vocabulary
    ({"presence_penalty": 2.5}, "presence_penalty"),
    ({"frequency_penalty": -2.01}, "frequency_penalty"),
    ({"logprobs": 6}, "logprobs"),
])
def test_bad_values_name_the_field(server, body, field):
    r = requests.post(server.url + "/v1/completions",
                      json={"prompt": "x", "max_tokens": 1, **body}, timeout=60)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["param"] == field


def test_chat_top_logprobs_needs_logprobs(server):
    r = requests.post(server.url + "/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "x"}], "max_tokens": 1, "top_logprobs": 2},
        timeout=60)
    assert r.status_code == 422 and r.json()["error"]["param"] == "top_logprobs"
    r = requests.post(server.url + "/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "x"}], "max_tokens": 1, "logprobs": True,
        "top_logprobs": 21}, timeout=60)
    assert r.status_code == 422 and r.json()["error"]["param"] == "top_logprobs"


def test_tgi_frequency_penalty(server, tmp_path):
    n, fp = 20, 1.5
    r = requests.post(server.url + "/generate", json={
        "inputs": "The capital of France is",
        "parameters": {"max_new_tokens": n, "details": True, "decoder_input_details": True,
                       "frequency_penalty": fp, "ignore_eos": True}}, timeout=120)
    assert r.status_code == 200, r.text
    d = r.json()["details"]
    prompt = [p["id"] for p in d["prefill"]]
    ids = [t["id"] for t in d["tokens"]]
    logits = oracle_logits(tmp_path, prompt, ids).astype(np.float64)
    ref_plain = log_softmax(logits)
    counts = np.zeros(logits.shape[1])
    changed = False
    for s, tok in enumerate(ids):
        logits[s] -= counts * fp
        ref = log_softmax(logits[s])
        assert ref[tok] >= ref.max() - TOL, (s, tok, int(ref.argmax()))
        assert abs(d["tokens"][s]["logprob"] - ref[tok]) < TOL
        changed |= int(ref_plain[s].argmax()) != tok
        counts[tok] += 1
    assert changed, "the penalty never changed a pick: the test could not tell"


def test_openai_client_stream_top_logprobs_and_logit_bias(server):
    import openai
    c = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")
    msgs = [{"role": "user", "content": "Say one word."}]
    full = c.chat.completions.create(model="m", messages=msgs, max_tokens=4, temperature=0,
                                     logprobs=True, top_logprobs=4)
    want = [[(t.token, t.logprob) for t in e.top_logprobs] for e in full.choices[0].logprobs.content]
    got = []
    for ch in c.chat.completions.create(model="m", messages=msgs, max_tokens=4, temperature=0,
                                        logprobs=True, top_logprobs=4, stream=True):
        if ch.choices and ch.choices[0].logprobs:
            got += [[(t.token, t.logprob) for t in e.top_logprobs]
                    for e in ch.choices[0].logprobs.content]
    assert got == want and all(len(w) == 4 for w in want)
    # the client sends logit_bias as {"id": bias}: banning the greedy first token changes it
    first = full.choices[0].logprobs.content[0].token
    ids = requests.post(server.url + "/tokenize", json={"inputs": first, "add_special_tokens":
                                                        False}, timeout=60).json()
    assert len(ids) == 1
    banned = c.chat.completions.create(model="m", messages=msgs, max_tokens=4, temperature=0,
                                       logprobs=True, logit_bias={str(ids[0]["id"]): -100})
    assert banned.choices[0].logprobs.content[0].token != first
