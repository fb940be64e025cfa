"""Rendering of reports, run lists and metric histories: terminal tables, Markdown (for a CI job summary) and
JSON. Tables are drawn by tabulate; the content comes from `harness.report.metrics`.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from tabulate import tabulate

from harness.errors import RunRecordError
from harness.report.compare import MetricComparison, RunReport
from harness.report.hosts import hosts_table, hosts_to_json
from harness.report.matrix import matrix_table, matrix_to_json
from harness.report.metrics import SHOWN_PERCENTILES, HistoryRow, SuiteSummary, model_identity_key
from harness.runs import RunRecord
from harness.server_time import server_seconds
from harness.units import format_signed, format_value

FORMATS = ("text", "markdown", "json")
_TABLE_FORMATS = {"text": "simple", "markdown": "github"}


# ------------------------------------------------------------------------------------------ values


def format_delta(row: MetricComparison) -> str:
    """The change: relative when the threshold is, else absolute (percentage points for fractions)."""
    judgement = row.judgement
    if judgement.delta is None:
        return "-"
    if row.threshold.relative and judgement.relative_delta is not None:
        return f"{judgement.relative_delta * 100:+.1f} %"
    return format_signed(judgement.delta, row.unit)


def format_interval(row: MetricComparison) -> str:
    """The bootstrap interval of the change, when the metric has samples."""
    interval = row.judgement.interval
    if interval is None:
        return ""
    return f"[{format_signed(interval[0], row.unit)}, {format_signed(interval[1], row.unit)}]"


def _short(text: Any, width: int = 60) -> str:
    flat = " ".join(str(text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


# ------------------------------------------------------------------------------------------ report


def _when(started: Any, finished: Any) -> str:
    """Start time and duration from run.json's ISO times (shown as stored when they do not parse)."""
    try:
        start = dt.datetime.fromisoformat(str(started))
    except ValueError:
        return f"{started} → {finished or 'not finished'}"
    text = f"{start:%Y-%m-%d %H:%M:%S} UTC"
    try:
        return f"{text}, took {(dt.datetime.fromisoformat(str(finished)) - start).total_seconds():.1f} s"
    except ValueError:
        return f"{text}, not finished"


def time_split(run: RunRecord) -> dict[str, float] | None:
    """How the session's time divides between the server (its own durations: harness.server_time) and the
    harness, in seconds; None when the run has no request records (an older run) or no finish time, or when
    several hosts served it (their requests overlap: see the Hosts table)."""
    if not run.of_kind("requests") or run.meta.get("hosts"):
        return None
    try:
        started = dt.datetime.fromisoformat(str(run.meta.get("started_at")))
        session_s = (dt.datetime.fromisoformat(str(run.meta.get("finished_at"))) - started).total_seconds()
    except ValueError:
        return None
    seconds = server_seconds([*run.of_kind("requests"), *run.of_kind("load")])
    server_s = min(seconds["busy_s"] + seconds["load_s"], session_s)
    return {"session_s": session_s, "server_s": server_s, "harness_s": session_s - server_s}


def _time_text(split: dict[str, float]) -> str:
    share = split["harness_s"] / split["session_s"] * 100 if split["session_s"] > 0 else 0.0
    return (
        f"{split['server_s']:.1f} s inside the server (its own durations), {split['harness_s']:.1f} s in the "
        f"harness ({share:.0f} % of the session)"
    )


def header_rows(run: RunRecord) -> list[tuple[str, str]]:
    """When, where, on what and with which harness the run ran."""
    meta = run.meta
    server = meta.get("server") or {}
    machine = meta.get("machine") or {}
    harness = meta.get("harness") or {}
    models = meta.get("models") or []
    rows = [
        ("run", f"{run.run_id} ({run.status})"),
        ("when", _when(meta.get("started_at"), meta.get("finished_at"))),
        (
            "host",
            f"{machine.get('hostname', '-')} ({machine.get('cpu', '-')}, {machine.get('cores', '-')} cores, "
            f"GPU: {machine.get('gpu') or 'none'})",
        ),
        (
            "server",
            f"{server.get('host') or '-'}, version {server.get('version') or '-'}, "
            f"engine {server.get('engine_kind') or '-'}",
        ),
        ("harness", f"{harness.get('version', '-')} at commit {(harness.get('commit') or 'unknown')[:12]}"),
    ]
    split = time_split(run)
    if split is not None:
        rows.insert(2, ("time", _time_text(split)))
    for model in models:
        details = ", ".join(f"{key} {model[key]}" for key in ("profile", "tensor_type") if model.get(key))
        digest = str(model.get("digest") or "no digest")
        rows.append(
            (
                "model",
                f"{model.get('name', '-')} {digest[:19]}"
                + (f" ({details})" if details else "")
                + f", identity {model_identity_key(model)}",
            )
        )
    return rows


