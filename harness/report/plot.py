"""`harness report --plot FILE.png`: latency distributions (current against baseline) and a metric's history.

matplotlib is an optional extra (`pip install 'ollama-test-harness[plot]'`), imported here when asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness import DISTRIBUTION
from harness.errors import HarnessError
from harness.report.compare import RunReport
from harness.report.metrics import HistoryRow, identity_of, load_by_identity


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as pyplot
    except ImportError as error:
        raise HarnessError(
            "--plot needs matplotlib, which is not installed",
            f"pip install '{DISTRIBUTION}[plot]'",
        ) from error
    return pyplot


def _ecdf(axes: Any, values: np.ndarray, label: str) -> None:
    ordered = np.sort(values) * 1000
    axes.step(ordered, np.arange(1, len(ordered) + 1) / len(ordered), where="post", label=label)


def plot_report(report: RunReport, path: Path) -> None:
    """One panel per (model, scenario, measure): the ECDF of TTFT and e2e latency, current and baseline."""
    pyplot = _pyplot()
    # matched by model identity (profile or name, and digest): fixture model names carry the run id
    baseline = load_by_identity(report.baseline) if report.baseline else {}
    panels = [
        (load, measure)
        for load in report.load
        for measure in ("ttft_s", "e2e_s")
        if len(load.column(measure))
    ]
    if not panels:
        raise HarnessError(
            "nothing to plot: the run has no load samples", "run the load suites, or use --history"
        )
    figure, axes_list = pyplot.subplots(len(panels), 1, figsize=(8, 3 * len(panels)), squeeze=False)
    for axes, (load, measure) in zip(axes_list[:, 0], panels, strict=True):
        _ecdf(axes, load.column(measure), f"{report.run.run_id}")
        previous = baseline.get((identity_of(report.run, load.model), load.scenario))
        if previous is not None and len(previous.column(measure)) and report.baseline is not None:
            _ecdf(axes, previous.column(measure), f"baseline {report.baseline.run_id}")
        axes.set_title(f"{load.model} {load.scenario}: {measure.removesuffix('_s')}")
        axes.set_xlabel("ms")
        axes.set_ylabel("fraction of requests")
        axes.legend()
    _save(pyplot, figure, path)


def plot_history(
    pattern: str, keys: Sequence[tuple[str, str]], rows: Sequence[HistoryRow], path: Path
) -> None:
    """One line per (model, metric) matching `pattern`, across runs in time order."""
    pyplot = _pyplot()
    figure, axes = pyplot.subplots(figsize=(9, 4))
    labels = [row.run.run_id for row in rows]
    for key in keys:
        values = [row.values[key].value if key in row.values else None for row in rows]
        axes.plot(
            labels, [np.nan if value is None else value for value in values], marker="o", label=" ".join(key)
        )
    units = {row.values[key].unit for row in rows for key in keys if key in row.values}
    axes.set_ylabel(", ".join(sorted(units)))
    axes.set_title(f"history of {pattern}")
    axes.tick_params(axis="x", rotation=45)
    axes.legend()
    _save(pyplot, figure, path)


def _save(pyplot: Any, figure: Any, path: Path) -> None:
    figure.tight_layout()
    try:
        figure.savefig(path)
    except OSError as error:
        raise HarnessError(f"cannot write the plot to {path}: {error}", "choose a writable path") from error
    finally:
        pyplot.close(figure)
