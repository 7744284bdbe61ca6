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
torch SDPA's two backends on the same shape. Decode is timed as the engine runs it: a CUDA graph
of L calls, each on its own layer's K/V (L = 32 like Llama-3-8B's layers, fewer where 32 layers
would not fit in 40 GB), time per call = replay / L; the same for both torch backends (captured
in torch graphs) and for the floor of the method, a read-only Triton pass over the same bytes.
The old single-launch times (do_bench, L2 flushed) are kept as extra columns. After that sweep
(pages of 64) come the serving points, batch 64/128/256 × context 512/1024/2048 in the engine's
pages of 16 (issue 16); FG_DECODE_POINTS="BxC[@page],..." replaces both lists. The heuristic's
own split count is passed as 0 (the launcher's choice: a forced count keeps the split kernel).

Times: triton.testing.do_bench (median, L2 flushed between calls). Prints a markdown table
last; FG_BENCH_QUICK=1 runs a reduced sweep; FG_BENCH_HD=64,128,256 picks the prefill head dims
(default 64,128; hd 256 is Gemma 3's: 8 heads over 2 KV heads at hidden 2048).
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
import gpu_skip  # noqa: E402

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


# Prefill variants timed beside the selector's choice: the Hopper kernels (ws: warp-specialised,
# kernels/attention_hopper_ws.cu; wg: all threads load, kernels/attention_hopper.cu; the mma.sync
# kernels were timed in BENCH.md's run 3). FG_PREFILL_VARIANTS (comma-separated names) replaces
# the list and the selector's choice: the first name of each head dim is then "ours".
PREFILL_VARIANTS = {
    64: ["prefill_bf16_hd64_ws128x128", "prefill_bf16_hd64_ws128x192", "prefill_bf16_hd64_wg128x64p"],
    128: ["prefill_bf16_hd128_ws128x128", "prefill_bf16_hd128_ws128x128n",
          "prefill_bf16_hd128_wg192x80p"],
}
if os.environ.get("FG_PREFILL_VARIANTS"):
    _names = os.environ["FG_PREFILL_VARIANTS"].split(",")
    PREFILL_VARIANTS = {hd: [n for n in _names if n.split("_hd")[1].split("_")[0] == str(hd)]
                        for hd in (64, 128, 256)}
PREFILL_HDS = [int(x) for x in os.environ.get("FG_BENCH_HD", "64,128").split(",")]


def prefill_sweep(lib):
    rows = []
    seqlens = [512, 2048, 16384] if QUICK else [512, 1024, 2048, 4096, 8192, 16384]
    for hd in PREFILL_HDS:
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
                names = [sel] + [n for n in PREFILL_VARIANTS.get(hd, []) if n != sel]
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


# ---- decode ---------------------------------------------------------------------------------
# Shape: Llama-3-8B's attention (32 query heads over 8 KV heads, hdim 128, bf16), pages of 64.
DEC_H, DEC_HKV, DEC_HD, DEC_PAGE = 32, 8, 128, 64
# Calls per graph replay L: like the 32 layers of Llama-3-8B, each on its own K/V, with the
# layers' bytes together between 400 MB and 40 GB (what the 80 GB card holds beside the rest):
# L = min(32, 40 GB / bytes), at least 2. Only batch 1 at 1k falls under 400 MB (32 × 4 MB).
DEC_L_MAX, DEC_BYTES_MAX = 32, 40e9
DEC_FLOOR_BLOCK = 8192  # int32 per program of the read-only floor pass
# The serving shapes (issue 16): the engine's batches at short contexts, in its pages of 16
# tokens (config page_size); the sweep above keeps pages of 64 as in the H100 runs.
DEC_SERVING_BATCHES, DEC_SERVING_CTXS, DEC_SERVING_PAGE = (64, 128, 256), (512, 1024, 2048), 16
# Points checked against fp32 SDPA (the gathered fp32 K/V of one layer: 4× its bytes beside the
# L layers; 1 GB kept the 80 GB H100 clear, the H200 holds the 2.1 GB of batch 256 at 2048).
DEC_CHECK_BYTES_MAX = 2.2e9 if torch.cuda.is_available() and \
    torch.cuda.get_device_properties(0).total_memory > 100e9 else 1e9


def decode_point(text):
    """'BxC' or 'BxC@page' (FG_DECODE_POINTS) as (batch, context, page)."""
    bc, _, page = text.partition("@")
    b, c = bc.split("x")
    return int(b), int(c), int(page) if page else DEC_PAGE


class DecodeLayer:
    """One layer's decode inputs: batch sequences of ctx cached tokens in randomly scattered pages
    of one pool, one new query token each. K and V are the two halves of one buffer kv
    (2, n_pages, page, Hkv, D), so the floor pass reads both in one launch. Random values from the
    device RNG (never zeros); q (B, H, D), out (B, H, D)."""

    def __init__(self, bsz, ctx, gen, q_start, kv_len, q_start_h, kv_len_h, page=DEC_PAGE):
        n_pages = bsz * ctx // page
        self.bsz, self.ctx, self.page = bsz, ctx, page
        self.kv = torch.randn(2, n_pages, page, DEC_HKV, DEC_HD, dtype=torch.bfloat16,
                              device="cuda")
        self.bt_h = torch.randperm(n_pages, generator=gen).to(torch.int32).view(bsz, -1)
        self.bt = self.bt_h.cuda()
        self.q = torch.randn(bsz, DEC_H, DEC_HD, dtype=torch.bfloat16, device="cuda")
        self.out = torch.full_like(self.q, float("nan"))
        self.q_start, self.kv_len, self.q_start_h, self.kv_len_h = q_start, kv_len, q_start_h, kv_len_h
        self.floor_out = torch.empty(triton.cdiv(self.kv.numel() // 2, DEC_FLOOR_BLOCK),
                                     dtype=torch.int32, device="cuda")

    def args(self, ws, n_splits=0):
        """attn_args for our decode on the current stream (read at call time: graph capture runs
        on a side stream)."""
        p = fa.ptr
        b = fa.AttnBatch(self.bsz, p(self.q_start), p(self.kv_len), p(self.bt), self.bt.shape[1],
                         self.page, DEC_H, DEC_HKV, DEC_HD, 1.0 / DEC_HD ** 0.5, 0, 1, self.ctx,
                         p(self.q_start_h), p(self.kv_len_h))
        return fa.AttnArgs(fa.ATTN_DTYPE[torch.bfloat16], p(self.out), p(self.q), p(self.kv[0]),
                           p(self.kv[1]), None, b, p(ws), ws.numel() * ws.element_size(),
                           C.c_void_p(torch.cuda.current_stream().cuda_stream), fa.KIND_AUTO,
                           n_splits)

    def torch_qkv(self):
        """q (B, H, 1, D) and K, V (B, Hkv, ctx, D) for torch SDPA: views of the same pools in page
        order (torch takes no page table; same bytes, and the (B, S, H, D) memory layout that the
        FA2 and cuDNN backends read natively)."""
        q = self.q.view(self.bsz, 1, DEC_H, DEC_HD).transpose(1, 2)
        k, v = (self.kv[i].view(self.bsz, self.ctx, DEC_HKV, DEC_HD).transpose(1, 2) for i in (0, 1))
        return q, k, v

    def gathered(self, i):
        """K (i = 0) or V (i = 1) of every sequence through the page table, (B, Hkv, ctx, D)."""
        return self.kv[i][self.bt.long()].view(self.bsz, self.ctx, DEC_HKV, DEC_HD).transpose(1, 2)

    def floor(self, ef=False):
        """Read-only pass over this layer's K and V (METHOD.md's floor of the bytes)."""
        x = self.kv.view(torch.int32).view(-1)
        _floor_read_kernel[(self.floor_out.numel(),)](x, self.floor_out, x.numel(),
                                                      BLOCK=DEC_FLOOR_BLOCK, EVICT_FIRST=ef,
                                                      num_warps=8)


class GraphTimer:
    """Times a list of calls (one per layer) as one CUDA graph replay: µs per call = median replay
    time / L over the replays, events around each replay. Before each replay a read-only pass over
    a 256 MB scratch buffer leaves the L2 holding clean lines of nothing the calls read (unlike
    do_bench's zero_() it leaves no dirty lines to write back inside the timed region) and keeps
    the GPU busy while the host submits the replay, so no launch gap is timed."""

    def __init__(self):
        self.scratch = torch.randint(0, 1 << 20, (64 << 20,), dtype=torch.int32, device="cuda")

    def time(self, calls, target_s=0.3):
        """µs per call, or raises what capture raised."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up off the capture (workspaces, autotuning)
            for f in calls:
                f()
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, capture_error_mode="relaxed"):
            for f in calls:
                f()
        g.replay()
        torch.cuda.synchronize()
        ev = [torch.cuda.Event(enable_timing=True) for _ in range(2)]
        self.scratch.sum()
        ev[0].record()
        g.replay()
        ev[1].record()
        torch.cuda.synchronize()
        n_rep = max(5, min(40, int(target_s * 1e3 / max(ev[0].elapsed_time(ev[1]), 1e-3))))
        evs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
               for _ in range(n_rep)]
        for a, b in evs:
            self.scratch.sum()
            a.record()
            g.replay()
            b.record()
        torch.cuda.synchronize()
        ts = sorted(a.elapsed_time(b) for a, b in evs)
        del g
        return 1e3 * ts[len(ts) // 2] / len(calls)


def decode_split_candidates(bsz, ctx, chosen):
    """Split counts timed beside the heuristic's choice: the usual divisors and the counts that
    fill one wave of 2 blocks per SM, up to 4 waves and parts of ≥ 128 keys."""
    base = bsz * DEC_HKV
    wave = 2 * torch.cuda.get_device_properties(0).multi_processor_count
    cands = {1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, wave // base, 2 * wave // base, chosen}
    return sorted(n for n in cands
                  if n == chosen or (1 <= n <= max(1, ctx // 128) and base * n <= 4 * wave))


def decode_sweep(lib, ceiling):
    """Every decode point timed two ways: a CUDA graph of L calls on L layers' K/V (the columns
    that count: the engine runs decode attention once per layer inside a graph) and the old single
    launch under do_bench (L2 flushed; kept for comparison with runs ≤ 6). FG_ATTN_LIB_B=path adds
    a second build of the kernels (e.g. the previous commit) timed the same way;
    FG_DECODE_SWEEP=0 skips the other split counts."""
    rows = []
    batches = [1, 8, 64] if QUICK else [1, 8, 32, 64]
    ctxs = [1024, 16384] if QUICK else [1024, 4096, 16384, 32768]
    points = [(b, c, DEC_PAGE) for b in batches for c in ctxs]
    points += [(b, c, DEC_SERVING_PAGE) for b in DEC_SERVING_BATCHES for c in DEC_SERVING_CTXS]
    if os.environ.get("FG_DECODE_POINTS"):
        points = [decode_point(x) for x in os.environ["FG_DECODE_POINTS"].split(",")]
    lib_b = fa.load(os.environ["FG_ATTN_LIB_B"]) if os.environ.get("FG_ATTN_LIB_B") else None
    sweep = os.environ.get("FG_DECODE_SWEEP", "1") != "0"
    gen = torch.Generator().manual_seed(1)  # page order only; values come from the device RNG
    gt = GraphTimer()
    tiny = torch.empty(1, device="cuda")
    empty_graph = gt.time([lambda: tiny.zero_()] * DEC_L_MAX)
    empty_single = 1e3 * bench(lambda: tiny.zero_())
    print(f"decode floor: one trivial launch {empty_graph:.2f} us per call in a graph of "
          f"{DEC_L_MAX}, {empty_single:.1f} us single (do_bench, L2 flushed)", flush=True)
    for bsz, ctx, page in points:
        nbytes = bsz * ctx * DEC_HKV * DEC_HD * 2 * 2
        L = max(2, min(DEC_L_MAX, int(DEC_BYTES_MAX // nbytes)))
        q_start_h = torch.arange(bsz + 1, dtype=torch.int32)
        kv_len_h = torch.full((bsz,), ctx, dtype=torch.int32)
        q_start, kv_len = q_start_h.cuda(), kv_len_h.cuda()
        layers = [DecodeLayer(bsz, ctx, gen, q_start, kv_len, q_start_h, kv_len_h, page)
                  for _ in range(L)]
        l0 = layers[0]
        dummy = torch.zeros(4, device="cuda")
        splits = lib.decode_attn_splits(C.byref(l0.args(dummy)))
        cands = decode_split_candidates(bsz, ctx, splits) if sweep else [splits]
        # sized for both builds: one may need a workspace where the other needs none
        n_all = set(cands) | ({lib_b.decode_attn_splits(C.byref(l0.args(dummy)))}
                              if lib_b else set())
        ws_bytes = max(x.attn_workspace_bytes(C.byref(l0.args(dummy, n)))
                       for n in n_all | {0} for x in (lib, lib_b) if x is not None)
        ws = torch.zeros(ws_bytes // 4 + 1, dtype=torch.float32, device="cuda")
        gb = lambda us: nbytes / us / 1e3 if us else None  # noqa: E731

        # ours: correctness at the benchmark shape (layer 0, fp32 SDPA on the gathered K/V),
        # then the graph and single-launch times
        fa.launch(lib, l0.args(ws))
        torch.cuda.synchronize()
        err = float("nan")
        if nbytes <= DEC_CHECK_BYTES_MAX:
            q, _, _ = l0.torch_qkv()
            ref = F.scaled_dot_product_attention(q.float(), l0.gathered(0).float(),
                                                 l0.gathered(1).float(), enable_gqa=True)
            err = float((l0.out.view(bsz, 1, DEC_H, DEC_HD).transpose(1, 2).float() - ref)
                        .norm() / ref.norm())
            del ref
        alt = {}
        for n in cands:
            # the heuristic's own count goes in as 0: the launcher's choice (a forced count keeps
            # the split kernel, decode_attention.h)
            f = 0 if n == splits else n
            alt[n] = gt.time([lambda x=x, f=f: fa.launch(lib, x.args(ws, f)) for x in layers])
        us = alt[splits]
        ws_left = int((ws != 0).sum())  # the kernel's contract, after every replay
        alt_b, splits_b = {}, None
        if lib_b is not None:
            ws_b = torch.zeros_like(ws)
            # lib B at lib A's split counts and at its own heuristic's (its "before")
            splits_b = lib_b.decode_attn_splits(C.byref(l0.args(dummy)))
            for n in sorted(set(cands if sweep else [splits]) | {splits_b}):
                f = 0 if n == splits_b else n
                alt_b[n] = gt.time([lambda x=x, f=f: fa.launch(lib_b, x.args(ws_b, f))
                                    for x in layers])
        args0 = l0.args(ws)  # built once: do_bench times the launch, not the ctypes setup
        single = {"ours": 1e3 * bench(lambda: fa.launch(lib, args0))}

        # peers: torch SDPA on each layer's pools, graph-captured where the backend allows
        peer, notes = {}, []
        for key, backend in (("fa2", SDPBackend.FLASH_ATTENTION),
                             ("cudnn", SDPBackend.CUDNN_ATTENTION)):
            qkv = [x.torch_qkv() for x in layers]
            with sdpa_kernel([backend]):
                fns = [lambda t=t: F.scaled_dot_product_attention(*t, enable_gqa=True)
                       for t in qkv]
                try:
                    peer[key] = gt.time(fns)
                except Exception as e:  # noqa: BLE001 -- a refusal is a note, not a result
                    torch.cuda.synchronize()
                    why = str(e).splitlines()[0][:60]
                    peer[key] = None
                    notes.append(f"{key}: no graph ({why}), single launch only")
            ms, why = sdpa_time(backend, *qkv[0], False)
            single[key] = ms * 1e3 if ms else None
            if why:
                notes.append(f"{key} single: {why}")
            del qkv
        floor = {}
        for ef in (False, True):
            try:
                floor["read_ef" if ef else "read"] = gt.time(
                    [lambda x=x, ef=ef: x.floor(ef) for x in layers])
            except Exception as e:  # noqa: BLE001
                print(f"decode floor (evict_first={ef}) failed: {str(e).splitlines()[0][:80]}")
        single["floor"] = 1e3 * bench(lambda: l0.floor(False))

        if ws_left:
            notes.append(f"WORKSPACE NOT ZEROED ({ws_left} words)")
        rows.append(dict(batch=bsz, ctx=ctx, page=page, L=L, splits=splits, splits_b=splits_b,
                         mb=nbytes / 1e6, us=us, ours=gb(us), pct=gb(us) / ceiling * 100,
                         fa2=gb(peer["fa2"]), cudnn=gb(peer["cudnn"]),
                         floor=gb(floor.get("read")), floor_ef=gb(floor.get("read_ef")),
                         single={k: gb(v) for k, v in single.items()},
                         alt={n: round(gb(t)) for n, t in alt.items()},
                         alt_b={n: round(gb(t)) for n, t in alt_b.items()},
                         err=err, empty=empty_graph, note="; ".join(notes)))
        r = rows[-1]
        print(f"decode b{bsz} ctx{ctx} p{page} L{L}: ours {us:.2f} us {r['ours']:.0f} GB/s "
              f"({r['pct']:.0f}% of copy) fa2 {fmt(r['fa2'])} cudnn {fmt(r['cudnn'])} "
              f"floor read {fmt(r['floor'])} / ef {fmt(r['floor_ef'])} GB/s; splits {splits} "
              f"err {err:.1e}; graph-timed splits→GB/s {r['alt']}"
              + (f"; lib B {r['alt_b']}" if alt_b else "")
              + f"; single-launch GB/s {fmt_single(r['single'])} {r['note']}", flush=True)
        del layers, l0, ws
        torch.cuda.empty_cache()
    return rows


def fmt(x, d=0):
    return "—" if x is None else f"{x:.{d}f}"


def fmt_single(s):
    """ours / FA2 / cuDNN / read floor, GB/s under single-launch do_bench."""
    return " / ".join(fmt(s.get(k)) for k in ("ours", "fa2", "cudnn", "floor"))


def main():
    if not torch.cuda.is_available():
        return gpu_skip.skip("bench_attention")
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
        print(f"Decode, graph-replay timing: µs per call = replay of L calls (each on its own K/V) / L; "
              f"an empty launch costs {dec[0]['empty']:.2f} µs per call this way. Floor: a read-only "
              "pass over the same bytes, plain / L2 evict-first, timed the same way. Single launch: "
              "do_bench, L2 flushed (the method of runs ≤ 6).")
        print()
    print("| batch | context | page | K+V MB | L | splits | ours µs | ours GB/s | % of copy | torch FA2 GB/s |"
          " torch cuDNN GB/s | floor GB/s read / read-ef | ours / floor | single launch GB/s ours /"
          " FA2 / cuDNN / floor | rel err | note |"
          + (" lib B GB/s (its splits) | ours / lib B |" if dec and dec[0]["alt_b"] else ""))
    print("| --- " * (18 if dec and dec[0]["alt_b"] else 16) + "|")
    for r in dec:
        fl = max(x for x in (r["floor"], r["floor_ef"], 1e-9) if x)
        lib_b = ""
        if r["alt_b"]:
            b_own = r["alt_b"].get(r["splits_b"])
            lib_b = (f" {fmt(b_own)} ({r['splits_b']}) | "
                     f"{fmt(r['ours'] / b_own if b_own else None, 2)} |")
        print(f"| {r['batch']} | {r['ctx']} | {r['page']} | {r['mb']:.0f} | {r['L']} | {r['splits']} | "
              f"{r['us']:.1f} | {fmt(r['ours'])} | {fmt(r['pct'])} | {fmt(r['fa2'])} | "
              f"{fmt(r['cudnn'])} | {fmt(r['floor'])} / {fmt(r['floor_ef'])} | "
              f"{r['ours'] / fl:.2f} | {fmt_single(r['single'])} | {r['err']:.1e} | {r['note']} |"
              + lib_b)
    return 0


if __name__ == "__main__":
    sys.exit(main())
