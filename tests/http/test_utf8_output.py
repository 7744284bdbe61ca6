"""Every JSON string flashgen emits is valid UTF-8 (issue 11, "Hostile input"): an OpenAI stream
that holds back a tail for a stop sequence must not cut that tail inside a character (the `openai`
client raised UnicodeDecodeError), and the per-token texts of `details` / `decoder_input_details`
show U+FFFD for the bytes of a character split across tokens, as tokenizers' decode([id]) does.

SmolLM2 continues the prompt below with full-width semicolons (3 bytes each), so stop sequences of
20, 21 and 22 bytes put the held-back cut at each offset inside a character."""
import json

import requests
from openai import OpenAI

PROMPT = "😀😀😀😀😀😀 🎉🎉🎉🎉 日本語日本語日本語"


def strict_lines(raw):
    """The SSE lines, each decoded strictly (UnicodeDecodeError on a cut character)."""
    return [line.decode("utf-8") for line in raw.split(b"\n")]


def test_stream_with_a_stop_sequence_never_cuts_a_character(server):
    texts = set()
    for n in (20, 21, 22):
        r = requests.post(server.url + "/v1/completions", stream=True, timeout=120,
                          json={"prompt": PROMPT, "max_tokens": 24, "temperature": 0,
                                "stream": True, "stop": ["z" * n]})
        assert r.status_code == 200
        lines = strict_lines(r.raw.read())
        chunks = [json.loads(l[6:]) for l in lines if l.startswith("data: {")]
        text = "".join(c["choices"][0]["text"] for c in chunks)
        assert any(ord(ch) > 0x7FF for ch in text), text  # the case the test is about
        texts.add(text)
    assert len(texts) == 1  # holding back never changes what arrives in the end
    client = OpenAI(base_url=server.url + "/v1", api_key="unused")
    got = "".join(c.choices[0].text for c in client.completions.create(
        model="any", prompt=PROMPT, max_tokens=24, temperature=0, stream=True, stop=["z" * 20]))
    assert got == texts.pop()


def test_token_texts_of_split_characters_are_valid_utf8(server):
    r = requests.post(server.url + "/generate", timeout=120,
                      json={"inputs": PROMPT, "parameters": {"max_new_tokens": 8, "details": True,
                                                             "decoder_input_details": True}})
    assert r.status_code == 200
    body = json.loads(r.content.decode("utf-8"))  # strict: raises on a partial character
    prefill = body["details"]["prefill"]
    assert any("\ufffd" in t["text"] for t in prefill), prefill  # emoji split over byte tokens
    assert all(isinstance(t["text"], str) for t in body["details"]["tokens"])
