"""check_qgemm.py — GPU test and benchmark of the product of up to 64 activation rows with a GGUF
weight read in its packed blocks (kernels/qgemm.cu, fg_qgemm).

Correctness, for every type check_qgemv.py covers, on its random blocks (check_qgemv.random_blocks,
packed by fg_qpack). The kernel multiplies bf16 x by the weights bf16(dequantize(w)), the values
fg_qdequant_bf16 writes for the bf16 scratch it replaces (check_qgemv proves those bit for bit
against gguf_dequantize), exactly in fp32 (the tensor cores' products of two bf16), summed in
fp32. So the oracle is gguf_dequantize of the file's bytes rounded once to bf16, then fp64 products
on the same bf16 x, within check_gemv.judge's bounds (the bf16 GEMV's: the only error left is the
fp32 summation and y's rounding):
  - n = 1, 8, 9, 16, 17, 31, 33, 48, 63, 64 on the 8B-shape q|k|v, o, gate|up (SwiGLU) and down,
    the SmolLM2 q|k|v, gate|up and output head (fp32 y), and odd shapes (7 rows, a partial last
    group of 4 blocks, 1000 rows), each with the k split fg_qgemm picks, one part, and 3 parts
    (a second kernel sums the parts), bf16 y; at n = 64 also the other epilogues and fp32 y;
  - the weights bit for bit fg_qdequant_bf16's (64 one-hot x rows: y = single products, against
    the dequantized matrix's columns), staged and register-read shapes;
  - y's guard untouched, outputs past n untouched (poisoned); deterministic (twice, bit for bit,
    for one split count), CUDA-graph replay = eager with the first launch of the kernel inside the
    capture (its shared-memory attribute set there);
  - refusals: n 0 / 65, a type it does not read, in_dim not a multiple of the block, misaligned x
    or w, a work area too small for the parts asked for, more parts than groups.
Benchmark (--bench, or --bench-only): µs per call back to back in a CUDA graph
(check_gemv.time_graph, weights rotated over copies > 5x L2) of the 8B layer's four products at
n = 16, 32, 64: fg_qgemm, the path it replaces (fg_qdequant_bf16 into a bf16 scratch, then a bf16
GEMM: torch.matmul, cuBLAS), and the bf16 weight's GEMM (torch.matmul: what the F16 file runs);
GB/s of the packed weight's bytes and % of the copy ceiling; the 32 layers' sum per step.

Usage: python3 tests/gpu/check_qgemm.py --lib build/libfgattn.so [--bench | --bench-only]
Prints a PASS/FAIL summary line last; exit 1 on any failure; SKIPPED and exit 77 without a GPU.
"""
import argparse
import ctypes as C
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpu_skip  # noqa: E402

import check_qgemv as cq  # noqa: E402  (the types, random blocks, packing, the report)
from check_qgemv import ADD, EINVAL, EPI, STORE, SWIGLU  # noqa: E402

if gpu_skip.why_no_gpu() is None:  # (without torch or a GPU: main says SKIPPED)
    import torch  # noqa: E402
    import check_gemv as cg  # noqa: E402

MAXN = 64
NS = (1, 8, 9, 16, 17, 31, 33, 48, 63, 64)
# (name, out_dim, in_dim, epilogue, y_f32)
SHAPES = [
    ("8b.qkv", 6144, 4096, STORE, 0),
    ("8b.o", 4096, 4096, ADD, 0),
    ("8b.gate_up", 14336, 4096, SWIGLU, 0),
    ("8b.down", 4096, 14336, ADD, 0),
    ("smol.qkv", 960, 576, STORE, 0),
    ("smol.gate_up", 1536, 576, SWIGLU, 0),
    ("smol.lm_head", 49152, 576, STORE, 1),
    ("odd.7x96", 7, 96, SWIGLU, 0),
    ("odd.1000x1536", 1000, 1536, ADD, 0),
    ("odd.100x768", 100, 768, ADD, 0),
    ("odd.7x512", 7, 512, SWIGLU, 0),
]


