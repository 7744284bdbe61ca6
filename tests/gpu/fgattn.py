"""fgattn.py — ctypes bindings to build*/libfgattn.so (the CUDA attention kernels of kernels/ plus
their C twins: kernels/attention_ref.c and the CPU backend's cpu_ops()), and helpers that build
paged varlen batches from torch tensors. Used by tests/gpu/check_attention.py and
bench/bench_attention.py; run on a machine with a CUDA GPU and torch.

The library path comes from $FG_ATTN_LIB (the Makefile's test-gpu / bench-gpu targets set it),
else build/libfgattn.so.
"""
import ctypes as C
import math
import os

import torch

ATTN_DTYPE = {torch.bfloat16: 0, torch.float16: 1}
KIND_AUTO, KIND_PREFILL, KIND_DECODE = 0, 1, 2


class AttnBatch(C.Structure):
    _fields_ = [
        ("n_seqs", C.c_int),
        ("q_start", C.c_void_p),
        ("kv_len", C.c_void_p),
        ("block_table", C.c_void_p),
        ("max_pages", C.c_int),
        ("page_size", C.c_int),
        ("n_heads", C.c_int),
        ("n_kv_heads", C.c_int),
        ("head_dim", C.c_int),
        ("scale", C.c_float),
        ("causal", C.c_int),
        ("max_q_len", C.c_int),
        ("max_kv_len", C.c_int),
        ("host_q_start", C.c_void_p),
        ("host_kv_len", C.c_void_p),
    ]


class AttnArgs(C.Structure):
    _fields_ = [
        ("dtype", C.c_int),
        ("out", C.c_void_p),
        ("q", C.c_void_p),
        ("k_pool", C.c_void_p),
        ("v_pool", C.c_void_p),
        ("lse", C.c_void_p),
        ("b", AttnBatch),
        ("workspace", C.c_void_p),
        ("workspace_bytes", C.c_size_t),
        ("stream", C.c_void_p),
        ("kind", C.c_int),
        ("n_splits", C.c_int),
        ("window", C.c_int),
    ]


class KvWriteArgs(C.Structure):
    _fields_ = [
        ("dtype", C.c_int),
        ("k_pool", C.c_void_p),
        ("v_pool", C.c_void_p),
        ("k", C.c_void_p),
        ("v", C.c_void_p),
        ("slots", C.c_void_p),
        ("n", C.c_int),
        ("n_kv_heads", C.c_int),
        ("head_dim", C.c_int),
        ("pos", C.c_void_p),
        ("freqs", C.c_void_p),
        ("q", C.c_void_p),
        ("n_heads", C.c_int),
        ("stream", C.c_void_p),
    ]


# struct fg_ops: name, then function pointers in header order (kernels/ops.h), through
# qlinear.
_OPS_FIELDS = ["alloc", "release", "upload", "download", "sync", "copy", "upload_f32", "embed",
               "rmsnorm", "matmul", "matmul_f32", "rope", "kv_write", "attention", "swiglu", "add",
               "gather_rows", "graph_begin", "graph_end", "graph_launch", "graph_free",
               "matmul_add", "matmul_swiglu", "norm_matmul", "qkv_store", "sample", "qmatmul",
               "qembed", "add_rows", "head_norm", "attention_window", "norm_add", "geglu", "scale",
               "softcap", "mask_logits", "upload_rows", "bias_logits", "top_logprobs",
               "qresident_bytes", "qupload", "qlinear"]


class FgOps(C.Structure):
    _fields_ = [("name", C.c_char_p), ("act_size", C.c_size_t)] + [(f, C.c_void_p) for f in _OPS_FIELDS]


def load(path=None):
    path = path or os.environ.get("FG_ATTN_LIB", "build/libfgattn.so")
    lib = C.CDLL(os.path.abspath(path))
    lib.attn_select.restype = C.c_char_p
    lib.attn_select.argtypes = [C.POINTER(AttnArgs)]
    lib.attn_launch.argtypes = [C.POINTER(AttnArgs), C.c_char_p, C.c_size_t]
    lib.attn_launch_variant.argtypes = [C.c_char_p, C.POINTER(AttnArgs), C.c_char_p, C.c_size_t]
    lib.attn_workspace_bytes.restype = C.c_size_t
    lib.attn_workspace_bytes.argtypes = [C.POINTER(AttnArgs)]
    lib.decode_attn_splits.argtypes = [C.POINTER(AttnArgs)]
    lib.kv_write_launch.argtypes = [C.POINTER(KvWriteArgs), C.c_char_p, C.c_size_t]
    lib.attn_ref_lse.argtypes = [C.c_void_p, C.c_void_p, C.c_void_p, C.POINTER(AttnBatch)]
    lib.attn_ref_decode_split.argtypes = [C.c_void_p] * 4 + [C.POINTER(AttnBatch), C.c_int]
    lib.cpu_ops.restype = C.POINTER(FgOps)
    lib.cpu_ops_create.restype = C.c_void_p
    lib.cpu_ops_create.argtypes = [C.c_int]
    lib.cpu_ops_destroy.argtypes = [C.c_void_p]
    return lib


