"""OpenAI tool calling on the real SmolLM2 (server/tools.h): the `openai` client's tool loop (a
forced call whose arguments parse as JSON and validate with `jsonschema`, a `tool` message with
the result, a final text answer), streamed and not, the streamed deltas reassembled into the
non-streamed shape; LangChain's `bind_tools` and `with_structured_output`; the no-op values and
the refusals. SmolLM2's template has no tool support, so these also run the Hermes rewrite (tool
list in a system message); tests/unit/test_tools.c checks the renders of the templates that take
tools against jinja2."""
import json

import jsonschema
import openai
import pytest

from fg_http import sse_events  # noqa: F401  (the helpers' module; server fixture in conftest)

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "The city, e.g. Paris"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location"],
        },
    },
}
STOCK = {
    "type": "function",
    "function": {
        "name": "get_stock_price",
        "description": "The latest price of a stock.",
        "parameters": {
            "type": "object",
            "properties": {"ticker": {"type": "string", "maxLength": 8},
                           "exchange": {"type": "string", "enum": ["NYSE", "NASDAQ"]}},
            "required": ["ticker", "exchange"],
            "additionalProperties": False,
        },
    },
}
TOOLS = [WEATHER, STOCK]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
QUESTION = [{"role": "user", "content": "What is the weather like in Paris today?"}]


