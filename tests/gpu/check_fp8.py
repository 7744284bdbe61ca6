"""check_fp8.py — GPU test and benchmark of the FP8 (e4m3) kernels (kernels/fp8.cu, issue 13).

Fresh random inputs (seeded from the clock unless FG_SEED is set); outputs poisoned with NaN and a
guard after the last row that must stay untouched. Checked:
  - fg_fp8_quant_rows (weights per output channel, activations per token): q and scale bit for bit
    against torch: s = amax/448 (1 for an all-zero row), q = (x / s).to(float8_e4m3fn) with both
    divisions correctly rounded fp32 (done in fp64 and rounded, torch_quant says why), rounding to
    nearest even; rows of very different size (1e-30 .. 1e4, one all zero), shapes 8B (6144×4096,
    14336×4096 ...), SmolLM2 and odd (cols 8, 24, 1000 rows); the register-resident kernel and
    the loop kernel (FLASHGEN_FP8_QUANT_LOOP=1) bit for bit the same; with gamma (RMSNorm in
    front; fp32, none of it a bf16 value: check_gemv's norm_gamma): h (h_out) within 1.5 bf16 ulp
    of fp64 RMSNorm and few elements off its correctly rounded value (check_gemv's check_h),
    q / scale bit for bit the quantization of that h;
  - fg_fp8_gemm (cuBLASLt e4m3 × e4m3, fp32 accumulation) in OUTER (cuBLASLt's outer-vector
    scales) and SPLIT (our scaling kernel) mode, AUTO's choice reported: against fp64 products of
    the dequantized operands (sx·xq)(sw·wq)ᵀ, bf16 and fp32 y, store and accumulate, 8B shapes
    at n = 1, 77, 512 tokens and odd ones. Bound (elementwise): 2^-8 |ref| (bf16 output; 2^-20
    for fp32) + 2^-12 Σ|x||w|. The second term is looser than the GEMV's 2^-16: Hopper's FP8
    tensor-core instructions add their products into an accumulator of reduced precision (about
    14 significant bits, per the DeepSeek-V3 report) before cuBLASLt folds them into fp32, so
    each partial sum carries up to ~2^-14 of its magnitude; a wrong scale, index or missed k
    block gives errors of order |ref|, far above it. OUTER mode accumulating into a bf16 y adds
    2^-8 |x·wᵀ|: cuBLASLt rounds the scaled product to bf16 before it adds C (what an unfused
    GEMM + residual add does; run 1 found it). The worst observed err / Σ|x||w| is printed.
    Also the end-to-end W8A8 error against the bf16 product x·Wᵀ (quantization error: e4m3 keeps
    4 significant bits, so ≈ 2^-4/sqrt(3) rms per operand; must stay < 8%, printed beside
    torch._scaled_mm's on the same operands);
  - fg_fp8_gemv / fg_fp8_gemv_norm (bf16 x, e4m3 weights): every variant, n = 1..16, each
    epilogue, bf16 / fp32 y, against fp64 products of x with the dequantized weight (the weight
    as fp64: s · q is exact there), with check_gemv.judge's bounds unchanged (the products of
    bf16 x and e4m3 values are exact in fp32, the row scale is applied once: the bf16 GEMV's error
    model). Weights both from fg_fp8_quant_rows of Gaussian bf16 and from random bytes (every
    finite e4m3 code, subnormals and ±448 included); determinism, graph replay = eager, refusals.
Benchmark (--bench), NVIDIA's own peers in the same run:
  - prefill GEMMs of the 8B shapes at T = 512..8192 tokens: fg_fp8_gemm TFLOP/s (and with the
    per-token activation quantization included) against torch's bf16 matmul (cuBLAS: what our
    bf16 GEMM calls) and torch._scaled_mm rowwise (the FP8 peer);
  - decode GEMVs of the 8B layer at n = 1, 8, 16: µs per call back to back in a CUDA graph
    (check_gemv.time_graph, weights rotated over ≥ 256 MB), GB/s of weight bytes and % of the
    copy ceiling, fp8 variants against the bf16 fg_gemv / fg_gemv_norm (n ≤ 8).

Usage: python3 tests/gpu/check_fp8.py --lib build/libfgattn.so [--bench]
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

if gpu_skip.why_no_gpu() is None:
    import torch  # noqa: E402
    import check_gemv as cg  # noqa: E402  (bounds, references, timers)
    import check_qgemv as cq  # noqa: E402  (Report, poisoned)

STORE, ADD, SWIGLU = 0, 1, 2
EPI = {STORE: "store", ADD: "add", SWIGLU: "swiglu"}
AUTO, OUTER, SPLIT, FAST = 0, 1, 2, 4
MODE = {AUTO: "auto", OUTER: "outer", SPLIT: "split", OUTER | FAST: "outer fast-accum"}
EINVAL = 1
MAXN = 16
E4M3 = None  # torch.float8_e4m3fn, set in main (torch may be absent)
GEMM_MAG_TOL = 2.0 ** -12
# cuBLASLt's fast accumulation never promotes the tensor cores' reduced-precision partial sums
# (~14 significant bits) to fp32, so over K = 4096..14336 the error grows with the number of
# additions into one accumulator; measured, printed, and bounded loosely (a wrong scale or index
# is still of order |ref| ≫ 2^-7 Σ|x||w| / |ref| for these random operands).
GEMM_FAST_MAG_TOL = 2.0 ** -7


class Lib:
    def __init__(self, path):
        self.lib = lib = C.CDLL(os.path.abspath(path))
        vp, i, f, sz = C.c_void_p, C.c_int, C.c_float, C.c_size_t
        lib.fg_fp8_quant_rows.argtypes = [vp, vp, vp, vp, f, vp, i, i, vp]
        lib.fg_fp8_lt_create.restype = vp
        lib.fg_fp8_lt_free.argtypes = [vp]
        lib.fg_fp8_lt_error.argtypes = [vp]
        lib.fg_fp8_lt_error.restype = C.c_char_p
        lib.fg_fp8_gemm.argtypes = [vp, i, vp, i, vp, vp, vp, vp, i, i, i, i, vp, sz,
                                    C.POINTER(C.c_int), vp]
        lib.fg_fp8_gemv_variant.argtypes = [i, vp, i, vp, vp, f, vp, vp, vp, i, i, i, i, vp]
        lib.fg_fp8_gemv.argtypes = [vp, i, vp, vp, vp, i, i, i, i, vp]
        lib.fg_fp8_gemv_norm.argtypes = [vp, i, vp, vp, f, vp, vp, vp, i, i, i, i, vp]
        lib.fg_fp8_gemv_variant_name.restype = C.c_char_p
        lib.fg_gemv.argtypes = [vp, i, vp, vp, i, i, i, i, vp]
        lib.fg_gemv_norm.argtypes = [vp, i, vp, vp, f, vp, vp, i, i, i, i, vp]
        self.lt = lib.fg_fp8_lt_create()
        if not self.lt:
            raise RuntimeError("fg_fp8_lt_create failed")
        self.n_var = lib.fg_fp8_gemv_n_variants()
        self.names = [lib.fg_fp8_gemv_variant_name(v).decode() for v in range(self.n_var)]

    @staticmethod
    def s():
        return torch.cuda.current_stream().cuda_stream

    def quant(self, x, gamma=None, eps=0.0, h=None):
        """(q uint8, scale fp32, status) of fg_fp8_quant_rows on bf16 x (rows, cols)."""
        rows, cols = x.shape
        q = torch.full((rows, cols), 0x7f, dtype=torch.uint8, device=x.device)  # 0x7f: NaN
        sc = torch.full((rows,), float("nan"), device=x.device)
        st = self.lib.fg_fp8_quant_rows(q.data_ptr(), sc.data_ptr(), x.data_ptr(),
                                        None if gamma is None else gamma.data_ptr(), eps,
                                        None if h is None else h.data_ptr(), rows, cols, self.s())
        return q, sc, st

    def gemm(self, mode, y, y_f32, xq, sx, wq, sw, n, idim, od, acc, scratch=None):
        used = C.c_int(0)
        st = self.lib.fg_fp8_gemm(self.lt, mode, y.data_ptr(), y_f32, xq.data_ptr(), sx.data_ptr(),
                                  wq.data_ptr(), sw.data_ptr(), n, idim, od, acc,
                                  None if scratch is None else scratch.data_ptr(),
                                  0 if scratch is None else scratch.numel() * 4, C.byref(used),
                                  self.s())
        return st, used.value

    def error(self):
        return self.lib.fg_fp8_lt_error(self.lt).decode()

    def gemv(self, v, y, y_f32, x, q, sw, n, idim, od, epi, gamma=None, eps=0.0, h=None):
        return self.lib.fg_fp8_gemv_variant(v, y.data_ptr(), y_f32, x.data_ptr(),
                                            None if gamma is None else gamma.data_ptr(), eps,
                                            None if h is None else h.data_ptr(), q.data_ptr(),
                                            sw.data_ptr(), n, idim, od, epi, self.s())


def torch_quant(h):
    """The format's definition in torch: (q uint8, scale) of bf16 rows h. The two fp32 divisions
    are done in fp64 and rounded to fp32, which is the correctly rounded fp32 quotient (53 ≥
    2·24 + 2 bits: double rounding is innocuous); torch's own fp32 division by a Python scalar
    multiplies by the reciprocal instead (run 1 saw scales one ulp off that way)."""
    amax = h.float().abs().amax(1)
    s = torch.where(amax > 0, (amax.double() / 448.0).float(), torch.ones_like(amax))
    q = (h.double() / s.double()[:, None]).float().to(E4M3)
    return q.view(torch.uint8), s


def dequant(q, s):
    """fp64 s · q (exact) of uint8 e4m3 rows q and fp32 scales s."""
    return q.view(E4M3).double() * s.double()[:, None]


def scaled_rows(rows, cols, dev, with_zero=True):
    """bf16 rows of very different size (and one all zero), Gaussian within a row."""
    mags = torch.tensor([1.0, 1e4, 1e-3, 3.0, 1e-30, 0.25, 50.0, 1e-8], device=dev)
    x = torch.randn(rows, cols, device=dev) * mags[torch.arange(rows, device=dev) % len(mags), None]
    if with_zero and rows > 2:
        x[2] = 0.0
    return x.bfloat16()


# ---- quantization ------------------------------------------------------------------------------

QUANT_SHAPES = [(6144, 4096), (14336, 4096), (4096, 14336), (960, 576), (1000, 24), (3, 8),
                (17, 1536), (512, 4096)]


def check_quant(g, rep, dev):
    for rows, cols in QUANT_SHAPES:
        x = scaled_rows(rows, cols, dev)
        q, sc, st = g.quant(x)
        torch.cuda.synchronize()
        tq, ts = torch_quant(x)
        ok = st == 0 and torch.equal(sc, ts) and torch.equal(q, tq)
        why = f"status {st}, scale diffs {int((sc != ts).sum())}, q diffs {int((q != tq).sum())}"
        rep.add(ok, f"quant_rows {rows}x{cols} bit-exact vs torch", None, why)
        os.environ["FLASHGEN_FP8_QUANT_LOOP"] = "1"  # the loop kernel: the same bits
        q2, sc2, st = g.quant(x)
        torch.cuda.synchronize()
        del os.environ["FLASHGEN_FP8_QUANT_LOOP"]
        rep.add(st == 0 and torch.equal(q2, q) and torch.equal(sc2, sc),
                f"quant_rows {rows}x{cols} loop kernel = register kernel")
    # RMSNorm in front: h against fp64, then q / scale against torch on our h
    for rows, cols in [(16, 4096), (512, 4096), (7, 576), (5, 14336)]:
        x = (torch.randn(rows, cols, device=dev) *
             torch.tensor(cg.NORM_ROW_SCALE, device=dev)[torch.arange(rows, device=dev) % 8, None]
             ).bfloat16()
        gamma = cg.norm_gamma(cols, dev)
        hbuf, h = cq.poisoned(rows, cols, torch.bfloat16, dev)
        q, sc, st = g.quant(x, gamma, cg.NORM_EPS, h)
        torch.cuda.synchronize()
        ok_h, _, _, why_h = cg.check_h(h, cg.rms_exact(x, gamma))
        tq, ts = torch_quant(h)
        ok = (st == 0 and ok_h and bool((hbuf[rows * cols:] == 12345.0).all()) and
              torch.equal(sc, ts) and torch.equal(q, tq))
        rep.add(ok, f"quant_rows+norm {rows}x{cols}", None,
                f"status {st}, h: {why_h}, q diffs {int((q != tq).sum())}")
        q2, sc2, _ = g.quant(x, gamma, cg.NORM_EPS, None)
        torch.cuda.synchronize()
        rep.add(torch.equal(q2, q) and torch.equal(sc2, sc), f"quant_rows+norm {rows}x{cols} "
                "without h_out: same q")
        os.environ["FLASHGEN_FP8_QUANT_LOOP"] = "1"
        q3, sc3, _ = g.quant(x, gamma, cg.NORM_EPS, None)
        torch.cuda.synchronize()
        del os.environ["FLASHGEN_FP8_QUANT_LOOP"]
        rep.add(torch.equal(q3, q) and torch.equal(sc3, sc), f"quant_rows+norm {rows}x{cols} "
                "loop kernel = register kernel")
    x = torch.randn(4, 64, device=dev).bfloat16()
    q = torch.empty(4, 64, dtype=torch.uint8, device=dev)
    sc = torch.empty(4, device=dev)
    for tag, args in [("cols 12", (q.data_ptr(), sc.data_ptr(), x.data_ptr(), None, 0.0, None, 4, 12)),
                      ("rows 0", (q.data_ptr(), sc.data_ptr(), x.data_ptr(), None, 0.0, None, 0, 64)),
                      ("x misaligned", (q.data_ptr(), sc.data_ptr(), x.data_ptr() + 2, None, 0.0,
                                        None, 1, 56)),
                      ("h_out without gamma", (q.data_ptr(), sc.data_ptr(), x.data_ptr(), None,
                                               0.0, x.data_ptr(), 4, 64)),
                      ("gamma not 16-byte aligned", (q.data_ptr(), sc.data_ptr(), x.data_ptr(),
                                                     sc.data_ptr() + 4, 0.0, None, 1, 8))]:
        st = g.lib.fg_fp8_quant_rows(*args, Lib.s())
        rep.add(st == EINVAL, f"quant_rows refuses {tag}", None, f"status {st}")


# ---- GEMM ----------------------------------------------------------------------------------------

GEMM_SHAPES = [("8b.qkv", 6144, 4096), ("8b.o", 4096, 4096), ("8b.gate_up", 28672, 4096),
               ("8b.down", 4096, 14336), ("smol.qkv", 960, 576), ("odd.48x32", 48, 32),
               ("odd.1008x1536", 1008, 1536)]
GEMM_N = [1, 77, 512]


def gemm_judge(y, ref, mag, y_f32, mag_tol=GEMM_MAG_TOL, extra=0.0):
    yd = y.double()
    if torch.isnan(yd).any() or torch.isinf(yd).any():
        return False, float("nan"), float("nan"), "nan/inf (unwritten?)"
    err = (yd - ref).abs()
    rel = float((yd - ref).norm() / ref.norm().clamp_min(1e-300))
    out_tol = 2.0 ** -20 if y_f32 else 2.0 ** -8
    excess = float(((err - out_tol * ref.abs()).clamp_min(0) / mag.clamp_min(1e-300)).max())
    bad = int((err > out_tol * ref.abs() + mag_tol * mag + extra).sum())
    return bad == 0, rel, excess, (f"{bad} elements over the elementwise bound" if bad else "")


def check_gemm(g, rep, dev, stats):
    scratch = torch.empty(512 * 28672, device=dev)
    for name, od, idim in GEMM_SHAPES:
        w = (torch.randn(od, idim, device=dev) / math.sqrt(idim)).bfloat16()
        wq, sw, st = g.quant(w)
        wd = dequant(wq, sw)
        for n in GEMM_N:
            x = torch.randn(n, idim, device=dev).bfloat16()
            xq, sx, st2 = g.quant(x)
            torch.cuda.synchronize()
            xd = dequant(xq, sx)
            dot = xd @ wd.T
            mag = xd.abs() @ wd.abs().T
            y0 = torch.randn(n, od, device=dev)
            for mode in (OUTER, SPLIT, AUTO):
                for y_f32 in (0, 1):
                    for acc in (0, 1):
                        if mode == AUTO and (y_f32 or acc):
                            continue
                        dt = torch.float32 if y_f32 else torch.bfloat16
                        buf, y = cq.poisoned(n, od, dt, dev)
                        if acc:
                            y.copy_(y0.to(dt))
                        ref = dot + (y0.to(dt).double() if acc else 0.0)
                        stg, used = g.gemm(mode, y, y_f32, xq, sx, wq, sw, n, idim, od, acc,
                                           scratch if mode != OUTER else None)
                        torch.cuda.synchronize()
                        tag = f"gemm {MODE[mode]} {name} n={n} {'f32' if y_f32 else 'bf16'}" \
                              f"{' acc' if acc else ''}"
                        if stg != 0:
                            rep.add(False, tag, None, f"status {stg}: {g.error()}")
                            continue
                        if mode == AUTO:
                            stats.setdefault("auto", set()).add(MODE[used])
                        # OUTER with a bf16 C: cuBLASLt rounds the scaled product to bf16 before
                        # it adds C (run 1: only this case exceeded the bound, by rounding-size
                        # amounts), as an unfused GEMM + residual add does: one more half ulp
                        # of the product, 2^-8 |dot|
                        extra = 2.0 ** -8 * dot.abs() if mode == OUTER and acc and not y_f32 else 0.0
                        ok, rel, excess, why = gemm_judge(y, ref, mag, y_f32, extra=extra)
                        if not bool((buf[n * od:] == 12345.0).all()):
                            ok, why = False, "guard overwritten"
                        k = f"gemm {MODE[mode]}"
                        stats[k] = max(stats.get(k, 0.0), excess)
                        rep.add(ok and st == 0 and st2 == 0, tag, rel, why)
            if name.startswith("8b") and n == 512:  # fast accumulation: the error it costs
                buf, y = cq.poisoned(n, od, torch.bfloat16, dev)
                stg, _ = g.gemm(OUTER | FAST, y, 0, xq, sx, wq, sw, n, idim, od, 0)
                torch.cuda.synchronize()
                tag = f"gemm outer fast-accum {name} n={n} bf16"
                if stg != 0:
                    rep.add(False, tag, None, f"status {stg}: {g.error()}")
                else:
                    ok, rel, excess, why = gemm_judge(y, dot, mag, 0, GEMM_FAST_MAG_TOL)
                    stats["gemm outer fast-accum"] = max(stats.get("gemm outer fast-accum", 0.0),
                                                         excess)
                    rep.add(ok, tag, rel, why)
        # end to end at n = 77: W8A8 against the bf16 product, beside torch._scaled_mm
        if od % 16 == 0 and idim % 16 == 0:
            n = 77
            x = torch.randn(n, idim, device=dev).bfloat16()
            xq, sx, _ = g.quant(x)
            y = torch.empty(n, od, dtype=torch.bfloat16, device=dev)
            g.gemm(AUTO, y, 0, xq, sx, wq, sw, n, idim, od, 0, scratch)
            exact = x.double() @ w.double().T
            e_ours = float((y.double() - exact).norm() / exact.norm())
            e_peer = float("nan")
            try:
                yp = torch._scaled_mm(xq.view(E4M3), wq.view(E4M3).t(), scale_a=sx[:, None],
                                      scale_b=sw[None, :], out_dtype=torch.bfloat16)
                e_peer = float((yp.double() - exact).norm() / exact.norm())
            except Exception as e:  # the peer is informative only
                print(f"  torch._scaled_mm rowwise unavailable: {e}")
            print(f"  W8A8 {name} n={n}: rel error vs the bf16 product {e_ours:.4f} "
                  f"(torch._scaled_mm on the same operands {e_peer:.4f})", flush=True)
            rep.add(e_ours < 0.08, f"gemm {name} W8A8 error < 8%", e_ours)
        del w, wq, wd
    # refusals
    x = torch.zeros(16, 64, dtype=torch.uint8, device=dev)
    s = torch.ones(64, device=dev)
    y = torch.empty(16, 64, dtype=torch.bfloat16, device=dev)
    for tag, (mode, n, idim, od) in [("in_dim 40", (OUTER, 1, 40, 64)), ("out_dim 8", (OUTER, 1, 64, 8)),
                                     ("n 0", (OUTER, 0, 64, 64)), ("mode 3", (3, 1, 64, 64)),
                                     ("split without scratch", (SPLIT, 4, 64, 64))]:
        st, _ = g.gemm(mode, y, 0, x, s, x, s, n, idim, od, 0)
        rep.add(st == -1 and g.error() != "", f"gemm refuses {tag}", None, f"status {st}")


# ---- GEMV ------------------------------------------------------------------------------------------

GEMV_SHAPES = [  # (name, out_dim, in_dim, epilogue, y_f32); SwiGLU: 2 out_dim weight rows
    ("8b.qkv", 6144, 4096, STORE, 0), ("8b.o", 4096, 4096, ADD, 0),
    ("8b.gate_up", 14336, 4096, SWIGLU, 0), ("8b.down", 4096, 14336, ADD, 0),
    ("smol.gate_up", 1536, 576, SWIGLU, 0), ("smol.lm_head", 49152, 576, STORE, 1),
    ("odd.1x16", 1, 16, STORE, 0), ("odd.7x80", 7, 80, SWIGLU, 0), ("odd.1000x1536", 1000, 1536, ADD, 0),
]


class WCase:
    def __init__(self, g, rows, cols, dev, raw_bytes):
        if raw_bytes:  # every finite code: random bytes without 0x7f / 0xff (NaN)
            q = torch.randint(0, 254, (rows, cols), dtype=torch.uint8, device=dev)
            self.q = torch.where(q >= 0x7f, q + 1, q)
            self.sw = torch.rand(rows, device=dev) * 2e-3 + 1e-4
        else:
            w = (torch.randn(rows, cols, device=dev) / math.sqrt(cols)).bfloat16()
            self.q, self.sw, st = g.quant(w)
            assert st == 0
        self.wd = dequant(self.q, self.sw)
        self.refs = {}

    def products(self, x, od, epi):
        """cg.products of x, cached while x lives (the entry holds x: a freed tensor's address
        may come back for another one, which run 1's norm checks tripped over)."""
        key = (x.data_ptr(), od, epi)
        hit = self.refs.get(key)
        if hit is None or hit[0] is not x:
            hit = self.refs[key] = (x, cg.products(x, self.wd, od, epi))
        return hit[1]


def run_gemv(g, v, wc, x, y0, n, od, epi, y_f32, gamma=None, h=None):
    dt = torch.float32 if y_f32 else torch.bfloat16
    buf, y = cq.poisoned(n, od, dt, x.device)
    if epi == ADD:
        y.copy_(y0[:n].to(dt))
    st = g.gemv(v, y, y_f32, x, wc.q, wc.sw, n, x.shape[1], od, epi, gamma, cg.NORM_EPS, h)
    torch.cuda.synchronize()
    if st != 0:
        return None, f"status {st}"
    if not bool((buf[n * od:] == 12345.0).all()):
        return y, "y guard overwritten"
    return y, ""


def gemv_ref(wc, x, y0, n, od, epi, y_f32):
    dot, mag = wc.products(x, od, epi)
    r = dot[:n]
    if epi == ADD:
        r = r + (y0[:n].float() if y_f32 else y0[:n]).double()
    return r, mag[:n]


def check_gemv(g, rep, dev):
    pick_of = {}
    for name, od, idim, epi, yf in GEMV_SHAPES:
        rows = 2 * od if epi == SWIGLU else od
        pick = g.lib.fg_fp8_gemv_pick(1, idim, od, epi)
        pick_of[name] = g.names[pick]
        for raw in (False, True):
            if raw and not name.startswith(("8b.o", "odd", "smol.gate")):
                continue
            wc = WCase(g, rows, idim, dev, raw)
            x = torch.randn(MAXN, idim, device=dev).bfloat16()
            y0 = torch.randn(MAXN, od, device=dev).bfloat16()
            wtag = "codes" if raw else "quant"
            for v in range(g.n_var):
                if epi == SWIGLU and "rt1_" in g.names[v]:
                    continue
                big = idim * rows > (1 << 24)
                ns = range(1, MAXN + 1) if v == pick else ((1, 9, 16) if big else (1, 5, 8, 9, 16))
                for n in ns:
                    todo = [(epi, yf)]
                    if v == pick and n in (1, 16):
                        todo += [(STORE, 1 - yf), (ADD, 1)] if epi != SWIGLU else [(SWIGLU, 1)]
                    for e, f in todo:
                        o = od if e == epi else rows
                        yy0 = y0 if o == od else torch.randn(MAXN, o, device=dev).bfloat16()
                        y, why = run_gemv(g, v, wc, x, yy0, n, o, e, f)
                        tag = f"gemv {g.names[v]} {wtag} {name} {EPI[e]} {'f32' if f else 'bf16'} n={n}"
                        if why:
                            rep.add(False, tag, None, why)
                            continue
                        ref, mag = gemv_ref(wc, x, yy0, n, o, e, f)
                        ok, rel, why = cg.judge(y, ref, mag, f, e)
                        rep.add(ok, tag, rel, why)
            y1, _ = run_gemv(g, pick, wc, x, y0, MAXN, od, epi, yf)
            y2, _ = run_gemv(g, pick, wc, x, y0, MAXN, od, epi, yf)
            rep.add(y1 is not None and torch.equal(y1, y2), f"gemv {name} {wtag} deterministic")
            if name == "8b.o" and not raw:
                check_gemv_graph(g, pick, wc, x, y0, od, epi, rep)
            del wc
        print(f"  gemv {name}: done ({rep.passed} passed, {rep.failed} failed so far)", flush=True)
    print("  fg_fp8_gemv_pick at n = 1: " + ", ".join(f"{k} {v}" for k, v in pick_of.items()))


def check_gemv_graph(g, v, wc, x, y0, od, epi, rep):
    n = 4
    eager, _ = run_gemv(g, v, wc, x, y0, n, od, epi, 0)
    y = torch.empty(n, od, dtype=torch.bfloat16, device=x.device)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    gph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(gph, stream=side):
        st = g.gemv(v, y, 0, x, wc.q, wc.sw, n, x.shape[1], od, epi)
    y.copy_(y0[:n])
    gph.replay()
    torch.cuda.synchronize()
    rep.add(st == 0 and torch.equal(y, eager), "gemv graph replay = eager", None, f"status {st}")


NORM_SHAPES = [("8b.qkv", 6144, 4096, STORE), ("8b.gate_up", 14336, 4096, SWIGLU),
               ("smol.gate_up", 1536, 576, SWIGLU), ("odd.1000x592", 1000, 592, ADD)]


def check_gemv_norm(g, rep, dev):
    for name, od, idim, epi in NORM_SHAPES:
        rows = 2 * od if epi == SWIGLU else od
        wc = WCase(g, rows, idim, dev, False)
        scale = torch.tensor(NORM_ROW_SCALE16, device=dev)[:, None]
        x = (torch.randn(MAXN, idim, device=dev) * scale).bfloat16()
        gamma = cg.norm_gamma(idim, dev)
        y0 = torch.randn(MAXN, od, device=dev).bfloat16()
        h_exact = cg.rms_exact(x, gamma)
        pick = g.lib.fg_fp8_gemv_pick(1, idim, od, epi)
        for v in range(g.n_var):
            if epi == SWIGLU and "rt1_" in g.names[v]:
                continue
            hbuf, h16 = cq.poisoned(MAXN, idim, torch.bfloat16, dev)
            y, why = run_gemv(g, v, wc, x, y0, MAXN, od, epi, 0, gamma, h16)
            ok_h, _, _, why_h = cg.check_h(h16, h_exact) if not why else (False, 0, 0, "")
            rep.add(not why and ok_h and bool((hbuf[MAXN * idim:] == 12345.0).all()),
                    f"gemv_norm {g.names[v]} {name} h within 1.5 ulp, correctly rounded", None,
                    f"{why} {why_h}")
            h16 = h16.clone()
            for n in (range(1, MAXN + 1) if v == pick else (1, 8, 9, 16)):
                hb, h = cq.poisoned(n, idim, torch.bfloat16, dev)
                y, why = run_gemv(g, v, wc, x, y0, n, od, epi, 0, gamma, h)
                tag = f"gemv_norm {g.names[v]} {name} {EPI[epi]} n={n}"
                if why:
                    rep.add(False, tag, None, why)
                    continue
                if not torch.equal(h, h16[:n]) or not bool((hb[n * idim:] == 12345.0).all()):
                    rep.add(False, tag, None, "h rows differ from the n=16 call's / guard")
                    continue
                ref, mag = gemv_ref(wc, h16, y0, n, od, epi, 0)
                ok, rel, why = cg.judge(y, ref, mag, 0, epi)
                rep.add(ok, tag, rel, why)
        del wc


NORM_ROW_SCALE16 = [1.0, 3.0, 0.25, 1e-3, 10.0, 0.5, 2.0, 0.05,
                    0.7, 5.0, 0.1, 1.5, 30.0, 0.02, 1.2, 4.0]


def check_gemv_refusals(g, rep, dev):
    q = torch.zeros(64, 64, dtype=torch.uint8, device=dev)
    s = torch.ones(64, device=dev)
    x = torch.randn(MAXN + 1, 64, device=dev).bfloat16()
    y = torch.empty(MAXN + 1, 64, dtype=torch.float32, device=dev)
    xp, qp, sp, yp = x.data_ptr(), q.data_ptr(), s.data_ptr(), y.data_ptr()
    for tag, args in [("n=0", (yp, 1, xp, qp, sp, 0, 64, 64, STORE)),
                      ("n=17", (yp, 1, xp, qp, sp, 17, 64, 64, STORE)),
                      ("in_dim 40", (yp, 1, xp, qp, sp, 1, 40, 64, STORE)),
                      ("epilogue 3", (yp, 1, xp, qp, sp, 1, 64, 64, 3)),
                      ("x misaligned", (yp, 1, xp + 2, qp, sp, 1, 64, 64, STORE)),
                      ("q misaligned", (yp, 1, xp, qp + 8, sp, 1, 64, 64, STORE))]:
        st = g.lib.fg_fp8_gemv(*args, Lib.s())
        rep.add(st == EINVAL, f"gemv refuses {tag}", None, f"status {st}")
    st = g.lib.fg_fp8_gemv_variant(3, yp, 1, xp, None, 0.0, None, qp, sp, 1, 64, 32, SWIGLU, Lib.s())
    rep.add(st == EINVAL, "gemv refuses SwiGLU on an rt1 variant", None, f"status {st}")
    torch.cuda.synchronize()


# ---- benchmark -----------------------------------------------------------------------------------

BENCH_GEMM = [("qkv", 6144, 4096), ("o", 4096, 4096), ("gate_up", 28672, 4096), ("down", 4096, 14336)]
BENCH_T = [16, 64, 128, 256, 512, 1024, 2048, 4096, 8192]
BENCH_GEMV = [("qkv", 6144, 4096, STORE, True), ("o", 4096, 4096, ADD, False),
              ("gate_up", 14336, 4096, SWIGLU, True), ("down", 4096, 14336, ADD, False)]


def bench_gemm(g, dev):
    print("prefill GEMMs, TFLOP/s (2·T·in·out / median time): fp8 = fg_fp8_gemm on quantized x, "
          "fp8+q = with fg_fp8_quant_rows of x, fast = fp8 with cuBLASLt's fast accumulation, "
          "bf16 = torch x @ W.T (cuBLAS), peer = torch._scaled_mm rowwise")
    print(f"{'gemm':<8} {'T':>5} {'fp8':>7} {'fp8+q':>7} {'fast':>7} {'bf16':>7} {'peer':>7} "
          f"{'fp8+q/bf16':>10} mode")
    total = {}
    scratch = None
    for name, od, idim in BENCH_GEMM:
        w = (torch.randn(od, idim, device=dev) / math.sqrt(idim)).bfloat16()
        wq, sw, _ = g.quant(w)
        for T in BENCH_T:
            x = torch.randn(T, idim, device=dev).bfloat16()
            xq, sx, _ = g.quant(x)
            y = torch.empty(T, od, dtype=torch.bfloat16, device=dev)
            st, used = g.gemm(AUTO, y, 0, xq, sx, wq, sw, T, idim, od, 0, scratch)
            if st != 0:
                if scratch is None or scratch.numel() < T * od:
                    scratch = torch.empty(T * od, device=dev)
                st, used = g.gemm(AUTO, y, 0, xq, sx, wq, sw, T, idim, od, 0, scratch)
            flop = 2.0 * T * idim * od
            us8 = cg.time_calls(lambda i: g.gemm(AUTO, y, 0, xq, sx, wq, sw, T, idim, od, 0, scratch), 1, 20)

            def with_quant(i):
                g.lib.fg_fp8_quant_rows(xq.data_ptr(), sx.data_ptr(), x.data_ptr(), None, 0.0, None,
                                        T, idim, Lib.s())
                g.gemm(AUTO, y, 0, xq, sx, wq, sw, T, idim, od, 0, scratch)
            us8q = cg.time_calls(with_quant, 1, 20)
            stf, _ = g.gemm(OUTER | FAST, y, 0, xq, sx, wq, sw, T, idim, od, 0)
            usf = cg.time_calls(lambda i: g.gemm(OUTER | FAST, y, 0, xq, sx, wq, sw, T, idim, od, 0), 1, 20) \
                if stf == 0 else float("nan")
            if st != 0:  # a failing call returns at once: no time to report
                us8 = us8q = float("nan")
            usbf = cg.time_calls(lambda i: torch.matmul(x, w.T), 1, 20)
            try:
                a8, b8, sa, sb = xq.view(E4M3), wq.view(E4M3).t(), sx[:, None], sw[None, :]
                uspeer = cg.time_calls(lambda i: torch._scaled_mm(a8, b8, scale_a=sa, scale_b=sb,
                                                                  out_dtype=torch.bfloat16), 1, 20)
            except Exception:
                uspeer = float("nan")
            tf = lambda us: flop / (us * 1e-6) / 1e12  # noqa: E731
            for k, us in (("fp8", us8), ("fp8+q", us8q), ("fast", usf), ("bf16", usbf),
                          ("peer", uspeer)):
                total[(k, T)] = total.get((k, T), 0.0) + us
            print(f"{name:<8} {T:>5} {tf(us8):7.0f} {tf(us8q):7.0f} {tf(usf):7.0f} {tf(usbf):7.0f} "
                  f"{tf(uspeer):7.0f} {usbf / us8q:10.2f} "
                  f"{MODE[used] if st == 0 else 'FAILED ' + g.error()}", flush=True)
        del w, wq
    print("the four GEMMs of one 8B layer, tokens/s of GEMM time alone (no attention, no norms):")
    for T in BENCH_T:
        print(f"  T={T:<5} " + "  ".join(f"{k} {T * 1e6 / (32 * total[(k, T)]):8.0f}"
                                         for k in ("fp8", "fp8+q", "fast", "bf16", "peer")) +
              f"   fp8+q/bf16 {total[('bf16', T)] / total[('fp8+q', T)]:.2f}x")


def bench_gemv(g, dev):
    ceil = cg.copy_ceiling()
    print(f"copy ceiling (device-to-device, 1 GiB, read + write): {ceil:.0f} GB/s")
    print("decode GEMVs: µs per call back to back in a CUDA graph, GB/s = weight bytes (fp8: q + "
          "scales) / time")
    print(f"{'gemv':<8} {'kind':<26} {'n':>3} {'us':>8} {'GB/s':>7} {'%copy':>6}")
    layer = {}
    for name, od, idim, epi, norm in BENCH_GEMV:
        rows = 2 * od if epi == SWIGLU else od
        gamma = cg.norm_gamma(idim, dev)
        wb = (torch.randn(rows, idim, device=dev) / math.sqrt(idim)).bfloat16()
        q, sw, _ = g.quant(wb)
        kinds = [("bf16", None)] + [(f"fp8 {g.names[v]}", v) for v in range(g.n_var)
                                    if not (epi == SWIGLU and "rt1_" in g.names[v])]
        for kind, v in kinds:
            one = (wb,) if v is None else (q, sw)
            nbytes = sum(t.numel() * t.element_size() for t in one)
            copies = [one] + [tuple(t.clone() for t in one)
                              for _ in range(max(1, (256 << 20) // nbytes + 1) - 1)]
            for n in (1, 8, 16):
                if v is None and n > 8:
                    continue
                pick = v is not None and v == g.lib.fg_fp8_gemv_pick(n, idim, od, epi)
                if v is not None and not pick and n == 8:
                    continue  # the sweep at n = 1 and 16; the pick at every n
                x = torch.randn(n, idim, device=dev).bfloat16()
                y = torch.randn(n, od, device=dev).bfloat16()
                s = Lib.s
                gp = gamma.data_ptr() if norm else None
                if v is None and norm:
                    fn = lambda i: g.lib.fg_gemv_norm(y.data_ptr(), 0, x.data_ptr(), gp, 1e-5, None, copies[i][0].data_ptr(), n, idim, od, epi, s())  # noqa: E731
                elif v is None:
                    fn = lambda i: g.lib.fg_gemv(y.data_ptr(), 0, x.data_ptr(), copies[i][0].data_ptr(), n, idim, od, epi, s())  # noqa: E731
                else:
                    fn = lambda i: g.lib.fg_fp8_gemv_variant(v, y.data_ptr(), 0, x.data_ptr(), gp, 1e-5, None, copies[i][0].data_ptr(), copies[i][1].data_ptr(), n, idim, od, epi, s())  # noqa: E731
                us = cg.time_graph(fn, len(copies))
                gbs = nbytes / (us * 1e-6) / 1e9
                label = kind + (" *" if pick else "")
                if v is None or pick:
                    layer[("bf16" if v is None else "fp8", n)] = layer.get(("bf16" if v is None else "fp8", n), 0.0) + us
                print(f"{name:<8} {label:<26} {n:>3} {us:8.2f} {gbs:7.0f} {100 * gbs / ceil:5.1f}%",
                      flush=True)
            del copies, one
        del wb, q
    print("(* = fg_fp8_gemv_pick's variant) 32 layers' four GEMVs per decode step, kernel time only:")
    for (k, n), us in sorted(layer.items()):
        print(f"  {k:<5} n={n:<3} {32 * us / 1e3:7.3f} ms/step -> {n * 1e6 / (32 * us):8.0f} tokens/s bound")


def guarded(rep, name, fn, *args):
    """fn(*args); an exception counts as one failure and the run goes on (the benchmark too)."""
    try:
        fn(*args)
    except Exception:
        import traceback
        traceback.print_exc()
        rep.add(False, f"{name} raised")
        torch.cuda.synchronize()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", action="store_true")
    ap.add_argument("--lib", default=os.environ.get("FG_ATTN_LIB", "build/libfgattn.so"))
    a = ap.parse_args()
    why = gpu_skip.why_no_gpu()
    if why:
        return gpu_skip.skip("check_fp8", why)
    global E4M3
    E4M3 = torch.float8_e4m3fn
    seed = int(os.environ.get("FG_SEED", time.time_ns() % (1 << 31)))
    torch.manual_seed(seed)
    print(f"check_fp8: seed {seed} on {torch.cuda.get_device_name()}, torch {torch.__version__}",
          flush=True)
    g = Lib(a.lib)
    dev = torch.device("cuda")
    rep = cq.Report()
    stats = {}
    t0 = time.time()
    for part in (check_quant, check_gemv_refusals):
        guarded(rep, part.__name__, part, g, rep, dev)
    print(f"  quantization: done ({rep.passed} passed, {rep.failed} failed so far)", flush=True)
    guarded(rep, "check_gemm", check_gemm, g, rep, dev, stats)
    print(f"  gemm: done ({rep.passed} passed, {rep.failed} failed so far); AUTO chose "
          f"{sorted(stats.get('auto', []))}; worst (err - out rounding) / sum|x||w|: "
          + ", ".join(f"{k} {v:.2e}" for k, v in stats.items() if k != "auto"), flush=True)
    guarded(rep, "check_gemv", check_gemv, g, rep, dev)
    guarded(rep, "check_gemv_norm", check_gemv_norm, g, rep, dev)
    print("worst relative error per case:")
    for k, v in sorted(rep.worst.items()):
        print(f"  {k:<60} {v:.3e}")
    print(f"checks took {time.time() - t0:.1f} s", flush=True)
    if a.bench:
        guarded(rep, "bench_gemm", bench_gemm, g, dev)
        guarded(rep, "bench_gemv", bench_gemv, g, dev)
    g.lib.fg_fp8_lt_free(g.lt)
    print(f"check_fp8: {'PASS' if rep.failed == 0 else 'FAIL'} ({rep.passed} passed, "
          f"{rep.failed} failed)")
    return 0 if rep.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
