#!/usr/bin/env python3
"""Generate the tokenizer goldens: tests/golden/tokenizer_smollm2.json,
tests/golden/tokenizer_llama3pattern.json, tests/golden/tokenizer_gemma3.json (a SentencePiece
GGUF), and two trained models with their goldens: tests/golden/tokenizer_bytefallback.json
(+ tokenizer_bytefallback.model.json) and tests/golden/tokenizer_qwen2pattern.json
(+ tokenizer_qwen2pattern.model.json).

The oracle, and why it is built this way
----------------------------------------
There is no access to huggingface.co, so the real SmolLM2 tokenizer.json cannot be fetched. The
obvious oracle, transformers' own GGUF conversion
(AutoTokenizer.from_pretrained("models", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")), turns out
to give a plain ByteLevel pre_tokenizer: it LACKS SmolLM2's Digits(individual_digits=true) step
(the real file has Sequence[Digits(individual_digits), ByteLevel(use_regex)] in its tokenizer.json,
which is also what the GGUF's tokenizer.ggml.pre = "smollm" means to llama.cpp). So it is
not a faithful oracle for text with numbers.

The oracle is therefore the `tokenizers` library running the real SmolLM2 pipeline over the
GGUF's own vocabulary, token types and merges: tools/gguf_to_tokenizer_json.py writes that
tokenizer.json (from the GGUF via the `gguf` package) and this script loads it with
tokenizers.Tokenizer.from_file. It is cross-checked here against transformers' GGUF conversion:
the ids must agree on every golden string without a numeric (\\p{N}) code point, which is where
the two pipelines are the same; the strings where they differ are counted and must all contain
digits (the script stops otherwise).

Both goldens use the same vocabulary and merges. tokenizer_llama3pattern.json holds ids from the
Llama-3 pipeline variant (Split with the Llama-3 regex + ByteLevel(use_regex=false),
ignore_merges, <|endoftext|> added first by the post-processor), which exercises TOK_PRE_LLAMA3
and the JSON loader's other branches.

Each case stores the text (and its UTF-8 as hex, since C strings cannot hold NUL), the ids with
special tokens parsed ("ids"; HF split_special_tokens=False) and, when different, with them
treated as text ("ids_split"; split_special_tokens=True), and the oracle's decode of "ids" when
it differs from the text ("decode"), plus the decode with skip_special_tokens ("decode_skip").

SentencePiece (Gemma 3)
-----------------------
tokenizer_gemma3.json comes from Gemma 3 270M's own GGUF (tools/fetch_model.py --gemma3): its
vocabulary, scores and token types written as a tokenizer.json by tools/gguf_to_tokenizer_json.py
(variant spm: the pipeline and merge order of transformers' SentencePiece converters, see there)
and run by the `tokenizers` library. The cases are the SmolLM2 strings plus Gemma's own control
and user-defined tokens in text.

Trained models (made here, committed as test data)
--------------------------------------------------
tokenizer_bytefallback.model.json: a Llama-2-style BPE trained by `tokenizers` on the corpus
(normalizer Prepend("▁") + Replace(" ", "▁"), byte_fallback with the 256 <0xNN> tokens, fuse_unk,
decoders Replace/ByteFallback/Fuse/Strip), alphabet limited so that rarer characters fall back to
bytes; tokenizer_metaspace_first.json and tokenizer_metaspace_always.json are goldens of the same
model in transformers' non-legacy form (no normalizer; pre_tokenizer Metaspace("▁",
prepend_scheme first / always, split false), and tokenizer_bytefallback_noprefix.json of its
legacy form without add_prefix_space (normalizer Sequence[Replace], no Strip decoder); those model
files are written at test time from the committed one by the Criterion test, so only the goldens
are committed).
tokenizer_qwen2pattern.model.json: a byte-level BPE trained with Qwen2's pre-tokenizer
(Split(Qwen2 regex, Isolated) + ByteLevel(use_regex=false)); tokenizer_qwen2pattern.gguf holds
the same vocabulary and merges as a tokenizer-only GGUF with tokenizer.ggml.pre = "qwen2", so the
GGUF route is checked against the same golden; tokenizer_qwen2nfc.model.json is that model with
Qwen2's real normalizer, NFC (tokenizer_qwen2nfc.json: the corpus plus decomposed and
composed forms, Hangul jamo, reordering, singletons and composition exclusions). Training is
deterministic for a
given `tokenizers` version (0.23.3 made the committed files); --train rewrites them, otherwise the
committed models are used.

SentencePiece itself (Llama-2 style GGUF)
-----------------------------------------
tokenizer_spm.model is a BPE model trained by the `sentencepiece` library (0.2.x) the way
Llama-2's is set up (byte_fallback, add_dummy_prefix, identity normalization, no removal of
extra whitespace), and tokenizer_spm.gguf carries its pieces, scores and types as a
tokenizer-only GGUF (tokenizer.ggml.model "llama", add_space_prefix true, add_bos_token true), so
that flashgen's GGUF path is checked against SentencePiece's own encode and decode
(tokenizer_spm.json). Texts holding a control token string (<s>, </s>, <unk>) are left out:
SentencePiece reads them as text, flashgen (like llama.cpp) as the token.

Needs (only to regenerate; CI compares against the committed files): tokenizers==0.23.3,
sentencepiece 0.2.x, gguf; transformers for the SmolLM2 cross-check (--no-transformers skips it).

Usage: python3 tools/gen_tokenizer_golden.py [--gguf models/SmolLM2-135M-Instruct.Q4_1.gguf]
           [--gemma3 models/gemma-3-270m-q4_k_m.gguf] [--only smollm2|gemma3|trained|spm] [--train]
"""
import argparse
import json
import os
import random
import sys
import tempfile
import unicodedata

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gguf_to_tokenizer_json  # noqa: E402

