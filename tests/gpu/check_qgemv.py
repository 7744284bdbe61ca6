"""check_qgemv.py — GPU test and benchmark of the GEMV on GGUF blocks (kernels/qgemv.cu).

Correctness, for Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K, Q3_K and Q2_K, on fresh random blocks in the file's
layout (seeded from the clock unless FG_SEED is set): d = fp16(N(0, 1) · s) with s chosen so
W ~ 1/sqrt(in_dim) (some d land in the fp16 subnormals), Q4_1's m = fp16(−8 d (1 + N(0, 1) / 4)),
Q5_1's fp16(−16 d (1 + N(0, 1) / 4)), qs (and Q5_x's qh) uniform random bytes; Q4_K as tools/make_kquant_models.py makes its blocks: random bytes (the 6-bit scales and
mins, the nibbles) with d and dmin positive fp16 of sane size, uniform in (0.5, 1.5) times s and
7.5 s (some subnormal); Q5_K as Q4_K (its qh random bytes too) with dmin 15.5 s (q up to 31);
Q6_K random bytes (int8 scales, ql, qh) with d a positive fp16 as Q4_K's; Q3_K random bytes
(hmask, qs, the packed 6-bit scales) with d as Q6_K's; Q2_K random bytes (the 4-bit scales and
mins, qs) with d as Q4_K's and dmin 1.5 · (0.5, 1.5) · s (the mins centre the weights);
the K-quants only on the shapes whose in_dim is a multiple of 256. Uploaded and repacked on
the device by fg_qpack (into a poisoned buffer of fg_qpack_bytes, which must equal the file's bytes
of the rows padded to a multiple of 8; Q4_K / Q5_K / Q6_K: 148 / 180 / 212 bytes per row and
super-block against 144 / 176 / 210; Q3_K / Q2_K: 116 / 84 against 110 / 84). The oracle is
model/gguf_quant.c's gguf_dequantize of the file's bytes (linked into the same library; CI checks
it against the `gguf` package), then fp64 products (torch) on the same bf16 x. Outputs are
poisoned with NaN and a guard after the last row must stay untouched.
  - fg_qgemv for every n = 1..16 on each shape (the 8B-shape q|k|v 6144×4096, o 4096×4096,
    gate|up 14336×4096 with SwiGLU, down 4096×14336, SmolLM2 shapes, odd ones) with the shape's
    epilogue, bf16 y; at n = 1, 5, 16 also every other epilogue the rows allow and fp32 y. Both
    load paths are covered (fg_qgemv_staged: every group of 4 blocks full, or a partial last one);
  - fg_qgemv_norm (RMSNorm in front, fp32 gamma none of which is a bf16 value: check_gemv's
    norm_gamma) for n = 1..16: h (h_out) against fp64 RMSNorm within 1.5 bf16 ulp and few
    elements off the correctly rounded value (check_gemv's check_h: H_TOL, H_FLIP_FRAC), h rows
    bit for bit independent of n (small n norm into shared memory first, large n chunk by chunk:
    the same bits), y against the fp64 products of the kernel's own h;
  - every variant of the benchmark's table (fg_qgemv_variant / fg_qgemv_norm_variant) on seven
    shapes at n = 16, 1, 9, with and without the norm, h bit for bit the same in all of them; the
    bulk variants with 8 consumer warps y bit for bit variant 0's (the same groups per warp, the
    same order of sums; two shapes give their persistent grid more items than it has blocks);
  - fg_qdequant_bf16 of the packed weight bit for bit = bf16(gguf_dequantize) (one rounding of
    the fp32 value): fg_qpack and the layout's readers agree with the file;
  - fg_qdequant_rows_bf16 (the tied embedding's gather from the head's packed copy, check_rows)
    for every type on the SmolLM2 embedding's shape (49152 × 576, K-quants 3000 × 4096) and
    37 × 256 (a padded last tile): a row list unsorted, with repeats and the edge rows 0 and
    rows − 1, bit for bit the same rows of fg_qdequant_bf16 of the whole matrix and of
    bf16(gguf_dequantize); ids outside [0, rows) (−1, rows, a padding row of the last tile,
    2^30) give rows of zeros; n = 0 writes nothing; a guard after the rows stays; CUDA-graph
    replay = eager; refusals (n < 0, dst not 16-byte aligned, Q8_K);
  - determinism (twice, bit for bit), CUDA-graph replay = eager (fg_qgemv, and fg_qgemv_norm
    whose kernel's first launch, setting its shared-memory attribute, is inside the capture),
    refusals (n 0 / 17, in_dim not a multiple of 32 (K-quants: of 256), a type it does not read
    (Q8_K), misaligned x or w, fg_qpack's bad shapes; Q5_0 / Q5_1 rows not whole blocks).
  - --stress R (its own run, in `make test-gpu` after the checks): races. Variant 0 and every
    bulk variant on the 8B shapes at n = 1 and 16, R launches of each queued back to back (each
    may start under the one before, as in the decode graph), every result bit for bit the first.
    Why: one run of the checks on 2026-12-04 (H200, seed 1763490739) had 8 elements of one Q8_0
    fused-norm q|k|v call at n = 1 off by about one k group's share, which neither three reruns
    (two with that seed) nor 44 800 stressed launches reproduced.
Bounds: check_gemv.judge's, unchanged (bf16 y: norm-wise 2^-8 + 1e-4, elementwise 2^-8 |ref| +
2^-16 Σ|x||w|; fp32 y: 1e-4 and 2^-16 Σ|x||w|). They hold here for the same reason: the mma
multiplies exact integers q by bf16 x (exact products in fp32), each block's sum is scaled by its
fp32 d once (Q4_1 / Q5_1: plus m times the block's fp32 Σx; Q4_K / Q5_K: the fp32 d·sc_j, plus −dmin·m_j times
Σx, both exact products; Q6_K / Q3_K: each 16-element half's sum times its exact fp32 d·sc; Q2_K:
that plus each half's −dmin·m times its Σx), and the sums
are fp32; x is not quantized. The calls on int8 activations (the i8 variants on Q8_0 / Q4_0 / Q4_1 /
Q4_K at n <= 8; the picked fused-norm calls of those types at n = 1 unless FLASHGEN_QGEMV_I8=0;
fg_qgemv_variant_i8 says which) are judged against the
fp64 products of W with x as they round it (quant_x_i8: q · d exactly), under the same bounds: the
block's integer sum is exact and is scaled by the fp32 d_w · d_x once, so what is left is the fp32
rounding the bounds already allow; a wrong order of the bytes or a wrong d is far past them (one
stray q on a large weight is past them too: 2026-12-04's first run, whose torch model rounded d
by a reciprocal, failed 122 calls by a few elements each). A check counts that such calls ran.
Benchmark (--bench, or --bench-only without the checks): µs per call back to back in a CUDA
graph (check_gemv.time_graph, weights rotated over copies > 5× L2) of the 8B layer's four GEMVs
(norm fused in front of q|k|v and gate|up) as bf16 (fg_gemv / fg_gemv_norm on a bf16 weight: the
F16 file's path), Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K, Q3_K and Q2_K (every variant, the picked
one first), n = 1, 8, 16; GB/s of the packed weight's bytes (= the file's, Q5_x too; Q4_K 148/144,
Q5_K 180/176, Q6_K 212/210, Q3_K 116/110, Q2_K 84/84 of them) and % of the device-to-device copy ceiling; the 32 layers' GEMV time per token; fg_qpack's and fg_qdequant_bf16's time for one 14336×4096 weight.

Usage: python3 tests/gpu/check_qgemv.py --lib build/libfgattn.so [--bench | --bench-only]
Prints a PASS/FAIL summary line last; exit 1 on any failure; SKIPPED and exit 77 without a GPU.
"""
import argparse
import ctypes as C
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpu_skip  # noqa: E402

