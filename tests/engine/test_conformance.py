"""Differential conformance: one list of requests, run against the engine and, when a real `ollama` binary is
named by HARNESS_OLLAMA_BIN, against real Ollama in the same test.

Each case states what must hold on both servers (status, error text, exact text of the oracle fixture's
greedy reply, tool calls). With a real server, the two answers are also compared whole, after the volatile
values (times, durations, random ids) are masked: every difference must be listed in ALLOWED with its reason.
Without HARNESS_OLLAMA_BIN (CI) only the engine half runs. For example:

    HARNESS_OLLAMA_BIN=/path/to/ollama-0.33/bin/ollama pytest tests/engine/test_conformance.py
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest

from harness.gguf.build import BuiltModel
from harness.testing.helpers import RealOllama

from .conftest import create_from_gguf, make_engine
from .test_structured import UNRECOGNIZED_FOO
from .test_thinking import THINKING_TEMPLATE
from .test_tool_calling import CALL_SCHEMA, PLAIN_TOOLS_TEMPLATE, TEMPLATES, WEATHER_TOOL

REAL_OLLAMA_ENV = "HARNESS_OLLAMA_BIN"
GREEDY = {"temperature": 0, "top_k": 1, "seed": 1}
HELLO = [{"role": "user", "content": "hello the"}]
ASK = [{"role": "user", "content": "weather in Paris?"}]
ORACLE_REPLY = " is two one."
CITY = '{"city":"Paris"}'
TOOL_HISTORY = [
    *ASK,
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"id": "call_1", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
    },
    {"role": "tool", "content": "20 degrees", "tool_name": "get_weather", "tool_call_id": "call_1"},
]
OPENAI_TOOL_HISTORY = [
    *ASK,
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "20 degrees"},
]
THINK_HISTORY = [
    {"role": "user", "content": "hello the"},
    {"role": "assistant", "content": "x", "thinking": "hmm"},
    {"role": "user", "content": "hello the"},
]
# Mistral-style: the tool list as one JSON array, tool calls as JSON.
JSON_TOOLS_TEMPLATE = (
    "{{ if .Tools }}[AVAILABLE_TOOLS] {{ json .Tools }}[/AVAILABLE_TOOLS]{{ end }}"
    "{{ range .Messages }}{{ .Role }}: {{ .Content }}"
    "{{ if .ToolCalls }}[TOOL_CALLS] {{ json .ToolCalls }}{{ end }}\n{{ end }}"
)
# Messages, tool calls and tools through `json` and printing, as the template sees Ollama's values.
JSON_VALUES_TEMPLATE = (
    "{{ range .Messages }}{{ json . }}|"
    "{{ range .ToolCalls }}{{ json .Function }}/{{ json .Function.Arguments }}{{ end }}\n{{ end }}"
    "{{ range .Tools }}{{ json .Function }}{{ end }}{{ .Tools }}"
)
# Patterns: used, unanchored, unsupported (any string), malformed (400 with llama.cpp's reason).
PATTERNS = [("^[xy]{3}$", 200), ("b+", 200), ("^a{x}$", 200), ("^a(?=b)$", 200), ("^(a$", 400),
            ("^[ab$", 400), ("^*a$", 400)]  # fmt: skip
# What pydantic writes for a nested model with bounds, a pattern and a format ($defs/$ref, minimum, ...).
NESTED_SCHEMA = {
    "$defs": {
        "Address": {
            "properties": {"zip": {"pattern": "^[0-9]{5}$", "type": "string"}},
            "required": ["zip"],
            "type": "object",
        }
    },
    "properties": {
        "age": {"maximum": 130, "minimum": 0, "type": "integer"},
        "born": {"format": "date", "type": "string"},
        "address": {"$ref": "#/$defs/Address"},
    },
    "required": ["age", "born", "address"],
    "type": "object",
}
GET_TOOL = {"type": "function", "function": {"name": "get_time", "description": "The time & date"}}
RESPONSES_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": WEATHER_TOOL["function"]["description"],
    "parameters": WEATHER_TOOL["function"]["parameters"],
}
OPENAI_CALL_FORMAT = {"type": "json_schema", "json_schema": {"name": "call", "schema": CALL_SCHEMA}}


@dataclass(frozen=True)
class Case:
    """One request and what must hold for its answer on every server (paths as `flatten` writes them)."""

    name: str
    path: str
    body: dict[str, Any] | None = None
    method: str = "POST"
    status: int = 200
    expect: dict[str, Any] = field(default_factory=dict)
    text: str | None = None  # the whole generated text, joined over a stream
    compare: tuple[str, ...] = ("*",)  # which paths the real-Ollama comparison looks at


TOOLS = [WEATHER_TOOL]
LONG = {**GREEDY, "num_predict": 200}
SHORT = {**GREEDY, "num_predict": 3}
CALL_BODY = {"model": "tooly", "messages": ASK, "tools": TOOLS, "format": CALL_SCHEMA, "options": LONG}
OPENAI_CALL_BODY = {
    "model": "tooly",
    "messages": ASK,
    "tools": TOOLS,
    "temperature": 0,
    "max_tokens": 200,
    "response_format": OPENAI_CALL_FORMAT,
}
FIRST_CALL = "body.message.tool_calls[0].function"
FULL_ORACLE = "registry.ollama.ai/library/oracle:latest"
SECOND_DELTA = "body[1].data.choices[0].delta"
GO_ARGUMENTS = '{"a":1.5,"b":2,"c":[3,{"z":1000}]}'
NOT_ARRAY = (
    "input must be a string or array: json: cannot unmarshal number into Go value of type []json.RawMessage"
)

CASES = [
    Case("root", "/", method="GET", expect={"body": "Ollama is running"}),
    Case("generate", "/api/generate",
         {"model": "oracle", "prompt": "hello the", "stream": False, "options": GREEDY},
         text=ORACLE_REPLY, expect={"body.done_reason": "stop"}),
    Case("generate-stream", "/api/generate", {"model": "oracle", "prompt": "hello the", "options": GREEDY},
         text=ORACLE_REPLY),
    Case("chat", "/api/chat", {"model": "oracle", "messages": HELLO, "stream": False, "options": GREEDY},
         text=ORACLE_REPLY, expect={"body.message.role": "assistant"}),
    Case("chat-stream", "/api/chat", {"model": "oracle", "messages": HELLO, "options": GREEDY},
         text=ORACLE_REPLY),
    Case("generate-format-nested-schema", "/api/generate",
         {"model": "oracle", "prompt": "hello the", "stream": False, "options": LONG,
          "format": NESTED_SCHEMA},
         expect={"body.done_reason": "stop"}),
    Case("generate-format-unconvertible", "/api/generate",
         {"model": "oracle", "prompt": "hello the", "stream": False, "format": {"type": "foo"}}, status=400,
         expect={"body.error": UNRECOGNIZED_FOO}),
    *(Case(f"generate-format-pattern-{i}", "/api/generate",
           {"model": "oracle", "prompt": "hello the", "stream": False,
            "options": {**GREEDY, "num_predict": 30}, "format": {"type": "string", "pattern": pattern}},
           status=status)
      for i, (pattern, status) in enumerate(PATTERNS)),
    Case("generate-prompt-over-the-limit-is-truncated", "/api/generate",
         {"model": "oracle", "prompt": "hello the " * 400, "raw": True, "stream": False,
          "options": {**GREEDY, "num_ctx": 64}},
         expect={"body.prompt_eval_count": 35}),
    Case("generate-prompt-limit-follows-the-asked-num-ctx", "/api/generate",
         {"model": "oracle", "prompt": "hello the " * 150, "raw": True, "stream": False, "options": GREEDY},
         expect={"body.prompt_eval_count": 302}),  # over half the trained 512, under half the default 4096
    Case("chat-missing-model", "/api/chat", {"model": "missing", "messages": HELLO}, status=404,
         expect={"body.error": "model 'missing' not found"}),
    Case("show-missing-model", "/api/show", {"model": "missing"}, status=404,
         expect={"body.error": "model 'missing:latest' not found"}),
    Case("chat-tools-without-capability", "/api/chat", {"model": "oracle", "messages": HELLO, "tools": TOOLS},
         status=400, expect={"body.error": f"{FULL_ORACLE} does not support tools"}),
    Case("chat-tool-call", "/api/chat", {**CALL_BODY, "stream": False},
         expect={"body.message.content": "", f"{FIRST_CALL}.name": "get_weather", f"{FIRST_CALL}.index": 0,
                 f"{FIRST_CALL}.arguments.city": "Paris", "body.done_reason": "stop"}),
    Case("chat-tool-call-stream", "/api/chat", CALL_BODY,
         expect={"body[0].message.tool_calls[0].function.name": "get_weather", "body[0].done": False,
                 "body[1].done": True, "body[1].message.content": ""}),
    Case("chat-json-without-tag-is-content", "/api/chat",
         {**CALL_BODY, "model": "qwen-tools", "stream": False}, expect={"body.done_reason": "stop"}),
    Case("chat-render-tools-history-qwen", "/api/chat",
         {"model": "qwen-tools", "messages": TOOL_HISTORY, "tools": TOOLS, "_debug_render_only": True}),
    Case("chat-render-tools-history-llama3.1", "/api/chat",
         {"model": "llama-tools", "messages": TOOL_HISTORY, "tools": TOOLS, "_debug_render_only": True}),
    Case("chat-render-tools-json-list", "/api/chat",
         {"model": "json-tools", "messages": TOOL_HISTORY, "tools": [*TOOLS, GET_TOOL],
          "_debug_render_only": True}),
    Case("chat-render-json-values", "/api/chat",
         {"model": "json-values", "messages": TOOL_HISTORY, "tools": [*TOOLS, GET_TOOL],
          "_debug_render_only": True}),
    Case("chat-render-tools-go-values", "/api/chat",
         {"model": "tooly", "messages": TOOL_HISTORY, "tools": TOOLS, "_debug_render_only": True}),
    Case("chat-tool-history", "/api/chat",
         {"model": "tooly", "messages": TOOL_HISTORY, "tools": TOOLS, "stream": False, "options": SHORT},
         expect={"body.done_reason": "length"}),
    Case("openai-chat", "/v1/chat/completions", {"model": "oracle", "messages": HELLO, "temperature": 0},
         text=ORACLE_REPLY,
         expect={"body.choices[0].finish_reason": "stop", "body.object": "chat.completion"}),
    Case("openai-chat-stream", "/v1/chat/completions",
         {"model": "oracle", "messages": HELLO, "temperature": 0, "stream": True,
          "stream_options": {"include_usage": True}}, text=ORACLE_REPLY),
    Case("openai-missing-model", "/v1/chat/completions", {"model": "missing", "messages": HELLO}, status=404,
         expect={"body.error.type": "not_found_error", "body.error.message": "model 'missing' not found"}),
    Case("openai-tools-without-capability", "/v1/chat/completions",
         {"model": "oracle", "messages": HELLO, "tools": TOOLS}, status=400,
         expect={"body.error.type": "invalid_request_error"}),
    Case("openai-tool-call", "/v1/chat/completions", OPENAI_CALL_BODY,
         expect={"body.choices[0].finish_reason": "tool_calls",
                 "body.choices[0].message.tool_calls[0].function.arguments": CITY}),
    Case("openai-tool-choice-is-ignored", "/v1/chat/completions", {**OPENAI_CALL_BODY, "tool_choice": "none"},
         expect={"body.choices[0].finish_reason": "tool_calls"}),
    Case("openai-tool-call-stream", "/v1/chat/completions", {**OPENAI_CALL_BODY, "stream": True},
         expect={"body[0].data.choices[0].delta.tool_calls[0].function.name": "get_weather",
                 "body[1].data.choices[0].finish_reason": "tool_calls", "body[2]": "[DONE]"}),
    Case("openai-tool-history", "/v1/chat/completions",
         {"model": "tooly", "messages": OPENAI_TOOL_HISTORY, "tools": TOOLS, "temperature": 0,
          "max_tokens": 3},
         expect={"body.choices[0].finish_reason": "length"}),
    Case("openai-render-only", "/v1/chat/completions",
         {"model": "tooly", "messages": TOOL_HISTORY[:1], "tools": TOOLS, "_debug_render_only": True},
         expect={"body.choices[0].finish_reason": None, "body.usage.total_tokens": 0}),
    Case("openai-render-only-stream", "/v1/chat/completions",
         {"model": "tooly", "messages": HELLO, "_debug_render_only": True, "stream": True}),
    Case("openai-completions-render-only", "/v1/completions",
         {"model": "oracle", "prompt": "hello the", "_debug_render_only": True}),
    Case("openai-bad-tool-arguments", "/v1/chat/completions",
         {"model": "tooly", "messages": [{"role": "assistant", "content": "", "tool_calls": [
             {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]}]},
         status=400, expect={"body.error.message": "invalid tool call arguments"}),
    Case("responses", "/v1/responses", {"model": "oracle", "input": "hello the", "temperature": 0},
         text=ORACLE_REPLY, expect={"body.object": "response", "body.status": "completed"}),
    Case("responses-stream", "/v1/responses",
         {"model": "oracle", "input": "hello the", "temperature": 0, "stream": True},
         text=ORACLE_REPLY, expect={"body[-1].event": "response.completed"}),
    Case("responses-tool-call", "/v1/responses",
         {"model": "tooly", "input": "weather in Paris?", "tools": [RESPONSES_TOOL], "temperature": 0,
          "max_output_tokens": 200,
          "text": {"format": {"type": "json_schema", "name": "call", "schema": CALL_SCHEMA}}},
         expect={"body.output[0].type": "function_call", "body.output[0].arguments": CITY}),
    Case("responses-function-call-history", "/v1/responses",
         {"model": "tooly", "tools": [RESPONSES_TOOL], "temperature": 0, "max_output_tokens": 3, "input": [
             {"role": "user", "content": "weather in Paris?"},
             {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": CITY},
             {"type": "function_call_output", "call_id": "call_1", "output": "20 degrees"}]}),
    Case("responses-bad-input", "/v1/responses", {"model": "oracle", "input": 5}, status=400,
         expect={"body.error.message": NOT_ARRAY}),
    Case("responses-unknown-item", "/v1/responses", {"model": "oracle", "input": [{"type": "bogus"}]},
         status=400, expect={"body.error.message": 'input[0]: unknown input item type: "bogus"'}),
    Case("responses-missing-model", "/v1/responses", {"model": "missing", "input": "x"}, status=404,
         expect={"body.error.type": "not_found_error"}),
    Case("chat-tools-not-a-list", "/api/chat", {"model": "tooly", "messages": HELLO, "tools": {"a": 1}},
         status=400, expect={"body.error": "json: cannot unmarshal object into Go struct field "
                                           "ChatRequest.tools of type api.Tools"}),
    Case("chat-tool-function-not-an-object", "/api/chat",
         {"model": "tooly", "messages": HELLO, "tools": [{"type": "function", "function": "f"}]}, status=400,
         expect={"body.error": "json: cannot unmarshal string into Go struct field Tool.tools.function of "
                               "type api.ToolFunction"}),
    Case("chat-tool-call-arguments-not-an-object", "/api/chat", {"model": "tooly", "messages": [
         {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": "x"}}]},
     ]},
         status=400, expect={"body.error": "Value looks like object, but can't find closing '}' symbol"}),
    Case("generate-ignores-tools", "/api/generate",
         {"model": "tooly", "prompt": "x", "tools": TOOLS, "_debug_render_only": True}),
    Case("chat-render-tool-call-numbers", "/api/chat",  # Go's map[string]any: keys sorted, 2.0 written 2
         {"model": "tooly", "messages": [{"role": "assistant", "content": "", "tool_calls": [
             {"function": {"name": "f", "arguments": {"b": 2.0, "a": 1.5, "c": [3.0, {"z": 1e3}]}}}]}],
          "_debug_render_only": True},
         expect={"body._debug_info.rendered_template": f"assistant: CALL f {GO_ARGUMENTS}\nassistant:"}),
    Case("generate-raw-render-only", "/api/generate",
         {"model": "tooly", "prompt": "raw text", "raw": True, "_debug_render_only": True},
         expect={"body._debug_info.rendered_template": "raw text"}),
    Case("chat-empty-tools", "/api/chat",
         {"model": "tooly", "messages": HELLO, "tools": [], "_debug_render_only": True}),
    Case("show-thinking-capability", "/api/show", {"model": "thinky"},
         expect={"body.capabilities[0]": "completion", "body.capabilities[1]": "thinking"},
         compare=("body.capabilities*",)),
    Case("chat-render-thinking-default", "/api/chat",
         {"model": "thinky", "messages": THINK_HISTORY, "_debug_render_only": True}),
    Case("chat-render-thinking-off", "/api/chat",
         {"model": "thinky", "messages": THINK_HISTORY, "think": False, "_debug_render_only": True}),
    Case("chat-render-thinking-level", "/api/chat",
         {"model": "thinky", "messages": HELLO, "think": "high", "_debug_render_only": True}),
    Case("chat-thinking", "/api/chat",
         {"model": "thinky", "messages": THINK_HISTORY, "stream": False, "options": GREEDY},
         expect={"body.message.thinking": "one.", "body.message.content": ""}),
    Case("chat-thinking-stream", "/api/chat",
         {"model": "thinky", "messages": THINK_HISTORY, "options": GREEDY},
         expect={"body[0].message.thinking": "one", "body[1].message.thinking": "."}),
    Case("chat-thinking-off", "/api/chat",
         {"model": "thinky", "messages": THINK_HISTORY, "think": False, "stream": False, "options": GREEDY},
         expect={"body.message.content": " one."}),
    Case("generate-thinking", "/api/generate",
         {"model": "thinky", "prompt": "hello the", "stream": False, "options": GREEDY},
         expect={"body.thinking": "one.", "body.response": ""}),
    Case("think-level-without-capability", "/api/chat",
         {"model": "oracle", "messages": HELLO, "think": "high"},
         status=400, expect={"body.error": '"oracle" does not support thinking'}),
    Case("think-bad-value", "/api/chat", {"model": "thinky", "messages": HELLO, "think": "bogus"}, status=400,
         expect={"body.error": 'invalid think value: "bogus" (must be "high", "medium", "low", "max", true, '
                               "or false)"}),
    Case("openai-reasoning", "/v1/chat/completions",
         {"model": "thinky", "messages": HELLO, "temperature": 0, "reasoning_effort": "low"},
         expect={"body.choices[0].message.reasoning": "one."}),
    Case("openai-reasoning-stream", "/v1/chat/completions",
         {"model": "thinky", "messages": HELLO, "temperature": 0, "stream": True},
         expect={f"{SECOND_DELTA}.content": "", f"{SECOND_DELTA}.reasoning": "."}),
    Case("responses-reasoning", "/v1/responses", {"model": "thinky", "input": "hello the", "temperature": 0},
         expect={"body.output[0].type": "reasoning"}),
    Case("show-template-of-a-bare-gguf", "/api/show", {"model": "bare"}, compare=("body.template",)),
]  # fmt: skip

# Differences from real Ollama 0.33.0-rc2 that remain, by case: (path pattern, reason).
ALLOWED: dict[str, list[tuple[str, str]]] = {
    "show-template-of-a-bare-gguf": [
        (
            "body.template",
            "Ollama gives a GGUF whose tokenizer.chat_template it recognises the matching built-in TEMPLATE "
            "(here ChatML); the engine keeps {{ .Prompt }}",
        )
    ],
}
VOLATILE = {
    "created_at", "created", "completed_at", "modified_at", "total_duration", "load_duration",
    "prompt_eval_duration", "eval_duration",
}  # fmt: skip
RANDOM_IDS = [
    (re.compile(r"call_[a-z0-9]{8}"), "call_<id>"),
    (re.compile(r"chatcmpl-\d{1,3}"), "chatcmpl-<n>"),
    (re.compile(r"cmpl-\d{1,3}"), "cmpl-<n>"),
    (re.compile(r"resp_\d+"), "resp_<n>"),
    (re.compile(r"msg_\d+"), "msg_<n>"),
    (re.compile(r"fc_\d+_\d+"), "fc_<n>"),
    (re.compile(r"fc_resp_\d+_\d+"), "fc_resp_<n>"),
    (re.compile(r"rs_(resp_)?\d+"), "rs_<n>"),
]


def _masked(value: Any, key: str = "") -> Any:
    if key in VOLATILE and value is not None:
        return f"<{type(value).__name__}>"
    if isinstance(value, dict):
        return {k: _masked(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    if isinstance(value, str):
        for pattern, placeholder in RANDOM_IDS:
            if pattern.fullmatch(value):
                return placeholder
    return value


def _parsed(response: httpx.Response) -> Any:
    """The body: JSON; NDJSON lines; SSE events (`{"event", "data"}`, `[DONE]`); or text."""
    kind = response.headers.get("content-type", "")
    if kind.startswith("application/x-ndjson"):
        return [json.loads(line) for line in response.text.splitlines() if line.strip()]
    if kind.startswith("text/event-stream"):
        events = []
        for block in response.text.split("\n\n"):
            fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
            if "data" in fields:
                data = fields["data"]
                events.append(data if data == "[DONE]" else {**fields, "data": json.loads(data)})
        return events
    if kind.startswith("application/json"):
        return response.json()
    return response.text


def flatten(value: Any, path: str = "body") -> dict[str, Any]:
    """`{"body.a[0].b": leaf, ...}` for a JSON value (empty containers are leaves)."""
    if isinstance(value, dict) and value:
        return {k: v for key, item in value.items() for k, v in flatten(item, f"{path}.{key}").items()}
    if isinstance(value, list) and value:
        return {k: v for i, item in enumerate(value) for k, v in flatten(item, f"{path}[{i}]").items()}
    return {path: value}


def joined_text(body: Any) -> str:
    """The generated text of an answer, whole or streamed, in any of the routes' shapes."""
    items = body if isinstance(body, list) else [body]
    pieces = []
    for item in items:
        item = item.get("data", item) if isinstance(item, dict) else {}
        if not isinstance(item, dict):
            continue
        if isinstance(item.get("response"), str):
            pieces.append(item["response"])
        pieces.append((item.get("message") or {}).get("content") or "")
        for choice in item.get("choices") or []:
            pieces.append((choice.get("message") or choice.get("delta") or {}).get("content") or "")
        if item.get("type") == "response.output_text.delta":
            pieces.append(item["delta"])
        if item.get("object") == "response":
            pieces += [part["text"] for out in item["output"] for part in out.get("content") or []]
    return "".join(pieces)