class Lib(cq.Lib):
    def __init__(self, path):
        super().__init__(path)
        vp, i, sz = C.c_void_p, C.c_int, C.c_size_t
        self.lib.fg_qgemm.argtypes = [vp, i, vp, vp, i, i, i, i, i, i, vp, sz, vp]
        self.lib.fg_qgemm_pick_splits.argtypes = [i, i, i, i, i, sz]

    def qgemm(self, y, y_f32, x, w, wt, n, idim, od, epi, splits, work, work_bytes):
        return self.lib.fg_qgemm(y, y_f32, x, w, wt, n, idim, od, epi, splits, work, work_bytes,
                                 self.s())


def ref_of(qc, x, y0, n, od, epi, y_f32):
    """fp64 products of x with the bf16-rounded weights (cached per x, as QCase.products)."""
    if not hasattr(qc, "wb"):
        qc.wb, qc.refs_b = qc.wf.bfloat16().float(), {}
    key = (x.data_ptr(), od, epi)
    if key not in qc.refs_b:
        qc.refs_b[key] = cg.products(x, qc.wb, od, epi)
    dot, mag = qc.refs_b[key]
    r = dot[:n]
    if epi == ADD:
        r = r + (y0[:n].float() if y_f32 else y0[:n]).double()
    return r, mag[:n]


def run_y(g, qc, x, y0, n, od, epi, y_f32, splits, work):
    return cq.run_y(g, qc, x, y0, n, od, epi, y_f32, call=lambda y: g.qgemm(
        y.data_ptr(), y_f32, x.data_ptr(), qc.packed.data_ptr(), qc.wt, n, qc.cols, od, epi,
        splits, work.data_ptr(), work.numel() * 4))