if gpu_skip.why_no_gpu() is None:  # (without torch or a GPU: main says SKIPPED)
    import torch  # noqa: E402
    import check_gemv as cg  # noqa: E402  (its bounds, references and timers)

STORE, ADD, SWIGLU = 0, 1, 2
EPI = {STORE: "store", ADD: "add", SWIGLU: "swiglu"}
Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K = 2, 3, 6, 7, 8, 10, 11, 12, 13, 14, 15
# name, file bytes per block, standard deviation of the quant about its centre (Q4_K / Q5_K: of
# the value in units of d, below)
TYPES = {Q8_0: ("Q8_0", 34, 127.0 / math.sqrt(3)), Q4_0: ("Q4_0", 18, 8.0 / math.sqrt(3)),
         Q4_1: ("Q4_1", 20, 8.0 / math.sqrt(3)), Q5_0: ("Q5_0", 22, 16.0 / math.sqrt(3)),
         Q5_1: ("Q5_1", 24, 16.0 / math.sqrt(3)), Q4_K: ("Q4_K", 144, 255.0),
         Q5_K: ("Q5_K", 176, 583.0),  # Q5_K: random_k_blocks' values measured (q up to 31)
         Q6_K: ("Q6_K", 210, 73.9 * 18.5),  # Q6_K: int8 scale rms 73.9, q − 32 std 18.5
         Q3_K: ("Q3_K", 110, 45.1),  # Q3_K, Q2_K: random_k23_blocks' values measured
         Q2_K: ("Q2_K", 84, 15.2)}
CENTRE = {Q4_1: 8.0, Q5_1: 16.0}  # the quant's centre, which m = −centre · d puts at 0
BLOCK = {Q4_K: 256, Q5_K: 256, Q6_K: 256, Q3_K: 256, Q2_K: 256}  # elements per block (32 for the
# others); in_dim a multiple
K_PACKED = {Q4_K: 148, Q5_K: 180, Q6_K: 212, Q3_K: 116, Q2_K: 84}  # packed bytes per row and
# super-block (qgemv.h)
EINVAL = 1
MAXN = 16

# (name, out_dim, in_dim, epilogue, y_f32): W has 2·out_dim rows for SwiGLU
SHAPES = [
    ("8b.qkv", 6144, 4096, STORE, 0),
    ("8b.o", 4096, 4096, ADD, 0),
    ("8b.gate_up", 14336, 4096, SWIGLU, 0),
    ("8b.down", 4096, 14336, ADD, 0),
    ("smol.qkv", 960, 576, STORE, 0),
    ("smol.gate_up", 1536, 576, SWIGLU, 0),
    ("smol.lm_head", 49152, 576, STORE, 1),
    ("odd.1x32", 1, 32, STORE, 0),
    ("odd.7x96", 7, 96, SWIGLU, 0),
    ("odd.1000x1536", 1000, 1536, ADD, 0),
    ("odd.24x256", 24, 256, SWIGLU, 0),  # staged with one run per row (in_dim / 32 = 8)
    ("odd.1x256", 1, 256, STORE, 0),  # one Q4_K super-block, 7 padding rows
    ("odd.7x512", 7, 512, SWIGLU, 0),
    ("odd.100x768", 100, 768, ADD, 0),
]
NORM_SHAPES = [("8b.qkv", 6144, 4096, STORE), ("8b.gate_up", 14336, 4096, SWIGLU),
               ("smol.gate_up", 1536, 576, SWIGLU), ("odd.1000x576", 1000, 576, ADD),
               ("odd.100x768", 100, 768, ADD)]
NORM_ROW_SCALE = [1.0, 3.0, 0.25, 1e-3, 10.0, 0.5, 2.0, 0.05,
                  0.7, 5.0, 0.1, 1.5, 30.0, 0.02, 1.2, 4.0]


class Lib:
    def __init__(self, path):
        self.lib = lib = C.CDLL(os.path.abspath(path))
        vp, i, f = C.c_void_p, C.c_int, C.c_float
        lib.fg_qgemv.argtypes = [vp, i, vp, vp, i, i, i, i, i, vp]
        lib.fg_qgemv_norm.argtypes = [vp, i, vp, vp, f, vp, vp, i, i, i, i, i, vp]
        lib.fg_qdequant_bf16.argtypes = [vp, vp, i, i, i, vp]
        lib.fg_qdequant_rows_bf16.argtypes = [vp, vp, i, i, i, vp, i, vp]
        lib.fg_gemv.argtypes = [vp, i, vp, vp, i, i, i, i, vp]
        lib.fg_gemv_norm.argtypes = [vp, i, vp, vp, f, vp, vp, i, i, i, i, vp]
        lib.fg_qgemv_staged.argtypes = [i, vp, i]
        lib.fg_qgemv_variant.argtypes = [i, vp, i, vp, vp, i, i, i, i, i, vp]
        lib.fg_qgemv_norm_variant.argtypes = [i, vp, i, vp, vp, f, vp, vp, i, i, i, i, i, vp]
        lib.fg_qgemv_variant_name.restype = C.c_char_p
        lib.fg_qgemv_pick.argtypes = [i, i, i, i, i, i]
        lib.fg_qgemv_variant_i8.argtypes = [i, i, i, i, i]
        lib.fg_qpack_bytes.argtypes = [i, i, i]
        lib.fg_qpack_bytes.restype = C.c_size_t
        lib.fg_qpack.argtypes = [vp, vp, i, i, i, vp]
        lib.gguf_dequantize.argtypes = [C.c_uint32, vp, vp, C.c_uint64]

    @staticmethod
    def s():
        return torch.cuda.current_stream().cuda_stream

    def qgemv(self, y, y_f32, x, w, wt, n, idim, od, epi):
        return self.lib.fg_qgemv(y, y_f32, x, w, wt, n, idim, od, epi, self.s())

    def qgemv_norm(self, y, y_f32, x, gamma, eps, h, w, wt, n, idim, od, epi):
        return self.lib.fg_qgemv_norm(y, y_f32, x, gamma, eps, h, w, wt, n, idim, od, epi, self.s())

    def picked_i8(self, wt, n, idim, od, epi, norm):
        """1 when fg_qgemv / fg_qgemv_norm run this call on int8 activations."""
        v = self.lib.fg_qgemv_pick(wt, n, idim, od, epi, norm)
        return self.lib.fg_qgemv_variant_i8(v, wt, n, idim, od) == 1

    def dequant_host(self, wt, raw_cpu, rows, cols):
        out = torch.empty(rows, cols, dtype=torch.float32)
        if self.lib.gguf_dequantize(wt, raw_cpu.data_ptr(), out.data_ptr(), rows * cols) != 0:
            raise RuntimeError("gguf_dequantize refused")
        return out


def fits(wt, idim):
    return idim % BLOCK.get(wt, 32) == 0


