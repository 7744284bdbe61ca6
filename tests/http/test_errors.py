"""Every documented error case returns its status and a JSON body with a stable type:
TGI routes {"error", "error_type"}, OpenAI routes {"error": {"message", "type", "param", "code"}}."""
import http.client

import openai
import pytest
import requests

G = "/generate"


def tgi_error(r, status, etype):
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert body["error_type"] == etype, body
    assert isinstance(body["error"], str) and body["error"]
    return body


def oai_error(r, status, etype, param=None):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["type"] == etype, err
    assert err["code"] == status
    assert err["message"]
    if param:
        assert err["param"] == param, err
    return err


def raw_post(server, path, data, ctype="application/json"):
    return requests.post(server.url + path, data=data, headers={"Content-Type": ctype}, timeout=30)


def test_unparsable_body_400(server):
    tgi_error(raw_post(server, G, b"{not json"), 400, "invalid_json")
    tgi_error(raw_post(server, G, b""), 400, "invalid_json")
    tgi_error(raw_post(server, G, b"[1, 2]"), 400, "invalid_json")
    oai_error(raw_post(server, "/v1/chat/completions", b"nope"), 400, "invalid_json")
    tgi_error(raw_post(server, "/tokenize", b"nope"), 400, "invalid_json")


@pytest.mark.parametrize("body,field", [
    ({"inputs": 1}, "inputs"),
    ({}, "inputs"),
    ({"inputs": ""}, "inputs"),
    ({"inputs": "x", "parameters": 5}, "parameters"),
    ({"inputs": "x", "parameters": {"max_new_tokens": 0}}, "max_new_tokens"),
    ({"inputs": "x", "parameters": {"max_new_tokens": "5"}}, "max_new_tokens"),
    ({"inputs": "x", "parameters": {"max_new_tokens": 1.5}}, "max_new_tokens"),
    ({"inputs": "x", "parameters": {"temperature": 0}}, "temperature"),
    ({"inputs": "x", "parameters": {"top_p": 1.5}}, "top_p"),
    ({"inputs": "x", "parameters": {"top_k": 0}}, "top_k"),
    ({"inputs": "x", "parameters": {"repetition_penalty": -1}}, "repetition_penalty"),
    ({"inputs": "x", "parameters": {"seed": -3}}, "seed"),
    ({"inputs": "x", "parameters": {"best_of": 2}}, "best_of"),
    ({"inputs": "x", "parameters": {"stop": "x"}}, "stop"),
    ({"inputs": "x", "parameters": {"stop": ["a", "b", "c", "d", "e"]}}, "stop"),
    ({"inputs": "x", "parameters": {"stop": [""]}}, "stop"),
    ({"inputs": "x", "parameters": {"details": "yes"}}, "details"),
    ({"inputs": "x", "parameters": {"grammar": {"type": "json",
                                                "value": {"type": "integer", "minimum": 1}}}},
     "grammar.value"),
    ({"inputs": "x", "parameters": {"grammar": {"type": "lark", "value": "x"}}}, "grammar.type"),
    ({"inputs": "x", "parameters": {"top_n_tokens": 6}}, "top_n_tokens"),
    ({"inputs": "x", "parameters": {"frequency_penalty": 3}}, "frequency_penalty"),
    ({"inputs": "x", "parameters": {"truncate": 0}}, "truncate"),
])
def test_generate_validation_422(server, body, field):
    r = server.post(G, body)
    e = tgi_error(r, 422, "validation")
    assert field in e["error"]
    assert e.get("param") == field


def test_nulls_mean_defaults(server):
    """huggingface_hub sends every parameter, unset ones as null."""
    r = server.post(G, {"inputs": "Hi", "parameters": {"max_new_tokens": 2, "temperature": None,
                                                      "top_k": None, "stop": None, "seed": None,
                                                      "best_of": None, "grammar": None}})
    assert r.status_code == 200, r.text


def test_stream_rejects_decoder_input_details(server):
    r = server.post("/generate_stream", {"inputs": "x", "parameters": {
        "details": True, "decoder_input_details": True}})
    tgi_error(r, 422, "validation")


