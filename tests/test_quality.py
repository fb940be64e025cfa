"""harness.quality.run: ask, grade, record and sum up a suite, with canned answers (no server)."""

from __future__ import annotations

from typing import Any

import pytest

from harness.errors import ServerError
from harness.quality.run import run_quality_suite
from harness.quality.scoring import Item, reference_response
from harness.quality.suite_data import load_suite


@pytest.fixture(scope="module")
def math_suite() -> Any:
    return load_suite("math")


def test_reference_answers_pass_and_are_recorded(math_suite: Any) -> None:
    items = math_suite.items[:5]
    answers = {math_suite.format_prompt(item): reference_response(item) for item in items}
    records: list[dict[str, Any]] = []
    outcome = run_quality_suite(
        math_suite, items, model="m", ask=lambda item, prompt, repeat: answers[prompt], record=records.append,
        threshold=0.5, repeats=2,
    )  # fmt: skip
    assert outcome.passed and outcome.accuracy_strict == 1.0
    prompts = [record for record in records if record["kind"] == "prompt"]
    assert len(prompts) == 10 and {record["repeat"] for record in prompts} == {0, 1}
    assert all(record["passed"] and record["prompt"].endswith(math_suite.instruction) for record in prompts)
    suite_record = records[-1]
    assert suite_record["kind"] == "suite" and suite_record["n"] == 10 and suite_record["items"] == 5
    assert suite_record["passed"] is True and suite_record["threshold"] == 0.5


def test_garbage_scores_zero_and_fails(math_suite: Any) -> None:
    records: list[dict[str, Any]] = []
    outcome = run_quality_suite(
        math_suite, math_suite.items, model="m", ask=lambda item, prompt, repeat: " is two one.",
        record=records.append, threshold=0.5, expected_to_fail=True,
    )  # fmt: skip
    assert outcome.accuracy_strict == 0.0 and not outcome.passed
    assert records[-1]["expected_to_fail"] is True
    assert "FAIL" in outcome.summary_line()


def test_a_refused_request_is_a_failed_answer_with_its_reason(math_suite: Any) -> None:
    def refuse(item: Item, prompt: str, repeat: int) -> str:
        raise ServerError("POST /api/chat: 500 model failed to load", "")

    records: list[dict[str, Any]] = []
    outcome = run_quality_suite(
        math_suite, math_suite.items[:2], model="m", ask=refuse, record=records.append, threshold=0.5
    )
    assert outcome.accuracy_strict == 0.0
    assert records[0]["response"] is None and "model failed to load" in records[0]["reason"]
    assert len(records[-1]["errors"]) == 2
