"""n > 1, best_of and prompt lists through the real clients (openai, huggingface_hub) on SmolLM2:
sampled choices are distinct and each equals a single request with its derived seed; greedy
choices are all equal; streamed chunks carry their index; the n sequences of one prompt compute
it once (the prompt's KV pages are forked: flashgen_prefill_tokens_total grows by the prompt
plus one token per fork, not n prompts); best_of returns the candidate with the highest
cumulative logprob (TGI: the others in details.best_of_sequences, each with its seed); prompt
lists give each prompt its own choices, index = prompt * n + i."""
import time
import uuid

import openai
import pytest
import requests
from huggingface_hub import InferenceClient

MASK64 = (1 << 64) - 1


def job_seed(seed, c):
    """The seed of choice c of a request seeded with `seed` (server/job.h job_seed)."""
    if c == 0:
        return seed
    z = (seed + c * 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    z ^= z >> 31
    return z & ((1 << 53) - 1)


@pytest.fixture(scope="module")
def oai(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)


PROMPT = "Once upon a time, in a quiet village by the sea,"


def test_sampled_choices_distinct_and_equal_to_derived_seeds(oai):
    r = oai.completions.create(model="m", prompt=PROMPT, n=4, max_tokens=12, temperature=1.0,
                               seed=1234)
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    texts = [c.text for c in r.choices]
    assert len(set(texts)) == 4, texts
    gen = 0
    for i, text in enumerate(texts):
        one = oai.completions.create(model="m", prompt=PROMPT, max_tokens=12, temperature=1.0,
                                     seed=job_seed(1234, i))
        assert one.choices[0].text == text, f"choice {i}"
        gen += one.usage.completion_tokens
        assert one.usage.prompt_tokens == r.usage.prompt_tokens
    assert r.usage.completion_tokens == gen


def test_greedy_choices_all_equal(oai):
    r = oai.completions.create(model="m", prompt=PROMPT, n=3, max_tokens=10, temperature=0)
    one = oai.completions.create(model="m", prompt=PROMPT, max_tokens=10, temperature=0)
    assert [c.text for c in r.choices] == [one.choices[0].text] * 3


def test_stream_chunks_carry_their_index(oai):
    full = oai.completions.create(model="m", prompt=PROMPT, n=3, max_tokens=10, temperature=0.9,
                                  seed=77)
    texts, finish = ["", "", ""], [None, None, None]
    usage = None
    for ch in oai.completions.create(model="m", prompt=PROMPT, n=3, max_tokens=10,
                                     temperature=0.9, seed=77, stream=True,
                                     stream_options={"include_usage": True}):
        if ch.usage:
            usage = ch.usage
        for c in ch.choices:
            texts[c.index] += c.text
            if c.finish_reason:
                assert finish[c.index] is None, "one finish chunk per choice"
                finish[c.index] = c.finish_reason
    assert texts == [c.text for c in full.choices]
    assert finish == [c.finish_reason for c in full.choices]
    assert usage.completion_tokens == full.usage.completion_tokens
    assert usage.prompt_tokens == full.usage.prompt_tokens


def test_chat_n(oai):
    msgs = [{"role": "user", "content": "Name a color."}]
    r = oai.chat.completions.create(model="m", messages=msgs, n=2, max_tokens=8, temperature=1.0,
                                    seed=9)
    assert [c.index for c in r.choices] == [0, 1]
    for i in range(2):
        one = oai.chat.completions.create(model="m", messages=msgs, max_tokens=8,
                                          temperature=1.0, seed=job_seed(9, i))
        assert one.choices[0].message.content == r.choices[i].message.content
    roles, text = {}, {0: "", 1: ""}
    for ch in oai.chat.completions.create(model="m", messages=msgs, n=2, max_tokens=8,
                                          temperature=1.0, seed=9, stream=True):
        for c in ch.choices:
            if c.delta.role:
                roles[c.index] = c.delta.role
            text[c.index] += c.delta.content or ""
    assert roles == {0: "assistant", 1: "assistant"}
    assert [text[0], text[1]] == [c.message.content for c in r.choices]


@pytest.mark.parametrize("max_tokens", [4, 1])  # 1: the first sequence ends at its first token
def test_forks_compute_the_prompt_once(server, oai, max_tokens):
    prompt = f"A unique prompt {uuid.uuid4().hex} about the KV pages of several choices:"
    forks0 = server.metric("flashgen_kv_forks_total")
    pre0 = server.metric("flashgen_prefill_tokens_total")
    r = oai.completions.create(model="m", prompt=prompt, n=4, max_tokens=max_tokens,
                               temperature=1.0, seed=3)
    n_prompt = r.usage.prompt_tokens
    assert server.metric("flashgen_kv_forks_total") - forks0 == 3
    # the prompt once, then the last prompt token again for each fork (its first sample's
    # logits); 4 separate prompts would be 4 * n_prompt
    assert server.metric("flashgen_prefill_tokens_total") - pre0 == n_prompt + 3
    assert n_prompt + 3 < 4 * n_prompt


def test_prompt_lists(server, oai):
    prompts = ["The sky is", "My favourite food is"]
    r = oai.completions.create(model="m", prompt=prompts, n=2, max_tokens=6, temperature=0)
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    singles = [oai.completions.create(model="m", prompt=p, max_tokens=6, temperature=0)
               for p in prompts]
    assert [c.text for c in r.choices] == [s.choices[0].text for s in singles for _ in range(2)]
    assert r.usage.prompt_tokens == sum(s.usage.prompt_tokens for s in singles)
    # token-id lists too
    ids = [requests.post(server.url + "/tokenize", json={"inputs": p}).json() for p in prompts]
    ids = [[t["id"] for t in x] for x in ids]
    r2 = oai.completions.create(model="m", prompt=ids, max_tokens=6, temperature=0)
    one = [oai.completions.create(model="m", prompt=x, max_tokens=6, temperature=0) for x in ids]
    assert [c.index for c in r2.choices] == [0, 1]
    assert [c.text for c in r2.choices] == [o.choices[0].text for o in one]


def test_openai_best_of_is_the_highest_cumulative_logprob(oai):
    cands = oai.completions.create(model="m", prompt=PROMPT, n=3, max_tokens=8, temperature=1.0,
                                   seed=42, logprobs=1)
    scores = [sum(c.logprobs.token_logprobs) for c in cands.choices]
    best = oai.completions.create(model="m", prompt=PROMPT, n=1, best_of=3, max_tokens=8,
                                  temperature=1.0, seed=42)
    assert len(best.choices) == 1 and best.choices[0].index == 0
    assert best.choices[0].text == cands.choices[scores.index(max(scores))].text
    assert best.usage.completion_tokens == cands.usage.completion_tokens  # every candidate
    two = oai.completions.create(model="m", prompt=PROMPT, n=2, best_of=3, max_tokens=8,
                                 temperature=1.0, seed=42)
    order = sorted(range(3), key=lambda i: -scores[i])
    assert [c.text for c in two.choices] == [cands.choices[i].text for i in order[:2]]


def test_tgi_best_of(server):
    hf = InferenceClient(model=server.url)
    out = hf.text_generation(PROMPT, max_new_tokens=8, best_of=3, do_sample=True, details=True)
    seqs = out.details.best_of_sequences
    assert len(seqs) == 2
    cum = lambda toks: sum(t.logprob for t in toks)  # noqa: E731
    assert all(cum(out.details.tokens) >= cum(s.tokens) for s in seqs)
    seeds = {out.details.seed} | {s.seed for s in seqs}
    assert len(seeds) == 3, "each sequence its own seed"
    for s in seqs + [out.details]:
        text = s.generated_text if hasattr(s, "generated_text") else out.generated_text
        one = hf.text_generation(PROMPT, max_new_tokens=8, do_sample=True, seed=s.seed)
        assert one == text


@pytest.mark.parametrize("path,body,param", [
    ("/generate", {"inputs": "x", "parameters": {"best_of": 2}}, "best_of"),
    ("/generate", {"inputs": "x", "parameters": {"best_of": 2, "do_sample": True, "seed": 1}},
     "seed"),
    ("/generate", {"inputs": "x", "parameters": {"best_of": 17, "do_sample": True}}, "best_of"),
    ("/generate_stream", {"inputs": "x", "parameters": {"best_of": 2, "do_sample": True}},
     "best_of"),
    ("/v1/completions", {"prompt": "x", "n": 0}, "n"),
    ("/v1/completions", {"prompt": "x", "n": 3, "best_of": 2}, "best_of"),
    ("/v1/completions", {"prompt": "x", "best_of": 2, "stream": True}, "best_of"),
    ("/v1/completions", {"prompt": ["a", [1, 2]]}, "prompt"),
    ("/v1/completions", {"prompt": ["a"] * 65, "n": 2}, "n"),
    ("/v1/completions", {"prompt": "x", "n": 2, "response_format": {"type": "json_object"}}, "n"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "best_of": 2},
     "best_of"),
])
def test_validation(server, path, body, param):
    r = server.post(path, body)
    assert r.status_code == 422, r.text
    j = r.json()
    got = j.get("param") if "error" in j and isinstance(j["error"], str) else j["error"]["param"]
    assert got == param, j


def test_client_gone_cancels_every_choice(server):
    """A stream of n choices whose client hangs up: every sequence ends, nothing stays running,
    and the request counts once, as cancelled."""
    cancelled = server.metric('flashgen_requests_total{outcome="cancelled"}')
    r = requests.post(server.url + "/v1/completions", stream=True, timeout=60,
                      json={"prompt": PROMPT, "n": 3, "max_tokens": 400, "ignore_eos": True,
                            "temperature": 1.0, "stream": True})
    assert r.status_code == 200
    seen = 0
    for line in r.iter_lines():
        if line.startswith(b"data: "):
            seen += 1
        if seen >= 6:
            break
    r.close()
    for _ in range(200):
        if (server.metric("flashgen_num_requests_running") == 0 and
                server.metric('flashgen_requests_total{outcome="cancelled"}') > cancelled):
            break
        time.sleep(0.05)
    assert server.metric("flashgen_num_requests_running") == 0
    assert server.metric("flashgen_kv_cache_usage_perc") == 0
    assert server.metric('flashgen_requests_total{outcome="cancelled"}') - cancelled == 1