def format_accuracy(value: float | None, interval: tuple[float, float] | None) -> str:
    """`accuracy [low, high]` (the 95 % Wilson interval), or the accuracy alone when there is none."""
    text = format_value(value, "fraction")
    if value is None or interval is None:
        return text
    return f"{text} [{format_value(interval[0], 'fraction')}, {format_value(interval[1], 'fraction')}]"


def _cut_off(suite: SuiteSummary) -> str:
    if suite.cut_off is None:
        return "-"
    return f"{suite.cut_off} at {suite.num_predict}" if suite.cut_off else "0"


def _suite_result(suite: SuiteSummary) -> str:
    if suite.failed:
        return "FAIL (within noise)" if suite.verdict == "below, within noise" else "FAIL"
    if suite.passed is False:
        return "fails, as expected"
    if suite.passed is None and not suite.tests["passed"]:
        return "-"
    return "pass"


Section = tuple[str, list[str], list[list[Any]]]  # (title, headers, rows)


def _run_section(report: RunReport) -> Section | None:
    return ("Run", ["", ""], [list(row) for row in header_rows(report.run)])


def _suites_section(report: RunReport) -> Section | None:
    if not report.suites:
        return None
    headers = ["model", "suite", "passed", "failed", "skipped", "xfailed", "n", "strict [95 % interval]"]
    headers += ["flexible", "cut off"]
    rows = [
        [
            s.model,
            s.suite,
            s.tests["passed"],
            s.tests["failed"] + s.tests["error"],
            s.tests["skipped"],
            s.tests["xfailed"],
            s.n if s.n is not None else "-",
            format_accuracy(s.accuracy_strict, s.interval),
            format_value(s.accuracy_flexible, "fraction"),
            _cut_off(s),
            format_value(s.threshold, "fraction"),
            _suite_result(s),
        ]
        for s in report.suites
    ]
    return ("Suites", [*headers, "threshold", "result"], rows)


def _findings_section(report: RunReport) -> Section | None:
    """What the run found about the server itself: a broken file that killed it, the tests left unrun."""
    findings = report.run.of_kind("finding")
    if not findings:
        return None
    rows = [[f.get("finding", "-"), f.get("host", "-"), _short(f.get("text"), 110)] for f in findings]
    return ("Findings", ["finding", "host", "what"], rows)


def _worst_section(report: RunReport) -> Section | None:
    if not report.worst:
        return None
    rows = [
        [
            p.get("model", "-"),
            p.get("suite", "-"),
            p.get("item_id", "-"),
            p.get("score_strict", "-"),
            p.get("score_flexible", "-"),
            _short(p.get("reason"), 50),
            _short(p.get("response"), 40),
        ]
        for p in report.worst
    ]
    return ("Worst prompts", ["model", "suite", "item", "strict", "flexible", "reason", "response"], rows)


def _latency_section(report: RunReport) -> Section | None:
    if not report.load:
        return None
    rows = []
    for load in report.load:
        for label, values in (
            ("TTFT", load.column("ttft_s")),
            ("ITL", load.inter_token()),
            ("e2e", load.column("e2e_s")),
        ):
            if len(values):
                rows.append(
                    [load.model, load.scenario, label, len(values)]
                    + [format_value(float(np.percentile(values, q)), "s") for q in SHOWN_PERCENTILES]
                )
    headers = ["model", "scenario", "measure", "samples"] + [f"p{q}" for q in SHOWN_PERCENTILES]
    return ("Latency", headers, rows)


def _throughput_section(report: RunReport) -> Section | None:
    if not report.load:
        return None
    rows = []
    for load in report.load:
        metrics = {m.family: m.value for m in load.metrics()}
        rows.append(
            [
                load.model,
                load.scenario,
                len(load.samples),
                len(load.samples) - len(load.ok),
                format_value(metrics.get("tokens_per_s"), "tok/s"),
                format_value(metrics.get("requests_per_s"), "req/s"),
                ", ".join(f"{kind}: {count}" for kind, count in load.errors_by_kind.most_common()) or "-",
            ]
        )
    headers = ["model", "scenario", "requests", "errors", "tokens/s", "requests/s", "errors by kind"]
    return ("Throughput", headers, rows)


