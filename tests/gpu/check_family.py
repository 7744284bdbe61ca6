"""check_family.py — GPU test of the family switches' kernels (kernels/family.cu: add_rows,
head_norm, norm_add, geglu, scale, softcap) against their C twins, the CPU backend's ops
(kernels/cpu_ops.c) through build*/libfgattn.so.

Every case draws fresh random inputs (seeded from the clock unless FG_SEED is set), on shapes
that are not multiples of the launch tiles (rows of 1, 3 and 37 tokens; dims 64, 200, 640, 2049,
head dims 64, 128, 256 with GQA 4:1 and 8:2), runs the kernel on bf16 device copies and the twin
on the same values upcast to fp32 on the host, and checks that untouched data stays as it was (the
v part of the q|k|v rows for head_norm; the poisoned tail past the n rows for every op).

Bounds: ‖gpu − twin‖ / ‖twin‖ < 4e-3 for the bf16 outputs. Why: inputs are exact in both, the
arithmetic is fp32 in both, and the kernel rounds its result once to bf16 (relative step 2^-8,
rms error ≈ 2^-9/√3 ≈ 1.1e-3); the twin's double-precision sums of squares differ from the
kernel's fp32 ones by < 1e-6. 4e-3 leaves 3-4x headroom and catches any indexing error (O(1)).
softcap works on fp32 logits in both: < 1e-6. The norms' weights are fp32 (kernels/ops.h), drawn
so that none is a bf16 value, and their outputs must also be the correctly rounded bf16 of the
fp64 result but for at most max(8, 2e-3 of them) (FLIP_FRAC: the fp32 scale moves an element one
ulp only next to a rounding midpoint, ~1e-4 of them; weights read as bf16 or rounded to it move
about a quarter). Exit status 0 when every check passes; without a GPU it says SKIPPED and exits
77 (tests/gpu/gpu_skip.py).
"""
import ctypes as C
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fgattn as fa  # noqa: E402
import gpu_skip  # noqa: E402

TOL_BF16 = 4e-3
TOL_F32 = 1e-6
POISON_ROWS = 2  # rows past n that every kernel must leave alone
FLIP_FRAC = 2e-3  # outputs of the norms allowed off the correctly rounded value (docstring)


def rel(a, b):
    a, b = a.double().cpu(), b.double().cpu()
    if torch.isnan(a).any():
        return float("nan")
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def host(t):
    return t.float().cpu().contiguous()


def stream():
    return C.c_void_p(torch.cuda.current_stream().cuda_stream)


def report(ok, name, **errs):
    print(f"{'ok  ' if ok else 'FAIL'} {name:<44} " +
          " ".join(f"{k}={v:.1e}" for k, v in errs.items()), flush=True)
    return ok


def rnd(gen, *shape, std=1.0, mean=0.0):
    return torch.randn(*shape, generator=gen) * std + mean


def norm_weight(gen, n):
    """fp32 norm weights ~ N(1, 0.3²), each moved one fp32 ulp where it is a bf16 value."""
    w = rnd(gen, n, std=0.3, mean=1.0)
    on_bf16 = w.bfloat16().float() == w
    w = torch.where(on_bf16, torch.nextafter(w, torch.full_like(w, 2.0)), w)
    assert not bool((w.bfloat16().float() == w).any())
    return w


def flips(out, exact):
    """(elements of bf16 OUT that are not the correctly rounded EXACT (fp64), allowed)."""
    bad = int((out.cpu() != exact.to(torch.bfloat16)).sum())
    return bad, max(8, int(FLIP_FRAC * out.numel()))


def check_rc(rc, name):
    if rc != 0:
        raise RuntimeError(f"{name}: CUDA error {rc}")


def with_tail(x, rows):
    """x (n, ...) bf16 on the device with POISON_ROWS rows of a fixed pattern after it."""
    tail = torch.full((POISON_ROWS,) + tuple(x.shape[1:]), 7.0)
    return torch.cat([x, tail]).to(torch.bfloat16).cuda()


def tail_ok(d, n):
    return bool((d[n:].float() == 7.0).all())


