"""Ollama's `format` (structured outputs) as llama.cpp grammars for the runner.

Ollama (llm/llama_server.go) turns `format` into llama-server sampling fields: `"json"` becomes its JSON
grammar, a JSON schema object goes to llama-server's `json_schema`, `null` and `""` mean not set, and anything
else is refused with `invalid format: ...; expected "json" or a valid JSON Schema object` (500).

llama-server converts `json_schema` with llama.cpp's json_schema_to_grammar. The xllamacpp wheel's runner
does apply `json_schema`, but its build converts to an llguidance grammar (other rules, other accepted
schemas, and a schema it cannot compile is only logged: the answer is unconstrained text with status 200).
So the schema is converted here by schema_grammar.py, a port of llama.cpp's GBNF converter, and handed to the
runner as `grammar`: the same grammar as Ollama's, and for a schema llama.cpp cannot convert the same 400,
whose `error` is llama-server's whole error body as Ollama passes it on.
"""

from __future__ import annotations

import json
from typing import Any

from harness.engine.schema_grammar import SchemaConversionError, json_schema_to_grammar

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


class FormatError(ValueError):
    """A `format` Ollama refuses; the text is the answer, `status` its HTTP status (Ollama: 500 for a
    format that is neither "json" nor an object, 400 for a schema llama.cpp cannot convert)."""

    def __init__(self, message: str, status: int = 500) -> None:
        super().__init__(message)
        self.status = status


def format_fields(value: Any) -> dict[str, Any]:
    """The llama-server fields for a request's `format` (`{}` when not set). Raises FormatError."""
    if value is None or value == "":
        return {}
    if value == "json":
        return {"grammar": GRAMMAR_JSON}
    if not isinstance(value, dict):
        raw = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        raise FormatError(f'invalid format: {_go_quote(raw)}; expected "json" or a valid JSON Schema object')
    try:
        return {"grammar": json_schema_to_grammar(value)}
    except SchemaConversionError as error:
        raise FormatError(
            llama_server_refusal(f"Field 'json_schema': \"json_schema\": {error}"), 400
        ) from None


def llama_server_refusal(message: str) -> str:
    """The text Ollama 0.33 answers for a request its llama-server refused with 400: llama-server's whole
    error body, compact JSON, as the `error` string."""
    body = {"error": {"code": 400, "message": message, "type": "invalid_request_error"}}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def _go_quote(text: str) -> str:
    """Go's %q of a string: double quotes, with quotes and backslashes escaped."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
