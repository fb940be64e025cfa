"""The quality suites' generation budget, few-shot prompts and accuracy intervals, end to end.

A canned server stands in for an instruct model that answers correctly but at length (300 tokens of reasoning,
then `Answer: 391`), honouring `num_predict` as a model does: the suite's default budget scores it right; with
`--harness-num-predict 64` the answers are cut off, graded as they are, and the run and the report say so.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from harness.config import parse_threshold
from harness.quality.run import Answer, Generation, run_quality_suite
from harness.quality.scoring import wilson_interval
from harness.quality.suite_data import load_suite
from harness.report.stats import Samples, judge, mean_statistic
from harness.runs import RunRecord, load_run
from harness.testing.canned_server import CannedBehaviour, CannedServer, reasoning_answer
from harness.testing.helpers import run_pytest

REPO = Path(__file__).resolve().parents[1]
REASONING_TOKENS = 300


@pytest.fixture(scope="module")
def verbose_model() -> Iterator[CannedServer]:
    """A model that reasons for 300 tokens, then answers 17 x 23 right."""
    with CannedServer(CannedBehaviour(text=reasoning_answer(REASONING_TOKENS, "391"))) as server:
        yield server


def math_run(
    reports: Path, server: CannedServer, *extra: str
) -> tuple[subprocess.CompletedProcess[str], RunRecord]:
    done, _ = run_pytest(
        reports,
        str(REPO / "suites" / "test_math.py"),
        "--ollama-host", server.host, "--harness-model", "verbose", "--harness-max-items", "1",
        "--harness-threshold", "math=1.0",
        *extra,
        cwd=REPO,
        timeout=120,
    )  # fmt: skip
    return done, load_run(reports / "latest")


def report_json(run: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", "report", str(run), "--no-baseline", "--format", "json"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return json.loads(done.stdout)


def test_default_budget_scores_a_long_correct_answer(tmp_path: Path, verbose_model: CannedServer) -> None:
    done, run = math_run(tmp_path, verbose_model)
    assert done.returncode == 0, done.stdout[-3000:]
    (prompt,) = run.of_kind("prompt")
    assert prompt["passed"] and prompt["done_reason"] == "stop", prompt
    assert prompt["eval_count"] >= REASONING_TOKENS - 2 and not prompt["cut_off"]
    (suite,) = run.of_kind("suite")
    assert suite["num_predict"] == load_suite("math").num_predict >= 512
    assert suite["cut_off"] == 0 and suite["verdict"] == "pass"


def test_a_small_budget_shows_the_answers_cut_off(tmp_path: Path, verbose_model: CannedServer) -> None:
    done, run = math_run(tmp_path, verbose_model, "--harness-num-predict", "64")
    assert done.returncode == 1, done.stdout[-3000:]
    (prompt,) = run.of_kind("prompt")
    assert not prompt["passed"] and prompt["done_reason"] == "length" and prompt["eval_count"] == 64
    assert prompt["cut_off"] and prompt["reason"].startswith("cut off at num_predict 64: "), prompt["reason"]
    (suite,) = run.of_kind("suite")
    assert suite["cut_off"] == 1 and suite["num_predict"] == 64
    assert "1 cut off at num_predict 64" in done.stdout
    (summary,) = report_json(run.path)["suites"]
    assert summary["cut_off"] == 1 and summary["num_predict"] == 64
    text = subprocess.run(
        [sys.executable, "-m", "harness.cli", "report", str(run.path), "--no-baseline"],
        capture_output=True, text=True, timeout=60, check=False,
    ).stdout  # fmt: skip
    assert "1 at 64" in text and "cut off at num_predict 64" in text, text


def test_harness_toml_sets_the_budget_and_the_flag_wins(tmp_path: Path, verbose_model: CannedServer) -> None:
    config = tmp_path / "harness.toml"
    config.write_text("[suites.num_predict]\nmath = 32\n")
    _, run = math_run(tmp_path / "toml", verbose_model, "--harness-config", str(config))
    assert run.of_kind("suite")[0]["num_predict"] == 32
    _, run = math_run(
        tmp_path / "flag", verbose_model, "--harness-config", str(config), "--harness-num-predict", "2000"
    )
    assert run.of_kind("suite")[0]["num_predict"] == 2000 and run.of_kind("prompt")[0]["passed"]


def test_fewshot_prepends_held_out_examples_in_the_answer_format() -> None:
    suite = load_suite("math")
    item = suite.items[0]
    prompt = suite.format_prompt(item, 3)
    assert prompt.count("Question: ") == 4 and prompt.rstrip().endswith(f"Question: {item.prompt}")
    for example in suite.fewshot[:3]:
        assert f"Answer: {example.answer}" in prompt
    scored = {entry.prompt for entry in suite.items}
    assert not scored & {example.prompt for example in suite.fewshot}
    asked: list[str] = []
    outcome = run_quality_suite(
        suite, suite.items[:2], model="m", ask=lambda item, text, _: asked.append(text) or "Answer: 1",
        record=lambda record: None, threshold=0.5, generation=Generation(64, suite.stop, fewshot=2),
    )  # fmt: skip
    assert outcome.to_record()["fewshot"] == 2 and all(text.count("Question: ") == 3 for text in asked)
    with pytest.raises(Exception, match="only 5 few-shot"):
        suite.format_prompt(item, 6)


def test_cut_off_is_known_from_eval_count_when_done_reason_is_missing() -> None:
    assert Answer("x", None, 64).cut_off(64) and not Answer("x", None, 63).cut_off(64)
    assert Answer("x", "length", 10).cut_off(None) and not Answer("x", "stop", 64).cut_off(64)


def test_wilson_interval_and_the_threshold_verdict() -> None:
    low, high = wilson_interval(0, 56)
    assert low == 0 and 0.06 < high < 0.07
    low, high = wilson_interval(28, 56)
    assert 0.37 < low < 0.38 and 0.62 < high < 0.63
    suite = load_suite("math")
    right = {suite.format_prompt(item): f"Answer: {item.answer}" for item in suite.items[:25]}
    outcome = run_quality_suite(
        suite, suite.items, model="m", ask=lambda item, text, _: right.get(text, "no"), record=lambda r: None,
        threshold=0.5,
    )  # fmt: skip
    assert not outcome.passed and outcome.verdict == "below, within noise", outcome.summary_line()
    assert "[" in outcome.summary_line() and "BELOW, WITHIN NOISE" in outcome.summary_line()


def scores(right: int, n: int) -> Samples:
    return Samples(
        np.array([1.0] * right + [0.0] * (n - right)), mean_statistic(), proportion=True, wilson=True
    )


@pytest.mark.parametrize(
    ("before", "after", "verdict"),
    [((30, 56), (27, 56), "noise"), ((30, 56), (10, 56), "REGRESSED"), ((0, 56), (0, 56), "same")],
)
def test_accuracy_change_is_judged_by_its_interval(before, after, verdict) -> None:
    """On 56 items a 5-point drop is noise; a 36-point drop is a regression."""
    base, cur = scores(*before), scores(*after)
    threshold = parse_threshold("-5pt")
    judgement = judge(
        base.value(), cur.value(), "higher", threshold, baseline_samples=base, current_samples=cur
    )
    assert judgement.verdict == verdict, judgement


def test_suite_files_with_a_bad_budget_or_a_scored_fewshot_example_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "suite: bad\ndescription: d\ninstruction: i\nnum_predict: 0\nstop: [1]\n"
        "fewshot:\n  - {prompt: What is 1 + 1?, answer: 2}\n  - {prompt: p}\n"
        "items:\n  - {id: one, prompt: What is 1 + 1?, grader: numeric, answer: 2, check: '2',"
        " tags: {topic: t, difficulty: easy}}\n"
    )
    with pytest.raises(Exception) as caught:
        load_suite(path)
    message = str(caught.value)
    for problem in (
        "'num_predict' must be a positive integer",
        "'stop' must be a list",
        "fewshot example #2: prompt and answer must be non-empty",
        "fewshot example #1 is a scored item",
    ):
        assert problem in message, message
