#!/usr/bin/env python3
"""Generate the tokenizer goldens: tests/golden/tokenizer_smollm2.json and
tests/golden/tokenizer_llama3pattern.json.

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

Usage: python3 tools/gen_tokenizer_golden.py [--gguf models/SmolLM2-135M-Instruct.Q4_1.gguf]
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


def main():
    ap = argparse.ArgumentParser(description="generate tokenizer goldens")
    ap.add_argument("--gguf", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--out", default="tests/golden")
    ap.add_argument("--no-transformers", action="store_true", help="skip the cross-check")
    a = ap.parse_args()
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
