"""bench_decode_variants.py — A/B of decode-attention builds at the serving shapes, one GPU run.

Each build is a small shared library holding only kernels/decode_attention.cu (compiled with the
-D overrides under test: stages, warps, the persistent warp kernel's threshold, the evict-first
limit) and is called through its extern "C" decode_attn_launch, so several builds travel in one
call without the whole libfgattn.so each. FG_DECODE_LIBS="name=path,name=path,..." names them.

Shape and timing are bench_attention.py's decode sweep (Llama-3-8B's attention: 32 query heads
over 8 KV heads, hd 128, bf16, one new token per sequence; CUDA graphs of L calls on L layers'
K/V, µs per call = replay / L) with the engine's pages of 16 tokens. Points:
FG_DECODE_POINTS="64x512,128x1024@64,..." (BxC[@page]; default batch 64/128/256 × context 512/1024/2048).
Each build runs at its own split count ("auto") and, at the batches of FG_DECODE_N2 (default
64), at 2 parts ("n2").
Every build is checked at every point and split count against fp32 SDPA on the gathered K/V
(layer 0); beside them, in the same run: the read-only floor over the same bytes and torch
SDPA's FA2 and cuDNN backends on the same pools. Prints one line per point and a markdown table last.
FG_DECODE_ONCE=1 only launches each build once per point (a target for ncu).
"""
import ctypes as C
import os
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_attention as ba  # noqa: E402
from bench_attention import fa  # noqa: E402

PAGE = 16  # the engine's KV page (config page_size)
# batches also timed at 2 parts ("n2"): FG_DECODE_N2="64,128"
N2_BATCHES = {int(x) for x in os.environ.get("FG_DECODE_N2", "64").split(",") if x}


def load(path):
    lib = C.CDLL(path)
    lib.decode_attn_launch.argtypes = [C.POINTER(fa.AttnArgs), C.c_char_p, C.c_size_t]
    lib.decode_attn_workspace_bytes.restype = C.c_size_t
    lib.decode_attn_workspace_bytes.argtypes = [C.POINTER(fa.AttnArgs), C.c_int]
    lib.decode_attn_splits.argtypes = [C.POINTER(fa.AttnArgs)]
    return lib


def launch(lib, args):
    err = C.create_string_buffer(256)
    if lib.decode_attn_launch(C.byref(args), err, 256) != 0:
        raise RuntimeError(err.value.decode())


