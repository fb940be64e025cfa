"""A subset of Go's `text/template`, enough to render the TEMPLATEs that Ollama models ship with.

Ollama renders prompts with Go's `text/template` (option `missingkey=zero`, plus one extra function,
`json`). This module parses and executes the same language in Python, and refuses - with a
`TemplateError` naming the construct and its line and column - anything outside the subset below, so a
template is never silently rendered differently from Ollama.

Supported:

* text and actions `{{ ... }}`, trim markers `{{- ` and ` -}}` (a dash next to the delimiter plus one
  space, tab or newline; they strip all whitespace on that side), comments `{{/* ... */}}` and
  `{{- /* ... */ -}}`;
* operands: `.`, fields `.A.B`, variables `$`, `$x`, `$x.A`, `$.System`, string literals `"..."` (Go
  escapes) and `` `raw` ``, numbers, character constants, `true`, `false`, `nil`, parenthesised
  pipelines `( ... )`;
* pipelines `a | f b` (the value of `a` becomes `f`'s last argument), declarations `$x := ...`,
  assignments `$x = ...`, and `range $i, $e := ...`; variables are scoped as in Go;
* `{{ if }}`, `{{ else if }}`, `{{ with }}`, `{{ else with }}`, `{{ range }}` (over lists, maps in key
  order, integers, nil), `{{ else }}`, `{{ end }}`, `{{ break }}`, `{{ continue }}`;
* functions `and`, `or` (short-circuit), `not`, `eq` (several operands), `ne`, `lt`, `le`, `gt`, `ge`,
  `len`, `index`, `slice`, `print`, `println`, `printf` (verbs `%s %v %d %q %%`), and Ollama's `json`.

Not supported (TemplateError): `template`, `define`, `block`, the functions `html`, `js`, `urlquery`,
`call`, method calls, field access on a parenthesised pipeline (`(x).Field`), and any printf verb other than
the ones above. Go's behaviours that are kept: a missing map key is nil and prints `<no value>`; a missing
field of a struct (`GoStruct`) is an error; `eq` between different basic kinds is an error unless one side is
nil; `len` of a string counts UTF-8 bytes.

Values given to `render`: dicts (Go maps), `GoStruct` (Go structs, such as Ollama's `api.Message`), lists,
str, bool, int, float and None.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

__all__ = ["GoList", "GoStruct", "GoTemplate", "TemplateError", "go_json", "parse_template"]

_SPACE = " \t\r\n"
_KEYWORDS = {"if", "else", "end", "range", "with", "break", "continue", "template", "define", "block"}
_UNSUPPORTED_KEYWORDS = {"template", "define", "block"}
_UNSUPPORTED_FUNCTIONS = {"html", "js", "urlquery", "call"}


class TemplateError(ValueError):
    """A template uses something this renderer does not support, is malformed, or fails to execute."""


@dataclass(frozen=True)
class GoStruct:
    """A Go struct value: a fixed set of fields; reading any other field is an error, as in Go.

    `json_value` is what Ollama's `json` function would marshal it to (defaults to the fields); `text`, when
    set, is what its Go `String()` method returns, which printing shows instead of the fields.
    """

    type_name: str
    fields: Mapping[str, Any]
    json_value: Any = None
    text: str | None = None


class GoList(list):
    """A Go slice type with a `String()` method (Ollama's `api.Tools`): printing shows `text`; otherwise a
    list."""

    def __init__(self, items: Sequence[Any], text: str) -> None:
        super().__init__(items)
        self.text = text


# ---------------------------------------------------------------------------------------------- tokens


@dataclass(frozen=True)
class _Token:
    kind: str  # text, ldelim, rdelim, field, variable, dot, ident, keyword, string, number, bool, nil,
    # lparen, rparen, pipe, declare, assign, comma, eof
    value: Any
    start: int
    end: int


def _position(text: str, offset: int) -> str:
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return f"line {line}, column {column}"


_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[0-7]{3}|.)", re.DOTALL)
_SIMPLE_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    '"': '"',
    "'": "'",
}


def _unescape(body: str) -> str:
    def one(match: re.Match[str]) -> str:
        code = match.group(1)
        if code in _SIMPLE_ESCAPES:
            return _SIMPLE_ESCAPES[code]
        if code[0] in "xuU":
            return chr(int(code[1:], 16))
        if code[0] in "01234567" and len(code) == 3:
            return chr(int(code, 8))
        raise ValueError(f"invalid escape \\{code}")

    return _ESCAPE.sub(one, body)


_NUMBER = re.compile(
    r"[+-]?(0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+|\d[\d_]*(\.\d*)?([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?)"
)


def _is_ident_char(char: str) -> bool:
    return char.isalnum() or char == "_"


class _Lexer:
    """Splits template text into tokens, applying trim markers and dropping comments."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[_Token] = []

    def error(self, message: str, offset: int) -> TemplateError:
        return TemplateError(f"template: {message} at {_position(self.text, offset)}")

    def run(self) -> list[_Token]:
        text, pos, trim_next = self.text, 0, False
        while True:
            start = text.find("{{", pos)
            chunk_end = start if start >= 0 else len(text)
            trim_left = (
                start >= 0 and text.startswith("-", start + 2) and text[start + 3 : start + 4] in _SPACE
            )
            trim_left = trim_left and start + 3 < len(text)
            chunk = text[pos:chunk_end]
            if trim_next:
                chunk = chunk.lstrip(_SPACE)
            if trim_left:
                chunk = chunk.rstrip(_SPACE)
            if chunk:
                self.tokens.append(_Token("text", chunk, pos, chunk_end))
            if start < 0:
                break
            inner = start + 2 + (2 if trim_left else 0)
            if text.startswith("/*", inner):
                pos, trim_next = self._comment(inner)
            else:
                self.tokens.append(_Token("ldelim", None, start, inner))
                pos, trim_next = self._action(inner)
        self.tokens.append(_Token("eof", None, len(text), len(text)))
        return self.tokens

    def _right_delim(self, pos: int) -> tuple[int, bool] | None:
        """If a right delimiter starts at `pos`, the offset after it and whether it trims."""
        text = self.text
        if text[pos : pos + 1] in _SPACE and text.startswith("-}}", pos + 1) and pos < len(text):
            return pos + 4, True
        if text.startswith("}}", pos):
            return pos + 2, False
        return None

    def _comment(self, pos: int) -> tuple[int, bool]:
        close = self.text.find("*/", pos + 2)
        if close < 0:
            raise self.error("unclosed comment", pos)
        delim = self._right_delim(close + 2)
        if delim is None:
            raise self.error("comment ends before closing delimiter", close)
        return delim

    def _action(self, pos: int) -> tuple[int, bool]:
        text, add = self.text, self.tokens.append
        while True:
            delim = self._right_delim(pos)
            if delim is not None:
                add(_Token("rdelim", None, pos, delim[0]))
                return delim
            if pos >= len(text):
                raise self.error("unclosed action", pos)
            char = text[pos]
            nxt = text[pos + 1 : pos + 2]
            if char in _SPACE:
                pos += 1
            elif char == '"':
                pos = self._quoted(pos)
            elif char == "`":
                close = text.find("`", pos + 1)
                if close < 0:
                    raise self.error("unterminated raw quoted string", pos)
                add(_Token("string", text[pos + 1 : close], pos, close + 1))
                pos = close + 1
            elif char == "'":
                pos = self._char_constant(pos)
            elif char == "." and (nxt.isalpha() or nxt == "_"):
                pos = self._fields("field", pos, pos, [])
            elif char == "$":
                end = pos + 1
                while end < len(text) and _is_ident_char(text[end]):
                    end += 1
                pos = self._fields("variable", pos, end, [text[pos:end]])
            elif char == "." and not nxt.isdigit():
                add(_Token("dot", None, pos, pos + 1))
                pos += 1
            elif char == ":" and nxt == "=":
                add(_Token("declare", None, pos, pos + 2))
                pos += 2
            elif char in "=,|()":
                kinds = {"=": "assign", ",": "comma", "|": "pipe", "(": "lparen", ")": "rparen"}
                add(_Token(kinds[char], char, pos, pos + 1))
                pos += 1
            elif char.isdigit() or (char in "+-." and (nxt.isdigit() or nxt == ".")):
                pos = self._number(pos)
            elif char.isalpha() or char == "_":
                end = pos
                while end < len(text) and _is_ident_char(text[end]):
                    end += 1
                word = text[pos:end]
                if word in ("true", "false"):
                    add(_Token("bool", word == "true", pos, end))
                elif word == "nil":
                    add(_Token("nil", None, pos, end))
                else:
                    add(_Token("keyword" if word in _KEYWORDS else "ident", word, pos, end))
                pos = end
            else:
                raise self.error(f"unrecognized character in action: {char!r}", pos)

    def _fields(self, kind: str, start: int, pos: int, idents: list[str]) -> int:
        text = self.text
        while text.startswith(".", pos) and (
            text[pos + 1 : pos + 2].isalpha() or text[pos + 1 : pos + 2] == "_"
        ):
            end = pos + 1
            while end < len(text) and _is_ident_char(text[end]):
                end += 1
            idents.append(text[pos + 1 : end])
            pos = end
        self.tokens.append(_Token(kind, tuple(idents), start, pos))
        return pos

    def _quoted(self, pos: int) -> int:
        text, end = self.text, pos + 1
        while True:
            if end >= len(text) or text[end] == "\n":
                raise self.error("unterminated quoted string", pos)
            if text[end] == "\\":
                end += 2
                continue
            if text[end] == '"':
                break
            end += 1
        try:
            value = _unescape(text[pos + 1 : end])
        except ValueError as error:
            raise self.error(str(error), pos) from None
        self.tokens.append(_Token("string", value, pos, end + 1))
        return end + 1

    def _char_constant(self, pos: int) -> int:
        match = re.compile(r"'(\\[^']+|[^'\\])'").match(self.text, pos)
        if not match:
            raise self.error("malformed character constant", pos)
        try:
            value = _unescape(match.group(1))
        except ValueError as error:
            raise self.error(str(error), pos) from None
        if len(value) != 1:
            raise self.error("malformed character constant", pos)
        self.tokens.append(_Token("number", ord(value), pos, match.end()))
        return match.end()

    def _number(self, pos: int) -> int:
        match = _NUMBER.match(self.text, pos)
        if not match:
            raise self.error("bad number syntax", pos)
        end = match.end()
        if end < len(self.text) and (_is_ident_char(self.text[end]) or self.text[end] == "."):
            raise self.error(f"bad number syntax: {self.text[pos : end + 1]!r}", pos)
        literal = match.group(0).replace("_", "")
        value: int | float
        if re.fullmatch(r"[+-]?0\d+", literal):
            value = int(literal, 8)  # Go reads a leading 0 as octal
        elif re.fullmatch(r"[+-]?(0[xXoObB][0-9a-fA-F]+|\d+)", literal):
            value = int(literal, 0)
        else:
            value = float(literal)
        self.tokens.append(_Token("number", value, pos, end))
        return end


# ---------------------------------------------------------------------------------------------- nodes


@dataclass(frozen=True)
class _Literal:
    value: Any
    pos: int


@dataclass(frozen=True)
class _Field:
    idents: tuple[str, ...]
    pos: int


@dataclass(frozen=True)
class _Variable:
    idents: tuple[str, ...]  # ("$x", "Field", ...)
    pos: int


@dataclass(frozen=True)
class _Dot:
    pos: int


@dataclass(frozen=True)
class _Function:
    name: str
    pos: int


@dataclass(frozen=True)
class _Command:
    args: tuple[Any, ...]  # operands: _Literal, _Field, _Variable, _Dot, _Function, _Pipeline
    pos: int


@dataclass(frozen=True)
class _Pipeline:
    decl: tuple[str, ...]
    is_assign: bool
    cmds: tuple[_Command, ...]
    pos: int


@dataclass(frozen=True)
class _Text:
    text: str
    pos: int


@dataclass(frozen=True)
class _Action:
    pipe: _Pipeline
    pos: int


@dataclass(frozen=True)
class _Branch:
    kind: str  # "if", "with", "range"
    pipe: _Pipeline
    body: tuple[Any, ...]
    else_body: tuple[Any, ...] | None
    pos: int


@dataclass(frozen=True)
class _LoopControl:
    kind: str  # "break" or "continue"
    pos: int


_Node = Any  # _Text | _Action | _Branch | _LoopControl


class _Parser:
    """Recursive-descent parser over the token list, with Go's parse-time checks."""

    def __init__(self, text: str, tokens: list[_Token]) -> None:
        self.text = text
        self.tokens = tokens
        self.index = 0
        self.vars: list[str] = ["$"]
        self.range_depth = 0

    def error(self, message: str, offset: int) -> TemplateError:
        return TemplateError(f"template: {message} at {_position(self.text, offset)}")

    def peek(self, ahead: int = 0) -> _Token:
        return self.tokens[min(self.index + ahead, len(self.tokens) - 1)]

    def take(self) -> _Token:
        token = self.peek()
        self.index += 1
        return token

    def expect(self, kind: str, context: str) -> _Token:
        token = self.take()
        if token.kind != kind:
            raise self.error(f"unexpected {self.describe(token)} in {context}", token.start)
        return token

    def describe(self, token: _Token) -> str:
        if token.kind == "eof":
            return "EOF"
        if token.kind == "rdelim":
            return '"}}"'
        return repr(self.text[token.start : token.end])

    def parse(self) -> tuple[_Node, ...]:
        nodes, end = self.parse_list()
        if end is not None:
            raise self.error(f"unexpected {{{{{end[0]}}}}}", end[1])
        return nodes

    def parse_list(self) -> tuple[tuple[_Node, ...], tuple[str, int, str | None] | None]:
        """Nodes up to `{{end}}`/`{{else}}` (returned as (keyword, offset, chained if/with)) or EOF (None)."""
        nodes: list[_Node] = []
        while True:
            token = self.take()
            if token.kind == "eof":
                return tuple(nodes), None
            if token.kind == "text":
                nodes.append(_Text(token.value, token.start))
                continue
            word = self.peek()
            if word.kind == "keyword":
                self.take()
                if word.value == "end":
                    self.expect("rdelim", "end")
                    return tuple(nodes), ("end", word.start, None)
                if word.value == "else":
                    chained = self.peek()
                    if chained.kind == "keyword" and chained.value in ("if", "with"):
                        self.take()
                        return tuple(nodes), ("else", word.start, chained.value)
                    self.expect("rdelim", "else")
                    return tuple(nodes), ("else", word.start, None)
                nodes.append(self.parse_keyword(word))
            else:
                pipe = self.parse_pipeline("command", allow_decl=True)
                nodes.append(_Action(pipe, token.start))

    def parse_keyword(self, word: _Token) -> _Node:
        if word.value in _UNSUPPORTED_KEYWORDS:
            raise self.error(f"{{{{{word.value}}}}} is not supported by this renderer", word.start)
        if word.value in ("break", "continue"):
            if self.range_depth == 0:
                raise self.error(f"{{{{{word.value}}}}} outside {{{{range}}}}", word.start)
            self.expect("rdelim", word.value)
            return _LoopControl(word.value, word.start)
        return self.parse_branch(word.value, word.start)

    def parse_branch(self, kind: str, pos: int) -> _Branch:
        mark = len(self.vars)
        pipe = self.parse_pipeline(kind, allow_decl=True, range_decl=kind == "range")
        if kind == "range":
            self.range_depth += 1
        body, end = self.parse_list()
        if kind == "range":
            self.range_depth -= 1
        if end is None:
            raise self.error(f"unexpected EOF: {{{{{kind}}}}} has no {{{{end}}}}", pos)
        else_body: tuple[_Node, ...] | None = None
        if end[0] == "else":
            if end[2] is not None:
                if end[2] != kind:
                    raise self.error(f"{{{{else {end[2]}}}}} inside {{{{{kind}}}}}", end[1])
                else_body = (self.parse_branch(kind, end[1]),)
            else:
                else_body, end2 = self.parse_list()
                if end2 is None or end2[0] != "end":
                    raise self.error(f"expected {{{{end}}}} after {{{{else}}}} of {{{{{kind}}}}}", end[1])
        del self.vars[mark:]
        return _Branch(kind, pipe, body, else_body, pos)

    def parse_pipeline(self, context: str, *, allow_decl: bool, range_decl: bool = False) -> _Pipeline:
        start = self.peek().start
        decl: list[str] = []
        is_assign = False
        first, second = self.peek(), self.peek(1)
        if allow_decl and first.kind == "variable" and len(first.value) == 1:
            if second.kind in ("declare", "assign"):
                decl, is_assign = [first.value[0]], second.kind == "assign"
                self.index += 2
            elif second.kind == "comma" and range_decl:
                third, fourth = self.peek(2), self.peek(3)
                if (
                    third.kind == "variable"
                    and len(third.value) == 1
                    and fourth.kind in ("declare", "assign")
                ):
                    decl, is_assign = [first.value[0], third.value[0]], fourth.kind == "assign"
                    self.index += 4
                else:
                    raise self.error(f"too many declarations in {context}", first.start)
        if is_assign:
            for name in decl:
                if name not in self.vars:
                    raise self.error(f"undefined variable {name!r}", start)
        cmds: list[_Command] = []
        closer = "rparen" if context == "parenthesized pipeline" else "rdelim"
        while True:
            token = self.peek()
            if token.kind == closer:
                self.take()
                break
            if token.kind in ("eof", "rdelim", "rparen"):
                raise self.error(f"unexpected {self.describe(token)} in {context}", token.start)
            cmds.append(self.parse_command(context))
            if self.peek().kind == "pipe":
                pipe_token = self.take()
                if self.peek().kind in (closer, "pipe"):
                    raise self.error(f"missing command after '|' in {context}", pipe_token.start)
        if not cmds:
            raise self.error(f"missing value for {context}", start)
        if not is_assign:
            self.vars.extend(decl)
        return _Pipeline(tuple(decl), is_assign, tuple(cmds), start)

    def parse_command(self, context: str) -> _Command:
        start = self.peek().start
        args: list[Any] = []
        while self.peek().kind not in ("pipe", "rdelim", "rparen", "eof"):
            args.append(self.parse_operand(context))
        if not args:
            raise self.error(f"empty command in {context}", start)
        if isinstance(args[0], _Literal) and args[0].value is None and len(args) == 1:
            raise self.error("nil is not a command", start)
        return _Command(tuple(args), start)

    def parse_operand(self, context: str) -> Any:
        token = self.take()
        kind = token.kind
        if kind in ("string", "number", "bool"):
            return _Literal(token.value, token.start)
        if kind == "nil":
            return _Literal(None, token.start)
        if kind == "field":
            return _Field(token.value, token.start)
        if kind == "variable":
            if token.value[0] not in self.vars:
                raise self.error(f"undefined variable {token.value[0]!r}", token.start)
            return _Variable(token.value, token.start)
        if kind == "dot":
            return _Dot(token.start)
        if kind == "ident":
            name = token.value
            if name in _UNSUPPORTED_FUNCTIONS:
                raise self.error(f"function {name!r} is not supported by this renderer", token.start)
            if name not in _FUNCTIONS:
                raise self.error(f"function {name!r} not defined", token.start)
            if self.peek().kind == "field" and self.peek().start == token.end:
                raise self.error("field access on a function result is not supported", token.end)
            return _Function(name, token.start)
        if kind == "lparen":
            pipe = self.parse_pipeline("parenthesized pipeline", allow_decl=False)
            after = self.peek()
            if after.kind == "field" and after.start == self.tokens[self.index - 1].end:
                raise self.error("field access on a parenthesized pipeline is not supported", after.start)
            return pipe
        if kind == "keyword":
            raise self.error(f"unexpected keyword {token.value!r} in {context}", token.start)
        raise self.error(f"unexpected {self.describe(token)} in {context}", token.start)


# ---------------------------------------------------------------------------------------------- values


class _Missing:
    """Marks 'no piped value' in a command."""


_NO_VALUE = _Missing()


def _kind(value: Any) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, GoStruct):
        return "struct"
    if isinstance(value, Mapping):
        return "map"
    if isinstance(value, (list, tuple)):
        return "slice"
    return type(value).__name__


