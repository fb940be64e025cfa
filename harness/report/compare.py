"""Run against baseline: the choice of a baseline run, the comparison of every metric with its threshold and
verdict, and the `RunReport` that holds all a report shows (summaries, hosts and matrix computed once)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harness.config import (
    DEFAULT_BASELINE_MATCH,
    ConfigError,
    HarnessConfig,
    Threshold,
    find_threshold,
)
from harness.errors import RunRecordError
from harness.report.controls import ExactOutput, compare_exact_outputs
from harness.report.hosts import HostRow, compare_hosts, host_notes
from harness.report.matrix import MatrixSummary, summarise_matrix
from harness.report.metrics import (
    LoadSummary,
    MemorySummary,
    Metric,
    SuiteSummary,
    collect_metrics,
    model_identities,
    summarise_load,
    summarise_memory,
    summarise_suites,
    worst_prompts,
)
from harness.report.prompts import FlippedPrompt, flipped_prompts, prompts_by_key
from harness.report.stats import Direction, Judgement, Verdict, judge
from harness.runs import RunRecord, hardware_key, list_runs, load_run
from harness.units import noise_floor

# ------------------------------------------------------------------------------------------ baseline


def model_keys(run: RunRecord) -> frozenset[str]:
    """The identities of the models a run tested (see `model_identities`): the same on any server."""
    return frozenset(model_identities(run).values())


def baseline_keys(config: HarnessConfig) -> tuple[str, ...]:
    """The machine keys a baseline must share with the run: `[report] baseline_match`, else the hardware
    class (CPU model, cores, RAM in whole GiB, GPU names), never the host name unless asked for."""
    return config.baseline_match if config.baseline_match is not None else DEFAULT_BASELINE_MATCH


def machine_key(run: RunRecord, keys: tuple[str, ...]) -> dict[str, Any]:
    """The run's values of the baseline keys (harness.runs.hardware_key)."""
    return hardware_key(run.meta.get("machine") or {}, keys)


def comparable(
    run: RunRecord, candidate: RunRecord, keys: tuple[str, ...] = DEFAULT_BASELINE_MATCH
) -> list[str]:
    """Why `candidate` is not a like-for-like baseline for `run` (empty when it is): other models (by
    identity, whatever the server), engine kind, or machine (`keys`)."""
    differences = []
    if model_keys(candidate) != model_keys(run):
        differences.append("the models differ (other GGUF files, types, parameters or templates)")
    if candidate.engine_kind != run.engine_kind:
        differences.append(f"engine kind differs ({candidate.engine_kind} vs {run.engine_kind})")
    ours, theirs = machine_key(run, keys), machine_key(candidate, keys)
    differing = [key for key in keys if ours[key] != theirs[key]]
    if differing:
        listed = ", ".join(f"{key} {theirs[key]!r} vs {ours[key]!r}" for key in differing)
        differences.append(f"other machine ({listed})")
    return differences


def matched_on(run: RunRecord, keys: tuple[str, ...]) -> str:
    """Which keys a baseline matched, for the report: models, engine and each machine key with its value."""
    machine = ", ".join(
        f"{key} {value if value is not None else 'none'}" for key, value in machine_key(run, keys).items()
    )
    return f"same models, engine kind {run.engine_kind}" + (f", {machine}" if machine else ", any machine")


def find_baseline(
    run: RunRecord, reports_dir: str | os.PathLike[str], keys: tuple[str, ...] = DEFAULT_BASELINE_MATCH
) -> RunRecord | None:
    """The newest complete run started before `run` with the same models (by identity), engine kind and
    machine (`keys`: see `baseline_keys`)."""
    candidates = [
        candidate
        for candidate in list_runs(reports_dir)
        if candidate.complete
        and candidate.run_id != run.run_id
        and (candidate.started_at, candidate.run_id) < (run.started_at, run.run_id)
        and not comparable(run, candidate, keys)
    ]
    return load_run(candidates[-1].path) if candidates else None


