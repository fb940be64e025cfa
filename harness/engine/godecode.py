"""Go's JSON decoding of Ollama's request structs, for the engine's error texts.

A request body is checked against a table of `GoField`s (the struct's fields and their Go types); the first
value of the wrong JSON type raises `GoDecodeError` with the text Go's `json.Unmarshal` gives, e.g.
`json: cannot unmarshal string into Go struct field EmbedRequest.dimensions of type int`. Nulls and unknown
fields pass, as Go ignores them. Used by the OpenAI-compatible routes and the embedding endpoints.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class GoDecodeError(ValueError):
    """A request value Go would not decode into its field; the message is Go's."""


@dataclass(frozen=True)
class GoField:
    """A request field as Go decodes it: its Go type and, for objects (or lists of them), their fields."""

    go_type: str
    item_type: str = ""
    fields: Mapping[str, GoField] = field(default_factory=dict)


STRING, BOOL, INT, ANY = GoField("string"), GoField("bool"), GoField("int"), GoField("any")
FLOAT64, FLOAT32 = GoField("float64"), GoField("float32")


def json_kind(value: Any) -> str:
    """The JSON kind of a value as Go's unmarshal errors name it."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def go_dynamic_type(value: Any) -> str:
    """Go's `%T` of a value decoded into `any`."""
    if value is None:
        return "<nil>"
    kind = json_kind(value)
    return {"number": "float64", "array": "[]interface {}", "object": "map[string]interface {}"}.get(
        kind, kind
    )


def _fits(go_type: str, value: Any) -> bool:
    if go_type == "any":
        return True
    if go_type.startswith("[]"):
        return isinstance(value, list)
    kind = json_kind(value)
    if go_type == "int":
        return kind == "number" and isinstance(value, int)
    if go_type.startswith("float"):
        return kind == "number"
    if go_type in ("string", "bool"):
        return kind == go_type
    return kind == "object"


def _type_error(value: Any, where: str, go_type: str) -> GoDecodeError:
    kind = json_kind(value)
    if kind == "number" and go_type == "int":
        kind = f"number {json.dumps(value)}"
    return GoDecodeError(f"json: cannot unmarshal {kind} into Go struct field {where} of type {go_type}")


def check_field_types(data: Mapping[str, Any], fields: Mapping[str, GoField], where: str) -> None:
    """Raise GoDecodeError with Go's unmarshal text for the first field whose value does not fit its Go type
    (nulls and unknown fields are ignored, as Go ignores them)."""
    for key, value in data.items():
        spec = fields.get(key)
        if spec is None or value is None:
            continue
        path = f"{where}.{key}"
        if not _fits(spec.go_type, value):
            raise _type_error(value, path, spec.go_type)
        if not spec.fields:
            continue
        for item in value if isinstance(value, list) else [value]:
            if item is None:
                continue
            if not isinstance(item, dict):
                raise _type_error(item, path, spec.item_type)
            check_field_types(item, spec.fields, path)
