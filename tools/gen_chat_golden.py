#!/usr/bin/env python3
"""Writes tests/golden/chat_templates/expected.json (and features.json, the language one feature
at a time): what jinja2 renders for every chat template
in tests/golden/chat_templates/*.jinja over a set of conversations, rendered the way
transformers' apply_chat_template does (ImmutableSandboxedEnvironment with trim_blocks and
lstrip_blocks, the loopcontrols extension, its tojson filter, raise_exception and strftime_now
globals; messages, tools, documents and add_generation_prompt passed, plus the special tokens).
When transformers is installed, each render is also checked against transformers' own compiled
template. Where each template comes from: tests/golden/chat_templates/SOURCES.md. The Criterion
test tests/unit/test_jinja.c compares flashgen's interpreter with
this file, without Python.

tools_requests.json: OpenAI chat request bodies with `tools` and tool messages, for every
template, and what the server must render for them. A template that reads `tools` gets the
request the way vLLM hands it to apply_chat_template (tools as given, also for tool_choice
"none": vLLM excludes them only with --exclude-tools-when-tool-choice-none; messages as given,
each tool call's `arguments` string parsed into an object, a null or missing content "" as
vLLM's string content format renders it); any other template
gets the Hermes rewrite server/tools.h documents (tool list in a system message, calls as
<tool_call> text, results as a user message in <tool_response>), written here a second time
from its description (the tool list left out for tool_choice "none"). tests/unit/test_tools.c sends each body through reqparse_chat,
tools_adapt_messages and chat_template_render_tools and compares.

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
    "deepseek_r1_llama": ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
    "gemma": ("<bos>", "<eos>"),
    "hermes3_tools": ("<|begin_of_text|>", "<|im_end|>"),
    "llama33": ("<|begin_of_text|>", "<|eot_id|>"),
    "mistral_nemo": ("<s>", "</s>"),
    "mistral_v02": ("<s>", "</s>"),
    "phi35": ("<s>", "<|endoftext|>"),
    "qwen3": ("<|endoftext|>", "<|im_end|>"),
    "qwq": ("<|endoftext|>", "<|im_end|>"),
    "smollm3": ("<|im_start|>", "<|im_end|>"),
}
EXTRA = {"llama32": {"date_string": "02 Dec 2026"}, "llama33": {"date_string": "02 Dec 2026"}}

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
                "days": {"type": ["integer", "number"], "description": "Forecast days"},
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


# Language features one at a time (each with the variables it reads), beyond what the real
# templates above happen to use: tests/golden/chat_templates/features.json.
FEATURES = [
    ("{% for x in xs %}{{ loop.index }}{{ loop.index0 }}{{ loop.first }}{{ loop.last }}"
     "{{ loop.length }}{{ loop.revindex }}{{ loop.revindex0 }}|{% endfor %}", {"xs": ["a", "b", "c"]}),
    ("{% for x in xs %}{{ x }}{% else %}empty{% endfor %}", {"xs": []}),
    ("{% for x in xs if x > 1 %}{{ x }}{{ loop.length }}{% endfor %}", {"xs": [1, 2, 3]}),
    ("{% for x in xs %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 4 %}{% break %}"
     "{% endif %}{{ x }}{% endfor %}", {"xs": [1, 2, 3, 4, 5]}),
    ("{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}", {"d": {"b": 1, "a": 2}}),
    ("{% for k in d %}{{ k }}{% endfor %}", {"d": {"x": 1, "y": 2}}),
    ("{% for c in 'héllo' %}[{{ c }}]{% endfor %}", {}),
    ("{% for x in xs %}{{ loop.previtem }}-{{ loop.nextitem }},{% endfor %}", {"xs": [1, 2, 3]}),
    ("{% if a %}A{% elif b %}B{% else %}C{% endif %}", {"a": 0, "b": ""}),
    ("{% if a %}A{% elif b %}B{% else %}C{% endif %}", {"a": [], "b": [0]}),
    ("{% set x = 1 %}{% for i in [1] %}{% set x = 2 %}{% endfor %}{{ x }}", {}),
    ("{% set ns = namespace(x=1, y='a') %}{% for i in [1, 2] %}{% set ns.x = ns.x + i %}"
     "{% endfor %}{{ ns.x }}{{ ns.y }}", {}),
    ("{% set t %}block {{ 1 + 1 }}{% endset %}[{{ t }}]", {}),
    ("{% macro m(a, b='B', c=none) %}{{ a }}{{ b }}{{ c }}{% endmacro %}{{ m(1) }}|{{ m(1, 2) }}|"
     "{{ m(1, c=3) }}", {}),
    ("{% macro rec(n) %}{% if n > 0 %}{{ n }}{{ rec(n - 1) }}{% endif %}{% endmacro %}{{ rec(4) }}", {}),
    ("a  \n  {%- if true -%}  \n b \n {%- endif %}\n  c", {}),
    ("  {% if true %}\n    x\n  {% endif %}\n  {{ 'y' }}\n", {}),
    ("{%+ if true %}  kept{% endif +%}\n", {}),
    ("{# a comment #}\n  {# another #}\nx", {}),
    ("{{ 1 + 2 * 3 - 4 / 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 2 ** 10 }}", {}),
    ("{{ 1 == 1.0 }} {{ 'a' < 'b' }} {{ 3 >= 3 }} {{ 1 != 2 }} {{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }}", {}),
    ("{{ 'a' ~ 1 ~ none ~ true ~ 1.5 }} {{ 'ab' * 3 }} {{ [1] + [2] }}", {}),
    ("{{ true and 'x' }} {{ 0 or 'y' }} {{ not none }} {{ 'b' in 'abc' }} {{ 2 not in [1, 3] }}"
     " {{ 'k' in {'k': 1} }}", {}),
    ("{{ x is defined }} {{ y is defined }} {{ x is none }} {{ x is string }} {{ 1 is number }}"
     " {{ d is mapping }} {{ l is iterable }} {{ 'a' is string }} {{ 4 is divisibleby 2 }}"
     " {{ 3 is odd }} {{ x is not none }}", {"x": None, "d": {}, "l": []}),
    ("{{ 'yes' if a else 'no' }} [{{ 'only' if b }}]", {"a": 1, "b": 0}),
    ("{{ xs[1:] }} {{ xs[::-1] }} {{ xs[-1] }} {{ xs[:-1] }} {{ xs[1:3] }} {{ xs[::2] }}",
     {"xs": [1, 2, 3, 4, 5]}),
    ("{{ s[1:] }} {{ s[::-1] }} {{ s[0] }} {{ s[-1] }} {{ s[:2] }}", {"s": "añbc"}),
    ("{{ d.a }} {{ d['b'] }} {{ d.missing is defined }} {{ l.0 }} {{ d.get('a') }}"
     " {{ d.get('z', 9) }}", {"d": {"a": 1, "b": [2]}, "l": [7]}),
    ("{{ '  x y  '.strip() }}|{{ 'xxhixx'.strip('x') }}|{{ '  a'.lstrip() }}|{{ 'a  '.rstrip() }}|"
     "{{ 'abc'.startswith('ab') }}{{ 'abc'.endswith('bc') }}{{ 'abc'.startswith(('x', 'a')) }}", {}),
    ("{{ 'a,b,,c'.split(',') }} {{ ' a  b '.split() }} {{ 'a b c'.split(' ', 1) }}"
     " {{ 'Hello World'.upper() }} {{ 'Hello'.lower() }} {{ 'hello world-x'.title() }}", {}),
    ("{{ 'aXbXc'.replace('X', '-') }} {{ 'aaa'.replace('a', 'b', 2) }} {{ ', '.join(['a', 'b']) }}"
     " {{ 'hello'.capitalize() }} {{ 'abcabc'.find('c') }} {{ 'abcabc'.count('bc') }}", {}),
    ("{{ '  t  ' | trim }}|{{ xs | length }}|{{ 'héllo' | length }}|{{ xs | join('-') }}|"
     "{{ xs | first }}|{{ xs | last }}|{{ xs | reverse | list }}", {"xs": [3, 1, 2]}),
    ("{{ u | default('dflt') }} {{ e | default('dflt') }} {{ e | default('dflt', true) }}"
     " {{ 42 | string }} {{ '42' | int + 1 }} {{ 'x' | int }} {{ 3.7 | int }} {{ '2.5' | float }}",
     {"e": ""}),
    ("{{ 'hello WORLD' | upper }} {{ 'HeLLo' | lower }} {{ 'hello world' | capitalize }}"
     " {{ 'hello big-world' | title }} {{ 'a.b' | replace('.', '/') }}", {}),
    ("{{ ms | selectattr('role', 'equalto', 'user') | map(attribute='content') | join(',') }}|"
     "{{ ms | rejectattr('role', 'equalto', 'user') | list | length }}|"
     "{{ ms | selectattr('tool') | list | length }}|{{ ms | map(attribute='role') | unique | list }}",
     {"ms": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "tool": 1},
             {"role": "user", "content": "c"}]}),
    ("{{ [1, 0, 2, none] | select | list }} {{ [1, 2, 3, 4] | reject('odd') | list }}"
     " {{ ['a', 'b'] | map('upper') | list }} {{ [3, 1, 2] | sort }} {{ [3, 1, 2] | sort(reverse=true) }}", {}),
    ("{{ d | items | list }} {{ d | dictsort }} {{ [1, 2, 3] | sum }} {{ [1, 5, 3] | max }}"
     " {{ [4, 2, 8] | min }} {{ -3 | abs }}", {"d": {"b": 2, "a": 1}}),
    ("{{ d | tojson }}|{{ d | tojson(indent=2) }}|{{ d | tojson(sort_keys=true) }}|{{ s | tojson }}",
     {"d": {"z": [1, 2.5, None, True, "é\n\"q\""], "a": {}, "m": []}, "s": "<tag> & 'x' \u0001"}),
    ("{{ [1, 'a', none, true, 1.5, {'k': [2]}] }} {{ {'a': \"it's\"} }} {{ (1, 2) }}", {}),
    ("{{ 0.1 + 0.2 }} {{ 1e20 }} {{ 1.0 }} {{ 3 / 2 }} {{ 4 / 2 }} {{ 1e-7 }} {{ 123456789.125 }}", {}),
    ("{{ {'a': 1, 'b': 2}['b'] }} {{ [[1, 2], [3]][0][1] }} {{ range(3) | list }} {{ range(1, 7, 2) | list }}", {}),
    ("{{ 'abc' ~ x }}", {"x": {"k": "v"}}),
    ("{{ 'x' + undefined_var }}", {}),
    ("{{ nothing.attr }}", {}),
    ("{{ raise_exception('Custom: ' ~ n) }}", {"n": 3}),
    ("{{ 1 / 0 }}", {}),
    ("{{ 'multi' 'part' }} {{ \"dq\\\"\" }} {{ 'tab\\there' }} {{ '\\u00e9\\x41' }}", {}),
    ("{{ '%s' | length }} {{ 'a' | center if false else 'ok' }}", {}),
    ("{% set a = [1, 2] %}{% set b = {'k': a} %}{{ b.k[1] }} {{ b | length }} {{ a | list | length }}", {}),
    ("{{ '\n'.join(['x', 'y']) | indent(2) }}|{{ 'a\nb' | indent(2, true) }}", {}),
    ("{% for i in [1, 2] %}[{{ x }}]{% set x = i %}{% endfor %}", {}),
    ("{% set x = 0 %}{% for i in [1, 2] %}[{{ x }}]{% set x = i %}{% endfor %}{{ x }}", {}),
    ("{% set ns = namespace(a=1) %}{% set ns.b = ns %}{{ ns }}", {}),
    ("{{ 1 ** 1000000000000000000 }} [{{ '' * 1000000000000000000 }}]", {}),
    ("{{ range(-9223372036854775807, 9223372036854775807) | length }}", {}),
    ("{{ [{'a': 1}] | selectattr | list }}", {}),
    ("{% if messages[0].role == 'system' %}{% set messages = messages[1:] %}{% endif %}"
     "{{ messages | length }}", {"messages": [{"role": "system"}, {"role": "user"}]}),
    # select/reject/map of a falsy value (a null tool_calls): jinja2 yields nothing, arguments unread
    ("{{ n | selectattr('type', 'equalto', 'function') | list }} {{ n | rejectattr('a') | list }}"
     " {{ n | map(attribute='function') | join(',') }}|{{ n | select | list }} {{ n | reject | list }}"
     " {{ n | map('upper') | list }} {{ n | selectattr | list }} {{ '' | map(attribute='x') | list }}"
     " {{ 0 | select | list }} {{ u | selectattr('a') | list }} [{{ n | selectattr('a') | first }}]",
     {"n": None}),
    ("{{ 3 | map('upper') | list }}", {}),
    ("{{ n | list }}", {"n": None}),
    ("{{ 2 is in [1, 2] }} {{ 'a' is in {'a': 1} }} {{ x is in [1] }} {{ 'b' is in 'abc' }}", {"x": None}),
    ("{{ u is iterable }} {{ u is sequence }} {{ '' is lower }} {{ 'aB' is lower }} {{ 'ab1' is lower }}"
     " {{ '' is upper }} {{ 'A1' is upper }} {{ 2.5 is even }} {{ 3.0 is odd }} {{ 4.0 is even }}", {}),
    ("{{ [1, 2, 3, 4, 5] | batch(2) | list }} {{ 'abc' | batch(2, 'x') | list }} {{ [] | batch(3) | list }}", {}),
    ("{{ [] | wordcount }} {{ 'a—b c_d é1, x' | wordcount }} {{ '' | wordcount }}", {}),
    ("{{ [{'a': 1}] | unique | list }}", {}),
    ("{{ u | int }}", {}),
    ("{{ u | float }}", {}),
    ("{{ u | dictsort }}", {}),
    ("{{ n | indent(2) }}", {"n": None}),
    ("{{ 1.5e3 }} {{ 1500.0 }} {{ 1e15 }} {{ 1e16 }} {{ 1.25e-4 }} {{ 1.5e-5 }} {{ -0.0 }} {{ 1e100 }}"
     " {{ 123456789012345.6 }} {{ 2.5e-300 }} {{ [0.001, 12.5] }}", {}),
    ("{% for x in xs if x > 1 %}{{ loop.cycle('odd', 'even') }}{{ loop.depth }}{{ loop.depth0 }},"
     "{% for y in [1, 2] %}{{ loop.cycle(x, y, '-') }}{% endfor %};{% endfor %}", {"xs": [1, 2, 3, 4]}),
    ("{% for x in [1] %}{{ loop.cycle() }}{% endfor %}", {}),
]


GET_TIME = {"type": "function", "function": {"name": "get_time", "description": "The time now.",
                                             "parameters": {"type": "object", "properties": {}}}}
OAI_CALL = {"id": "call_abc123", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"location\": \"Paris\"}"}}
TOOL_REQUESTS = {
    "oai_tools_user": {"messages": [{"role": "system", "content": "You are a weather bot."},
                                    {"role": "user", "content": "Weather in Paris?"}],
                       "tools": [WEATHER, GET_TIME]},
    "oai_tools_no_system": {"messages": [{"role": "user", "content": "Weather in Paris?"}],
                            "tools": [WEATHER], "tool_choice": "auto"},
    "oai_tool_loop": {"messages": [{"role": "user", "content": "Weather in Paris?"},
                                   {"role": "assistant", "content": None, "tool_calls": [OAI_CALL]},
                                   {"role": "tool", "tool_call_id": "call_abc123",
                                    "content": "22 degrees"}],
                      "tools": [WEATHER]},
    "oai_two_results": {"messages": [
        {"role": "user", "content": "Weather in Paris and the time?"},
        {"role": "assistant", "content": "Looking.", "tool_calls": [
            OAI_CALL, {"id": "call_t", "type": "function",
                       "function": {"name": "get_time", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_abc123", "content": "22 degrees"},
        {"role": "tool", "tool_call_id": "call_t", "content": "09:00"}],
        "tools": [WEATHER, GET_TIME], "tool_choice": "required"},
    "oai_choice_none": {"messages": [{"role": "user", "content": "Weather in Paris?"}],
                        "tools": [WEATHER], "tool_choice": "none"},
}


def compact(x):
    return json.dumps(x, ensure_ascii=False, separators=(",", ":"))


def takes_tools(src):
    return "tools" in src


def vllm_messages(messages):
    """The messages as vLLM hands them to apply_chat_template: arguments strings parsed, a null
    content "" (vLLM's string content format joins the message's text parts: none)."""
    out = []
    for m in messages:
        m = json.loads(json.dumps(m))
        for c in m.get("tool_calls") or []:
            a = c["function"].get("arguments")
            if isinstance(a, str):
                try:
                    p = json.loads(a)
                    if isinstance(p, dict):
                        c["function"]["arguments"] = p
                except ValueError:
                    pass
        if m.get("content") is None:
            m["content"] = ""
        out.append(m)
    return out


def hermes_messages(messages, tools):
    """server/tools.h's rewrite for a template without tool support (its second writing)."""
    out, i = [], 0
    if tools:
        sys_text = ("You are a function calling AI model. You may call one or more of the following "
                    "functions to answer the user. Their signatures are within <tools></tools> XML "
                    "tags:\n<tools>" + "".join("\n" + compact(t) for t in tools) +
                    "\n</tools>\n\nFor each function call, return a JSON object with the function "
                    "name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
                    "{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>\n"
                    "Function results are given back within <tool_response></tool_response> XML "
                    "tags.")
        if messages and messages[0]["role"] == "system":
            sys_text = (messages[0]["content"] or "") + "\n\n" + sys_text
            i = 1
        out.append({"role": "system", "content": sys_text})
    while i < len(messages):
        m = messages[i]
        if m["role"] == "tool":
            parts = []
            while i < len(messages) and messages[i]["role"] == "tool":
                parts.append("<tool_response>\n" + messages[i]["content"] + "\n</tool_response>")
                i += 1
            out.append({"role": "user", "content": "\n".join(parts)})
            continue
        text = m.get("content") or ""
        calls = [c for c in vllm_messages([m])[0].get("tool_calls") or []]
        if calls:
            if text:
                text += "\n"
            text += "\n".join("<tool_call>\n" + compact({"name": c["function"]["name"],
                                                           "arguments": c["function"]["arguments"]})
                               + "\n</tool_call>" for c in calls)
        out.append({"role": m["role"], "content": text})
        i += 1
    return out


