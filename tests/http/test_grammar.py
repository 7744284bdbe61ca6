"""Constrained decoding through HTTP on the real SmolLM2: OpenAI `response_format` (json_object,
json_schema) with the `openai` client, every output parsed by `json.loads` and validated by the
`jsonschema` package; TGI `parameters.grammar` (json, regex) with every output matched by Python's
`re.fullmatch`; unsupported schema keywords are a 422 naming the keyword."""
import json
import re

import jsonschema
import openai
import pytest

from fg_http import stream_generate  # noqa: F401  (the helpers' module; server fixture in conftest)


def oai(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


SCHEMAS = [
    # the OpenAI structured-outputs guide's examples, shortened
    {"type": "object",
     "properties": {"name": {"type": "string"}, "date": {"type": "string"},
                    "participants": {"type": "array", "items": {"type": "string"}}},
     "required": ["name", "date", "participants"], "additionalProperties": False},
    {"type": "object",
     "properties": {"steps": {"type": "array", "maxItems": 3,
                              "items": {"type": "object",
                                        "properties": {"explanation": {"type": "string"},
                                                       "output": {"type": "string"}},
                                        "required": ["explanation", "output"],
                                        "additionalProperties": False}},
                    "final_answer": {"type": "string"}},
     "required": ["steps", "final_answer"], "additionalProperties": False},
    # TGI's guidance example
    {"properties": {"location": {"type": "string"}, "activity": {"type": "string"},
                    "animals_seen": {"type": "integer"},
                    "animals": {"type": "array", "items": {"type": "string"}}},
     "required": ["location", "activity", "animals_seen", "animals"]},
    # enums, optionals, nullables, numbers, booleans
    {"type": "object",
     "properties": {"city": {"type": "string", "maxLength": 20},
                    "unit": {"enum": ["celsius", "fahrenheit"]},
                    "temperature": {"type": "number"},
                    "raining": {"type": "boolean"},
                    "note": {"type": ["string", "null"]}},
     "required": ["city", "unit", "temperature"]},
    # $defs referenced twice, and a recursive definition the output may stop at (null)
    {"$defs": {"address": {"type": "object",
                           "properties": {"street": {"type": "string", "maxLength": 30},
                                          "city": {"type": "string", "maxLength": 20}},
                           "required": ["street", "city"]},
               "person": {"type": "object",
                          "properties": {"name": {"type": "string", "maxLength": 20},
                                         "friend": {"anyOf": [{"type": "null"},
                                                              {"$ref": "#/$defs/person"}]}},
                          "required": ["name"]}},
     "type": "object",
     "properties": {"home": {"$ref": "#/$defs/address"}, "work": {"$ref": "#/$defs/address"},
                    "owner": {"$ref": "#/$defs/person"}},
     "required": ["home", "work", "owner"]},
    # anyOf, const, string lengths and patterns
    {"type": "object",
     "properties": {"id": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{3}$"},
                    "kind": {"anyOf": [{"const": "book"}, {"const": "film"}]},
                    "rating": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
                    "code": {"type": "string", "minLength": 2, "maxLength": 4}},
     "required": ["id", "kind", "rating", "code"]},
]


@pytest.mark.parametrize("k", range(len(SCHEMAS)))
def test_json_schema_outputs_validate(server, k):
    schema = SCHEMAS[k]
    c = oai(server)
    validated = 0
    # greedy and two seeded samples: a run whose free strings never close within max_tokens is
    # skipped (the model, not the grammar, decides when a string ends), so try a few
    for temperature, seed in ((0, k), (0.8, k), (0.8, k + 100)):
        r = c.chat.completions.create(
            model="m", max_tokens=300, temperature=temperature, seed=seed,
            messages=[{"role": "user", "content": "Describe something as JSON."}],
            response_format={"type": "json_schema",
                             "json_schema": {"name": "thing", "schema": schema, "strict": True}})
        ch = r.choices[0]
        if ch.finish_reason == "length":
            continue  # a long string ran out of tokens: not a complete value to validate
        assert ch.finish_reason == "stop", ch
        doc = json.loads(ch.message.content)
        jsonschema.validate(doc, schema)
        validated += 1
    assert validated, "every output ran out of tokens: nothing was validated"


def test_json_object_mode(server):
    c = oai(server)
    r = c.chat.completions.create(
        model="m", max_tokens=120, temperature=0,
        # a prompt SmolLM2 answers with a short object (asked only "about a cat", it greedily
        # repeats keys past 120 tokens: still JSON-constrained, but never finished)
        messages=[{"role": "user", "content": "Give me a JSON object about a cat with two fields."}],
        response_format={"type": "json_object"})
    assert r.choices[0].finish_reason == "stop", r.choices[0]
    assert isinstance(json.loads(r.choices[0].message.content), dict)


def test_tgi_grammar_regex(server):
    for pattern in [r"(yes|no)", r"[0-9]{3}-[0-9]{4}", r"[A-Z][a-z]+ [A-Z][a-z]+",
                    r"\d+(\.\d{1,2})?"]:
        r = server.post("/generate", {"inputs": "Answer: ",
                                      "parameters": {"max_new_tokens": 20,
                                                     "grammar": {"type": "regex",
                                                                 "value": pattern}}})
        assert r.status_code == 200, r.text
        out = r.json()["generated_text"]
        assert re.fullmatch(pattern, out), (pattern, out)


def test_tgi_grammar_json(server):
    schema = SCHEMAS[3]
    for value in (schema, json.dumps(schema)):  # TGI takes the schema or a string of it
        r = server.post("/generate", {"inputs": "The weather in Paris as JSON: ",
                                      "parameters": {"max_new_tokens": 80, "details": True,
                                                     "grammar": {"type": "json",
                                                                 "value": value}}})
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["details"]["finish_reason"] == "eos_token", out
        jsonschema.validate(json.loads(out["generated_text"]), schema)


def test_unsupported_keywords_are_422_naming_them(server):
    r = server.post("/v1/chat/completions", {
        "messages": [{"role": "user", "content": "x"}],
        "response_format": {"type": "json_schema",
                            "json_schema": {"name": "n", "schema": {"type": "integer",
                                                                    "minimum": 3}}}})
    assert r.status_code == 422, r.text
    assert "minimum" in r.json()["error"]["message"]
    r = server.post("/generate", {"inputs": "x", "parameters": {
        "grammar": {"type": "regex", "value": "(a)\\1"}}})
    assert r.status_code == 422, r.text
    assert "\\1" in r.json()["error"]
    r = server.post("/generate", {"inputs": "x", "parameters": {
        "grammar": {"type": "lark", "value": "x"}}})
    assert r.status_code == 422, r.text


def test_concurrent_constrained_and_free_rows(server):
    """Constrained rows batched with each other and with an unconstrained one (the step's masks
    are computed in parallel; the free row is sampled on the same host path)."""
    from concurrent.futures import ThreadPoolExecutor
    patterns = [r"[a-z]{3,6}", r"(red|green|blue)", r"[0-9]{2}:[0-9]{2}", r"(ab)+c?"]

    def constrained(p):
        r = server.post("/generate", {"inputs": "Say something: ",
                                      "parameters": {"max_new_tokens": 12,
                                                     "grammar": {"type": "regex", "value": p}}})
        assert r.status_code == 200, r.text
        return p, r.json()["generated_text"]

    def free():
        r = server.post("/generate", {"inputs": "Once upon a time",
                                      "parameters": {"max_new_tokens": 12}})
        assert r.status_code == 200, r.text
        return r.json()["generated_text"]

    with ThreadPoolExecutor(5) as ex:
        futs = [ex.submit(constrained, p) for p in patterns]
        f = ex.submit(free)
        for fu in futs:
            p, out = fu.result()
            assert re.fullmatch(p, out), (p, out)
        assert f.result()
