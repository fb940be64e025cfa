"""Noise-aware comparison of one metric between a baseline run and a current run.

Timing metrics come with their samples (one row per request). Their difference is judged by a bootstrap
confidence interval of the difference of the statistic (a percentile, a ratio of sums), drawn with a fixed
seed so that a report is reproducible; rates of rare events (errors) use the Agresti-Caffo interval instead.

A metric is REGRESSED only when it got worse by more than its threshold *and* the interval excludes zero; a
change beyond the threshold that the interval cannot tell from zero is "noise"; a change within the threshold
is "same". A tail percentile with fewer than MIN_TAIL_SAMPLES samples beyond it (p99 of 120 requests is the
second-largest value, whose noise the bootstrap underestimates) must have its whole interval beyond the
threshold to count as a change, and so must any metric with fewer than MIN_SAMPLES samples a side (six
requests resample into a falsely narrow interval: two identical runs of the fixture suites gave a -33 %
"significant" throughput change that way). A worsening below the metric's floor (1 ms for timings, under
the scheduling noise of a CPU) is "same" whatever its ratio.
Accuracies come with every answer's score: the change is judged by Newcombe's hybrid score interval (built
from each side's Wilson interval), so on 56 items a 5-point drop is "noise", not a regression. Metrics without
samples (memory sizes) are judged on the threshold alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

import numpy as np

from harness.config import Threshold
from harness.quality.scoring import wilson_interval

Direction = Literal["lower", "higher"]
Verdict = Literal["better", "same", "noise", "REGRESSED", "new", "gone"]

# A statistic maps resampled sample sets, shape (batch, n, columns), to one value per set, shape (batch,).
Statistic = Callable[[np.ndarray], np.ndarray]

MIN_TAIL_SAMPLES = 5
MIN_SAMPLES = 20  # below this the bootstrap interval is too narrow to trust on its own (see the docstring)
MAX_BOOTSTRAP_SAMPLES = 2000  # larger sample sets are thinned (seeded) for the interval only
_BATCH_ELEMENTS = 2_000_000  # resampled values held in memory at once


def percentile_statistic(q: float, column: int = 0) -> Statistic:
    """The q-th percentile (0-100) of one column."""
    return lambda batch: np.percentile(batch[:, :, column], q, axis=1)


def percentile_samples(values: np.ndarray, q: float) -> Samples:
    """Samples of one timing whose metric is their q-th percentile."""
    return Samples(values, percentile_statistic(q), tail_fraction=min(q, 100 - q) / 100)


def mean_statistic(column: int = 0) -> Statistic:
    """The mean of one column (a rate when the column holds 0/1 indicators)."""
    return lambda batch: batch[:, :, column].mean(axis=1)


def ratio_statistic(numerator: int, denominator: int, scale: float = 1.0) -> Statistic:
    """sum(numerator column) / sum(denominator column) * scale (throughputs: tokens over busy time)."""

    def ratio(batch: np.ndarray) -> np.ndarray:
        total = batch[:, :, denominator].sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(total > 0, batch[:, :, numerator].sum(axis=1) / total * scale, np.nan)

    return ratio


@dataclass(frozen=True)
class Samples:
    """The per-request samples of a metric: an (n, columns) array and the statistic that gives its value."""

    values: np.ndarray
    statistic: Statistic
    proportion: bool = False  # 0/1 values whose statistic is their mean (an error rate)
    tail_fraction: float | None = None  # for a percentile statistic: the share of samples beyond it
    wilson: bool = False  # scores in [0, 1] whose mean is an accuracy: Newcombe's interval of the change

    def __post_init__(self) -> None:
        values = np.asarray(self.values, dtype=float)
        object.__setattr__(self, "values", values[:, np.newaxis] if values.ndim == 1 else values)

    def __len__(self) -> int:
        return len(self.values)

    def value(self) -> float:
        """The statistic over all samples."""
        if len(self) == 0:
            return float("nan")
        return float(self.statistic(self.values[np.newaxis])[0])


def _resampled(samples: Samples, resamples: int, rng: np.random.Generator) -> np.ndarray:
    values = samples.values
    if len(values) > MAX_BOOTSTRAP_SAMPLES:
        values = values[rng.choice(len(values), MAX_BOOTSTRAP_SAMPLES, replace=False)]
    n = len(values)
    batch = max(1, _BATCH_ELEMENTS // (n * values.shape[1]))
    out = np.empty(resamples)
    for start in range(0, resamples, batch):
        stop = min(resamples, start + batch)
        indices = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = samples.statistic(values[indices])
    return out


def proportion_difference(
    baseline: Samples, current: Samples, *, confidence: float = 0.95
) -> tuple[float, float]:
    """Agresti-Caffo interval of rate(current) - rate(baseline) for 0/1 samples.

    The bootstrap is blind to rare events (no resample of 0 errors in 120 can show an error), so rates such as
    the error rate use this interval, which stays honest for counts of 0, 1, 2.
    """
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    rates, variances = [], []
    for samples in (baseline, current):
        n = len(samples) + 2
        rate = (float(samples.values[:, 0].sum()) + 1) / n
        rates.append(rate)
        variances.append(rate * (1 - rate) / n)
    difference, spread = rates[1] - rates[0], z * math.sqrt(sum(variances))
    return (difference - spread, difference + spread)


def newcombe_difference(
    baseline: Samples, current: Samples, *, confidence: float = 0.95
) -> tuple[float, float]:
    """Newcombe's hybrid score interval of mean(current) - mean(baseline) for scores in [0, 1] (method 10
    of Newcombe 1998): each side's Wilson interval, combined. Honest for accuracies of 0 % and 100 %."""
    sides = []
    for samples in (baseline, current):
        n = len(samples)
        p = float(samples.values[:, 0].mean()) if n else 0.0
        sides.append((p, *wilson_interval(p * n, n, confidence)))
    (p1, low1, high1), (p2, low2, high2) = sides
    difference = p2 - p1
    return (
        difference - math.hypot(p2 - low2, high1 - p1),
        difference + math.hypot(high2 - p2, p1 - low1),
    )


