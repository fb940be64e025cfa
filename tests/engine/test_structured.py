"""`format` (structured outputs) on the live engine: Ollama's JSON grammar, JSON schemas as GBNF, refusals.

The `tiny` model has random weights, so what it writes is whatever the grammar lets through: the tests check
that the grammar, not the model, shaped the text.
"""

from __future__ import annotations

import datetime
import json
import re
from typing import Any

import httpx
import ollama
import pytest
from pydantic import BaseModel, ConfigDict, Field

from harness.engine import EmbeddedEngine
from harness.engine.schema_grammar import SchemaConversionError, json_schema_to_grammar
from harness.engine.structured import GRAMMAR_JSON, FormatError, format_fields

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
# Real Ollama 0.33's answer to format {"type": "foo"} (400): llama-server's error body as the error string.
UNRECOGNIZED_FOO = (
    '{"error":{"code":400,"message":"Field \'json_schema\': \\"json_schema\\": JSON schema conversion failed:'
    '\\nUnrecognized schema: {\\"type\\":\\"foo\\"}","type":"invalid_request_error"}}'
)


class Address(BaseModel):
    street: str = Field(max_length=6)
    zip: str = Field(pattern=r"^[0-9]{5}$")


class Person(BaseModel):
    """Nested model ($defs/$ref), bounds (minimum/maximum), pattern, format: what clients send."""

    name: str = Field(max_length=6)
    age: int = Field(ge=0, le=130)
    born: datetime.date
    score: float  # no bounds: llama.cpp's converter enforces minimum/maximum on integers only, as on Ollama
    address: Address


class Loose(BaseModel):
    """additionalProperties: true."""

    model_config = ConfigDict(extra="allow")
    n: int = Field(ge=0, le=9)


def test_format_values_and_ollamas_refusals() -> None:
    assert format_fields(None) == {} and format_fields("") == {}
    assert format_fields("json") == {"grammar": GRAMMAR_JSON}
    for bad, shown in (("xml", r'"\"xml\""'), (5, '"5"'), (["a"], r'"[\"a\"]"')):
        with pytest.raises(FormatError) as caught:
            format_fields(bad)
        assert str(caught.value) == f'invalid format: {shown}; expected "json" or a valid JSON Schema object'
        assert caught.value.status == 500
    with pytest.raises(FormatError) as refused:
        format_fields({"type": "foo"})
    assert refused.value.status == 400 and str(refused.value) == UNRECOGNIZED_FOO


def test_schema_grammar_follows_llama_cpps_rules() -> None:
    rules = dict(line.split(" ::= ", 1) for line in json_schema_to_grammar(RECORD).splitlines())
    assert rules["root"] == (
        '"{" space n-kv "," space ok-kv "," space tags-kv ( "," space ( note-kv ) )? space "}"'
    )  # required keys in order, then the optional one; whitespace inside the braces, none after the document
    assert rules["tags"] == '"[" space (tags-item ("," space tags-item)?)? space "]"'
    assert rules["tags-item"] == '("\\"a\\"" | "\\"b\\"")'
    assert rules["note"] == '"\\"" char{0,3} "\\""'
    assert rules["space"] == '| " " | "\\n"{1,2} [ \\t]{0,20}'


def test_the_converter_takes_what_pydantic_writes() -> None:
    rules = dict(
        line.split(" ::= ", 1) for line in json_schema_to_grammar(Person.model_json_schema()).splitlines()
    )
    assert rules["address"] == "ref-defs-Address"  # $defs/$ref: the nested model gets its own rules
    assert rules["ref-defs-Address-zip"] == '"\\"" (ref-defs-Address-zip-1{5,5}) "\\""'
    assert rules["age"] == '([0-9] | ([1-8] [0-9] | [9] [0-9]) | "1" ([0-2] [0-9] | [3] "0"))'
    assert rules["born"] == "date-string"
    assert rules["root"].startswith('"{" space name-kv "," space age-kv')
    open_object = json_schema_to_grammar(
        {"type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": True}
    )
    assert 'additional-k ::= ["] ( [a] char+ | [^"a] char* )? ["]' in open_object
    assert '"\\"" (dot* "ab" dot*) "\\""' in json_schema_to_grammar({"type": "string", "pattern": "ab"})


