"""check_gemv.py — GPU test and benchmark of the small-batch bf16 GEMV (kernels/gemv.cu).

Correctness: every case draws fresh random inputs (seeded from the clock unless FG_SEED is set):
x ~ N(0, 1), W ~ N(0, 1/in_dim) (dots ~ N(0, 1), so SwiGLU's silu sees its curved range), the ADD
residual ~ N(0, 1). Outputs are poisoned with NaN (ADD: the residual itself) and a guard after the
last row must stay untouched. Reference: fp64 torch on the same bf16 inputs upcast. Checked:
  - fg_gemv (the selector's variant) for n = 1..8 on every benchmark shape and on odd shapes
    (out_dim 1, 7, 1000 × in_dim 8, 72, 576, 1536), each epilogue, bf16 and fp32 y;
  - every variant of the table on the odd shapes and on one Llama-3-8B shape;
  - determinism: the selector's result twice, bit for bit;
  - refusals: unsupported n / in_dim, misaligned pointers, odd-RT variants for SwiGLU.
Bounds and why:
  - bf16 y: ‖y − ref‖/‖ref‖ < 2^-8 + 1e-4 + 2^-20 ‖Σ|x||w|‖/‖ref‖. y is rounded once to bf16
    (8-bit significand: each element's relative rounding error ≤ 2^-8, so the norm-wise error is
    too); products of bf16 inputs are exact in fp32 and the fp32 sums add ≲ 1e-5, bounded by the
    last term where few outputs cancel (out_dim 1). Elementwise: |y − ref| ≤ 2^-8 |ref| +
    2^-16 Σ|x||w| (a loose allowance for fp32 summation, for SwiGLU propagated through silu·up;
    a wrong index or a missed chunk gives errors of order |ref|, far above it).
  - fp32 y: ‖y − ref‖/‖ref‖ < 1e-4 + the same last term (fp32 accumulation of ≤ 14336 exact
    products: ≈ 1e-6 typical) and elementwise |y − ref| ≤ 2^-16 Σ|x||w| (+ 2^-20 |ref| for ADD's
    final fp32 sum).
Benchmark (--bench): median of per-call device-event times (each call queued behind a device
sleep, so host launch time stays out), weights rotated over enough copies that W comes from HBM
(≥ 256 MB of copies, > 5× the 50 MB L2); ours against torch.nn.functional.linear (cuBLAS, bf16 out)
and the copy ceiling (1 GiB device-to-device copy, GB/s = 2·bytes/time). GB/s = weight bytes / time.
--variants adds every variant's time per shape at n = 1 and 8 (how fg_gemv_pick was chosen).

Usage: FG_GEMV_LIB=build/libfgattn.so python3 tests/gpu/check_gemv.py [--bench] [--variants]
Prints a PASS/FAIL summary line last; exit 1 on any failure. Skips (exit 0) without a GPU.
"""
import argparse
import ctypes as C
import math
import os
import statistics
import sys
import time

import torch

STORE, ADD, SWIGLU = 0, 1, 2
EPI_NAME = {STORE: "store", ADD: "add", SWIGLU: "swiglu"}
EINVAL = 1  # cudaErrorInvalidValue
BF16_TOL = 2.0 ** -8 + 1e-4
F32_TOL = 1e-4

# (name, out_dim, in_dim, epilogue, y_f32): out_dim is y's width (W has 2·out_dim rows for SwiGLU)
SHAPES = [
    ("8b.qkv", 6144, 4096, STORE, 0),
    ("8b.o", 4096, 4096, ADD, 0),
    ("8b.gate_up", 14336, 4096, SWIGLU, 0),
    ("8b.down", 4096, 14336, ADD, 0),
    ("8b.lm_head", 128256, 4096, STORE, 1),
    ("smol.qkv", 960, 576, STORE, 0),
    ("smol.o", 576, 576, ADD, 0),
    ("smol.gate_up", 1536, 576, SWIGLU, 0),
    ("smol.down", 576, 1536, ADD, 0),
    ("smol.lm_head", 49152, 576, STORE, 1),
]
ODD_OUT = [1, 7, 1000]
ODD_IN = [8, 72, 576, 1536]