def ask(url: str, case: Case) -> tuple[int, Any]:
    response = httpx.request(case.method, url + case.path, json=case.body, timeout=120)
    return response.status_code, _masked(_parsed(response))


def check(server: str, case: Case, status: int, body: Any) -> None:
    """What must hold for the case on any server."""
    assert status == case.status, (server, case.name, body)
    flat = flatten(body)
    if isinstance(body, list) and body:
        flat.update(flatten(body[-1], "body[-1]"))
    for path, expected in case.expect.items():
        assert flat.get(path, "<missing>") == expected, (server, case.name, path, body)
    if case.text is not None:
        assert joined_text(body) == case.text, (server, case.name, body)


def matches(path: str, pattern: str) -> bool:
    """Whether a flattened path matches a pattern in which only `*` is a wildcard."""
    return re.fullmatch(".*".join(map(re.escape, pattern.split("*"))), path) is not None


def differences(case: Case, ours: Any, theirs: Any) -> dict[str, tuple[Any, Any]]:
    """Paths (among `case.compare`) where the engine's answer differs from real Ollama's, less ALLOWED."""
    mine, real = flatten(ours), flatten(theirs)
    allowed = [pattern for pattern, _ in ALLOWED.get(case.name, [])]
    found = {}
    for path in sorted(set(mine) | set(real)):
        if not any(matches(path, p) for p in case.compare):
            continue
        if any(matches(path, p) for p in allowed):
            continue
        if mine.get(path, "<missing>") != real.get(path, "<missing>"):
            found[path] = (mine.get(path, "<missing>"), real.get(path, "<missing>"))
    return found


