"""check_bias_top.py — the GPU logit-delta op (kernels/logit_mask.cu fg_bias_launch: logit_bias,
presence / frequency penalties) against its C twin sample_ref_bias(), and the GPU top-k
alternatives (kernels/sample_top.cu fg_top_launch: top_logprobs / top_n_tokens) against
sample_ref_top(), all from build*/libfgattn.so through ctypes; the twin itself against numpy.

Deltas: seeded random (row, id, delta) lists, each (row, id) once as model/sampler.c builds them,
with entries outside the rows or the vocabulary that must be skipped; the biased logits must
equal the twin's bit for bit (one float add each). Top-k: vocabularies that are and are not
multiples of the block, k of 1, 5, 20, rows with many exact ties (values on a coarse grid: the
order is then decided by id), rows masked to -inf but for a few ids (fewer than k: the rest is
-1), rows that ask nothing (k 0) between rows that ask. Ids must be equal; logprobs within 2e-6
(the log-sum-exp is summed in double in another order, then rounded to float). Timing: top-20
at 1 / 64 / 256 rows of a 128256 vocabulary, and a 300-delta bias launch.

  FG_SAMPLE_LIB=build/libfgattn.so python3 tests/gpu/check_bias_top.py [--no-bench] [--twin-only]
--twin-only checks the twin against numpy without a GPU. Prints one PASS/FAIL line last; exits 1
on failure, 77 without a GPU (tests/gpu/gpu_skip.py).
"""
import ctypes as C
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpu_skip  # noqa: E402

LIB = os.environ.get("FG_SAMPLE_LIB", "build/libfgattn.so")
TOP_MAX = 20  # FG_TOP_MAX (kernels/sample.h)
DELTA = np.dtype([("row", np.int32), ("id", np.int32), ("delta", np.float32)])


def setup(lib, gpu):
    lib.sample_ref_bias.restype = None
    lib.sample_ref_bias.argtypes = [C.c_void_p, C.c_int, C.c_int, C.c_void_p, C.c_int]
    lib.sample_ref_top.restype = None
    lib.sample_ref_top.argtypes = [C.c_void_p, C.c_int, C.c_int, C.c_void_p, C.c_void_p]
    if gpu:
        lib.fg_bias_launch.restype = C.c_int
        lib.fg_bias_launch.argtypes = [C.c_void_p, C.c_int, C.c_int, C.c_void_p, C.c_int,
                                       C.c_void_p, C.c_char_p, C.c_size_t]
        lib.fg_top_launch.restype = C.c_int
        lib.fg_top_launch.argtypes = [C.c_void_p, C.c_int, C.c_void_p, C.c_void_p, C.c_int,
                                      C.c_void_p, C.c_void_p, C.c_void_p, C.c_char_p, C.c_size_t]


def random_deltas(rng, n_rows, V, m):
    rows = rng.integers(0, n_rows, size=m)
    ids = rng.integers(0, V, size=m)
    keep = np.unique(rows.astype(np.int64) * V + ids, return_index=True)[1]
    d = np.zeros(len(keep) + 3, dtype=DELTA)
    d["row"][:len(keep)] = rows[keep]
    d["id"][:len(keep)] = ids[keep]
    d["delta"][:len(keep)] = rng.uniform(-100, 100, size=len(keep)).astype(np.float32)
    d[len(keep):] = [(n_rows, 0, 1.0), (0, V, 1.0), (-1, 3, 1.0)]  # skipped
    return d


def twin_bias(lib, x, d):
    y = np.ascontiguousarray(x, dtype=np.float32).copy()
    lib.sample_ref_bias(y.ctypes.data, y.shape[0], y.shape[1], d.ctypes.data, len(d))
    return y


def twin_top(lib, row, k):
    ids = np.full(TOP_MAX, -7, dtype=np.int32)
    lps = np.full(TOP_MAX, np.nan, dtype=np.float32)
    x = np.ascontiguousarray(row, dtype=np.float32)
    lib.sample_ref_top(x.ctypes.data, x.size, k, ids.ctypes.data, lps.ctypes.data)
    return ids[:k], lps[:k]