class Gemv:
    """ctypes view of kernels/gemv.h."""

    def __init__(self, path):
        self.lib = lib = C.CDLL(os.path.abspath(path))
        lib.fg_gemv_variant_name.restype = C.c_char_p
        args = [C.c_void_p, C.c_int, C.c_void_p, C.c_void_p, C.c_int, C.c_int, C.c_int, C.c_int,
                C.c_void_p]
        lib.fg_gemv.argtypes = args
        lib.fg_gemv_variant.argtypes = [C.c_int] + args
        self.n_variants = lib.fg_gemv_n_variants()
        self.names = [lib.fg_gemv_variant_name(v).decode() for v in range(self.n_variants)]

    def pick(self, n, in_dim, out_dim, epi):
        return self.lib.fg_gemv_pick(n, in_dim, out_dim, epi)

    def supported(self, n, in_dim, out_dim):
        return self.lib.fg_gemv_supported(n, in_dim, out_dim)

    def call(self, v, y, y_f32, x, w, n, in_dim, out_dim, epi, stream=None):
        """v < 0: fg_gemv (the selector). Returns the library's status."""
        s = torch.cuda.current_stream().cuda_stream if stream is None else stream
        if v < 0:
            return self.lib.fg_gemv(y, y_f32, x, w, n, in_dim, out_dim, epi, s)
        return self.lib.fg_gemv_variant(v, y, y_f32, x, w, n, in_dim, out_dim, epi, s)

    def can_serve(self, v, epi):
        return epi != SWIGLU or self.names[v].startswith(("rt2", "rt4", "rt6", "rt8"))


class Case:
    """Fresh inputs for one (out_dim, in_dim, epilogue) with 8 activation rows, and the fp64
    reference per row (row b of the product does not depend on n)."""

    def __init__(self, out_dim, in_dim, epi, dev):
        rows = 2 * out_dim if epi == SWIGLU else out_dim
        self.out_dim, self.in_dim, self.epi = out_dim, in_dim, epi
        self.x = torch.randn(8, in_dim, device=dev).bfloat16()
        self.w = (torch.randn(rows, in_dim, device=dev) / math.sqrt(in_dim)).bfloat16()
        self.y0 = torch.randn(8, out_dim, device=dev).bfloat16()  # the ADD residual
        xd = self.x.double()
        dot, mag = [], []
        for r0 in range(0, rows, 16384):  # fp64 copies of W in pieces (lm_head: 4 GB whole)
            wd = self.w[r0:r0 + 16384].double()
            dot.append(xd @ wd.T)
            mag.append(xd.abs() @ wd.abs().T)
        dot, mag = torch.cat(dot, 1), torch.cat(mag, 1)
        if epi == SWIGLU:
            g, u = dot[:, :out_dim], dot[:, out_dim:]
            self.ref_dot = g * torch.sigmoid(g) * u
            # |d(silu(g) u)| ≤ |silu'(g)| |u| δg + |silu(g)| δu, silu' ≤ 1.1
            self.mag = 1.1 * u.abs() * mag[:, :out_dim] + (g * torch.sigmoid(g)).abs() * mag[:, out_dim:]
        else:
            self.ref_dot, self.mag = dot, mag

    def ref(self, n, y_f32):
        r = self.ref_dot[:n]
        if self.epi == ADD:
            r = r + (self.y0[:n].float() if y_f32 else self.y0[:n]).double()
        return r