def quant_x_i8(x):
    """The int8 activations' x as the kernel rounds it (qgemv_math.cuh, qi8_chunk): per 32-element
    block of each bf16 row, d = amax / 127 and q = round-half-even(v · (1 / d)), each an IEEE fp32
    operation as the kernel's (numpy float32: torch's division by a scalar multiplies by its
    reciprocal, which rounds d differently now and then); returned dequantized, q · d in fp64
    (exact), (rows, cols), on x's device."""
    xf = x.float().cpu().numpy().reshape(x.shape[0], -1, 32)
    d = np.abs(xf).max(-1, keepdims=True) / np.float32(127.0)
    with np.errstate(divide="ignore"):
        inv = np.where(d != 0, np.float32(1.0) / d, np.float32(0.0)).astype(np.float32)
    q = np.rint(xf * inv)
    assert q.dtype == np.float32 and d.dtype == np.float32 and bool((np.abs(q) <= 127).all())
    return torch.from_numpy(q.astype(np.float64) * d.astype(np.float64)).view(x.shape[0], -1).to(x.device)


def random_k_blocks(rows, cols, dev, wt=Q4_K):
    """(rows, cols / 256 · 144) uint8 Q4_K rows: random bytes (6-bit scales and mins, nibbles),
    then d and dmin set to positive fp16 in (0.5, 1.5) · s and 7.5 · that (so the mins roughly
    centre the weights, as the quantizer's do). A value d·sc·q − dmin·m with sc, m uniform in
    0..63 and q in 0..15 has a spread of about 255 d (TYPES' qstd): s keeps W ~ 1/sqrt(cols).
    wt Q5_K: (rows, cols / 256 · 176) rows the same way, the 32 bytes of qh (the fifth bits)
    random too, q in 0..31 and dmin 15.5 · (0.5, 1.5) · s (a spread of about 583 d)."""
    nb = cols // 256
    _, bs, qstd = TYPES[wt]
    s = 1.0 / (qstd * math.sqrt(cols))
    raw = torch.randint(0, 256, (rows, nb, bs), dtype=torch.uint8, device=dev)
    d = ((torch.rand(rows, nb, device=dev) + 0.5) * s).half()
    dmin = ((torch.rand(rows, nb, device=dev) + 0.5) * (15.5 if wt == Q5_K else 7.5) * s).half()
    raw[:, :, 0:2] = d.view(torch.uint8).view(rows, nb, 2)
    raw[:, :, 2:4] = dmin.view(torch.uint8).view(rows, nb, 2)
    return raw.reshape(rows, nb * bs).contiguous()


def random_q6k_blocks(rows, cols, dev):
    """(rows, cols / 256 · 210) uint8 Q6_K rows: random bytes (ql, qh, the 16 int8 scales), then
    the f16 d (bytes 208-209) positive in (0.5, 1.5) · s, s keeping W ~ 1/sqrt(cols) (a value
    d·sc·(q − 32) has a spread of about 1367 d: TYPES' qstd; most d are fp16 subnormals)."""
    nb = cols // 256
    s = 1.0 / (TYPES[Q6_K][2] * math.sqrt(cols))
    raw = torch.randint(0, 256, (rows, nb, 210), dtype=torch.uint8, device=dev)
    d = ((torch.rand(rows, nb, device=dev) + 0.5) * s).half()
    raw[:, :, 208:210] = d.view(torch.uint8).view(rows, nb, 2)
    return raw.reshape(rows, nb * 210).contiguous()


def random_k23_blocks(rows, cols, dev, wt):
    """(rows, cols / 256 · 110) uint8 Q3_K rows: random bytes (hmask, qs, the 6-bit scales: sc − 32
    uniform in −32..31, q uniform in −4..3), then the f16 d (bytes 108-109) positive in (0.5, 1.5) ·
    s; Q2_K (84 bytes): random bytes (the scale / min nibbles, qs), d (bytes 80-81) as Q3_K's and
    dmin (82-83) 1.5 · (0.5, 1.5) · s, which centres the weights. A spread of about 45.1 d (Q3_K) /
    15.2 d (Q2_K), measured on these generators (TYPES' qstd): s keeps W ~ 1/sqrt(cols)."""
    nb = cols // 256
    _, bs, qstd = TYPES[wt]
    s = 1.0 / (qstd * math.sqrt(cols))
    raw = torch.randint(0, 256, (rows, nb, bs), dtype=torch.uint8, device=dev)
    d = ((torch.rand(rows, nb, device=dev) + 0.5) * s).half()
    dpos = 108 if wt == Q3_K else 80
    raw[:, :, dpos:dpos + 2] = d.view(torch.uint8).view(rows, nb, 2)
    if wt == Q2_K:
        dmin = ((torch.rand(rows, nb, device=dev) + 0.5) * 1.5 * s).half()
        raw[:, :, 82:84] = dmin.view(torch.uint8).view(rows, nb, 2)
    return raw.reshape(rows, nb * bs).contiguous()


def random_blocks(wt, rows, cols, dev):
    """(rows, cols / 32 · bytes) uint8 GGUF rows of random blocks (Q4_1 / Q5_1: m about −8 d /
    −16 d, so the weights are centred as Q4_0's / Q5_0's, with a spread of their own; the bytes
    after d (and m), Q5_x's qh among them, uniform random; Q4_K / Q5_K / Q6_K / Q3_K / Q2_K:
    random_k_blocks / random_q6k_blocks / random_k23_blocks)."""
    if wt in (Q4_K, Q5_K):
        return random_k_blocks(rows, cols, dev, wt)
    if wt in (Q3_K, Q2_K):
        return random_k23_blocks(rows, cols, dev, wt)
    if wt == Q6_K:
        return random_q6k_blocks(rows, cols, dev)
    _, bs, qstd = TYPES[wt]
    nb = cols // 32
    dv = torch.randn(rows, nb, device=dev) / (qstd * math.sqrt(cols))
    parts = [dv.half().view(torch.uint8).view(rows, nb, 2)]
    if wt in CENTRE:
        m = (-CENTRE[wt] * dv * (1.0 + 0.25 * torch.randn(rows, nb, device=dev))).half()
        parts.append(m.view(torch.uint8).view(rows, nb, 2))
    hdr = 2 * len(parts)
    parts.append(torch.randint(0, 256, (rows, nb, bs - hdr), dtype=torch.uint8, device=dev))
    return torch.cat(parts, 2).reshape(rows, nb * bs).contiguous()


def pack(g, wt, raw, rows, cols):
    """fg_qpack of the file's rows raw (on the device) into a fresh buffer of fg_qpack_bytes."""
    nbytes = g.lib.fg_qpack_bytes(wt, rows, cols)
    if nbytes == 0:
        raise RuntimeError("fg_qpack_bytes refused")
    dst = torch.full((nbytes,), 0xA5, dtype=torch.uint8, device=raw.device)  # poisoned
    st = g.lib.fg_qpack(dst.data_ptr(), raw.data_ptr(), wt, rows, cols, Lib.s())
    torch.cuda.synchronize()
    if st != 0:
        raise RuntimeError(f"fg_qpack status {st}")
    return dst


