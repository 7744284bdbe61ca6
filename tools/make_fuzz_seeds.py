#!/usr/bin/env python3
"""make_fuzz_seeds.py — the committed seed corpora and dictionaries of the libFuzzer targets.

Usage: python3 tools/make_fuzz_seeds.py [--out tests/fuzz]

Writes OUT/corpus/<target>/<name> (a handful of small, mostly valid inputs per target, each
corpus well under 100 KB) and OUT/<target>.dict (libFuzzer dictionaries: the keys and tokens a
mutation cannot guess). Deterministic (fixed seeds), so re-running gives the same bytes.

  fuzz_gguf            tiny valid GGUF files built with the `gguf` package: a complete 1-layer
                       llama model with a byte-level tokenizer (loads with model_load), the same
                       in K-quants and their Q5_0/Q5_1 fallbacks (kmodel), a file with every
                       metadata value type and every tensor type flashgen reads (plus IQ4_NL,
                       which it refuses), a v2 file, one with general.alignment = 64, a qwen2
                       header with yarn rope.scaling.* keys
  fuzz_safetensors     hand-written safetensors files (F32/F16/BF16/I32, scalar and empty
                       tensors, __metadata__; FP8 weights with per-channel BF16 and per-tensor
                       F32 weight_scale, input_scale and a zero point)
  fuzz_tokenizer_json  small tokenizer.json files for each supported pre-tokenizer, some followed
                       by NUL + tokenizer_config.json (the target's input layout)
  fuzz_tokenizer       flag byte + text (see tests/fuzz/fuzz_tokenizer.c), one ids-mode input
  fuzz_config          server config files (config/config.h options)
  fuzz_hf_config       Hugging Face config.json files (llama, llama3 rope scaling, qwen2, qwen2
                       with use_sliding_window and yarn, FP8 quantization_config of
                       compressed-tensors and of vLLM "fp8")

Needs: numpy, gguf.
"""
import argparse
import json
import os
import shutil
import struct

import numpy as np

from bytelevel import bytes_to_unicode

import gguf
from gguf import GGMLQuantizationType as QT


# --- byte-level BPE vocabulary (GPT-2 bytes_to_unicode) ------------------------------------------

BYTE = bytes_to_unicode()
MERGES = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("Ġ", "a"), ("e", "r"),
          ("Ġ", "w"), ("o", "r"), ("Ġw", "or"), ("l", "d"), ("Ġwor", "ld")]
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
          "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def vocab():
    """Specials first (ids 0..2, as SmolLM2), then the 256 bytes, then one token per merge."""
    toks = SPECIALS + [BYTE[b] for b in range(256)] + [a + b for a, b in MERGES]
    types = [3] * len(SPECIALS) + [1] * (256 + len(MERGES))
    return toks, types


# --- GGUF ----------------------------------------------------------------------------------------

def add(w, name, arr, qtype):
    """Add ARR (fp32, shape (rows, cols) or (n,)) as QTYPE."""
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if qtype == QT.F32:
        w.add_tensor(name, arr)
    elif qtype == QT.F16:
        w.add_tensor(name, arr.astype(np.float16))
    else:
        q = gguf.quants.quantize(arr, qtype)
        w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=qtype)


def gguf_model(path, rng):
    dim, n_heads, n_kv, ffn, n_layers = 32, 2, 1, 32, 1
    hd = dim // n_heads
    toks, types = vocab()
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(n_layers)
    w.add_context_length(64)

    w.add_embedding_length(dim)
    w.add_feed_forward_length(ffn)
    w.add_head_count(n_heads)
    w.add_head_count_kv(n_kv)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(hd)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(toks)
    w.add_token_types(types)
    w.add_token_merges([f"{a} {b}" for a, b in MERGES])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(2)
    w.add_add_bos_token(False)
    w.add_chat_template(CHATML)
    r = lambda *s: rng.standard_normal(s).astype(np.float32) * 0.1
    add(w, "token_embd.weight", r(len(toks), dim), QT.Q8_0)
    for l in range(n_layers):
        add(w, f"blk.{l}.attn_norm.weight", 1 + r(dim), QT.F32)
        add(w, f"blk.{l}.attn_q.weight", r(n_heads * hd, dim), QT.Q4_0)
        add(w, f"blk.{l}.attn_k.weight", r(n_kv * hd, dim), QT.Q4_1)
        add(w, f"blk.{l}.attn_v.weight", r(n_kv * hd, dim), QT.Q8_0)
        add(w, f"blk.{l}.attn_output.weight", r(dim, n_heads * hd), QT.Q4_0)
        add(w, f"blk.{l}.ffn_norm.weight", 1 + r(dim), QT.F32)
        add(w, f"blk.{l}.ffn_gate.weight", r(ffn, dim), QT.Q4_1)
        add(w, f"blk.{l}.ffn_up.weight", r(ffn, dim), QT.Q4_0)
        add(w, f"blk.{l}.ffn_down.weight", r(dim, ffn), QT.Q4_1)
    add(w, "output_norm.weight", 1 + r(dim), QT.F32)
    write(w)


