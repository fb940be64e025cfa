"""What `harness report` says about a run: summaries of its results, the metrics keyed (model, metric), the
choice of a baseline, and the comparison with it. Pure data in, data out; rendering is in `report_render`.

Metric names are `<group>.<subject>.<family>`: `suite.gsm8k.accuracy_strict`, `load.c4.ttft_p95`,
`memory.rss_peak` (no subject). Thresholds match the full name or the family (`ttft_p95`).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import numpy as np

from harness.modelfile.identity import identity_digest, model_identity
from harness.quality.scoring import wilson_interval
from harness.report.stats import (
    Direction,
    Samples,
    mean_statistic,
    percentile_samples,
    ratio_statistic,
)
from harness.runs import RunRecord

PERCENTILES = (50, 90, 95, 99)
SHOWN_PERCENTILES = (50, 90, 99)
SUCCESS_OUTCOMES = frozenset({"ok", "success", "passed"})
FAILED_TEST_OUTCOMES = frozenset({"failed", "error"})


@dataclass(frozen=True)
class Metric:
    """One number of one run for one model, with its unit, the direction that is better, and its samples."""

    model: str
    name: str
    value: float | None
    unit: str  # "s", "fraction", "bytes", "tok/s", "req/s"
    better: Direction
    samples: Samples | None = None
    trusted: bool = True  # False: measured by a saturated load client, so its moves can't be told from noise

    @property
    def family(self) -> str:
        return self.name.rsplit(".", 1)[-1]


# ------------------------------------------------------------------------------------------ summaries


@dataclass
class SuiteSummary:
    """One suite on one model: test counts from "test" records and accuracy from its "suite" record."""

    model: str
    suite: str
    tests: Counter[str] = field(default_factory=Counter)
    n: int | None = None
    accuracy_strict: float | None = None
    accuracy_flexible: float | None = None
    threshold: float | None = None
    passed: bool | None = None
    expected_to_fail: bool = False  # a fixture model that is no language model: failing is its job
    interval: tuple[float, float] | None = None  # Wilson interval of accuracy_strict
    verdict: str | None = None  # the threshold verdict (harness.quality.run.SuiteOutcome.verdict)
    cut_off: int | None = None  # answers that hit num_predict
    num_predict: int | None = None
    fewshot: int | None = None
    # every answer's score (its prompt records), by family: accuracy_strict, accuracy_flexible
    scores: dict[str, list[float]] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        """A failed test, or a suite below its threshold that was expected to pass."""
        below = self.passed is False and not self.expected_to_fail
        return below or any(self.tests[outcome] for outcome in FAILED_TEST_OUTCOMES)


def summarise_suites(run: RunRecord) -> list[SuiteSummary]:
    """Per (model, suite): tests passed/failed/skipped and the suite's accuracy, strict and flexible."""
    summaries: dict[tuple[str, str], SuiteSummary] = {}

    def summary(record: Mapping[str, Any]) -> SuiteSummary:
        key = (str(record.get("model") or "-"), str(record.get("suite") or "-"))
        return summaries.setdefault(key, SuiteSummary(*key))

    for record in run.of_kind("test"):
        summary(record).tests[str(record.get("outcome", "unknown"))] += 1
    for record in run.of_kind("suite"):
        item = summary(record)
        item.n = record.get("n")
        item.accuracy_strict = record.get("accuracy_strict")
        item.accuracy_flexible = record.get("accuracy_flexible")
        item.threshold = record.get("threshold")
        item.passed = record.get("passed")
        item.expected_to_fail = bool(record.get("expected_to_fail"))
        interval = record.get("accuracy_interval")
        if isinstance(interval, list) and len(interval) == 2:
            item.interval = (float(interval[0]), float(interval[1]))
        elif isinstance(item.accuracy_strict, (int, float)) and isinstance(item.n, int):
            item.interval = wilson_interval(item.accuracy_strict * item.n, item.n)  # an older record
        item.verdict = record.get("verdict")
        item.cut_off = record.get("cut_off")
        item.num_predict = record.get("num_predict")
        item.fewshot = record.get("fewshot")
    for record in run.of_kind("prompt"):
        for family, key in (("accuracy_strict", "score_strict"), ("accuracy_flexible", "score_flexible")):
            score = record.get(key)
            if isinstance(score, (int, float)):
                summary(record).scores.setdefault(family, []).append(float(score))
    return sorted(summaries.values(), key=lambda item: (item.model, item.suite))