def case_add_rows(lib, cpu, gen, n, dim):
    x = rnd(gen, n, dim)
    b = rnd(gen, dim, std=0.5)
    xd, bd = with_tail(x, n), b.to(torch.bfloat16).cuda()
    xh, bh = host(xd[:n]), host(bd)
    cpu.add_rows(cpu.ctx, fa.ptr(xh), fa.ptr(bh), n, dim)
    check_rc(lib.family_add_rows(fa.ptr(xd), fa.ptr(bd), n, dim, stream()), "add_rows")
    torch.cuda.synchronize()
    e = rel(xd[:n], xh)
    return report(e < TOL_BF16 and tail_ok(xd, n), f"add_rows n={n} dim={dim}", err=e)


def case_head_norm(lib, cpu, gen, n, nh, nkv, hd):
    row = (nh + 2 * nkv) * hd
    qkv = rnd(gen, n, row, std=3.0)
    qw, kw = norm_weight(gen, hd), norm_weight(gen, hd)
    d, qwd, kwd = with_tail(qkv, n), qw.cuda(), kw.cuda()
    v0 = d[:n, (nh + nkv) * hd:].clone()
    h, qwh, kwh = host(d[:n]), host(qwd), host(kwd)  # named: the twin reads their memory
    xh = h.double().view(n, nh + 2 * nkv, hd)[:, :nh + nkv]  # the normed heads, fp64
    w64 = torch.cat([qw.double().expand(nh, hd), kw.double().expand(nkv, hd)])
    exact = xh * torch.rsqrt((xh * xh).mean(-1, keepdim=True) + 1e-6) * w64
    cpu.head_norm(cpu.ctx, fa.ptr(h), fa.ptr(qwh), fa.ptr(kwh), n, nh, nkv, hd, 1e-6)
    check_rc(lib.family_head_norm(fa.ptr(d), fa.ptr(qwd), fa.ptr(kwd), n, nh, nkv, hd,
                                  C.c_float(1e-6), stream()), "head_norm")
    torch.cuda.synchronize()
    e = rel(d[:n], h)
    v_same = bool(torch.equal(d[:n, (nh + nkv) * hd:], v0))
    bad, allow = flips(d[:n].view(n, nh + 2 * nkv, hd)[:, :nh + nkv], exact)
    return report(e < TOL_BF16 and v_same and tail_ok(d, n) and bad <= allow,
                  f"head_norm n={n} heads={nh}/{nkv} hd={hd} ({bad} not correctly rounded)",
                  err=e)


def case_norm_add(lib, cpu, gen, n, dim):
    x, y = rnd(gen, n, dim), rnd(gen, n, dim, std=5.0)
    w = norm_weight(gen, dim)
    xd, yd, wd = with_tail(x, n), y.to(torch.bfloat16).cuda(), w.cuda()
    xh, yh, wh = host(xd[:n]), host(yd), host(wd)
    y64 = yh.double()
    exact = xh.double() + y64 * torch.rsqrt((y64 * y64).mean(-1, keepdim=True) + 1e-6) * w.double()
    cpu.norm_add(cpu.ctx, fa.ptr(xh), fa.ptr(yh), fa.ptr(wh), n, dim, 1e-6)
    check_rc(lib.family_norm_add(fa.ptr(xd), fa.ptr(yd), fa.ptr(wd), n, dim, C.c_float(1e-6),
                                 stream()), "norm_add")
    torch.cuda.synchronize()
    e = rel(xd[:n], xh)
    bad, allow = flips(xd[:n], exact)
    return report(e < TOL_BF16 and tail_ok(xd, n) and bad <= allow,
                  f"norm_add n={n} dim={dim} ({bad} not correctly rounded)", err=e)


