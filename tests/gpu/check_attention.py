"""check_attention.py — GPU test of the CUDA attention kernels (kernels/attention.cu,
kernels/decode_attention.cu, kernels/kv_write.cu) against their C twins and torch SDPA.

Every case draws fresh random inputs (seeded per run from the clock unless FG_SEED is set), puts
K/V in randomly scattered pages (spare pages and the unused tail of each last page hold NaN, so a
wrong index or a read past kv_len shows), poisons the output with NaN, and checks:
  - prefill / decode output against cpu_ops()->attention (the fp32 C twin, on the same bf16/fp16
    inputs upcast) and against torch SDPA (fp32 math on the same upcast inputs; plus the native
    dtype SDPA as the peer a user would compare with);
  - prefill LSE against attn_ref_lse (C, fp64 accumulation);
  - decode against attn_ref_decode_split, the C twin of its split + LSE merge, same split count;
    also decode calls of different shapes in a row on one workspace;
  - kv_write (with and without fused RoPE) against cpu_ops rope + kv_write;
  - qkv_store (RoPE + page write from the fused q|k|v rows, the decode layer's call) against the
    same twin on the q, k and v slices, q_out poisoned with NaN.
Shapes: query/key lengths that are not multiples of the tiles (64/128 keys, 128 packed rows,
16-key decode tiles), batch 1 and many, GQA ratios 1, 3, 4, 8, causal and not, head dims 64/128,
page sizes 16 and 7.

Bounds: ‖out − ref‖ / ‖ref‖ < 1e-2 (bf16) and < 5e-3 (fp16). Why: the output is rounded once to
the storage type (bf16 relative step 2^-8, rms rounding error ≈ 2^-9/√3 ≈ 1.1e-3; fp16 8x
smaller), and P is rounded to the same type before the P·V product (another ≈1e-3 per weight,
averaged over the keys); fp32 accumulation adds < 1e-5. 1e-2 leaves ~4x headroom for bf16 and
catches any indexing or masking error (those give O(1) errors). LSE: absolute error < 1e-3 (fp32
scores of exactly representable inputs; the only error is fp32 summation and ex2.approx).
Exit status 0 when every check passes; prints one line per case. Without a GPU it says SKIPPED
and exits 77 (tests/gpu/gpu_skip.py).
"""
import ctypes as C
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fgattn as fa  # noqa: E402
import gpu_skip  # noqa: E402

TOL = {torch.bfloat16: 1e-2, torch.float16: 5e-3}
LSE_TOL = 1e-3


def rel(a, b):
    a, b = a.double().cpu(), b.double().cpu()
    if torch.isnan(a).any():
        return float("nan")
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def sdpa_ref(pb, fp32=True, window=0):
    """torch SDPA per sequence on contiguous K/V (bottom-right causal mask; with WINDOW > 0 a
    query also sees only the last WINDOW of the keys it would see)."""
    outs = []
    g = pb.n_heads // pb.n_kv_heads
    for s, (nq, kl) in enumerate(zip(pb.q_lens, pb.kv_lens)):
        q0 = int(pb.q_start_h[s])
        q = pb.q[q0:q0 + nq].transpose(0, 1)  # (H, nq, D)
        k = pb.k_seq[s].transpose(0, 1).repeat_interleave(g, dim=0)
        v = pb.v_seq[s].transpose(0, 1).repeat_interleave(g, dim=0)
        if fp32:
            q, k, v = q.float(), k.float(), v.float()
        mask = None
        i = torch.arange(nq, device=q.device)[:, None]
        j = torch.arange(kl, device=q.device)[None, :]
        if pb.causal:
            mask = j <= (kl - nq + i)
        if window > 0:
            lim = (kl - nq + i + 1) if pb.causal else torch.full_like(i, kl)
            low = j >= lim - window
            mask = low if mask is None else (mask & low)
        o = torch.nn.functional.scaled_dot_product_attention(q[None], k[None], v[None],
                                                             attn_mask=mask, scale=pb.scale)
        outs.append(o[0].transpose(0, 1))
    return torch.cat(outs, 0)