def difference_interval(
    baseline: Samples,
    current: Samples,
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Confidence interval of the change of a sampled metric: Newcombe for accuracies, Agresti-Caffo for
    rates, else the bootstrap."""
    if baseline.wilson and current.wilson:
        return newcombe_difference(baseline, current, confidence=confidence)
    if baseline.proportion and current.proportion:
        return proportion_difference(baseline, current, confidence=confidence)
    return bootstrap_difference(baseline, current, resamples=resamples, confidence=confidence, seed=seed)


def bootstrap_difference(
    baseline: Samples,
    current: Samples,
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Confidence interval (low, high) of statistic(current) - statistic(baseline), by percentile bootstrap.

    Each side is resampled with replacement, independently; the same seed gives the same interval.
    """
    if len(baseline) < 2 or len(current) < 2:
        return (float("-inf"), float("inf"))
    rng = np.random.default_rng(seed)
    differences = _resampled(current, resamples, rng) - _resampled(baseline, resamples, rng)
    differences = differences[np.isfinite(differences)]
    if len(differences) == 0:
        return (float("-inf"), float("inf"))
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(differences, [tail, 100 - tail])
    return (float(low), float(high))


@dataclass(frozen=True)
class Judgement:
    """How a metric moved: the verdict, the change, the allowed worsening and the interval (if sampled)."""

    verdict: Verdict
    delta: float | None
    relative_delta: float | None
    allowed: float | None
    interval: tuple[float, float] | None


def judge(
    baseline: float | None,
    current: float | None,
    direction: Direction,
    threshold: Threshold,
    *,
    baseline_samples: Samples | None = None,
    current_samples: Samples | None = None,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    floor: float = 0.0,
) -> Judgement:
    """Judge one metric: better / same / noise / REGRESSED (or new / gone when a side has no value).

    `floor` is the smallest worsening, in the metric's unit, that can count at all
    (harness.units.noise_floor)."""
    if baseline is None or not np.isfinite(baseline):
        return Judgement("new" if current is not None else "gone", None, None, None, None)
    if current is None or not np.isfinite(current):
        return Judgement("gone", None, None, None, None)
    delta = current - baseline
    relative = delta / abs(baseline) if baseline != 0 else None
    allowed = max(threshold.allowed(baseline), floor)
    worsening = delta if direction == "lower" else -delta
    interval: tuple[float, float] | None = None
    significant = True
    if baseline_samples is not None and current_samples is not None:
        interval = difference_interval(
            baseline_samples, current_samples, resamples=resamples, confidence=confidence, seed=seed
        )
        low, high = interval if direction == "lower" else (-interval[1], -interval[0])  # of the worsening
        significant = not low <= 0 <= high
        tail = current_samples.tail_fraction
        n = min(len(baseline_samples), len(current_samples))
        if n < MIN_SAMPLES or (tail is not None and n * tail < MIN_TAIL_SAMPLES):
            significant = low > allowed or high < -allowed  # the whole interval must lie beyond the threshold
    if abs(worsening) <= allowed:
        verdict: Verdict = "same"
    elif not significant:
        verdict = "noise"
    else:
        verdict = "REGRESSED" if worsening > 0 else "better"
    return Judgement(verdict, delta, relative, allowed, interval)
