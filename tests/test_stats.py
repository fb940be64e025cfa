"""Noise-aware comparison: bootstrap intervals, rate intervals, verdicts."""

from __future__ import annotations

import time

import numpy as np
import pytest

from harness.config import parse_threshold
from harness.report.stats import (
    Samples,
    bootstrap_difference,
    judge,
    mean_statistic,
    percentile_samples,
    proportion_difference,
    ratio_statistic,
)

RNG = np.random.default_rng(7)
FAST = RNG.lognormal(np.log(0.1), 0.3, size=300)
FAST_AGAIN = RNG.lognormal(np.log(0.1), 0.3, size=300)
SLOW = RNG.lognormal(np.log(0.15), 0.3, size=300)
PLUS_20 = parse_threshold("+20%")


def test_bootstrap_is_reproducible_and_covers_the_true_shift():
    base, slow = percentile_samples(FAST, 50), percentile_samples(SLOW, 50)
    low, high = bootstrap_difference(base, slow, seed=3)
    assert (low, high) == bootstrap_difference(base, slow, seed=3)
    assert 0 < low < 0.05 < high  # true shift of the median: 0.15 - 0.10
    same_low, same_high = bootstrap_difference(base, percentile_samples(FAST_AGAIN, 50))
    assert same_low < 0 < same_high


def test_verdicts_on_samples():
    def verdict(baseline: np.ndarray, current: np.ndarray, q: float = 95, threshold: str = "+20%") -> str:
        base, cur = percentile_samples(baseline, q), percentile_samples(current, q)
        return judge(
            base.value(),
            cur.value(),
            "lower",
            parse_threshold(threshold),
            baseline_samples=base,
            current_samples=cur,
        ).verdict

    assert verdict(FAST, FAST_AGAIN) in {"same", "noise"}
    assert verdict(FAST, SLOW) == "REGRESSED"
    assert verdict(SLOW, FAST) == "better"
    assert verdict(FAST, SLOW, threshold="+80%") == "same"
    assert verdict(FAST[:4], SLOW[:4], q=50) == "noise"  # beyond the threshold, but four samples say little
    # p99 of 100 has one sample in its tail: only a change whose whole interval passes the threshold counts
    assert verdict(FAST[:100], FAST_AGAIN[:100] * 1.3, q=99) == "noise"
    assert verdict(FAST[:100], FAST_AGAIN[:100] * 3, q=99) == "REGRESSED"


def test_verdicts_without_samples_use_the_threshold_alone():
    accuracy = parse_threshold("-5pt")
    assert judge(0.90, 0.84, "higher", accuracy).verdict == "REGRESSED"
    assert judge(0.90, 0.86, "higher", accuracy).verdict == "same"
    assert judge(0.80, 0.90, "higher", accuracy).verdict == "better"
    assert judge(None, 0.9, "higher", accuracy).verdict == "new"
    assert judge(0.9, None, "higher", accuracy).verdict == "gone"
    judgement = judge(100.0, 125.0, "lower", PLUS_20)
    assert judgement.verdict == "REGRESSED" and judgement.relative_delta == pytest.approx(0.25)
    assert judgement.allowed == pytest.approx(20.0) and judgement.interval is None


def test_rare_errors_are_noise_but_many_are_not():
    def rate(errors: int, n: int) -> Samples:
        return Samples(np.array([1.0] * errors + [0.0] * (n - errors)), mean_statistic(), proportion=True)

    low, high = proportion_difference(rate(0, 120), rate(3, 120))
    assert low < 0 < high
    low, _ = proportion_difference(rate(0, 200), rate(30, 200))
    assert low > 0
    one_point = parse_threshold("+1pt")
    assert (
        judge(
            0.0, 0.025, "lower", one_point, baseline_samples=rate(0, 120), current_samples=rate(3, 120)
        ).verdict
        == "noise"
    )
    assert (
        judge(
            0.0, 0.15, "lower", one_point, baseline_samples=rate(0, 200), current_samples=rate(30, 200)
        ).verdict
        == "REGRESSED"
    )


def test_ratio_statistic_is_tokens_over_busy_time():
    tokens, busy = np.array([10.0, 30.0]), np.array([1.0, 1.0])
    assert Samples(np.column_stack([tokens, busy]), ratio_statistic(0, 1, 2.0)).value() == pytest.approx(40.0)
    assert np.isnan(Samples(np.empty((0, 2)), ratio_statistic(0, 1)).value())


def test_large_sample_sets_stay_fast():
    big = np.random.default_rng(1).gamma(8.0, 0.0025, size=50_000)
    start = time.perf_counter()
    low, _ = bootstrap_difference(percentile_samples(big, 50), percentile_samples(big * 1.5, 50))
    assert time.perf_counter() - start < 10
    assert low > 0


def _median_verdict(baseline: np.ndarray, current: np.ndarray, **kwargs: float) -> str:
    base, cur = percentile_samples(baseline, 50), percentile_samples(current, 50)
    return judge(
        base.value(), cur.value(), "lower", PLUS_20, baseline_samples=base, current_samples=cur, **kwargs
    ).verdict


def test_a_few_samples_need_their_whole_interval_beyond_the_threshold():
    few, few_again = FAST[:6], FAST_AGAIN[:6]
    assert _median_verdict(few, few_again * 1.3) == "noise"  # six requests cannot show a 30 % slowdown
    assert _median_verdict(few, few_again * 3) == "REGRESSED"  # but they do show a threefold one
    assert _median_verdict(FAST, FAST_AGAIN * 1.3) == "REGRESSED"  # 300 requests show 30 %


def test_a_timing_change_below_the_floor_is_the_same():
    tiny, tiny_later = FAST * 0.0003, FAST_AGAIN * 0.001  # a 0.03 ms gap becoming 0.1 ms
    assert _median_verdict(tiny, tiny_later) == "REGRESSED"
    assert _median_verdict(tiny, tiny_later, floor=0.001) == "same"