def _truth(value: Any) -> bool:
    if isinstance(value, GoStruct):
        return True
    if isinstance(value, (bool, int, float)):
        return bool(value)
    if isinstance(value, (str, list, tuple, Mapping)):
        return len(value) > 0
    return value is not None


def _format_float(value: float) -> str:
    """Go's %v for a float64: shortest digits, exponent form when exp < -4 or exp >= 6."""
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if str(value).startswith("-") else "0"
    sign, digits, exponent = Decimal(repr(value)).normalize().as_tuple()
    assert isinstance(exponent, int)
    text = "".join(map(str, digits))
    exp10 = exponent + len(text) - 1
    if exp10 < -4 or exp10 >= 6:
        mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
        result = f"{mantissa}e{'-' if exp10 < 0 else '+'}{abs(exp10):02d}"
    elif exponent >= 0:
        result = text + "0" * exponent
    elif exp10 >= 0:
        result = text[: exp10 + 1] + "." + text[exp10 + 1 :]
    else:
        result = "0." + "0" * (-exp10 - 1) + text
    return ("-" if sign else "") + result


def go_string(value: Any, *, top: bool = True) -> str:
    """How Go's fmt.Print shows a value (`<no value>` for a nil action result)."""
    if value is None:
        return "<no value>" if top else "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _format_float(value)
    if isinstance(value, str):
        return value
    if isinstance(value, GoList):
        return value.text
    if isinstance(value, GoStruct):
        if value.text is not None:
            return value.text
        return "{" + " ".join(go_string(v, top=False) for v in value.fields.values()) + "}"
    if isinstance(value, Mapping):
        items = " ".join(f"{go_string(k, top=False)}:{go_string(value[k], top=False)}" for k in sorted(value))
        return f"map[{items}]"
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(go_string(v, top=False) for v in value) + "]"
    return str(value)


