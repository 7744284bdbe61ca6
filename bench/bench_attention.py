"""bench_attention.py — our CUDA attention kernels against torch SDPA, in one run, on one GPU.

Prefill (GPU.md sweep): bf16, hidden 2048 → hdim 64 × 32 heads or hdim 128 × 16 heads, GQA 4:1
(8 or 4 KV heads), batch × seqlen = 16k, seqlen 512 … 16k, causal and not. FLOPs counted as
4·B·H·S²·D, halved for causal. Ours reads K/V through a page table (page 64, pages in order);
torch gets contiguous (B, H, S, D) tensors with enable_gqa (or K/V expanded per head where a
backend refuses enable_gqa, noted in the row). Backends: FLASH_ATTENTION (FlashAttention-2) and
CUDNN_ATTENTION.

Decode: one query token per sequence, 32 query heads over 8 KV heads, hdim 128, bf16, batch
1 … 64, context 1k … 32k, K/V in scattered pages of 64; GB/s = K+V bytes read once / time,
next to the device-to-device copy ceiling measured in the same run (bytes read + written) and
torch SDPA's two backends on the same shape. Each decode row also times the floor of the method
itself: a read-only pass over the same bytes (Triton; plain and with an L2 evict-first hint) and
a torch copy of them, and one trivial launch, all under the same L2-flushed do_bench.

Times: triton.testing.do_bench (median, L2 flushed between calls). Prints a markdown table
last; FG_BENCH_QUICK=1 runs a reduced sweep.
"""
import ctypes as C
import datetime
import os
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from triton.testing import do_bench

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "gpu"))
import fgattn as fa  # noqa: E402

QUICK = os.environ.get("FG_BENCH_QUICK") == "1"


def bench(fn):
    return do_bench(fn, warmup=25, rep=100, return_mode="median")  # ms


def sdpa_time(backend, q, k, v, causal):
    """Median ms of torch SDPA on one backend, or (None, why)."""
    def run(gqa):
        if gqa:
            return lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
        g = q.shape[1] // k.shape[1]
        ke, ve = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
        return lambda: F.scaled_dot_product_attention(q, ke, ve, is_causal=causal)
    for gqa in (True, False):
        try:
            with sdpa_kernel([backend]):
                fn = run(gqa)
                fn()
                torch.cuda.synchronize()
                return bench(fn), ("" if gqa else "expanded K/V")
        except RuntimeError as e:
            why = str(e).splitlines()[0][:60]
    return None, why


