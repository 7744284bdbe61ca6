#!/usr/bin/env python3
"""Writes tests/golden/chat_templates/expected.json: what jinja2 renders for every chat template
in tests/golden/chat_templates/*.jinja over a set of conversations, rendered the way
transformers' apply_chat_template does (ImmutableSandboxedEnvironment with trim_blocks and
lstrip_blocks, the loopcontrols extension, its tojson filter, raise_exception and strftime_now
globals; messages, tools, documents and add_generation_prompt passed, plus the special tokens).
When transformers is installed, each render is also checked against transformers' own compiled
template. The Criterion test tests/unit/test_jinja_golden.c compares flashgen's interpreter with
this file, without Python.

Usage: python3 tools/gen_chat_golden.py   (Jinja2 3.1.x)
"""
import json
import os
import sys
from datetime import datetime

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIR = os.path.join(ROOT, "tests", "golden", "chat_templates")

# bos/eos as each model's tokenizer_config.json has them; extra variables some templates read.
TOKENS = {
    "chatml": ("<s>", "<|im_end|>"),
    "deepseek_llm": ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
    "deepseek_r1": ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
    "gemma2": ("<bos>", "<eos>"),
    "gemma3": ("<bos>", "<eos>"),
    "hermes_macro": ("<|begin_of_text|>", "<|im_end|>"),
    "llama2": ("<s>", "</s>"),
    "llama3": ("<|begin_of_text|>", "<|eot_id|>"),
    "llama31_tools": ("<|begin_of_text|>", "<|eot_id|>"),
    "llama32": ("<|begin_of_text|>", "<|eot_id|>"),
    "mistral_v01": ("<s>", "</s>"),
    "mistral_v03": ("<s>", "</s>"),
    "phi3": ("<s>", "<|endoftext|>"),
    "phi4": ("<|endoftext|>", "<|im_end|>"),
    "qwen25": ("<|endoftext|>", "<|im_end|>"),
    "smollm2": ("<|im_start|>", "<|im_end|>"),
    "zephyr": ("<s>", "</s>"),
}
EXTRA = {"llama32": {"date_string": "02 Dec 2026"}}

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "The city, e.g. Paris"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"],
                         "description": " The unit "},
                "days": {"type": ["integer", "null"], "description": "Forecast days"},
            },
            "required": ["location"],
        },
    },
}
CALL = {"id": "call12345", "type": "function",
        "function": {"name": "get_weather", "arguments": {"location": "Paris", "unit": "celsius"}}}

CASES = {
    "user_only": ([{"role": "user", "content": "Hello!"}], True, None),
    "system_user": ([{"role": "system", "content": "You are a pirate."},
                     {"role": "user", "content": "What is 2+2?"}], True, None),
    "multi_turn": ([{"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello! How can I help?"},
                    {"role": "user", "content": "Tell me a joke."}], True, None),
    "no_gen_prompt": ([{"role": "user", "content": "Ping"},
                       {"role": "assistant", "content": "Pong"},
                       {"role": "user", "content": "Again"},
                       {"role": "assistant", "content": "Pong pong"}], False, None),
    "whitespace_unicode": ([{"role": "user", "content": "  Ünïcödé — “quotes” 'single' \"double\" \\ back\n\n"},
                            {"role": "assistant", "content": " ok\t"},
                            {"role": "user", "content": "tab\there 日本語 🙂"}], True, None),
    "think": ([{"role": "user", "content": "What is 7*6?"},
               {"role": "assistant", "content": "<think>7*6=42</think>It is 42."},
               {"role": "user", "content": "And 6*7?"}], True, None),
    "tools_user": ([{"role": "system", "content": "You are a weather bot."},
                    {"role": "user", "content": "Weather in Paris?"}], True, [WEATHER]),
    "tool_call": ([{"role": "user", "content": "Weather in Paris?"},
                   {"role": "assistant", "content": "", "tool_calls": [CALL]},
                   {"role": "tool", "tool_call_id": "call12345", "content": "22 degrees"},
                   ], True, [WEATHER]),
    "bad_roles": ([{"role": "user", "content": "one"},
                   {"role": "user", "content": "two"}], True, None),
    "empty": ([], True, None),
}


def make_env():
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def render(tmpl, variables):
    try:
        return {"output": tmpl.render(**variables)}
    except jinja2.exceptions.TemplateError as e:
        kind = "raise" if type(e) is jinja2.exceptions.TemplateError else type(e).__name__
        return {"error": str(e), "kind": kind}
    except Exception as e:  # TypeError and the like: still an error the request reports
        return {"error": str(e), "kind": type(e).__name__}


def main():
    env = make_env()
    try:
        from transformers.utils.chat_template_utils import _compile_jinja_template
    except Exception:
        _compile_jinja_template = None
    names = sorted(f[:-6] for f in os.listdir(DIR) if f.endswith(".jinja"))
    out = []
    for name in names:
        with open(os.path.join(DIR, name + ".jinja"), encoding="utf-8") as f:
            src = f.read()
        tmpl = env.from_string(src)
        hf = _compile_jinja_template(src) if _compile_jinja_template else None
        bos, eos = TOKENS[name]
        for case, (messages, gen, tools) in CASES.items():
            variables = {"messages": messages, "tools": tools, "documents": None,
                         "add_generation_prompt": gen, "bos_token": bos, "eos_token": eos}
            variables.update(EXTRA.get(name, {}))
            r = render(tmpl, variables)
            if hf is not None:
                assert render(hf, variables) == r, (name, case)
            out.append({"template": name, "case": case, "vars": variables, **r})
    path = os.path.join(DIR, "expected.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    ok = sum("output" in r for r in out)
    print(f"{path}: {len(names)} templates, {len(out)} renders ({ok} outputs, "
          f"{len(out) - ok} errors), jinja2 {jinja2.__version__}"
          + (", checked against transformers" if hf is not None else ""))


if __name__ == "__main__":
    sys.exit(main())