def accuracy_samples(suite: SuiteSummary, family: str) -> Samples | None:
    """The scores of a suite's answers (`family`: accuracy_strict or accuracy_flexible) as samples, compared
    by the Wilson-based interval of the difference; rebuilt from n and the accuracy for a run without prompt
    records."""
    scores = suite.scores.get(family, [])
    accuracy = getattr(suite, family)
    if not scores and isinstance(suite.n, int) and isinstance(accuracy, (int, float)):
        passed = round(accuracy * suite.n)
        scores = [1.0] * passed + [0.0] * (suite.n - passed)
    return Samples(np.array(scores), mean_statistic(), proportion=True, wilson=True) if scores else None


def _prompt_score(record: Mapping[str, Any]) -> float:
    scores = [record.get(key) for key in ("score_strict", "score_flexible")]
    numbers = [float(score) for score in scores if isinstance(score, (int, float))]
    return min(numbers) if numbers else 0.0


def worst_prompts(run: RunRecord, count: int = 5) -> list[dict[str, Any]]:
    """The lowest-scored prompts that did not fully pass, worst first, with the grader's reason."""
    failing = [
        record
        for record in run.of_kind("prompt")
        if record.get("passed") is False or _prompt_score(record) < 1
    ]
    failing.sort(key=lambda record: (bool(record.get("passed")), _prompt_score(record)))
    return failing[:count]


def _load_key(record: Mapping[str, Any]) -> str:
    scenario = str(record.get("scenario") or "load")
    return re.sub(r"[^\w@-]+", "-", scenario).strip("-") or "load"


@dataclass
class LoadSummary:
    """A load scenario on one model: its samples pooled over the records of that scenario."""

    model: str
    scenario: str
    samples: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0
    client_cpu_s: float = 0.0
    client_saturated: bool = False

    @property
    def ok(self) -> list[dict[str, Any]]:
        return [sample for sample in self.samples if sample.get("outcome") in SUCCESS_OUTCOMES]

    @property
    def errors_by_kind(self) -> Counter[str]:
        kinds: Counter[str] = Counter()
        for sample in self.samples:
            outcome = str(sample.get("outcome"))
            if outcome in SUCCESS_OUTCOMES:
                continue
            error = str(sample.get("error") or "")
            kinds[error.split(":", 1)[0][:40] if outcome == "error" and error else outcome] += 1
        return kinds

    def column(self, key: str) -> np.ndarray:
        """One timing of the successful samples, skipping the ones that lack it."""
        return np.array([float(s[key]) for s in self.ok if isinstance(s.get(key), (int, float))])

    def inter_token(self) -> np.ndarray:
        return np.array(
            [float(gap) for sample in self.ok for gap in sample.get("itl_s") or [] if gap is not None]
        )

    def metrics(self) -> list[Metric]:
        """TTFT, ITL and e2e percentiles, tokens/s, requests/s and error rate, each with its samples."""
        prefix = f"load.{self.scenario}."
        found: list[Metric] = []
        for family, values in (
            ("ttft", self.column("ttft_s")),
            ("itl", self.inter_token()),
            ("e2e", self.column("e2e_s")),
        ):
            if len(values) == 0:
                continue
            for q in PERCENTILES:
                samples = percentile_samples(values, q)
                found.append(
                    Metric(self.model, f"{prefix}{family}_p{q}", samples.value(), "s", "lower", samples)
                )
        ok = self.ok
        busy = np.array([float(s.get("e2e_s") or 0.0) for s in ok])
        if self.wall_s > 0 and len(ok) and busy.sum() > 0:
            scale = float(busy.sum()) / self.wall_s  # a resampled run's wall time scales with its busy time
            tokens = np.array([float(s.get("output_tokens") or 0) for s in ok])
            for family, numerator, unit in (
                ("tokens_per_s", tokens, "tok/s"),
                ("requests_per_s", np.ones(len(ok)), "req/s"),
            ):
                samples = Samples(np.column_stack([numerator, busy]), ratio_statistic(0, 1, scale))
                found.append(Metric(self.model, prefix + family, samples.value(), unit, "higher", samples))
        if self.samples:
            failed = np.array([0.0 if s.get("outcome") in SUCCESS_OUTCOMES else 1.0 for s in self.samples])
            samples = Samples(failed, mean_statistic(), proportion=True)
            found.append(
                Metric(self.model, prefix + "error_rate", samples.value(), "fraction", "lower", samples)
            )
        if self.client_saturated:  # the error rate counts outcomes, not times: it stays trusted
            found = [m if m.family == "error_rate" else replace(m, trusted=False) for m in found]
        return found


