"""`format` (structured outputs) on the live engine: Ollama's JSON grammar, JSON schemas as GBNF, refusals.

The `tiny` model has random weights, so what it writes is whatever the grammar lets through: the tests check
that the grammar, not the model, shaped the text.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import ollama
import pytest

from harness.engine import EmbeddedEngine
from harness.engine.structured import GRAMMAR_JSON, FormatError, format_fields, schema_grammar

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("tiny_and_oracle")]
LONG_ENOUGH = {"temperature": 0, "num_predict": 400}  # every schema below bounds its document well below
RECORD = {
    "type": "object",
    "properties": {
        "n": {"type": "integer"},
        "ok": {"type": "boolean"},
        "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2},
        "note": {"type": "string", "maxLength": 3},
    },
    "required": ["n", "ok", "tags"],
}


def test_format_values_and_ollamas_refusals() -> None:
    assert format_fields(None) == {} and format_fields("") == {}
    assert format_fields("json") == {"grammar": GRAMMAR_JSON}
    for bad, shown in (("xml", r'"\"xml\""'), (5, '"5"'), (["a"], r'"[\"a\"]"')):
        with pytest.raises(FormatError) as caught:
            format_fields(bad)
        assert str(caught.value) == f'invalid format: {shown}; expected "json" or a valid JSON Schema object'
    with pytest.raises(FormatError, match="keyword '\\$ref' is not supported by this engine"):
        format_fields({"type": "object", "properties": {"a": {"$ref": "#/$defs/a"}}})
    with pytest.raises(FormatError, match="keyword 'additionalProperties'"):
        format_fields({"type": "object", "properties": {}, "additionalProperties": True})


def test_schema_grammar_follows_llama_cpps_rules() -> None:
    rules = dict(line.split(" ::= ", 1) for line in schema_grammar(RECORD).splitlines())
    assert rules["root"] == (
        '"{" space n-kv "," space ok-kv "," space tags-kv ( "," space ( note-kv ) )? "}" space'
    )  # required keys in order, then the optional one
    assert rules["tags"] == '"[" space (tags-item ("," space tags-item)?)? "]" space'
    assert rules["tags-item"] == '("\\"a\\"" | "\\"b\\"") space'
    assert rules["note"] == '"\\"" char{0,3} "\\"" space'
    assert rules["space"] == '| " " | "\\n"{1,2} [ \\t]{0,20}'


def _validate(document: Any) -> None:
    assert isinstance(document, dict) and set(document) <= {"n", "ok", "tags", "note"}, document
    assert isinstance(document["n"], int) and isinstance(document["ok"], bool)
    assert isinstance(document["tags"], list) and len(document["tags"]) <= 2
    assert set(document["tags"]) <= {"a", "b"} and len(document.get("note", "")) <= 3


def test_a_json_schema_shapes_a_random_models_output(client: ollama.Client) -> None:
    free = client.generate("tiny", "hello", options=LONG_ENOUGH)
    assert not free.response.lstrip().startswith("{")  # unconstrained, the model writes words
    shaped = client.generate("tiny", "hello", options=LONG_ENOUGH, format=RECORD)
    assert shaped.done_reason == "stop", shaped.response  # the grammar ended the document
    _validate(json.loads(shaped.response))


def test_format_json_makes_an_object_and_works_in_chat_too(client: ollama.Client) -> None:
    generated = client.generate("tiny", "hello", options={"temperature": 0, "num_predict": 24}, format="json")
    assert re.match(r'\{\s*("|\})', generated.response), generated.response
    chatted = client.chat(
        "tiny", [{"role": "user", "content": "hi"}], options=LONG_ENOUGH, format={"type": "integer"}
    )
    assert re.fullmatch(r"-?(0|[1-9][0-9]{0,15})\s*", chatted.message.content or ""), chatted.message.content


def test_openai_response_format_becomes_format(engine: EmbeddedEngine) -> None:
    body = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0,
        "max_tokens": 400,
        "response_format": {"type": "json_schema", "json_schema": {"name": "record", "schema": RECORD}},
    }
    answer = httpx.post(f"{engine.url}/v1/chat/completions", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    _validate(json.loads(answer.json()["choices"][0]["message"]["content"]))
    body["response_format"] = {"type": "json_object"}
    body["max_tokens"] = 8
    content = httpx.post(f"{engine.url}/v1/chat/completions", json=body, timeout=60).json()
    assert content["choices"][0]["message"]["content"].startswith("{")


def test_bad_formats_are_500s_with_the_reason(engine: EmbeddedEngine) -> None:
    for bad, text in (
        ("yaml", 'invalid format: "\\"yaml\\""; expected "json" or a valid JSON Schema object'),
        ({"type": "string", "pattern": "^a+$"}, "keyword 'pattern' is not supported by this engine"),
    ):
        answer = httpx.post(
            f"{engine.url}/api/generate", json={"model": "tiny", "prompt": "hi", "format": bad}, timeout=60
        )
        assert answer.status_code == 500 and text in answer.json()["error"], answer.text
