"""`harness upgrade-check --from OLD_HOST --to NEW_HOST`: did upgrading Ollama break or slow my model?

It runs the suites (pytest on `suites/`) against the old server, then the new one, into one reports folder,
with the same models (fixtures are built from the same specs, a `--gguf` or `--model` is the same file), and
reports the new run against the old one: a verdict per metric (noise-aware), the prompts whose grade flipped,
and the exact-output controls (the oracle), which must be identical: a difference there is a finding about
the server. Exit status: 0 no regression, 1 a regression beyond noise (or a changed exact output, a failed
suite on the new server), 2 unusable input (a host that does not answer, no suites folder).

The same verdict from two runs made by hand: `harness report NEW_RUN --baseline OLD_RUN`.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path

from harness.config import load_config
from harness.errors import HarnessError, ServerError
from harness.report.commands import add_judging_options, parse_overrides
from harness.report.compare import build_report
from harness.report.render import render_report
from harness.runs import LATEST_LINK, RunRecord, load_run
from harness.server.reach import normalize_url, probe

DEFAULT_SUITES = Path("suites")
DEFAULT_REPORTS_DIR = Path("reports")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `upgrade-check` sub-command."""
    parser = subparsers.add_parser(
        "upgrade-check",
        help="run the suites on an old and a new Ollama and gate on the difference",
        description=(
            "Run the suites against OLD_HOST and then NEW_HOST with the same models, and report the new run "
            "against the old one: one verdict per metric and per prompt, and the exact-output controls. "
            "Exit status: 0 no regression, 1 a regression beyond noise or a changed exact output, "
            "2 unusable input."
        ),
    )
    parser.add_argument("--from", dest="old_host", required=True, metavar="OLD_HOST", help="the old server")
    parser.add_argument("--to", dest="new_host", required=True, metavar="NEW_HOST", help="the new server")
    parser.add_argument(
        "--suites", type=Path, default=DEFAULT_SUITES, metavar="DIR", help="the suites (default: suites)"
    )
    parser.add_argument(
        "--reports-dir",
        type=Path,
        default=DEFAULT_REPORTS_DIR,
        metavar="DIR",
        help="where both runs are recorded (default: reports/)",
    )
    parser.add_argument(
        "--pytest-args",
        default="",
        metavar="ARGS",
        help="extra options for both suite runs, as one string (e.g. \"-k 'not broken' --harness-model M\")",
    )
    add_judging_options(parser)
    parser.set_defaults(func=run_upgrade_check)


def _latest(reports_dir: Path) -> Path | None:
    link = reports_dir / LATEST_LINK
    return link.resolve() if link.exists() else None


def run_suites(host: str, suites: Path, reports_dir: Path, extra: list[str]) -> RunRecord:
    """Run the suites against `host` in a child pytest; the run it recorded (its exit status is in the run:
    failed tests are part of the report, not a reason to stop)."""
    before = _latest(reports_dir)
    command = [
        sys.executable,
        "-m",
        "pytest",
        str(suites),
        "--ollama-host",
        host,
        "--harness-run-dir",
        str(reports_dir),
        "-q",
        "-p",
        "no:cacheprovider",
        *extra,
    ]
    print(f"== suites on {host}: {shlex.join(command)}", file=sys.stderr, flush=True)
    # pytest's progress goes to stderr, line by line, so that stdout holds only the report
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy()
    ) as child:
        assert child.stdout is not None
        for line in child.stdout:
            sys.stderr.write(line)
    after = _latest(reports_dir)
    if after is None or after == before:
        raise HarnessError(
            f"the suites against {host} recorded no run (pytest exit status {child.returncode})",
            "see pytest's output above: a host that does not answer, or a bad pytest option",
        )
    return load_run(after)


def run_upgrade_check(args: argparse.Namespace) -> int:
    """Handler of `harness upgrade-check`; returns the exit status."""
    config = load_config(args.config)
    overrides = parse_overrides(args.threshold)
    if not args.suites.is_dir():
        raise HarnessError(
            f"no suites folder at {args.suites}", "run from the harness checkout, or pass --suites DIR"
        )
    try:
        extra = shlex.split(args.pytest_args)
    except ValueError as error:
        raise HarnessError(
            f"--pytest-args {args.pytest_args!r}: {error}", "quote it as a shell would"
        ) from error
    for option, host in (("--from", args.old_host), ("--to", args.new_host)):
        why = probe(normalize_url(host))
        if why is not None:
            raise ServerError(
                f"{option} {host}: no Ollama answers there ({why})",
                "start the server, or name the host it listens on (host:port)",
            )
    old = run_suites(args.old_host, args.suites, args.reports_dir, extra)
    new = run_suites(args.new_host, args.suites, args.reports_dir, extra)
    report = build_report(new, config=config, baseline=old, overrides=overrides)
    print(render_report(report, args.format), end="")
    return report.exit_status
