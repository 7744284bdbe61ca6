"""check_upload.py — GPU test of the CUDA backend's upload_rows (kernels/cuda_ops.cu: weights from
the file mapping through pinned staging, F16 turned to bf16 on the GPU, llama's Q/K rows
un-permuted) against its C twin, the CPU backend's upload_rows (kernels/cpu_ops.c, fp32), through
build*/libflashgen_cuda.so's fg_cuda_backend table and build*/libfgattn.so.

Every case draws fresh random host matrices (seeded from the clock unless FG_SEED is set) of F16,
BF16 and F32 on shapes that are not multiples of anything (rows 37 and 3 × 130, cols 200 and
2049), with and without the un-permute, and large ones (9,000 × 4,096 F16: two staging chunks;
40,000 × 4,096 F16: six chunks, every one of the 4 buffers used twice; the embedding's shape
128,256 × 4,096 once with --big). F16 inputs include ±0, subnormals, ±inf and NaN.

Bound: exact. The twin's fp32 rows rounded to bf16 by torch (round to nearest even, as
__float2bfloat16 and the F32 path's host rounding do) must equal the device's bits, NaN for NaN:
both convert the same values with one correctly rounded step, so any difference is a bug (a
wrong row, a chunk boundary, a staging buffer reused too early). A poisoned tail after each
destination must stay as it was. Exit status 0 when every check passes; without a GPU it says
SKIPPED and exits 77 (tests/gpu/gpu_skip.py).

  python3 tests/gpu/check_upload.py [--lib build/libfgattn.so] [--cuda build/libflashgen_cuda.so]
"""
import argparse
import ctypes as C
import os
import re
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpu_skip  # noqa: E402

F32, F16, BF16 = 0, 1, 30  # ggml type ids (model/gguf_quant.h)
POISON = 0x7E7E  # bf16 bits written after each destination


