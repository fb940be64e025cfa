"""The quantization matrix: the same model in several tensor types, side by side.

`pytest suites/ --matrix f32,f16,q8_0,q4_0` runs the suites once per type. A fixture profile is built in each
type (`harness.gguf`); a user's F32/F16 GGUF (`--gguf`) is created as it is for its own type and, for the
others, with the server quantizing at create (`quantize`). A type the server refuses gets skipped with its
reason (Ollama and the embedded engine write f32, f16, q8_0, q4_K_M and q4_K_S, only from an F16, BF16 or
F32 file).

This module plans the matrix (`parse_matrix`, `MatrixEntry`) and sums it up for `harness report`
(`summarise_matrix`): per type accuracy, tokens/s, time to first token, `/api/ps` size and file size, with
the deltas against the widest type.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.errors import HarnessError
from harness.gguf.spec import TENSOR_TYPES

# Bits per weight of the types a matrix may name: the widest type is the reference for the deltas.
# Fixture profiles can be built in TENSOR_TYPES; a user's GGUF may also ask the server for Ollama's
# quantize types (q4_K_M, q4_K_S, ...).
TYPE_BITS: Mapping[str, float] = {
    "f32": 32.0,
    "bf16": 16.0,
    "f16": 16.0,
    "q8_0": 8.5,
    "q6_k": 6.56,
    "q5_k_m": 5.69,
    "q5_k_s": 5.54,
    "q5_1": 6.0,
    "q5_0": 5.5,
    "q4_k_m": 4.89,
    "q4_k_s": 4.58,
    "q4_1": 5.0,
    "q4_0": 4.5,
    "q3_k_l": 4.27,
    "q3_k_m": 3.91,
    "q3_k_s": 3.5,
    "q2_k": 2.63,
}
MATRIX_STATUS_OK = "ok"
MATRIX_STATUS_SKIPPED = "skipped"
NOT_SUPPORTED = "not supported by this server"


class QuantizeNotSupported(HarnessError):
    """The server refused to quantize at create: the matrix skips that type with this reason."""


def type_key(tensor_type: str) -> str:
    """The comparable form of a type name: lower case (`Q4_K_M` -> `q4_k_m`)."""
    return tensor_type.strip().lower()


def parse_matrix(text: str | None, *, fixture: bool) -> tuple[str, ...]:
    """`--matrix f32,f16,q8_0,q4_0` as a tuple of types, widest first; () when not given.

    With a fixture profile (`fixture`) only the types the builder writes are allowed; for a user's GGUF any
    type the server may quantize to (kept as written: Ollama spells them `q4_K_M`).
    """
    if text is None:
        return ()
    names = [name.strip() for name in text.split(",") if name.strip()]
    allowed = TENSOR_TYPES if fixture else tuple(TYPE_BITS)
    if not names:
        raise HarnessError(
            f"--matrix {text!r} names no tensor type", f"e.g. --matrix {','.join(TENSOR_TYPES)}"
        )
    seen: set[str] = set()
    for name in names:
        key = type_key(name)
        if key not in allowed:
            where = "a fixture profile is built in" if fixture else "known types are"
            raise HarnessError(f"--matrix: unknown tensor type {name!r}", f"{where}: {', '.join(allowed)}")
        if key in seen:
            raise HarnessError(f"--matrix names {name!r} twice", "name each tensor type once")
        seen.add(key)
    return tuple(sorted(names, key=lambda name: -TYPE_BITS[type_key(name)]))


@dataclass(frozen=True)
class MatrixEntry:
    """How one type of the matrix gets onto the server: built (fixture), as the file is, or quantized."""

    tensor_type: str
    quantize: str | None = None  # the `quantize` field of the create request, when the server must do it

    @property
    def label(self) -> str:
        return type_key(self.tensor_type)


def plan_entry(tensor_type: str, *, file_type: str | None) -> MatrixEntry:
    """The entry for `tensor_type`: a fixture (`file_type` None) is built in that type; a user's file of that
    type is used as it is; any other type is asked of the server (`quantize`)."""
    if file_type is None or type_key(file_type) == type_key(tensor_type):
        return MatrixEntry(tensor_type)
    return MatrixEntry(tensor_type, quantize=tensor_type)


def quantize_refusal(tensor_type: str, file_type: str | None, server_message: str) -> QuantizeNotSupported:
    """The error for a create with `quantize` that the server refused (`_refused_quantize`)."""
    source = f"the {file_type} file" if file_type else "the file"
    return QuantizeNotSupported(
        f"{tensor_type}: quantizing {source} at create is {NOT_SUPPORTED} ({server_message})",
        "Ollama quantizes F16/BF16/F32 files to f32, f16, q8_0, q4_K_M, q4_K_S; or build the file in it",
    )


def matrix_meta(types: Iterable[str]) -> dict[str, Any]:
    """run.json's "matrix" at the start of a run: every type, none set up yet."""
    return {
        "types": list(types),
        "entries": [{"tensor_type": t, "status": "not run", "model": None, "reason": None} for t in types],
    }


def record_matrix_entry(
    recorder: Any, tensor_type: str | None, *, model: str | None = None, skipped: str | None = None
) -> None:
    """Mark one type of the run's matrix (run.json) as set up on `model`, or skipped with the reason."""
    matrix = recorder.meta.get("matrix")
    if tensor_type is None or not isinstance(matrix, dict) or recorder.finished:
        return
    entries = [dict(entry) for entry in matrix.get("entries") or []]
    for entry in entries:
        if entry.get("tensor_type") == tensor_type:
            entry.update(
                status=MATRIX_STATUS_SKIPPED if skipped else MATRIX_STATUS_OK, model=model, reason=skipped
            )
    recorder.update({"matrix": {**matrix, "entries": entries}})


# ------------------------------------------------------------------------------------------ report


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


def summarise_matrix(run: Any) -> MatrixSummary | None:
    """The matrix of a run (a `harness.runs.RunRecord`), or None when the run had no --matrix."""
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
    from harness.report.render import format_value

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
