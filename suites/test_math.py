"""Math suite: arithmetic, algebra, counting, probability, geometry (suites/data/math.yaml).

Every item is asked to the model under test, graded by harness.quality and recorded ("prompt" records, then
one "suite" record). The test fails when the strict accuracy is below the threshold (--harness-threshold
math=X, harness.toml [suites.thresholds.math], else the data file's). On the fixture models (not language
models) the test is an expected failure: it proves the grader scores them about zero.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

pytestmark = [pytest.mark.quality, pytest.mark.timeout(1800)]


def test_math_accuracy_reaches_the_threshold(run_quality_suite: Callable[[str], Any]) -> None:
    outcome = run_quality_suite("math")
    assert outcome.passed, outcome.summary_line()