class QTensor(C.Structure):  # struct fg_qtensor (kernels/ops.h)
    _fields_ = [("type", C.c_uint32), ("rows", C.c_int), ("cols", C.c_int),
                ("row_bytes", C.c_size_t), ("data", C.c_void_p),
                ("layout", C.c_uint32)]  # FG_QLAYOUT_ROWS (0): host rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", default=os.environ.get("FG_ATTN_LIB", "build/libfgattn.so"))
    ap.add_argument("--cuda", default="build/libflashgen_cuda.so")
    ap.add_argument("--big", action="store_true", help="also the 128256 x 4096 embedding shape")
    a = ap.parse_args()
    why = gpu_skip.why_no_gpu()
    if why:
        return gpu_skip.skip("check_upload", why)
    import torch
    import fgattn as fa

    lib = fa.load(a.lib)
    cpu = lib.cpu_ops().contents
    vp, ci = C.c_void_p, C.c_int
    up_t = C.CFUNCTYPE(ci, vp, vp, C.POINTER(QTensor), ci)
    cpu_up = up_t(cpu.upload_rows)
    cpu_ctx = lib.cpu_ops_create(1)

    class Backend(C.Structure):  # struct fg_cuda_backend (kernels/ops.h)
        _fields_ = [("abi", ci), ("ops", C.POINTER(fa.FgOps)),
                    ("create", C.CFUNCTYPE(vp, ci, C.c_char_p, C.c_size_t)),
                    ("destroy", C.CFUNCTYPE(None, vp)), ("mem_info", vp), ("device_name", vp),
                    ("last_error", C.CFUNCTYPE(C.c_char_p, vp))]

    cu = C.CDLL(os.path.abspath(a.cuda))
    cu.fg_cuda_backend.restype = C.POINTER(Backend)
    be = cu.fg_cuda_backend().contents
    # fa.FgOps mirrors the ops table of this checkout's kernels/ops.h (tests/test_ops_table.py)
    want = int(re.search(r"#define FG_CUDA_BACKEND_ABI (\d+)",
                         open(os.path.join(ROOT, "kernels/ops.h")).read()).group(1))
    if be.abi != want:
        raise RuntimeError(f"backend ABI {be.abi}, kernels/ops.h here says {want}: rebuild")
    err = C.create_string_buffer(512)
    ctx = be.create(0, err, 512)
    if not ctx:
        raise RuntimeError(f"cuda create: {err.value.decode()}")
    ops = be.ops.contents
    gpu_up = up_t(ops.upload_rows)
    alloc = C.CFUNCTYPE(vp, vp, C.c_size_t)(ops.alloc)
    release = C.CFUNCTYPE(None, vp, vp)(ops.release)
    upload = C.CFUNCTYPE(ci, vp, vp, vp, C.c_size_t)(ops.upload)
    download = C.CFUNCTYPE(ci, vp, vp, vp, C.c_size_t)(ops.download)

    seed = int(os.environ.get("FG_SEED", time.time_ns() % 2**31))
    print(f"check_upload: seed {seed}", flush=True)
    gen = torch.Generator().manual_seed(seed)

    def source(typ, rows, cols):
        x = torch.randn(rows, cols, generator=gen) * 3
        if typ == F16:
            h = x.to(torch.float16)
            flat = h.view(-1)
            specials = torch.tensor([0.0, -0.0, 6e-8, -3e-6, float("inf"), -float("inf"),
                                     float("nan"), 65504.0], dtype=torch.float16)
            flat[: specials.numel()] = specials
            return h.view(torch.int16).numpy().tobytes()
        if typ == BF16:
            return x.to(torch.bfloat16).view(torch.int16).numpy().tobytes()
        return x.numpy().tobytes()

    def case(typ, rows, cols, perm):
        src = source(typ, rows, cols)
        esz = 4 if typ == F32 else 2
        buf = C.create_string_buffer(src, len(src))
        q = QTensor(typ, rows, cols, cols * esz, C.cast(buf, vp))
        want32 = torch.empty(rows, cols, dtype=torch.float32)
        if cpu_up(cpu_ctx, vp(want32.data_ptr()), C.byref(q), perm):
            raise RuntimeError("cpu upload_rows failed")
        want = want32.to(torch.bfloat16).view(torch.int16)
        n = rows * cols
        d = alloc(ctx, (n + 64) * 2)
        tail = torch.full((64,), POISON, dtype=torch.int16)
        if not d or upload(ctx, vp(d + n * 2), vp(tail.data_ptr()), 128):
            raise RuntimeError(f"alloc/upload: {be.last_error(ctx)}")
        rc = gpu_up(ctx, vp(d), C.byref(q), perm)
        got = torch.empty(n + 64, dtype=torch.int16)
        rc = rc or download(ctx, vp(got.data_ptr()), vp(d), (n + 64) * 2)
        release(ctx, vp(d))
        if rc:
            raise RuntimeError(f"cuda upload_rows: {be.last_error(ctx)}")
        g = got[:n].view(rows, cols)
        nan_w = torch.isnan(want.view(torch.bfloat16).float())
        nan_g = torch.isnan(g.view(torch.bfloat16).float())
        same = bool(torch.equal(nan_w, nan_g)) and bool(torch.equal(g[~nan_w], want[~nan_w]))
        tail_ok = bool((got[n:] == POISON).all())
        bad = int((g != want).sum()) - int((nan_w & nan_g).sum())
        name = {F32: "F32", F16: "F16", BF16: "BF16"}[typ]
        ok = same and tail_ok
        print(f"{'ok  ' if ok else 'FAIL'} upload_rows {name:<4} {rows}x{cols} perm={perm:<3} "
              f"differing={bad} tail={'kept' if tail_ok else 'CHANGED'}", flush=True)
        return ok

    cases = []
    for typ in (F16, BF16, F32):
        cases += [(typ, 37, 200, 0), (typ, 3 * 130, 2049, 3), (typ, 390, 64, 0)]
    cases += [(F16, 9000, 4096, 0), (F16, 40000, 4096, 0), (BF16, 4096, 4096, 32),
              (F16, 1024, 4096, 8), (F32, 9000, 4096, 0)]
    if a.big:
        cases.append((F16, 128256, 4096, 0))
    ok = all([case(*c) for c in cases])
    ok &= gpu_up(ctx, None, None, 0) == 0  # the end of a load: staging released
    be.destroy(ctx)
    lib.cpu_ops_destroy(cpu_ctx)
    print("check_upload:", "all passed" if ok else "FAILED", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