class CpuOps:
    """cpu_ops() of kernels/cpu_ops.c: the C twin of attention, rope and kv_write (fp32, host)."""

    def __init__(self, lib):
        self.lib = lib
        self.ctx = lib.cpu_ops_create(0)
        ops = lib.cpu_ops().contents
        if ops.name != b"cpu" or ops.act_size != 4:  # FgOps out of step with kernels/ops.h
            raise RuntimeError("fgattn.FgOps does not match struct fg_ops in kernels/ops.h")
        vp = C.c_void_p
        self.attention = C.CFUNCTYPE(None, vp, vp, vp, vp, vp, C.POINTER(AttnBatch))(ops.attention)
        self.rope = C.CFUNCTYPE(None, vp, vp, vp, vp, C.c_int, C.c_int, C.c_int, C.c_int, vp)(ops.rope)
        self.kv_write = C.CFUNCTYPE(None, vp, vp, vp, vp, vp, vp, C.c_int, C.c_int)(ops.kv_write)
        ci, cf, cs = C.c_int, C.c_float, C.c_size_t
        if not (ops.add_rows and ops.softcap):  # the family ops sit where FgOps says
            raise RuntimeError("fgattn.FgOps: the CPU family ops are missing")
        self.attention_window = C.CFUNCTYPE(None, vp, vp, vp, vp, vp, C.POINTER(AttnBatch),
                                            ci)(ops.attention_window)
        self.add_rows = C.CFUNCTYPE(None, vp, vp, vp, ci, ci)(ops.add_rows)
        self.head_norm = C.CFUNCTYPE(None, vp, vp, vp, vp, ci, ci, ci, ci, cf)(ops.head_norm)
        self.norm_add = C.CFUNCTYPE(None, vp, vp, vp, vp, ci, ci, cf)(ops.norm_add)
        self.geglu = C.CFUNCTYPE(None, vp, vp, vp, ci, ci)(ops.geglu)
        self.scale = C.CFUNCTYPE(None, vp, vp, cs, cf)(ops.scale)
        self.softcap = C.CFUNCTYPE(None, vp, vp, cs, cf)(ops.softcap)

    def close(self):
        self.lib.cpu_ops_destroy(self.ctx)


def ptr(t):
    return C.c_void_p(t.data_ptr()) if t is not None else None


