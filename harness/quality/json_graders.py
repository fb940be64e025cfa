"""Graders for answers that are data, not prose: structured outputs (`format` = a JSON schema) and tool calls.

- `schema-valid`: the answer parses as JSON and validates against the item's schema (`jsonschema`). With a
  schema in `format` the server's grammar guarantees this for any weights, so a failure is a server bug.
- `json-fields`: valid, and every field of the reference (`answer`, a JSON document) has exactly that value;
  flexible: the share of reference fields that match after normalising strings (case, outer whitespace).
- `tool-call`: the reply's tool calls are exactly the reference calls (name, and arguments equal as JSON
  values: key order, spacing and 2 vs 2.0 do not matter), as the Berkeley Function Calling Leaderboard's
  AST check; flexible: the same names (arguments not compared).
- `tool-name`: the calls' names are the reference names (arguments not compared).
- `no-tool-call`: no call, and the content says what the item accepts (`accept` regexes, as `exact`): a
  reply that calls a tool when none is needed fails, and so does text that does not answer.

A tool item's response is the reply message as JSON, `{"content": ..., "tool_calls": [...]}` (`tool_reply`),
so the run record keeps both parts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jsonschema

from harness.quality.scoring import GradeResult, Item, answer_itself, register_grader

Call = tuple[str, Any]  # (name, arguments as plain JSON values)


# ------------------------------------------------------------------------------------------- replies


def tool_reply(content: str, tool_calls: Sequence[Mapping[str, Any]]) -> str:
    """A tool item's response text: the reply message's content and tool calls as one JSON object."""
    return json.dumps({"content": content, "tool_calls": list(tool_calls)}, ensure_ascii=False)


def parse_tool_reply(response: str) -> tuple[str, list[Call]]:
    """(content, calls) of a `tool_reply`; any other text is content without calls."""
    try:
        reply = json.loads(response)
    except ValueError:
        return response, []
    if not isinstance(reply, dict) or "tool_calls" not in reply:
        return response, []
    calls = []
    for call in reply.get("tool_calls") or []:
        function = call.get("function", {}) if isinstance(call, dict) else {}
        calls.append((str(function.get("name", "")), _normalised(function.get("arguments", {}))))
    return str(reply.get("content") or ""), calls


def _normalised(value: Any) -> Any:
    """A JSON value with arguments given as a JSON string decoded, and whole floats as integers."""
    if isinstance(value, str):
        try:
            decoded = json.loads(value)
        except ValueError:
            return value
        return _normalised(decoded) if isinstance(decoded, (dict, list)) else value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {str(key): _normalised(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_normalised(item) for item in value]
    return value


def _loose(value: Any) -> Any:
    """A normalised value with strings also folded (case, outer whitespace): the flexible comparison."""
    if isinstance(value, str):
        return " ".join(value.split()).casefold()
    if isinstance(value, dict):
        return {key: _loose(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_loose(item) for item in value]
    return value


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def expected_calls(item: Item) -> list[Call]:
    """The reference calls of a tool item: its `answer`, one call object or a list of them."""
    answer = json.loads(item.answer)
    calls = answer if isinstance(answer, list) else [answer]
    return [(str(call["name"]), _normalised(call.get("arguments", {}))) for call in calls]


def reference_tool_reply(item: Item) -> str:
    """The reply that must score 1 on a tool item: the reference calls, or the direct answer."""
    if item.grader == "no-tool-call":
        return tool_reply(item.answer, [])
    calls = [{"function": {"name": name, "arguments": arguments}} for name, arguments in expected_calls(item)]
    return tool_reply("", calls)


# ------------------------------------------------------------------------------------- JSON answers


def schema_problem(schema: Mapping[str, Any], response: str) -> str | None:
    """Why `response` is not a JSON document valid for `schema` (None when it is)."""
    try:
        document = json.loads(response)
    except ValueError as error:
        return f"not JSON: {error}"
    worst = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(document))
    if worst is not None:
        where = "/".join(str(part) for part in worst.absolute_path) or "the document"
        return f"invalid at {where}: {worst.message}"
    return None


def _field_pairs(expected: Any, actual: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """(path, expected, actual) for every leaf of `expected` (objects are walked; lists are leaves)."""
    if isinstance(expected, dict):
        pairs = []
        for key, value in expected.items():
            inner = actual.get(key) if isinstance(actual, dict) else None
            pairs += _field_pairs(value, inner, f"{path}/{key}")
        return pairs
    return [(path or "/", expected, actual)]


def _validate_json_answer(item: Item) -> list[str]:
    if item.schema is None:
        return ["a JSON item needs a 'schema' (a name from the file's 'schemas', or a JSON schema)"]
    try:
        jsonschema.Draft202012Validator.check_schema(item.schema)
    except jsonschema.exceptions.SchemaError as error:
        return [f"schema is not a valid JSON schema: {error.message}"]
    problem = schema_problem(item.schema, item.answer)
    return [] if problem is None else [f"answer does not fit the schema: {problem}"]


@register_grader("schema-valid", validate=_validate_json_answer, reference=answer_itself)
def grade_schema_valid(item: Item, response: str) -> GradeResult:
    """Passes when the answer is JSON that validates against the item's schema."""
    assert item.schema is not None  # checked when the suite loaded
    problem = schema_problem(item.schema, response)
    score = float(problem is None)
    extracted = response.strip() if problem is None else None
    return GradeResult(score, score, extracted, extracted, problem is None, problem or "fits the schema")