def server_version(run: RunRecord) -> str | None:
    """The server version a run recorded (None when unknown)."""
    version = (run.meta.get("server") or {}).get("version")
    return str(version) if version else None


def on_version(version: str | None, wanted: str) -> bool:
    """Whether a server `version` is `wanted`: equal, or equal once build metadata (`+...`) is dropped, so
    0.33.0 names both Ollama 0.33.0 and the embedded engine's 0.33.0+harness.X."""
    return version is not None and (version == wanted or version.split("+", 1)[0] == wanted)


def find_run_on_version(
    run: RunRecord, reports_dir: str | os.PathLike[str], version: str
) -> RunRecord | None:
    """The newest complete run (other than `run`) of the same models on server version `version`."""
    candidates = [
        candidate
        for candidate in list_runs(reports_dir)
        if candidate.complete
        and candidate.run_id != run.run_id
        and on_version(server_version(candidate), version)
        and model_keys(candidate) == model_keys(run)
    ]
    return load_run(candidates[-1].path) if candidates else None


@dataclass(frozen=True)
class RunDifference:
    """One way two compared runs differ (what the comparison then measures): baseline and current value."""

    aspect: str
    baseline: str
    current: str


def _hostname(run: RunRecord) -> str | None:
    return (run.meta.get("machine") or {}).get("hostname")


def _hardware(run: RunRecord) -> str:
    machine = run.meta.get("machine") or {}
    gpu = machine.get("gpu") or "none"
    return f"{machine.get('cpu') or '?'}, {machine.get('cores') or '?'} cores, GPU: {gpu}"


def run_differences(baseline: RunRecord, run: RunRecord) -> list[RunDifference]:
    """What differs between the two runs' servers and machines: server version, engine kind, server host,
    machine name, hardware; the report shows it so that a reader knows what the comparison measures."""
    server, base_server = run.meta.get("server") or {}, baseline.meta.get("server") or {}
    aspects = [
        ("server version", server_version(baseline), server_version(run)),
        ("engine kind", base_server.get("engine_kind"), server.get("engine_kind")),
        ("server host", base_server.get("host"), server.get("host")),
        ("machine name", _hostname(baseline), _hostname(run)),
    ]
    if baseline.fingerprint != run.fingerprint:
        aspects.append(("hardware", _hardware(baseline), _hardware(run)))
    return [
        RunDifference(aspect, str(before or "?"), str(after or "?"))
        for aspect, before, after in aspects
        if before != after
    ]


def resolve_run(argument: str, reports_dir: str | os.PathLike[str] | None) -> Path:
    """A RUN argument as a folder: a path (a run folder, `reports/latest`) or a run id in reports_dir."""
    given = Path(argument)
    if given.exists() or reports_dir is None:
        return given
    in_reports = Path(reports_dir) / argument
    if in_reports.exists():
        return in_reports
    raise RunRecordError(
        f"no run folder {argument!r} (looked at {given} and {in_reports})",
        "pass a run folder or a run id; `harness report --list` lists the runs",
    )


# ------------------------------------------------------------------------------------------ comparison


@dataclass(frozen=True)
class MetricComparison:
    """One metric side by side: baseline, current, the judgement and the threshold that applied."""

    model: str
    name: str
    unit: str
    better: Direction
    baseline: float | None
    current: float | None
    judgement: Judgement
    threshold_key: str
    threshold: Threshold

    @property
    def verdict(self) -> Verdict:
        return self.judgement.verdict


# Verdicts that claim a real move; a metric measured by a saturated load client is judged "noise" instead.
_MOVES = ("better", "REGRESSED")