def numpy_top(row, k):
    """Reference of the reference: (logit desc, id asc) and log softmax in float64."""
    finite = np.flatnonzero(np.isfinite(row))
    order = finite[np.lexsort((finite, -row[finite].astype(np.float64)))][:k]
    r = row.astype(np.float64)
    m = r[np.isfinite(r)].max()
    lse = m + np.log(np.exp(r - m).sum())
    ids = np.full(k, -1, dtype=np.int64)
    lps = np.full(k, np.nan)
    ids[:len(order)] = order
    lps[:len(order)] = r[order] - lse
    return ids, lps


def test_rows(rng, V):
    rows = []
    rows.append(rng.standard_normal(V) * 3)
    rows.append(np.round(rng.standard_normal(V) * 2) / 2)  # many exact ties
    masked = np.full(V, -np.inf)
    few = rng.choice(V, size=3, replace=False)
    masked[few] = rng.standard_normal(3)
    rows.append(masked)  # fewer finite ids than k
    rows.append(rng.standard_normal(V) * 12)
    rows.append(np.zeros(V))  # all tied
    return np.stack(rows).astype(np.float32)


def check_twin(lib, log):
    rng = np.random.default_rng(20261203)
    fails = []
    for V in (1000, 1003, 49152):
        x = test_rows(rng, V)
        for i in range(x.shape[0]):
            for k in (1, 5, 20):
                tids, tlps = twin_top(lib, x[i], k)
                nids, nlps = numpy_top(x[i], k)
                if not np.array_equal(tids, nids):
                    fails.append("twin V=%d row %d k=%d: ids %s, numpy %s" %
                                 (V, i, k, tids[:5], nids[:5]))
                elif not np.allclose(tlps[nids >= 0], nlps[nids >= 0], atol=2e-6, rtol=0):
                    fails.append("twin V=%d row %d k=%d: logprobs differ" % (V, i, k))
        d = random_deltas(rng, x.shape[0], V, 400)
        y = twin_bias(lib, x, d)
        want = x.copy()
        for e in d[:-3]:
            want[e["row"], e["id"]] += e["delta"]
        if not np.array_equal(y, want):
            fails.append("twin bias V=%d differs from numpy" % V)
    log("  twin against numpy: %d failures" % len(fails))
    return fails


def gpu_top(lib, torch, x, rows, ks):
    d_x = torch.from_numpy(x).cuda()
    d_rows = torch.from_numpy(np.asarray(rows, dtype=np.int32)).cuda()
    d_k = torch.from_numpy(np.asarray(ks, dtype=np.int32)).cuda()
    ids = torch.full((len(rows), TOP_MAX), -7, dtype=torch.int32, device="cuda")
    lps = torch.full((len(rows), TOP_MAX), float("nan"), dtype=torch.float32, device="cuda")
    err = C.create_string_buffer(256)
    rc = lib.fg_top_launch(d_x.data_ptr(), x.shape[1], d_rows.data_ptr(), d_k.data_ptr(),
                           len(rows), ids.data_ptr(), lps.data_ptr(),
                           torch.cuda.current_stream().cuda_stream, err, 256)
    if rc != 0:
        raise RuntimeError(err.value.decode())
    torch.cuda.synchronize()
    return ids.cpu().numpy(), lps.cpu().numpy()