from tokenizers import Tokenizer  # noqa: E402


def corpus():
    s = []
    # English prose, punctuation, casing
    s += [
        "Hello world", "Hello, world!", "The quick brown fox jumps over the lazy dog.",
        "What is the capital of France?", "I love machine learning.", "hello", "HELLO", "Hello",
        "hElLo WoRlD", "ALL CAPS SENTENCE WITH SHOUTING!!!", "e.g. i.e. etc. Mr. Smith",
        "Once upon a time, in a land far, far away, there lived a small dragon.",
        "She said: \"Don't go!\" -- and left.", "(parentheses) [brackets] {braces} <angles>",
        "semi;colon:colon,comma.period?question!bang", "a", "A", " ", "", "ab", "x y z",
        "wow...", "...", "?!?!", "--", "a-b_c", "snake_case_name", "camelCaseName",
        "PascalCaseName", "kebab-case-name", "email@example.com", "https://example.com/a/b?c=d&e=f",
        "#hashtag @mention $dollar %percent ^caret &amp *star", "~tilde `backtick` |pipe| \\slash/",
    ]
    # contractions
    s += [
        "I'm here", "you're there", "they've gone", "I'll go", "he'd say", "it's fine",
        "don't", "can't", "won't", "DON'T", "I'M", "YOU'RE", "IT'S", "'S", "'s", "'t", "'re",
        "'ll", "'d", "'m", "'ve", "'sup", "''s", "'''", "rock'n'roll", "o'clock", "'x",
        "The dog's bone", "James' book", "it’s curly", "I'M SURE IT'LL BE FINE",
    ]
    # digits and numbers
    s += [
        "123", "1234567890", "a 12", "a 12 345", "3.14159", "1,000,000", "-42", "+7", "1e10",
        "0x1F", "2024-01-15", "12:30:45", "$19.99", "100%", "v1.2.3", "abc123def", "123abc",
        " 1", "  22", "x=1+2*3", "phone: +1 (555) 123-4567", "٣٤٥ Arabic-Indic digits",
        "१२३ Devanagari digits", "Ⅻ roman numeral", "½ ¾ ¼", "x² + y³", "①②③", "１２３ fullwidth",
        "3rd 2nd 1st 4th", "2^10 = 1024",
    ]
    # whitespace
    s += [
        "a   b", "\n\nHi", "\t\tx", "trailing   ", "  leading", "a\r\nb", "a \n b", "line1\nline2\n",
        "\n", "\n\n\n", "\t", " \t \n ", "x\n\n\ny", "x \n\n y", "a\tb\tc", "   ", "a  ", " a",
        "two  spaces", "\u3000ideographic space", "nbsp\u00a0here", "thin\u2009space",
        "line\u2028sep", "para\u2029sep", "nel\u0085next", "word \u00a0 word", " \n\t\r ",
        "end with newline\n", "  indented\n    more\n", "\r\r\n\n\r",
    ]
    # code
    s += [
        "def foo(x):\n    return x + 1\n",
        "int main(void) {\n\tprintf(\"%d\\n\", 42);\n\treturn 0;\n}\n",
        "for (let i = 0; i < n; i++) { console.log(i); }",
        "fn main() -> Result<(), Box<dyn Error>> { Ok(()) }",
        "SELECT id, name FROM users WHERE age >= 18 ORDER BY name;",
        "<div class=\"box\"><p>Hi &amp; bye</p></div>",
        "{\"key\": [1, 2, 3], \"nested\": {\"a\": null}}",
        "#!/bin/bash\nset -euo pipefail\necho \"$HOME\" | grep -v '^#'\n",
        "x = [i**2 for i in range(10) if i % 2 == 0]",
        "public static void Main(string[] args) { }",
        "    if (a && b || !c) { return; }",
        "import numpy as np\narr = np.zeros((3, 4), dtype=np.float32)",
        "// comment\n/* block */\n# hash\n-- sql",
        "a->b; a::b; a=>b; a!=b; a<=b; a>=b; a===b; a..b",
        "@decorator\nclass Foo(Bar):\n    pass",
        "\tstruct tokenizer *t = NULL;\n",
        "LaTeX: $\\frac{a}{b} = \\sqrt{x^2}$",
        "git commit -m 'fix: tokenizer'",
    ]
    # other scripts, accents, combining
    s += [
        "café", "naïve résumé", "Ångström", "e\u0301", "cafe\u0301", "Z\u0351\u0300a\u0315lgo",
        "Привет, мир!", "Здравствуйте", "Γειά σου Κόσμε", "مرحبا بالعالم", "שלום עולם",
        "नमस्ते दुनिया", "हिन्दी", "你好，世界", "我爱自然语言处理。", "日本語のテキスト",
        "カタカナ", "ひらがな", "한국어 텍스트", "สวัสดีชาวโลก", "Tiếng Việt có dấu",
        "Ελληνικά και English mixed", "中文English混合123", "ﬁ ligature", "Ⅷ ℃ ™ ©",
        "straße", "İstanbul ıi", "ǅ titlecase", "ऍ॑", "ক্ষ",
    ]
    # emoji, symbols, odd text
    s += [
        "😀", "Hello 😀 world", "👨\u200d👩\u200d👧\u200d👦 family", "🇺🇸🇫🇷 flags",
        "👍🏽 thumbs", "❤️ heart", "🤖🚀✨", "emoji😀mid", "😀😀😀", "☃ ★ ♠ ♣",
        "a\u200bb zero width", "\ufeffBOM", "\ufffd replacement", "x\ufffdy",
        "\\ud800 escaped surrogate text", "\\uDFFF\\uD83D", "\x00nul", "ctrl\x01\x02\x07",
        "\x1b[31mred\x1b[0m", "del\x7f", "\x1c\x1d\x1e\x1f sep",
        "ctrl\x04\x06\x13\x14\x16 bytes missing from the vocab", "\U00050000 \U0007ffff planes 5-7", "\U0010ffff max",
        "\U0001f600\U0001f601", "\u00ad soft hyphen", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "𝟘𝟙𝟚", "tab\u000bvtab\u000cff",
    ]
    # special tokens embedded in text
    s += [
        "<|im_start|>", "<|im_end|>", "<|endoftext|>",
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
        "<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
        "x<|endoftext|>y", "<|im_start", "<|im_start|", "<<|im_start|>>", "<|im_end|>|>",
        "<|im_start|><|im_end|>", "<repo_name>foo<file_sep>bar", "<reponame><filename>",
        "<jupyter_start><jupyter_code>print(1)<jupyter_output>1<empty_output>",
        "<gh_stars>100", "text <issue_start> more <issue_comment> end <issue_closed>",
        "< |im_start| >", "<|IM_START|>", " <|im_start|> ", "<|im_start|>\n\n<|im_end|>",
    ]
    # longer mixed texts
    para = ("Large language models (LLMs) are trained on 1.5 trillion tokens; they can write "
            "code, e.g. `print('hi')`, translate 你好 → hello, and count: 1, 2, 3... 🚀\n\n")
    s.append(para * 8)
    s.append(" ".join(["word"] * 200))
    s.append(" " * 300 + "x")
    s.append("\n" * 50 + "end")
    s.append("a" * 500)
    s.append("1" * 100)
    s.append("🙂" * 60)
    # random strings from a mixed pool (fixed seed)
    rng = random.Random(1234)
    pool = (list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") * 3 + list("0123456789") * 2
            + list(" " * 12 + "\n\n\t\r") + list(".,;:!?'\"()[]{}<>-_=+*/\\|@#$%^&~`")
            + list("éüßçñ") + list("你好世界") + ["😀", "👍🏽", "\u200d", "\u0301", "\u00a0"]
            + list("ПриветΩαβ") + list("٣½²") + ["'s", "'re", "'LL", "<|im_start|>", "<|im_end|>"])
    for _ in range(100):
        s.append("".join(rng.choice(pool) for _ in range(rng.randint(1, 40))))
    return s


QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
               r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
SPM_MARK = "\u2581"


def gemma_corpus():
    """Strings for Gemma 3: the common corpus plus its control and user-defined tokens."""
    return corpus() + [
        "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n",
        "<bos><start_of_turn>user\nHi<end_of_turn>", "<bos>", "<eos>", "x<eos>y", "<pad><unk>",
        "<mask>", "[multimodal]", "<unused0><unused98>", "<start_of_image>", "<end_of_image>",
        "<start_of_turn>", "<end_of_turn>", "< start_of_turn>", "<start_of_turn", "<START_OF_TURN>",
        "<div><span>a</span></div>", "</li></ul>", "<table><tr><td>1</td></tr></table>",
        "\t\t\t\tindent", "\n\n\n\n\n\nmany", "a\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\nb",
        "    four spaces", "        eight spaces", " " * 40 + "forty", "\u2581 literal marker",
        "\u2581\u2581x", "<0x41> looks like a byte token", "<0xZZ>", "▁Hello",
        "Grüße aus München", "Ça va? Très bien.", "¿Qué tal? ¡Hola!", "Ελληνικά", "ภาษาไทย",
        "中华人民共和国", "東京都", "ㄅㄆㄇ", "𠀀𠀁 CJK ext B", "ʻokina", "ŉ ǈ ǋ", "ⓐⓑⓒ",
        "\x00", "\x00\x00", "a\x00b", "\x7f\x80", "\u0300 leading combining", "a\u0301\u0302\u0303",
    ]