def oai(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def check_calls(calls, only=None):
    assert calls, "no tool calls"
    for c in calls:
        assert c.type == "function" and c.id.startswith("call_"), c
        assert c.function.name in SCHEMAS and (only is None or c.function.name == only), c
        jsonschema.validate(json.loads(c.function.arguments), SCHEMAS[c.function.name])
    assert len({c.id for c in calls}) == len(calls)


def reassemble(stream):
    """The streamed chunks folded into (content, tool_calls as dicts, finish_reason), as the
    openai client's own stream helpers do it: by tool-call index, arguments concatenated."""
    content, calls, finish, roles = "", {}, None, []
    reassemble.fragments = 0
    for chunk in stream:
        if not chunk.choices:
            continue
        ch = chunk.choices[0]
        d = ch.delta
        if d.role:
            roles.append(d.role)
        content += d.content or ""
        for tc in d.tool_calls or []:
            c = calls.setdefault(tc.index, {"id": None, "type": None, "name": "", "arguments": ""})
            if tc.id:
                assert c["id"] is None, "the id comes once"
                c["id"] = tc.id
            if tc.type:
                c["type"] = tc.type
            if tc.function and tc.function.name:
                c["name"] += tc.function.name
            if tc.function and tc.function.arguments:
                c["arguments"] += tc.function.arguments
                reassemble.fragments += 1
        if ch.finish_reason:
            finish = ch.finish_reason
    assert roles == ["assistant"]
    return content, [calls[i] for i in sorted(calls)], finish


def as_dicts(calls):
    return [{"id": c.id, "type": c.type, "name": c.function.name,
             "arguments": c.function.arguments} for c in calls]


@pytest.mark.parametrize("choice", ["required", {"type": "function",
                                                 "function": {"name": "get_weather"}}])
def test_openai_tool_loop(server, choice):
    c = oai(server)
    first = c.chat.completions.create(model="m", messages=QUESTION, tools=TOOLS, tool_choice=choice,
                                      temperature=0, max_tokens=64)
    ch = first.choices[0]
    assert ch.finish_reason == "tool_calls" and ch.message.content is None, ch
    check_calls(ch.message.tool_calls, None if choice == "required" else "get_weather")
    # streamed: the same call, delivered as delta.tool_calls chunks
    stream = c.chat.completions.create(model="m", messages=QUESTION, tools=TOOLS,
                                       tool_choice=choice, temperature=0, max_tokens=64,
                                       stream=True)
    content, calls, finish = reassemble(stream)
    assert content == "" and finish == "tool_calls"
    assert reassemble.fragments > 1, "a forced call's arguments stream as they are generated"
    want = as_dicts(ch.message.tool_calls)
    assert [{k: v for k, v in x.items() if k != "id"} for x in calls] == \
        [{k: v for k, v in x.items() if k != "id"} for x in want]
    assert all(x["id"].startswith("call_") for x in calls)
    # the result goes back as a tool message; the model answers in text
    call = ch.message.tool_calls[0]
    messages = QUESTION + [ch.message.model_dump(exclude_none=True),
                           {"role": "tool", "tool_call_id": call.id,
                            "content": json.dumps({"temperature": 22, "unit": "celsius"})}]
    final = c.chat.completions.create(model="m", messages=messages, tools=TOOLS, temperature=0,
                                      max_tokens=24)
    fc = final.choices[0]
    assert fc.finish_reason in ("stop", "length") and fc.message.tool_calls is None, fc
    assert isinstance(fc.message.content, str) and fc.message.content.strip()
    assert final.usage.prompt_tokens > first.usage.prompt_tokens  # the call and result are in
    stream = c.chat.completions.create(model="m", messages=messages, tools=TOOLS, temperature=0,
                                       max_tokens=24, stream=True)
    content, calls, finish = reassemble(stream)
    assert (content, calls, finish) == (fc.message.content, [], fc.finish_reason)


def test_auto_and_none(server):
    c = oai(server)
    # "auto": the model is free; whatever it writes is either a valid call or plain text
    for msgs in (QUESTION, [{"role": "user", "content": "Say hello."}]):
        out = c.chat.completions.create(model="m", messages=msgs, tools=TOOLS, tool_choice="auto",
                                        temperature=0, max_tokens=24)
        ch = out.choices[0]
        if ch.message.tool_calls:
            assert ch.finish_reason == "tool_calls" and ch.message.content is None
            check_calls(ch.message.tool_calls)
        else:
            assert ch.finish_reason in ("stop", "length") and ch.message.content
        stream = c.chat.completions.create(model="m", messages=msgs, tools=TOOLS, temperature=0,
                                           max_tokens=24, stream=True)
        content, calls, finish = reassemble(stream)
        assert finish == ch.finish_reason
        if ch.message.tool_calls:
            assert [x["name"] for x in calls] == [x.function.name for x in ch.message.tool_calls]
        else:
            assert content == ch.message.content and not calls
    # "none" and tools: [] are no-ops: the same text as without tools
    plain = c.chat.completions.create(model="m", messages=QUESTION, temperature=0, max_tokens=12)
    for kw in ({"tools": TOOLS, "tool_choice": "none"}, {"tools": []}):
        out = c.chat.completions.create(model="m", messages=QUESTION, temperature=0, max_tokens=12,
                                        **kw)
        assert out.choices[0].message.content == plain.choices[0].message.content
        assert out.usage.prompt_tokens == plain.usage.prompt_tokens


@pytest.mark.parametrize("body, param", [
    ({"tools": [{"type": "function", "function": {"name": "has space"}}]}, "tools"),
    ({"tools": [{"type": "code_interpreter"}]}, "tools"),
    ({"tools": [WEATHER, WEATHER]}, "tools"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
     "tool_choice"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"n": {"type": "integer", "minimum": 1}}}}}],
      "tool_choice": "required"}, "tools"),
    ({"messages": [{"role": "tool", "content": "22"}]}, "messages"),
    ({"messages": [{"role": "assistant", "tool_calls": [{"function": {"arguments": "{}"}}]}]},
     "messages"),
])
def test_bad_values_are_422_naming_the_field(server, body, param):
    r = server.post("/v1/chat/completions", {"messages": QUESTION, "max_tokens": 4, **body})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["param"] == param, r.text