class QCase:
    def __init__(self, g, wt, rows, cols, dev):
        self.wt, self.rows, self.cols = wt, rows, cols
        self.raw = random_blocks(wt, rows, cols, dev)
        self.wf = g.dequant_host(wt, self.raw.cpu(), rows, cols).to(dev)
        self.packed = pack(g, wt, self.raw, rows, cols)
        self.refs = {}

    def products(self, x, od, epi, i8=False):
        """The fp64 reference of x (i8: of x as the int8 activations round it) times W."""
        key = (x.data_ptr(), od, epi, i8)
        if key not in self.refs:
            self.refs[key] = cg.products(quant_x_i8(x) if i8 else x, self.wf, od, epi)
        return self.refs[key]


def poisoned(n, od, dt, dev, guard=64):
    buf = torch.full((n * od + guard,), float("nan"), dtype=dt, device=dev)
    buf[n * od:] = 12345.0
    return buf, buf[:n * od].view(n, od)


def run_y(g, qc, x, y0, n, od, epi, y_f32, norm=None, h=None, call=None):
    """y of one product into a poisoned buffer (ADD: y0 in it first): fg_qgemv, fg_qgemv_norm
    with norm, or call(y) (check_qgemm.py's fg_qgemm); (y, "") or (y or None, why)."""
    dt = torch.float32 if y_f32 else torch.bfloat16
    buf, y = poisoned(n, od, dt, x.device)
    if epi == ADD:
        y.copy_(y0[:n].to(dt))
    if call is not None:
        st = call(y)
    elif norm is None:
        st = g.qgemv(y.data_ptr(), y_f32, x.data_ptr(), qc.packed.data_ptr(), qc.wt, n, qc.cols,
                     od, epi)
    else:
        st = g.qgemv_norm(y.data_ptr(), y_f32, x.data_ptr(), norm.data_ptr(), cg.NORM_EPS,
                          None if h is None else h.data_ptr(), qc.packed.data_ptr(), qc.wt, n,
                          qc.cols, od, epi)
    torch.cuda.synchronize()
    if st != 0:
        return None, f"status {st}"
    if not bool((buf[n * od:] == 12345.0).all()):
        return y, "y guard overwritten"
    return y, ""


class Report:
    def __init__(self):
        self.passed = self.failed = 0
        self.i8 = 0  # checks of calls on int8 activations (against quant_x_i8's x)
        self.worst = {}

    def add(self, ok, tag, rel=None, why=""):
        if ok:
            self.passed += 1
        else:
            self.failed += 1
            print(f"  FAIL {tag}: rel {rel} {why}", flush=True)
        if rel is not None and rel == rel:
            k = tag.split(" n=")[0]
            self.worst[k] = max(self.worst.get(k, 0.0), rel)

    def print_worst(self, width, t0):
        print("worst relative error per case:")
        for k, v in sorted(self.worst.items()):
            print(f"  {k:<{width}} {v:.3e}")
        print(f"checks took {time.time() - t0:.1f} s", flush=True)

    def summary(self, name):
        """The summary line (last) and the exit status."""
        print(f"{name}: {'PASS' if self.failed == 0 else 'FAIL'} ({self.passed} passed, "
              f"{self.failed} failed)")
        return 0 if self.failed == 0 else 1


def ref_of(qc, x, y0, n, od, epi, y_f32, i8=False):
    dot, mag = qc.products(x, od, epi, i8)
    r = dot[:n]
    if epi == ADD:
        r = r + (y0[:n].float() if y_f32 else y0[:n]).double()
    return r, mag[:n]