def summarise_load(run: RunRecord) -> list[LoadSummary]:
    """Per (model, scenario): pooled samples, wall time and client CPU time."""
    summaries: dict[tuple[str, str], LoadSummary] = {}
    for record in run.of_kind("load"):
        key = (str(record.get("model") or "-"), _load_key(record))
        summary = summaries.setdefault(key, LoadSummary(*key))
        summary.samples.extend(s for s in record.get("samples") or [] if isinstance(s, dict))
        summary.client_saturated |= bool((record.get("summary") or {}).get("client_saturated"))
        summary.wall_s += float(record.get("wall_s") or 0.0)
        summary.client_cpu_s += float(record.get("client_cpu_s") or 0.0)
    return sorted(summaries.values(), key=lambda item: (item.model, item.scenario))


def _rss_bytes(sample: Any) -> float | None:
    if isinstance(sample, dict):
        sample = next((sample[key] for key in ("rss_bytes", "bytes", "rss", "value") if key in sample), None)
    return float(sample) if isinstance(sample, (int, float)) and not isinstance(sample, bool) else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@dataclass
class MemorySummary:
    """Memory figures of one model in one memory scenario (the largest over its records)."""

    model: str
    scenario: str | None
    ps_size: float | None = None
    ps_context_length: int | None = None
    estimate_bytes: float | None = None
    rss_peak: float | None = None
    rss_growth: float | None = None
    unload_freed: bool | None = None

    def metrics(self) -> list[Metric]:
        prefix = f"memory.{self.scenario}." if self.scenario else "memory."
        return [
            Metric(self.model, prefix + name, value, "bytes", "lower")
            for name, value in (
                ("ps_size", self.ps_size),
                ("rss_peak", self.rss_peak),
                ("rss_growth", self.rss_growth),
            )
            if value is not None
        ]


def _max(*values: float | None) -> float | None:
    present = [value for value in values if value is not None]
    return max(present) if present else None


def summarise_memory(run: RunRecord) -> list[MemorySummary]:
    """Per (model, scenario): /api/ps size, the estimate, RSS peak and growth, whether unloading freed it.

    The record's own `rss_peak_bytes` / `rss_growth_bytes` (growth of RssAnon + VmSwap, by harness.memory)
    are used when present; otherwise they are computed from `rss_samples` (numbers or dicts with rss_bytes).
    """
    summaries: dict[tuple[str, str | None], MemorySummary] = {}
    for record in run.of_kind("memory"):
        model, scenario = str(record.get("model") or "-"), record.get("scenario")
        key = (model, _load_key({"scenario": scenario}) if scenario else None)
        item = summaries.setdefault(key, MemorySummary(*key))
        rss = [value for value in map(_rss_bytes, record.get("rss_samples") or []) if value is not None]
        peak = _number(record.get("rss_peak_bytes"))
        growth = _number(record.get("rss_growth_bytes"))
        item.ps_size = _max(item.ps_size, _number(record.get("ps_size")))
        item.ps_context_length = record.get("ps_context_length") or item.ps_context_length
        item.estimate_bytes = _max(item.estimate_bytes, _number(record.get("estimate_bytes")))
        item.rss_peak = _max(item.rss_peak, peak if peak is not None else max(rss) if rss else None)
        if growth is None and len(rss) > 1:
            growth = rss[-1] - rss[0]
        item.rss_growth = _max(item.rss_growth, growth)
        if record.get("unload_freed") is not None:
            item.unload_freed = bool(record["unload_freed"]) and item.unload_freed is not False
    return [summaries[key] for key in sorted(summaries, key=lambda key: (key[0], key[1] or ""))]