def _create_models(url: str, gguf: Path) -> None:
    client = ollama.Client(host=url, timeout=120)
    create_from_gguf(client, "oracle", gguf, template="{{ .Prompt }}")
    create_from_gguf(client, "tooly", gguf, template=PLAIN_TOOLS_TEMPLATE)
    create_from_gguf(client, "qwen-tools", gguf, template=(TEMPLATES / "qwen2.5-tools.gotmpl").read_text())
    create_from_gguf(client, "bare", gguf)
    llama = (TEMPLATES / "llama3.1-tools.gotmpl").read_text()
    create_from_gguf(client, "llama-tools", gguf, template=llama)
    create_from_gguf(client, "json-tools", gguf, template=JSON_TOOLS_TEMPLATE)
    create_from_gguf(client, "json-values", gguf, template=JSON_VALUES_TEMPLATE)
    create_from_gguf(client, "thinky", gguf, template=THINKING_TEMPLATE)


@pytest.fixture(scope="module")
def engine_url(tmp_path_factory: pytest.TempPathFactory, oracle_2k_gguf: BuiltModel) -> Iterator[str]:
    with make_engine(tmp_path_factory) as running:
        _create_models(running.url, oracle_2k_gguf.path)
        yield running.url


@pytest.fixture(scope="module")
def real_url(tmp_path_factory: pytest.TempPathFactory, oracle_2k_gguf: BuiltModel) -> Iterator[str | None]:
    binary = os.environ.get(REAL_OLLAMA_ENV)
    if not binary:
        yield None
        return
    with RealOllama(Path(binary), tmp_path_factory.mktemp("ollama-home")) as server:
        _create_models(server.url, oracle_2k_gguf.path)
        yield server.url


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_engine_answers_as_ollama(case: Case, engine_url: str, real_url: str | None) -> None:
    status, body = ask(engine_url, case)
    check("engine", case, status, body)
    if real_url is None:
        return  # the real half needs HARNESS_OLLAMA_BIN
    real_status, real_body = ask(real_url, case)
    check("real Ollama", case, real_status, real_body)
    assert differences(case, body, real_body) == {}


def test_allow_list_names_existing_cases_and_says_why() -> None:
    names = {case.name for case in CASES}
    assert set(ALLOWED) <= names
    assert all(reason for entries in ALLOWED.values() for _, reason in entries)
