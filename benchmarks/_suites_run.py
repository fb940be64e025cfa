"""What the suite benchmarks share: a `pytest suites/` run in a child process, quiet, bounded to 30 min."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path

from harness.testing.helpers import run_pytest

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 1800


def run_suites(
    run_dir: Path, *args: str, env: Mapping[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run pytest (`args`: what to run and how) writing its run folder under `run_dir`: the finished process
    and its wall time. Exits the benchmark when pytest could not run the suites (status other than 0 or 1)."""
    done, wall = run_pytest(run_dir, "-q", *args, cwd=REPO, timeout=TIMEOUT_S, env=env)
    if done.returncode not in (0, 1):
        raise SystemExit(
            f"pytest ended with {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-2000:]}"
        )
    return done, wall