def gguf_yarn_config(path):
    """A qwen2 file's metadata with the rope.scaling.* keys convert_hf_to_gguf writes for a yarn
    checkpoint, and no tensors: the config reader parses all of it, the load plan then stops."""
    w = gguf.GGUFWriter(path, "qwen2")
    w.add_block_count(1)
    w.add_context_length(64)
    w.add_embedding_length(32)
    w.add_feed_forward_length(32)
    w.add_head_count(2)
    w.add_head_count_kv(1)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
    w.add_rope_scaling_factor(4.0)
    w.add_rope_scaling_orig_ctx_len(16)
    w.add_rope_scaling_yarn_beta_fast(16.0)
    w.add_rope_scaling_yarn_beta_slow(2.0)
    w.add_rope_scaling_yarn_attn_factor(1.1)
    w.add_vocab_size(8)
    write(w)


def gguf_kitchen_sink(path, rng, alignment=None):
    """Every metadata value type and every tensor type flashgen knows, no model."""
    w = gguf.GGUFWriter(path, "llama")
    if alignment:
        w.add_custom_alignment(alignment)
    w.add_uint8("t.u8", 200)
    w.add_int8("t.i8", -5)
    w.add_uint16("t.u16", 60000)
    w.add_int16("t.i16", -300)
    w.add_uint32("t.u32", 4000000000)
    w.add_int32("t.i32", -70000)
    w.add_float32("t.f32", 1.5)
    w.add_bool("t.bool", True)
    w.add_string("t.str", "héllo")
    w.add_uint64("t.u64", 2**63 + 5)
    w.add_int64("t.i64", -(2**40))
    w.add_float64("t.f64", 2.25)
    w.add_array("t.arr_i32", [1, -2, 3])
    w.add_array("t.arr_str", ["a", "bc", ""])
    w.add_array("t.arr_f32", [0.5, 1.5])
    w.add_array("t.arr_nested", [[1, 2], [3]])
    r = lambda *s: rng.standard_normal(s).astype(np.float32)
    add(w, "f32", r(3, 5), QT.F32)
    add(w, "f16", r(2, 3), QT.F16)
    w.add_tensor("bf16", np.frombuffer(bf16(r(2, 4)), dtype=np.uint8).reshape(2, 8),
                 raw_dtype=QT.BF16)
    add(w, "q8_0", r(2, 32), QT.Q8_0)
    add(w, "q4_0", r(1, 64), QT.Q4_0)
    add(w, "q4_1", r(3, 32), QT.Q4_1)
    # Q4_K as random bytes (any f16 scale, NaN and inf included), drawn as before
    w.add_tensor("q4_k", rng.randint(0, 256, (1, 144)).astype(np.uint8), raw_dtype=QT.Q4_K)
    # the newer types draw from their own generator, so the other seeds keep their bytes
    krng = np.random.RandomState(12)
    add(w, "q5_0", krng.standard_normal((2, 32)), QT.Q5_0)
    add(w, "q5_1", krng.standard_normal((1, 64)), QT.Q5_1)
    # K-quants (gguf cannot quantize to them): random blocks with small f16 scales
    for qt, rows in ((QT.Q2_K, 1), (QT.Q3_K, 2), (QT.Q4_K, 2), (QT.Q5_K, 1), (QT.Q6_K, 1),
                     (QT.Q8_K, 1)):
        w.add_tensor(qt.name.lower() + "_s", kquant_blocks(krng, qt, rows, 256), raw_dtype=qt)
    # IQ4_NL: a known type flashgen does not dequantize
    w.add_tensor("iq4_nl", krng.randint(0, 256, (1, 18)).astype(np.uint8), raw_dtype=QT.IQ4_NL)
    write(w)