@pytest.mark.parametrize(
    ("schema", "lines"),
    [
        ({"type": "foo"}, ['Unrecognized schema: {"type":"foo"}']),
        (
            {"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}},
            [
                "Error resolving ref #/$defs/missing: $defs not in "
                '{"type":"object","properties":{"a":{"$ref":"#/$defs/missing"}}}'
            ],
        ),
        (
            {"properties": {"a": True, "b": {"type": "bar"}}},
            ["Unrecognized schema: true", 'Unrecognized schema: {"type":"bar"}'],
        ),
        ({"$ref": "https://example.com/s.json"}, ["Unsupported ref: https://example.com/s.json"]),
    ],
)
def test_unconvertible_schemas_get_llama_cpps_text(schema: dict[str, Any], lines: list[str]) -> None:
    with pytest.raises(SchemaConversionError) as caught:
        json_schema_to_grammar(schema)
    assert str(caught.value) == "JSON schema conversion failed:\n" + "\n".join(lines)


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


def test_bad_formats_get_ollamas_status_and_text(engine: EmbeddedEngine) -> None:
    yaml = 'invalid format: "\\"yaml\\""; expected "json" or a valid JSON Schema object'
    for path, body in (
        ("/api/generate", {"prompt": "hi"}),
        ("/api/generate", {"prompt": "hi", "stream": True}),
        ("/api/chat", {"messages": [{"role": "user", "content": "hi"}]}),
    ):
        for bad, status, text in (("yaml", 500, yaml), ({"type": "foo"}, 400, UNRECOGNIZED_FOO)):
            answer = httpx.post(
                f"{engine.url}{path}", json={"model": "tiny", **body, "format": bad}, timeout=60
            )
            assert (answer.status_code, answer.json()) == (status, {"error": text}), answer.text


def test_ollama_client_format_from_a_nested_pydantic_model(client: ollama.Client) -> None:
    answer = client.generate("tiny", "hello", options=LONG_ENOUGH, format=Person.model_json_schema())
    assert answer.done_reason == "stop", answer.response
    person = Person.model_validate_json(answer.response)  # pydantic checks every bound, pattern and format
    assert re.fullmatch(r"[0-9]{5}", person.address.zip)
    loose = client.chat(
        "tiny",
        [{"role": "user", "content": "hi"}],
        options={"temperature": 0, "num_predict": 64},
        format=Loose.model_json_schema(),
    )  # extra keys may run on past any limit on random weights; the required key comes first
    assert re.match(r"\{\s*\"n\"\s*:\s*[0-9]", loose.message.content or ""), loose.message.content


def test_openai_parse_with_a_nested_pydantic_model(engine: EmbeddedEngine) -> None:
    import openai  # here, not at the top: the SDK takes a while to import and only this test needs it

    client = openai.OpenAI(base_url=f"{engine.url}/v1", api_key="unused", max_retries=0)
    completion = client.chat.completions.parse(
        model="tiny",
        messages=[{"role": "user", "content": "Describe a person."}],
        response_format=Person,
        temperature=0,
        max_tokens=400,
    )
    assert isinstance(completion.choices[0].message.parsed, Person)


def test_langchain_with_structured_output(engine: EmbeddedEngine) -> None:
    from langchain_ollama import ChatOllama  # here, not at the top: slow to import, only this test needs it

    model = ChatOllama(model="tiny", base_url=engine.url, temperature=0, num_predict=400)
    person = model.with_structured_output(Person).invoke("Describe a person.")
    assert isinstance(person, Person)


@pytest.mark.parametrize(
    ("schema", "text"),
    [
        (
            {"type": "array", "items": {"type": "boolean"}, "maxItems": 3},
            "[false, true, true\n                    ]",
        ),
        (
            {
                "type": "object",
                "properties": {"a": {"type": "integer"}, "b": {"type": "string", "maxLength": 4}},
                "required": ["a", "b"],
            },
            '{ "a"\n:8,"b"\n:".a.a" }',
        ),
    ],
)
def test_oracle_writes_what_ollama_writes_under_a_schema(
    client: ollama.Client, schema: dict[str, Any], text: str
) -> None:
    """The texts real Ollama 0.33 gave for the same greedy requests: whitespace goes where llama.cpp's grammar
    allows it (after `{`, `[`, `:`, `,`, before `}`, `]`) and nothing follows the document."""
    options = {"temperature": 0, "top_k": 1, "seed": 1, "num_predict": 40}
    assert client.generate("oracle", "hello the", options=options, format=schema).response == text
