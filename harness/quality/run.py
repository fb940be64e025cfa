"""Running a quality suite: ask every item (times `repeats`), grade each answer, record it, sum it up.

The asking is a callable, so this module knows nothing about servers: the suites pass one that calls the
model under test, the tests pass canned answers. Every answer becomes one "prompt" record (with the
server's `done_reason` and `eval_count`: an answer that hit the generation budget is graded as it is, and its
reason says "cut off at num_predict N"); the suite ends with one "suite" record whose `accuracy_strict`, with
its 95 % Wilson interval, is compared with the threshold.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from harness.errors import HarnessError
from harness.progress import NO_PROGRESS, Progress
from harness.quality.scoring import (
    GradeResult,
    Item,
    accuracy,
    grade,
    pass_rate,
    pass_rates_by_item,
    wilson_interval,
)
from harness.quality.suite_data import Suite


@dataclass(frozen=True)
class Answer:
    """A model's answer: its text, and how generation ended (Ollama's `done_reason`, `eval_count`)."""

    text: str
    done_reason: str | None = None
    eval_count: int | None = None

    def cut_off(self, num_predict: int | None) -> bool:
        """Whether generation stopped at the budget rather than at the end of the answer."""
        if self.done_reason is not None:
            return self.done_reason == "length"
        return num_predict is not None and self.eval_count is not None and self.eval_count >= num_predict


Ask = Callable[[Item, str, int], "str | Answer"]  # (item, its prompt text, repeat) -> response
Record = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Generation:
    """How the suite's answers are generated: the token budget, stop sequences and few-shot examples."""

    num_predict: int | None = None
    stop: tuple[str, ...] = ()
    fewshot: int = 0

    def options(self) -> dict[str, Any]:
        """Ollama request options for these settings (greedy and seeded, as every quality request)."""
        options: dict[str, Any] = {"temperature": 0, "seed": 0}
        if self.num_predict is not None:
            options["num_predict"] = self.num_predict
        if self.stop:
            options["stop"] = list(self.stop)
        return options


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
    generation: Generation = field(default_factory=Generation)
    cut_off: int = 0  # answers that hit num_predict
    confidence: float = 0.95

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
    def interval(self) -> tuple[float, float]:
        """The Wilson interval of the strict accuracy (over every answer, repeats included)."""
        successes = sum(result.score_strict for _, result in self.results)
        return wilson_interval(successes, len(self.results), self.confidence)

    @property
    def passed(self) -> bool:
        return bool(self.results) and self.accuracy_strict >= self.threshold

    @property
    def verdict(self) -> str:
        """ "pass"; "FAIL" when the whole interval lies below the threshold; "below, within noise" when the
        accuracy is below it but its interval reaches it (more items or --repeats would tell)."""
        if self.passed:
            return "pass"
        return "FAIL" if self.interval[1] < self.threshold else "below, within noise"

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
            "accuracy_interval": list(self.interval),
            "confidence": self.confidence,
            "verdict": self.verdict,
            "cut_off": self.cut_off,
            "num_predict": self.generation.num_predict,
            "stop": list(self.generation.stop),
            "fewshot": self.generation.fewshot,
            "pass_rate": self.pass_rate,
            "item_pass_rates": pass_rates_by_item(self.results),
            "threshold": self.threshold,
            "passed": self.passed,
            "expected_to_fail": self.expected_to_fail,
            "errors": [{"item_id": item_id, "error": error} for item_id, error in self.errors],
        }

    def summary_line(self) -> str:
        """One line for the test's failure message."""
        low, high = self.interval
        cut = f", {self.cut_off} cut off at num_predict {self.generation.num_predict}" if self.cut_off else ""
        return (
            f"{self.suite} on {self.model}: accuracy {self.accuracy_strict:.3f} [{low:.3f}, {high:.3f}] "
            f"strict ({self.accuracy_flexible:.3f} flexible) over {len(self.results)} answers{cut}, "
            f"threshold {self.threshold:.3f}: {self.verdict.upper()}"
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
    generation: Generation | None = None,
    progress: Progress = NO_PROGRESS,
) -> SuiteOutcome:
    """Ask (the item with the suite's formatted prompt, with `generation.fewshot` examples), grade and record
    every item `repeats` times; returns the outcome (also recorded as the "suite" record).

    A `HarnessError` while asking one item (the server refused it, a timeout) is recorded as a failed answer
    with its reason, and the suite goes on; anything else (the server died) propagates. Each graded answer
    is a `progress` step (item, verdict, running accuracy); the sum is a note.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    generation = generation or Generation()
    outcome = SuiteOutcome(
        suite.name,
        model,
        threshold,
        repeats=repeats,
        expected_to_fail=expected_to_fail,
        generation=generation,
    )
    for item in items:
        prompt = suite.format_prompt(item, generation.fewshot)
        for repeat in range(repeats):
            answer: Answer | None
            try:
                reply = ask(item, prompt, repeat)
            except HarnessError as error:
                outcome.errors.append((item.id, error.message))
                result = GradeResult(0.0, 0.0, None, None, False, f"request failed: {error.message}")
                answer = None
            else:
                answer = reply if isinstance(reply, Answer) else Answer(reply)
                result = grade(item, answer.text)
                if answer.cut_off(generation.num_predict):
                    outcome.cut_off += 1
                    budget = generation.num_predict if generation.num_predict is not None else "?"
                    result = replace(result, reason=f"cut off at num_predict {budget}: {result.reason}")
            outcome.results.append((item.id, result))
            outcome.responses.append(answer.text if answer else None)
            progress.step(_progress_line(outcome, len(items) * repeats, item.id, result, answer is None))
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
                    "response": answer.text if answer else None,
                    "done_reason": answer.done_reason if answer else None,
                    "eval_count": answer.eval_count if answer else None,
                    "cut_off": bool(answer and answer.cut_off(generation.num_predict)),
                    "repeat": repeat,
                    **result.as_record(),
                }
            )
    record(outcome.to_record())
    progress.note(
        f"{suite.name}: {len(outcome.results)} answers graded, accuracy {outcome.accuracy_strict:.1%} strict "
        f"({outcome.accuracy_flexible:.1%} flexible), threshold {threshold:.1%}"
    )
    return outcome


def _progress_line(outcome: SuiteOutcome, total: int, item_id: str, result: GradeResult, failed: bool) -> str:
    """`math 3/56 arith-multiply: wrong, accuracy 33.3 % strict`: one graded answer, as progress."""
    if failed:
        verdict = "request failed"
    elif result.passed:
        verdict = "right"
    else:
        verdict = "right (flexible only)" if result.score_flexible > 0 else "wrong"
    done = len(outcome.results)
    return (
        f"{outcome.suite} {done}/{total} {item_id}: {verdict}, accuracy {outcome.accuracy_strict:.1%} strict"
    )
