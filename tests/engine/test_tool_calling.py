"""Tool calling on the engine, end to end, through the real client libraries (ollama, openai, langchain).

The model is the oracle fixture under a TEMPLATE that uses `.Tools`; what it emits is forced by a `format`
schema (a grammar) to be `{"name": "get_weather", "arguments": {"city": "Paris"}}` up to whitespace, so the
engine's tool-call parser has a real call in real model output to find. Real Ollama 0.33 answers these same
requests with the same calls (tests/engine/test_conformance.py runs them against both).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest

from harness.engine import EmbeddedEngine
from harness.gguf.build import BuiltModel

from .conftest import create_from_gguf, make_engine, post
from .test_tool_parser import HISTORY, OLLAMA_QWEN_PROMPT, WEATHER

TEMPLATES = Path(__file__).parent / "templates"
# Tools, then each message; any JSON object the model writes may be a call (no .ToolCalls: tag "{").
PLAIN_TOOLS_TEMPLATE = (
    "{{- if .Tools }}Tools: {{ range .Tools }}{{ . }}\n{{ end }}{{ end }}"
    "{{ range .Messages }}{{ .Role }}: {{ .Content }}{{ range .ToolCalls }}"
    "CALL {{ .Function.Name }} {{ .Function.Arguments }}{{ end }}\n{{ end }}assistant:"
)
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the weather in a city",
        "parameters": {
            "type": "object",
            "required": ["city"],
            "properties": {"city": {"type": "string", "description": "the city"}},
        },
    },
}
# The grammar that makes the oracle write a call of get_weather for Paris.
CALL_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"enum": ["get_weather"]},
        "arguments": {
            "type": "object",
            "properties": {"city": {"enum": ["Paris"]}},
            "required": ["city"],
        },
    },
    "required": ["name", "arguments"],
}
GREEDY = {"temperature": 0, "top_k": 1, "seed": 1, "num_predict": 200}
ASK = [{"role": "user", "content": "weather in Paris?"}]
CALL_ID = re.compile(r"call_[a-z0-9]{8}")


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory, oracle_2k_gguf: BuiltModel) -> Iterator[EmbeddedEngine]:
    with make_engine(tmp_path_factory) as running:
        client = ollama.Client(host=running.url, timeout=60)
        create_from_gguf(client, "tooly", oracle_2k_gguf.path, template=PLAIN_TOOLS_TEMPLATE)
        qwen = (TEMPLATES / "qwen2.5-tools.gotmpl").read_text()
        create_from_gguf(client, "qwen-tools", oracle_2k_gguf.path, template=qwen)
        yield running


def _assert_weather_call(call: dict[str, Any], index: int = 0) -> None:
    assert CALL_ID.fullmatch(call["id"]), call
    assert call["function"] == {"index": index, "name": "get_weather", "arguments": {"city": "Paris"}}


def test_chat_returns_tool_calls(engine: EmbeddedEngine) -> None:
    body = {
        "model": "tooly",
        "messages": ASK,
        "tools": [WEATHER_TOOL],
        "format": CALL_SCHEMA,
        "options": GREEDY,
    }
    whole = post(engine, "/api/chat", json={**body, "stream": False}).json()
    assert whole["message"]["content"] == "" and whole["done_reason"] == "stop"
    [call] = whole["message"]["tool_calls"]
    _assert_weather_call(call)
    chunks = [json.loads(line) for line in post(engine, "/api/chat", json=body).text.splitlines()]
    # as Ollama streams it: nothing while the call is parsed, the call in a chunk of its own, then the end
    assert [chunk["done"] for chunk in chunks] == [False, True]
    _assert_weather_call(chunks[0]["message"]["tool_calls"][0])
    assert chunks[0]["message"]["content"] == "" and "tool_calls" not in chunks[1]["message"]


def test_output_that_is_no_call_stays_content(engine: EmbeddedEngine) -> None:
    """With the `<tool_call>` tag of Qwen 2.5's template, JSON without the tag is plain content."""
    body = {"model": "qwen-tools", "messages": ASK, "tools": [WEATHER_TOOL], "format": CALL_SCHEMA}
    whole = post(engine, "/api/chat", json={**body, "options": GREEDY, "stream": False}).json()
    assert "tool_calls" not in whole["message"]
    assert json.loads(whole["message"]["content"]) == {"name": "get_weather", "arguments": {"city": "Paris"}}


def test_tools_and_history_render_through_the_template(engine: EmbeddedEngine) -> None:
    body = {"model": "qwen-tools", "messages": HISTORY, "tools": [WEATHER], "_debug_render_only": True}
    answer = post(engine, "/api/chat", json=body).json()
    assert answer["_debug_info"]["rendered_template"] == OLLAMA_QWEN_PROMPT
    assert answer["done"] is False and answer["message"] == {"role": "", "content": ""}