def host_f32(t):
    return t.float().cpu().contiguous()


def c_twin(cpu, pb, window=0):
    q, kp, vp = host_f32(pb.q), host_f32(pb.k_pool), host_f32(pb.v_pool)
    out = torch.full_like(q, float("nan"))
    b = pb.batch(host=True)
    if window > 0:
        cpu.attention_window(cpu.ctx, fa.ptr(out), fa.ptr(q), fa.ptr(kp), fa.ptr(vp), C.byref(b),
                             window)
    else:
        cpu.attention(cpu.ctx, fa.ptr(out), fa.ptr(q), fa.ptr(kp), fa.ptr(vp), C.byref(b))
    return out, (q, kp, vp, b)


def run_case(lib, cpu, name, pb, kind, n_splits=0, want_kind=None, variant_name=None, ws=None,
             window=0):
    """One launch against its twins. ws: the workspace to use (default: one sized for this shape
    and split count). window > 0: a sliding window, against cpu_ops()->attention_window and a
    windowed SDPA mask (the LSE and split twins know no window: not compared then)."""
    out = torch.full_like(pb.q, float("nan"))
    lse = torch.full((pb.n_q_total, pb.n_heads), float("nan"), device="cuda")
    args = pb.args(out, lse, kind=kind, n_splits=n_splits, window=window)
    variant = lib.attn_select(C.byref(args))
    if variant is None:
        raise RuntimeError(f"{name}: unsupported")
    variant = variant_name or variant.decode()
    if ws is None:
        ws = fa.workspace_for(lib, args)  # sized for n_splits when forced
    args = pb.args(out, lse, kind=kind, n_splits=n_splits, workspace=ws, window=window)
    fa.launch(lib, args, variant_name)
    torch.cuda.synchronize()
    ref_c, (qh, kph, vph, bh) = c_twin(cpu, pb, window)
    e_c = rel(out, ref_c)
    e_t = rel(out, sdpa_ref(pb, fp32=True, window=window))
    e_peer = rel(sdpa_ref(pb, fp32=False, window=window), ref_c)
    tol = TOL[pb.dtype]
    ok = e_c < tol and e_t < tol
    extra = f" window={window}" if window else ""
    if window:
        # the window must matter: the same launch without it differs by O(1)
        full = rel(sdpa_ref(pb, fp32=True), ref_c)
        ok = ok and full > 10 * tol
        extra += f" (unwindowed_vs_c={full:.1e})"
    elif variant.startswith("prefill"):
        lse_ref = torch.empty(pb.n_q_total, pb.n_heads)
        lib.attn_ref_lse(fa.ptr(lse_ref), fa.ptr(qh), fa.ptr(kph), C.byref(bh))
        e_l = float((lse.cpu() - lse_ref).abs().max())
        ok = ok and e_l < LSE_TOL
        extra = f" lse_abs={e_l:.1e}"
    else:
        used = n_splits if n_splits > 0 else lib.decode_attn_splits(C.byref(args))
        twin = torch.full_like(qh, float("nan"))
        lib.attn_ref_decode_split(fa.ptr(twin), fa.ptr(qh), fa.ptr(kph), fa.ptr(vph), C.byref(bh),
                                  used)
        e_s = rel(out, twin)
        ok = ok and e_s < tol
        extra = f" splits={used} vs_split_twin={e_s:.1e}"
    if want_kind and not variant.startswith(want_kind):
        ok = False
        extra += f" (wanted {want_kind})"
    print(f"{'ok  ' if ok else 'FAIL'} {name:<46} {variant:<20} vs_c={e_c:.1e} vs_sdpa32={e_t:.1e}"
          f" (sdpa_native_vs_c={e_peer:.1e}){extra}", flush=True)
    return ok