def _memory_section(report: RunReport) -> Section | None:
    if not report.memory:
        return None
    headers = [
        "model",
        "scenario",
        "/api/ps size",
        "context",
        "estimate",
        "RSS peak",
        "RSS growth",
        "unloaded",
    ]
    rows = [
        [
            m.model,
            m.scenario or "-",
            format_value(m.ps_size, "bytes"),
            m.ps_context_length or "-",
            format_value(m.estimate_bytes, "bytes"),
            format_value(m.rss_peak, "bytes"),
            format_value(m.rss_growth, "bytes"),
            "-" if m.unload_freed is None else ("yes" if m.unload_freed else "NO"),
        ]
        for m in report.memory
    ]
    return ("Memory", headers, rows)


def _matrix_section(report: RunReport) -> Section | None:
    return None if report.matrix is None else ("Quantization matrix", *matrix_table(report.matrix))


def _hosts_section(report: RunReport) -> Section | None:
    return ("Hosts", *hosts_table(report.hosts)) if report.hosts else None


def _baseline_section(report: RunReport) -> Section | None:
    if report.baseline is None:
        return None
    headers = [
        "model",
        "metric",
        "baseline",
        "current",
        "change",
        "interval of change",
        "threshold",
        "verdict",
    ]
    rows = [
        [
            row.model,
            row.name,
            format_value(row.baseline, row.unit),
            format_value(row.current, row.unit),
            format_delta(row),
            format_interval(row),
            row.threshold.text,
            row.verdict,
        ]
        for row in report.comparison
    ]
    return (f"Against baseline {report.baseline.run_id}", headers, rows)


def _differences_section(report: RunReport) -> Section | None:
    """What the comparison measures: how the baseline's run and this one differ (server, engine, hardware)."""
    if report.baseline is None:
        return None
    rows = [[item.aspect, item.baseline, item.current] for item in report.differences] or [
        ["nothing", "same server version, engine kind, server host, machine and hardware", ""]
    ]
    return (f"Baseline {report.baseline.run_id} differs in", ["differs", "baseline", "current"], rows)


def _exact_section(report: RunReport) -> Section | None:
    """The exact-output controls (the oracle) side by side: any difference is the server's doing."""
    if report.baseline is None:
        return None
    rows = [
        [
            row.model,
            row.control,
            _short(repr(row.expected), 40),
            _short(repr(row.baseline) + (f" ({row.baseline_done})" if row.baseline_done else ""), 48),
            _short(repr(row.current) + (f" ({row.current_done})" if row.current_done else ""), 48),
            row.verdict,
        ]
        for row in report.exact
    ]
    headers = ["model", "control", "expected", "baseline", "current", "verdict"]
    return ("Exact-output controls against the baseline", headers, rows)


def _flipped_section(report: RunReport) -> Section | None:
    if report.baseline is None:
        return None
    rows = [
        [
            p.model,
            p.suite,
            p.item_id + (f" #{p.repeat}" if p.repeat else ""),
            p.change,
            _short(p.baseline_response, 40),
            _short(p.current_response, 40),
            _short(p.current_reason, 40),
        ]
        for p in report.flipped
    ]
    if not rows and report.prompts_compared:  # the per-prompt verdict: nothing flipped
        rows = [["-", "-", "-", "none", "", "", f"all {report.prompts_compared} graded as in the baseline"]]
    headers = ["model", "suite", "item", "change", "baseline response", "current response", "reason now"]
    title = f"Prompts that changed grade against {report.baseline.run_id}"
    if report.prompts_compared:
        title += f": {len(report.flipped)} of {report.prompts_compared} asked in both"
    return (title, headers, rows)


# The report's tables in the order shown; each section returns None when the run has nothing for it.
SECTIONS: tuple[Callable[[RunReport], Section | None], ...] = (
    _run_section,
    _suites_section,
    _findings_section,
    _worst_section,
    _latency_section,
    _throughput_section,
    _memory_section,
    _matrix_section,
    _hosts_section,
    _differences_section,
    _baseline_section,
    _exact_section,
    _flipped_section,
)