# byte offsets of each K-quant block's f16 scales (Q8_K: one f32)
KQUANT_SCALES = {QT.Q2_K: (80, 82), QT.Q3_K: (108,), QT.Q4_K: (0, 2), QT.Q5_K: (0, 2),
                 QT.Q6_K: (208,), QT.Q8_K: ()}


def kquant_blocks(rng, qtype, rows, cols, scale=1e-3):
    """(rows, row bytes) uint8 of random QTYPE blocks whose scales are about SCALE."""
    blck, size = gguf.GGML_QUANT_SIZES[qtype]
    nb = rows * cols // blck
    b = rng.randint(0, 256, (nb, size)).astype(np.uint8)
    for off in KQUANT_SCALES[qtype]:
        d = (scale * rng.uniform(0.5, 1.5, nb)).astype(np.float16)
        b[:, off:off + 2] = d.view(np.uint8).reshape(nb, 2)
    if qtype == QT.Q8_K:
        d = (scale * rng.uniform(0.5, 1.5, nb)).astype(np.float32)
        b[:, 0:4] = d.view(np.uint8).reshape(nb, 4)
    return b.reshape(rows, -1)


def gguf_kquant_model(path, rng):
    """A loadable 1-layer llama whose weights are K-quants and their 32-block fallbacks, the way
    llama.cpp's Q*_K mixes look: 256-wide rows in K-quants, 32-wide rows in Q5_0/Q5_1. Small
    heads (key_length 32) keep it under 70 KB."""
    dim, n_heads, hd, ffn = 256, 1, 32, 32
    toks, types = vocab()
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(1)
    w.add_context_length(64)
    w.add_embedding_length(dim)
    w.add_feed_forward_length(ffn)
    w.add_head_count(n_heads)
    w.add_head_count_kv(n_heads)
    w.add_key_length(hd)
    w.add_value_length(hd)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(hd)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(toks)
    w.add_token_types(types)
    w.add_token_merges([f"{a} {b}" for a, b in MERGES])
    w.add_eos_token_id(2)
    r = lambda *s: rng.standard_normal(s).astype(np.float32) * 0.1
    k = lambda name, qt, rows, cols: w.add_tensor(name, kquant_blocks(rng, qt, rows, cols),
                                                  raw_dtype=qt)
    k("token_embd.weight", QT.Q2_K, len(toks), dim)
    add(w, "blk.0.attn_norm.weight", 1 + r(dim), QT.F32)
    k("blk.0.attn_q.weight", QT.Q4_K, hd, dim)
    k("blk.0.attn_k.weight", QT.Q3_K, hd, dim)
    k("blk.0.attn_v.weight", QT.Q6_K, hd, dim)
    add(w, "blk.0.attn_output.weight", r(dim, hd), QT.Q5_0)
    add(w, "blk.0.ffn_norm.weight", 1 + r(dim), QT.F32)
    k("blk.0.ffn_gate.weight", QT.Q5_K, ffn, dim)
    k("blk.0.ffn_up.weight", QT.Q2_K, ffn, dim)
    add(w, "blk.0.ffn_down.weight", r(dim, ffn), QT.Q5_1)
    add(w, "output_norm.weight", 1 + r(dim), QT.F32)
    write(w)


def write(w):
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# --- safetensors ---------------------------------------------------------------------------------

def safetensors_bytes(tensors, metadata=None):
    """TENSORS: list of (name, dtype, shape, raw bytes)."""
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": list(shape),
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def bf16(a):
    return (np.asarray(a, np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()


# --- tokenizer.json ------------------------------------------------------------------------------

GPT2_RE = ("'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+")
LLAMA3_RE = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
             "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")


def tokenizer_json(pre, merges_as_pairs=False, post=None):
    toks, types = vocab()
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, t in enumerate(SPECIALS)]
    merges = [[a, b] if merges_as_pairs else f"{a} {b}" for a, b in MERGES]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                  "use_regex": True}
    if pre == "gpt2":
        pt = byte_level
    elif pre == "smollm":
        pt = {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True}, byte_level]}
    else:
        pt = {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_RE}, "behavior": "Isolated",
             "invert": False},
            dict(byte_level, use_regex=False)]}
    j = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
         "normalizer": None, "pre_tokenizer": pt, "post_processor": post,
         "decoder": {"type": "ByteLevel"},
         "model": {"type": "BPE", "dropout": None, "unk_token": None,
                   "continuing_subword_prefix": None, "end_of_word_suffix": None,
                   "fuse_unk": False, "byte_fallback": False, "ignore_merges": pre == "llama3",
                   "vocab": {t: i for i, t in enumerate(toks)}, "merges": merges}}
    return json.dumps(j, ensure_ascii=False, separators=(",", ":")).encode()