def _json_ready(value: Any) -> Any:
    if isinstance(value, GoStruct):
        return _json_ready(value.json_value if value.json_value is not None else dict(value.fields))
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value


def go_json(value: Any, *, sort_keys: bool | None = None) -> str:
    """Ollama's template function `json`: Go's json.Marshal (compact, HTML-safe escapes). Keys are sorted
    for a map (a Mapping), kept in order for a struct, unless `sort_keys` says otherwise."""
    sort = isinstance(value, Mapping) if sort_keys is None else sort_keys
    text = json.dumps(_json_ready(value), ensure_ascii=False, separators=(",", ":"), sort_keys=sort)
    for char, escape in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escape)
    return text


# ---------------------------------------------------------------------------------------------- functions


def _eq(first: Any, *others: Any) -> bool:
    if not others:
        raise TemplateError("missing argument for comparison")
    kind1 = _kind(first)
    for other in others:
        kind2 = _kind(other)
        if kind1 != kind2:
            if "nil" in (kind1, kind2):
                continue
            raise TemplateError(f"incompatible types for comparison: {kind1} and {kind2}")
        if kind1 in ("slice", "map", "struct"):
            raise TemplateError(f"non-comparable type {kind1}")
        if first == other:
            return True
    return False


def _ne(first: Any, second: Any) -> bool:
    return not _eq(first, second)