@pytest.mark.parametrize("path,body,param", [
    ("/v1/chat/completions", {"messages": []}, "messages"),
    ("/v1/chat/completions", {}, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "tool", "content": "x"}]}, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": 5}]}, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "n": 0}, "n"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "temperature": 3}, "temperature"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "max_tokens"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "tools": [{}]}, "tools"),
    ("/v1/completions", {}, "prompt"),
    ("/v1/completions", {"prompt": ""}, "prompt"),
    ("/v1/completions", {"prompt": [1, 2, 99999999]}, "prompt"),
    ("/v1/completions", {"prompt": "x", "stop": 3}, "stop"),
    ("/v1/completions", {"prompt": "x", "presence_penalty": 2.5}, "presence_penalty"),
    ("/v1/completions", {"prompt": "x", "logit_bias": {"x": 1}}, "logit_bias"),
    ("/v1/completions", {"prompt": "x", "echo": True, "stream": True}, "echo"),
])
def test_openai_validation_422(server, path, body, param):
    oai_error(server.post(path, body), 422, "validation", param)


def test_openai_client_raises(server):
    c = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.UnprocessableEntityError) as ei:
        c.chat.completions.create(model="x", messages=[{"role": "user", "content": "x"}], n=0)
    assert "n" in str(ei.value)


def test_not_found_404_and_method_405(server):
    tgi_error(requests.get(server.url + "/nope"), 404, "not_found")
    oai_error(requests.post(server.url + "/v1/nope", json={}), 404, "not_found")
    r = requests.get(server.url + G)
    tgi_error(r, 405, "method_not_allowed")
    assert r.headers["Allow"] == "POST"
    tgi_error(requests.post(server.url + "/health"), 405, "method_not_allowed")
    oai_error(requests.delete(server.url + "/v1/models"), 405, "method_not_allowed")


def test_prompt_limits_422(start_server):
    s = start_server("--max-input-tokens", "16", "--max-total-tokens", "32")
    e = tgi_error(s.post(G, {"inputs": "word " * 40, "parameters": {"max_new_tokens": 2}}),
                  422, "validation")
    assert "less than 17 tokens" in e["error"]
    e = tgi_error(s.post(G, {"inputs": "word " * 10, "parameters": {"max_new_tokens": 30}}),
                  422, "validation")
    assert "must be <= 32" in e["error"]
    # truncate keeps the last tokens and then fits
    r = s.post(G, {"inputs": "word " * 40, "parameters": {"max_new_tokens": 2, "truncate": 8}})
    assert r.status_code == 200, r.text
    oai_error(s.post("/v1/completions", {"prompt": "word " * 40, "max_tokens": 2}), 422,
              "validation", "prompt")
    info = requests.get(s.url + "/info").json()
    assert info["max_input_tokens"] == 16 and info["max_total_tokens"] == 32


def test_body_over_limit_413(start_server):
    s = start_server("--max-body-bytes", "1000")
    big = {"inputs": "x" * 2000}
    tgi_error(s.post(G, big), 413, "payload_too_large")
    # chunked upload (no Content-Length): refused once the limit is passed
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
    conn.putrequest("POST", G)
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    payload = b'{"inputs":"' + b"y" * 3000 + b'"}'
    for i in range(0, len(payload), 500):
        part = payload[i:i + 500]
        conn.send(b"%x\r\n%s\r\n" % (len(part), part))
    conn.send(b"0\r\n\r\n")
    resp = conn.getresponse()
    assert resp.status == 413
    conn.close()
    assert s.post(G, {"inputs": "ok", "parameters": {"max_new_tokens": 1}}).status_code == 200


def test_api_key_401(start_server):
    s = start_server("--api-key", "sekrit")
    tgi_error(s.post(G, {"inputs": "x"}), 401, "unauthorized")
    tgi_error(s.post(G, {"inputs": "x"}, headers={"Authorization": "Bearer wrong"}), 401,
              "unauthorized")
    oai_error(requests.get(s.url + "/v1/models"), 401, "unauthorized")
    ok = s.post(G, {"inputs": "x", "parameters": {"max_new_tokens": 1}},
                headers={"Authorization": "Bearer sekrit"})
    assert ok.status_code == 200
    assert requests.get(s.url + "/health").status_code == 200  # probes need no key
    assert requests.get(s.url + "/metrics").status_code == 200
    c = openai.OpenAI(base_url=s.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        c.models.list()
    c = openai.OpenAI(base_url=s.url + "/v1", api_key="sekrit", max_retries=0)
    assert c.models.list().data