def train_corpus():
    """Deterministic training text: the corpus and generated English-like lines."""
    rng = random.Random(7)
    words = ("the of and to in is that for it as was with be by on not he this are or his from "
             "at which but have an they you were her she there been one all we their has would "
             "when if so what no out up into more can said about its time only could new them "
             "model token tokenizer merge byte fallback space print return value function class "
             "import data 2024 10 100 3.14 x y z").split()
    lines = corpus() * 3
    for _ in range(3000):
        n = rng.randint(3, 16)
        line = " ".join(rng.choice(words) for _ in range(n))
        if rng.random() < 0.3:
            line = line.capitalize() + rng.choice([".", "!", "?", ",", ":"])
        if rng.random() < 0.2:
            line = "    " + line
        lines.append(line)
    return lines


def train_bytefallback(texts):
    from tokenizers import decoders, models, normalizers, trainers
    tk = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tk.normalizer = normalizers.Sequence([normalizers.Prepend(SPM_MARK),
                                          normalizers.Replace(" ", SPM_MARK)])
    tk.decoder = decoders.Sequence([decoders.Replace(SPM_MARK, " "), decoders.ByteFallback(),
                                    decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    specials = ["<unk>", "<s>", "</s>"]
    tr = trainers.BpeTrainer(vocab_size=900, special_tokens=specials, limit_alphabet=90,
                             show_progress=False)
    tk.train_from_iterator(texts, tr)
    j = json.loads(tk.to_str())
    # Llama-2's layout: the specials, then the 256 byte tokens, then the learned pieces.
    learned = sorted((i, t) for t, i in j["model"]["vocab"].items() if t not in specials)
    vocab = {t: i for i, t in enumerate(specials)}
    for b in range(256):
        vocab.setdefault(f"<0x{b:02X}>", len(vocab))
    for _, t in learned:
        vocab.setdefault(t, len(vocab))
    j["model"]["vocab"] = vocab
    for a in j["added_tokens"]:
        a["id"] = vocab[a["content"]]
    j["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                   {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                 {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": "<s>", "type_id": 1}},
                 {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}}
    return Tokenizer.from_str(json.dumps(j))


