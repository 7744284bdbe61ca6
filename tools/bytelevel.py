"""GPT-2's byte -> printable code point table (bytes_to_unicode in openai/gpt-2's encoder.py),
shared by the tools that write byte-level BPE vocabularies (tiny models, fuzz seeds, the GPU engine
check)."""


def bytes_to_unicode():
    """{byte: one-character string}: printable bytes map to themselves, the other 68 to U+0100+."""
    bs = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}