def test_langchain_bind_tools_and_structured_output(server):
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI
    from pydantic import BaseModel, Field

    @tool
    def get_weather(location: str, unit: str = "celsius") -> str:
        """Get the current weather in a city."""
        return "sunny"

    llm = ChatOpenAI(base_url=server.url + "/v1", api_key="x", model="m", temperature=0,
                     max_tokens=64, max_retries=0)
    for choice in ("get_weather", "any"):  # "any": LangChain's word for "required"
        msg = llm.bind_tools([get_weather], tool_choice=choice).invoke(
            "What is the weather in Paris?")
        assert len(msg.tool_calls) >= 1, msg
        tc = msg.tool_calls[0]
        assert tc["name"] == "get_weather" and isinstance(tc["args"].get("location"), str), tc
        jsonschema.validate(tc["args"], get_weather.tool_call_schema.model_json_schema())

    class Person(BaseModel):
        """A person mentioned in the text."""
        name: str = Field(description="The person's first name")
        age: int = Field(description="Age in years")

    for method in ("function_calling", "json_schema"):
        p = llm.with_structured_output(Person, method=method).invoke(
            "John is 31 years old. Extract the person.")
        assert isinstance(p, Person), (method, p)
        jsonschema.validate(p.model_dump(), Person.model_json_schema())


# A template that takes tools renders the list itself: the request's tools reach it as `tools`
# (here its own raise_exception proves it), and the calls and results of earlier turns as
# transformers passes them (the renders themselves are compared with jinja2 in test_tools.c).
TOOL_TEMPLATE = (
    "{% if tools %}{% for t in tools %}{% if t.function.name == 'forbidden' %}"
    "{{ raise_exception('tool ' + t.function.name + ' seen by the template') }}{% endif %}"
    "<tool>{{ t.function.name }}:{{ t.function.parameters | tojson }}</tool>{% endfor %}{% endif %}"
    "{% for m in messages %}<{{ m.role }}>{{ m.content if m.content is not none else '' }}"
    "{% for c in m.tool_calls or [] %}<call>{{ c.function.name }}"
    "{{ c.function.arguments.location }}</call>{% endfor %}"
    "{% if m.tool_call_id is defined %}<id>{{ m.tool_call_id }}</id>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}")


@pytest.fixture(scope="module")
def tool_template_gguf(tmp_path_factory):
    from test_chat_template import tiny_gguf
    return tiny_gguf(tmp_path_factory, "tool_template", TOOL_TEMPLATE)


def test_template_with_tool_support_gets_them(start_server, tool_template_gguf):
    s = start_server("--model", str(tool_template_gguf), "--device", "cpu")
    # the tiny model's context is 256 tokens of a byte-sized vocabulary: one small tool
    SMALL = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object"}}}]

    def chat(**kw):
        return s.post("/v1/chat/completions", {"messages": QUESTION, "max_tokens": 1, **kw})

    bare = chat().json()["usage"]["prompt_tokens"]
    with_tools = chat(tools=SMALL).json()["usage"]["prompt_tokens"]
    assert with_tools > bare
    # "none" still hands the list to a template that takes tools, as vLLM does by default
    # (no call is constrained or parsed)
    assert chat(tools=SMALL, tool_choice="none").json()["usage"]["prompt_tokens"] == with_tools
    r = chat(tools=[{"type": "function", "function": {"name": "forbidden"}}])
    assert r.status_code == 422 and "tool forbidden seen by the template" in r.text, r.text
    call = {"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'}}
    loop = [{"role": "user", "content": "w?"}] + [{"role": "assistant", "content": None, "tool_calls": [call]},
                       {"role": "tool", "tool_call_id": "call_1", "content": "22"}]
    r = s.post("/v1/chat/completions", {"messages": loop, "max_tokens": 1, "tools": SMALL})
    assert r.status_code == 200, r.text
    # the arguments reached the template as an object: .location rendered "Paris"
    r2 = s.post("/v1/chat/completions", {"messages": loop[:1] + [dict(loop[1], tool_calls=[dict(
        call, function={"name": "get_weather", "arguments": '{"location": ""}'})])] + loop[2:],
        "max_tokens": 1, "tools": SMALL})
    assert r.json()["usage"]["prompt_tokens"] > r2.json()["usage"]["prompt_tokens"]
