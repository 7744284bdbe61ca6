#!/usr/bin/env python3
"""Write Hugging Face tokenizer.json files built from a GGUF file's tokenizer.ggml.* metadata.

Used by the tokenizer tests (tests/unit/test_tokenizer.c runs it at test time, so no
tokenizer.json is committed) and by tools/gen_tokenizer_golden.py (which loads the same files
with the `tokenizers` library as the oracle). Needs only the `gguf` package (and numpy).

For each variant a directory OUT/<variant>/ receives tokenizer.json (and, for the SmolLM2
variants, tokenizer_config.json with bos/eos/add_bos_token/chat_template from the GGUF):

  smollm2-legacy   the real SmolLM2 pipeline (its tokenizer.json): pre_tokenizer
                   Sequence[Digits(individual_digits), ByteLevel(use_regex)]; merges as "a b"
                   strings; written with ensure_ascii (every non-ASCII char as \\uXXXX, astral
                   ones as surrogate pairs).
  smollm2-pairs    the same with merges as ["a", "b"] pairs (tokenizers >= 0.20), raw UTF-8.
  llama3-pattern   the same vocabulary and merges under the Llama-3 pipeline:
                   Sequence[Split(llama3 regex, Isolated), ByteLevel(use_regex=false)], with
                   ignore_merges (as Llama-3's own file) and a TemplateProcessing post-processor
                   that puts <|endoftext|> first (a BOS given by the post-processor, no config).
  spm              for a SentencePiece GGUF (tokenizer.ggml.model = "llama", e.g. Gemma 3): the
                   pipeline transformers' SentencePiece converters write: normalizer
                   Replace(" ", "▁") (after Prepend("▁") when add_space_prefix), no
                   pre_tokenizer, a BPE model with byte_fallback and fuse_unk, and decoders
                   Replace("▁", " "), ByteFallback, Fuse (then Strip(" ", 1, 0) with the prefix).
                   The merges are made from the vocabulary the way transformers'
                   SentencePieceExtractor makes them: every split of a token into two tokens,
                   ordered by the merged token's score (descending), then its id, then the ids of
                   the two parts; control and user-defined tokens are added tokens (not
                   normalized), as tokenizer.ggml.token_type says.

Usage: python3 tools/gguf_to_tokenizer_json.py GGUF OUT [--only VARIANT ...]
(a "llama" GGUF writes only the spm variant)
"""
import argparse
import json
import os
import sys

import gguf

GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
VARIANTS = ("smollm2-legacy", "smollm2-pairs", "llama3-pattern")
SPM_VARIANTS = ("spm",)
SPM_MARK = "\u2581"
TOKEN_CONTROL, TOKEN_USER_DEFINED = 3, 4


def read_gguf_tokenizer(path):
    """The tokenizer.ggml.* metadata as plain Python values."""
    r = gguf.GGUFReader(path)

    def field(key):
        return r.fields.get(key)

    def strings(key):
        f = field(key)
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]

    def scalar(key, default=None):
        f = field(key)
        if f is None:
            return default
        v = f.parts[f.data[0]]
        if f.types[0] == gguf.GGUFValueType.STRING:
            return bytes(v).decode("utf-8")
        return v[0].item()

    f = field("tokenizer.ggml.token_type")
    types = [int(f.parts[i][0]) for i in f.data] if f else None
    model = scalar("tokenizer.ggml.model")
    if model not in ("gpt2", "llama"):
        raise SystemExit(f"{path}: tokenizer.ggml.model is {model!r}, not 'gpt2' or 'llama'")
    f = field("tokenizer.ggml.scores")
    tok = {
        "model": model,
        "tokens": strings("tokenizer.ggml.tokens"),
        "types": types,
        "merges": strings("tokenizer.ggml.merges") if model == "gpt2" else [],
        "scores": [float(f.parts[i][0]) for i in f.data] if f else None,
        "add_space_prefix": bool(scalar("tokenizer.ggml.add_space_prefix", True)),
        "pre": scalar("tokenizer.ggml.pre"),
        "bos": scalar("tokenizer.ggml.bos_token_id"),
        "eos": scalar("tokenizer.ggml.eos_token_id"),
        "unk": scalar("tokenizer.ggml.unknown_token_id"),
        "pad": scalar("tokenizer.ggml.padding_token_id"),
        "add_bos": bool(scalar("tokenizer.ggml.add_bos_token", False)),
        "chat_template": scalar("tokenizer.chat_template"),
    }
    if tok["types"] is None:
        tok["types"] = [1] * len(tok["tokens"])
    return tok


def spm_merges(tokens, scores):
    """Merges of a SentencePiece vocabulary in transformers' SentencePieceExtractor order."""
    vocab = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)
    merges = []
    for t, i in vocab.items():
        for k in range(1, len(t)):
            a, b = vocab.get(t[:k]), vocab.get(t[k:])
            if a is not None and b is not None:
                merges.append((-scores[i], i, a, b, t[:k], t[k:]))
    merges.sort()
    return [[m[4], m[5]] for m in merges]