def check_kv_write(lib, cpu, gen, dtype, n, n_heads, n_kv, hd, page_size, rope):
    n_pages = -(-n // page_size) + 5
    kp = torch.randn(n_pages, page_size, n_kv, hd, generator=gen).to(dtype).cuda()
    vp = torch.randn(n_pages, page_size, n_kv, hd, generator=gen).to(dtype).cuda()
    k = torch.randn(n, n_kv, hd, generator=gen).to(dtype).cuda()
    v = torch.randn(n, n_kv, hd, generator=gen).to(dtype).cuda()
    q = torch.randn(n, n_heads, hd, generator=gen).to(dtype).cuda()
    slots = torch.randperm(n_pages * page_size, generator=gen)[:n].to(torch.int32)
    pos = torch.randint(0, 32768, (n,), generator=gen, dtype=torch.int32)
    freqs = (10000.0 ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)).float()
    # C twin first, on host fp32 copies
    kh, vh, qh = host_f32(k), host_f32(v), host_f32(q)
    kph, vph = host_f32(kp), host_f32(vp)
    if rope:
        cpu.rope(cpu.ctx, fa.ptr(qh), fa.ptr(kh), fa.ptr(pos), n, n_heads, n_kv, hd, fa.ptr(freqs))
    cpu.kv_write(cpu.ctx, fa.ptr(kph), fa.ptr(vph), fa.ptr(kh), fa.ptr(vh), fa.ptr(slots), n, n_kv * hd)
    slots_d, pos_d, freqs_d = slots.cuda(), pos.cuda(), freqs.cuda()
    a = fa.KvWriteArgs(fa.ATTN_DTYPE[dtype], fa.ptr(kp), fa.ptr(vp), fa.ptr(k), fa.ptr(v),
                       fa.ptr(slots_d), n, n_kv, hd, fa.ptr(pos_d) if rope else None,
                       fa.ptr(freqs_d) if rope else None, fa.ptr(q) if rope else None, n_heads,
                       C.c_void_p(torch.cuda.current_stream().cuda_stream))
    err = C.create_string_buffer(256)
    if lib.kv_write_launch(C.byref(a), err, 256) != 0:
        raise RuntimeError(err.value.decode())
    torch.cuda.synchronize()
    e_k, e_v = rel(kp, kph), rel(vp, vph)
    e_q = rel(q, qh) if rope else 0.0
    # without RoPE the copy is exact; with it, one rounding of fp32 results to the storage type
    tol = TOL[dtype] if rope else 0.0
    ok = e_k <= tol and e_v == 0.0 and e_q <= tol
    print(f"{'ok  ' if ok else 'FAIL'} kv_write {str(dtype)[6:]:<8} n={n} page={page_size} rope={rope:<2}"
          f" k={e_k:.1e} v={e_v:.1e} q={e_q:.1e}", flush=True)
    return ok


class QkvStoreArgs(C.Structure):
    """struct qkv_store_args of kernels/kv_write.h."""
    _fields_ = [("dtype", C.c_int), ("q_out", C.c_void_p), ("k_pool", C.c_void_p),
                ("v_pool", C.c_void_p), ("qkv", C.c_void_p), ("pos", C.c_void_p),
                ("slots", C.c_void_p), ("freqs", C.c_void_p), ("n", C.c_int), ("n_heads", C.c_int),
                ("n_kv_heads", C.c_int), ("head_dim", C.c_int), ("stream", C.c_void_p)]