def case_geglu(lib, cpu, gen, n, ffn):
    gu = rnd(gen, n, 2 * ffn, std=2.0).to(torch.bfloat16).cuda()
    out = with_tail(torch.zeros(n, ffn), n)
    out.view(-1)[:n * ffn] = float("nan")
    oh, g = torch.full((n, ffn), float("nan")), host(gu)
    cpu.geglu(cpu.ctx, fa.ptr(oh), fa.ptr(g), n, ffn)
    check_rc(lib.family_geglu(fa.ptr(out), fa.ptr(gu), n, ffn, stream()), "geglu")
    torch.cuda.synchronize()
    # the twin against torch's own gelu(approximate="tanh"), in fp32
    ref = torch.nn.functional.gelu(g[:, :ffn], approximate="tanh") * g[:, ffn:]
    e, e_t = rel(out[:n], oh), rel(oh, ref)
    return report(e < TOL_BF16 and e_t < 1e-5 and tail_ok(out, n), f"geglu n={n} ffn={ffn}",
                  err=e, twin_vs_torch=e_t)


def case_scale(lib, cpu, gen, n, dim):
    s = math.sqrt(dim)
    x = rnd(gen, n, dim)
    xd = with_tail(x, n)
    xh = host(xd[:n])
    cpu.scale(cpu.ctx, fa.ptr(xh), n * dim, C.c_float(s))
    check_rc(lib.family_scale(fa.ptr(xd), C.c_size_t(n * dim), C.c_float(s), stream()), "scale")
    torch.cuda.synchronize()
    e = rel(xd[:n], xh)
    return report(e < TOL_BF16 and tail_ok(xd, n), f"scale n={n} dim={dim} s={s:.3f}", err=e)


def case_softcap(lib, cpu, gen, n, vocab, cap):
    x = rnd(gen, n + POISON_ROWS, vocab, std=3 * cap)
    xd = x.cuda()
    xd[n:] = 7.0
    xh = x[:n].clone()
    cpu.softcap(cpu.ctx, fa.ptr(xh), n * vocab, C.c_float(cap))
    check_rc(lib.family_softcap(fa.ptr(xd), C.c_size_t(n * vocab), C.c_float(cap), stream()),
             "softcap")
    torch.cuda.synchronize()
    e = rel(xd[:n], xh)
    e_t = rel(xh, cap * torch.tanh(x[:n] / cap))
    return report(e < TOL_F32 and e_t < TOL_F32 and bool((xd[n:] == 7.0).all()),
                  f"softcap n={n} vocab={vocab} cap={cap}", err=e, twin_vs_torch=e_t)


def main():
    if not torch.cuda.is_available():
        return gpu_skip.skip("check_family")
    seed = int(os.environ.get("FG_SEED", time.time_ns() % 2**31))
    print(f"check_family: seed {seed} on {torch.cuda.get_device_name()}")
    gen = torch.Generator().manual_seed(seed)
    lib = fa.load()
    vp, ci, cf, cs = C.c_void_p, C.c_int, C.c_float, C.c_size_t
    lib.family_add_rows.argtypes = [vp, vp, ci, ci, vp]
    lib.family_head_norm.argtypes = [vp, vp, vp, ci, ci, ci, ci, cf, vp]
    lib.family_norm_add.argtypes = [vp, vp, vp, ci, ci, cf, vp]
    lib.family_geglu.argtypes = [vp, vp, ci, ci, vp]
    lib.family_scale.argtypes = [vp, cs, cf, vp]
    lib.family_softcap.argtypes = [vp, cs, cf, vp]
    cpu = fa.CpuOps(lib)
    results = []
    for n in (1, 3, 37):
        for dim in (64, 200, 1536, 2049):
            results.append(case_add_rows(lib, cpu, gen, n, dim))
        for nh, nkv, hd in ((4, 1, 256), (8, 2, 128), (9, 3, 64)):
            results.append(case_head_norm(lib, cpu, gen, n, nh, nkv, hd))
        for dim in (64, 200, 640, 2049, 4096):
            results.append(case_norm_add(lib, cpu, gen, n, dim))
        for ffn in (96, 2048, 2049):
            results.append(case_geglu(lib, cpu, gen, n, ffn))
        for dim in (64, 640, 2049):
            results.append(case_scale(lib, cpu, gen, n, dim))
        for vocab, cap in ((282, 5.0), (262144, 30.0)):
            results.append(case_softcap(lib, cpu, gen, n, vocab, cap))
    cpu.close()
    n_ok = sum(results)
    print(f"check_family: {n_ok}/{len(results)} passed (seed {seed})")
    return 0 if n_ok == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
