"""`harness report`: print a run's results, compare it with a baseline, list runs, show a metric's history.

Exit status: 0 all good, 1 a regression, failed tests or an incomplete run, 2 unusable input.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from harness.config import ConfigError, Threshold, load_config, parse_threshold
from harness.errors import HarnessError
from harness.report.compare import (
    baseline_keys,
    build_report,
    find_baseline,
    find_run_on_version,
    resolve_run,
)
from harness.report.metrics import metric_history, metric_names
from harness.report.render import FORMATS, render_history, render_report, render_run_list
from harness.runs import LATEST_LINK, RunRecord, list_runs, load_run, scan_runs

DEFAULT_REPORTS_DIR = Path("reports")


def parse_overrides(texts: Sequence[str] | None) -> dict[str, Threshold]:
    """`--threshold METRIC=CHANGE` options as a table (a later one for the same metric wins)."""
    overrides: dict[str, Threshold] = {}
    for text in texts or []:
        metric, separator, change = text.partition("=")
        if not separator or not metric.strip():
            raise ConfigError(
                f"invalid --threshold {text!r}", "write METRIC=CHANGE, for example --threshold ttft_p95=+30%"
            )
        overrides[metric.strip()] = parse_threshold(change)
    return overrides


def add_judging_options(parser: argparse.ArgumentParser) -> None:
    """--config, --threshold and --format: how a run is judged against its baseline and shown."""
    parser.add_argument("--config", metavar="FILE", help="thresholds file (default: harness.toml, if found)")
    parser.add_argument(
        "--threshold",
        action="append",
        metavar="METRIC=CHANGE",
        help="override a threshold, e.g. ttft_p95=+30%%, accuracy_strict=-2pt, rss_growth=+64MiB; repeatable",
    )
    parser.add_argument("--format", choices=FORMATS, default="text", help="output format (default: text)")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `report` sub-command."""
    parser = subparsers.add_parser(
        "report",
        help="report a run and compare it with a baseline",
        description=(
            "Print a run's results (suites, worst prompts, load, memory) and compare it with a baseline run. "
            "Exit status: 0 all good, 1 a regression, failed tests or an incomplete run, 2 unusable input."
        ),
    )
    parser.add_argument(
        "run",
        nargs="?",
        metavar="RUN",
        help="a run folder, reports/latest, or a run id (default: reports/latest)",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--baseline",
        metavar="RUN",
        help="the run to compare with, on any server (default: the newest earlier complete run of the same "
        "models, engine kind and hardware class: CPU model, cores, RAM in GiB, GPU; harness.toml [report] "
        "baseline_match changes the machine keys)",
    )
    which.add_argument(
        "--against-version",
        metavar="VERSION",
        help="compare with the newest complete run of the same models on server version VERSION "
        "(e.g. 0.24.0; 0.33.0 also matches the embedded engine's 0.33.0+harness.X)",
    )
    which.add_argument("--no-baseline", action="store_true", help="report the run alone")
    parser.add_argument(
        "--require-baseline",
        action="store_true",
        help="exit 1 when no baseline is found (for CI: a gate that never compares is no gate)",
    )
    parser.add_argument(
        "--reports-dir",
        type=Path,
        metavar="DIR",
        help="the folder of runs (default: RUN's parent, or reports/)",
    )
    add_judging_options(parser)
    parser.add_argument("--list", action="store_true", help="list the runs in the reports folder")
    parser.add_argument("--history", metavar="METRIC", help="one metric (name, family or glob) across runs")
    parser.add_argument(
        "--plot", type=Path, metavar="FILE.png", help="draw latency distributions or --history"
    )
    parser.add_argument("--worst", type=int, default=5, metavar="N", help="how many worst prompts to show")
    parser.set_defaults(func=run_report)


def _reports_dir(args: argparse.Namespace) -> Path:
    if args.reports_dir is not None:
        return Path(args.reports_dir)
    return Path(args.run).parent if args.run else DEFAULT_REPORTS_DIR


def run_report(args: argparse.Namespace) -> int:
    """Handler of `harness report`; returns the exit status."""
    config = load_config(args.config)
    overrides = parse_overrides(args.threshold)
    reports_dir = _reports_dir(args)
    if args.list:
        runs, broken = scan_runs(reports_dir)
        print(render_run_list(runs, broken, args.format), end="")
        return 0
    if args.history:
        runs = list_runs(reports_dir, with_results=True)
        keys, rows = metric_history(runs, args.history)
        if not rows:
            known = metric_names(runs)
            raise HarnessError(
                f"no run in {reports_dir} has a metric matching {args.history!r}",
                f"known metrics: {', '.join(known)}" if known else "the folder holds no run with metrics",
            )
        print(render_history(args.history, keys, rows, args.format), end="")
        if args.plot:
            from harness.report.plot import plot_history  # matplotlib, an optional extra: only for --plot

            plot_history(args.history, keys, rows, args.plot)
        return 0

    run_path = resolve_run(args.run or str(reports_dir / LATEST_LINK), reports_dir)
    run = load_run(run_path)
    note = ""
    baseline: RunRecord | None
    if args.baseline:
        baseline = load_run(resolve_run(args.baseline, reports_dir))
    elif args.against_version:
        baseline = find_run_on_version(run, reports_dir, args.against_version)
        if baseline is None:
            raise HarnessError(
                f"no complete run in {reports_dir} of the same models on server version "
                f"{args.against_version}",
                "run the suites against that version first (`harness report --list` shows each run's "
                "server version), or pass --baseline RUN",
            )
    elif args.no_baseline:
        baseline = None
    else:
        match_keys = baseline_keys(config)
        baseline = find_baseline(run, reports_dir, match_keys)
        if baseline is None:
            machine = ", ".join(match_keys) or "any machine"
            note = (
                f"No baseline: no earlier complete run in {reports_dir} of the same models, engine kind "
                f"and machine ({machine}); pass --baseline RUN (or --against-version VERSION) to compare "
                "with a run on another server."
            )
    report = build_report(
        run, config=config, baseline=baseline, baseline_note=note, overrides=overrides, worst_count=args.worst
    )
    if args.require_baseline and baseline is None and not args.no_baseline:
        report.missing_baseline = note
    print(render_report(report, args.format), end="")
    if args.plot:
        from harness.report.plot import plot_report  # matplotlib, an optional extra: only for --plot

        plot_report(report, args.plot)
    return report.exit_status