def model_identity_key(model: Mapping[str, Any]) -> str:
    """A run.json model entry as `<label>@<identity digest>`: the same in every run of the same inputs.

    The identity is what the user gave (GGUF sha256, profile and tensor type, the Modelfile's parameters and
    template digest: `harness.modelfile.identity`), never the server's digest, which changes with the server's
    version and kind. Entries written before the identity was recorded get it from their other fields.
    """
    identity = model.get("identity")
    if not isinstance(identity, Mapping) or not identity:
        identity = model_identity(
            gguf_sha256=model.get("gguf_sha256"),
            profile=model.get("profile"),
            tensor_type=model.get("tensor_type"),
            quantize=model.get("quantize"),
            modelfile=model.get("modelfile"),
        )
    label = identity.get("profile") or (Path(model["gguf_path"]).stem if model.get("gguf_path") else None)
    label = label or model.get("name")
    if identity.get("profile") and identity.get("tensor_type"):
        label = f"{label}-{identity['tensor_type']}"
    if not identity.get("gguf_sha256") and model.get("digest"):  # an unknown file: the server's word only
        return f"{label}@{str(model['digest'])[:12]}"
    return f"{label}@{identity_digest(identity)[:12]}"


def model_identities(run: RunRecord) -> dict[str, str]:
    """Model name -> its identity key (`model_identity_key`): the suites name fixture models per run
    (`harness-oracle-<spec>-<run>`), and servers compute their own digests, so runs are matched on what was
    tested, whatever the server."""
    return {
        str(model["name"]): model_identity_key(model)
        for model in run.meta.get("models") or []
        if isinstance(model, Mapping) and model.get("name")
    }


def identity_of(run: RunRecord, model: str) -> str:
    """The identity of one model name of `run` (see `model_identities`): the same in every run of it."""
    return model_identities(run).get(model, model)


def load_by_identity(run: RunRecord) -> dict[tuple[str, str], LoadSummary]:
    """The run's load summaries keyed (model identity, scenario), to match them with another run's."""
    identities = model_identities(run)
    return {(identities.get(load.model, load.model), load.scenario): load for load in summarise_load(run)}


def collect_metrics(run: RunRecord) -> dict[tuple[str, str], Metric]:
    """Every comparable metric of a run, keyed (model identity, metric name): see `model_identities`."""
    metrics: list[Metric] = []
    for suite in summarise_suites(run):
        for family in ("accuracy_strict", "accuracy_flexible"):
            value = getattr(suite, family)
            if isinstance(value, (int, float)):
                metrics.append(
                    Metric(
                        suite.model,
                        f"suite.{suite.suite}.{family}",
                        float(value),
                        "fraction",
                        "higher",
                        accuracy_samples(suite, family),
                    )
                )
    for load in summarise_load(run):
        metrics.extend(load.metrics())
    for memory in summarise_memory(run):
        metrics.extend(memory.metrics())
    identities = model_identities(run)
    return {(identities.get(metric.model, metric.model), metric.name): metric for metric in metrics}


# ------------------------------------------------------------------------------------------ history


@dataclass(frozen=True)
class HistoryRow:
    run: RunRecord
    values: dict[tuple[str, str], Metric]


def metric_history(runs: Iterable[RunRecord], pattern: str) -> tuple[list[tuple[str, str]], list[HistoryRow]]:
    """One metric (a full name, a family or a glob pattern) across runs: the matching keys, a row per run.

    Runs without any matching metric are left out.
    """
    keys: list[tuple[str, str]] = []
    rows: list[HistoryRow] = []
    for run in runs:
        matching = {
            key: metric
            for key, metric in collect_metrics(run).items()
            if fnmatchcase(metric.name, pattern) or fnmatchcase(metric.family, pattern)
        }
        if not matching:
            continue
        keys.extend(key for key in matching if key not in keys)
        rows.append(HistoryRow(run, matching))
    return keys, rows


def metric_names(runs: Iterable[RunRecord]) -> list[str]:
    """The metric families found in `runs`, for the hint when --history names none."""
    return sorted({metric.family for run in runs for metric in collect_metrics(run).values()})
