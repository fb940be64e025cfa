"""Graders for the quality suites: answer extraction and scoring, deterministic, with no judge model.

Each grader is a small function registered by name (`@register_grader("numeric")`) that turns an
`Item` and a model's response into a `GradeResult`. Two extractions are recorded, as
lm-evaluation-harness does for GSM8K:

- strict: the value on the last line of the form ``Answer: <value>`` (the format the suite asks for);
- flexible: the last number or closed form anywhere in the response.

Numbers may be written as integers, decimals, ``1,234`` (thousands separators), fractions ``3/4``,
LaTeX ``\\frac{3}{4}``, or simple closed forms (``pi^2/2``, ``sqrt(2)``, ``2π``, ``\\sqrt{3}/3``). They
are read by a tiny recursive-descent evaluator over ``+ - * / ^``, ``sqrt``, ``pi``, ``e`` and numbers;
nothing in a response is ever passed to ``eval``.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from statistics import NormalDist
from typing import Any

from harness.errors import SuiteDataError

# --------------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Rubric:
    """Required concept groups (each a tuple of alternative regexes; every group must match) and forbidden
    claims (any match scores 0). Regexes are matched case-insensitively against the whole response."""

    required: tuple[tuple[str, ...], ...]
    forbidden: tuple[str, ...] = ()


@dataclass(frozen=True)
class Item:
    """One prompt of a suite with its reference and grading rule.

    `answer` is the reference: a number or closed form (numeric), the canonical text (exact), or a model
    answer that passes the rubric (rubric). `rel_tolerance` / `tolerance` (absolute) bound numeric errors;
    `units` are symbols read as 1 in numeric answers (``hbar`` lets "ħ/2" mean 0.5 "in units of ħ");
    `accept` holds the regexes an exact answer may match; `check` is a Python expression the data tests
    evaluate to recompute the reference. `schema` is the JSON schema a structured-output item sends as
    `format`, `tools` the tool definitions a tool item sends (both resolved from the suite file's tables).
    """

    id: str
    prompt: str
    grader: str
    answer: str
    topic: str
    difficulty: str
    rel_tolerance: float | None = None
    tolerance: float | None = None
    units: tuple[str, ...] = ()
    accept: tuple[str, ...] = ()
    rubric: Rubric | None = None
    check: str | None = None
    schema: Mapping[str, Any] | None = field(default=None, hash=False)
    tools: tuple[Mapping[str, Any], ...] = field(default=(), hash=False)


@dataclass(frozen=True)
class GradeResult:
    """The verdict on one response. `passed` is the strict verdict (right answer in the asked format);
    for rubric items: every required group present and no forbidden claim."""

    score_strict: float
    score_flexible: float
    extracted_strict: str | None
    extracted_flexible: str | None
    passed: bool
    reason: str

    def as_record(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (for the "prompt" record of a run)."""
        return asdict(self)


GradeFunction = Callable[[Item, str], GradeResult]
ValidateFunction = Callable[[Item], list[str]]
ReferenceFunction = Callable[[Item], str]


def answer_line_reference(item: Item) -> str:
    """The reference in the asked format: an "Answer: <answer>" line."""
    return f"Answer: {item.answer}"


def answer_itself(item: Item) -> str:
    """The reference is a whole response already (a rubric's model answer, a JSON document)."""
    return item.answer


@dataclass(frozen=True)
class Grader:
    """A registered grader: `grade(item, response)`, `validate(item) -> problems` (for data files) and
    `reference(item)`, a response that must score 1."""

    name: str
    grade: GradeFunction
    validate: ValidateFunction = field(default=lambda item: [])
    reference: ReferenceFunction = answer_line_reference


_GRADERS: dict[str, Grader] = {}


def register_grader(
    name: str, *, validate: ValidateFunction | None = None, reference: ReferenceFunction | None = None
) -> Callable[[GradeFunction], GradeFunction]:
    """Register a grading function under `name`; `validate` lists the problems of an item's data,
    `reference` writes a response that must score 1 (default: an "Answer: <answer>" line)."""

    def decorator(function: GradeFunction) -> GradeFunction:
        if name in _GRADERS:
            raise ValueError(f"grader {name!r} is already registered")
        _GRADERS[name] = Grader(
            name, function, validate or (lambda item: []), reference or answer_line_reference
        )
        return function

    return decorator


def grader_names() -> list[str]:
    """The names of all registered graders, sorted."""
    return sorted(_GRADERS)


def get_grader(name: str) -> Grader:
    """The grader registered as `name`; `SuiteDataError` naming the known graders if there is none."""
    try:
        return _GRADERS[name]
    except KeyError:
        raise SuiteDataError(f"unknown grader {name!r}", f"use one of: {', '.join(grader_names())}") from None


def grade(item: Item, response: str) -> GradeResult:
    """Grade `response` to `item` with the item's grader."""
    return get_grader(item.grader).grade(item, response)


def reference_response(item: Item) -> str:
    """A response that must score 1 (strict and flexible): the reference in the asked format."""
    return get_grader(item.grader).reference(item)


# ------------------------------------------------------------------------------- closed-form reading

_NAME_ALIASES = {"π": "pi", "ħ": "hbar", "ω": "omega", "√": "sqrt", "dfrac": "frac", "tfrac": "frac"}
_CONSTANTS = {"pi": math.pi, "e": math.e}
_IGNORED_COMMANDS = {"left", "right", "displaystyle", "mathrm", "text"}
_OPERATORS = {
    "×": "*",
    "·": "*",
    "⋅": "*",
    "cdot": "*",
    "times": "*",
    "÷": "/",
    "div": "/",
    "−": "-",
    "±": "+",
}
_SUPERSCRIPTS = {"²": "2", "³": "3"}
_TOKEN_RE = re.compile(
    r"(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?(?!\d|,\d)|\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|\.\d+)"
    r"|(?P<cmd>\\[A-Za-z]+)"
    r"|(?P<space>\\[,;:! ]|\s+)"
    r"|(?P<op>\*\*|[-+*/^()\[\]{}])"
    r"|(?P<symbol>[πħω√])"
    r"|(?P<word>[^\W\d_²³]+)"
    r"|(?P<other>.)",
    re.DOTALL,
)
_MAX_DEPTH = 40
_TRAILING_WORDS_RE = re.compile(r"\s+[^\W\d]")
_MAX_EXPONENT = 64.0


@dataclass(frozen=True)
class _Token:
    kind: str  # "num", "name" (LaTeX command or symbol), "word", "op", "junk"
    text: str
    start: int
    end: int
    spaced: bool  # whitespace right before it
    value: float = 0.0


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    spaced = True
    for match in _TOKEN_RE.finditer(text):
        kind, raw = match.lastgroup or "other", match.group()
        start, end = match.span()
        if kind == "space":
            spaced = True
            continue
        if kind == "num":
            tokens.append(_Token("num", raw, start, end, spaced, float(raw.replace(",", ""))))
        elif raw in _SUPERSCRIPTS:
            tokens.append(_Token("op", "^", start, end, False))
            tokens.append(_Token("num", raw, start, end, False, float(_SUPERSCRIPTS[raw])))
        elif kind in ("cmd", "word", "symbol"):
            name = raw.lstrip("\\")
            name = _NAME_ALIASES.get(name, name)
            if name in _OPERATORS and kind != "word":  # \times is an operator, "times" a word
                tokens.append(_Token("op", _OPERATORS[name], start, end, spaced))
            elif name not in _IGNORED_COMMANDS:
                kind = "word" if kind == "word" else "name"
                tokens.append(_Token(kind, name, start, end, spaced))
        elif raw in _OPERATORS:
            tokens.append(_Token("op", _OPERATORS[raw], start, end, spaced))
        elif kind == "op":
            hyphen = raw == "-" and not spaced and start > 0 and text[start - 1].isalpha()
            op = "^" if raw == "**" else raw
            tokens.append(_Token("junk" if hyphen else "op", op, start, end, spaced))
        else:
            tokens.append(_Token("junk", raw, start, end, spaced))
        spaced = False
    return tokens


class _Fail(Exception):
    """The tokens at this position do not continue an expression."""


_OPEN = {"(": ")", "[": "]", "{": "}"}


class _Parser:
    """Recursive descent: expr := term (+|- term)*; term := unary ((*|/)? unary)*;
    unary := (+|-) unary | power; power := atom (^ unary)?; atom := number | constant | unit |
    sqrt atom | frac {..}{..} | ( expr ).

    `loose` (a deliberate answer line) reads the full grammar. Otherwise (running text) an expression is
    one value, not a computation: no binary + or -, no "*" before a plain number, and a sign only when
    it touches its number ("-13.6", not "5 - 2")."""

    def __init__(self, tokens: Sequence[_Token], units: frozenset[str], loose: bool) -> None:
        self.tokens = tokens
        self.units = units
        self.loose = loose
        self.depth = 0
        self.memo: dict[int, tuple[float, int] | None] = {}

    def peek(self, position: int) -> _Token | None:
        return self.tokens[position] if position < len(self.tokens) else None

    def is_op(self, position: int, ops: str) -> bool:
        token = self.peek(position)
        return token is not None and token.kind == "op" and token.text in ops

    def is_number(self, position: int) -> bool:
        token = self.peek(position)
        return token is not None and token.kind == "num"

    def name_value(self, token: _Token) -> float | None:
        if token.text == "e" and token.kind == "word" and not self.loose:
            return None  # a bare "e" in running text is a letter ("i.e."), not Euler's number
        if token.text in _CONSTANTS:
            return _CONSTANTS[token.text]
        if token.text.lower() in self.units:
            return 1.0
        return None

    def starts_atom(self, token: _Token | None) -> bool:
        if token is None:
            return False
        if token.kind == "num":
            return True
        if token.kind == "op":
            return token.text in _OPEN
        return token.text in ("sqrt", "frac") or self.name_value(token) is not None

    def expression(self, position: int) -> tuple[float, int]:
        """Memoized (packrat) so scanning every start position of a response stays linear."""
        if position in self.memo:
            cached = self.memo[position]
            if cached is None:
                raise _Fail
            return cached
        try:
            result = self.uncached_expression(position)
        except _Fail:
            self.memo[position] = None
            raise
        self.memo[position] = result
        return result

    def uncached_expression(self, position: int) -> tuple[float, int]:
        value, position = self.term(position)
        if not self.loose:
            return value, position  # running text: "3/4 + 5/6" is two numbers, not a sum to compute
        while self.is_op(position, "+-"):
            sign = 1.0 if self.tokens[position].text == "+" else -1.0
            try:
                right, after = self.term(position + 1)
            except _Fail:
                break
            value, position = value + sign * right, after
        return value, position

    def term(self, position: int) -> tuple[float, int]:
        value, position = self.unary(position)
        while True:
            token = self.peek(position)
            try:
                if self.is_op(position, "*/"):
                    if (
                        not self.loose
                        and token is not None
                        and token.text == "*"
                        and self.is_number(position + 1)
                    ):
                        break  # running text: "0.125 * 48" is a computation, "9*pi" a value
                    right, after = self.unary(position + 1)
                    if token is not None and token.text == "/":
                        if right == 0:
                            raise _Fail
                        right = 1.0 / right
                elif self.implicit_product(token):
                    right, after = self.power(position)
                else:
                    break
            except _Fail:
                break
            value, position = value * right, after
        return value, position

    def implicit_product(self, token: _Token | None) -> bool:
        """Juxtaposition ("2pi", "3\\sqrt{2}") multiplies; never two numbers, never across a space
        before a plain word unless reading a deliberate answer line."""
        if token is None or token.kind == "num" or not self.starts_atom(token):
            return False
        return not token.spaced or self.loose or token.kind == "name"

    def unary(self, position: int) -> tuple[float, int]:
        following = self.peek(position + 1)
        if self.is_op(position, "+-") and (self.loose or (following is not None and not following.spaced)):
            sign = -1.0 if self.tokens[position].text == "-" else 1.0
            self.depth += 1
            try:
                if self.depth > _MAX_DEPTH:
                    raise _Fail
                value, position = self.unary(position + 1)
            finally:
                self.depth -= 1
            return sign * value, position
        return self.power(position)

    def power(self, position: int) -> tuple[float, int]:
        base, position = self.atom(position)
        if self.is_op(position, "^"):
            try:
                exponent, after = self.unary(position + 1)
            except _Fail:
                return base, position
            if abs(exponent) > _MAX_EXPONENT or (base < 0 and not exponent.is_integer()):
                raise _Fail
            try:
                return math.pow(base, exponent), after
            except (OverflowError, ValueError, ZeroDivisionError):
                raise _Fail from None
        return base, position

    def atom(self, position: int) -> tuple[float, int]:
        token = self.peek(position)
        if token is None:
            raise _Fail
        self.depth += 1
        try:
            if self.depth > _MAX_DEPTH:
                raise _Fail
            if token.kind == "num":
                return token.value, position + 1
            if token.kind == "op" and token.text in _OPEN:
                value, after = self.expression(position + 1)
                if not self.is_op(after, _OPEN[token.text]):
                    raise _Fail
                return value, after + 1
            if token.text == "sqrt" and token.kind in ("name", "word"):
                value, after = self.atom(position + 1)
                if value < 0:
                    raise _Fail
                return math.sqrt(value), after
            if token.text == "frac" and token.kind == "name":
                numerator, after = self.atom(position + 1)
                denominator, after = self.atom(after)
                if denominator == 0:
                    raise _Fail
                return numerator / denominator, after
            constant = self.name_value(token)
            if constant is None:
                raise _Fail
            return constant, position + 1
        finally:
            self.depth -= 1


@dataclass(frozen=True)
class Reading:
    """A number read from text: its value and the text it was read from."""

    value: float
    text: str


def _readings(text: str, units: Iterable[str], *, loose: bool) -> list[Reading]:
    """Every maximal expression in `text`, left to right."""
    tokens = _tokenize(text)
    parser = _Parser(tokens, frozenset(unit.lower() for unit in units), loose)
    found: list[Reading] = []
    position = 0
    while position < len(tokens):
        try:
            value, end = parser.expression(position)
        except (_Fail, RecursionError):
            position += 1
            continue
        if math.isfinite(value):
            found.append(Reading(value, text[tokens[position].start : tokens[end - 1].end]))
        position = end
    return found


def parse_number(text: str, units: Iterable[str] = ()) -> float | None:
    """The value of `text` read as a number or closed form ("3/4", "\\frac{3}{4}", "pi^2/2", "1,234"),
    or None when it is not one. Trailing words are ignored ("28 generators" -> 28), anything else is not
    ("1/0", "9^9^9")."""
    text = text.strip()
    readings = _readings(text, units, loose=True)
    if not readings or not text.startswith(readings[0].text):
        return None
    rest = text[len(readings[0].text) :]
    return readings[0].value if not rest or _TRAILING_WORDS_RE.match(rest) else None


_ANSWER_LINE_RE = re.compile(
    r"^[\s>#*_`-]*(?:the\s+)?(?:final\s+)?answer[\s*_]*[:：][\s*_]*(?P<value>.*?)\s*$",
    re.IGNORECASE | re.MULTILINE,
)
_VALUE_SPLIT_RE = re.compile(r"=|≈|\\approx|\\simeq|≃")
_FLEXIBLE_TAIL_CHARS = 4000


def answer_line(response: str) -> str | None:
    """The value of the last "Answer: <value>" line, or None when the response has none."""
    matches = list(_ANSWER_LINE_RE.finditer(response))
    return matches[-1].group("value") if matches else None


def extract_strict(response: str, units: Iterable[str] = ()) -> Reading | None:
    """The number on the last "Answer:" line; of "x = a = b" the last part that holds a number."""
    value_text = answer_line(response)
    if value_text is None:
        return None
    for part in reversed(_VALUE_SPLIT_RE.split(value_text)):
        readings = _readings(part, units, loose=True)
        if readings:
            return readings[0]
    return None


def extract_flexible(response: str, units: Iterable[str] = ()) -> Reading | None:
    """The last number or closed form anywhere in the response (its tail, for very long responses)."""
    readings = _readings(response[-_FLEXIBLE_TAIL_CHARS:], units, loose=False)
    return readings[-1] if readings else None


# ------------------------------------------------------------------------------------------ graders

DEFAULT_REL_TOLERANCE = 1e-3  # a non-integer reference: exact form, or four significant digits
_INTEGER_SLACK = 1e-9


def reference_value(item: Item) -> float:
    """The numeric reference of `item`; `SuiteDataError` when it is not a number or closed form."""
    value = parse_number(item.answer, item.units)
    if value is None:
        raise SuiteDataError(
            f"item {item.id!r}: answer {item.answer!r} is not a number or closed form",
            "write it as an integer, decimal, fraction (3/4) or closed form (pi^2/2, sqrt(2))",
        )
    return value


def within_tolerance(value: float, reference: float, item: Item) -> bool:
    """Whether `value` matches `reference` under the item's tolerances (integers: exact)."""
    if item.tolerance is not None or item.rel_tolerance is not None:
        allowed = max(item.tolerance or 0.0, (item.rel_tolerance or 0.0) * abs(reference))
    elif reference.is_integer():
        allowed = _INTEGER_SLACK * max(1.0, abs(reference))
    else:
        allowed = DEFAULT_REL_TOLERANCE * abs(reference)
    return abs(value - reference) <= allowed


def _validate_numeric(item: Item) -> list[str]:
    problems = []
    if parse_number(item.answer, item.units) is None:
        problems.append(f"answer {item.answer!r} is not a number or closed form")
    for name in ("tolerance", "rel_tolerance"):
        bound = getattr(item, name)
        if bound is not None and not (bound >= 0 and math.isfinite(bound)):
            problems.append(f"{name} must be a finite number >= 0, not {bound!r}")
    return problems


@register_grader("numeric", validate=_validate_numeric)
def grade_numeric(item: Item, response: str) -> GradeResult:
    """Numeric answer within tolerance; strict reads the "Answer:" line, flexible the last number."""
    reference = reference_value(item)
    verdicts: list[str] = []
    scores: list[float] = []
    texts: list[str | None] = []
    for label, reading in (
        ("strict", extract_strict(response, item.units)),
        ("flexible", extract_flexible(response, item.units)),
    ):
        if reading is None:
            scores.append(0.0)
            texts.append(None)
            verdicts.append(f"{label}: {'no Answer: line' if label == 'strict' else 'no number'}")
            continue
        correct = within_tolerance(reading.value, reference, item)
        scores.append(1.0 if correct else 0.0)
        texts.append(reading.text)
        verdicts.append(f"{label}: {reading.text!r} = {reading.value:.6g} {'==' if correct else '!='}")
    reason = f"{'; '.join(verdicts)} reference {item.answer} = {reference:.6g}"
    return GradeResult(scores[0], scores[1], texts[0], texts[1], scores[0] == 1.0, reason)


def _normalize_text(text: str) -> str:
    return " ".join(text.strip().strip("*_`$.").split())


def _validate_patterns(patterns: Iterable[str]) -> list[str]:
    problems = []
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as error:
            problems.append(f"bad regex {pattern!r}: {error}")
    return problems


def _exact_patterns(item: Item) -> tuple[str, ...]:
    return item.accept or (re.escape(item.answer),)


def _validate_exact(item: Item) -> list[str]:
    problems = _validate_patterns(_exact_patterns(item))
    if not problems and _first_match(_exact_patterns(item), item.answer, full=True) is None:
        problems.append(f"answer {item.answer!r} matches none of its accept patterns")
    return problems


def _first_match(patterns: Iterable[str], text: str, *, full: bool) -> str | None:
    for pattern in patterns:
        compiled = re.compile(pattern, re.IGNORECASE)
        match = compiled.fullmatch(text) if full else compiled.search(text)
        if match:
            return match.group()
    return None


@register_grader("exact", validate=_validate_exact)
def grade_exact(item: Item, response: str) -> GradeResult:
    """Short text answer: strict = an accepted form (a regex, case-insensitive) appears on the "Answer:"
    line, flexible = it appears anywhere in the response."""
    patterns = _exact_patterns(item)
    line = answer_line(response)
    strict = None if line is None else _first_match(patterns, _normalize_text(line), full=False)
    flexible = _first_match(patterns, response, full=False)
    strict_note = (
        "no Answer: line" if line is None else f"{line!r} {'matches' if strict else 'does not match'}"
    )
    reason = f"strict: {strict_note}; flexible: {'found ' + repr(flexible) if flexible else 'not found'}"
    return GradeResult(
        float(strict is not None), float(flexible is not None), strict, flexible, strict is not None, reason
    )


def _validate_rubric(item: Item) -> list[str]:
    if item.rubric is None or not item.rubric.required:
        return ["a rubric item needs rubric.required: a list of groups of alternative regexes"]
    problems = []
    for group in item.rubric.required:
        if not group:
            problems.append("rubric.required has an empty group")
        problems += _validate_patterns(group)
    return problems + _validate_patterns(item.rubric.forbidden)


@register_grader("rubric", validate=_validate_rubric, reference=answer_itself)
def grade_rubric(item: Item, response: str) -> GradeResult:
    """Score = fraction of required concept groups present (0 if any forbidden claim matches);
    passed when all are present and none is forbidden. Strict and flexible are the same."""
    if item.rubric is None:
        raise SuiteDataError(f"item {item.id!r} has no rubric", "add rubric.required to the item")
    found = [_first_match(group, response, full=False) for group in item.rubric.required]
    forbidden = _first_match(item.rubric.forbidden, response, full=False)
    present = [text for text in found if text is not None]
    score = 0.0 if forbidden else len(present) / len(found)
    missing = [group[0] for group, text in zip(item.rubric.required, found, strict=True) if text is None]
    reason = f"{len(present)}/{len(found)} required concepts"
    if missing:
        reason += f"; missing {missing}"
    if forbidden:
        reason += f"; forbidden claim {forbidden!r}"
    extracted = " | ".join(present) or None
    passed = forbidden is None and not missing
    return GradeResult(score, score, extracted, extracted, passed, reason)


# ----------------------------------------------------------------------------------------- summaries


def accuracy(results: Iterable[GradeResult]) -> tuple[float, float]:
    """Mean strict and flexible scores (0.0, 0.0 for no results)."""
    collected = list(results)
    if not collected:
        return 0.0, 0.0
    return (
        sum(result.score_strict for result in collected) / len(collected),
        sum(result.score_flexible for result in collected) / len(collected),
    )


def wilson_interval(successes: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion: `successes` (a sum of scores in [0, 1]) out of `n`.

    Unlike the normal approximation it stays inside [0, 1] and is honest at 0 and n successes: 0 of 56 gives
    [0 %, 6.4 %], 28 of 56 gives [37 %, 63 %]. (0.0, 1.0) for n = 0: nothing is known.
    """
    if n <= 0:
        return (0.0, 1.0)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = min(max(successes / n, 0.0), 1.0)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - spread), min(1.0, centre + spread))


def pass_rate(results: Iterable[GradeResult]) -> float:
    """Fraction of results that passed (0.0 for none)."""
    collected = list(results)
    return sum(result.passed for result in collected) / len(collected) if collected else 0.0


def pass_rates_by_item(results: Iterable[tuple[str, GradeResult]]) -> dict[str, float]:
    """Pass rate of each item over its repeats, from (item_id, result) pairs."""
    grouped: Mapping[str, list[GradeResult]] = defaultdict(list)
    for item_id, result in results:
        grouped[item_id].append(result)
    return {item_id: pass_rate(item_results) for item_id, item_results in grouped.items()}


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of the chance that at least one of k samples passes, from n samples of which c
    passed (Chen et al. 2021)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)
