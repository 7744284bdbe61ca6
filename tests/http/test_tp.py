"""--tensor-parallel (issue 17) through the server: the shards emulated on the CPU backend serve the
same greedy text as one unsharded model on the same fp32 weights, /info and the start-up log say
how the model is split, and a shard count the cut does not support stops start-up naming the
option. The sharding maths itself is checked logit by logit in tests/unit/test_tp.c."""
import concurrent.futures

import requests

from fg_http import Server

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time"]
FP32 = {"FLASHGEN_CPU_WEIGHTS": "fp32"}  # the path the shards are cut from (tp.h)


def generate(url, text):
    r = requests.post(url + "/generate",
                      json={"inputs": text, "parameters": {"max_new_tokens": 12}}, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()["generated_text"]


def test_tensor_parallel_2_serves_the_unsharded_text(start_server):
    one = start_server("--device", "cpu", "--threads", "2", env=FP32)
    ref = [generate(one.url, p) for p in PROMPTS]
    one.stop()
    two = start_server("--device", "cpu", "--threads", "2", "--tensor-parallel", "2", env=FP32)
    info = requests.get(two.url + "/info", timeout=10).json()
    assert info["tensor_parallel"] == 2 and info["tensor_parallel_mode"] == "emulated"
    assert any("tensor parallel 2 (emulated on one cpu context)" in l for l in two.lines), \
        "\n".join(two.lines)
    assert [generate(two.url, p) for p in PROMPTS] == ref
    # all at once: one batch through the shards
    with concurrent.futures.ThreadPoolExecutor(len(PROMPTS)) as ex:
        assert list(ex.map(lambda p: generate(two.url, p), PROMPTS)) == ref


def test_unsharded_info_says_none(server):
    info = requests.get(server.url + "/info", timeout=10).json()
    assert info["tensor_parallel"] == 1 and info["tensor_parallel_mode"] == "none"


def test_tensor_parallel_3_stops_start_up():
    s = Server("--device", "cpu", "--tensor-parallel", "3", wait_ready=False)
    rc = s.proc.wait(30)
    s.stop()
    assert rc != 0
    assert any("tensor_parallel" in l and "1, 2, 4 or 8" in l for l in s.lines), "\n".join(s.lines)