def check_one(g, case, v, n, y_f32):
    """Run variant v (-1: selector) on the first n rows; returns (ok, rel, y, why)."""
    od, idim = case.out_dim, case.in_dim
    dt = torch.float32 if y_f32 else torch.bfloat16
    guard = 64
    buf = torch.full((n * od + guard,), float("nan"), dtype=dt, device=case.x.device)
    buf[n * od:] = 12345.0
    y = buf[:n * od].view(n, od)
    if case.epi == ADD:
        y.copy_(case.y0[:n].to(dt))
    st = g.call(v, y.data_ptr(), y_f32, case.x.data_ptr(), case.w.data_ptr(), n, idim, od, case.epi)
    torch.cuda.synchronize()
    if st != 0:
        return False, float("nan"), None, f"status {st}"
    if not bool((buf[n * od:] == 12345.0).all()):
        return False, float("nan"), y, "guard overwritten"
    ref = case.ref(n, y_f32)
    yd = y.double()
    if torch.isnan(yd).any() or torch.isinf(yd).any():
        return False, float("nan"), y, "nan/inf (unwritten?)"
    err = (yd - ref).abs()
    rel = float((yd - ref).norm() / ref.norm().clamp_min(1e-300))
    # plus the fp32 summation allowance, which matters only when the outputs are few and cancel
    tol = (F32_TOL if y_f32 else BF16_TOL) + float(2.0 ** -20 * case.mag[:n].norm() / ref.norm())
    ok = rel < tol
    why = ""
    if True:
        mag = case.mag[:n]
        if y_f32:
            bound = 2.0 ** -16 * mag + (2.0 ** -20 * ref.abs() if case.epi == ADD else 0.0)
        else:
            bound = 2.0 ** -8 * ref.abs() + 2.0 ** -16 * mag
        bad = int((err > bound).sum())
        if bad:
            ok = False
            why = f"{bad} elements over the elementwise bound"
    return ok, rel, y, why


