#!/usr/bin/env python3
"""serve_check.py — correctness of batching, decode padding and KV forks on a running server,
through /v1/completions (stdlib only, for the device machine; bench/serving_device.sh runs it on
CUDA against a server started with FLASHGEN_BATCH_INVARIANT=1, where a sequence's tokens do not
depend on what else is in its batch).

  1. each of --prompts token-id prompts (lengths 17 + 7k, so their last pages are partial at
     different rows, and one of 33 tokens, whose fork point falls on a page boundary), greedy,
     one at a time: the references;
  2. all of them at once (a decode batch padded to the next bucket past 8): the same tokens
     (exact: batch invariance);
  3. n = 4 of each, greedy (forks: the full prompt pages shared, the partial one copied):
     choice 0 is computed as the reference is and must equal it; a fork computes its last
     prompt token as a 1-token query, another attention kernel than the reference's prefill,
     so its first token must agree with the reference's and its log-probability within 0.05
     (bf16; a wrong page would be far off), and how many forks match all the way is reported;
  4. n = 3 sampled with a seed: choice 0 equals a single request with the seed; the forks'
     first tokens equal single requests with job_seed(seed, c) (the same tolerance).

  python3 tools/serve_check.py --url http://127.0.0.1:8080
Prints one line per check; exit status 1 when one fails.
"""
import argparse
import json
import sys
import threading
import urllib.request

MASK64 = (1 << 64) - 1


def job_seed(seed, c):
    """server/job.h job_seed: the seed of choice c of a request seeded with `seed`."""
    if c == 0:
        return seed
    z = (seed + c * 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    z ^= z >> 31
    return z & ((1 << 53) - 1)


def complete(url, body):
    req = urllib.request.Request(url + "/v1/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json",
                                          "Connection": "close"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())


def texts(resp):
    return [c["text"] for c in sorted(resp["choices"], key=lambda c: c["index"])]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--prompts", type=int, default=11, help="more than 8: the batch is padded")
    ap.add_argument("--max-tokens", type=int, default=24)
    a = ap.parse_args()
    url = a.url.rstrip("/")
    prompts = [[1000 + (37 * k + 11 * i) % 30000 for i in range(17 + 7 * k)]
               for k in range(a.prompts - 1)]
    prompts.append([2000 + 13 * i for i in range(33)])  # fork point 32: a page boundary
    base = {"max_tokens": a.max_tokens, "temperature": 0, "ignore_eos": True}
    ok = True

    def report(name, good, detail=""):
        nonlocal ok
        ok &= good
        print(f"{'ok  ' if good else 'FAIL'} {name}{': ' + detail if detail else ''}")

    def run(prompt, **kw):
        resp = complete(url, {"prompt": prompt, "logprobs": 1, **kw})
        return [(c["text"], c["logprobs"]["tokens"], c["logprobs"]["token_logprobs"])
                for c in sorted(resp["choices"], key=lambda c: c["index"])]

    def first_agrees(x, y):
        return x[1][:1] == y[1][:1] and abs(x[2][0] - y[2][0]) < 0.05

    ref = [run(p, **base)[0] for p in prompts]
    got = [None] * len(prompts)

    def one(i):
        got[i] = run(prompts[i], **base)[0]

    th = [threading.Thread(target=one, args=(i,)) for i in range(len(prompts))]
    for t in th:
        t.start()
    for t in th:
        t.join()
    bad = [i for i in range(len(prompts)) if got[i][0] != ref[i][0]]
    report(f"{len(prompts)} at once equal one at a time", not bad, f"differ: {bad}" if bad else "")

    bad, whole, forks = [], 0, 0
    for i, p in enumerate(prompts):
        ch = run(p, n=4, **base)
        if ch[0][0] != ref[i][0]:
            bad.append((i, 0))
        for c in range(1, 4):
            forks += 1
            whole += ch[c][0] == ref[i][0]
            if not first_agrees(ch[c], ref[i]):
                bad.append((i, c))
    report("n = 4 greedy: choice 0 equals the single request, the forks' first tokens agree",
           not bad, (f"differ: {bad}; " if bad else "") + f"{whole}/{forks} forks equal throughout")

    samp = {"max_tokens": a.max_tokens, "temperature": 1.0, "ignore_eos": True}
    bad, whole = [], 0
    for i in (0, len(prompts) - 1):
        many = run(prompts[i], n=3, seed=7, **samp)
        if len({m[0] for m in many}) < 2:
            bad.append((i, "all choices equal"))
        for c in range(3):
            single = run(prompts[i], seed=job_seed(7, c), **samp)[0]
            whole += single[0] == many[c][0]
            if (c == 0 and single[0] != many[0][0]) or not first_agrees(single, many[c]):
                bad.append((i, c))
    report("n = 3 sampled: choice c agrees with a single request seeded job_seed(seed, c)", not bad,
           (f"differ: {bad}; " if bad else "") + f"{whole}/6 equal throughout")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
