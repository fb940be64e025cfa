"""The quantization matrix in a report: per tensor type accuracy, tokens/s, time to first token, `/api/ps`
size and file size, with the deltas against the widest type (the run's `matrix` in run.json, written by
`harness.plugin.matrix`)."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.gguf.types import TYPE_BITS, type_key
from harness.runs import RunRecord
from harness.units import format_value

# The status of each type in run.json's "matrix" entries (written by harness.plugin.matrix).
MATRIX_STATUS_OK = "ok"
MATRIX_STATUS_SKIPPED = "skipped"


@dataclass
class MatrixRow:
    """One type of a matrix run, as the report shows it."""

    tensor_type: str
    model: str | None
    status: str
    reason: str | None = None
    accuracy: dict[str, float] = field(default_factory=dict)  # quality suite -> strict accuracy
    tokens_per_s: float | None = None
    ttft_s: float | None = None
    ps_size: float | None = None
    file_size: float | None = None

    def values(self) -> dict[str, float | None]:
        """The comparable numbers, keyed by column (accuracy per suite as `accuracy.<suite>`)."""
        return {
            **{f"accuracy.{suite}": value for suite, value in self.accuracy.items()},
            "tokens_per_s": self.tokens_per_s,
            "ttft_s": self.ttft_s,
            "ps_size": self.ps_size,
            "file_size": self.file_size,
        }


@dataclass
class MatrixSummary:
    """The matrix of a run: rows widest type first; `reference` is the widest type with results."""

    rows: list[MatrixRow]
    suites: list[str]

    @property
    def reference(self) -> MatrixRow | None:
        return next((row for row in self.rows if row.status == MATRIX_STATUS_OK), None)

    def delta(self, row: MatrixRow, column: str) -> float | None:
        """`row`'s value minus the reference's: absolute for accuracies, relative for the rest."""
        reference = self.reference
        if reference is None or row is reference:
            return None
        current, base = row.values().get(column), reference.values().get(column)
        if current is None or base is None:
            return None
        if column.startswith("accuracy."):
            return current - base
        return (current - base) / base if base else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def request_stats(records: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Per model, from its "requests" records: the median decode rate of its requests (tokens/s, by the
    server's eval counters; else all its tokens over all its eval time) and the median client TTFT.

    Medians, because one run mixes requests the server runs alone with requests it runs side by side (the
    load suite), and a few slow ones would drag a pooled rate."""
    totals: dict[str, dict[str, Any]] = {}
    for record in records:
        if record.get("model") is None:  # requests without server durations (harness.server_time)
            continue
        model = str(record.get("model"))
        entry = totals.setdefault(model, {"count": 0.0, "seconds": 0.0, "rates": [], "ttft": []})
        entry["count"] += _number(record.get("eval_count")) or 0.0
        entry["seconds"] += _number(record.get("eval_duration_s")) or 0.0
        entry["rates"].extend(v for v in record.get("eval_rates") or [] if _number(v) is not None)
        entry["ttft"].extend(v for v in record.get("ttft_s") or [] if _number(v) is not None)
    stats: dict[str, dict[str, float | None]] = {}
    for model, entry in totals.items():
        pooled = entry["count"] / entry["seconds"] if entry["seconds"] else None
        stats[model] = {
            "tokens_per_s": statistics.median(entry["rates"]) if entry["rates"] else pooled,
            "ttft_s": statistics.median(entry["ttft"]) if entry["ttft"] else None,
        }
    return stats


def summarise_matrix(run: RunRecord) -> MatrixSummary | None:
    """The matrix of a run, or None when the run had no --matrix."""
    matrix = run.meta.get("matrix")
    if not isinstance(matrix, dict) or not matrix.get("entries"):
        return None
    models = {str(model.get("name")): model for model in run.meta.get("models") or []}
    accuracy: dict[str, dict[str, float]] = {}
    for record in run.of_kind("suite"):
        value = _number(record.get("accuracy_strict"))
        if value is not None:
            accuracy.setdefault(str(record.get("model")), {})[str(record.get("suite"))] = value
    ps_sizes: dict[str, float] = {}
    for record in run.of_kind("memory"):
        size = _number(record.get("ps_size"))
        if size is not None:
            name = str(record.get("model"))
            ps_sizes[name] = max(size, ps_sizes.get(name, 0.0))
    timing = request_stats(run.of_kind("requests"))
    rows = []
    for entry in matrix["entries"]:
        name = entry.get("model")
        stats = timing.get(str(name), {})
        rows.append(
            MatrixRow(
                tensor_type=str(entry.get("tensor_type")),
                model=name,
                status=str(entry.get("status") or "not run"),
                reason=entry.get("reason"),
                accuracy=accuracy.get(str(name), {}),
                tokens_per_s=stats.get("tokens_per_s"),
                ttft_s=stats.get("ttft_s"),
                ps_size=ps_sizes.get(str(name)),
                file_size=_number((models.get(str(name)) or {}).get("file_size")),
            )
        )
    rows.sort(key=lambda row: -TYPE_BITS.get(type_key(row.tensor_type), 0.0))
    suites = sorted({suite for row in rows for suite in row.accuracy})
    return MatrixSummary(rows, suites)


_COLUMN_UNITS = {"tokens_per_s": "tok/s", "ttft_s": "s", "ps_size": "bytes", "file_size": "bytes"}


def matrix_table(summary: MatrixSummary) -> tuple[list[str], list[list[Any]]]:
    """The report's "Quantization matrix" table: a row per type, each value with its delta against the
    widest type that ran (percentage points for accuracy, per cent for the rest)."""
    columns = [*(f"accuracy.{suite}" for suite in summary.suites), *_COLUMN_UNITS]
    headers = [
        "type",
        "model",
        *(f"{suite} strict" for suite in summary.suites),
        "tokens/s",
        "TTFT p50",
        "/api/ps size",
        "file size",
        "status",
    ]
    rows: list[list[Any]] = []
    for row in summary.rows:
        cells: list[Any] = [row.tensor_type, row.model or "-"]
        values = row.values()
        for column in columns:
            value = values.get(column)
            unit = "fraction" if column.startswith("accuracy.") else _COLUMN_UNITS[column]
            text = format_value(value, unit)
            delta = summary.delta(row, column)
            if delta is not None:
                text += f" ({delta * 100:+.1f} {'pt' if unit == 'fraction' else '%'})"
            cells.append(text)
        reference = summary.reference
        status = row.status if row.reason is None else f"{row.status}: {row.reason}"
        if row is reference:
            status += " (reference)"
        cells.append(status)
        rows.append(cells)
    return headers, rows


def matrix_to_json(summary: MatrixSummary) -> dict[str, Any]:
    """The matrix as plain data (base units; deltas as fractions)."""
    columns = [*(f"accuracy.{suite}" for suite in summary.suites), *_COLUMN_UNITS]
    reference = summary.reference
    return {
        "reference": reference.tensor_type if reference else None,
        "rows": [
            {
                "tensor_type": row.tensor_type,
                "model": row.model,
                "status": row.status,
                "reason": row.reason,
                "values": row.values(),
                "deltas": {column: summary.delta(row, column) for column in columns},
            }
            for row in summary.rows
        ],
    }
