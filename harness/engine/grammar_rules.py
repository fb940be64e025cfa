"""The building blocks of llama.cpp's JSON-schema-to-GBNF converter (common/json-schema-to-grammar.cpp): the
primitive and string-format rules, literal escaping, repetitions and integer ranges as grammar text.
`schema_grammar.py` walks a schema with them."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
INT_MAX = 2**31 - 1
SPACE_RULE = '| " " | "\\n"{1,2} [ \\t]{0,20}'


@dataclass(frozen=True)
class BuiltinRule:
    content: str
    deps: tuple[str, ...] = ()


PRIMITIVE_RULES = {
    "boolean": BuiltinRule('("true" | "false")'),
    "decimal-part": BuiltinRule("[0-9]{1,16}"),
    "integral-part": BuiltinRule("[0] | [1-9] [0-9]{0,15}"),
    "number": BuiltinRule(
        '("-"? integral-part) ("." decimal-part)? ([eE] [-+]? integral-part)?',
        ("integral-part", "decimal-part"),
    ),
    "integer": BuiltinRule('("-"? integral-part)', ("integral-part",)),
    "value": BuiltinRule(
        "object | array | string | number | boolean | null",
        ("object", "array", "string", "number", "boolean", "null"),
    ),
    "object": BuiltinRule(
        '"{" space ( string ":" space value ("," space string ":" space value)* )? space "}"',
        ("string", "value"),
    ),
    "array": BuiltinRule('"[" space ( value ("," space value)* )? space "]"', ("value",)),
    "uuid": BuiltinRule(
        '"\\"" [0-9a-fA-F]{8} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" '
        '[0-9a-fA-F]{12} "\\""'
    ),
    "char": BuiltinRule('[^"\\\\\\x7F\\x00-\\x1F] | [\\\\] (["\\\\bfnrt] | "u" [0-9a-fA-F]{4})'),
    "string": BuiltinRule('"\\"" char* "\\""', ("char",)),
    "null": BuiltinRule('"null"'),
}
STRING_FORMAT_RULES = {
    "date": BuiltinRule('[0-9]{4} "-" ( "0" [1-9] | "1" [0-2] ) "-" ( "0" [1-9] | [1-2] [0-9] | "3" [0-1] )'),
    "time": BuiltinRule(
        '([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9] ":" [0-5] [0-9] ( "." [0-9]{3} )? '
        '( "Z" | ( "+" | "-" ) ( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] )'
    ),
    "date-time": BuiltinRule('date "T" time', ("date", "time")),
    "date-string": BuiltinRule('"\\"" date "\\""', ("date",)),
    "time-string": BuiltinRule('"\\"" time "\\""', ("time",)),
    "date-time-string": BuiltinRule('"\\"" date-time "\\""', ("date-time",)),
}
RESERVED_NAMES = {"root", *PRIMITIVE_RULES, *STRING_FORMAT_RULES}
INVALID_RULE_CHARS = re.compile(r"[^a-zA-Z0-9-]+")
LITERAL_ESCAPE = re.compile(r'[\r\n"\\]')
LITERAL_ESCAPES = {"\r": "\\r", "\n": "\\n", '"': '\\"', "-": "\\-", "]": "\\]", "\\": "\\\\"}
NON_LITERAL_SET = set("|.()[]{}*+?")
ESCAPED_IN_REGEXPS_BUT_NOT_IN_LITERALS = set("^$.[]()|{}*+?")
UUID_FORMAT = re.compile(r"^uuid[1-5]?$")


class SchemaConversionError(ValueError):
    """llama.cpp's `JSON schema conversion failed:` error, with its lines."""