def spm_tokenizer_json(tok):
    tokens, types = tok["tokens"], tok["types"]
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": types[i] == TOKEN_CONTROL}
             for i, t in enumerate(tokens) if types[i] in (TOKEN_CONTROL, TOKEN_USER_DEFINED)]
    replace = {"type": "Replace", "pattern": {"String": " "}, "content": SPM_MARK}
    decoders = [{"type": "Replace", "pattern": {"String": SPM_MARK}, "content": " "},
                {"type": "ByteFallback"}, {"type": "Fuse"}]
    if tok["add_space_prefix"]:
        normalizer = {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": SPM_MARK}, replace]}
        decoders.append({"type": "Strip", "content": " ", "start": 1, "stop": 0})
    else:
        normalizer = replace
    vocab = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)
    unk = tok["unk"]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": None,
        "post_processor": None,
        "decoder": {"type": "Sequence", "decoders": decoders},
        "model": {"type": "BPE", "dropout": None,
                  "unk_token": tokens[unk] if unk is not None else None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": vocab, "merges": spm_merges(tokens, tok["scores"])},
    }


def tokenizer_json(tok, variant):
    if variant == "spm":
        return spm_tokenizer_json(tok)
    tokens, types = tok["tokens"], tok["types"]
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": types[i] == TOKEN_CONTROL}
             for i, t in enumerate(tokens) if types[i] in (TOKEN_CONTROL, TOKEN_USER_DEFINED)]
    pairs = [m.split(" ") for m in tok["merges"]]
    if variant == "smollm2-pairs":
        merges = pairs
    else:
        merges = tok["merges"]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                  "use_regex": True}
    if variant == "llama3-pattern":
        pre = {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_REGEX}, "behavior": "Isolated",
             "invert": False},
            dict(byte_level, use_regex=False)]}
        bos = tokens[0]
        post = {"type": "Sequence", "processors": [
            {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
             "use_regex": True},
            {"type": "TemplateProcessing",
             "single": [{"SpecialToken": {"id": bos, "type_id": 0}},
                        {"Sequence": {"id": "A", "type_id": 0}}],
             "pair": [{"SpecialToken": {"id": bos, "type_id": 0}},
                      {"Sequence": {"id": "A", "type_id": 0}},
                      {"SpecialToken": {"id": bos, "type_id": 1}},
                      {"Sequence": {"id": "B", "type_id": 1}}],
             "special_tokens": {bos: {"id": bos, "ids": [0], "tokens": [bos]}}}]}
    else:
        pre = {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True}, byte_level]}
        post = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
                "use_regex": True}
    vocab = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": pre,
        "post_processor": post,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": variant == "llama3-pattern",
                  "vocab": vocab, "merges": merges},
    }


def tokenizer_config(tok):
    tokens = tok["tokens"]

    def name(i):
        return tokens[i] if i is not None and 0 <= i < len(tokens) else None

    return {
        "add_bos_token": tok["add_bos"],
        "add_prefix_space": False,
        "bos_token": name(tok["bos"]),
        "eos_token": name(tok["eos"]),
        "pad_token": name(tok["pad"]),
        "unk_token": name(tok["unk"]),
        "chat_template": tok["chat_template"],
        "clean_up_tokenization_spaces": False,
        "tokenizer_class": "GPT2Tokenizer",
    }


def write_variants(gguf_path, out, only=VARIANTS):
    tok = read_gguf_tokenizer(gguf_path)
    if tok["model"] == "llama":
        only = SPM_VARIANTS
    elif tok["pre"] not in ("smollm", None):
        print(f"note: {gguf_path} has pre-tokenizer {tok['pre']!r}; writing the SmolLM2 "
              "pipeline anyway", file=sys.stderr)
    paths = {}
    for v in only:
        d = os.path.join(out, v)
        os.makedirs(d, exist_ok=True)
        p = os.path.join(d, "tokenizer.json")
        with open(p + ".tmp", "w", encoding="utf-8") as f:
            json.dump(tokenizer_json(tok, v), f, ensure_ascii=(v == "smollm2-legacy"))
        os.replace(p + ".tmp", p)
        cp = os.path.join(d, "tokenizer_config.json")
        if v.startswith("smollm2"):
            with open(cp, "w", encoding="utf-8") as f:
                json.dump(tokenizer_config(tok), f, ensure_ascii=False, indent=1)
        elif os.path.exists(cp):
            os.remove(cp)
        paths[v] = p
    return paths


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("gguf")
    ap.add_argument("out")
    ap.add_argument("--only", action="append", choices=VARIANTS + SPM_VARIANTS)
    a = ap.parse_args()
    for v, p in write_variants(a.gguf, a.out, tuple(a.only or VARIANTS)).items():
        print(p)


if __name__ == "__main__":
    main()