def _ordered(name: str, compare: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def function(first: Any, second: Any) -> bool:
        kind1, kind2 = _kind(first), _kind(second)
        if kind1 != kind2:
            raise TemplateError(f"incompatible types for comparison in {name}: {kind1} and {kind2}")
        if kind1 not in ("int", "float", "string"):
            raise TemplateError(f"invalid type for comparison in {name}: {kind1}")
        return compare(first, second)

    return function


def _len(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, (list, tuple, Mapping)) and not isinstance(value, GoStruct):
        return len(value)
    raise TemplateError(f"len of type {_kind(value)}")


def _index(value: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(value, (list, tuple, str)):
            if not isinstance(key, int) or isinstance(key, bool):
                raise TemplateError(f"cannot index slice/array with type {_kind(key)}")
            if not 0 <= key < len(value):
                raise TemplateError(f"index out of range: {key}")
            value = value[key] if not isinstance(value, str) else value.encode()[key]
        elif isinstance(value, Mapping) and not isinstance(value, GoStruct):
            value = value.get(key)
        else:
            raise TemplateError(f"can't index item of type {_kind(value)}")
    return value


def _slice(value: Any, *bounds: Any) -> Any:
    if not isinstance(value, (str, list, tuple)):
        raise TemplateError(f"can't slice item of type {_kind(value)}")
    if len(bounds) > 2:
        raise TemplateError("too many slice indexes")
    sequence: Any = value.encode() if isinstance(value, str) else value
    low = bounds[0] if bounds else 0
    high = bounds[1] if len(bounds) > 1 else len(sequence)
    if not (isinstance(low, int) and isinstance(high, int) and 0 <= low <= high <= len(sequence)):
        raise TemplateError(f"slice index out of range: {low}:{high}")
    part = sequence[low:high]
    return part.decode(errors="replace") if isinstance(value, str) else list(part)


def _print(*args: Any) -> str:
    out = []
    for i, arg in enumerate(args):
        if i > 0 and not isinstance(arg, str) and not isinstance(args[i - 1], str):
            out.append(" ")
        out.append(go_string(arg, top=False))
    return "".join(out)


def _println(*args: Any) -> str:
    return " ".join(go_string(arg, top=False) for arg in args) + "\n"


_VERB = re.compile(r"%([-+# 0]*\d*(?:\.\d+)?)([a-zA-Z%])")


def _printf(pattern: Any, *args: Any) -> str:
    if not isinstance(pattern, str):
        raise TemplateError("printf: format must be a string")
    remaining = list(args)

    def one(match: re.Match[str]) -> str:
        flags, verb = match.groups()
        if verb == "%":
            return "%"
        if flags or verb not in "svdq":
            raise TemplateError(f"printf verb %{flags}{verb} is not supported by this renderer")
        if not remaining:
            return f"%!{verb}(MISSING)"
        arg = remaining.pop(0)
        if verb == "d" and (not isinstance(arg, int) or isinstance(arg, bool)):
            return f"%!d({_kind(arg)}={go_string(arg, top=False)})"
        if verb == "q":
            if not isinstance(arg, str):
                raise TemplateError("printf %q is supported for strings only")
            return json.dumps(arg, ensure_ascii=False)
        return go_string(arg, top=False)

    return _VERB.sub(one, pattern)


def _not(value: Any) -> bool:
    return not _truth(value)


# "and" and "or" are evaluated lazily by the executor; the others receive evaluated arguments.
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "and": lambda *a: a,
    "or": lambda *a: a,
    "not": _not,
    "eq": _eq,
    "ne": _ne,
    "lt": _ordered("lt", lambda a, b: a < b),
    "le": _ordered("le", lambda a, b: a <= b),
    "gt": _ordered("gt", lambda a, b: a > b),
    "ge": _ordered("ge", lambda a, b: a >= b),
    "len": _len,
    "index": _index,
    "slice": _slice,
    "print": _print,
    "println": _println,
    "printf": _printf,
    "json": go_json,
}


# ---------------------------------------------------------------------------------------------- executor


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


class _Executor:
    def __init__(self, text: str, data: Any) -> None:
        self.text = text
        self.vars: list[list[Any]] = [["$", data]]
        self.out: list[str] = []

    def error(self, message: str, offset: int) -> TemplateError:
        return TemplateError(f"template: {message} at {_position(self.text, offset)}")

    def walk(self, nodes: Sequence[_Node], dot: Any) -> None:
        for node in nodes:
            if isinstance(node, _Text):
                self.out.append(node.text)
            elif isinstance(node, _Action):
                value = self.pipeline(node.pipe, dot)
                if not node.pipe.decl:
                    self.out.append(go_string(value))
            elif isinstance(node, _Branch):
                mark = len(self.vars)
                try:
                    if node.kind == "range":
                        self.range(node, dot)
                    else:
                        value = self.pipeline(node.pipe, dot)
                        if _truth(value):
                            self.walk(node.body, value if node.kind == "with" else dot)
                        elif node.else_body is not None:
                            self.walk(node.else_body, dot)
                finally:
                    del self.vars[mark:]
            elif isinstance(node, _LoopControl):
                raise _Break() if node.kind == "break" else _Continue()

    def range(self, node: _Branch, dot: Any) -> None:
        value = self.pipeline(node.pipe, dot)
        items: Iterator[tuple[Any, Any]]
        if isinstance(value, (list, tuple)):
            items = iter(enumerate(value))
        elif isinstance(value, Mapping) and not isinstance(value, GoStruct):
            items = ((key, value[key]) for key in sorted(value))
        elif isinstance(value, int) and not isinstance(value, bool):
            items = ((i, i) for i in range(value))
        elif value is None:
            items = iter(())
        else:
            raise self.error(f"range can't iterate over {go_string(value)}", node.pos)
        ran = False
        decl = node.pipe.decl
        for key, element in items:
            ran = True
            mark = len(self.vars)
            if isinstance(value, int) and len(decl) > 1:
                raise self.error("can't use a second variable when ranging over an integer", node.pos)
            if decl:
                self.assign(decl[-1], element, node.pipe.is_assign, node.pos)
            if len(decl) > 1:
                self.assign(decl[0], key, node.pipe.is_assign, node.pos)
            try:
                self.walk(node.body, element)
            except _Break:
                break
            except _Continue:
                continue
            finally:
                del self.vars[mark:]
        if not ran and node.else_body is not None:
            self.walk(node.else_body, dot)

    def assign(self, name: str, value: Any, is_assign: bool, pos: int) -> None:
        if not is_assign:
            # declared by the range pipeline: overwrite the top binding of that name
            for binding in reversed(self.vars):
                if binding[0] == name:
                    binding[1] = value
                    return
        self.set_var(name, value, pos)

    def set_var(self, name: str, value: Any, pos: int) -> None:
        for binding in reversed(self.vars):
            if binding[0] == name:
                binding[1] = value
                return
        raise self.error(f"undefined variable: {name}", pos)

    def lookup(self, name: str, pos: int) -> Any:
        for binding in reversed(self.vars):
            if binding[0] == name:
                return binding[1]
        raise self.error(f"undefined variable: {name}", pos)

    def pipeline(self, pipe: _Pipeline, dot: Any) -> Any:
        value: Any = _NO_VALUE
        for cmd in pipe.cmds:
            value = self.command(cmd, dot, value)
        if pipe.decl:
            if pipe.is_assign:
                self.set_var(pipe.decl[0], value, pipe.pos)
            else:
                # a range declares its variables here with the whole value; iterations overwrite them
                for name in pipe.decl:
                    self.vars.append([name, value])
        return value

    def command(self, cmd: _Command, dot: Any, final: Any) -> Any:
        first = cmd.args[0]
        if isinstance(first, _Function):
            return self.call(first, cmd.args[1:], dot, final)
        if len(cmd.args) > 1 or final is not _NO_VALUE:
            what = ".".join(first.idents) if isinstance(first, (_Field, _Variable)) else "operand"
            raise self.error(f"can't give argument to non-function {what}", cmd.pos)
        return self.operand(first, dot)

    def call(self, function: _Function, arg_nodes: Sequence[Any], dot: Any, final: Any) -> Any:
        thunks: list[Callable[[], Any]] = [functools.partial(self.operand, node, dot) for node in arg_nodes]
        if final is not _NO_VALUE:
            thunks.append(lambda: final)
        name = function.name
        if name in ("and", "or"):
            if not thunks:
                raise self.error(f"wrong number of args for {name}: want at least 1 got 0", function.pos)
            value: Any = None
            for thunk in thunks:
                value = thunk()
                if _truth(value) != (name == "and"):
                    return value
            return value
        args = [thunk() for thunk in thunks]
        try:
            return _FUNCTIONS[name](*args)
        except TypeError:
            raise self.error(f"wrong number of args for {name}: got {len(args)}", function.pos) from None
        except TemplateError as error:
            raise self.error(f"error calling {name}: {error}", function.pos) from None

    def operand(self, node: Any, dot: Any) -> Any:
        if isinstance(node, _Literal):
            return node.value
        if isinstance(node, _Dot):
            return dot
        if isinstance(node, _Field):
            return self.fields(dot, node.idents, node.pos)
        if isinstance(node, _Variable):
            return self.fields(self.lookup(node.idents[0], node.pos), node.idents[1:], node.pos)
        if isinstance(node, _Pipeline):
            return self.pipeline(node, dot)
        if isinstance(node, _Function):
            return self.call(node, (), dot, _NO_VALUE)
        raise self.error(f"unexpected operand {node!r}", getattr(node, "pos", 0))

    def fields(self, value: Any, idents: Sequence[str], pos: int) -> Any:
        for name in idents:
            if isinstance(value, GoStruct):
                if name not in value.fields:
                    raise self.error(f"can't evaluate field {name} in type {value.type_name}", pos)
                value = value.fields[name]
            elif isinstance(value, Mapping):
                value = value.get(name)
            elif value is None:
                raise self.error(f"nil pointer evaluating interface {{}}.{name}", pos)
            else:
                raise self.error(f"can't evaluate field {name} in type {_kind(value)}", pos)
        return value


# ---------------------------------------------------------------------------------------------- template


def _if_on_field(nodes: Sequence[Any], name: str) -> _Branch | None:
    """The first `{{ if }}` whose pipeline has the field `name` as an argument, searched as Ollama's
    `tools.findToolCallNode` searches (into if, range and with bodies and their else parts)."""
    for node in nodes:
        if not isinstance(node, _Branch):
            continue
        if node.kind == "if" and any(
            isinstance(arg, _Field) and name in arg.idents for cmd in node.pipe.cmds for arg in cmd.args
        ):
            return node
        for body in (node.body, node.else_body or ()):
            found = _if_on_field(body, name)
            if found is not None:
                return found
    return None


def _first_text(nodes: Sequence[Any]) -> str | None:
    """The first text that is not blank, stopping at the first action or branch (Ollama's
    `tools.findTextNode`)."""
    for node in nodes:
        if isinstance(node, _Text) and node.text.strip():
            return node.text
        if isinstance(node, _Action):
            return None
        if isinstance(node, _Branch):
            found = _first_text(node.body)
            if found is None and node.else_body is not None:
                found = _first_text(node.else_body)
            return found
    return None


def _texts_around(nodes: tuple[Any, ...], field_name: str, range_field: str) -> tuple[str, str]:
    """Ollama's `thinking.InferTags` walk: for each use of `.<field_name>` inside a `{{ range }}` over
    `.<range_field>`, the trimmed first and last texts of the nearest enclosing list (the last use wins)."""
    found = ["", ""]
    ancestors: list[Any] = []

    def uses(pipe: _Pipeline, name: str) -> bool:
        stack: list[Any] = [pipe]
        while stack:
            node = stack.pop()
            if isinstance(node, _Field) and node.idents[0] == name:
                return True
            if isinstance(node, _Pipeline):
                stack.extend(node.cmds)
            elif isinstance(node, _Command):
                stack.extend(node.args)
        return False

    def visit(node: Any) -> None:
        ancestors.append(node)
        if isinstance(node, _Field) and node.idents[0] == field_name:
            loop = next(
                (a for a in reversed(ancestors) if isinstance(a, _Branch) and a.kind == "range"), None
            )
            if loop is not None and uses(loop.pipe, range_field):
                nearest = next((a for a in reversed(ancestors) if isinstance(a, tuple) and a), None)
                if nearest is not None:
                    if isinstance(nearest[0], _Text):
                        found[0] = nearest[0].text.strip()
                    if isinstance(nearest[-1], _Text):
                        found[1] = nearest[-1].text.strip()
        children: list[Any] = []
        if isinstance(node, tuple):
            children = list(node)
        elif isinstance(node, _Branch):
            children = [node.pipe, node.body] + ([node.else_body] if node.else_body is not None else [])
        elif isinstance(node, _Action):
            children = [node.pipe]
        elif isinstance(node, _Pipeline):
            children = list(node.cmds)
        elif isinstance(node, _Command):
            children = list(node.args)
        for child in children:
            visit(child)
        ancestors.pop()

    visit(nodes)
    return found[0], found[1]


def _identifiers(node: Any) -> Iterator[str]:
    """Field and variable names a node uses, walked the way Ollama's template.Identifiers walks them."""
    if isinstance(node, (list, tuple)):
        for child in node:
            yield from _identifiers(child)
    elif isinstance(node, _Action):
        yield from _identifiers(node.pipe)
    elif isinstance(node, _Branch):
        yield from _identifiers(node.pipe)
        yield from _identifiers(node.body)
        if node.else_body is not None:
            yield from _identifiers(node.else_body)
    elif isinstance(node, _Pipeline):
        for cmd in node.cmds:
            yield from _identifiers(cmd.args)
    elif isinstance(node, (_Field, _Variable)):
        yield from node.idents


@dataclass
class _ResponseCut:
    """Ollama's deleteNode: keep everything up to and including the first `.Response` field, drop the rest."""

    source: str
    cut: bool = False

    def deleted(self, node: Any) -> bool:
        if isinstance(node, _Field) and "Response" in node.idents:
            self.cut = True
            return False
        return self.cut

    def nodes(self, nodes: tuple[Any, ...]) -> tuple[Any, ...]:
        kept = []
        for node in nodes:
            new = self.node(node)
            if new is not None:
                kept.append(new)
        return tuple(kept)

    def node(self, node: Any) -> Any:
        if self.deleted(node):
            return None
        if isinstance(node, _Branch):
            body = self.nodes(node.body)
            else_body = node.else_body
            if else_body is not None:
                if self.cut:
                    # Ollama panics here (a nil list in a branch); refuse rather than guess.
                    raise TemplateError(
                        f"template: .Response inside a {{{{{node.kind}}}}} that has an {{{{else}}}} "
                        f"cannot be rendered the way Ollama renders prompts (it fails there) "
                        f"at {_position(self.source, node.pos)}"
                    )
                else_body = self.nodes(else_body)
            return replace(node, body=body, else_body=else_body)
        if isinstance(node, _Action):
            pipe = self.pipe(node.pipe)
            return None if pipe is None else replace(node, pipe=pipe)
        return node

    def pipe(self, pipe: _Pipeline) -> _Pipeline | None:
        if self.deleted(pipe):
            return None
        cmds = []
        for cmd in pipe.cmds:
            args = tuple(arg for arg in cmd.args if not self.deleted(arg))
            if not args:
                return None
            cmds.append(replace(cmd, args=args))
        return replace(pipe, cmds=tuple(cmds)) if cmds else None


@dataclass(frozen=True)
class GoTemplate:
    """A parsed template. `render(data)` executes it; `vars()` lists the names it uses."""

    source: str
    nodes: tuple[_Node, ...] = field(repr=False)

    def render(self, data: Any) -> str:
        """Execute the template with `data` as dot (and `$`); raises TemplateError on an execution error."""
        executor = _Executor(self.source, data)
        try:
            executor.walk(self.nodes, data)
        except (_Break, _Continue):  # pragma: no cover - the parser rejects these outside range
            raise TemplateError("template: break/continue outside range") from None
        return "".join(executor.out)

    def vars(self) -> list[str]:
        """Sorted, lower-cased field and variable names used (Ollama's `Template.Vars`)."""
        return sorted({name.lower() for name in _identifiers(self.nodes)})

    def text_opening_if(self, field_name: str) -> str | None:
        """The first non-blank text inside the first `{{ if }}` on the field `field_name` (before any
        action in it), or None: how Ollama finds a template's tool-call tag after `.ToolCalls`."""
        branch = _if_on_field(self.nodes, field_name)
        return None if branch is None else _first_text(branch.body)

    def texts_around(self, field_name: str, range_field: str) -> tuple[str, str]:
        """The texts that open and close uses of `.<field_name>` in a range over `.<range_field>` ("" when
        there are none): how Ollama infers a template's thinking tags (`.Thinking` in `.Messages`)."""
        return _texts_around(self.nodes, field_name, range_field)

    def with_response_appended(self) -> GoTemplate:
        """The template followed by `{{ .Response }}` (what Ollama's Parse does when neither
        `.Messages` nor `.Response` appears)."""
        action = _Action(
            _Pipeline((), False, (_Command((_Field(("Response",), len(self.source)),), 0),), 0), 0
        )
        return replace(self, nodes=(*self.nodes, action))

    def truncated_after_response(self) -> GoTemplate:
        """The template with every node after the first `.Response` field removed (Ollama's legacy
        rendering of the last turn, so the prompt ends where the model's reply begins)."""
        return replace(self, nodes=_ResponseCut(self.source).nodes(self.nodes))


def parse_template(text: str) -> GoTemplate:
    """Parse Go template text; raises TemplateError naming what is malformed or unsupported, and where."""
    tokens = _Lexer(text).run()
    return GoTemplate(text, _Parser(text, tokens).parse())
