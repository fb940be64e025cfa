"""Running a quality suite: ask every item (times `repeats`), grade each answer, record it, sum it up.

The asking is a callable, so this module knows nothing about servers: the suites pass one that calls the
model under test, the tests pass canned answers. Every answer becomes one "prompt" record; the suite ends
with one "suite" record whose `accuracy_strict` is compared with the threshold.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.errors import HarnessError
from harness.quality.scoring import GradeResult, Item, accuracy, grade, pass_rate, pass_rates_by_item
from harness.quality.suite_data import Suite

Ask = Callable[[Item, str, int], str]  # (item, its prompt text, repeat) -> response
Record = Callable[[dict[str, Any]], None]


@dataclass
class SuiteOutcome:
    """What a quality suite scored on one model."""

    suite: str
    model: str
    threshold: float
    results: list[tuple[str, GradeResult]] = field(default_factory=list)
    responses: list[str | None] = field(default_factory=list)  # one per result (None: the request failed)
    errors: list[tuple[str, str]] = field(default_factory=list)
    repeats: int = 1
    expected_to_fail: bool = False

    @property
    def accuracy_strict(self) -> float:
        return accuracy(result for _, result in self.results)[0]

    @property
    def accuracy_flexible(self) -> float:
        return accuracy(result for _, result in self.results)[1]

    @property
    def pass_rate(self) -> float:
        return pass_rate(result for _, result in self.results)

    @property
    def passed(self) -> bool:
        return bool(self.results) and self.accuracy_strict >= self.threshold

    def to_record(self) -> dict[str, Any]:
        """The run record's "suite" line."""
        return {
            "kind": "suite",
            "suite": self.suite,
            "model": self.model,
            "n": len(self.results),
            "items": len({item_id for item_id, _ in self.results}),
            "repeats": self.repeats,
            "accuracy_strict": self.accuracy_strict,
            "accuracy_flexible": self.accuracy_flexible,
            "pass_rate": self.pass_rate,
            "item_pass_rates": pass_rates_by_item(self.results),
            "threshold": self.threshold,
            "passed": self.passed,
            "expected_to_fail": self.expected_to_fail,
            "errors": [{"item_id": item_id, "error": error} for item_id, error in self.errors],
        }

    def summary_line(self) -> str:
        """One line for the test's failure message."""
        return (
            f"{self.suite} on {self.model}: accuracy {self.accuracy_strict:.3f} strict "
            f"({self.accuracy_flexible:.3f} flexible) over {len(self.results)} answers, "
            f"threshold {self.threshold:.3f}: {'PASS' if self.passed else 'FAIL'}"
        )


def run_quality_suite(
    suite: Suite,
    items: Sequence[Item],
    *,
    model: str,
    ask: Ask,
    record: Record,
    threshold: float,
    repeats: int = 1,
    expected_to_fail: bool = False,
) -> SuiteOutcome:
    """Ask (the item with the suite's formatted prompt), grade and record every item `repeats` times; returns
    the outcome (also recorded as the "suite" record).

    A `HarnessError` while asking one item (the server refused it, a timeout) is recorded as a failed answer
    with its reason, and the suite goes on; anything else (the server died) propagates.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    outcome = SuiteOutcome(suite.name, model, threshold, repeats=repeats, expected_to_fail=expected_to_fail)
    for item in items:
        prompt = suite.format_prompt(item)
        for repeat in range(repeats):
            response: str | None
            try:
                response = ask(item, prompt, repeat)
            except HarnessError as error:
                outcome.errors.append((item.id, error.message))
                result = GradeResult(0.0, 0.0, None, None, False, f"request failed: {error.message}")
                response = None
            else:
                result = grade(item, response)
            outcome.results.append((item.id, result))
            outcome.responses.append(response)
            record(
                {
                    "kind": "prompt",
                    "suite": suite.name,
                    "model": model,
                    "item_id": item.id,
                    "topic": item.topic,
                    "difficulty": item.difficulty,
                    "grader": item.grader,
                    "reference": item.answer,
                    "prompt": prompt,
                    "response": response,
                    "repeat": repeat,
                    **result.as_record(),
                }
            )
    record(outcome.to_record())
    return outcome