def _sections(report: RunReport) -> list[Section]:
    """The report as (title, headers, rows) tables, shared by the text and Markdown renderings."""
    return [section for make in SECTIONS if (section := make(report)) is not None]


def _escape_pipes(cell: Any) -> Any:
    """A Markdown table cell: a literal | would end the cell."""
    return cell.replace("|", "\\|") if isinstance(cell, str) else cell


def _verdict_line(report: RunReport) -> str:
    if not report.failures:
        return "Result: OK"
    regressed = [row for row in report.comparison if row.verdict == "REGRESSED"]
    reasons = [reason for reason in report.failures if "REGRESSED" not in reason]
    if regressed:
        names = ", ".join(f"{row.name}" for row in regressed[:3]) + (", ..." if len(regressed) > 3 else "")
        reasons.append(f"{len(regressed)} metric(s) REGRESSED ({names})")
    return "Result: FAILED: " + "; ".join(reasons)


def render_report(report: RunReport, output_format: str) -> str:
    """The whole report in one format: "text", "markdown" or "json"."""
    if output_format == "json":
        return json.dumps(report_to_json(report), indent=2, ensure_ascii=False)
    markdown = output_format == "markdown"
    table_format = _TABLE_FORMATS[output_format]
    parts: list[str] = []
    if markdown:
        parts.append(f"# Harness report: run {report.run.run_id}")
    for warning in report.warnings:
        parts.append(f"> **Warning:** {warning}" if markdown else f"WARNING: {warning}")
    if report.baseline is None and report.baseline_note:
        parts.append(report.baseline_note)
    if report.baseline is not None and report.baseline_match:
        parts.append(f"Baseline {report.baseline.run_id} matched on: {report.baseline_match}.")
    for title, headers, rows in _sections(report):
        if not rows:
            continue
        heading = f"## {title}" if markdown else f"== {title}"
        parts.append(
            heading
            + "\n\n"
            + tabulate(
                [[_escape_pipes(cell) for cell in row] for row in rows] if markdown else rows,
                headers=headers if markdown or any(headers) else (),
                tablefmt=table_format,
                disable_numparse=True,
            )
        )
    parts.append(f"**{_verdict_line(report)}**" if markdown else _verdict_line(report))
    return "\n\n".join(parts) + "\n"