def run_checks(g, dev, log):
    fails = 0
    n_cases = 0

    def report(tag, ok, rel, why):
        nonlocal fails, n_cases
        n_cases += 1
        if not ok:
            fails += 1
        if not ok or os.environ.get("FG_VERBOSE"):
            log(f"  {'ok  ' if ok else 'FAIL'} {tag} rel {rel:.3e} {why}")

    # Refusals.
    for n, i, o in [(0, 64, 8), (9, 64, 8), (1, 12, 8), (1, 0, 8), (1, 64, 0)]:
        if g.supported(n, i, o):
            log(f"  FAIL supported({n}, {i}, {o}) should be 0")
            fails += 1
    xb = torch.zeros(1, 80, dtype=torch.bfloat16, device=dev)
    wb = torch.zeros(8, 72, dtype=torch.bfloat16, device=dev)
    yb = torch.zeros(1, 8, dtype=torch.bfloat16, device=dev)
    for args, what in [((yb.data_ptr(), 0, xb.data_ptr() + 2, wb.data_ptr(), 1, 64, 8, STORE), "misaligned x"),
                       ((yb.data_ptr(), 0, xb.data_ptr(), wb.data_ptr(), 9, 64, 8, STORE), "n = 9"),
                       ((yb.data_ptr(), 0, xb.data_ptr(), wb.data_ptr(), 1, 64, 8, 3), "epilogue 3")]:
        if g.call(-1, *args) != EINVAL:
            log(f"  FAIL fg_gemv should refuse {what}")
            fails += 1
    for v in range(g.n_variants):
        st = g.call(v, yb.data_ptr(), 0, xb.data_ptr(), wb.data_ptr(), 1, 64, 4, SWIGLU)
        if (st == 0) != g.can_serve(v, SWIGLU):
            log(f"  FAIL variant {g.names[v]} SwiGLU status {st}")
            fails += 1
    torch.cuda.synchronize()

    # Graph capture: a captured fg_gemv replays to the eager result, bit for bit.
    case = Case(6144, 4096, STORE, dev)
    ok, rel, y_eager, why = check_one(g, case, -1, 3, 0)
    if ok and dev == "cuda":
        y = torch.full((3, 6144), float("nan"), dtype=torch.bfloat16, device=dev)
        gph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(gph):
            st = g.call(-1, y.data_ptr(), 0, case.x.data_ptr(), case.w.data_ptr(), 3, 4096, 6144, STORE)
        gph.replay()
        torch.cuda.synchronize()
        ok, why = st == 0 and torch.equal(y, y_eager), f"status {st}, graph replay differs from eager"
    report("graph capture replay = eager", ok, rel, "" if ok else why)
    del case

    # Selector path on every benchmark shape, n = 1..8, its epilogue, plus the other y types.
    worst = {}
    for name, od, idim, epi, f32 in SHAPES:
        for e, yf in sorted({(epi, f32), (epi, 1 - f32)}):
            case = Case(od, idim, e, dev)
            for n in range(1, 9):
                ok, rel, y, why = check_one(g, case, -1, n, yf)
                tag = f"{name} {EPI_NAME[e]} {'f32' if yf else 'bf16'} n={n} {g.names[g.pick(n, idim, od, e)]}"
                report(tag, ok, rel, why)
                key = "f32" if yf else "bf16"
                worst[key] = max(worst.get(key, 0.0), rel if rel == rel else 1.0)
                if ok and n in (1, 8):  # determinism: the same call again, bit for bit
                    y1 = y.clone()
                    ok2, _, y2, _ = check_one(g, case, -1, n, yf)
                    same = ok2 and torch.equal(y1, y2)
                    report(tag + " repeat bitwise", same, rel, "" if same else "differs between runs")
            del case
    log(f"selector path: worst rel bf16 {worst.get('bf16', 0):.3e} (bound {BF16_TOL:.2e}), "
        f"fp32 {worst.get('f32', 0):.3e} (bound {F32_TOL:.1e})")

    # Every variant on the odd shapes and on one 8B shape.
    vworst = [0.0] * g.n_variants
    odd = [(o, i) for o in ODD_OUT for i in ODD_IN] + [(4096, 4096)]
    for od, idim in odd:
        for epi in (STORE, ADD, SWIGLU):
            case = Case(od, idim, epi, dev)
            for v in range(g.n_variants):
                if not g.can_serve(v, epi):
                    continue
                for n in ((1, 3, 8) if od != 4096 else (1, 8)):
                    for yf in (0, 1):
                        ok, rel, _, why = check_one(g, case, v, n, yf)
                        report(f"{od}x{idim} {EPI_NAME[epi]} {'f32' if yf else 'bf16'} n={n} {g.names[v]}",
                               ok, rel, why)
                        if not yf:
                            vworst[v] = max(vworst[v], rel if rel == rel else 1.0)
            del case
    log("every variant, odd shapes: worst bf16 rel " +
        ", ".join(f"{g.names[v]} {vworst[v]:.2e}" for v in range(g.n_variants)))
    return fails, n_cases


def time_calls(fn, n_copies, reps):
    """Median device time (µs) of fn(i) over reps calls, i rotating over the copies."""
    for i in range(min(reps, 10)):
        fn(i % n_copies)
    torch.cuda.synchronize()
    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
    for i in range(reps):
        torch.cuda._sleep(100000)  # keeps the device busy while the host queues the next call
        ev[i][0].record()
        fn(i % n_copies)
        ev[i][1].record()
    torch.cuda.synchronize()
    return 1e3 * statistics.median(a.elapsed_time(b) for a, b in ev)


def time_graph(fn, n_copies, calls=None):
    """µs per call of fn(i) replayed back to back from one CUDA graph (as the engine's decode
    steps run), i rotating over the copies; median of 10 replays. nan if capture fails."""
    calls = calls or min(max(16, n_copies), 256)
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for i in range(3):
                fn(i % n_copies)
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        gph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(gph):
            for i in range(calls):
                fn(i % n_copies)
        gph.replay()
        torch.cuda.synchronize()
        ts = []
        for _ in range(10):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda._sleep(100000)
            a.record()
            gph.replay()
            b.record()
            torch.cuda.synchronize()
            ts.append(a.elapsed_time(b))
        del gph
        return 1e3 * statistics.median(ts) / calls
    except Exception as e:  # a failed capture must not end the run
        print(f"  graph capture failed: {e}")
        torch.cuda.synchronize()
        return float("nan")