def check_shapes(g, rep, dev):
    for wt, (tname, _, _) in cq.TYPES.items():
        for name, od, idim, epi, yf in SHAPES:
            if not cq.fits(wt, idim):
                continue
            rows = 2 * od if epi == SWIGLU else od
            qc = cq.QCase(g, wt, rows, idim, dev)
            x = torch.randn(MAXN, idim, device=dev).bfloat16()
            work = torch.empty(3 * MAXN * rows + 16, dtype=torch.float32, device=dev)
            alts = [(rows, STORE), (rows, ADD)] + ([(rows // 2, SWIGLU)] if rows % 2 == 0 else [])
            y0s = {o: torch.randn(MAXN, o, device=dev).bfloat16() for o, _ in alts}
            y0s.setdefault(od, torch.randn(MAXN, od, device=dev).bfloat16())
            ng = (idim // 32 + 3) // 4
            picked = set()
            for n in NS:
                calls = [(od, epi, yf)]
                if n == MAXN:
                    calls += [(o, e, f) for o, e in alts for f in (0, 1) if (o, e, f) != (od, epi, yf)]
                for o, e, f in calls:
                    auto = g.lib.fg_qgemm_pick_splits(wt, n, idim, o, e, work.numel() * 4)
                    picked.add(auto)
                    for splits in sorted({0, 1, min(3, ng)}):
                        y, why = run_y(g, qc, x, y0s[o], n, o, e, f, splits, work)
                        tag = (f"{tname} {name} {EPI[e]} {'f32' if f else 'bf16'} "
                               f"splits={splits or f'auto({auto})'} n={n}")
                        if why:
                            rep.add(False, tag, None, why)
                            continue
                        ref, mag = ref_of(qc, x, y0s[o], n, o, e, f)
                        ok, rel, why = cg.judge(y, ref, mag, f, e)
                        rep.add(ok, tag, rel, why)
            y1, _ = run_y(g, qc, x, y0s[od], MAXN, od, epi, yf, 0, work)
            y2, _ = run_y(g, qc, x, y0s[od], MAXN, od, epi, yf, 0, work)
            rep.add(y1 is not None and torch.equal(y1, y2), f"{tname} {name} deterministic")
            print(f"  {tname} {name}: splits picked {sorted(picked)} ({rep.passed} passed, "
                  f"{rep.failed} failed so far)", flush=True)
            del qc


def check_weights(g, rep, dev):
    """The weights the kernel multiplies are fg_qdequant_bf16's bits: x = 64 one-hot rows (random
    columns, the first and last among them), so y (fp32, STORE) holds single products 1 · w, which
    must equal the dequantized matrix's columns bit for bit; on a staged shape and on one read
    through registers (a partial last group)."""
    for wt, (tname, _, _) in cq.TYPES.items():
        for od, idim in ((4096, 4096), (96, 576)):
            if not cq.fits(wt, idim):
                continue
            qc = cq.QCase(g, wt, od, idim, dev)
            dq = torch.empty(od, idim, dtype=torch.bfloat16, device=dev)
            st = g.lib.fg_qdequant_bf16(dq.data_ptr(), qc.packed.data_ptr(), wt, od, idim, g.s())
            cols = torch.randint(0, idim, (MAXN,), device=dev)
            cols[0], cols[-1] = 0, idim - 1
            x = torch.zeros(MAXN, idim, device=dev)
            x[torch.arange(MAXN, device=dev), cols] = 1.0
            x = x.bfloat16()
            work = torch.empty(MAXN * od, dtype=torch.float32, device=dev)
            y, why = run_y(g, qc, x, None, MAXN, od, STORE, 1, 1, work)
            tag = f"{tname} {od}x{idim} weights = fg_qdequant_bf16's bits"
            if st != 0 or why:
                rep.add(False, tag, None, f"status {st} {why}")
                continue
            rep.add(torch.equal(y, dq.float()[:, cols].t()), tag, None,
                    f"{int((y != dq.float()[:, cols].t()).sum())} elements differ")
            del qc


def check_graph(g, rep, dev):
    """The first launches of a type's kernels inside a capture (at 64 rows the kernel's shared
    memory is past the 48 KB default: the attribute is set during the capture), replayed."""
    wt = cq.Q5_K
    od, idim = 4096, 4096
    qc = cq.QCase(g, wt, od, idim, dev)
    x = torch.randn(MAXN, idim, device=dev).bfloat16()
    y0 = torch.randn(MAXN, od, device=dev).bfloat16()
    work = torch.empty(8 * MAXN * od, dtype=torch.float32, device=dev)
    y = torch.empty(MAXN, od, dtype=torch.bfloat16, device=dev)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    gph = torch.cuda.CUDAGraph()
    tag = "Q5_K graph replay (first call in the capture) = eager"
    try:
        with torch.cuda.graph(gph, stream=side):
            st = g.lib.fg_qgemm(y.data_ptr(), 0, x.data_ptr(), qc.packed.data_ptr(), wt, MAXN,
                                idim, od, ADD, 0, work.data_ptr(), work.numel() * 4,
                                side.cuda_stream)
        y.copy_(y0)
        gph.replay()
        torch.cuda.synchronize()
    except RuntimeError as e:
        torch.cuda.synchronize()
        rep.add(False, tag, None, f"capture failed: {e}")
        return
    eager, why = run_y(g, qc, x, y0, MAXN, od, ADD, 0, 0, work)
    rep.add(st == 0 and not why and torch.equal(y, eager), tag, None, f"status {st} {why}")


def check_refusals(g, rep, dev):
    qc = cq.QCase(g, cq.Q8_0, 64, 256, dev)
    x = torch.randn(MAXN + 1, 256, device=dev).bfloat16()
    y = torch.empty(MAXN + 1, 64, dtype=torch.float32, device=dev)
    work = torch.empty(4096, dtype=torch.float32, device=dev)
    xp, wp, yp, kp = x.data_ptr(), qc.packed.data_ptr(), y.data_ptr(), work.data_ptr()
    wb = work.numel() * 4
    for tag, args in [("n=0", (yp, 1, xp, wp, cq.Q8_0, 0, 256, 64, STORE, 0, kp, wb)),
                      ("n=65", (yp, 1, xp, wp, cq.Q8_0, 65, 256, 64, STORE, 0, kp, wb)),
                      ("type Q8_K", (yp, 1, xp, wp, cq.Q8_K, 1, 256, 64, STORE, 0, kp, wb)),
                      ("in_dim 48", (yp, 1, xp, wp, cq.Q8_0, 1, 48, 64, STORE, 0, kp, wb)),
                      ("Q4_K in_dim 128", (yp, 1, xp, wp, cq.Q4_K, 1, 128, 64, STORE, 0, kp, wb)),
                      ("epilogue 3", (yp, 1, xp, wp, cq.Q8_0, 1, 256, 64, 3, 0, kp, wb)),
                      ("x misaligned", (yp, 1, xp + 2, wp, cq.Q8_0, 1, 256, 64, STORE, 0, kp, wb)),
                      ("w not 16-byte aligned",
                       (yp, 1, xp, wp + 8, cq.Q8_0, 1, 256, 64, STORE, 0, kp, wb)),
                      ("a work area too small for 2 parts",
                       (yp, 1, xp, wp, cq.Q8_0, 64, 256, 64, STORE, 2, kp, 64 * 64 * 4)),
                      ("3 parts of 2 groups",
                       (yp, 1, xp, wp, cq.Q8_0, 1, 256, 64, STORE, 3, kp, wb)),
                      ("negative splits", (yp, 1, xp, wp, cq.Q8_0, 1, 256, 64, STORE, -1, kp, wb))]:
        st = g.qgemm(*args)
        rep.add(st == EINVAL, f"refuses {tag}", None, f"status {st}")
    torch.cuda.synchronize()


BENCH = [("qkv", 6144, 4096, STORE), ("o", 4096, 4096, ADD), ("gate_up", 14336, 4096, SWIGLU),
         ("down", 4096, 14336, ADD)]


def run_bench(g, dev):
    ceil = cg.copy_ceiling()
    print(f"copy ceiling (device-to-device, 1 GiB, read + write): {ceil:.0f} GB/s")
    print(f"{'product':<8} {'type':<5} {'n':>3} {'qgemm us':>9} {'GB/s':>6} {'%copy':>6} "
          f"{'splits':>6} {'scratch us':>10} {'bf16 us':>8}")
    step = {}
    scratch = torch.empty(28672 * 4096, dtype=torch.bfloat16, device=dev)
    work = torch.empty(8 * 64 * 28672, dtype=torch.float32, device=dev)
    for name, od, idim, epi in BENCH:
        rows = 2 * od if epi == SWIGLU else od
        wbf = (torch.randn(rows, idim, device=dev) / math.sqrt(idim)).bfloat16()
        bcopies = [wbf] + [wbf.clone() for _ in range((256 << 20) // (wbf.numel() * 2))]
        for tname in ("bf16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K",
                      "Q3_K", "Q2_K"):
            wt = next((t for t, v in cq.TYPES.items() if v[0] == tname), None)
            if wt is not None:
                one = cq.pack(g, wt, cq.random_blocks(wt, rows, idim, dev), rows, idim)
                nbytes = one.numel()
                copies = [one] + [one.clone() for _ in range(max(1, (256 << 20) // nbytes + 1) - 1)]
            for n in (16, 32, 64):
                x = torch.randn(n, idim, device=dev).bfloat16()
                y = torch.randn(n, od, device=dev).bfloat16()
                t_bf = cg.time_graph(lambda i: torch.matmul(x, bcopies[i].t()), len(bcopies))
                if wt is None:
                    step[(tname, n)] = step.get((tname, n), 0.0) + t_bf
                    print(f"{name:<8} {tname:<5} {n:>3} {'':>9} {'':>6} {'':>6} {'':>6} {'':>10} "
                          f"{t_bf:8.2f}", flush=True)
                    continue
                sp = g.lib.fg_qgemm_pick_splits(wt, n, idim, od, epi, work.numel() * 4)
                us = cg.time_graph(lambda i: g.qgemm(y.data_ptr(), 0, x.data_ptr(), copies[i].data_ptr(), wt, n, idim, od, epi, 0, work.data_ptr(), work.numel() * 4), len(copies))  # noqa: E501
                sv = scratch[:rows * idim].view(rows, idim)

                def via_scratch(i):
                    g.lib.fg_qdequant_bf16(sv.data_ptr(), copies[i].data_ptr(), wt, rows, idim,
                                           g.s())
                    return torch.matmul(x, sv.t())
                t_s = cg.time_graph(via_scratch, len(copies))
                gbs = nbytes / (us * 1e-6) / 1e9
                step[(tname, n)] = step.get((tname, n), 0.0) + us
                step[(tname + " scratch", n)] = step.get((tname + " scratch", n), 0.0) + t_s
                print(f"{name:<8} {tname:<5} {n:>3} {us:9.2f} {gbs:6.0f} {100 * gbs / ceil:5.1f}% "
                      f"{sp:>6} {t_s:10.2f} {t_bf:8.2f}", flush=True)
            if wt is not None:
                del copies, one
        del bcopies, wbf
    print("32 layers' four products per decode step (kernel time only; bf16 = torch.matmul on the "
          "bf16 weight, 'scratch' = fg_qdequant_bf16 + torch.matmul):")
    for (tname, n), us in sorted(step.items()):
        print(f"  {tname:<13} n={n:<3} {32 * us / 1e3:7.3f} ms/step -> "
              f"{n * 1e6 / (32 * us):8.0f} tokens/s bound")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", action="store_true")
    ap.add_argument("--bench-only", action="store_true", help="the benchmark without the checks")
    ap.add_argument("--lib", default=os.environ.get("FG_ATTN_LIB", "build/libfgattn.so"))
    ap.add_argument("--one", metavar="TYPE:N",
                    help="only one call of each 8B product at N rows (e.g. Q4_0:64), for a profiler")
    a = ap.parse_args()
    why = gpu_skip.why_no_gpu()
    if why:
        return gpu_skip.skip("check_qgemm", why)
    seed = int(os.environ.get("FG_SEED", time.time_ns() % (1 << 31)))
    torch.manual_seed(seed)
    print(f"check_qgemm: seed {seed} on {torch.cuda.get_device_name()}", flush=True)
    g = Lib(a.lib)
    dev = torch.device("cuda")
    rep = cq.Report()
    t0 = time.time()
    if a.bench_only:
        run_bench(g, dev)
        return 0
    if a.one:
        tname, n = a.one.split(":")
        wt = next(t for t, v in cq.TYPES.items() if v[0] == tname)
        work = torch.empty(8 * int(n) * 28672, dtype=torch.float32, device=dev)
        for name, od, idim, epi in BENCH:
            rows = 2 * od if epi == SWIGLU else od
            w = cq.pack(g, wt, cq.random_blocks(wt, rows, idim, dev), rows, idim)
            x = torch.randn(int(n), idim, device=dev).bfloat16()
            y = torch.randn(int(n), od, device=dev).bfloat16()
            st = g.qgemm(y.data_ptr(), 0, x.data_ptr(), w.data_ptr(), wt, int(n), idim, od, epi, 0,
                         work.data_ptr(), work.numel() * 4)
            torch.cuda.synchronize()
            print(f"{name} {tname} n={n}: status {st}")
        return 0
    check_refusals(g, rep, dev)
    check_weights(g, rep, dev)
    check_graph(g, rep, dev)
    check_shapes(g, rep, dev)
    rep.print_worst(48, t0)
    if a.bench:
        run_bench(g, dev)
    return rep.summary("check_qgemm")


if __name__ == "__main__":
    sys.exit(main())