def check_shapes(g, rep, dev):
    for wt, (tname, _, _) in TYPES.items():
        paths = set()
        for name, od, idim, epi, yf in SHAPES:
            if not fits(wt, idim):
                continue
            rows = 2 * od if epi == SWIGLU else od
            qc = QCase(g, wt, rows, idim, dev)
            staged = g.lib.fg_qgemv_staged(wt, qc.packed.data_ptr(), idim)
            paths.add(staged)
            file_bytes = qc.raw.numel()
            packed_bytes = qc.packed.numel()
            pad_rows = (rows + 7) // 8 * 8
            want = (pad_rows * (idim // 256) * K_PACKED[wt] if wt in K_PACKED
                    else file_bytes * pad_rows // rows)
            rep.add(packed_bytes == want,
                    f"{tname} {name} fg_qpack_bytes = the layout's bytes of the padded rows", None,
                    f"{packed_bytes} vs {want} ({file_bytes} in the file)")
            print(f"  {tname} {name}: {'full groups' if staged else 'partial last group'}, "
                  f"{packed_bytes} packed bytes for {file_bytes} in the file "
                  f"({packed_bytes / file_bytes:.4f}x)", flush=True)
            x = torch.randn(MAXN, idim, device=dev).bfloat16()
            # the epilogues these rows allow: (out_dim, epilogue)
            alts = [(rows, STORE), (rows, ADD)] + ([(rows // 2, SWIGLU)] if rows % 2 == 0 else [])
            y0s = {o: torch.randn(MAXN, o, device=dev).bfloat16() for o, _ in alts}
            y0s.setdefault(od, torch.randn(MAXN, od, device=dev).bfloat16())
            for n in range(1, MAXN + 1):
                todo = [(od, epi, yf)]
                if n in (1, 5, 16):
                    todo += [(o, e, f) for o, e in alts for f in (0, 1) if (o, e, f) != (od, epi, yf)]
                for o, e, f in todo:
                    y, why = run_y(g, qc, x, y0s[o], n, o, e, f)
                    tag = f"{tname} {name} {EPI[e]} {'f32' if f else 'bf16'} n={n}"
                    if why:
                        rep.add(False, tag, None, why)
                        continue
                    i8 = g.picked_i8(wt, n, idim, o, e, 0)
                    ref, mag = ref_of(qc, x, y0s[o], n, o, e, f, i8)
                    ok, rel, why = cg.judge(y, ref, mag, f, e)
                    if i8:
                        tag += " i8"
                        rep.i8 += 1
                    rep.add(ok, tag, rel, why)
            # determinism and graph replay on the shape's epilogue at n = MAXN
            y1, _ = run_y(g, qc, x, y0s[od], MAXN, od, epi, yf)
            y2, _ = run_y(g, qc, x, y0s[od], MAXN, od, epi, yf)
            rep.add(y1 is not None and torch.equal(y1, y2), f"{tname} {name} deterministic")
            if name.startswith("8b.o"):
                check_graph(g, qc, x, y0s[od], od, epi, rep, tname)
            # the dequantization for prefill: bf16(fp32 value), bit for bit
            dq = torch.full((rows, idim), float("nan"), dtype=torch.bfloat16, device=dev)
            st = g.lib.fg_qdequant_bf16(dq.data_ptr(), qc.packed.data_ptr(), wt, rows, idim, Lib.s())
            torch.cuda.synchronize()
            rep.add(st == 0 and torch.equal(dq.view(torch.int16), qc.wf.bfloat16().view(torch.int16)),
                    f"{tname} {name} dequant_bf16 bit-exact", None, f"status {st}")
            del qc
        if wt in K_PACKED:  # rows of whole super-blocks: every group of 4 sub-blocks is full
            rep.add(paths == {1}, f"{tname} full groups only", None, str(paths))
        else:
            rep.add(paths == {0, 1}, f"{tname} both load paths (full, partial groups) covered",
                    None, str(paths))
        print(f"  {tname}: shapes done ({rep.passed} passed, {rep.failed} failed so far)", flush=True)


# fg_qdequant_rows_bf16's weights (name, rows, cols): a tied SmolLM2 head / embedding (partial last
# groups; not for the K-quants, 576 is no multiple of 256), a K-quant one, and a padded last tile
ROWS_SHAPES = [("smol.embd", 49152, 576), ("k.3000x4096", 3000, 4096), ("odd.37x256", 37, 256)]
ROWS_GUARD = 64


def gather_rows(g, qc, ids):
    """fg_qdequant_rows_bf16 of qc's packed weight at the int32 ids (on the device) into a
    NaN-poisoned (n, cols) bf16 buffer with a guard after it: (rows, status, guard intact)."""
    n, cols = ids.numel(), qc.cols
    buf = torch.full((n * cols + ROWS_GUARD,), float("nan"), dtype=torch.bfloat16, device=ids.device)
    buf[n * cols:] = 12345.0
    st = g.lib.fg_qdequant_rows_bf16(buf.data_ptr(), qc.packed.data_ptr(), qc.wt, qc.rows, cols,
                                     ids.data_ptr(), n, Lib.s())
    torch.cuda.synchronize()
    return buf[:n * cols].view(n, cols), st, bool((buf[n * cols:] == 12345.0).all())


def bits(t):
    """bf16 as int16: equal means bit for bit (NaN = NaN, -0 != +0)."""
    return t.contiguous().view(torch.int16)


def check_rows(g, rep, dev):
    """The row gather of a tied embedding from the head's packed copy (kernels/qgemv.h
    fg_qdequant_rows_bf16): the rows of fg_qdequant_bf16 and of the host oracle, bit for bit."""
    for wt, (tname, _, _) in TYPES.items():
        for name, rows, cols in ROWS_SHAPES:
            if not fits(wt, cols):
                continue
            qc = QCase(g, wt, rows, cols, dev)
            whole = torch.full((rows, cols), float("nan"), dtype=torch.bfloat16, device=dev)
            st = g.lib.fg_qdequant_bf16(whole.data_ptr(), qc.packed.data_ptr(), wt, rows, cols,
                                        Lib.s())
            torch.cuda.synchronize()
            rep.add(st == 0, f"{tname} rows {name} whole dequant", None, f"status {st}")
            # unsorted (random), repeats (the edge rows twice, a run of one row), the edges
            n = 203
            ids = torch.randint(0, rows, (n,), dtype=torch.int32, device=dev)
            fixed = [rows - 1, 0, rows - 1, rows // 2, 0, rows // 2, rows // 2, 1 % rows]
            ids[:len(fixed)] = torch.tensor(fixed, dtype=torch.int32, device=dev)
            ids[-1] = rows - 1
            out, st, guard = gather_rows(g, qc, ids)
            tag = f"{tname} rows {name} n={n}"
            rep.add(st == 0 and guard, f"{tag} status 0, guard intact", None, f"status {st}")
            il = ids.long()
            rep.add(st == 0 and torch.equal(bits(out), bits(whole[il])),
                    f"{tag} = fg_qdequant_bf16's rows bit for bit")
            rep.add(st == 0 and torch.equal(bits(out), bits(qc.wf[il].bfloat16())),
                    f"{tag} = bf16(gguf_dequantize) bit for bit")
            # ids outside [0, rows): zeros, nothing read (rows + 1 .. is a padding row of the
            # last tile when rows % 8 != 0)
            bad = torch.tensor([-1, rows, (rows + 7) // 8 * 8 - 1 if rows % 8 else rows + 1,
                                1 << 30, 0], dtype=torch.int32, device=dev)
            out, st, guard = gather_rows(g, qc, bad)
            zero = torch.zeros(4, cols, dtype=torch.bfloat16, device=dev)
            rep.add(st == 0 and guard and torch.equal(bits(out[:4]), bits(zero)) and
                    torch.equal(bits(out[4:]), bits(whole[:1])),
                    f"{tname} rows {name} ids outside [0, rows) give zeros", None, f"status {st}")
            # n = 0: nothing launched, nothing written
            out, st, guard = gather_rows(g, qc, ids[:0])
            rep.add(st == 0 and guard, f"{tname} rows {name} n=0 writes nothing", None,
                    f"status {st}")
            if name == "odd.37x256":
                check_rows_graph(g, qc, ids, rep, tname)
            del qc, whole
    # refusals: n < 0, dst not 16-byte aligned, a type it does not read, cols not whole blocks
    qc = QCase(g, Q8_0, 64, 64, dev)
    ids = torch.arange(4, dtype=torch.int32, device=dev)
    y = torch.empty(8, 64, dtype=torch.bfloat16, device=dev)
    yp, wp, ip = y.data_ptr(), qc.packed.data_ptr(), ids.data_ptr()
    for tag, args in [("n -1", (yp, wp, Q8_0, 64, 64, ip, -1)),
                      ("dst not 16-byte aligned", (yp + 8, wp, Q8_0, 64, 64, ip, 4)),
                      ("type Q8_K", (yp, wp, Q8_K, 64, 256, ip, 4)),
                      ("Q4_K cols 128", (yp, wp, Q4_K, 64, 128, ip, 4)),
                      ("rows 0", (yp, wp, Q8_0, 0, 64, ip, 4))]:
        st = g.lib.fg_qdequant_rows_bf16(*args, Lib.s())
        rep.add(st == EINVAL, f"rows gather refuses {tag}", None, f"status {st}")
    print(f"  rows gather done ({rep.passed} passed, {rep.failed} failed so far)", flush=True)


def check_rows_graph(g, qc, ids, rep, tname):
    """fg_qdequant_rows_bf16 captured in a CUDA graph (as the decode step's embedding), replayed
    with new ids in the same buffer: = the eager gather of those ids."""
    n, cols = ids.numel(), qc.cols
    d_ids = ids.clone()
    y = torch.empty(n, cols, dtype=torch.bfloat16, device=ids.device)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    gph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(gph, stream=side):
        st = g.lib.fg_qdequant_rows_bf16(y.data_ptr(), qc.packed.data_ptr(), qc.wt, qc.rows, cols,
                                         d_ids.data_ptr(), n, Lib.s())
    d_ids.copy_(torch.flip(ids, [0]))
    gph.replay()
    torch.cuda.synchronize()
    eager, st2, _ = gather_rows(g, qc, torch.flip(ids, [0]).contiguous())
    rep.add(st == 0 and st2 == 0 and torch.equal(bits(y), bits(eager)),
            f"{tname} rows graph replay = eager", None, f"status {st} {st2}")


def check_graph(g, qc, x, y0, od, epi, rep, tname):
    n = 4
    eager, _ = run_y(g, qc, x, y0, n, od, epi, 0)
    y = torch.empty(n, od, dtype=torch.bfloat16, device=x.device)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    gph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(gph, stream=side):
        st = g.qgemv(y.data_ptr(), 0, x.data_ptr(), qc.packed.data_ptr(), qc.wt, n, qc.cols, od, epi)
    y.copy_(y0[:n])
    gph.replay()
    torch.cuda.synchronize()
    rep.add(st == 0 and torch.equal(y, eager), f"{tname} graph replay = eager", None, f"status {st}")
    # the fused norm captured before any eager call of its kernel: its first launch sets the
    # kernel's shared-memory attribute inside the capture (as an engine capturing decode first)
    gamma = cg.norm_gamma(qc.cols, x.device)
    yn = torch.empty(n, od, dtype=torch.bfloat16, device=x.device)
    tag = f"{tname} norm graph replay (first call in the capture) = eager"
    try:
        side.wait_stream(torch.cuda.current_stream())
        gph2 = torch.cuda.CUDAGraph()
        with torch.cuda.graph(gph2, stream=side):
            st = g.qgemv_norm(yn.data_ptr(), 0, x.data_ptr(), gamma.data_ptr(), cg.NORM_EPS, None,
                              qc.packed.data_ptr(), qc.wt, n, qc.cols, od, epi)
        yn.copy_(y0[:n])
        gph2.replay()
        torch.cuda.synchronize()
    except RuntimeError as e:
        torch.cuda.synchronize()
        rep.add(False, tag, None, f"capture failed: {e}")
        return
    eager, why = run_y(g, qc, x, y0, n, od, epi, 0, norm=gamma)
    rep.add(st == 0 and not why and torch.equal(yn, eager), tag, None, f"status {st} {why}")


def check_norm(g, rep, dev):
    for wt, (tname, _, _) in TYPES.items():
        for name, od, idim, epi in NORM_SHAPES:
            if not fits(wt, idim):
                continue
            rows = 2 * od if epi == SWIGLU else od
            qc = QCase(g, wt, rows, idim, dev)
            scale = torch.tensor(NORM_ROW_SCALE, device=dev)[:, None]
            x = (torch.randn(MAXN, idim, device=dev) * scale).bfloat16()
            gamma = cg.norm_gamma(idim, dev)
            y0 = torch.randn(MAXN, od, device=dev).bfloat16()
            h_exact = cg.rms_exact(x, gamma)
            hbuf, h16 = poisoned(MAXN, idim, torch.bfloat16, dev)
            y, why = run_y(g, qc, x, y0, MAXN, od, epi, 0, norm=gamma, h=h16)
            ok_h, _, _, why_h = cg.check_h(h16, h_exact) if not why else (False, 0, 0, "")
            rep.add(not why and ok_h and bool((hbuf[MAXN * idim:] == 12345.0).all()),
                    f"{tname} norm {name} h within 1.5 ulp, correctly rounded", None,
                    f"{why} {why_h}")
            h16 = h16.clone()
            for n in range(1, MAXN + 1):
                for f in ((0, 1) if n in (1, 16) else (0,)):
                    hb, h = poisoned(n, idim, torch.bfloat16, dev)
                    y, why = run_y(g, qc, x, y0, n, od, epi, f, norm=gamma, h=h)
                    tag = f"{tname} norm {name} {EPI[epi]} {'f32' if f else 'bf16'} n={n}"
                    if why:
                        rep.add(False, tag, None, why)
                        continue
                    if not torch.equal(h, h16[:n]) or not bool((hb[n * idim:] == 12345.0).all()):
                        rep.add(False, tag, None, "h rows differ from the n=16 call's / guard")
                        continue
                    i8 = g.picked_i8(wt, n, idim, od, epi, 1)
                    ref, mag = ref_of(qc, h16, y0, n, od, epi, f, i8)
                    ok, rel, why = cg.judge(y, ref, mag, f, epi)
                    if i8:
                        tag += " i8"
                        rep.i8 += 1
                    rep.add(ok, tag, rel, why)
            del qc


def check_refusals(g, rep, dev):
    qc = QCase(g, Q8_0, 64, 64, dev)
    x = torch.randn(MAXN + 1, 64, device=dev).bfloat16()
    y = torch.empty(MAXN + 1, 64, dtype=torch.float32, device=dev)
    xp, wp, yp = x.data_ptr(), qc.packed.data_ptr(), y.data_ptr()
    for tag, args in [("n=0", (yp, 1, xp, wp, Q8_0, 0, 64, 64, STORE)),
                      ("n=17", (yp, 1, xp, wp, Q8_0, 17, 64, 64, STORE)),
                      ("in_dim 48", (yp, 1, xp, wp, Q8_0, 1, 48, 64, STORE)),
                      ("type Q8_K", (yp, 1, xp, wp, Q8_K, 1, 256, 64, STORE)),
                      ("Q3_K in_dim 128", (yp, 1, xp, wp, Q3_K, 1, 128, 64, STORE)),
                      ("Q2_K in_dim 320", (yp, 1, xp, wp, Q2_K, 1, 320, 64, STORE)),
                      ("Q4_K in_dim 128", (yp, 1, xp, wp, Q4_K, 1, 128, 64, STORE)),
                      ("Q5_K in_dim 384", (yp, 1, xp, wp, Q5_K, 1, 384, 64, STORE)),
                      ("Q5_K n=17", (yp, 1, xp, wp, Q5_K, 17, 256, 64, STORE)),
                      ("Q5_K w not 16-byte aligned", (yp, 1, xp, wp + 4, Q5_K, 1, 256, 64, STORE)),
                      ("Q6_K in_dim 288", (yp, 1, xp, wp, Q6_K, 1, 288, 64, STORE)),
                      ("Q5_0 in_dim 48", (yp, 1, xp, wp, Q5_0, 1, 48, 64, STORE)),
                      ("Q5_1 in_dim 80", (yp, 1, xp, wp, Q5_1, 1, 80, 64, STORE)),
                      ("Q5_0 n=17", (yp, 1, xp, wp, Q5_0, 17, 64, 64, STORE)),
                      ("Q5_1 w not 16-byte aligned", (yp, 1, xp, wp + 4, Q5_1, 1, 64, 64, STORE)),
                      ("epilogue 3", (yp, 1, xp, wp, Q8_0, 1, 64, 64, 3)),
                      ("x misaligned", (yp, 1, xp + 2, wp, Q8_0, 1, 64, 64, STORE)),
                      ("w odd", (yp, 1, xp, wp + 1, Q8_0, 1, 64, 64, STORE)),
                      ("w not 16-byte aligned", (yp, 1, xp, wp + 8, Q8_0, 1, 64, 64, STORE))]:
        st = g.qgemv(*args)
        rep.add(st == EINVAL, f"refuses {tag}", None, f"status {st}")
    st = g.lib.fg_qdequant_bf16(yp, wp, Q8_K, 64, 256, Lib.s())
    rep.add(st == EINVAL, "dequant refuses Q8_K", None, f"status {st}")
    st = g.lib.fg_qdequant_bf16(yp, wp, Q4_K, 64, 128, Lib.s())
    rep.add(st == EINVAL, "dequant refuses Q4_K cols 128", None, f"status {st}")
    st = g.lib.fg_qdequant_bf16(yp, wp + 8, Q8_0, 64, 64, Lib.s())
    rep.add(st == EINVAL, "dequant refuses w not 16-byte aligned", None, f"status {st}")
    for wt, cols in ((Q5_0, 48), (Q5_1, 16), (Q5_K, 224), (Q3_K, 96), (Q2_K, 288)):
        st = g.lib.fg_qdequant_bf16(yp, wp, wt, 64, cols, Lib.s())
        rep.add(st == EINVAL, f"dequant refuses {TYPES[wt][0]} cols {cols}", None, f"status {st}")
    for tag, args in [("type Q8_K", (Q8_K, 64, 256)), ("cols 48", (Q8_0, 64, 48)),
                      ("Q3_K cols 384", (Q3_K, 64, 384)), ("Q2_K rows 0", (Q2_K, 0, 256)),
                      ("Q4_K cols 128", (Q4_K, 64, 128)), ("Q5_K cols 320", (Q5_K, 64, 320)),
                      ("Q5_K rows 0", (Q5_K, 0, 256)), ("Q6_K cols 96", (Q6_K, 64, 96)),
                      ("Q5_0 cols 40", (Q5_0, 64, 40)), ("Q5_1 cols 0", (Q5_1, 64, 0)),
                      ("Q5_1 rows 0", (Q5_1, 0, 64)), ("rows 0", (Q8_0, 0, 64))]:
        nb = g.lib.fg_qpack_bytes(*args)
        st = g.lib.fg_qpack(yp, qc.raw.data_ptr(), *args, Lib.s())
        rep.add(nb == 0 and st == EINVAL, f"fg_qpack refuses {tag}", None, f"bytes {nb} status {st}")
    st = g.lib.fg_qpack(yp + 8, qc.raw.data_ptr(), Q8_0, 64, 64, Lib.s())
    rep.add(st == EINVAL, "fg_qpack refuses dst not 16-byte aligned", None, f"status {st}")
    torch.cuda.synchronize()


VARIANT_SHAPES = [("8b.o", 4096, 4096, ADD), ("smol.gate_up", 1536, 576, SWIGLU),
                  ("odd.7x96", 7, 96, SWIGLU), ("odd.1000x1536", 1000, 1536, STORE),
                  ("odd.7x512", 7, 512, SWIGLU),
                  # the bulk kernel's persistent grid: more items (16 rows) than the SMs hold
                  # blocks, and a last stage of 4 of 8 groups
                  ("bulk.6720x1536", 6720, 1536, ADD), ("bulk.3360x1536", 3360, 1536, SWIGLU)]


def check_variants(g, rep, dev):
    """Every variant (not only the picked ones) on a few shapes, n = 1, 9, 16, with and without
    the norm in front (h of the norm: bit for bit the same in every variant)."""
    nv = g.lib.fg_qgemv_n_variants()
    for wt, (tname, _, _) in TYPES.items():
        for name, od, idim, epi in VARIANT_SHAPES:
            if not fits(wt, idim):
                continue
            rows = 2 * od if epi == SWIGLU else od
            qc = QCase(g, wt, rows, idim, dev)
            x = torch.randn(MAXN, idim, device=dev).bfloat16()
            gamma = cg.norm_gamma(idim, dev)
            y0 = torch.randn(MAXN, od, device=dev).bfloat16()
            h_first, y_v0 = None, {}
            for v in range(nv):
                vname = g.lib.fg_qgemv_variant_name(v).decode()
                for n in (MAXN, 1, 9):
                    for norm in (False, True):
                        buf, y = poisoned(n, od, torch.bfloat16, dev)
                        hb, h = poisoned(n, idim, torch.bfloat16, dev)
                        if epi == ADD:
                            y.copy_(y0[:n])
                        if norm:
                            st = g.lib.fg_qgemv_norm_variant(
                                v, y.data_ptr(), 0, x.data_ptr(), gamma.data_ptr(), cg.NORM_EPS,
                                h.data_ptr(), qc.packed.data_ptr(), wt, n, idim, od, epi, Lib.s())
                        else:
                            st = g.lib.fg_qgemv_variant(v, y.data_ptr(), 0, x.data_ptr(),
                                                        qc.packed.data_ptr(), wt, n, idim, od,
                                                        epi, Lib.s())
                        torch.cuda.synchronize()
                        tag = f"{tname} variant {vname} {name} {'norm ' if norm else ''}n={n}"
                        if epi == SWIGLU and vname.startswith("rt1_"):  # gate and up tiles in pairs
                            rep.add(st == EINVAL, tag + " refuses SwiGLU", None, f"status {st}")
                            continue
                        if st != 0 or not bool((buf[n * od:] == 12345.0).all()):
                            rep.add(False, tag, None, f"status {st} / y guard")
                            continue
                        xin = x[:n]
                        if norm:
                            if h_first is None and n == MAXN:
                                h_first = h.clone()
                            if h_first is not None and not torch.equal(h, h_first[:n]):
                                rep.add(False, tag, None, "h differs between variants or n")
                                continue
                            xin = h.clone()
                        if v == 0:
                            y_v0[(n, norm)] = y.clone()
                        elif vname.startswith("bulk_") and "_kw8_" in vname:
                            # the bulk kernel's warps take the groups variant 0's 8 warps take
                            # and sum in its order: the same bits
                            if not torch.equal(y, y_v0[(n, norm)]):
                                rep.add(False, tag, None, "y differs from variant 0's bits")
                                continue
                        i8 = g.lib.fg_qgemv_variant_i8(v, wt, n, idim, od) == 1
                        if i8:
                            xin = quant_x_i8(xin)
                            rep.i8 += 1
                        dot, mag = cg.products(xin, qc.wf, od, epi)
                        ref = dot + (y0[:n].double() if epi == ADD else 0.0)
                        ok, rel, why = cg.judge(y, ref, mag, 0, epi)
                        rep.add(ok, tag, rel, why)
            del qc


STRESS_SHAPES = [("8b.qkv", 6144, 4096, STORE, True), ("8b.gate_up", 14336, 4096, SWIGLU, True),
                 ("8b.o", 4096, 4096, ADD, False), ("8b.down", 4096, 14336, ADD, False)]


def check_stress(g, rep, dev, reps):
    """Races: variant 0 and every bulk variant on the 8B shapes (their fused norm where the engine
    fuses it), n = 1 and 16, reps calls each queued back to back on one stream (as in the decode
    graph: each launch may start under the one before it), every result bit for bit the first
    call's of variant 0 where the variant gives its bits (KW 8), else its own first call's; the
    first launch of each kernel in this process is among them."""
    nv = g.lib.fg_qgemv_n_variants()
    names = [g.lib.fg_qgemv_variant_name(v).decode() for v in range(nv)]
    vs = [0] + [v for v in range(nv) if names[v].startswith(("bulk_", "i8_"))]
    for wt, (tname, _, _) in TYPES.items():
        for name, od, idim, epi, norm in STRESS_SHAPES:
            rows = 2 * od if epi == SWIGLU else od
            qc = QCase(g, wt, rows, idim, dev)
            x = torch.randn(MAXN, idim, device=dev).bfloat16()
            gamma = cg.norm_gamma(idim, dev)
            base = {}
            for v in vs:
                for n in (1, MAXN):
                    ys = torch.zeros(reps, n, od, dtype=torch.bfloat16, device=dev)
                    st = 0
                    for r in range(reps):
                        if norm:
                            st |= g.lib.fg_qgemv_norm_variant(
                                v, ys[r].data_ptr(), 0, x.data_ptr(), gamma.data_ptr(),
                                cg.NORM_EPS, None, qc.packed.data_ptr(), wt, n, idim, od, epi,
                                Lib.s())
                        else:
                            st |= g.lib.fg_qgemv_variant(v, ys[r].data_ptr(), 0, x.data_ptr(),
                                                         qc.packed.data_ptr(), wt, n, idim, od,
                                                         epi, Lib.s())
                    torch.cuda.synchronize()
                    tag = f"{tname} stress {names[v]} {name} n={n} x{reps}"
                    if st != 0:
                        rep.add(False, tag, None, f"status {st}")
                        continue
                    same_bits = v == 0 or (names[v].startswith("bulk_") and "_kw8_" in names[v])
                    ref = base.setdefault(n, ys[0].clone()) if same_bits else ys[0]
                    bad = (ys != ref).reshape(reps, -1).sum(1)
                    nbad = int((bad > 0).sum())
                    rep.add(nbad == 0, tag, None,
                            f"{nbad} of {reps} calls differ (first at call "
                            f"{int((bad > 0).nonzero()[0]) if nbad else -1}, up to {int(bad.max())}"
                            f" elements)")
            del qc


BENCH = [("qkv", 6144, 4096, STORE, True), ("o", 4096, 4096, ADD, False),
         ("gate_up", 14336, 4096, SWIGLU, True), ("down", 4096, 14336, ADD, False)]


def run_bench(g, dev):
    ceil = cg.copy_ceiling()
    nv = g.lib.fg_qgemv_n_variants()
    vnames = [g.lib.fg_qgemv_variant_name(v).decode() for v in range(nv)]
    print(f"copy ceiling (device-to-device, 1 GiB, read + write): {ceil:.0f} GB/s")
    print(f"{'gemv':<10} {'type':<5} {'n':>3} {'us':>8} {'GB/s':>7} {'%copy':>6}  "
          f"(the picked variant; then every variant's us)")
    layer, best_layer = {}, {}
    for name, od, idim, epi, norm in BENCH:
        rows = 2 * od if epi == SWIGLU else od
        gamma = cg.norm_gamma(idim, dev)
        for tname in ("bf16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K", "Q3_K",
                      "Q2_K"):
            if tname == "bf16":
                one = (torch.randn(rows, idim, device=dev) / math.sqrt(idim)).bfloat16()
                wt = None
            else:
                wt = next(t for t, v in TYPES.items() if v[0] == tname)
                one = pack(g, wt, random_blocks(wt, rows, idim, dev), rows, idim)
            nbytes = one.numel() * one.element_size()
            copies = [one] + [one.clone() for _ in range(max(1, (256 << 20) // nbytes + 1) - 1)]
            for n in (1, 8, 16):
                x = torch.randn(n, idim, device=dev).bfloat16()
                y = torch.randn(n, od, device=dev).bfloat16()
                s = Lib.s
                if wt is None and n > 8:
                    continue  # fg_gemv serves 1..8 rows
                if wt is None:
                    if norm:
                        fn = lambda i: g.lib.fg_gemv_norm(y.data_ptr(), 0, x.data_ptr(), gamma.data_ptr(), 1e-5, None, copies[i].data_ptr(), n, idim, od, epi, s())  # noqa: E731
                    else:
                        fn = lambda i: g.lib.fg_gemv(y.data_ptr(), 0, x.data_ptr(), copies[i].data_ptr(), n, idim, od, epi, s())  # noqa: E731
                    us = cg.time_graph(fn, len(copies))
                    per_v = []
                else:
                    per_v = []
                    for v in range(nv):
                        if norm:
                            fn = lambda i, v=v: g.lib.fg_qgemv_norm_variant(v, y.data_ptr(), 0, x.data_ptr(), gamma.data_ptr(), 1e-5, None, copies[i].data_ptr(), wt, n, idim, od, epi, s())  # noqa: E731
                        else:
                            fn = lambda i, v=v: g.lib.fg_qgemv_variant(v, y.data_ptr(), 0, x.data_ptr(), copies[i].data_ptr(), wt, n, idim, od, epi, s())  # noqa: E731
                        per_v.append(cg.time_graph(fn, len(copies)) if fn(0) == 0 else float("inf"))
                    us = per_v[g.lib.fg_qgemv_pick(wt, n, idim, od, epi, int(norm))]
                gbs = nbytes / (us * 1e-6) / 1e9
                layer[(tname, n)] = layer.get((tname, n), 0.0) + us
                best_layer[(tname, n)] = best_layer.get((tname, n), 0.0) + (min(per_v) if per_v else us)
                vs = "  " + " ".join(f"{vn}={t:.2f}" for vn, t in zip(vnames, per_v)) if per_v else ""
                print(f"{name:<10} {tname:<5} {n:>3} {us:8.2f} {gbs:7.0f} {100 * gbs / ceil:5.1f}%{vs}",
                      flush=True)
            del copies, one
    print("32 layers' four GEMVs per decode step (kernel time only: no attention, no lm_head), "
          "picked variants (best variant per call in brackets):")
    for (tname, n), us in sorted(layer.items()):
        print(f"  {tname:<5} n={n:<3} {32 * us / 1e3:7.3f} ms/step -> {n * 1e6 / (32 * us):8.0f} tokens/s bound"
              f"  [{32 * best_layer[(tname, n)] / 1e3:7.3f}]")
    dq = torch.empty(14336, 4096, dtype=torch.bfloat16, device=dev)
    for wt, (tname, _, _) in TYPES.items():
        raw = random_blocks(wt, 14336, 4096, dev)
        pk = torch.empty(g.lib.fg_qpack_bytes(wt, 14336, 4096), dtype=torch.uint8, device=dev)
        us_p = cg.time_calls(lambda i: g.lib.fg_qpack(pk.data_ptr(), raw.data_ptr(), wt, 14336, 4096, Lib.s()), 1, 5)
        us = cg.time_calls(lambda i: g.lib.fg_qdequant_bf16(dq.data_ptr(), pk.data_ptr(), wt, 14336, 4096, Lib.s()), 1, 20)
        print(f"fg_qdequant_bf16 {tname} 14336x4096: {us:.1f} us "
              f"({(pk.numel() + dq.numel() * 2) / (us * 1e-6) / 1e9:.0f} GB/s read + write); "
              f"fg_qpack {us_p:.1f} us")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", action="store_true")
    ap.add_argument("--bench-only", action="store_true", help="the benchmark without the checks")
    ap.add_argument("--lib", default=os.environ.get("FG_ATTN_LIB", "build/libfgattn.so"))
    ap.add_argument("--stress", type=int, default=0, metavar="R",
                    help="only the race check: each kernel R times back to back")
    a = ap.parse_args()
    why = gpu_skip.why_no_gpu()
    if why:
        return gpu_skip.skip("check_qgemv", why)
    seed = int(os.environ.get("FG_SEED", time.time_ns() % (1 << 31)))
    torch.manual_seed(seed)
    print(f"check_qgemv: seed {seed} on {torch.cuda.get_device_name()}", flush=True)
    g = Lib(a.lib)
    dev = torch.device("cuda")
    rep = Report()
    t0 = time.time()
    if a.bench_only:
        run_bench(g, dev)
        return 0
    if a.stress:
        check_stress(g, rep, dev, a.stress)
        return rep.summary("check_qgemv --stress")
    check_refusals(g, rep, dev)
    check_rows(g, rep, dev)
    check_shapes(g, rep, dev)
    check_norm(g, rep, dev)
    check_variants(g, rep, dev)
    # the i8 variants serve Q8_0 / Q4_0 / Q4_1 / Q4_K at n = 1 (9 > 8 falls back): some calls must run
    # on int8 activations (and, unless FLASHGEN_QGEMV_I8=0, some picked ones)
    rep.add(rep.i8 > 0, "int8-activation calls checked", None, f"{rep.i8}")
    print(f"{rep.i8} of the checks were of calls on int8 activations", flush=True)
    rep.print_worst(40, t0)
    if a.bench:
        run_bench(g, dev)
    return rep.summary("check_qgemv")


if __name__ == "__main__":
    sys.exit(main())