def copy_ceiling():
    nb = 1 << 30
    src = torch.empty(nb, dtype=torch.uint8, device="cuda")
    src.random_(0, 255)
    dst = torch.empty_like(src)
    us = time_calls(lambda i: dst.copy_(src), 1, 30)
    del src, dst
    return 2 * nb / (us * 1e-6) / 1e9


def run_bench(g, log, variants, dev="cuda"):
    ceil = copy_ceiling() if dev == "cuda" else 3000.0
    log(f"copy ceiling: {ceil:.0f} GB/s (1 GiB device-to-device copy, read + write)")
    rows_out = []
    vrows = []
    for name, od, idim, epi, f32 in SHAPES:
        rows = 2 * od if epi == SWIGLU else od
        wbytes = rows * idim * 2
        n_copies = max(1, math.ceil((256 << 20) / wbytes))
        ws = [torch.randn(rows, idim, device=dev).bfloat16() for _ in range(n_copies)]
        x8 = torch.randn(8, idim, device=dev).bfloat16()
        y = torch.randn(8, od, device=dev).to(torch.float32 if f32 else torch.bfloat16)
        reps = 50 if wbytes > (256 << 20) else 200
        for n in (1, 2, 4, 8):
            x = x8[:n]

            def ours(i, v=-1):
                st = g.call(v, y.data_ptr(), f32, x.data_ptr(), ws[i].data_ptr(), n, idim, od, epi)
                if st:
                    raise RuntimeError(f"fg_gemv status {st}")

            def peer(i):
                torch.nn.functional.linear(x, ws[i])

            t_ours = time_calls(ours, n_copies, reps)
            t_peer = time_calls(peer, n_copies, reps)
            tg_ours = time_graph(ours, n_copies)
            tg_peer = time_graph(peer, n_copies)
            if epi == ADD:  # keep the residual finite over the repeated adds
                y.normal_()
            rows_out.append(dict(name=name, rows=rows, idim=idim, epi=EPI_NAME[epi], n=n, wbytes=wbytes,
                                 ours=t_ours, peer=t_peer, g_ours=tg_ours, g_peer=tg_peer,
                                 variant=g.names[g.pick(n, idim, od, epi)]))
            if variants and n in (1, 8):
                ts = []
                for v in range(g.n_variants):
                    if g.can_serve(v, epi):
                        ts.append((g.names[v], time_calls(lambda i: ours(i, v), n_copies, reps),
                                   time_graph(lambda i: ours(i, v), n_copies)))
                        if epi == ADD:
                            y.normal_()
                vrows.append((name, n, ts))
        del ws
        if dev == "cuda":
            torch.cuda.empty_cache()
    if vrows:
        log("\nvariants: µs per call, event-timed median / back to back in a CUDA graph (* = fastest in graph):")
        for name, n, ts in vrows:
            best = min(tg for _, _, tg in ts)
            log(f"  {name:13s} n={n}")
            for i in range(0, len(ts), 4):
                log("     " + "  ".join(f"{v:20s} {t:6.1f} /{tg:6.1f}{'*' if tg == best else ' '}"
                                         for v, t, tg in ts[i:i + 4]))
    # Launch floor: the smallest call (8 outputs of 8 inputs), event-timed and in a graph.
    xs = torch.randn(1, 8, device=dev).bfloat16()
    wsm = torch.randn(8, 8, device=dev).bfloat16()
    ysm = torch.empty(1, 8, device=dev).bfloat16()
    tiny = lambda i: g.call(-1, ysm.data_ptr(), 0, xs.data_ptr(), wsm.data_ptr(), 1, 8, 8, STORE)  # noqa: E731
    floor_ev, floor_g = time_calls(tiny, 1, 200), time_graph(tiny, 1, 64)
    floor_pe = time_calls(lambda i: torch.nn.functional.linear(xs, wsm), 1, 200)
    log(f"\nlaunch floor (fg_gemv 1x8x8): {floor_ev:.1f} µs event-timed, {floor_g:.1f} µs per call in a "
        f"graph; torch linear 1x8x8: {floor_pe:.1f} µs event-timed")
    log(f"\nbenchmark: µs per call (ev = event-timed median of single calls; graph = back to back in a CUDA "
        f"graph, as decode runs), GB/s = weight bytes / time, % of the {ceil:.0f} GB/s copy ceiling; "
        "cuBLAS = torch.nn.functional.linear bf16 (GEMM only: no fused add/SwiGLU, bf16 out)")
    log(f"{'shape':13s} {'W rows x in':>13s} {'epi':6s} {'n':>2s} | {'ours ev':>7s} {'graph':>6s} {'GB/s':>5s} "
        f"{'%copy':>6s} | {'cuBLAS ev':>9s} {'graph':>6s} {'GB/s':>5s} {'%copy':>6s} | {'speedup':>7s}  variant")
    for r in rows_out:
        gb, gbp = r["wbytes"] / r["g_ours"] / 1e3, r["wbytes"] / r["g_peer"] / 1e3
        log(f"{r['name']:13s} {r['rows']:6d}x{r['idim']:<6d} {r['epi']:6s} {r['n']:2d} | {r['ours']:7.1f} "
            f"{r['g_ours']:6.1f} {gb:5.0f} {100 * gb / ceil:5.1f}% | {r['peer']:9.1f} {r['g_peer']:6.1f} "
            f"{gbp:5.0f} {100 * gbp / ceil:5.1f}% | {r['g_peer'] / r['g_ours']:6.2f}x  {r['variant']}")
    return rows_out, ceil


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", action="store_true")
    ap.add_argument("--variants", action="store_true")
    ap.add_argument("--lib", default=os.environ.get("FG_GEMV_LIB", os.environ.get("FG_ATTN_LIB", "build/libfgattn.so")))
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("check_gemv: no CUDA device, skipped")
        return 0
    seed = int(os.environ.get("FG_SEED", time.time_ns() % (1 << 31)))
    torch.manual_seed(seed)
    g = Gemv(a.lib)
    log = print
    log(f"check_gemv: {torch.cuda.get_device_name()} seed {seed} lib {a.lib}; "
        f"variants: {', '.join(g.names)}")
    t0 = time.time()
    fails, n_cases = run_checks(g, "cuda", log)
    log(f"correctness: {n_cases - fails}/{n_cases} cases pass ({time.time() - t0:.0f} s)")
    goal_ok = True
    if a.bench:
        rows, ceil = run_bench(g, log, a.variants)
        big = [r for r in rows if r["name"].startswith("8b.") and r["n"] == 1 and r["wbytes"] >= (32 << 20)]
        frac = {m: min(r["wbytes"] / r[m] / 1e3 / ceil for r in big) for m in ("g_ours", "ours")}
        goal_ok = frac["g_ours"] >= 0.90
        log(f"goal n=1, 8B shapes >= 32 MB at >= 90% of copy: worst {100 * frac['g_ours']:.1f}% in a graph "
            f"({100 * frac['ours']:.1f}% event-timed single calls): {'met' if goal_ok else 'NOT met'}")
    log(f"{'PASS' if fails == 0 else 'FAIL'}: {n_cases - fails}/{n_cases} correctness cases"
        + ("" if not a.bench else f"; bandwidth goal {'met' if goal_ok else 'not met'}"))
    return 0 if fails == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