def compare_metrics(
    baseline: Mapping[tuple[str, str], Metric],
    current: Mapping[tuple[str, str], Metric],
    config: HarnessConfig,
    overrides: Mapping[str, Threshold] | None = None,
) -> list[MetricComparison]:
    """Judge every metric present in either run (in the current run's order, then the ones that are gone)."""
    layers = config.threshold_layers(overrides)
    rows = []
    for key in [*current, *(key for key in baseline if key not in current)]:
        base, cur = baseline.get(key), current.get(key)
        metric = cur or base
        assert metric is not None
        threshold_key, threshold = find_threshold(layers, metric.name, metric.family)
        judgement = judge(
            base.value if base else None,
            cur.value if cur else None,
            metric.better,
            threshold,
            baseline_samples=base.samples if base else None,
            current_samples=cur.samples if cur else None,
            resamples=config.bootstrap_resamples,
            confidence=config.confidence,
            seed=config.seed,
            floor=noise_floor(metric.unit),
        )
        if not (metric.trusted and (base is None or base.trusted)) and judgement.verdict in _MOVES:
            judgement = replace(judgement, verdict="noise")
        rows.append(
            MetricComparison(
                key[0],  # the model's identity, the same in both runs (its name may differ)
                metric.name,
                metric.unit,
                metric.better,
                base.value if base else None,
                cur.value if cur else None,
                judgement,
                threshold_key,
                threshold,
            )
        )
    return rows


def check_threshold_signs(overrides: Mapping[str, Threshold], metrics: Iterable[Metric]) -> None:
    """Reject a command-line threshold whose sign contradicts the metrics it names (e.g. ttft_p95=-30%)."""
    for key, threshold in overrides.items():
        for metric in metrics:
            if key not in (metric.name, metric.family):
                continue
            expected = "+" if metric.better == "lower" else "-"
            if threshold.sign and threshold.sign != expected:
                raise ConfigError(
                    f"threshold {key}={threshold.text}: {metric.family} gets worse when it "
                    f"{'rises' if expected == '+' else 'falls'}",
                    f"write {key}={expected}{threshold.text.lstrip('+-')} (or leave the sign out)",
                )


def _offered_loads(run: RunRecord) -> dict[tuple[str, str], float]:
    identities = model_identities(run)
    return {
        (
            identities.get(str(record.get("model")), str(record.get("model"))),
            str(record.get("scenario")),
        ): float(record["rate"])
        for record in run.of_kind("load")
        if isinstance(record.get("rate"), (int, float))
    }


def offered_load_changes(baseline: RunRecord, run: RunRecord) -> dict[tuple[str, str], tuple[float, float]]:
    """(model identity, scenario) -> (baseline rate, current rate) for each open-loop scenario that offered
    another rate than in the baseline: the suites cap it at half the capacity they measure, so a slower
    server gets a lighter load, and the two runs' timings of that scenario measure different loads."""
    before, after = _offered_loads(baseline), _offered_loads(run)
    return {
        key: (before[key], rate)
        for key, rate in after.items()
        if key in before and abs(before[key] - rate) > 1e-9 * max(rate, 1.0)
    }


def unjudged_timings(
    metrics: Mapping[tuple[str, str], Metric], changes: Mapping[tuple[str, str], tuple[float, float]]
) -> dict[tuple[str, str], Metric]:
    """`metrics` with the timings of the scenarios in `changes` marked untrusted (judged noise at most): the
    error rate counts outcomes, and stays judged."""
    return {
        key: replace(metric, trusted=False)
        if metric.name.startswith("load.")
        and (key[0], metric.name.split(".")[1]) in changes
        and metric.family != "error_rate"
        else metric
        for key, metric in metrics.items()
    }


# ------------------------------------------------------------------------------------------ the report