def train_qwen2pattern(texts):
    from tokenizers import Regex, decoders, models, pre_tokenizers, trainers
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
    tk.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=1000, show_progress=False,
                             special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(texts, tr)
    return tk


def has_numeric(text):
    return any(unicodedata.category(c).startswith("N") for c in text)


def encode(tok, text, split_special):
    tok.encode_special_tokens = split_special
    try:
        return tok.encode(text, add_special_tokens=False).ids
    finally:
        tok.encode_special_tokens = False


def make_cases(tok, texts):
    cases = []
    for text in texts:
        ids = encode(tok, text, False)
        ids_split = encode(tok, text, True)
        c = {"text": text, "hex": text.encode("utf-8").hex(), "ids": ids}
        if ids_split != ids:
            c["ids_split"] = ids_split
        dec = tok.decode(ids, skip_special_tokens=False)
        if dec != text:
            c["decode"] = dec
        dec_skip = tok.decode(ids, skip_special_tokens=True)
        if dec_skip != dec:
            c["decode_skip"] = dec_skip
        cases.append(c)
    return cases


def cross_check_transformers(gguf_path, tok, texts):
    """Agreement with transformers' GGUF conversion where the pipelines coincide."""
    from transformers import AutoTokenizer
    d, f = os.path.split(os.path.abspath(gguf_path))
    hf = AutoTokenizer.from_pretrained(d, gguf_file=f)
    pre = json.loads(hf.backend_tokenizer.to_str())["pre_tokenizer"]
    differ = 0
    for text in texts:
        a = hf(text, add_special_tokens=False)["input_ids"]
        b = encode(tok, text, False)
        if a != b:
            differ += 1
            if not has_numeric(text):
                raise SystemExit(f"oracle and transformers disagree on digit-free {text!r}:\n"
                                 f"  transformers {a}\n  oracle       {b}")
        if hf.decode(a, skip_special_tokens=False, clean_up_tokenization_spaces=False) != \
                tok.decode(a, skip_special_tokens=False):
            raise SystemExit(f"decode disagrees on {text!r}")
    return pre, differ


def write_golden(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=True, indent=0)
        f.write("\n")
    print(f"{path}: {len(obj['cases'])} cases, {os.path.getsize(path)} bytes", file=sys.stderr)


def gen_gemma3(a):
    texts = gemma_corpus()
    with tempfile.TemporaryDirectory() as tmp:
        paths = gguf_to_tokenizer_json.write_variants(a.gemma3, tmp)
        tok = Tokenizer.from_file(paths["spm"])
        cases = make_cases(tok, texts)
    src = ("tokenizers Tokenizer.from_file(tokenizer.json written by tools/gguf_to_tokenizer_json.py"
           " from %s), variant spm; see tools/gen_tokenizer_golden.py" % os.path.basename(a.gemma3))
    write_golden(os.path.join(a.out, "tokenizer_gemma3.json"), {"oracle": src, "cases": cases})


