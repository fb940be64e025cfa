"""Ollama's `format` (structured outputs) as llama.cpp grammars for the runner.

Ollama (llm/llama_server.go) turns `format` into llama-server sampling fields: `"json"` becomes its JSON
grammar, a JSON schema object goes to llama-server's `json_schema`, `null` and `""` mean not set, and anything
else is refused with `invalid format: ...; expected "json" or a valid JSON Schema object`.

The runner in the xllamacpp wheel applies GBNF grammars but silently ignores `json_schema` (its schema
converter emits llguidance, which that build does not apply), so this module converts schemas to GBNF itself,
with the rules and names of llama.cpp's `json_schema_to_grammar` for the part of JSON Schema that structured
outputs use: `type` (one or a list), `properties` with `required` (required keys first, the others optional
in order), `items` with `minItems`/`maxItems`, `minLength`/`maxLength`, `enum`, `const`, `anyOf`/`oneOf`, and
`additionalProperties: false`. A schema that needs more (`$ref`, `pattern`, `format`, `minimum`, an open
`additionalProperties`, ...) is refused with a message naming the keyword, never applied loosely.
"""

from __future__ import annotations

import json
import re
from typing import Any

# Ollama's grammar for format "json" (llm/llama_server.go): an object at the root.
GRAMMAR_JSON = r"""
root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null") ws
object ::=
  "{" ws (
         string ":" ws value
    ("," ws string ":" ws value)*
  )? ws "}"
array  ::=
  "[" ws (
            value
    ("," ws value)*
  )? ws "]"
string ::=
  "\"" (
    [^"\\\x7F\x00-\x1F] |
    "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F]) # escapes
  )* "\""
number ::= ("-"? ([0-9] | [1-9] [0-9]*)) ("." [0-9]+)? ([eE] [-+]? [0-9]+)?
# Optional space: by convention, applied in this grammar after literal chars when allowed
ws ::= ([ \t\n] ws)?
"""

SPACE_RULE = '| " " | "\\n"{1,2} [ \\t]{0,20}'
PRIMITIVE_RULES = {
    "boolean": ('("true" | "false") space', ()),
    "decimal-part": ("[0-9]{1,16}", ()),
    "integral-part": ("[0] | [1-9] [0-9]{0,15}", ()),
    "number": (
        '("-"? integral-part) ("." decimal-part)? ([eE] [-+]? integral-part)? space',
        ("integral-part", "decimal-part"),
    ),
    "integer": ('("-"? integral-part) space', ("integral-part",)),
    "value": ("object | array | string | number | boolean | null", ("object", "array", "string", "number",
                                                                      "boolean", "null")),
    "object": ('"{" space ( string ":" space value ("," space string ":" space value)* )? "}" space',
               ("string", "value")),
    "array": ('"[" space ( value ("," space value)* )? "]" space', ("value",)),
    "char": ('[^"\\\\\\x7F\\x00-\\x1F] | [\\\\] (["\\\\bfnrt] | "u" [0-9a-fA-F]{4})', ()),
    "string": ('"\\"" char* "\\"" space', ("char",)),
    "null": ('"null" space', ()),
}  # fmt: skip
# Keywords that only describe a schema: they change nothing in the grammar.
ANNOTATIONS = {"title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated"}
HANDLED = {
    "type",
    "properties",
    "required",
    "items",
    "minItems",
    "maxItems",
    "enum",
    "const",
    "anyOf",
    "oneOf",
    "minLength",
    "maxLength",
}
INVALID_NAME = re.compile(r"[^a-zA-Z0-9-]+")


class FormatError(ValueError):
    """A `format` Ollama refuses, or a schema this engine cannot make a grammar of; the text is the answer."""


def format_fields(value: Any) -> dict[str, Any]:
    """The llama-server fields for a request's `format` (`{}` when not set). Raises FormatError."""
    if value is None or value == "":
        return {}
    if value == "json":
        return {"grammar": GRAMMAR_JSON}
    if not isinstance(value, dict):
        raw = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        raise FormatError(f'invalid format: {_go_quote(raw)}; expected "json" or a valid JSON Schema object')
    return {"grammar": schema_grammar(value)}


def _go_quote(text: str) -> str:
    """Go's %q of a string: double quotes, with quotes and backslashes escaped."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def schema_grammar(schema: dict[str, Any]) -> str:
    """GBNF for a JSON schema, as llama.cpp's converter writes it for the supported keywords."""
    converter = _SchemaConverter()
    converter.visit(schema, "")
    return converter.format_grammar()