def check_gpu(lib, torch, log):
    rng = np.random.default_rng(20261204)
    fails = []
    cases = 0
    for V in (1000, 1003, 49152, 151936):
        x = test_rows(rng, V)
        x = np.concatenate([x, x[::-1]])  # 10 rows
        # bias: bit for bit
        d = random_deltas(rng, x.shape[0], V, 300)
        d_x = torch.from_numpy(x.copy()).cuda()
        d_d = torch.frombuffer(bytearray(d.tobytes()), dtype=torch.uint8).cuda()
        err = C.create_string_buffer(256)
        rc = lib.fg_bias_launch(d_x.data_ptr(), x.shape[0], V, d_d.data_ptr(), len(d),
                                torch.cuda.current_stream().cuda_stream, err, 256)
        if rc != 0:
            fails.append("bias V=%d: %s" % (V, err.value.decode()))
            continue
        got = d_x.cpu().numpy()
        want = twin_bias(lib, x, d)
        if not np.array_equal(got.view(np.int32), want.view(np.int32)):
            fails.append("bias V=%d: %d logits differ" % (V, int((got != want).sum())))
        # top-k: every other row asks, with k 1 / 5 / 20 / 0
        rows = [i for i in range(x.shape[0]) if i % 3 != 2]
        ks = [(1, 5, 20, 0)[j % 4] for j in range(len(rows))]
        gids, glps = gpu_top(lib, torch, x, rows, ks)
        for j, (r, k) in enumerate(zip(rows, ks)):
            cases += 1
            tids, tlps = twin_top(lib, x[r], k) if k else (np.zeros(0, np.int32), None)
            if k == 0:
                if not (gids[j] == -1).all():
                    fails.append("top V=%d row %d k=0: gave ids" % (V, r))
                continue
            if not np.array_equal(gids[j][:k], tids) or not (gids[j][k:] == -1).all():
                fails.append("top V=%d row %d k=%d: gpu %s twin %s" %
                             (V, r, k, gids[j][:5], tids[:5]))
                continue
            ok = tids >= 0
            if not np.allclose(glps[j][:k][ok], tlps[ok], atol=2e-6, rtol=0):
                fails.append("top V=%d row %d k=%d: logprobs differ by %g" %
                             (V, r, k, np.abs(glps[j][:k][ok] - tlps[ok]).max()))
    log("  %d top-k rows and 4 bias batches on the GPU: %d failures" % (cases, len(fails)))
    return fails


def bench(lib, torch, log):
    V = 128256
    rng = np.random.default_rng(9)
    err = C.create_string_buffer(256)
    for n in (1, 64, 256):
        d_x = torch.from_numpy(rng.standard_normal((n, V)).astype(np.float32)).cuda()
        d_rows = torch.arange(n, dtype=torch.int32, device="cuda")
        d_k = torch.full((n,), 20, dtype=torch.int32, device="cuda")
        ids = torch.empty((n, TOP_MAX), dtype=torch.int32, device="cuda")
        lps = torch.empty((n, TOP_MAX), dtype=torch.float32, device="cuda")
        d = random_deltas(rng, n, V, 300)
        d_d = torch.frombuffer(bytearray(d.tobytes()), dtype=torch.uint8).cuda()
        s = torch.cuda.current_stream().cuda_stream
        for name, fn in (("top-20", lambda: lib.fg_top_launch(
                d_x.data_ptr(), V, d_rows.data_ptr(), d_k.data_ptr(), n, ids.data_ptr(),
                lps.data_ptr(), s, err, 256)),
                ("bias 300", lambda: lib.fg_bias_launch(d_x.data_ptr(), n, V, d_d.data_ptr(),
                                                        len(d), s, err, 256))):
            fn()
            times = []
            for _ in range(7):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                for _ in range(20):
                    fn()
                torch.cuda.synchronize()
                times.append((time.perf_counter() - t0) / 20)
            us = sorted(times)[len(times) // 2] * 1e6
            log("  %-8s %3d rows x %d: %.1f us per launch (launch overhead included)" %
                (name, n, V, us))


def main():
    args = sys.argv[1:]
    lines = []

    def log(s):
        print(s, flush=True)
        lines.append(s)

    if "--twin-only" in args:
        lib = C.CDLL(LIB)
        setup(lib, gpu=False)
        fails = check_twin(lib, log)
        for m in fails[:40]:
            log("  FAIL: " + m)
        log("check_bias_top (twin): %s (%d failures)" % ("PASS" if not fails else "FAIL",
                                                        len(fails)))
        return 0 if not fails else 1
    why = gpu_skip.why_no_gpu()
    if why:
        return gpu_skip.skip("check_bias_top", why)
    import torch
    lib = C.CDLL(LIB)
    setup(lib, gpu=True)
    log("check_bias_top: %s, lib %s, %s" % (torch.cuda.get_device_name(), LIB,
                                            time.strftime("%Y-%m-%d %H:%M")))
    fails = check_twin(lib, log) + check_gpu(lib, torch, log)
    for m in fails[:40]:
        log("  FAIL: " + m)
    if "--no-bench" not in args:
        bench(lib, torch, log)
    log("check_bias_top: %s (%d failures)" % ("PASS" if not fails else "FAIL", len(fails)))
    return 0 if not fails else 1


if __name__ == "__main__":
    sys.exit(main())