def json_to_gguf(model_json, gguf_path, pre):
    """A byte-level BPE tokenizer.json as a tokenizer-only GGUF (tokenizer.ggml.model gpt2)."""
    import gguf
    j = json.load(open(model_json, encoding="utf-8"))
    vocab = dict(j["model"]["vocab"])
    special = set()
    for t in j["added_tokens"]:
        vocab[t["content"]] = t["id"]
        if t["special"]:
            special.add(t["id"])
    tokens = [None] * (max(vocab.values()) + 1)
    for t, i in vocab.items():
        tokens[i] = t
    merges = [m if isinstance(m, str) else " ".join(m) for m in j["model"]["merges"]]
    w = gguf.GGUFWriter(gguf_path, "llama")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types([3 if i in special else 1 for i in range(len(tokens))])
    w.add_token_merges(merges)
    w.add_eos_token_id(vocab["<|im_end|>"])
    w.add_add_bos_token(False)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def nfc_corpus():
    """Strings whose NFC differs from them, or nearly: every normalization rule gets a case."""
    rng = random.Random(11)
    s = ["e\u0301", "cafe\u0301", "Cafe\u0301 au lait", "A\u030a", "\u212b", "\u2126 ohm",
         "\u0958 exclusion", "\u0344", "\u0f73", "\u1e9b\u0323", "a\u0323\u0307", "a\u0307\u0323",
         "q\u0307\u0323", "\u1100\u1161", "\u1100\u1161\u11a8", "\uac00\u11a8",
         "\u1112\u1161\u11ab\u1100\u1173\u11af", "\u304b\u3099", "\u30cf\u309a",
         "\u0b47\u0b3e", "\u0b47\u0b57", "\U0001d15e", "\U000110a5\U000110ba",
         "Vie\u0323\u0302t Nam", "n\u0303o\u0308", "\u00c5\u0301", "o\u031b\u0323",
         "x\u0301\u0301\u0301", "\u05d0\u05b0\u0591", "\u0301 leading", "e\u0301<|im_end|>\u0301",
         "I\u0307stanbul", "\u1e0b\u0323", "\u0041\u030a\u0301", "\ufb01 ligature kept"]
    marks = ["\u0300", "\u0301", "\u0302", "\u0303", "\u0308", "\u030a", "\u0323", "\u0327",
             "\u0328", "\u0331", "\u0345", "\u3099"]
    bases = list("aeiouAEIOUcnsyzCNSY") + ["\u1100", "\u1161", "\u11a8", "\u304b", " ", "1"]
    for _ in range(60):
        s.append("".join(rng.choice(bases) + "".join(rng.choice(marks)
                                                      for _ in range(rng.randint(0, 3)))
                         for _ in range(rng.randint(1, 8))))
    return s