def copy_ceiling():
    n = 1 << 30
    a = torch.empty(n, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    ms = bench(lambda: b.copy_(a))
    return 2 * n / ms / 1e6  # GB/s


# Prefill variants timed beside the selector's choice: the Hopper (wgmma) tilings of
# kernels/attention_hopper.cu (the mma.sync kernels were timed in BENCH.md's run 3).
# FG_PREFILL_VARIANTS (comma-separated names) replaces the list and the selector's choice: the
# first name of each head dim is then "ours".
PREFILL_VARIANTS = {
    64: ["prefill_bf16_hd64_wg128x64p", "prefill_bf16_hd64_wg128x64", "prefill_bf16_hd64_wg192x128",
         "prefill_bf16_hd64_wg192x128p"],
    128: ["prefill_bf16_hd128_wg192x80p", "prefill_bf16_hd128_wg192x64", "prefill_bf16_hd128_wg192x64p"],
}
if os.environ.get("FG_PREFILL_VARIANTS"):
    _names = os.environ["FG_PREFILL_VARIANTS"].split(",")
    PREFILL_VARIANTS = {hd: [n for n in _names if n.split("_hd")[1].split("_")[0] == str(hd)]
                        for hd in (64, 128)}


def prefill_sweep(lib):
    rows = []
    seqlens = [512, 2048, 16384] if QUICK else [512, 1024, 2048, 4096, 8192, 16384]
    for hd in (64, 128):
        h = 2048 // hd
        hkv = h // 4
        for causal in (False, True):
            for s in seqlens:
                bsz = 16384 // s
                pb = fa.PagedBatch([s] * bsz, [s] * bsz, h, hkv, hd, 64, causal, torch.bfloat16,
                                   scatter=False)
                out = torch.empty_like(pb.q)
                lse = torch.empty(pb.n_q_total, h, device="cuda")
                args = pb.args(out, lse, kind=fa.KIND_PREFILL)
                # torch layout (B, H, S, D), contiguous K/V
                q = pb.q.view(bsz, s, h, hd).transpose(1, 2)
                k = torch.stack(pb.k_seq).transpose(1, 2)
                v = torch.stack(pb.v_seq).transpose(1, 2)
                with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
                    ref = F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
                var_ms, err = {}, 0.0
                sel = lib.attn_select(C.byref(args)).decode()
                if os.environ.get("FG_PREFILL_VARIANTS"):
                    sel = PREFILL_VARIANTS[hd][0]
                names = [sel] + [n for n in PREFILL_VARIANTS[hd] if n != sel]
                for name in names:
                    out.fill_(float("nan"))
                    fa.launch(lib, args, name)  # correctness at the benchmark shape, vs FA2
                    e = float((out.view(bsz, s, h, hd).transpose(1, 2).float() - ref.float()).norm()
                              / ref.float().norm())
                    err = max(err, e) if e == e else float("nan")
                    var_ms[name] = bench(lambda: fa.launch(lib, args, name))
                ms_ours = var_ms[sel]
                best = min(var_ms, key=var_ms.get)
                ms_fa2, n_fa2 = sdpa_time(SDPBackend.FLASH_ATTENTION, q, k, v, causal)
                ms_cud, n_cud = sdpa_time(SDPBackend.CUDNN_ATTENTION, q, k, v, causal)
                flops = 4 * bsz * h * s * s * hd / (2 if causal else 1)
                tf = lambda ms: flops / ms / 1e9 if ms else None  # noqa: E731
                rows.append(dict(hd=hd, causal=int(causal), seqlen=s, batch=bsz, ours=tf(ms_ours),
                                 best=tf(var_ms[best]), best_name=best.split("_hd")[1],
                                 variants={n.split("_hd")[1]: round(tf(t)) for n, t in var_ms.items()},
                                 fa2=tf(ms_fa2), cudnn=tf(ms_cud), err=err,
                                 note="; ".join(x for x in (n_fa2, n_cud) if x)))
                r = rows[-1]
                print(f"prefill hd{hd} causal{int(causal)} s{s} b{bsz}: variants {r['variants']} "
                      f"ours {r['ours']:.0f} "
                      f"fa2 {r['fa2'] or 0:.0f} cudnn {r['cudnn'] or 0:.0f} TFLOP/s err {err:.1e} "
                      f"{r['note']}", flush=True)
                del pb, q, k, v, out, ref
    return rows


import triton  # noqa: E402
import triton.language as tl  # noqa: E402


@triton.jit
def _floor_read_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr, EVICT_FIRST: tl.constexpr):
    """Reads n int32 once (one program per BLOCK) and keeps only a per-program sum."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    if EVICT_FIRST:
        v = tl.load(x_ptr + offs, mask=mask, other=0, eviction_policy="evict_first")
    else:
        v = tl.load(x_ptr + offs, mask=mask, other=0)
    tl.store(out_ptr + tl.program_id(0), tl.sum(v, axis=0))


def decode_floors(nbytes):
    """What the timing method itself costs for a call that reads nbytes (METHOD.md's floor), timed
    exactly as the kernels are (do_bench, L2 flushed): a read-only pass over nbytes of random data,
    plain and with an L2 evict-first hint, and a torch copy of nbytes (reads + writes nbytes).
    Microseconds; None where Triton fails (the error goes to stdout)."""
    block = 8192
    x = torch.randint(-2**31, 2**31 - 1, (nbytes // 4,), dtype=torch.int32, device="cuda")
    out = torch.empty(triton.cdiv(x.numel(), block), dtype=torch.int32, device="cuda")
    res = {}
    for ef in (False, True):
        try:
            grid = (out.numel(),)
            _floor_read_kernel[grid](x, out, x.numel(), BLOCK=block, EVICT_FIRST=ef, num_warps=8)
            res["read_ef" if ef else "read"] = 1e3 * bench(
                lambda: _floor_read_kernel[grid](x, out, x.numel(), BLOCK=block, EVICT_FIRST=ef,
                                                 num_warps=8))
        except Exception as e:  # noqa: BLE001 -- a floor is a note, not a result
            print(f"decode floor read (evict_first={ef}) failed: {str(e).splitlines()[0][:80]}")
            res["read_ef" if ef else "read"] = None
    y = torch.empty_like(x)
    res["copy"] = 1e3 * bench(lambda: y.copy_(x))
    del x, y, out
    return res


def decode_sweep(lib, ceiling):
    rows = []
    h, hkv, hd = 32, 8, 128
    batches = [1, 8, 64] if QUICK else [1, 8, 32, 64]
    ctxs = [1024, 16384] if QUICK else [1024, 4096, 16384, 32768]
    gen = torch.Generator().manual_seed(1)  # page order only; values come from the device RNG
    tiny = torch.empty(1, device="cuda")
    empty_us = 1e3 * bench(lambda: tiny.zero_())  # one launch of a trivial kernel
    print(f"decode floor: one trivial launch {empty_us:.1f} us (do_bench, L2 flushed)", flush=True)
    for bsz in batches:
        for ctx in ctxs:
            pb = fa.PagedBatch([1] * bsz, [ctx] * bsz, h, hkv, hd, 64, False, torch.bfloat16,
                               page_gen=gen)
            out = torch.empty_like(pb.q)
            args = pb.args(out)
            ws = fa.workspace_for(lib, args)
            args = pb.args(out, workspace=ws)
            splits = lib.decode_attn_splits(C.byref(args))
            fa.launch(lib, args)
            ms = bench(lambda: fa.launch(lib, args))
            nbytes = bsz * ctx * hkv * hd * 2 * 2
            q = pb.q.view(bsz, 1, h, hd).transpose(1, 2)
            k = torch.stack(pb.k_seq).transpose(1, 2)
            v = torch.stack(pb.v_seq).transpose(1, 2)
            err = float("nan")
            if nbytes <= 1e9:  # fp32 reference on upcast inputs, where memory allows
                ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), enable_gqa=True)
                err = float((out.view(bsz, 1, h, hd).transpose(1, 2).float() - ref).norm()
                            / ref.norm())
                del ref
            ms_fa2, n_fa2 = sdpa_time(SDPBackend.FLASH_ATTENTION, q, k, v, False)
            ms_cud, n_cud = sdpa_time(SDPBackend.CUDNN_ATTENTION, q, k, v, False)
            gb = lambda ms: nbytes / ms / 1e6 if ms else None  # noqa: E731
            alt = {}
            if bsz <= 8:  # how the split heuristic fares against other split counts
                for f in (0.5, 2, 4):
                    n = max(1, int(splits * f))
                    a2 = pb.args(out, n_splits=n)
                    ws2 = fa.workspace_for(lib, a2)
                    a2 = pb.args(out, n_splits=n, workspace=ws2)
                    alt[n] = round(nbytes / bench(lambda: fa.launch(lib, a2)) / 1e6)
            fl = decode_floors(nbytes)
            rows.append(dict(batch=bsz, ctx=ctx, splits=splits, alt=alt, mb=nbytes / 1e6, us=ms * 1e3,
                             ours=gb(ms), pct=gb(ms) / ceiling * 100, fa2=gb(ms_fa2),
                             cudnn=gb(ms_cud), err=err, floor=fl, empty=empty_us,
                             note="; ".join(x for x in (n_fa2, n_cud) if x) +
                             (f"other splits→GB/s {alt}" if alt else "")))
            r = rows[-1]
            print(f"decode b{bsz} ctx{ctx}: ours {r['us']:.1f} us {r['ours']:.0f} GB/s "
                  f"({r['pct']:.0f}% of copy) fa2 {r['fa2'] or 0:.0f} cudnn {r['cudnn'] or 0:.0f} "
                  f"splits {splits} err {err:.1e} floors us {fmt_floor(fl)} {r['note']}", flush=True)
            del pb, q, k, v, out
    return rows


def fmt(x, d=0):
    return "—" if x is None else f"{x:.{d}f}"


def fmt_floor(fl):
    """read / read evict-first / copy floor in µs."""
    return " / ".join(fmt(fl.get(k), 1) for k in ("read", "read_ef", "copy"))


def main():
    if not torch.cuda.is_available():
        print("bench_attention: skipped, no CUDA GPU")
        return 0
    lib = fa.load()
    dev = torch.cuda.get_device_name()
    ceiling = copy_ceiling()
    print(f"device {dev}; copy ceiling {ceiling:.0f} GB/s; torch {torch.__version__}", flush=True)
    only = os.environ.get("FG_BENCH_ONLY", "")  # "prefill" or "decode" for one half
    pre = prefill_sweep(lib) if only != "decode" else []
    dec = decode_sweep(lib, ceiling) if only != "prefill" else []
    print()
    print(f"## {dev}, {datetime.date.today()}, torch {torch.__version__}, "
          f"copy ceiling {ceiling:.0f} GB/s")
    print()
    print("| hdim | causal | seqlen | batch | ours TFLOP/s (selector) | best variant | torch FA2 |"
          " torch cuDNN | ours/FA2 | best/FA2 | best/cuDNN | max rel err vs FA2 | note |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in pre:
        ra = r["ours"] / r["fa2"] if r["fa2"] else None
        rc = r["ours"] / r["cudnn"] if r["cudnn"] else None
        rb = r["best"] / r["fa2"] if r["fa2"] else None
        rc = r["best"] / r["cudnn"] if r["cudnn"] else None
        print(f"| {r['hd']} | {r['causal']} | {r['seqlen']} | {r['batch']} | {fmt(r['ours'])} | "
              f"{fmt(r['best'])} ({r['best_name']}) | {fmt(r['fa2'])} | {fmt(r['cudnn'])} | "
              f"{fmt(ra, 2)} | {fmt(rb, 2)} | {fmt(rc, 2)} | {r['err']:.1e} | {r['note']} |")
    print()
    if dec:
        print(f"Decode floors (same timing): one trivial launch {dec[0]['empty']:.1f} µs; per row "
              "a read-only pass over the same bytes, plain / L2 evict-first, and a copy of them.")
        print()
    print("| batch | context | K+V MB | splits | ours µs | ours GB/s | % of copy | torch FA2 GB/s |"
          " torch cuDNN GB/s | floor µs read / read-ef / copy | rel err | note |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in dec:
        print(f"| {r['batch']} | {r['ctx']} | {r['mb']:.0f} | {r['splits']} | {r['us']:.1f} | "
              f"{fmt(r['ours'])} | {fmt(r['pct'])} | {fmt(r['fa2'])} | {fmt(r['cudnn'])} | "
              f"{fmt_floor(r['floor'])} | {r['err']:.1e} | {r['note']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
