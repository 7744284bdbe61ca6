"""Regenerate the seed corpus of fuzz_request (tests/fuzz/corpus/fuzz_request/) from real clients.

A local HTTP server records the exact bytes each client sends and answers 400, so no client
retries; the bodies are written one per file, named after the call that produced them. Clients:
the `openai` package (chat and completions, streaming, tools=[] and the other no-op defaults),
`huggingface_hub.InferenceClient` (text_generation against a URL: POST / with "stream"), and the
curl bodies of README.md. The hostile seeds at the end are the issue 11 probes (trailing data,
invalid UTF-8, underflowing floats, ids past int).

    python3 tests/fuzz/fuzz_request.py [--out tests/fuzz/corpus/fuzz_request]
"""
import argparse
import http.server
import os
import threading

CAPTURED = []


class Capture(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        CAPTURED.append((self.path, self.rfile.read(n)))
        body = b'{"error":{"message":"captured","type":"validation","param":null,"code":400}}'
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


def capture(name, call, out):
    before = len(CAPTURED)
    try:
        call()
    except Exception:  # the 400 every call gets; the body is what matters
        pass
    for i, (path, body) in enumerate(CAPTURED[before:]):
        with open(os.path.join(out, f"{name}{'' if i == 0 else '_' + str(i)}.json"), "wb") as f:
            f.write(body)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "corpus", "fuzz_request"))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    srv = http.server.HTTPServer(("127.0.0.1", 0), Capture)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_port}"

    from openai import OpenAI
    from huggingface_hub import InferenceClient

    oa = OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    msgs = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"}]
    capture("openai_chat", lambda: oa.chat.completions.create(model="m", messages=msgs, max_tokens=32), a.out)
    capture("openai_chat_stream", lambda: oa.chat.completions.create(
        model="m", messages=msgs, stream=True, stream_options={"include_usage": True}, temperature=0,
        seed=7, stop=["\n\n"]), a.out)
    capture("openai_chat_noops", lambda: oa.chat.completions.create(
        model="m", messages=msgs, tools=[], tool_choice="none", response_format={"type": "text"},
        logit_bias={}, parallel_tool_calls=False, user="u-1", max_completion_tokens=8, n=1,
        presence_penalty=0, frequency_penalty=0, logprobs=True, top_logprobs=2), a.out)
    capture("openai_chat_parts", lambda: oa.chat.completions.create(
        model="m", messages=[{"role": "developer", "content": "Be brief."},
                             {"role": "user", "content": [{"type": "text", "text": "caf\u00e9 \U0001F600"}]}],
        extra_body={"top_k": 40, "repetition_penalty": 1.1, "ignore_eos": True}), a.out)
    capture("openai_completions", lambda: oa.completions.create(model="m", prompt="Once upon a time",
                                                                max_tokens=16, echo=True, logprobs=1), a.out)
    capture("openai_completions_ids", lambda: oa.completions.create(model="m", prompt=[1, 2, 3, 4],
                                                                    stream=True, stop="."), a.out)
    hf = InferenceClient(model=url)
    capture("hf_text_generation", lambda: hf.text_generation("Hello", max_new_tokens=16, details=True,
                                                             stop=["\n"], seed=3), a.out)
    capture("hf_text_generation_stream", lambda: list(hf.text_generation(
        "Hello", max_new_tokens=8, stream=True, do_sample=True, temperature=0.7, top_k=50, top_p=0.9,
        repetition_penalty=1.2, return_full_text=True, truncate=100)), a.out)
    srv.shutdown()

    written = {  # README.md curl bodies and issue 11 probes, as sent byte for byte
        "curl_generate.json": b'{"inputs":"What is deep learning?","parameters":{"max_new_tokens":20}}',
        "curl_generate_details.json": b'{"inputs":"Hi","parameters":{"max_new_tokens":4,"details":true,'
                                      b'"decoder_input_details":true}}',
        "curl_chat.json": b'{"model":"any","messages":[{"role":"user","content":"Hi"}],"max_tokens":32}',
        "langchain_chat.json": b'{"messages": [{"content": "Hi", "role": "user"}], "model": "gpt-3.5-turbo", '
                               b'"stream": false, "n": 1, "temperature": 0.7}',
        "probe_trailing.json": b'{"inputs":"x"} junk',
        "probe_bad_utf8.json": b'{"inputs":"ab\xff\xc0\xaf","parameters":{"return_full_text":true}}',
        "probe_tiny_floats.json": b'{"inputs":"x","parameters":{"temperature":1e-50,"repetition_penalty":1e-50}}',
        "probe_big_ids.json": b'{"prompt":[2147483648,-1,1e300,1.5],"echo":true}',
        "probe_tools.json": b'{"messages":[{"role":"tool","content":null}],"tools":[{"type":"function"}],'
                            b'"tool_choice":{"type":"function"},"response_format":{"type":"json_object"},'
                            b'"logit_bias":{"1":5}}',
    }
    for name, body in written.items():
        with open(os.path.join(a.out, name), "wb") as f:
            f.write(body)


if __name__ == "__main__":
    main()