def test_ollama_python_tools_and_tool_results(engine: EmbeddedEngine) -> None:
    client = ollama.Client(host=engine.url, timeout=60)

    def get_weather(city: str) -> str:
        """Get the weather in a city.

        Args:
            city: the city
        """
        return f"20 degrees in {city}"

    response = client.chat(
        model="tooly", messages=ASK, tools=[get_weather], format=CALL_SCHEMA, options=GREEDY
    )
    [call] = response.message.tool_calls or []
    assert call.function.name == "get_weather" and dict(call.function.arguments) == {"city": "Paris"}
    result = get_weather(**call.function.arguments)
    history = [*ASK, response.message, {"role": "tool", "content": result, "tool_name": "get_weather"}]
    rendered = httpx.post(
        f"{engine.url}/api/chat",
        json={"model": "tooly", "messages": [*ASK, response.message.model_dump(exclude_none=True),
                                             history[-1]], "_debug_render_only": True},
        timeout=60,
    ).json()["_debug_info"]["rendered_template"]  # fmt: skip
    assert 'assistant: CALL get_weather {"city":"Paris"}\ntool: 20 degrees in Paris\nassistant:' in rendered
    answer = client.chat(model="tooly", messages=history, tools=[get_weather], options=GREEDY)
    assert answer.done and not answer.message.tool_calls


def test_openai_tools_and_tool_results(engine: EmbeddedEngine) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{engine.url}/v1", api_key="unused", max_retries=0)
    request: dict[str, Any] = {
        "model": "tooly",
        "messages": ASK,
        "tools": [WEATHER_TOOL],
        "temperature": 0,
        "seed": 1,
        "max_tokens": 200,
        "response_format": {"type": "json_schema", "json_schema": {"name": "call", "schema": CALL_SCHEMA}},
    }
    completion = client.chat.completions.create(**request)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == ""
    [call] = choice.message.tool_calls or []
    assert CALL_ID.fullmatch(call.id) and call.type == "function"
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    deltas = list(client.chat.completions.create(**request, stream=True))
    streamed = [d.choices[0].delta.tool_calls for d in deltas if d.choices and d.choices[0].delta.tool_calls]
    assert len(streamed) == 1 and streamed[0][0].function.name == "get_weather"
    assert deltas[-1].choices[0].finish_reason == "tool_calls"
    history = [
        *ASK,
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "20 degrees"},
    ]
    answer = client.chat.completions.create(
        model="tooly", messages=history, tools=[WEATHER_TOOL], max_tokens=5
    )
    assert answer.choices[0].message.tool_calls is None


def test_langchain_bind_tools_and_tool_results(engine: EmbeddedEngine) -> None:
    chat_models = pytest.importorskip("langchain_ollama")
    messages = pytest.importorskip("langchain_core.messages")
    tools = pytest.importorskip("langchain_core.tools")

    @tools.tool
    def get_weather(city: str) -> str:
        """Get the weather in a city."""
        return f"20 degrees in {city}"

    model = chat_models.ChatOllama(
        model="tooly", base_url=engine.url, format=CALL_SCHEMA, temperature=0, seed=1, num_predict=200
    )
    ai = model.bind_tools([get_weather]).invoke("weather in Paris?")
    [call] = ai.tool_calls
    assert call["name"] == "get_weather" and call["args"] == {
        "city": "Paris"
    }  # (langchain-ollama sets its own id)
    result = get_weather.invoke(call)  # a ToolMessage answering the call
    plain = chat_models.ChatOllama(model="tooly", base_url=engine.url, temperature=0, num_predict=5)
    answer = plain.bind_tools([get_weather]).invoke([messages.HumanMessage("weather in Paris?"), ai, result])
    assert isinstance(answer, messages.AIMessage) and not answer.tool_calls


def test_responses_function_calls_whole_and_streamed(engine: EmbeddedEngine) -> None:
    function = WEATHER_TOOL["function"]
    tool = {"type": "function", "name": "get_weather", "description": function["description"]}
    tool["parameters"] = function["parameters"]
    request = {
        "model": "tooly",
        "input": "weather in Paris?",
        "tools": [tool],
        "temperature": 0,
        "max_output_tokens": 200,
        "text": {"format": {"type": "json_schema", "name": "call", "schema": CALL_SCHEMA}},
    }
    whole = post(engine, "/v1/responses", json=request).json()
    assert whole["object"] == "response" and whole["status"] == "completed"
    [item] = whole["output"]
    assert item["type"] == "function_call" and item["name"] == "get_weather" and item["status"] == "completed"
    assert json.loads(item["arguments"]) == {"city": "Paris"} and CALL_ID.fullmatch(item["call_id"])
    assert whole["tools"] == [{**tool, "strict": None}]  # echoed with every field, as Ollama
    lines = post(engine, "/v1/responses", json={**request, "stream": True}).text.split("\n\n")
    events = [json.loads(block.split("data: ", 1)[1]) for block in lines if block.strip()]
    kinds = [event["type"] for event in events]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    assert events[-1]["response"]["output"][0]["name"] == "get_weather"
    history = {
        "model": "tooly",
        "input": [
            {"role": "user", "content": "weather in Paris?"},
            {
                "type": "function_call",
                "call_id": item["call_id"],
                "name": "get_weather",
                "arguments": item["arguments"],
            },
            {"type": "function_call_output", "call_id": item["call_id"], "output": "20 degrees"},
        ],
        "tools": [tool],
        "max_output_tokens": 3,
    }
    answer = post(engine, "/v1/responses", json=history)
    assert answer.status_code == 200 and answer.json()["output"][0]["type"] == "message"
