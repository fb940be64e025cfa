"""Scenarios at the level of a whole run: `pytest suites/` in a subprocess, as a user runs it.

- The server dies in the middle of a suite (SIGKILL to an engine this test started and named with
  --ollama-host): the run ends within 10 s with one clear error naming the server, the results gathered
  so far are kept, the run is marked incomplete and `harness report` shows it as INCOMPLETE.
- Ctrl-C (SIGINT to the run's process group, as a terminal sends it) during a run on the embedded engine:
  the run folder is complete up to that point and marked incomplete, no engine or runner outlives it,
  and `reports/latest` never points at a half-written run.json.
- Two runs started at once into the same reports folder never clobber each other.
Reproduce: `.venv/bin/pytest tests/faults/test_suite_faults.py -q`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from harness.engine import EmbeddedEngine
from harness.runs import RunRecord, load_run
from harness.testing.helpers import pytest_command, wait_until

from .conftest import start_engine

pytestmark = pytest.mark.timeout(180)

REPO = Path(__file__).resolve().parents[2]
SUITES = ["suites/test_lifecycle.py", "suites/test_load.py"]
RECORDS_BEFORE_FAULT = 3


class SuiteRun:
    """`pytest suites/...` in its own process group (like a terminal's foreground job), output in a file."""

    def __init__(self, reports: Path, *args: str, log_name: str = "pytest.log") -> None:
        self.reports = reports
        self.output = reports.parent / log_name
        env = {
            key: value for key, value in os.environ.items() if key not in ("OLLAMA_HOST", "PYTEST_ADDOPTS")
        }
        command = pytest_command(reports, *args)
        with self.output.open("wb") as out:
            self.process = subprocess.Popen(
                command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.latest_checks = 0

    def run_dirs(self) -> list[Path]:
        if not self.reports.is_dir():
            return []
        return [p for p in self.reports.iterdir() if p.is_dir() and not p.is_symlink()]

    def test_records(self) -> list[dict[str, Any]]:
        """The test records on disk now (the last line may be torn: skipped)."""
        records = []
        for run_dir in self.run_dirs():
            results = run_dir / "results.jsonl"
            if results.exists():
                for line in results.read_text().splitlines():
                    try:
                        record = json.loads(line)
                    except ValueError:
                        continue
                    if record.get("kind") == "test":
                        records.append(record)
        return records

    def check_latest(self) -> None:
        """`latest`, when present, resolves to a run folder whose run.json parses whole."""
        latest = self.reports / "latest"
        if latest.is_symlink():
            target = latest.resolve()  # once: another run may point `latest` elsewhere at any moment
            meta = json.loads((target / "run.json").read_text())
            assert meta["run_id"] == target.name
            self.latest_checks += 1

    def wait_for(self, condition: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_latest()
            if condition():
                return
            if self.process.poll() is not None:
                pytest.fail(f"the run ended early (exit {self.process.returncode}):\n{self.log()[-4000:]}")
            time.sleep(0.02)
        pytest.fail(f"timed out after {timeout} s waiting for the run:\n{self.log()[-4000:]}")

    def wait_exit(self, timeout: float) -> float:
        """Seconds until the process exited (checking `latest` meanwhile); fails past `timeout`."""
        start = time.monotonic()
        while self.process.poll() is None:
            self.check_latest()
            if time.monotonic() - start > timeout:
                self.kill()
                pytest.fail(f"the run did not end within {timeout} s:\n{self.log()[-4000:]}")
            time.sleep(0.02)
        return time.monotonic() - start

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def log(self) -> str:
        return self.output.read_text(errors="replace")

    def only_run(self) -> RunRecord:
        (run_dir,) = self.run_dirs()
        assert (self.reports / "latest").resolve() == run_dir.resolve()
        return load_run(run_dir)


def assert_record_intact(run: RunRecord) -> None:
    """Every results line parses, run.json is whole, no temp file is left in the run or reports folder."""
    assert not [w for w in run.warnings if "INCOMPLETE" not in w and "incomplete" not in w.lower()], (
        run.warnings
    )
    for line in (run.path / "results.jsonl").read_text().splitlines():
        json.loads(line)
    leftovers = [
        p.name for folder in (run.path, run.path.parent) for p in folder.iterdir() if p.name.startswith(".")
    ]
    assert not leftovers, leftovers


@pytest.fixture
def outside_engine(tmp_path: Path) -> Any:
    engine = start_engine(tmp_path / "models")
    try:
        yield engine
    finally:
        engine.stop()


def test_server_death_mid_suite_ends_the_run_within_10_s(
    tmp_path: Path, outside_engine: EmbeddedEngine
) -> None:
    host = outside_engine.host
    run = SuiteRun(tmp_path / "reports", *SUITES, "--ollama-host", host)
    try:
        run.wait_for(lambda: len(run.test_records()) >= RECORDS_BEFORE_FAULT, timeout=90)
        before = run.test_records()
        assert outside_engine.process is not None
        outside_engine.process.kill()
        killed_at = time.monotonic()
        run.wait_exit(timeout=30)
        ended_after = time.monotonic() - killed_at
    finally:
        run.kill()
    output = run.log()
    assert ended_after < 10.0, f"the run went on for {ended_after:.1f} s after the server died"
    assert run.process.returncode == 2, output[-4000:]
    record = run.only_run()
    assert record.status == "incomplete"
    assert record.incomplete_reason and host in record.incomplete_reason, record.incomplete_reason
    assert "stopped answering" in record.incomplete_reason
    tests = record.of_kind("test")
    assert tests[: len(before)] == before, "the results gathered before the death must be kept"
    failed = [t for t in tests if t["outcome"] in ("failed", "error")]
    assert len(failed) <= 1, f"one clear error, not a cascade: {failed}"
    assert "Traceback" not in output
    assert_record_intact(record)
    print(f"\nserver death: run ended {ended_after:.1f} s after the kill; {len(tests)} test records kept")

    report = subprocess.run(
        [sys.executable, "-m", "harness.cli", "report", str(record.path), "--no-baseline"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert report.returncode == 1, report.stdout + report.stderr
    assert "INCOMPLETE" in report.stdout, report.stdout
    assert host in report.stdout


def test_sigint_mid_run_keeps_a_whole_incomplete_run(tmp_path: Path) -> None:
    run = SuiteRun(tmp_path / "reports", *SUITES, "--harness-embedded-engine")
    try:
        run.wait_for(lambda: len(run.test_records()) >= RECORDS_BEFORE_FAULT, timeout=90)
        before = run.test_records()
        family = [psutil.Process(run.process.pid), *psutil.Process(run.process.pid).children(recursive=True)]
        os.killpg(run.process.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        run.wait_exit(timeout=30)
    finally:
        run.kill()
    output = run.log()
    assert run.process.returncode == 2, output[-4000:]  # pytest's INTERRUPTED
    record = run.only_run()
    assert record.status == "incomplete"
    assert record.incomplete_reason == "interrupted (SIGINT)"
    assert record.meta["finished_at"]
    assert record.of_kind("test")[: len(before)] == before
    assert_record_intact(record)
    assert wait_until(
        lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in family), 10
    ), "an engine or runner outlived the interrupted run"
    assert run.latest_checks > 10


def test_two_runs_at_once_never_clobber_each_other(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    args = ("suites/test_lifecycle.py", "--harness-embedded-engine", "-k", "num_predict or version")
    runs = [SuiteRun(reports, *args, log_name=f"pytest-{n}.log") for n in (1, 2)]
    try:
        for run in runs:
            run.wait_exit(timeout=120)
    finally:
        for run in runs:
            run.kill()
    for run in runs:
        assert run.process.returncode == 0, run.log()[-4000:]
    folders = runs[0].run_dirs()
    assert len(folders) == 2, folders
    records = [load_run(folder) for folder in folders]
    assert {r.meta["process"]["pid"] for r in records} == {run.process.pid for run in runs}
    for record in records:
        assert record.complete, record.incomplete_reason
        assert record.of_kind("test"), "each run keeps its own results"
        pids = {r.meta["process"]["pid"] for r in records}
        assert record.meta["process"]["pid"] in pids
        assert_record_intact(record)
    node_sets = [sorted(t["nodeid"] for t in r.of_kind("test")) for r in records]
    assert node_sets[0] == node_sets[1], "each run folder holds exactly one run's records"
    latest = (reports / "latest").resolve()
    assert latest in {folder.resolve() for folder in folders}
