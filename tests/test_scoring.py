"""Graders: reading numbers and closed forms, strict and flexible extraction, rubric and exact grading,
the grader registry, and the summaries over results and repeats."""

from __future__ import annotations

import math
import time

import pytest

from harness.errors import SuiteDataError
from harness.quality.scoring import (
    GradeResult,
    Item,
    Rubric,
    accuracy,
    extract_flexible,
    extract_strict,
    get_grader,
    grade,
    grader_names,
    parse_number,
    pass_at_k,
    pass_rate,
    pass_rates_by_item,
    register_grader,
)


def numeric(answer: str, **fields: object) -> Item:
    return Item(id="t", prompt="q", grader="numeric", answer=answer, topic="t", difficulty="easy", **fields)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("42", 42.0),
        ("-68", -68.0),
        ("−13.6 eV", -13.6),
        ("1,111,110", 1111110.0),
        ("1,157.625", 1157.625),
        ("0.75", 0.75),
        (".5", 0.5),
        ("3/4", 0.75),
        ("\\frac{3}{4}", 0.75),
        ("\\dfrac{19}{12}", 19 / 12),
        ("pi^2/2", math.pi**2 / 2),
        ("π²/2", math.pi**2 / 2),
        ("\\frac{\\pi^{2}}{2}", math.pi**2 / 2),
        ("2*pi^2", 2 * math.pi**2),
        ("2π", 2 * math.pi),
        ("2\\pi", 2 * math.pi),
        ("2 pi", 2 * math.pi),
        ("sqrt(2)", math.sqrt(2)),
        ("√2/2", math.sqrt(2) / 2),
        ("\\sqrt{3}/3", math.sqrt(3) / 3),
        ("sqrt(3)*pi/2", math.sqrt(3) * math.pi / 2),
        ("(1/2)^4 * pi^2/2", math.pi**2 / 32),
        ("2^10", 1024.0),
        ("2**10", 1024.0),
        ("1.5e-3", 0.0015),
        ("e", math.e),
        ("28 generators", 28.0),
        ("+1/2", 0.5),
        ("±1/2", 0.5),
    ],
)
def test_parse_number_reads_numbers_fractions_latex_and_closed_forms(text: str, value: float) -> None:
    parsed = parse_number(text)
    assert parsed is not None and math.isclose(parsed, value, rel_tol=1e-12), (text, parsed)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "banana",
        "x = 3",
        "__import__('os').system('true')",
        "1/0",
        "sqrt(-1)",
        "9^9^9",
        "(" * 500 + "1",
        "-" * 5000 + "1",
        "10^400",
    ],
)
def test_parse_number_refuses_non_numbers_and_hostile_input_without_evaluating_it(text: str) -> None:
    assert parse_number(text) is None


def test_units_read_as_one_only_when_the_item_declares_them() -> None:
    assert parse_number("ħ/2", ["hbar"]) == 0.5
    assert parse_number("7ħω/2", ["hbar", "omega"]) == 3.5
    assert parse_number("\\hbar/2", ["hbar"]) == 0.5
    assert parse_number("ħ/2") is None


@pytest.mark.parametrize(
    ("response", "value"),
    [
        ("blah\nAnswer: 18", 18.0),
        ("**Answer:** $18", 18.0),
        ("Answer: **18**.", 18.0),
        ("Final answer: \\boxed{\\frac{19}{12}}", 19 / 12),
        ("answer: 1,234", 1234.0),
        ("Answer: V = pi^2/2 ≈ 4.9348", 4.9348),
        ("Answer: x = 5", 5.0),
        ("Answer: 2 + 3", 5.0),
        ("Answer: 7\nmore text\nAnswer: 8", 8.0),
        ("Answer: 28 (the dimension of so(8))", 28.0),
    ],
)
def test_strict_extraction_reads_the_last_answer_line(response: str, value: float) -> None:
    reading = extract_strict(response)
    assert reading is not None and math.isclose(reading.value, value), reading


def test_strict_extraction_needs_an_answer_line() -> None:
    assert extract_strict("The answer is 18.") is None
    assert extract_strict("Answer: <value>") is None


@pytest.mark.parametrize(
    ("response", "value"),
    [
        ("so the result is 18.", 18.0),
        ("the volume is π²/2.", math.pi**2 / 2),
        ("a spin-1/2 particle", 0.5),
        ("E = -13.6 eV", -13.6),
        ("28, i.e. e.g. nothing", 28.0),
        ("compute 3/4 + 5/6", 5 / 6),  # running text: the last number, not the sum computed
        ("0.125 * 48", 48.0),
        ("from 5 - 2", 2.0),
        ("so x = 9*pi", 9 * math.pi),
    ],
)
def test_flexible_extraction_reads_the_last_number_in_running_text(response: str, value: float) -> None:
    reading = extract_flexible(response)
    assert reading is not None and math.isclose(reading.value, value), reading