def _clean(value: Any) -> Any:
    """JSON-safe: non-finite floats become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def report_to_json(report: RunReport) -> dict[str, Any]:
    """The report as plain data (values in base units: seconds, fractions, bytes)."""
    run = report.run
    return {
        "run": {
            "id": run.run_id,
            "path": str(run.path),
            "status": run.status,
            "incomplete_reason": run.incomplete_reason,
            **{
                k: run.meta.get(k)
                for k in ("started_at", "finished_at", "harness", "server", "machine", "models", "options")
            },
            "time": time_split(run),
        },
        "warnings": report.warnings,
        "exit_status": report.exit_status,
        "failures": report.failures,
        "suites": [
            {
                "model": s.model,
                "suite": s.suite,
                "tests": dict(s.tests),
                "n": s.n,
                "accuracy_strict": s.accuracy_strict,
                "accuracy_flexible": s.accuracy_flexible,
                "accuracy_interval": list(s.interval) if s.interval else None,
                "verdict": s.verdict,
                "cut_off": s.cut_off,
                "num_predict": s.num_predict,
                "fewshot": s.fewshot,
                "threshold": s.threshold,
                "passed": not s.failed,
            }
            for s in report.suites
        ],
        "findings": run.of_kind("finding"),
        "worst_prompts": report.worst,
        "load": [
            {
                "model": load.model,
                "scenario": load.scenario,
                "requests": len(load.samples),
                "errors_by_kind": dict(load.errors_by_kind),
                "wall_s": load.wall_s,
                "client_cpu_s": load.client_cpu_s,
                "metrics": {m.family: _clean(m.value) for m in load.metrics()},
            }
            for load in report.load
        ],
        "memory": [
            {
                "model": m.model,
                "ps_size": m.ps_size,
                "ps_context_length": m.ps_context_length,
                "estimate_bytes": m.estimate_bytes,
                "rss_peak": m.rss_peak,
                "rss_growth": m.rss_growth,
                "unload_freed": m.unload_freed,
            }
            for m in report.memory
        ],
        "matrix": None if report.matrix is None else matrix_to_json(report.matrix),
        "hosts": hosts_to_json(report.hosts),
        "baseline": None
        if report.baseline is None
        else {"id": report.baseline.run_id, "path": str(report.baseline.path)},
        "baseline_note": report.baseline_note,
        "baseline_match": report.baseline_match,
        "flipped_prompts": [{**asdict(prompt), "change": prompt.change} for prompt in report.flipped],
        "prompts_compared": report.prompts_compared,
        "differences": [
            {"aspect": item.aspect, "baseline": item.baseline, "current": item.current}
            for item in report.differences
        ],
        "exact_outputs": [
            {
                "model": row.model,
                "control": row.control,
                "expected": row.expected,
                "baseline": row.baseline,
                "current": row.current,
                "baseline_done_reason": row.baseline_done,
                "current_done_reason": row.current_done,
                "verdict": row.verdict,
            }
            for row in report.exact
        ],
        "comparison": [
            {
                "model": row.model,
                "metric": row.name,
                "unit": row.unit,
                "better": row.better,
                "baseline": _clean(row.baseline),
                "current": _clean(row.current),
                "delta": _clean(row.judgement.delta),
                "relative_delta": _clean(row.judgement.relative_delta),
                "interval": None
                if row.judgement.interval is None
                else [_clean(v) for v in row.judgement.interval],
                "threshold": row.threshold.text,
                "verdict": row.verdict,
            }
            for row in report.comparison
        ],
    }


# ------------------------------------------------------------------------------------------ list, history


def _started(run: RunRecord) -> str:
    """The start time to the second, for tables."""
    return run.started_at[:19].replace("T", " ")


def _models(run: RunRecord) -> str:
    return ", ".join(str(model.get("name", "-")) for model in run.meta.get("models") or []) or "-"


def render_run_list(
    runs: Sequence[RunRecord], broken: Sequence[tuple[Path, RunRecordError]], output_format: str
) -> str:
    """`harness report --list`: one line per run, oldest first, and the folders that cannot be read."""
    if output_format == "json":
        return json.dumps(
            {
                "runs": [
                    {
                        "id": run.run_id,
                        "path": str(run.path),
                        "started_at": run.started_at,
                        "status": run.status,
                        "engine_kind": run.engine_kind,
                        "server_version": (run.meta.get("server") or {}).get("version"),
                        "host": (run.meta.get("machine") or {}).get("hostname"),
                        "models": run.meta.get("models") or [],
                    }
                    for run in runs
                ],
                "unreadable": [{"path": str(path), "error": error.message} for path, error in broken],
            },
            indent=2,
        )
    rows: list[list[Any]] = [
        [
            run.run_id,
            _started(run),
            run.status,
            run.engine_kind or "-",
            (run.meta.get("server") or {}).get("version") or "-",
            (run.meta.get("machine") or {}).get("hostname", "-"),
            _models(run),
        ]
        for run in runs
    ]
    rows.extend([path.name, "-", "UNREADABLE", "-", "-", "-", error.message] for path, error in broken)
    table = tabulate(
        rows,
        headers=["run", "started", "status", "engine", "version", "host", "models"],
        tablefmt=_TABLE_FORMATS[output_format],
        disable_numparse=True,
    )
    return table + "\n" if rows else "no runs\n"


def render_history(
    pattern: str, keys: Sequence[tuple[str, str]], rows: Iterable[HistoryRow], output_format: str
) -> str:
    """`harness report --history METRIC`: one row per run, one column per (model, metric) that matched."""
    rows = list(rows)
    if output_format == "json":
        return json.dumps(
            {
                "metric": pattern,
                "runs": [
                    {
                        "id": row.run.run_id,
                        "started_at": row.run.started_at,
                        "status": row.run.status,
                        "values": [
                            {"model": model, "metric": name, "value": _clean(row.values[(model, name)].value)}
                            for model, name in keys
                            if (model, name) in row.values
                        ],
                    }
                    for row in rows
                ],
            },
            indent=2,
        )

    def formatter(row: HistoryRow, key: tuple[str, str]) -> str:
        metric = row.values.get(key)
        return format_value(metric.value, metric.unit) if metric else "-"

    table = tabulate(
        [
            [row.run.run_id, _started(row.run), row.run.status] + [formatter(row, key) for key in keys]
            for row in rows
        ],
        headers=["run", "started", "status"] + [f"{model} {name}" for model, name in keys],
        tablefmt=_TABLE_FORMATS[output_format],
        disable_numparse=True,
    )
    return table + "\n"