def gen_trained(a):
    train = train_corpus()
    for name, fn in (("bytefallback", train_bytefallback), ("qwen2pattern", train_qwen2pattern)):
        model = os.path.join(a.out, f"tokenizer_{name}.model.json")
        if a.train or not os.path.exists(model):
            with open(model, "w", encoding="utf-8") as f:
                f.write(fn(train).to_str())
                f.write("\n")
        tok = Tokenizer.from_file(model)
        if name == "qwen2pattern":
            json_to_gguf(model, os.path.join(a.out, f"tokenizer_{name}.gguf"), "qwen2")
        texts = corpus() + ["<s>", "</s>", "<unk>", "x</s>y", "<s><s>", " <s> a", "\u2581 marker",
                            "\u2581\u2581", "<0x41>", "  two  spaces  ", "\x00\x01", "é" * 5,
                            "12345678901234567890", "٣٤٥٦", "x1y22z333", "a 1 b 22 c 333",
                            "<|im_start|>user\n12345<|im_end|>", "I'M 'S 'T 'RE 99 bottles"]
        cases = make_cases(tok, texts)
        src = (f"tokenizers Tokenizer.from_file(tests/golden/tokenizer_{name}.model.json, trained "
               "by tools/gen_tokenizer_golden.py)")
        write_golden(os.path.join(a.out, f"tokenizer_{name}.json"), {"oracle": src, "cases": cases})
        if name == "bytefallback":
            j = json.load(open(model, encoding="utf-8"))
            j["normalizer"] = {"type": "Sequence", "normalizers": [j["normalizer"]["normalizers"][1]]}
            j["decoder"]["decoders"] = j["decoder"]["decoders"][:3]
            ntok = Tokenizer.from_str(json.dumps(j))
            src = ("tokenizers Tokenizer.from_str(tests/golden/tokenizer_bytefallback.model.json "
                   "with normalizer Sequence[Replace] and decoders without Strip)")
            write_golden(os.path.join(a.out, "tokenizer_bytefallback_noprefix.json"),
                         {"oracle": src, "cases": make_cases(ntok, texts)})
            for scheme in ("first", "always"):
                j = json.load(open(model, encoding="utf-8"))
                j["normalizer"] = None
                j["pre_tokenizer"] = {"type": "Metaspace", "replacement": SPM_MARK,
                                      "prepend_scheme": scheme, "split": False}
                mtok = Tokenizer.from_str(json.dumps(j))
                mcases = make_cases(mtok, texts + [
                    "<s>hello", "<s> hello", "hello<s>world", "hello</s> world", " x", "\u2581x",
                    "\u2581\u2581x", "a</s>\u2581b", "<unk>  <unk>", "\n x"])
                src = ("tokenizers Tokenizer.from_str(tests/golden/tokenizer_bytefallback.model.json "
                       "with normalizer null and pre_tokenizer Metaspace(prepend_scheme %s, "
                       "split false))" % scheme)
                write_golden(os.path.join(a.out, f"tokenizer_metaspace_{scheme}.json"),
                             {"oracle": src, "cases": mcases})
        if name != "qwen2pattern":
            continue
        j = json.load(open(model, encoding="utf-8"))
        j["normalizer"] = {"type": "NFC"}
        nfc_model = os.path.join(a.out, "tokenizer_qwen2nfc.model.json")
        with open(nfc_model, "w", encoding="utf-8") as f:
            json.dump(j, f, ensure_ascii=False)
            f.write("\n")
        tok = Tokenizer.from_file(nfc_model)
        cases = make_cases(tok, corpus() + nfc_corpus())
        src = ("tokenizers Tokenizer.from_file(tests/golden/tokenizer_qwen2nfc.model.json: the "
               "qwen2pattern model with normalizer NFC)")
        write_golden(os.path.join(a.out, "tokenizer_qwen2nfc.json"), {"oracle": src, "cases": cases})


def train_spm(texts, model_path):
    import io
    import sentencepiece as spm
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(t for t in texts if t), model_writer=buf, model_type="bpe",
        vocab_size=1000, byte_fallback=True, normalization_rule_name="identity",
        remove_extra_whitespaces=False, add_dummy_prefix=True, character_coverage=0.99,
        split_digits=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1,
        minloglevel=2)
    with open(model_path, "wb") as f:
        f.write(buf.getvalue())


