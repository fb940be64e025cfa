"""Tool calling as Ollama does it: the tag found in the template, the parser on model-output text, and tools
and tool calls rendered through the template (pure units; the engine end to end is tests/engine)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import pytest

from harness.engine.prompt import ollama_template, render_chat
from harness.engine.tools import ToolCallParser, tool_call_events, tool_call_id, tool_call_tag
from harness.modelfile.gotemplate import parse_template

QWEN = (Path(__file__).parent / "templates" / "qwen2.5-tools.gotmpl").read_text()
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the weather <now>",
        "parameters": {
            "type": "object",
            "required": ["city"],
            "properties": {
                "unit": {"type": "string", "enum": ["c", "f"]},
                "city": {"type": "string", "description": "the city"},
            },
        },
    },
}
GET = {"type": "function", "function": {"name": "get", "parameters": {"type": "object"}}}


def feed(parser: ToolCallParser, pieces: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
    calls, contents = [], []
    for piece in pieces:
        found, content = parser.add(piece)
        calls += found
        contents.append(content)
    return calls, contents


def call(name: str, arguments: dict[str, Any], index: int = 0) -> dict[str, Any]:
    return {"function": {"index": index, "name": name, "arguments": arguments}}


@pytest.mark.parametrize(
    ("template", "tag"),
    [
        (QWEN, "<tool_call>"),  # the first text after `{{ else if .ToolCalls }}`
        ("{{ .Prompt }}", "{"),  # no .ToolCalls: any JSON object may be a call
        ("{{ range .Messages }}{{ if .ToolCalls }}[TOOL_CALLS] [{{ range .ToolCalls }}{{ end }}]"
         "{{ end }}{{ end }}", "[TOOL_CALLS] ["),
        ("{{ if .ToolCalls }}{{ .Content }}<call>{{ end }}", "{"),  # an action comes first: no tag
        ("{{ if .ToolCalls }}  \n{{ if .X }}<a>{{ end }}<b>{{ end }}", "<a>"),  # blank text skipped
        ("{{ if .ToolCalls }}{\"name\": {{ end }}", "{"),  # text cut before `{`, empty -> `{`
    ],
)  # fmt: skip
def test_tag_is_found_in_the_template_as_ollama_finds_it(template: str, tag: str) -> None:
    assert tool_call_tag(parse_template(template)) == tag


def test_a_call_after_the_tag_is_parsed_and_the_text_before_it_is_content() -> None:
    parser = ToolCallParser("<tool_call>", [WEATHER])
    calls, contents = feed(
        parser,
        [
            "Sure. ",
            "<tool",
            "_call>\n",
            '{"name": "get_weather", ',
            '"arguments": {"city": "Paris"}}',
            "\n</tool_call>",
        ],
    )
    assert contents == ["Sure. ", "", "", "", "", ""]  # a possible tag is held back, then everything after it
    assert calls == [call("get_weather", {"city": "Paris"})]
    assert parser.remaining_content() == ""


def test_a_partial_tag_that_does_not_complete_is_released() -> None:
    parser = ToolCallParser("<tool_call>", [WEATHER])
    assert feed(parser, ["a <to", "ol> b"]) == ([], ["a ", "<tool> b"])


def test_text_after_the_tag_without_a_call_is_dropped_at_the_end() -> None:
    parser = ToolCallParser("<tool_call>", [WEATHER])
    assert feed(parser, ["<tool_call> nothing useful"]) == ([], [""])
    assert parser.remaining_content() == ""  # Ollama's Content(): only `{` / `[` tags give text back


def test_brace_tag_parses_leading_json_and_gives_back_other_json() -> None:
    parser = ToolCallParser("{", [WEATHER])
    calls, contents = feed(parser, ['{"name": "get_weather", "parameters": {"city": "Oslo"}}'])
    assert calls == [call("get_weather", {"city": "Oslo"})] and contents == [""]
    plain = ToolCallParser("{", [WEATHER])
    assert feed(plain, ['{"a": ', "1}"]) == ([], ["", '{"a": 1}'])  # balanced, no call: content
    prose = ToolCallParser("{", [WEATHER])
    assert feed(prose, ["Hi ", '{"name": "get_weather"}']) == ([], ["Hi ", '{"name": "get_weather"}'])


def test_unfinished_json_comes_back_at_the_end_for_a_brace_tag() -> None:
    parser = ToolCallParser("{", [WEATHER])
    assert feed(parser, ['{ "name" : "get_weather", "arguments": {']) == ([], [""])
    assert parser.remaining_content() == '{ "name" : "get_weather", "arguments": {'


def test_argument_shapes_and_several_calls() -> None:
    parser = ToolCallParser("<tool_call>", [WEATHER, GET])
    text = (
        '<tool_call>{"name": "get_weather", "arguments": "{\\"city\\": \\"Rome\\"}"}</tool_call>'
        '<tool_call>{"get": {"x": 1}}</tool_call>'
    )
    calls, _ = feed(parser, [text])
    assert calls == [call("get_weather", {"city": "Rome"}), call("get", {"x": 1}, index=1)]


def test_a_name_that_may_grow_waits_for_more_output() -> None:
    parser = ToolCallParser("<tool_call>", [GET, WEATHER])
    assert feed(parser, ["<tool_call>", '{"x": 1} get']) == ([], ["", ""])  # "get" could become get_weather
    calls, _ = feed(parser, ["_weather"])
    assert calls == [call("get_weather", {"x": 1})]  # the first object, as Ollama's findArguments takes it


def test_tool_call_ids_look_like_ollamas() -> None:
    ids = {tool_call_id() for _ in range(20)}
    assert len(ids) == 20 and all(re.fullmatch(r"call_[a-z0-9]{8}", i) for i in ids)


def test_chunks_follow_ollamas_chat_handler() -> None:
    """Content goes out as released; a call goes out in a chunk of its own; the final chunk carries the
    held-back text for a `{` tag."""

    async def chunks(pieces: list[str]) -> AsyncGenerator[dict[str, Any], None]:
        for i, piece in enumerate(pieces):
            done = i == len(pieces) - 1
            yield {"message": {"role": "assistant", "content": piece}, "done": done}

    async def run(pieces: list[str]) -> list[dict[str, Any]]:
        parser = ToolCallParser("{", [WEATHER])
        return [c async for c in tool_call_events(chunks(pieces), parser=parser)]

    out = asyncio.run(run(['{"name": "get_weather", ', '"arguments": {"city": "Paris"}}', ""]))
    assert [c["done"] for c in out] == [False, True]
    assert out[0]["message"]["content"] == "" and out[0]["message"]["tool_calls"][0]["function"] == {
        "index": 0,
        "name": "get_weather",
        "arguments": {"city": "Paris"},
    }
    assert re.fullmatch(r"call_[a-z0-9]{8}", out[0]["message"]["tool_calls"][0]["id"])
    unfinished = asyncio.run(run(["{ not", " json"]))
    assert [c["message"]["content"] for c in unfinished] == ["{ not json"]


# Rendered by Ollama 0.33.0-rc2 (`_debug_render_only`) for the same template, tools and messages.
OLLAMA_QWEN_PROMPT = (
    "<|im_start|>system\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
    '{"type": "function", "function": {get_weather Get the weather <now> {object <nil> <nil> [city] '
    '{"city":{"type":"string","description":"the city"},"unit":{"type":"string","enum":["c","f"]}}}}}\n'
    "</tools>\n\nFor each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
    "<|im_start|>user\nweather in Paris?<|im_end|>\n<|im_start|>assistant\n<tool_call>\n"
    '{"name": "get_weather", "arguments": {"city":"Paris","unit":"c"}}\n</tool_call><|im_end|>\n'
    "<|im_start|>user\n<tool_response>\n20 degrees\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
)
HISTORY = [
    {"role": "user", "content": "weather in Paris?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"id": "call_1", "function": {"name": "get_weather", "arguments": {"unit": "c", "city": "Paris"}}}
        ],
    },
    {"role": "tool", "content": "20 degrees", "tool_name": "get_weather", "tool_call_id": "call_1"},
]


def test_tools_and_tool_history_render_as_on_ollama() -> None:
    assert render_chat(QWEN, HISTORY, system=None, tools=[WEATHER]) == OLLAMA_QWEN_PROMPT


def test_tool_values_print_as_go_prints_them() -> None:
    template = (
        "{{ range .Tools }}{{ . }}|{{ json .Function.Parameters }}{{ end }}"
        "{{ range .Messages }}{{ range .ToolCalls }}|{{ . }}|{{ .Function.Arguments }}{{ end }}{{ end }}"
    )
    rendered = render_chat(template, HISTORY, system=None, tools=[GET])
    assert rendered == (
        '{"type":"function","function":{"name":"get","description":"","parameters":{"type":"object",'
        '"properties":null}}}|{"type":"object","properties":null}'
        '|{call_1 {0 get_weather {"city":"Paris","unit":"c"}}}|{"city":"Paris","unit":"c"}'
    )
    assert ollama_template(QWEN).vars().count("tools") == 1