def test_numeric_grading_records_both_extractions_and_the_reason() -> None:
    item = numeric("pi^2/2")
    both = grade(item, "The 4-ball has volume π²/2.\nAnswer: π²/2")
    assert (both.score_strict, both.score_flexible, both.passed) == (1.0, 1.0, True)
    assert both.extracted_strict == "π²/2" and "reference pi^2/2" in both.reason
    flexible_only = grade(item, "So the volume is pi^2/2.")
    assert (flexible_only.score_strict, flexible_only.score_flexible, flexible_only.passed) == (
        0.0,
        1.0,
        False,
    )
    assert flexible_only.extracted_strict is None and "no Answer: line" in flexible_only.reason
    wrong = grade(item, "Answer: 4/3")
    assert (wrong.score_strict, wrong.score_flexible) == (0.0, 0.0)
    assert wrong.as_record()["extracted_strict"] == "4/3"


def test_tolerance_integers_exact_decimals_four_digits_or_stated() -> None:
    assert grade(numeric("28"), "Answer: 28.0").passed
    assert not grade(numeric("1111110"), "Answer: 1111111").passed
    assert grade(numeric("pi^2/2"), "Answer: 4.935").passed
    assert not grade(numeric("pi^2/2"), "Answer: 4.9").passed
    assert grade(numeric("1/3"), "Answer: 0.3333").passed
    assert grade(numeric("-13.6", rel_tolerance=0.005), "Answer: -13.61").passed
    assert not grade(numeric("-13.6", rel_tolerance=0.005), "Answer: 13.6").passed
    assert grade(numeric("10", tolerance=0.5), "Answer: 10.4").passed


RUBRIC_ITEM = Item(
    id="r",
    prompt="Describe the generators of so(8).",
    grader="rubric",
    answer="They are antisymmetric 8x8 matrices; there are 28 of them.",
    topic="t",
    difficulty="easy",
    rubric=Rubric(
        required=(("anti-?symmetric", "skew"), (r"\b28\b",)),
        forbidden=(r"generators are symmetric",),
    ),
)


def test_rubric_scores_the_fraction_of_required_groups_and_zero_on_a_forbidden_claim() -> None:
    full = grade(RUBRIC_ITEM, "Skew-symmetric real matrices, 28 in all.")
    assert (full.score_strict, full.score_flexible, full.passed) == (1.0, 1.0, True)
    half = grade(RUBRIC_ITEM, "They are antisymmetric.")
    assert (half.score_strict, half.passed) == (0.5, False) and "missing" in half.reason
    forbidden = grade(RUBRIC_ITEM, "The generators are symmetric, 28 antisymmetric ones.")
    assert (forbidden.score_strict, forbidden.passed) == (0.0, False) and "forbidden" in forbidden.reason
    assert grade(RUBRIC_ITEM, "").score_strict == 0.0


def test_exact_grader_full_match_on_the_answer_line_search_for_flexible() -> None:
    item = Item(id="x", prompt="q", grader="exact", answer="D4", accept=(r"D_?\{?4\}?",), topic="t",
                difficulty="easy")  # fmt: skip
    assert grade(item, "It is **D_4**.\nAnswer: D_4").passed
    result = grade(item, "It is the D4 algebra.")
    assert (result.score_strict, result.score_flexible) == (0.0, 1.0)
    assert not grade(item, "Answer: B4").passed


def test_graders_are_registered_by_name_and_unknown_names_are_user_errors() -> None:
    assert {"numeric", "exact", "rubric"} <= set(grader_names())
    with pytest.raises(SuiteDataError, match="unknown grader 'nope'") as raised:
        get_grader("nope")
    assert "numeric" in raised.value.hint
    with pytest.raises(ValueError, match="already registered"):
        register_grader("numeric")(lambda item, response: GradeResult(0, 0, None, None, False, ""))

    @register_grader("test-length")
    def grade_length(item: Item, response: str) -> GradeResult:
        score = float(len(response) == int(item.answer))
        return GradeResult(score, score, str(len(response)), str(len(response)), bool(score), "length")

    item = Item(id="l", prompt="q", grader="test-length", answer="3", topic="t", difficulty="easy")
    assert grade(item, "abc").passed and not grade(item, "abcd").passed


def test_accuracy_pass_rate_and_repeats() -> None:
    right = GradeResult(1.0, 1.0, "1", "1", True, "")
    flexible_only = GradeResult(0.0, 1.0, None, "1", False, "")
    assert accuracy([right, flexible_only]) == (0.5, 1.0)
    assert accuracy([]) == (0.0, 0.0)
    assert pass_rate([right, flexible_only, right, right]) == 0.75
    assert pass_rates_by_item([("a", right), ("a", flexible_only), ("b", right)]) == {"a": 0.5, "b": 1.0}
    assert pass_at_k(10, 0, 3) == 0.0
    assert pass_at_k(10, 10, 1) == 1.0
    assert pass_at_k(5, 1, 1) == pytest.approx(0.2)
    assert pass_at_k(4, 2, 3) == 1.0
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)


def test_grading_a_long_hostile_response_is_fast() -> None:
    response = ("((((1+2*3^4/5-" * 2000) + "\nAnswer: " + "(" * 3000
    start = time.perf_counter()
    result = grade(numeric("7"), response)
    assert time.perf_counter() - start < 5.0  # a guard against catastrophic backtracking
    assert result.score_strict == 0.0