def check_qkv_store(lib, cpu, gen, dtype, n, n_heads, n_kv, hd, page_size):
    """qkv_store_launch (the decode layer's RoPE + page write from the fused projection) against
    the C twin's rope + kv_write on the q, k and v slices; q_out poisoned with NaN, the qkv rows
    must come back unchanged, untouched pool rows stay as they were."""
    n_pages = -(-n // page_size) + 5
    kp = torch.randn(n_pages, page_size, n_kv, hd, generator=gen).to(dtype).cuda()
    vp = torch.randn(n_pages, page_size, n_kv, hd, generator=gen).to(dtype).cuda()
    qkv = torch.randn(n, (n_heads + 2 * n_kv) * hd, generator=gen).to(dtype).cuda()
    qkv0 = qkv.clone()
    q_out = torch.full((n, n_heads, hd), float("nan"), dtype=dtype, device="cuda")
    slots = torch.randperm(n_pages * page_size, generator=gen)[:n].to(torch.int32)
    pos = torch.randint(0, 32768, (n,), generator=gen, dtype=torch.int32)
    freqs = (500000.0 ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)).float()
    qd, kvd = n_heads * hd, n_kv * hd
    qh = host_f32(qkv[:, :qd].reshape(n, n_heads, hd))
    kh = host_f32(qkv[:, qd:qd + kvd].reshape(n, n_kv, hd))
    vh = host_f32(qkv[:, qd + kvd:].reshape(n, n_kv, hd))
    kph, vph = host_f32(kp), host_f32(vp)
    cpu.rope(cpu.ctx, fa.ptr(qh), fa.ptr(kh), fa.ptr(pos), n, n_heads, n_kv, hd, fa.ptr(freqs))
    cpu.kv_write(cpu.ctx, fa.ptr(kph), fa.ptr(vph), fa.ptr(kh), fa.ptr(vh), fa.ptr(slots), n, kvd)
    slots_d, pos_d, freqs_d = slots.cuda(), pos.cuda(), freqs.cuda()
    a = QkvStoreArgs(fa.ATTN_DTYPE[dtype], fa.ptr(q_out), fa.ptr(kp), fa.ptr(vp), fa.ptr(qkv),
                     fa.ptr(pos_d), fa.ptr(slots_d), fa.ptr(freqs_d), n, n_heads, n_kv, hd,
                     C.c_void_p(torch.cuda.current_stream().cuda_stream))
    err = C.create_string_buffer(256)
    lib.qkv_store_launch.argtypes = [C.POINTER(QkvStoreArgs), C.c_char_p, C.c_size_t]
    if lib.qkv_store_launch(C.byref(a), err, 256) != 0:
        raise RuntimeError(err.value.decode())
    torch.cuda.synchronize()
    e_k, e_v, e_q = rel(kp, kph), rel(vp, vph), rel(q_out, qh)
    ok = (e_k <= TOL[dtype] and e_v == 0.0 and e_q <= TOL[dtype] and bool(torch.equal(qkv, qkv0))
          and not bool(torch.isnan(q_out.float()).any()))
    print(f"{'ok  ' if ok else 'FAIL'} qkv_store {str(dtype)[6:]:<8} n={n} heads={n_heads}/{n_kv} "
          f"hd={hd} page={page_size} k={e_k:.1e} v={e_v:.1e} q={e_q:.1e}", flush=True)
    return ok


def decode_serving_cases(lib, cpu, gen, n_kv):
    """Decode at serving batches: 500 sequences × n_kv KV heads = 1000 (sequence, KV head) items
    take the persistent warp kernel at the launcher's own split count (decode_attention.cu,
    decode_warp_parts; on a 132-SM H100/H200: 1 part at hd 128, whose 1056 warps the items fill,
    2 parts through the merge kernel at hd 64, 2112 warps); a forced split count takes the split
    kernel. Varlen contexts (some shorter than a tile), two new tokens causal, sliding windows,
    pages of 16 and 7, bf16 and fp16."""
    results = []
    for hd, g, nq, splits, window, page, dt in (
            (128, 4, 1, 0, 0, 16, torch.bfloat16), (128, 4, 1, 3, 0, 7, torch.bfloat16),
            (64, 8, 2, 0, 0, 16, torch.bfloat16), (128, 3, 2, 0, 0, 16, torch.float16),
            (64, 4, 1, 0, 37, 7, torch.bfloat16), (128, 4, 1, 0, 100, 16, torch.bfloat16),
            (128, 1, 1, 0, 0, 16, torch.float16)):
        bs = 500
        kl = [int(x) for x in torch.randint(nq, 700, (bs,), generator=gen)]
        kl[0], kl[1] = nq, 2999
        pb = fa.PagedBatch([nq] * bs, kl, n_kv * g, n_kv, hd, page, int(nq > 1), dt, gen=gen)
        results.append(run_case(lib, cpu, f"decode serving hd{hd} G{g} nq{nq} split{splits} "
                                f"w{window} p{page} {str(dt)[6:]}", pb, fa.KIND_AUTO,
                                n_splits=splits, want_kind="decode", window=window))
    return results