class _SchemaConverter:
    def __init__(self) -> None:
        self.rules: dict[str, str] = {"space": SPACE_RULE}

    def format_grammar(self) -> str:
        return "".join(f"{name} ::= {rule}\n" for name, rule in sorted(self.rules.items()))

    def _add_rule(self, name: str, rule: str) -> str:
        key = INVALID_NAME.sub("-", name) or "root"
        if key not in self.rules or self.rules[key] == rule:
            self.rules[key] = rule
            return key
        index = 0
        while f"{key}{index}" in self.rules and self.rules[f"{key}{index}"] != rule:
            index += 1
        self.rules[f"{key}{index}"] = rule
        return f"{key}{index}"

    def _primitive(self, name: str) -> str:
        rule, dependencies = PRIMITIVE_RULES[name]
        for dependency in dependencies:
            if dependency not in self.rules:
                self._primitive(dependency)
        return self._add_rule(name, rule)

    def visit(self, schema: Any, name: str) -> str:
        rule_name = name or "root"
        if schema is True or schema == {}:
            return self._add_rule(rule_name, self._primitive("value"))
        if not isinstance(schema, dict):
            raise FormatError(f"invalid JSON schema in format: {json.dumps(schema)} is not a schema object")
        unsupported = sorted(set(schema) - ANNOTATIONS - HANDLED - {"additionalProperties"})
        if unsupported or schema.get("additionalProperties", False) is not False:
            keyword = unsupported[0] if unsupported else "additionalProperties"
            raise FormatError(
                f"format: the JSON schema keyword {keyword!r} is not supported by this engine (it supports "
                "type, properties, required, items, minItems, maxItems, minLength, maxLength, enum, const, "
                'anyOf, oneOf and additionalProperties: false); use format "json", or a schema without it'
            )
        schema_type = schema.get("type")
        if "oneOf" in schema or "anyOf" in schema:
            options = schema.get("oneOf") or schema.get("anyOf") or []
            alternatives = [self.visit(option, _child(name, i)) for i, option in enumerate(options)]
            return self._add_rule(rule_name, " | ".join(alternatives))
        if "const" in schema:
            return self._add_rule(rule_name, self._literal(schema["const"]) + " space")
        if "enum" in schema:
            return self._add_rule(
                rule_name, "(" + " | ".join(self._literal(v) for v in schema["enum"]) + ") space"
            )
        if isinstance(schema_type, list):
            alternatives = [self.visit({**schema, "type": t}, _child(name, t)) for t in schema_type]
            return self._add_rule(rule_name, " | ".join(alternatives))
        if schema_type == "object" or (schema_type is None and "properties" in schema):
            return self._add_rule(rule_name, self._object(schema, name))
        if schema_type == "array" or (schema_type is None and "items" in schema):
            return self._add_rule(rule_name, self._array(schema, name))
        if schema_type == "string" and ("minLength" in schema or "maxLength" in schema):
            high = schema.get("maxLength")
            length = _repetition(self._primitive("char"), int(schema.get("minLength", 0)), high and int(high))
            return self._add_rule(rule_name, f'"\\"" {length} "\\"" space')
        if schema_type in ("string", "number", "integer", "boolean", "null"):
            return self._add_rule(rule_name, self._primitive(schema_type))
        if schema_type is None:
            return self._add_rule(rule_name, self._primitive("value"))
        raise FormatError(f"invalid JSON schema in format: unknown type {json.dumps(schema_type)}")

    def _literal(self, value: Any) -> str:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'

    def _object(self, schema: dict[str, Any], name: str) -> str:
        properties: dict[str, Any] = schema.get("properties") or {}
        if "properties" not in schema:
            return self._primitive("object")
        required = set(schema.get("required") or [])
        order = [key for key in properties if key in required] + [
            key for key in properties if key not in required
        ]
        rules: dict[str, str] = {}
        for key in order:
            value_rule = self.visit(properties[key], _child(name, key))
            rules[key] = self._add_rule(
                _child(name, f"{key}-kv"),
                f'{self._literal(key)} space ":" space {value_rule}',
            )
        required_keys = [key for key in order if key in required]
        optional_keys = [key for key in order if key not in required]
        parts = ['"{" space']
        parts.append(' "," space '.join(rules[key] for key in required_keys))
        if optional_keys:
            tail = self._optional_chain(optional_keys, rules, name)
            parts.append(f'( "," space ( {tail} ) )?' if required_keys else f"( {tail} )?")
        parts.append('"}" space')
        return " ".join(part for part in parts if part)

    def _optional_chain(self, keys: list[str], rules: dict[str, str], name: str) -> str:
        """llama.cpp's optional properties: any one may come first, then any of the later ones, in order."""
        return " | ".join(
            self._recursive_refs(keys[i:], rules, name, first_optional=False) for i in range(len(keys))
        )

    def _recursive_refs(
        self, keys: list[str], rules: dict[str, str], name: str, *, first_optional: bool
    ) -> str:
        key, rest = keys[0], keys[1:]
        refs = f'( "," space {rules[key]} )?' if first_optional else rules[key]
        if rest:
            rest_rule = self._recursive_refs(rest, rules, name, first_optional=True)
            refs += " " + self._add_rule(_child(name, f"{key}-rest"), rest_rule)
        return refs

    def _array(self, schema: dict[str, Any], name: str) -> str:
        items = schema.get("items", {})
        item_rule = self.visit(items, _child(name, "item"))
        low = int(schema.get("minItems", 0))
        high = schema.get("maxItems")
        if high is not None and int(high) < low:
            raise FormatError("invalid JSON schema in format: maxItems is less than minItems")
        repeated = _repetition(item_rule, low, None if high is None else int(high), '"," space')
        return f'"[" space {repeated} "]" space'


def _child(name: str, suffix: object) -> str:
    """The rule name of a part of the schema named `name`, as llama.cpp names it."""
    return f"{name}-{suffix}" if name else str(suffix)


def _repetition(item: str, low: int, high: int | None, separator: str = "") -> str:
    """llama.cpp's _build_repetition: `item` low..high times (None: no upper bound), `separator` between."""
    if high == 0:
        return ""
    if low == 0 and high == 1:
        return f"{item}?"
    if not separator:
        if low == 1 and high is None:
            return f"{item}+"
        if low == 0 and high is None:
            return f"{item}*"
        return f"{item}{{{low},{'' if high is None else high}}}"
    rest = _repetition(f"({separator} {item})", max(low - 1, 0), None if high is None else high - 1)
    result = f"{item} {rest}"
    return f"({result})?" if low == 0 else result