def dump(value: Any) -> str:
    """nlohmann::json's dump(): compact, UTF-8 kept as is."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def format_literal(literal: str) -> str:
    return '"' + LITERAL_ESCAPE.sub(lambda match: LITERAL_ESCAPES[match.group(0)], literal) + '"'


def build_repetition(item: str, low: int, high: int = INT_MAX, separator: str = "") -> str:
    """`item` low..high times (INT_MAX: no upper bound), `separator` between (llama.cpp's
    build_repetition)."""
    has_max = high != INT_MAX
    if high == 0:
        return ""
    if low == 0 and high == 1:
        return f"{item}?"
    if not separator:
        if low == 1 and not has_max:
            return f"{item}+"
        if low == 0 and not has_max:
            return f"{item}*"
        return f"{item}{{{low},{high if has_max else ''}}}"
    rest = build_repetition(
        f"({separator} {item})", 0 if low == 0 else low - 1, high - 1 if has_max else high
    )
    result = f"{item} {rest}"
    return f"({result})?" if low == 0 else result


def build_min_max_int(
    low: int, high: int, out: list[str], decimals_left: int = 16, top_level: bool = True
) -> None:
    """Digits of an integer within [low, high] (INT64_MIN / INT64_MAX: unbounded), llama.cpp's
    build_min_max_int."""
    has_min, has_max = low != INT64_MIN, high != INT64_MAX

    def digit_range(start: str, end: str) -> None:
        out.append(f"[{start}]" if start == end else f"[{start}-{end}]")

    def more_digits(min_digits: int, max_digits: int) -> None:
        out.append("[0-9]")
        if min_digits == max_digits == 1:
            return
        out.append("{" + str(min_digits))
        if max_digits != min_digits:
            out.append("," + (str(max_digits) if max_digits != INT_MAX else ""))
        out.append("}")

    def uniform_range(start: str, end: str) -> None:
        i = 0
        while i < len(start) and i < len(end) and start[i] == end[i]:
            i += 1
        if i > 0:
            out.append(f'"{start[:i]}"')
        if i < len(start) and i < len(end):
            if i > 0:
                out.append(" ")
            sub_len = len(start) - i - 1
            if sub_len > 0:
                start_sub, end_sub = start[i + 1 :], end[i + 1 :]
                zeros, nines = "0" * sub_len, "9" * sub_len
                end_reached = False
                out.append("(")
                if start_sub == zeros:
                    digit_range(start[i], chr(ord(end[i]) - 1))
                    out.append(" ")
                    more_digits(sub_len, sub_len)
                else:
                    out.append(f"[{start[i]}] (")
                    uniform_range(start_sub, nines)
                    out.append(")")
                    if ord(start[i]) < ord(end[i]) - 1:
                        out.append(" | ")
                        if end_sub == nines:
                            digit_range(chr(ord(start[i]) + 1), end[i])
                            end_reached = True
                        else:
                            digit_range(chr(ord(start[i]) + 1), chr(ord(end[i]) - 1))
                        out.append(" ")
                        more_digits(sub_len, sub_len)
                if not end_reached:
                    out.append(" | ")
                    digit_range(end[i], end[i])
                    out.append(" ")
                    uniform_range(zeros, end_sub)
                out.append(")")
            else:
                out.append(f"[{start[i]}-{end[i]}]")

    if has_min and has_max:
        if low < 0 and high < 0:
            out.append('"-" (')
            build_min_max_int(-high, -low, out, decimals_left, top_level=True)
            out.append(")")
            return
        if low < 0:
            out.append('"-" (')
            build_min_max_int(0, -low, out, decimals_left, top_level=True)
            out.append(") | ")
            low = 0
        low_s, high_s = str(low), str(high)
        for digits in range(len(low_s), len(high_s)):
            uniform_range(low_s, "9" * digits)
            low_s = "1" + "0" * digits
            out.append(" | ")
        uniform_range(low_s, high_s)
        return
    less_decimals = max(decimals_left - 1, 1)
    if has_min:
        if low < 0:
            out.append('"-" (')
            build_min_max_int(INT64_MIN, -low, out, decimals_left, top_level=False)
            out.append(") | [0] | [1-9] ")
            more_digits(0, decimals_left - 1)
        elif low == 0:
            if top_level:
                out.append("[0] | [1-9] ")
                more_digits(0, less_decimals)
            else:
                more_digits(1, decimals_left)
        elif low <= 9:
            digit = str(low)
            range_start = "1" if top_level else "0"
            if digit > range_start:
                digit_range(range_start, chr(ord(digit) - 1))
                out.append(" ")
                more_digits(1, less_decimals)
                out.append(" | ")
            digit_range(digit, "9")
            out.append(" ")
            more_digits(0, less_decimals)
        else:
            low_s = str(low)
            first = low_s[0]
            if first > "1":
                digit_range("1" if top_level else "0", chr(ord(first) - 1))
                out.append(" ")
                more_digits(len(low_s), less_decimals)
                out.append(" | ")
            digit_range(first, first)
            out.append(" (")
            build_min_max_int(int(low_s[1:]), INT64_MAX, out, less_decimals, top_level=False)
            out.append(")")
            if first < "9":
                out.append(" | ")
                digit_range(chr(ord(first) + 1), "9")
                out.append(" ")
                more_digits(len(low_s) - 1, less_decimals)
        return
    if has_max:
        if high >= 0:
            if top_level:
                out.append('"-" [1-9] ')
                more_digits(0, less_decimals)
                out.append(" | ")
            build_min_max_int(0, high, out, decimals_left, top_level=True)
        else:
            out.append('"-" (')
            build_min_max_int(-high, INT64_MAX, out, decimals_left, top_level=False)
            out.append(")")
        return
    raise SchemaConversionError("At least one of min_value or max_value must be set")