def main():
    if not torch.cuda.is_available():
        return gpu_skip.skip("check_attention")
    seed = int(os.environ.get("FG_SEED", time.time_ns() % 2**31))
    print(f"check_attention: seed {seed} on {torch.cuda.get_device_name()}")
    gen = torch.Generator().manual_seed(seed)
    lib = fa.load()
    cpu = fa.CpuOps(lib)
    results = []
    n_kv = 2
    if os.environ.get("FG_CHECK_ONLY") == "serving":  # the serving-batch decode cases alone
        results = decode_serving_cases(lib, cpu, gen, n_kv)
        cpu.close()
        print(f"check_attention (serving cases only): {sum(results)}/{len(results)} passed "
              f"(seed {seed})")
        return 0 if all(results) else 1
    # prefill: fresh prompts, prompts over a cached prefix (chunked prefill), varlen batches
    batches = {
        "b1": ([300], [300]),
        "varlen": ([1, 77, 130, 257, 33], [1, 127, 130, 357, 546]),
    }
    for hd in (64, 128, 256):
        for g in (1, 3, 4, 8):
            for causal in (0, 1):
                for bname, (ql, kl) in batches.items():
                    page = 16 if (g + causal) % 2 else 7
                    dt = torch.float16 if (g == 3 and bname == "b1") else torch.bfloat16
                    pb = fa.PagedBatch(ql, kl, n_kv * g, n_kv, hd, page, causal, dt, gen=gen)
                    results.append(run_case(lib, cpu, f"prefill hd{hd} G{g} causal{causal} {bname} "
                                            f"p{page} {str(dt)[6:]}", pb, fa.KIND_PREFILL,
                                            want_kind="prefill"))
    # every alternative prefill tiling on a varlen causal GQA-3 batch and a plain one
    sm90 = torch.cuda.get_device_capability() == (9, 0)
    for hd, names in fa.PREFILL_ALTERNATIVES.items():
        for vname in names[1:] + (fa.PREFILL_ALTERNATIVES_SM90[hd] if sm90 else []):
            for g, causal, (ql, kl) in ((3, 1, batches["varlen"]), (4, 0, ([300], [300]))):
                dt = torch.float16 if "_fp16_" in vname else torch.bfloat16
                pb = fa.PagedBatch(ql, kl, n_kv * g, n_kv, hd, 16, causal, dt, gen=gen)
                results.append(run_case(lib, cpu, f"variant G{g} causal{causal} b{len(ql)}", pb,
                                        fa.KIND_PREFILL, variant_name=vname))
    # auto selection: a one-token-per-sequence batch goes to decode, a prompt to prefill
    # decode: one new token (and two, for speculation) over long scattered contexts
    for hd in (64, 128, 256):
        for g in (1, 3, 4, 8):
            for nq in (1, 2):
                for bs in (1, 7):
                    kl = [int(x) for x in torch.randint(nq, 3000, (bs,), generator=gen)]
                    if bs == 1:
                        kl = [2999]
                    for splits in ((0, 1, 5) if nq == 1 else (0,)):
                        causal = 1 if nq > 1 else 0
                        dt = torch.float16 if g == 4 and bs == 7 else torch.bfloat16
                        pb = fa.PagedBatch([nq] * bs, kl, n_kv * g, n_kv, hd, 16, causal, dt, gen=gen)
                        results.append(run_case(lib, cpu, f"decode hd{hd} G{g} nq{nq} bs{bs} "
                                                f"split{splits} {str(dt)[6:]}", pb, fa.KIND_AUTO,
                                                n_splits=splits, want_kind="decode"))
    # decode calls of different shapes in a row on one workspace (the engine shares one across
    # layers and steps): nothing one call leaves there may change the next, whatever the layouts
    ws = torch.zeros(1 << 20, dtype=torch.float32, device="cuda")
    seq = [("b1 G4 ctx5000 split32", [1], [5000], 4, 128, 32),
           ("b7 G3 varlen split2", [1] * 7, None, 3, 128, 2),
           ("b3 nq2 G8 hd64 causal split0", [2] * 3, None, 8, 64, 0),
           ("b1 G4 ctx5000 split32 again", [1], [5000], 4, 128, 32)]
    for name, ql, kl, g, hd, splits in seq:
        if kl is None:
            kl = [int(x) for x in torch.randint(2, 4000, (len(ql),), generator=gen)]
        causal = 1 if max(ql) > 1 else 0
        pb = fa.PagedBatch(ql, kl, n_kv * g, n_kv, hd, 16, causal, torch.bfloat16, gen=gen)
        results.append(run_case(lib, cpu, f"decode in a row: {name}", pb, fa.KIND_DECODE,
                                n_splits=splits, want_kind="decode", ws=ws))
    results += decode_serving_cases(lib, cpu, gen, n_kv)
    # sliding windows (Mistral, Gemma 3's local layers): prefill over fresh prompts and cached
    # prefixes (the mma.sync kernel on every device: the selector passes over the Hopper ones),
    # decode with one and two new tokens, unsplit and split, windows shorter and longer than a
    # tile, page sizes 16 and 7
    for hd, g, window, page in ((64, 3, 100, 16), (128, 4, 37, 7), (256, 4, 512, 16),
                                (256, 1, 5, 7), (128, 8, 1, 16)):
        for causal in (1, 0):
            ql, kl = batches["varlen"]
            if window >= 512:
                ql, kl = [700, 1, 90], [700, 1300, 1000]
            pb = fa.PagedBatch(ql, kl, n_kv * g, n_kv, hd, page, causal, torch.bfloat16, gen=gen)
            results.append(run_case(lib, cpu, f"prefill window hd{hd} G{g} causal{causal} p{page}",
                                    pb, fa.KIND_PREFILL, want_kind="prefill", window=window))
        for nq, splits in ((1, 0), (1, 1), (1, 5), (2, 0), (2, 3)):
            bs = 5
            kl = [int(x) for x in torch.randint(nq, 3000, (bs,), generator=gen)]
            kl[0] = 2999
            kl[1] = max(nq, min(kl[1], window // 2 + nq))  # a context inside the window
            gq = g if nq * g <= 16 else 1
            pb = fa.PagedBatch([nq] * bs, kl, n_kv * gq, n_kv, hd, page, 1, torch.bfloat16, gen=gen)
            results.append(run_case(lib, cpu, f"decode window hd{hd} G{gq} nq{nq} split{splits} "
                                    f"p{page}", pb, fa.KIND_AUTO, n_splits=splits,
                                    want_kind="decode", window=window))
    for dtype in (torch.bfloat16, torch.float16):
        for rope in (0, 1):
            results.append(check_kv_write(lib, cpu, gen, dtype, 37, 12, 4, 128, 16, rope))
            results.append(check_kv_write(lib, cpu, gen, dtype, 5, 9, 3, 64, 7, rope))
        # the decode entry: Llama-3-8B heads at batch 1 and 8, SmolLM2's, a prefill-sized call
        for n, nh, nkv, hd, ps in ((1, 32, 8, 128, 16), (8, 32, 8, 128, 16), (3, 9, 3, 64, 16),
                                   (300, 12, 4, 128, 7)):
            results.append(check_qkv_store(lib, cpu, gen, dtype, n, nh, nkv, hd, ps))
    cpu.close()
    n_ok = sum(results)
    print(f"check_attention: {n_ok}/{len(results)} passed (seed {seed})")
    return 0 if n_ok == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
