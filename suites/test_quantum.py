"""Quantum suite: quantum mechanics, numeric, exact and rubric answers (suites/data/quantum.yaml).

Every item is asked to the model under test, graded by harness.quality and recorded ("prompt" records, then
one "suite" record). The test fails when the strict accuracy is below the threshold (--harness-threshold
quantum=X, harness.toml [suites.thresholds.quantum], else the data file's). On the fixture models (not
language models) the test is an expected failure: it proves the grader scores them about zero.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

pytestmark = [pytest.mark.quality, pytest.mark.timeout(1800)]


def test_quantum_accuracy_reaches_the_threshold(run_quality_suite: Callable[[str], Any]) -> None:
    outcome = run_quality_suite("quantum")
    assert outcome.passed, outcome.summary_line()
