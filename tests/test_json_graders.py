"""The JSON and tool-call graders, the suite files that use them, and the bound on a structured answer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.errors import SuiteDataError
from harness.quality.json_graders import parse_tool_reply, schema_problem, tool_reply
from harness.quality.scoring import Item, grade, reference_response
from harness.quality.suite_data import load_suite

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer", "minimum": 0, "maximum": 130},
        "address": {"$ref": "#/$defs/address"},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
    "$defs": {"address": {"type": "object", "properties": {"city": {"enum": ["Paris", "Rome"]}}}},
}
WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {}}}},
}
TIME_TOOL = {"type": "function", "function": {"name": "get_time"}}


def item(grader: str, answer: str, **fields: Any) -> Item:
    return Item(id="i", prompt="p", grader=grader, answer=answer, topic="t", difficulty="easy", **fields)


def call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"function": {"name": name, "arguments": arguments}}


# ------------------------------------------------------------------------------------- JSON answers


def test_schema_problems_name_where_the_answer_breaks_the_schema() -> None:
    assert schema_problem(PERSON, '{"name": "Ann", "age": 3, "address": {"city": "Rome"}}') is None
    assert "not JSON" in str(schema_problem(PERSON, '{"name": "Ann", "age": 3'))
    too_old = schema_problem(PERSON, '{"name": "Ann", "age": 131}')
    assert too_old == "invalid at age: 131 is greater than the maximum of 130"
    assert "address/city" in str(
        schema_problem(PERSON, '{"name": "A", "age": 1, "address": {"city": "Oslo"}}')
    )
    assert "Additional properties" in str(schema_problem(PERSON, '{"name": "A", "age": 1, "x": 2}'))


def test_json_fields_is_exact_strict_and_folds_strings_when_flexible() -> None:
    person = item("json-fields", '{"name": "Ann Lee", "age": 30}', schema=PERSON)
    exact = grade(person, '{"age": 30.0, "name": "Ann Lee"}')  # key order and 30.0 do not matter
    assert (exact.score_strict, exact.score_flexible, exact.passed) == (1.0, 1.0, True)
    folded = grade(person, '{"name": " ann  LEE ", "age": 30}')
    assert (folded.score_strict, folded.score_flexible, folded.passed) == (0.0, 1.0, False)
    half = grade(person, '{"name": "Bo", "age": 30}')
    assert (half.score_strict, half.score_flexible) == (
        0.0,
        0.5,
    ) and "/name: 'Bo' != 'Ann Lee'" in half.reason
    invalid = grade(person, '{"name": "Ann Lee", "age": 300}')  # right name, but outside the schema
    assert (invalid.score_strict, invalid.score_flexible, invalid.passed) == (0.0, 0.0, False)


def test_schema_valid_passes_any_valid_document_only() -> None:
    valid = item("schema-valid", '{"name": "A", "age": 1}', schema=PERSON)
    assert grade(valid, '{"name": "Zed", "age": 99}').passed
    assert not grade(valid, '{"name": "Zed"}').passed
    assert not grade(valid, "Sure! Here is the JSON you asked for.").passed


# --------------------------------------------------------------------------------------- tool calls


def test_a_tool_reply_round_trips_and_plain_text_has_no_calls() -> None:
    text = tool_reply("", [call("get_weather", city="Paris")])
    assert parse_tool_reply(text) == ("", [("get_weather", {"city": "Paris"})])
    assert parse_tool_reply("I would call get_weather") == ("I would call get_weather", [])
    assert parse_tool_reply('{"name": "get_weather"}') == ('{"name": "get_weather"}', [])


def test_tool_call_compares_arguments_as_json_values() -> None:
    weather = item("tool-call", '{"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}',
                   tools=(WEATHER_TOOL,))  # fmt: skip
    for arguments in ({"days": 2.0, "city": "Paris"}, '{"days": 2, "city": "Paris"}'):  # a JSON string too
        reply = tool_reply("", [{"function": {"name": "get_weather", "arguments": arguments}}])
        assert grade(weather, reply).passed
    wrong_city = grade(weather, tool_reply("", [call("get_weather", city="paris", days=2)]))
    assert (wrong_city.score_strict, wrong_city.score_flexible) == (0.0, 1.0)  # flexible: the name only
    twice = grade(weather, tool_reply("", [call("get_weather", city="Paris", days=2)] * 2))
    assert (twice.score_strict, twice.score_flexible) == (0.0, 0.0)
    none = grade(weather, tool_reply("It is sunny in Paris.", []))
    assert (none.score_strict, none.passed) == (0.0, False) and "no call" in none.reason


def test_parallel_calls_match_in_any_order_and_names_alone_for_tool_name() -> None:
    calls = [{"name": "get_weather", "arguments": {"city": city}} for city in ("A", "B")]
    both = item("tool-call", json.dumps(calls), tools=(WEATHER_TOOL,))
    assert grade(both, tool_reply("", [call("get_weather", city="B"), call("get_weather", city="A")])).passed
    assert not grade(both, tool_reply("", [call("get_weather", city="A")])).passed
    name = item("tool-name", '{"name": "get_time"}', tools=(WEATHER_TOOL, TIME_TOOL))
    assert grade(name, tool_reply("", [call("get_time", timezone="anything")])).passed
    assert not grade(name, tool_reply("", [call("get_weather", city="Paris")])).passed


def test_no_tool_call_needs_no_call_and_an_accepted_answer() -> None:
    direct = item("no-tool-call", "It is four.", accept=(r"\bfour\b",), tools=(WEATHER_TOOL,))
    assert grade(direct, tool_reply("Two plus two is four.", [])).passed
    assert not grade(direct, tool_reply("Four? Let me check.", [call("get_weather", city="x")])).passed
    assert not grade(direct, tool_reply("I cannot say.", [])).passed
    assert grade(direct, reference_response(direct)).passed


# ------------------------------------------------------------------------------------ suite files


def _suite(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text("suite: s\ndescription: d\ninstruction: i\n" + text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("items:\n- {id: a, prompt: p, grader: json-fields, answer: '{}', schema: nope, tags: {topic: t, "
         "difficulty: easy}}\n", "unknown schema 'nope'"),
        ("items:\n- {id: a, prompt: p, grader: tool-call, answer: '{\"name\": \"x\"}', tools: [x], tags: "
         "{topic: t, difficulty: easy}}\n", "unknown tool(s) x"),
        ("tools: {x: {type: function, function: {name: y}}}\nitems:\n- {id: a, prompt: p, grader: tool-name, "
         "answer: '{\"name\": \"x\"}', tools: [x], tags: {topic: t, difficulty: easy}}\n",
         "tool 'x' must be {type: function, function: {name: x, ...}}"),
        ("schemas: {s: {type: object}}\nitems:\n- {id: a, prompt: p, grader: json-fields, answer: '[1]', "
         "schema: s, tags: {topic: t, difficulty: easy}}\n", "answer does not fit the schema"),
        ("tools: {x: {type: function, function: {name: x}}}\nitems:\n- {id: a, prompt: p, "
         "grader: no-tool-call, answer: hi, tools: [x], tags: {topic: t, difficulty: easy}}\n",
         "needs 'accept'"),
        ("num_predict: 0\nitems:\n- {id: a, prompt: p, grader: exact, answer: x, tags: {topic: t, "
         "difficulty: easy}}\n", "'num_predict' must be a positive integer"),
    ],
)  # fmt: skip
def test_bad_schema_and_tool_items_are_named(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(SuiteDataError) as error:
        load_suite(_suite(tmp_path, text))
    assert problem in error.value.message


# -------------------------------------------------------------------- a structured answer's length

# llama.cpp's json_schema_to_grammar allows `space ::= | " " | "\n"{1,2} [ \t]{0,20}` after every literal,
# and a string character may be a six-character escape (\uXXXX): the longest answer a schema allows.
SPACE = 22
ESCAPE = 6


def longest_answer(schema: dict[str, Any], defs: dict[str, Any]) -> int:
    """Characters (so tokens, at most) of the longest JSON document the grammar of `schema` accepts."""
    if "$ref" in schema:
        return longest_answer(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    if "enum" in schema:
        return max(len(json.dumps(value)) for value in schema["enum"]) + SPACE
    kind = schema["type"]
    if kind == "string":
        return 2 + ESCAPE * schema["maxLength"] + SPACE
    if kind == "integer":
        return max(len(str(schema["minimum"])), len(str(schema["maximum"]))) + SPACE
    if kind == "boolean":
        return len("false") + SPACE
    if kind == "array":
        return 2 * (1 + SPACE) + schema["maxItems"] * (longest_answer(schema["items"], defs) + 1 + SPACE)
    assert kind == "object" and schema["additionalProperties"] is False, schema
    fields = [
        len(json.dumps(key)) + 2 * SPACE + 1 + longest_answer(value, defs) + 1 + SPACE
        for key, value in schema["properties"].items()
    ]
    return 2 * (1 + SPACE) + sum(fields)


def test_every_structured_answer_ends_within_the_suites_token_budget() -> None:
    """Every schema bounds its strings, arrays and integers and closes its objects, so an answer that
    follows the grammar ends within num_predict tokens whatever the weights (random weights included)."""
    suite = load_suite("structured")
    assert suite.num_predict is not None
    for entry in suite.items:
        assert entry.schema is not None
        schema = dict(entry.schema)
        longest = longest_answer(schema, schema.get("$defs", {}))
        assert longest <= suite.num_predict, f"{entry.id}: up to {longest} tokens"