class PagedBatch:
    """A varlen batch: per sequence n_q new query rows (its last tokens) over kv_len cached tokens
    whose K/V rows live in randomly scattered pages of one pool.

    Fields: q (n_q_total, H, D), k_seq/v_seq lists of (kv_len, Hkv, D) contiguous copies (for
    references), k_pool/v_pool (n_pages, page_size, Hkv, D), block_table (n_seqs, max_pages),
    q_start, kv_len (int32, device and host)."""

    def __init__(self, q_lens, kv_lens, n_heads, n_kv_heads, head_dim, page_size, causal, dtype,
                 device="cuda", gen=None, scatter=True, std=1.0, page_gen=None):
        assert len(q_lens) == len(kv_lens)
        self.q_lens, self.kv_lens = list(q_lens), list(kv_lens)
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, head_dim
        self.page_size, self.causal, self.dtype = page_size, causal, dtype
        n_seqs = len(q_lens)
        pages_per = [max(1, -(-kl // page_size)) for kl in kv_lens]
        self.max_pages = max(pages_per)
        n_pages = sum(pages_per) + 3  # spare pages stay poisoned: a wrong index shows
        pg = page_gen if page_gen is not None else gen
        order = torch.randperm(n_pages, generator=pg) if scatter else torch.arange(n_pages)
        bt = torch.zeros(n_seqs, self.max_pages, dtype=torch.int32)
        pos = 0
        for s in range(n_seqs):
            bt[s, :pages_per[s]] = order[pos:pos + pages_per[s]].to(torch.int32)
            pos += pages_per[s]
        self.block_table_h = bt
        self.k_pool = torch.full((n_pages, page_size, n_kv_heads, head_dim), float("nan"),
                                 dtype=dtype, device=device)
        self.v_pool = torch.full_like(self.k_pool, float("nan"))
        self.k_seq, self.v_seq = [], []
        for s in range(n_seqs):
            kl, npg = kv_lens[s], pages_per[s]
            k = (_randn((kl, n_kv_heads, head_dim), gen, device) * std).to(dtype)
            v = _randn((kl, n_kv_heads, head_dim), gen, device).to(dtype)
            self.k_seq.append(k)
            self.v_seq.append(v)
            idx = bt[s, :npg].long().to(device)
            for src, pool in ((k, self.k_pool), (v, self.v_pool)):
                padded = torch.full((npg * page_size, n_kv_heads, head_dim), float("nan"),
                                    dtype=dtype, device=device)
                padded[:kl] = src
                pool[idx] = padded.view(npg, page_size, n_kv_heads, head_dim)
        self.q_start_h = torch.tensor([0] + list(_cumsum(q_lens)), dtype=torch.int32)
        self.kv_len_h = torch.tensor(kv_lens, dtype=torch.int32)
        self.n_q_total = int(self.q_start_h[-1])
        self.q = (_randn((self.n_q_total, n_heads, head_dim), gen, device) * std).to(dtype)
        self.block_table = bt.to(device)
        self.q_start = self.q_start_h.to(device)
        self.kv_len = self.kv_len_h.to(device)
        self.scale = 1.0 / math.sqrt(head_dim)

    def batch(self, host=False):
        """attn_batch over the device arrays (host=False) or the host copies (host=True)."""
        qs = self.q_start_h if host else self.q_start
        kl = self.kv_len_h if host else self.kv_len
        bt = self.block_table_h if host else self.block_table
        return AttnBatch(len(self.q_lens), ptr(qs), ptr(kl), ptr(bt), self.max_pages,
                         self.page_size, self.n_heads, self.n_kv_heads, self.head_dim, self.scale,
                         int(self.causal), max(self.q_lens), max(self.kv_lens), ptr(self.q_start_h),
                         ptr(self.kv_len_h))

    def args(self, out, lse=None, kind=KIND_AUTO, n_splits=0, workspace=None, stream=None,
             window=0):
        ws = workspace
        return AttnArgs(ATTN_DTYPE[self.dtype], ptr(out), ptr(self.q), ptr(self.k_pool),
                        ptr(self.v_pool), ptr(lse), self.batch(),
                        ptr(ws), ws.numel() * ws.element_size() if ws is not None else 0,
                        C.c_void_p(stream if stream is not None else
                                   torch.cuda.current_stream().cuda_stream), kind, n_splits,
                        window)


def _randn(shape, gen, device):
    """Normal samples: from the CPU generator gen (reproducible tests), or drawn on the device
    when gen is None (benchmark-sized tensors)."""
    if gen is None:
        return torch.randn(shape, device=device)
    return torch.randn(shape, generator=gen).to(device)


def _cumsum(xs):
    t = 0
    for x in xs:
        t += x
        yield t


# Alternative prefill tilings built beside the selector's choice (kernels/attention.cu's table).
PREFILL_ALTERNATIVES = {
    64: ["prefill_bf16_hd64", "prefill_bf16_hd64_128x128w8", "prefill_bf16_hd64_64x128w4"],
    128: ["prefill_bf16_hd128", "prefill_bf16_hd128_128x64w8", "prefill_bf16_hd128_128x32w4",
          "prefill_bf16_hd128_128x64w4"],
}
# The Hopper (sm_90a) kernels besides the selector's: kernels/attention_hopper_ws.cu (ws) and
# kernels/attention_hopper.cu (wg, also the ws kernel's fallback for page sizes TMA boxes do not
# fit).
PREFILL_ALTERNATIVES_SM90 = {
    64: ["prefill_bf16_hd64_ws128x128", "prefill_bf16_hd64_ws128x192", "prefill_bf16_hd64_wg128x64p",
         "prefill_fp16_hd64_wg192x128p"],
    128: ["prefill_bf16_hd128_ws128x128n", "prefill_bf16_hd128_wg192x80p",
          "prefill_fp16_hd128_wg192x64p"],
}


def launch(lib, args, variant=None):
    err = C.create_string_buffer(256)
    if variant is None:
        rc = lib.attn_launch(C.byref(args), err, 256)
    else:
        rc = lib.attn_launch_variant(variant.encode(), C.byref(args), err, 256)
    if rc != 0:
        raise RuntimeError(err.value.decode())


def workspace_for(lib, args, device="cuda"):
    n = lib.attn_workspace_bytes(C.byref(args))
    return torch.empty(max(n, 16) // 4 + 1, dtype=torch.float32, device=device)