def tokenizer_config(**kw):
    c = {"add_prefix_space": False, "bos_token": "<|im_start|>", "eos_token": "<|im_end|>",
         "pad_token": "<|im_end|>", "unk_token": "<|endoftext|>", "chat_template": CHATML}
    c.update(kw)
    return json.dumps(c, separators=(",", ":")).encode()


# --- main ----------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fuzz")
    args = ap.parse_args()
    rng = np.random.RandomState(6)
    corpus = os.path.join(args.out, "corpus")
    seeds = {}

    # fuzz_gguf: built into a scratch folder by the writer, then read back as bytes
    tmp = os.path.join(corpus, ".tmp")
    os.makedirs(tmp, exist_ok=True)
    gguf_model(os.path.join(tmp, "model.gguf"), rng)
    gguf_kitchen_sink(os.path.join(tmp, "sink.gguf"), rng)
    gguf_kitchen_sink(os.path.join(tmp, "align64.gguf"), rng, alignment=64)
    gguf_kquant_model(os.path.join(tmp, "kmodel.gguf"), np.random.RandomState(13))
    gguf_yarn_config(os.path.join(tmp, "yarn.gguf"))
    g = {n: open(os.path.join(tmp, n + ".gguf"), "rb").read()
         for n in ("model", "sink", "align64", "kmodel", "yarn")}
    shutil.rmtree(tmp)
    v2 = bytearray(g["sink"])
    v2[4:8] = struct.pack("<I", 2)
    seeds["fuzz_gguf"] = {"model.gguf": g["model"], "sink.gguf": g["sink"],
                          "align64.gguf": g["align64"], "v2.gguf": bytes(v2),
                          "kmodel.gguf": g["kmodel"], "yarn.gguf": g["yarn"],
                          "header_only.gguf": b"GGUF" + struct.pack("<IQQ", 3, 0, 0)}

    f32 = lambda *s: rng.standard_normal(s).astype("<f4")
    seeds["fuzz_safetensors"] = {
        "mixed.safetensors": safetensors_bytes(
            [("a.weight", "F32", (2, 3), f32(2, 3).tobytes()),
             ("b.weight", "F16", (4,), f32(4).astype("<f2").tobytes()),
             ("c.weight", "BF16", (2, 2), bf16(f32(2, 2))),
             ("d.ids", "I32", (3,), np.arange(3, dtype="<i4").tobytes())],
            metadata={"format": "pt"}),
        "scalar_empty.safetensors": safetensors_bytes(
            [("scalar", "F32", (), f32(1).tobytes()), ("empty", "BF16", (0, 4), b"")]),
        "model_like.safetensors": safetensors_bytes(
            [("model.embed_tokens.weight", "BF16", (8, 4), bf16(f32(8, 4))),
             ("model.norm.weight", "F32", (4,), f32(4).tobytes())]),
        "no_tensors.safetensors": safetensors_bytes([], metadata={}),
    }
    r8 = np.random.RandomState(61)  # its own stream: the seeds above keep their bytes
    codes = lambda *s: r8.randint(0, 256, size=s).astype(np.uint8).tobytes()
    seeds["fuzz_safetensors"].update({
        "fp8_channel.safetensors": safetensors_bytes(
            [("l.weight", "F8_E4M3", (4, 8), codes(4, 8)),
             ("l.weight_scale", "BF16", (4, 1), bf16(r8.uniform(0.01, 1, (4, 1))))]),
        "fp8_tensor.safetensors": safetensors_bytes(
            [("m.weight", "F8_E4M3", (3, 4), codes(3, 4)),
             ("m.weight_scale", "F32", (), np.float32(0.05).tobytes()),
             ("m.input_scale", "F32", (1,), np.float32(0.02).tobytes()),
             ("m.weight_zero_point", "F8_E4M3", (1,), b"\0")]),
    })

    seeds["fuzz_tokenizer_json"] = {
        "smollm_cfg.json": tokenizer_json("smollm") + b"\0" + tokenizer_config(),
        "gpt2_pairs.json": tokenizer_json("gpt2", merges_as_pairs=True),
        "llama3_cfg.json": tokenizer_json("llama3") + b"\0" + tokenizer_config(
            bos_token={"content": "<|endoftext|>", "special": True}, add_bos_token=True,
            chat_template="{{ bos_token }}<|start_header_id|>{{ m }}<|end_header_id|>\n\n"
                          "{{ message['content'] | trim }}<|eot_id|>"),
        # the committed trained models: byte_fallback BPE (SentencePiece-style), Qwen2 regex + NFC
        "bytefallback.json": open("tests/golden/tokenizer_bytefallback.model.json", "rb").read(),
        "qwen2nfc.json": open("tests/golden/tokenizer_qwen2nfc.model.json", "rb").read(),
        "post_processor.json": tokenizer_json("gpt2", post={
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<|im_start|>", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "<|im_end|>", "type_id": 0}}],
            "special_tokens": {}}),
    }

    seeds["fuzz_tokenizer"] = {
        "plain.txt": b"\x00Hello world, the weather in 2024 is 23.5\xc2\xb0C!",
        "chat.txt": b"\x01<|im_start|>user\nWhat's up?<|im_end|>\n<|im_start|>assistant\n",
        "chat_nospecial.txt": b"\x00<|im_start|>user\n<|im_end|>",
        "bos_skip.txt": b"\x07<|im_start|>x<|im_end|> y",
        "unicode.txt": "\x00日本語のテキスト 🙂👍🏽 Ελληνικά  — naïve café\t\r\n\n   ".encode(),
        "code.txt": b"\x00def f(x):\n    return [i**2 for i in range(x)]  # 123456\n",
        "invalid_utf8.txt": b"\x00ab\xff\xfe\xc3(\xe2\x82 \xf0\x9f\x98 end\xed\xa0\x80",
        "ids.bin": b"\x08" + struct.pack("<16H", 1, 9000, 300, 2, 49151, 49152, 0, 65535, 1000,
                                         12, 13, 14, 500, 501, 28, 29),
        # flag bit 4: the SentencePiece tokenizer (tests/golden/tokenizer_spm.gguf)
        "spm_plain.txt": "\x10Hello  world, the \u2581marker 2024 日本語 🙂\n".encode(),
        "spm_special.txt": b"\x13<s>hi</s> there<unk>",
        "spm_bytes.txt": b"\x10\x00\x01 \xc3\xa9\xff\xfe\xe2\x96 tail",
        # flag bit 5: the Qwen2-pattern BPE with NFC (tests/golden/tokenizer_qwen2nfc.model.json)
        "nfc_marks.txt": "\x20Cafe\u0301 \u212b \u0958 a\u0307\u0323 \u1100\u1161\u11a8 12345".encode(),
        "nfc_special.txt": "\x21<|im_start|>e\u0301<|im_end|>\u0301 \xff".encode("utf-8", "surrogateescape"),
        "spm_ids.bin": b"\x1c" + struct.pack("<12H", 1, 2, 3, 0x41 + 3, 0xe2 + 3, 0x96 + 3,
                                           0x81 + 3, 500, 999, 1000, 1001, 65535),
    }

    seeds["fuzz_config"] = {
        "full.json": json.dumps({
            "_comment": "every option", "host": "0.0.0.0", "port": 8080, "model": "m.gguf",
            "model_id": "smol", "device": "cpu", "threads": 4, "kv_cache_mb": 256,
            "kv_fraction": 0.5, "page_size": 16, "max_batch_tokens": 512, "max_batch_seqs": 32,
            "max_concurrent_requests": 64, "max_input_tokens": 1000, "max_total_tokens": 2048,
            "default_max_new_tokens": 50, "max_stop_sequences": 4, "max_body_bytes": 100000,
            "request_timeout": 60.5, "queue_timeout": 10, "shutdown_grace": 5,
            "connection_timeout": 30, "api_key": "k", "log_format": "json",
            "log_requests": False}, indent=1).encode(),
        "strings.json": b'{"port": "9000", "threads": "2", "log_requests": "false", '
                        b'"kv_fraction": "0.25", "device": "auto", "model": null}',
        "bad_type.json": b'{"port": [1], "threads": 1.5}',
        "empty.json": b"{}",
    }

    hf = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 576,
          "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
          "num_key_value_heads": 3, "max_position_embeddings": 8192, "rms_norm_eps": 1e-5,
          "rope_theta": 100000, "rope_scaling": None, "tie_word_embeddings": True,
          "vocab_size": 49152, "attention_bias": False, "mlp_bias": False, "head_dim": 64,
          "torch_dtype": "bfloat16"}
    l3 = dict(hf, rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                "high_freq_factor": 4.0,
                                "original_max_position_embeddings": 8192},
              rope_theta=500000.0, num_attention_heads=32, num_key_value_heads=8,
              hidden_size=2048, head_dim=64, tie_word_embeddings=False)
    qw = dict(hf, architectures=["Qwen2ForCausalLM"], model_type="qwen2", use_sliding_window=False)
    del qw["head_dim"]
    qws = dict(qw, use_sliding_window=True, sliding_window=4096, max_window_layers=28,
               rope_scaling={"rope_type": "yarn", "factor": 4.0,
                             "original_max_position_embeddings": 32768, "beta_fast": 32.0,
                             "beta_slow": 1.0, "attention_factor": 1.1})
    seeds["fuzz_hf_config"] = {"smollm2.json": json.dumps(hf, indent=2).encode(),
                               "llama3.json": json.dumps(l3).encode(),
                               "qwen2.json": json.dumps(qw).encode(),
                               "qwen2_swa_yarn.json": json.dumps(qws).encode(),
                               "mistral_min.json": b'{"model_type":"mistral","hidden_size":8,'
                               b'"intermediate_size":16,"num_hidden_layers":1,'
                               b'"num_attention_heads":2,"vocab_size":10}'}
    fp8_args = {"num_bits": 8, "type": "float", "symmetric": True, "group_size": None,
                "block_structure": None}
    ct = dict(hf, quantization_config={
        "quant_method": "compressed-tensors", "format": "float-quantized",
        "config_groups": {"group_0": {
            "targets": ["Linear"], "weights": dict(fp8_args, strategy="channel", dynamic=False),
            "input_activations": dict(fp8_args, strategy="token", dynamic=True)}},
        "kv_cache_scheme": None, "ignore": ["lm_head"], "quantization_status": "compressed"})
    vl = dict(hf, quantization_config={"quant_method": "fp8", "activation_scheme": "static",
                                       "ignored_layers": ["lm_head"]})
    seeds["fuzz_hf_config"].update({"fp8_compressed_tensors.json": json.dumps(ct).encode(),
                                    "fp8_vllm.json": json.dumps(vl).encode()})

    for target, files in seeds.items():
        d = os.path.join(corpus, target)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        total = 0
        for name, data in files.items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
            total += len(data)
        assert total < 100_000, (target, total)
        print(f"{target:22s} {len(files)} seeds, {total} bytes")

    dicts = {
        "fuzz_gguf": ["GGUF", "general.architecture", "general.alignment", "llama",
                      "llama.block_count", "llama.embedding_length", "llama.feed_forward_length",
                      "llama.attention.head_count", "llama.attention.head_count_kv",
                      "llama.attention.key_length", "llama.attention.value_length",
                      "llama.rope.dimension_count", "llama.context_length", "llama.vocab_size",
                      "llama.rope.freq_base", "llama.attention.layer_norm_rms_epsilon",
                      "llama.rope.scaling.type", "tokenizer.ggml.model", "gpt2",
                      "tokenizer.ggml.pre", "smollm", "llama-bpe", "tokenizer.ggml.tokens",
                      "tokenizer.ggml.token_type", "tokenizer.ggml.merges",
                      "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                      "tokenizer.ggml.add_bos_token", "tokenizer.chat_template",
                      "token_embd.weight", "output.weight", "output_norm.weight",
                      "rope_freqs.weight", "blk.0.attn_q.weight", "blk.0.ffn_down.weight"],
        "fuzz_safetensors": ["__metadata__", "dtype", "shape", "data_offsets", "F32", "F16",
                             "BF16", "I64", "U8", "BOOL", "F64", "F8_E4M3", "F8_E5M2",
                             ".weight", ".weight_scale", ".input_scale", ".weight_zero_point",
                             ".weight_scale_inv"],
        "fuzz_tokenizer_json": ["model", "type", "BPE", "vocab", "merges", "added_tokens",
                                "special", "content", "id", "normalizer", "pre_tokenizer",
                                "pretokenizers", "Sequence", "ByteLevel", "Digits", "Split",
                                "Regex", "Isolated", "use_regex", "individual_digits",
                                "add_prefix_space", "post_processor", "TemplateProcessing",
                                "SpecialToken", "single", "ignore_merges", "unk_token",
                                "bos_token", "eos_token", "pad_token", "add_bos_token",
                                "add_eos_token", "chat_template", "<|im_start|>",
                                "<|eot_id|>", "\\u0000", "\\ud83d\\ude00", "byte_fallback",
                                "fuse_unk", "Prepend", "prepend", "Replace", "String",
                                "ByteFallback", "Fuse", "Strip", "start", "stop", "decoder",
                                "decoders", "normalizers", "\u2581", "\\u2581", "<0x41>", "NFC", "Metaspace",
                                "replacement", "prepend_scheme", "first", "always", "never",
                                "split",
                                "\\u0301"],
        "fuzz_tokenizer": ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "Ġ", "😀", "—",
                           b"\xc3", b"\xf0\x9f", b"\xed\xa0\x80", "'s", "'ll",
                           "\r\n", "   ", "12345", "\u2581", "<s>", "</s>", "<0xFF>",
                           "\u0301", "\u0323", "\u1161", "\u11a8"],
        "fuzz_config": [o for o in ["host", "port", "model", "model_id", "device", "threads",
                                    "kv_cache_mb", "kv_fraction", "page_size",
                                    "max_batch_tokens", "max_batch_seqs",
                                    "max_concurrent_requests", "max_input_tokens",
                                    "max_total_tokens", "default_max_new_tokens",
                                    "max_stop_sequences", "max_body_bytes", "request_timeout",
                                    "queue_timeout", "shutdown_grace", "connection_timeout",
                                    "api_key", "log_format", "log_requests", "config", "cuda",
                                    "json", "true", "false", "null", "1e308", "-0",
                                    "4294967296", "nan"]],
        "fuzz_hf_config": ["architectures", "model_type", "hidden_size", "intermediate_size",
                           "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                           "head_dim", "max_position_embeddings", "rms_norm_eps", "rope_theta",
                           "rope_scaling", "rope_type", "llama3", "factor", "low_freq_factor",
                           "high_freq_factor", "original_max_position_embeddings",
                           "tie_word_embeddings", "vocab_size", "attention_bias", "mlp_bias",
                           "LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM",
                           "use_sliding_window", "sliding_window", "max_window_layers",
                           "layer_types", "sliding_attention", "full_attention", "yarn",
                           "beta_fast", "beta_slow", "attention_factor", "mscale",
                           "mscale_all_dim", "truncate",
                           "quantization_config", "compression_config", "quant_method",
                           "compressed-tensors", "fp8", "format", "float-quantized",
                           "naive-quantized", "pack-quantized", "config_groups", "weights",
                           "input_activations", "num_bits", "type", "float", "strategy",
                           "tensor", "channel", "token", "block", "dynamic", "symmetric",
                           "block_structure", "ignore", "ignored_layers", "activation_scheme",
                           "static", "weight_block_size", "kv_cache_scheme", "sparsity_config",
                           "1e308", "-1", "2147483648"],
    }
    for target, words in dicts.items():
        with open(os.path.join(args.out, target + ".dict"), "w", encoding="utf-8") as f:
            f.write(f"# {target}: libFuzzer dictionary (tools/make_fuzz_seeds.py)\n")
            for i, wd in enumerate(words):
                raw = wd if isinstance(wd, bytes) else wd.encode("utf-8")
                esc = "".join(chr(b) if 0x20 <= b < 0x7f and b not in b'"\\' else f"\\x{b:02x}"
                              for b in raw)
                f.write(f'w{i}="{esc}"\n')


if __name__ == "__main__":
    main()