def main():
    if not torch.cuda.is_available():
        return ba.gpu_skip.skip("bench_decode_variants")
    libs = [(kv.split("=", 1)[0], load(kv.split("=", 1)[1]))
            for kv in os.environ["FG_DECODE_LIBS"].split(",")]
    pts = os.environ.get("FG_DECODE_POINTS",
                         ",".join(f"{b}x{c}" for b in (64, 128, 256) for c in (512, 1024, 2048)))
    points = [ba.decode_point(p if "@" in p else f"{p}@{PAGE}") for p in pts.split(",")]
    ceiling = ba.copy_ceiling()
    print(f"device {torch.cuda.get_device_name()}; copy ceiling {ceiling:.0f} GB/s; pages of "
          f"{PAGE}; builds {[n for n, _ in libs]}", flush=True)
    gen = torch.Generator().manual_seed(1)
    gt = ba.GraphTimer()
    rows = []
    for bsz, ctx, page in points:
        nbytes = bsz * ctx * ba.DEC_HKV * ba.DEC_HD * 2 * 2
        L = max(2, min(ba.DEC_L_MAX, int(ba.DEC_BYTES_MAX // nbytes)))
        q_start_h = torch.arange(bsz + 1, dtype=torch.int32)
        kv_len_h = torch.full((bsz,), ctx, dtype=torch.int32)
        q_start, kv_len = q_start_h.cuda(), kv_len_h.cuda()
        layers = [ba.DecodeLayer(bsz, ctx, gen, q_start, kv_len, q_start_h, kv_len_h, page=page)
                  for _ in range(L)]
        l0 = layers[0]
        q, _, _ = l0.torch_qkv()
        ref = F.scaled_dot_product_attention(q.float(), l0.gathered(0).float(),
                                             l0.gathered(1).float(), enable_gqa=True)
        # each build's own split count ("auto"), and 2 parts forced at N2_BATCHES ("n2")
        dummy = torch.zeros(4, device="cuda")
        # (tag, split count, n_splits passed): "auto" passes 0, the launcher's own choice (a
        # forced count keeps the split kernel, decode_attention.h)
        tags = {name: [("auto", lib.decode_attn_splits(C.byref(l0.args(dummy))), 0)]
                + ([("n2", 2, 2)] if bsz in N2_BATCHES else []) for name, lib in libs}
        ws_bytes = max(lib.decode_attn_workspace_bytes(C.byref(l0.args(dummy, f)), n)
                       for name, lib in libs for _, n, f in tags[name])
        ws = torch.zeros(ws_bytes // 4 + 1, dtype=torch.float32, device="cuda")
        gb = lambda us: nbytes / us / 1e3  # noqa: E731
        res = {}
        if os.environ.get("FG_DECODE_ONCE") == "1":  # one launch per build (for ncu), no timing
            for name, lib in libs:
                launch(lib, l0.args(ws))
            torch.cuda.synchronize()
            continue
        for name, lib in libs:
            for tag, n, f in tags[name]:
                l0.out.fill_(float("nan"))
                launch(lib, l0.args(ws, f))
                torch.cuda.synchronize()
                err = float((l0.out.view(bsz, 1, ba.DEC_H, ba.DEC_HD).transpose(1, 2).float()
                             - ref).norm() / ref.norm())
                us = gt.time([lambda x=x, f=f, lib=lib: launch(lib, x.args(ws, f)) for x in layers],
                             target_s=0.15)
                res[(name, tag)] = (gb(us), err, n)
        del ref
        floor = gb(gt.time([lambda x=x: x.floor(False) for x in layers], target_s=0.15))
        qkv = [x.torch_qkv() for x in layers]
        peer = {}
        for key, backend in (("fa2", SDPBackend.FLASH_ATTENTION),
                             ("cudnn", SDPBackend.CUDNN_ATTENTION)):
            with sdpa_kernel([backend]):
                peer[key] = gb(gt.time([lambda t=t: F.scaled_dot_product_attention(
                    *t, enable_gqa=True) for t in qkv], target_s=0.15))
        del qkv
        rows.append((bsz, ctx, page, nbytes / 1e6, L, floor, peer, res))
        print(f"b{bsz} ctx{ctx} p{page} {nbytes / 1e6:.0f} MB L{L}: floor {floor:.0f} fa2 "
              f"{peer['fa2']:.0f} cudnn {peer['cudnn']:.0f} GB/s; "
              + "; ".join(f"{k[0]} {k[1]} (n{v[2]}) {v[0]:.0f} ({v[0] / ceiling * 100:.0f}%, "
                          f"err {v[1]:.1e})" for k, v in res.items()), flush=True)
        del layers, l0, ws
        torch.cuda.empty_cache()
    if not rows:
        return 0
    keys = list(dict.fromkeys(k for r in rows for k in r[7]))
    print()
    print(f"Decode builds, GB/s of K+V (copy ceiling {ceiling:.0f} GB/s), graph replay")
    print()
    print("| batch | context | page | K+V MB | L | floor read | FA2 | cuDNN | "
          + " | ".join(f"{k[0]} {k[1]}" for k in keys) + " | max err |")
    print("| --- " * (9 + len(keys)) + "|")
    for bsz, ctx, page, mb, L, floor, peer, res in rows:
        cells = " | ".join(f"{res[k][0]:.0f} ({res[k][0] / ceiling * 100:.0f}%, n{res[k][2]})"
                           if k in res else "—" for k in keys)
        err = max(v[1] for v in res.values())
        print(f"| {bsz} | {ctx} | {page} | {mb:.0f} | {L} | {floor:.0f} | {peer['fa2']:.0f} | "
              f"{peer['cudnn']:.0f} | {cells} | {err:.1e} |")
    bad = [(r[0], r[1], k) for r in rows for k, v in r[7].items() if not v[1] < 1e-2]
    if bad:
        print(f"FAIL: error ≥ 1e-2 (or NaN) at {bad}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