def tool_request_vars(src, body):
    tools = body.get("tools") or None
    if takes_tools(src):
        return vllm_messages(body["messages"]), tools
    if body.get("tool_choice") == "none":
        tools = None
    return hermes_messages(body["messages"], tools), None


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
    out, tool_out = [], []
    for name in names:
        with open(os.path.join(DIR, name + ".jinja"), encoding="utf-8") as f:
            src = f.read()
        tmpl = env.from_string(src)
        hf = _compile_jinja_template(src) if _compile_jinja_template else None
        bos, eos = TOKENS[name]

        def render_checked(case, messages, tools, gen):
            variables = {"messages": messages, "tools": tools, "documents": None,
                         "add_generation_prompt": gen, "bos_token": bos, "eos_token": eos}
            variables.update(EXTRA.get(name, {}))
            r = render(tmpl, variables)
            if hf is not None:
                assert render(hf, variables) == r, (name, case)
            return variables, r

        for case, (messages, gen, tools) in CASES.items():
            variables, r = render_checked(case, messages, tools, gen)
            out.append({"template": name, "case": case, "vars": variables, **r})
        for case, body in TOOL_REQUESTS.items():
            messages, tools = tool_request_vars(src, body)
            _, r = render_checked(case, messages, tools, True)
            tool_out.append({"template": name, "case": case, "takes_tools": takes_tools(src),
                             "request": body, "extra": EXTRA.get(name, {}), **r})
    with open(os.path.join(DIR, "tools_requests.json"), "w", encoding="utf-8") as f:
        json.dump(tool_out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    feats = []
    for src, variables in FEATURES:
        try:
            t = env.from_string(src)
        except jinja2.exceptions.TemplateSyntaxError as e:
            feats.append({"source": src, "vars": variables, "error": str(e), "kind": "syntax"})
            continue
        feats.append({"source": src, "vars": variables, **render(t, variables)})
    with open(os.path.join(DIR, "features.json"), "w", encoding="utf-8") as f:
        json.dump(feats, f, ensure_ascii=False, indent=1)
        f.write("\n")
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
