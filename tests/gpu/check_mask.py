"""check_mask.py — the GPU logit mask (kernels/logit_mask.cu, fg_mask_launch) against its C twin
sample_ref_mask() (kernels/sample_ref.c), then masked rows through the GPU sampler against
sample_ref_pick on the twin's masked rows, all from build*/libfgattn.so through ctypes.

Masks: seeded random bitmasks of every density (a single allowed id, a few, half, all but a few,
all), vocabularies that are and are not multiples of 32, n_mask below the vocabulary (the model's
embedding has more rows than the tokenizer has tokens), and row lists that skip rows. The masked
logits must equal the twin's bit for bit, unmasked rows untouched. Then the masked batch is
sampled on the GPU (greedy, temperature, top-k, top-p, penalties) and the ids must equal
sample_ref_pick's on the twin's rows: only allowed ids, -inf handled as the twin handles it.
Timing: the mask launch at 1 / 64 / 256 rows of a 128256 vocabulary, median of graph replays.

  FG_SAMPLE_LIB=build/libfgattn.so python3 tests/gpu/check_mask.py [--no-bench]
Prints one PASS/FAIL line last; exits 1 on failure, 77 without a GPU (tests/gpu/gpu_skip.py).
"""
import ctypes as C
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpu_skip  # noqa: E402
from check_sample import Row, load_lib, rows_struct, row_dict  # noqa: E402

LIB = os.environ.get("FG_SAMPLE_LIB", "build/libfgattn.so")


def setup(lib):
    lib.sample_ref_mask.restype = None
    lib.sample_ref_mask.argtypes = [C.c_void_p, C.c_int, C.c_void_p, C.c_int]
    lib.fg_mask_launch.restype = C.c_int
    lib.fg_mask_launch.argtypes = [C.c_void_p, C.c_int, C.c_void_p, C.c_void_p, C.c_int,
                                   C.c_size_t, C.c_int, C.c_void_p, C.c_char_p, C.c_size_t]


def random_mask(rng, n_mask, kind):
    words = (n_mask + 31) // 32
    allowed = np.zeros(words * 32, dtype=bool)
    if kind == "one":
        allowed[rng.integers(n_mask)] = True
    elif kind == "few":
        allowed[rng.choice(n_mask, size=min(7, n_mask), replace=False)] = True
    elif kind == "half":
        allowed[:n_mask] = rng.random(n_mask) < 0.5
    elif kind == "most":
        allowed[:n_mask] = True
        allowed[rng.choice(n_mask, size=min(5, n_mask), replace=False)] = False
    else:  # all
        allowed[:n_mask] = True
    allowed[n_mask:] = rng.random(words * 32 - n_mask) < 0.5  # garbage past n_mask: ignored
    return np.packbits(allowed.reshape(-1, 32)[:, ::-1], axis=1).view(">u4").astype(np.uint32) \
        .reshape(-1)


def twin_mask(lib, x, mask, n_mask):
    y = np.ascontiguousarray(x, dtype=np.float32).copy()
    lib.sample_ref_mask(y.ctypes.data, y.size, mask.ctypes.data, n_mask)
    return y


def gpu_mask(lib, torch, logits, rows, masks, n_mask):
    d_x = torch.from_numpy(logits.copy()).cuda()
    d_rows = torch.from_numpy(np.asarray(rows, dtype=np.int32)).cuda()
    d_m = torch.from_numpy(masks.view(np.int32).copy()).cuda()
    err = C.create_string_buffer(256)
    rc = lib.fg_mask_launch(d_x.data_ptr(), logits.shape[1], d_rows.data_ptr(), d_m.data_ptr(),
                            len(rows), masks.shape[1], n_mask,
                            torch.cuda.current_stream().cuda_stream, err, 256)
    if rc != 0:
        raise RuntimeError(err.value.decode())
    return d_x


def sample_gpu(lib, torch, d_x, rows, history):
    n = d_x.shape[0]
    d_rows = torch.frombuffer(bytearray(rows_struct(rows)), dtype=torch.uint8).cuda()
    d_h = torch.from_numpy(history.astype(np.int32)).cuda()
    ids = torch.full((n,), -7, dtype=torch.int32, device="cuda")
    lps = torch.full((n,), float("nan"), dtype=torch.float32, device="cuda")
    err = C.create_string_buffer(256)
    rc = lib.fg_sample_launch(d_x.data_ptr(), n, d_x.shape[1], d_rows.data_ptr(), d_h.data_ptr(),
                              ids.data_ptr(), lps.data_ptr(), None,
                              torch.cuda.current_stream().cuda_stream, err, 256)
    if rc != 0:
        raise RuntimeError(err.value.decode())
    torch.cuda.synchronize()
    return ids.cpu().numpy(), lps.cpu().numpy()