@dataclass
class RunReport:
    """Everything the report shows about one run, and its exit status."""

    run: RunRecord
    suites: list[SuiteSummary]
    worst: list[dict[str, Any]]
    load: list[LoadSummary]
    memory: list[MemorySummary]
    baseline: RunRecord | None = None
    baseline_note: str = ""
    baseline_match: str = ""  # what the baseline matched on (models, engine, machine keys and values)
    missing_baseline: str = ""  # --require-baseline and none was found: why (a failure)
    hosts: list[HostRow] = field(default_factory=list)  # hosts side by side (a multi-host run)
    matrix: MatrixSummary | None = None  # the quantization matrix (a --matrix run)
    comparison: list[MetricComparison] = field(default_factory=list)
    differences: list[RunDifference] = field(default_factory=list)  # what differs from the baseline's run
    exact: list[ExactOutput] = field(default_factory=list)  # exact-output controls against the baseline
    flipped: list[FlippedPrompt] = field(default_factory=list)  # graded otherwise than in the baseline
    prompts_compared: int = 0  # prompts asked in both runs (the flipped ones among them)
    notes: list[str] = field(default_factory=list)  # warnings about the comparison, after the run's own

    @property
    def warnings(self) -> list[str]:
        return [*self.run.warnings, *self.notes]

    @property
    def failures(self) -> list[str]:
        """Why the report exits 1: failed tests or suites, regressions, an incomplete run."""
        reasons = []
        for suite in self.suites:
            if suite.failed:
                reasons.append(f"{suite.suite} failed on {suite.model}")
        for row in self.comparison:
            if row.verdict == "REGRESSED":
                reasons.append(f"{row.name} REGRESSED on {row.model}")
        for control in self.exact:
            if control.verdict == "SERVER CHANGED":
                reasons.append(
                    f"the server changed the exact output of {control.control} on {control.model} "
                    "(a finding about the server, not the model)"
                )
        if not self.run.complete:
            reasons.append(f"the run is {self.run.status}")
        for record in self.run.of_kind("load"):
            if record.get("failed_requests"):  # `harness load`: requests that were not served
                failed = "; ".join(record["failed_requests"])
                reasons.append(f"load {record.get('scenario')} on {record.get('model')}: {failed}")
        if self.missing_baseline:
            reasons.append("no baseline (--require-baseline)")
        return reasons

    @property
    def exit_status(self) -> int:
        return 1 if self.failures else 0


def build_report(
    run: RunRecord,
    *,
    config: HarnessConfig,
    baseline: RunRecord | None = None,
    baseline_note: str = "",
    overrides: Mapping[str, Threshold] | None = None,
    worst_count: int = 5,
) -> RunReport:
    """Summarise `run`, and compare it with `baseline` when there is one."""
    report = RunReport(
        run=run,
        suites=summarise_suites(run),
        worst=worst_prompts(run, worst_count),
        load=summarise_load(run),
        memory=summarise_memory(run),
        hosts=compare_hosts(run),
        matrix=summarise_matrix(run),
        baseline=baseline,
        baseline_note=baseline_note,
    )
    for record in run.of_kind("load"):
        summary = record.get("summary") or {}
        if summary.get("client_saturated"):
            reasons = ", ".join(summary.get("saturation_reasons") or []) or "no reason given"
            report.notes.append(
                f"load scenario {record.get('scenario')} on {record.get('model')}: the load client was "
                f"saturated ({reasons}); its timings partly measure the client"
            )
    report.notes.extend(host_notes(report.hosts))
    current = collect_metrics(run)
    if overrides:
        check_threshold_signs(overrides, current.values())
    if baseline is not None:
        keys = baseline_keys(config)
        report.differences = run_differences(baseline, run)
        if not comparable(run, baseline, keys):
            report.baseline_match = matched_on(run, keys)
        if model_keys(baseline) != model_keys(run):
            report.notes.append(
                f"baseline {baseline.run_id} tested other models (other GGUF files, types, parameters or "
                "templates): only the metrics of the models both runs tested are compared"
            )
        report.exact = compare_exact_outputs(baseline, run)
        changes = offered_load_changes(baseline, run)
        report.notes.extend(
            f"load scenario {scenario} on {model} offered {before:.3g} req/s in the baseline and {after:.3g} "
            "req/s now: its timings measure different loads, so they are not judged (noise at most)"
            for (model, scenario), (before, after) in changes.items()
        )
        report.comparison = compare_metrics(
            collect_metrics(baseline), unjudged_timings(current, changes), config, overrides
        )
        report.flipped = flipped_prompts(run, baseline)
        report.prompts_compared = len(prompts_by_key(run).keys() & prompts_by_key(baseline).keys())
    return report
