"""Hosts side by side: a run on several Ollama hosts, each host's metrics on the same model digest, and the
host that is slower, worse or uses more memory than the others.

Records carry `"host"` (harness.plugin); a run with records from two hosts or more is split by host and each
part goes through `harness.report's collect_metrics`. Metrics are matched across hosts by the model's digest
(run.json `hosts.<host>.models`, else the top-level `models` with their host), falling back to the model
name. A host is flagged when its value is worse than the best host's by more than `HOST_TOLERANCE`
(relative) and by more than its unit's `host_floor` (harness.units), or, for failed tests, when it failed
more tests than the best host. Percentiles p90/p95 are left out of the table (p50 and p99 are shown).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.report.metrics import FAILED_TEST_OUTCOMES, Metric, collect_metrics
from harness.runs import RunRecord
from harness.units import format_value, host_floor

HOST_TOLERANCE = 0.2
HIDDEN_SUFFIXES = ("_p90", "_p95")  # left out of the side-by-side table: p50 and p99 say enough
FAILED_TESTS_METRIC = "tests.failed"


@dataclass(frozen=True)
class HostRow:
    """One metric of one model (by digest) on every host that has it, and the hosts flagged on it."""

    model: str
    digest: str | None
    metric: str
    unit: str
    better: str
    values: dict[str, float | None]
    flagged: dict[str, str] = field(default_factory=dict)  # host -> "slower" / "worse" / "more memory"


def hosts_of(run: RunRecord) -> list[str]:
    """The hosts the run's records name, in order of first appearance."""
    return list(dict.fromkeys(str(r["host"]) for r in run.results if r.get("host")))


def _digests(run: RunRecord) -> dict[tuple[str, str], str]:
    found: dict[tuple[str, str], str] = {}
    for host, entry in (run.meta.get("hosts") or {}).items():
        for model in entry.get("models") or []:
            if model.get("digest"):
                found[(host, str(model.get("name")))] = str(model["digest"])
    for model in run.meta.get("models") or []:
        if model.get("digest") and model.get("host"):
            found.setdefault((str(model["host"]), str(model.get("name"))), str(model["digest"]))
    return found


def _part(run: RunRecord, host: str) -> RunRecord:
    results = [record for record in run.results if record.get("host") == host]
    return RunRecord(path=run.path, meta=run.meta, results=results, status=run.status)


def _failed_tests(part: RunRecord) -> dict[str, float]:
    failed: dict[str, float] = {}
    for record in part.of_kind("test"):
        model = str(record.get("model") or "-")
        failed[model] = failed.get(model, 0.0) + (record.get("outcome") in FAILED_TEST_OUTCOMES)
    return failed


def _word(metric: Metric) -> str:
    if metric.unit == "bytes":
        return "more memory"
    if metric.unit in ("s", "tok/s", "req/s"):
        return "slower"
    return "worse"


def compare_hosts(run: RunRecord, tolerance: float = HOST_TOLERANCE) -> list[HostRow]:
    """Every metric found on two hosts or more, side by side (empty for a run on one host)."""
    hosts = hosts_of(run)
    if len(hosts) < 2:
        return []
    digests = _digests(run)
    table: dict[tuple[str, str], dict[str, Metric]] = {}
    names: dict[tuple[str, str], tuple[str, str | None]] = {}
    for host in hosts:
        part = _part(run, host)
        metrics = list(collect_metrics(part).values())
        metrics += [
            Metric(model, FAILED_TESTS_METRIC, count, "tests", "lower")
            for model, count in _failed_tests(part).items()
        ]
        for metric in metrics:
            digest = digests.get((host, metric.model))
            key = (digest or metric.model, metric.name)
            table.setdefault(key, {})[host] = metric
            names.setdefault(key, (metric.model, digest))
    rows = []
    for key, by_host in table.items():
        if len(by_host) < 2 or key[1].endswith(HIDDEN_SUFFIXES):
            continue
        metric = next(iter(by_host.values()))
        values = {host: by_host[host].value if host in by_host else None for host in hosts}
        present = {host: value for host, value in values.items() if value is not None}
        flagged: dict[str, str] = {}
        if len(present) >= 2:
            lower = metric.better == "lower"
            best = min(present.values()) if lower else max(present.values())
            for host, value in present.items():
                floor = host_floor(metric.unit)
                if metric.unit == "tests":
                    worse = value > best
                elif lower:
                    worse = value > best * (1 + tolerance) and value - best > floor
                else:
                    worse = value < best * (1 - tolerance) and best - value > floor
                if worse:
                    flagged[host] = _word(metric)
        model, digest = names[key]
        rows.append(HostRow(model, digest, key[1], metric.unit, metric.better, values, flagged))
    return sorted(rows, key=lambda row: (row.model, row.metric))


def host_notes(rows: list[HostRow]) -> list[str]:
    """One warning per flagged host and metric, for the report's warnings."""
    notes = []
    for row in rows:
        for host, word in row.flagged.items():
            notes.append(f"host {host} is {word} than the others on {row.model}: {row.metric}")
    return notes


def hosts_table(rows: list[HostRow]) -> tuple[list[str], list[list[Any]]]:
    """(headers, rows) for the report: model, metric, one column per host (a flagged value is marked)."""
    hosts = list(dict.fromkeys(host for row in rows for host in row.values))
    table = []
    for row in rows:
        cells = []
        for host in hosts:
            value = row.values.get(host)
            text = (
                (f"{value:g}" if value is not None else "-")
                if row.unit == "tests"
                else format_value(value, row.unit)
            )
            cells.append(f"{text} ({row.flagged[host].upper()})" if host in row.flagged else text)
        table.append([row.model, row.metric, *cells])
    return ["model", "metric", *hosts], table


def hosts_to_json(rows: list[HostRow]) -> list[dict[str, Any]]:
    return [
        {
            "model": row.model,
            "digest": row.digest,
            "metric": row.metric,
            "unit": row.unit,
            "better": row.better,
            "values": row.values,
            "flagged": row.flagged,
        }
        for row in rows
    ]