def spm_to_gguf(model_path, gguf_path):
    import gguf
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=model_path)
    tokens, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        tokens.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        types.append(2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 6 if sp.is_byte(i)
                     else 5 if sp.is_unused(i) else 1)
    w = gguf.GGUFWriter(gguf_path, "llama")
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(sp.bos_id())
    w.add_eos_token_id(sp.eos_id())
    w.add_unk_token_id(sp.unk_id())
    w.add_add_bos_token(True)
    w.add_add_space_prefix(True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def gen_spm(a):
    import sentencepiece as spm
    model = os.path.join(a.out, "tokenizer_spm.model")
    gg = os.path.join(a.out, "tokenizer_spm.gguf")
    if a.train or not os.path.exists(model):
        train_spm(train_corpus(), model)
    spm_to_gguf(model, gg)
    sp = spm.SentencePieceProcessor(model_file=model)
    texts = corpus() + ["  two  spaces  ", " leading", "\u2581 marker", "\u2581\u2581",
                        "<0x41>", "é" * 5, "12345678901234567890", "x1y22z333", "\x00\x01"]
    cases = []
    for text in texts:
        if any(c in text for c in ("<s>", "</s>", "<unk>")):
            continue
        ids = sp.encode(text)
        c = {"text": text, "hex": text.encode("utf-8").hex(), "ids": ids}
        dec = sp.decode(ids)
        if dec != text:
            c["decode"] = dec
        cases.append(c)
    src = ("sentencepiece %s SentencePieceProcessor(tests/golden/tokenizer_spm.model).encode/decode;"
           " flashgen reads tests/golden/tokenizer_spm.gguf" % spm.__version__)
    write_golden(os.path.join(a.out, "tokenizer_spm.json"), {"oracle": src, "cases": cases})


def main():
    ap = argparse.ArgumentParser(description="generate tokenizer goldens")
    ap.add_argument("--gguf", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--gemma3", default="models/gemma-3-270m-q4_k_m.gguf")
    ap.add_argument("--out", default="tests/golden")
    ap.add_argument("--only", choices=("smollm2", "gemma3", "trained", "spm"), action="append")
    ap.add_argument("--train", action="store_true", help="retrain the committed trained models")
    ap.add_argument("--no-transformers", action="store_true", help="skip the cross-check")
    a = ap.parse_args()
    only = a.only or ("smollm2", "gemma3", "trained", "spm")
    if "gemma3" in only:
        gen_gemma3(a)
    if "trained" in only:
        gen_trained(a)
    if "spm" in only:
        gen_spm(a)
    if "smollm2" not in only:
        return
    texts = corpus()
    with tempfile.TemporaryDirectory() as tmp:
        paths = gguf_to_tokenizer_json.write_variants(a.gguf, tmp)
        tok = Tokenizer.from_file(paths["smollm2-legacy"])
        pairs = Tokenizer.from_file(paths["smollm2-pairs"])
        l3 = Tokenizer.from_file(paths["llama3-pattern"])
        for text in texts:  # the two merges forms must be the same tokenizer
            assert encode(tok, text, False) == encode(pairs, text, False), text
        cases = make_cases(tok, texts)
        l3_texts = texts[:: max(1, len(texts) // 40)] + [
            "I'M SURE IT'LL BE FINE", "'S 'T 'RE 'VE 'M 'LL 'D", "1234567 89", "x\r\n\r\n  y",
            "  hello\tworld", "(hello) [world]", "a?!\n\nb", "\t\tfoo", "abc 12345 def",
            "<|im_start|>user\n1234<|im_end|>"]
        l3_cases = []
        for text in l3_texts:
            l3_cases.append({"text": text, "hex": text.encode("utf-8").hex(),
                             "ids": l3.encode(text, add_special_tokens=True).ids})
    note = ""
    if not a.no_transformers:
        pre, differ = cross_check_transformers(a.gguf, tok, texts)
        note = (f"transformers GGUF conversion pre_tokenizer={json.dumps(pre)}; its ids differ from "
                f"the oracle on {differ} of {len(texts)} strings, all of which contain digits")
        print(note, file=sys.stderr)
    src = ("tokenizers Tokenizer.from_file(tokenizer.json written by tools/gguf_to_tokenizer_json.py"
           " from %s), variant %%s; see tools/gen_tokenizer_golden.py" % os.path.basename(a.gguf))
    out1 = {"oracle": src % "smollm2-legacy", "cross_check": note, "cases": cases}
    out2 = {"oracle": src % "llama3-pattern", "cases": l3_cases}
    for name, obj in (("tokenizer_smollm2.json", out1), ("tokenizer_llama3pattern.json", out2)):
        p = os.path.join(a.out, name)
        with open(p, "w", encoding="utf-8") as f:
            json.dump(obj, f, ensure_ascii=True, indent=0)
            f.write("\n")
        print(f"{p}: {len(obj['cases'])} cases, {os.path.getsize(p)} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
