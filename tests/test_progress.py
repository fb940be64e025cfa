"""harness.progress and the progress of a quality suite and a load run: what a person sees on a terminal,
and nothing but notes in a log."""

from __future__ import annotations

import io

from harness.load.commands import LoadProgress
from harness.load.generator import RequestSample
from harness.progress import CLEAR_LINE, StreamProgress
from harness.quality.run import run_quality_suite
from harness.quality.suite_data import load_suite


class Recorded:
    """A Progress that keeps what it was told."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def update(self, text: str) -> None:
        self.events.append(("update", text))

    def step(self, text: str) -> None:
        self.events.append(("step", text))

    def note(self, text: str) -> None:
        self.events.append(("note", text))

    def close(self) -> None:
        self.events.append(("close", ""))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_terminal_sees_one_status_line_rewritten_and_the_notes() -> None:
    stream, clock = io.StringIO(), Clock()
    progress = StreamProgress(stream, live=True, interval_s=0.1, clock=clock)
    progress.update("a 1/3")
    clock.now = 0.05
    progress.update("a 2/3")  # too soon: skipped
    clock.now = 0.2
    progress.step("a 3/3")
    progress.note("a: done")
    assert stream.getvalue() == f"{CLEAR_LINE}a 1/3{CLEAR_LINE}a 3/3{CLEAR_LINE}a: done\n"


def test_a_log_sees_only_the_notes() -> None:
    stream = io.StringIO()
    progress = StreamProgress(stream, live=False)
    progress.update("a 1/3")
    progress.step("a 2/3")
    progress.note("a: done")
    progress.close()
    assert stream.getvalue() == "a: done\n"


def test_stream_progress_is_live_only_on_a_terminal() -> None:
    assert StreamProgress(io.StringIO()).live is False


def test_a_quality_suite_reports_each_graded_prompt_and_the_sum() -> None:
    suite = load_suite("math")
    items = suite.items[:3]
    answers = {suite.format_prompt(item): f"Answer: {item.answer}" for item in items[:2]}
    progress = Recorded()
    run_quality_suite(
        suite, items, model="m", ask=lambda item, prompt, repeat: answers.get(prompt, "no idea"),
        record=lambda record: None, threshold=0.5, progress=progress,
    )  # fmt: skip
    steps = [text for kind, text in progress.events if kind == "step"]
    assert steps == [
        f"math 1/3 {items[0].id}: right, accuracy 100.0% strict",
        f"math 2/3 {items[1].id}: right, accuracy 100.0% strict",
        f"math 3/3 {items[2].id}: wrong, accuracy 66.7% strict",
    ]
    assert progress.events[-1] == (
        "note",
        "math: 3 answers graded, accuracy 66.7% strict (66.7% flexible), threshold 50.0%",
    )


def sample(outcome: str) -> RequestSample:
    return RequestSample(outcome=outcome, ttft_s=0.01, itl_s=[], e2e_s=0.1, output_tokens=1)  # type: ignore[arg-type]


def test_load_progress_shows_requests_errors_and_the_current_rate() -> None:
    progress, clock = Recorded(), Clock()
    load = LoadProgress(10, progress, window_s=2.0, clock=clock)
    for now, outcome in [(0.5, "ok"), (1.0, "ok"), (1.0, "busy"), (4.0, "ok")]:
        clock.now = now
        load.sample(sample(outcome))
    load.close()
    assert [text for _, text in progress.events] == [
        "load: 1/10 requests, 0 errors, 2.0 req/s",
        "load: 2/10 requests, 0 errors, 2.0 req/s",
        "load: 3/10 requests, 1 error, 3.0 req/s",
        "load: 4/10 requests, 1 error, 0.5 req/s",  # the others are older than the 2 s window
        "",
    ]