@register_grader("json-fields", validate=_validate_json_answer, reference=answer_itself)
def grade_json_fields(item: Item, response: str) -> GradeResult:
    """Valid for the schema, and every reference field exact (strict) or equal after folding (flexible)."""
    assert item.schema is not None  # checked when the suite loaded
    problem = schema_problem(item.schema, response)
    if problem is not None:
        return GradeResult(0.0, 0.0, None, None, False, problem)
    pairs = _field_pairs(_normalised(json.loads(item.answer)), _normalised(json.loads(response)))
    exact = [path for path, want, got in pairs if _canonical(want) == _canonical(got)]
    loose = [path for path, want, got in pairs if _canonical(_loose(want)) == _canonical(_loose(got))]
    wrong = [f"{path}: {got!r} != {want!r}" for path, want, got in pairs if path not in exact]
    strict = float(len(exact) == len(pairs))
    reason = f"{len(exact)}/{len(pairs)} fields exact" + (f"; {'; '.join(wrong[:3])}" if wrong else "")
    extracted = _canonical(json.loads(response))
    return GradeResult(strict, len(loose) / len(pairs), extracted, extracted, strict == 1.0, reason)


# --------------------------------------------------------------------------------------- tool calls


def _tool_names(item: Item) -> set[str]:
    return {str(tool.get("function", {}).get("name")) for tool in item.tools}


def _validate_call_answer(item: Item) -> list[str]:
    if not item.tools:
        return ["a tool item needs 'tools' (names from the file's 'tools')"]
    try:
        calls = expected_calls(item)
    except (ValueError, KeyError, TypeError, AttributeError):
        return ['answer must be a call {"name": ..., "arguments": {...}} or a list of calls, as JSON']
    unknown = sorted({name for name, _ in calls} - _tool_names(item))
    return [f"answer calls {', '.join(unknown)}, which is not among the item's tools"] if unknown else []


def _call_text(calls: Sequence[Call]) -> str | None:
    return "; ".join(f"{name}({_canonical(arguments)})" for name, arguments in calls) or None


def _sorted_calls(calls: Sequence[Call]) -> list[str]:
    return sorted(_canonical([name, arguments]) for name, arguments in calls)


@register_grader("tool-call", validate=_validate_call_answer, reference=reference_tool_reply)
def grade_tool_call(item: Item, response: str) -> GradeResult:
    """Strict: exactly the reference calls (any order), arguments equal as JSON; flexible: the same names."""
    _, calls = parse_tool_reply(response)
    expected = expected_calls(item)
    strict = float(_sorted_calls(calls) == _sorted_calls(expected))
    flexible = float(sorted(name for name, _ in calls) == sorted(name for name, _ in expected))
    got = _call_text(calls) or "no call"
    reason = f"called {got}; expected {_call_text(expected)}"
    return GradeResult(strict, flexible, _call_text(calls), _call_text(calls), strict == 1.0, reason)


@register_grader("tool-name", validate=_validate_call_answer, reference=reference_tool_reply)
def grade_tool_name(item: Item, response: str) -> GradeResult:
    """The calls' names are the reference names (any order); arguments are not compared."""
    _, calls = parse_tool_reply(response)
    names = sorted(name for name, _ in calls)
    score = float(names == sorted(name for name, _ in expected_calls(item)))
    reason = f"called {', '.join(names) or 'nothing'}; expected {item.answer}"
    text = ", ".join(names) or None
    return GradeResult(score, score, text, text, score == 1.0, reason)


def _validate_no_call(item: Item) -> list[str]:
    if not item.tools:
        return ["a tool item needs 'tools' (names from the file's 'tools')"]
    if not item.accept:
        return ["a no-tool-call item needs 'accept': regexes the direct answer must match"]
    problems = []
    for pattern in item.accept:
        try:
            re.compile(pattern)
        except re.error as error:
            problems.append(f"bad regex {pattern!r}: {error}")
    if not problems and not _accepted(item, item.answer):
        problems.append(f"answer {item.answer!r} matches none of its accept patterns")
    return problems


def _accepted(item: Item, content: str) -> str | None:
    for pattern in item.accept:
        match = re.search(pattern, content, re.IGNORECASE)
        if match:
            return match.group()
    return None


@register_grader("no-tool-call", validate=_validate_no_call, reference=reference_tool_reply)
def grade_no_tool_call(item: Item, response: str) -> GradeResult:
    """No tool call, and the content matches an `accept` regex (the answer the question needs)."""
    content, calls = parse_tool_reply(response)
    found = None if calls else _accepted(item, content)
    score = float(found is not None)
    reason = (
        f"called {_call_text(calls)} though no call was needed"
        if calls
        else (f"answered directly, {'with ' + repr(found) if found else 'but not with an accepted answer'}")
    )
    return GradeResult(score, score, found, found, found is not None, reason)
