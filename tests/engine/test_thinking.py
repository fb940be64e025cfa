"""Thinking as Ollama does it: tags inferred from the template, the `think` setting, the parser on output text
(pure units), and the engine end to end with a template that opens `<think>` itself, so that the oracle's
reply is thinking (as Ollama 0.33 answers the same requests: see test_conformance.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import ollama
import pytest

from harness.engine import EmbeddedEngine
from harness.engine.routing import ApiError
from harness.engine.thinking import ThinkingParser, ThinkSetting, think_setting, thinking_tags
from harness.gguf.build import BuiltModel
from harness.modelfile.gotemplate import parse_template

from .conftest import create_from_gguf, make_engine, post

# Thinking in the history between <think> tags; the template opens <think> itself when thinking is on.
THINKING_TEMPLATE = (
    '{{- range $i, $_ := .Messages }}{{ if eq .Role "user" }}user: {{ .Content }}\n'
    '{{ else if eq .Role "assistant" }}assistant: {{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}'
    "{{ .Content }}\n{{ end }}{{ end }}think={{ $.Think }} set={{ $.IsThinkSet }} level={{ $.ThinkLevel }}\n"
    "assistant: {{ if $.Think }}<think>{{ end }}\n"
)
GREEDY = {"temperature": 0, "top_k": 1, "seed": 1}
HISTORY = [
    {"role": "user", "content": "hello the"},
    {"role": "assistant", "content": "x", "thinking": "hmm"},
    {"role": "user", "content": "hello the"},
]


@pytest.mark.parametrize(
    ("template", "tags"),
    [
        (THINKING_TEMPLATE, ("<think>", "</think>")),
        ("{{ range .Messages }}{{ .Content }}{{ end }}", ("", "")),  # no .Thinking
        # not in a range over Messages
        ("{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}", ("", "")),
        ("{{ range .Messages }}<|channel|>analysis {{ .Thinking }} <|end|>{{ end }}",
         ("<|channel|>analysis", "<|end|>")),
        # no text around it
        ("{{ range .Messages }}{{ .Role }}: {{ .Thinking }}{{ .Content }}{{ end }}", ("", "")),
    ],
)  # fmt: skip
def test_tags_are_inferred_from_the_template(template: str, tags: tuple[str, str]) -> None:
    assert thinking_tags(parse_template(template)) == tags


def test_think_setting_follows_ollama() -> None:
    thinking, plain = ["completion", "thinking"], ["completion"]
    assert think_setting("m", thinking, {}) == ThinkSetting(True, "medium")  # on by default
    assert think_setting("m", thinking, {"think": False}) == ThinkSetting(False)
    assert think_setting("m", thinking, {"think": "high"}) == ThinkSetting(True, "high")
    assert think_setting("m", plain, {}) == ThinkSetting(None)
    assert think_setting("m", plain, {"think": False}).template_flags == {
        "Think": False,
        "ThinkLevel": "",
        "IsThinkSet": True,
    }
    for think, message in [
        (True, '"m" does not support thinking'),
        ("low", '"m" does not support thinking'),
        ("loud", 'invalid think value: "loud" (must be "high", "medium", "low", "max", true, or false)'),
    ]:
        with pytest.raises(ApiError) as caught:
            think_setting("m", plain, {"think": think})
        assert caught.value.status == 400 and caught.value.message == message


def feed(parser: ThinkingParser, pieces: list[str]) -> list[tuple[str, str]]:
    return [parser.add(piece) for piece in pieces]


def test_parser_splits_thinking_from_content() -> None:
    parser = ThinkingParser("<think>", "</think>")
    assert feed(parser, ["  <th", "ink>\n ", "let me", " see</th", "ink>\n\n", "Answer", "."]) == [
        ("", ""),  # blanks and a partial tag: wait
        ("", ""),  # the tag, then blanks eaten
        ("let me", ""),
        (" see", ""),  # a partial closing tag is held back
        ("", ""),  # closed; the blanks after it are eaten
        ("", "Answer"),
        ("", "."),
    ]


def test_output_without_the_tag_is_all_content() -> None:
    parser = ThinkingParser("<think>", "</think>")
    assert feed(parser, [" Hi", " <think>"]) == [("", " Hi"), ("", " <think>")]


def test_a_prompt_that_opened_the_tag_starts_inside_the_thinking() -> None:
    parser = ThinkingParser("<think>", "</think>")
    parser.add("<think>")
    assert feed(parser, [" one", ".</think>", " two"]) == [("one", ""), (".", ""), ("", "two")]


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory, oracle_2k_gguf: BuiltModel) -> Iterator[EmbeddedEngine]:
    with make_engine(tmp_path_factory) as running:
        client = ollama.Client(host=running.url, timeout=60)
        create_from_gguf(client, "thinky", oracle_2k_gguf.path, template=THINKING_TEMPLATE)
        yield running


def test_thinking_model_has_the_capability_and_thinks_by_default(engine: EmbeddedEngine) -> None:
    client = ollama.Client(host=engine.url, timeout=60)
    assert client.show("thinky").capabilities == ["completion", "thinking"]
    body = {"model": "thinky", "messages": HISTORY, "_debug_render_only": True}
    rendered = post(engine, "/api/chat", json=body).json()["_debug_info"]["rendered_template"]
    assert rendered.endswith("think=true set=true level=medium\nassistant: <think>\n")
    assert "assistant: <think>hmm</think>x\n" in rendered  # history thinking through the template
    off = post(engine, "/api/chat", json={**body, "think": False}).json()["_debug_info"]["rendered_template"]
    assert off.endswith("think=false set=true level=\nassistant: \n")


def test_chat_and_generate_return_thinking(engine: EmbeddedEngine) -> None:
    client = ollama.Client(host=engine.url, timeout=60)
    answer = client.chat(model="thinky", messages=HISTORY, options=GREEDY)
    assert answer.message.thinking == "one." and answer.message.content == ""  # the oracle's reply, thought
    chunks = [json.loads(line) for line in post(engine, "/api/chat", json={
        "model": "thinky", "messages": HISTORY, "options": GREEDY}).text.splitlines()]  # fmt: skip
    assert [c["message"].get("thinking") for c in chunks] == ["one", ".", None]
    generated = client.generate(model="thinky", prompt="hello the", options=GREEDY)
    assert generated.thinking == "one." and generated.response == ""
    plain = client.chat(model="thinky", messages=HISTORY, think=False, options=GREEDY)
    assert plain.message.thinking is None and plain.message.content == " one."


def test_openai_reasoning(engine: EmbeddedEngine) -> None:
    messages = [{"role": "user", "content": "hello the"}]
    body = {"model": "thinky", "messages": messages, "temperature": 0, "reasoning_effort": "low"}
    answer = httpx.post(f"{engine.url}/v1/chat/completions", json=body, timeout=60).json()
    assert answer["choices"][0]["message"] == {"role": "assistant", "content": "", "reasoning": "one."}
    response = httpx.post(
        f"{engine.url}/v1/responses",
        json={"model": "thinky", "input": "hello the", "temperature": 0},
        timeout=60,
    ).json()
    assert (
        response["output"][0]["type"] == "reasoning" and response["output"][0]["summary"][0]["text"] == "one."
    )
