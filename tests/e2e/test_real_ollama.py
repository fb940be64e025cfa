"""Opt-in, end to end against a real Ollama: the suites on a server started from the `ollama` binary that
`HARNESS_OLLAMA_BIN` names (skipped when it is not set, so the default run needs no Ollama).

    HARNESS_OLLAMA_BIN=/path/to/ollama .venv/bin/pytest tests/e2e/test_real_ollama.py

The server gets its own empty home and models folder on a free loopback port, and the suites run on the
fixture models with a few quality items each (`HARNESS_OLLAMA_SUITE_ARGS` adds pytest options). Every suite
must run: quality, load and memory never fall to "not run", even when a broken file kills the server (an
older Ollama dies on some: then the report names the server, its version and the file as a finding).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.runs import load_run
from harness.testing.helpers import RealOllama, run_pytest

REPO = Path(__file__).resolve().parents[2]
OLLAMA_BIN = os.environ.get("HARNESS_OLLAMA_BIN", "")
pytestmark = [
    pytest.mark.skipif(not OLLAMA_BIN, reason="set HARNESS_OLLAMA_BIN to an ollama binary to run this"),
    pytest.mark.timeout(900),
]
NON_DESTRUCTIVE_SUITES = ("math", "quantum", "load", "memory")


@pytest.fixture
def ollama(tmp_path: Path) -> Iterator[str]:
    """A real Ollama server of its own (harness.testing.helpers.RealOllama); its host."""
    with RealOllama(Path(OLLAMA_BIN), tmp_path / "ollama-home") as server:
        yield server.host


def test_every_suite_runs_on_a_real_ollama(ollama: str, tmp_path: Path) -> None:
    extra = shlex.split(os.environ.get("HARNESS_OLLAMA_SUITE_ARGS", "--harness-max-items 3"))
    done, _ = run_pytest(
        tmp_path / "reports",
        "-rA",
        str(REPO / "suites"),
        "--ollama-host",
        ollama,
        *extra,
        cwd=REPO,
        timeout=840,
    )
    run = load_run(tmp_path / "reports" / "latest")
    outcomes: dict[str, set[str]] = {}
    for record in run.of_kind("test"):
        outcomes.setdefault(record["suite"], set()).add(record["outcome"])
    explain = f"exit {done.returncode}\n{done.stdout[-6000:]}"
    for suite in NON_DESTRUCTIVE_SUITES:
        assert outcomes.get(suite), f"the {suite} suite never ran\n{explain}"
        assert "error" not in outcomes[suite] and "failed" not in outcomes[suite], (
            f"{suite}: {outcomes}\n{explain}"
        )
    if done.returncode == 0:
        assert run.complete
        return
    # Only a server killed by a broken file may end the run early, and the run says so.
    died = [f for f in run.of_kind("finding") if f["finding"] == "server-died"]
    assert died, f"the run failed without a server-died finding\n{explain}"
    assert run.meta["server"]["version"] in died[0]["text"] and died[0]["file"], died
    report = subprocess.run(
        [sys.executable, "-m", "harness.cli", "report", str(run.path), "--no-baseline"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert "== Findings" in report.stdout and died[0]["text"][:60] in report.stdout, report.stdout