def correctness(lib, torch, log):
    rng = np.random.default_rng(20261202)
    fails = []
    cases = 0
    kinds = ("one", "few", "half", "most", "all")
    modes = (dict(), dict(do_sample=1, temperature=0.8), dict(do_sample=1, top_k=40),
             dict(do_sample=1, top_p=0.9), dict(do_sample=1, top_k=5, top_p=0.5, pen=1.3),
             dict(pen=1.2))
    for V, n_mask in ((1000, 1000), (1003, 990), (49152, 49152), (151936, 151646)):
        n = 12
        logits = (rng.standard_normal((n, V)) * rng.choice([0.5, 3.0, 12.0], size=(n, 1))) \
            .astype(np.float32)
        rows = [i for i in range(n) if i % 4 != 3]  # every fourth row is not constrained
        masks = np.stack([random_mask(rng, n_mask, kinds[k % len(kinds)])
                          for k in range(len(rows))])
        d_x = gpu_mask(lib, torch, logits, rows, masks, n_mask)
        got = d_x.cpu().numpy()
        want = logits.copy()
        for k, r in enumerate(rows):
            want[r] = twin_mask(lib, logits[r], masks[k], n_mask)
        cases += n
        if not np.array_equal(got.view(np.int32), want.view(np.int32)):
            bad = np.argwhere(got.view(np.int32) != want.view(np.int32))
            fails.append("V=%d n_mask=%d: %d logits differ, first at row %d id %d" %
                         (V, n_mask, len(bad), bad[0][0], bad[0][1]))
            continue
        # the masked rows through the GPU sampler vs the twin on the twin's rows
        history = rng.integers(0, V, size=64)
        srows = []
        for i in range(n):
            m = modes[i % len(modes)]
            r = row_dict(do_sample=m.get("do_sample", 0), temperature=m.get("temperature", 1.0),
                         top_k=m.get("top_k", 0), top_p=m.get("top_p", 1.0),
                         pen=m.get("pen", 1.0))
            r["u"] = float(rng.random())
            if r["repetition_penalty"] != 1.0:
                r["hist_off"], r["n_hist"] = 0, 64
            srows.append(r)
        gids, _ = sample_gpu(lib, torch, d_x, srows, history)
        for i, r in enumerate(srows):
            x = want[i].copy()
            probs = np.zeros(V, dtype=np.float32)
            idx = np.zeros(V, dtype=np.int32)
            lp = C.c_float()
            h = history.astype(np.int32)
            tid = lib.sample_ref_pick(C.byref(Row(r["do_sample"], r["temperature"], r["top_k"],
                                                  r["top_p"], r["repetition_penalty"],
                                                  r["target"], r["hist_off"], r["n_hist"],
                                                  r["u"])),
                                      x.ctypes.data, V, h.ctypes.data, probs.ctypes.data,
                                      idx.ctypes.data, C.byref(lp))
            if int(gids[i]) != tid:
                fails.append("V=%d row %d (%s): gpu id %d, twin id %d" %
                             (V, i, modes[i % len(modes)], gids[i], tid))
            elif i in rows and not np.isfinite(want[i][tid]):
                fails.append("V=%d row %d: picked a masked id %d" % (V, i, tid))
    log("  %d rows masked and sampled: %d failures" % (cases, len(fails)))
    return fails


def bench(lib, torch, log):
    V, n_mask = 128256, 128000
    rng = np.random.default_rng(7)
    for n in (1, 64, 256):
        logits = rng.standard_normal((n, V)).astype(np.float32)
        masks = np.stack([random_mask(rng, n_mask, "half") for _ in range(n)])
        d_x = torch.from_numpy(logits).cuda()
        d_rows = torch.arange(n, dtype=torch.int32, device="cuda")
        d_m = torch.from_numpy(masks.view(np.int32).copy()).cuda()
        err = C.create_string_buffer(256)
        s = torch.cuda.Stream()
        with torch.cuda.stream(s):
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g, stream=s):
                for _ in range(20):
                    lib.fg_mask_launch(d_x.data_ptr(), V, d_rows.data_ptr(), d_m.data_ptr(), n,
                                       masks.shape[1], n_mask, s.cuda_stream, err, 256)
        times = []
        for _ in range(7):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            g.replay()
            torch.cuda.synchronize()
            times.append((time.perf_counter() - t0) / 20)
        us = sorted(times)[len(times) // 2] * 1e6
        mask_bytes = n * masks.shape[1] * 4
        log("  mask %3d rows x %d: %.1f us per launch (+ %d KB of masks host->device)" %
            (n, V, us, mask_bytes // 1024))


def main():
    no_bench = "--no-bench" in sys.argv[1:]
    why = gpu_skip.why_no_gpu()
    if why:
        return gpu_skip.skip("check_mask", why)
    import torch
    lib = load_lib(LIB)
    setup(lib)
    lines = []

    def log(s):
        print(s, flush=True)
        lines.append(s)

    log("check_mask: %s, lib %s, %s" % (torch.cuda.get_device_name(), LIB,
                                        time.strftime("%Y-%m-%d %H:%M")))
    fails = correctness(lib, torch, log)
    for m in fails[:40]:
        log("  FAIL: " + m)
    if not no_bench:
        bench(lib, torch, log)
    log("check_mask: %s (%d failures)" % ("PASS" if not fails else "FAIL", len(fails)))
    return 0 if not fails else 1


if __name__ == "__main__":
    sys.exit(main())
