"""The baseline key: two runs on the same hardware under different host names compare (every GitHub-hosted
job is a fresh VM with another name), other hardware does not, `[report] baseline_match` widens or narrows
the key, the report says what matched, and `--require-baseline` makes "no baseline" a failure.

The runs are real `harness load` runs against a canned server, the second one in its own UTS namespace
(`unshare -u`: a host name of its own) where that works, else under `HARNESS_HOSTNAME`.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.runs import GIB, hardware_key, load_run, write_json_atomic
from harness.testing.canned_server import CannedBehaviour, CannedServer
from harness.testing.helpers import clean_environ

OTHER_HOST = "fresh-ci-vm-4711"


def uts_namespace_works() -> bool:
    unshare = shutil.which("unshare")
    if unshare is None:
        return False
    done = subprocess.run(
        [unshare, "-u", "sh", "-c", f"hostname {OTHER_HOST} && hostname"],
        capture_output=True, text=True, timeout=10, check=False,
    )  # fmt: skip
    return done.returncode == 0 and done.stdout.strip() == OTHER_HOST


@pytest.fixture(scope="module")
def server() -> Iterator[CannedServer]:
    with CannedServer(CannedBehaviour(chunks=3)) as canned:
        yield canned


def harness(
    *args: str, other_host: bool = False, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "harness.cli", *args]
    environ = clean_environ(**(env or {}))
    if other_host:
        if uts_namespace_works():
            command = ["unshare", "-u", "sh", "-c", f'hostname {OTHER_HOST} && exec "$@"', "sh", *command]
        else:
            environ["HARNESS_HOSTNAME"] = OTHER_HOST
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False, env=environ)


def load_run_cli(server: CannedServer, reports: Path, *extra: str, other_host: bool = False) -> Path:
    done = harness(
        "load", "--host", server.host, "--model", "m", "--users", "2", "--requests", "4",
        "--run-dir", str(reports), *extra, other_host=other_host,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.rstrip().endswith("Result: OK"), done.stdout
    return (reports / "latest").resolve()


def test_runs_under_different_host_names_compare(tmp_path: Path, server: CannedServer) -> None:
    reports = tmp_path / "reports"
    first = load_run_cli(server, reports)
    second = load_run_cli(server, reports, other_host=True)
    names = [load_run(path).meta["machine"]["hostname"] for path in (first, second)]
    assert names[1] == OTHER_HOST and names[0] != OTHER_HOST, names
    done = harness("report", str(reports / "latest"), "--require-baseline", "--format", "json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["baseline"]["id"] == first.name
    assert "cpu" in report["baseline_match"] and "ram_gib" in report["baseline_match"], report[
        "baseline_match"
    ]
    text = harness("report", str(reports / "latest")).stdout
    assert f"Baseline {first.name} matched on: same models" in text, text
    assert re.search(rf"machine name +{names[0]} +{OTHER_HOST}", text), text  # what differs, said

    # Narrowed to the host name too: no baseline, and --require-baseline fails the report.
    config = tmp_path / "harness.toml"
    config.write_text('[report]\nbaseline_match = ["cpu", "cores", "ram_gib", "gpu", "hostname"]\n')
    done = harness("report", str(reports / "latest"), "--config", str(config), "--require-baseline")
    assert done.returncode == 1, done.stdout
    assert "No baseline" in done.stdout and "hostname" in done.stdout
    assert "Result: FAILED: no baseline (--require-baseline)" in done.stdout
    assert harness("report", str(reports / "latest"), "--config", str(config)).returncode == 0


def test_other_hardware_is_no_baseline_unless_widened(tmp_path: Path, server: CannedServer) -> None:
    reports = tmp_path / "reports"
    first = load_run_cli(server, reports)
    meta = json.loads((first / "run.json").read_text())
    meta["machine"].update(cpu="Some Other CPU", ram_bytes=meta["machine"]["ram_bytes"] * 4, ram_gib=None)
    write_json_atomic(first / "run.json", meta)
    load_run_cli(server, reports)
    done = harness("report", str(reports / "latest"), "--require-baseline")
    assert done.returncode == 1 and "No baseline" in done.stdout, done.stdout
    config = tmp_path / "harness.toml"
    config.write_text("[report]\nbaseline_match = []\n")
    done = harness("report", str(reports / "latest"), "--require-baseline", "--config", str(config))
    assert done.returncode == 0, done.stdout
    assert "any machine" in done.stdout


def test_ram_is_compared_in_whole_gib_and_older_runs_have_a_key() -> None:
    older = {"cpu": "X", "cores": 4, "ram_bytes": 16 * GIB - 300 * (1 << 20), "gpu": None}
    newer = {"cpu": "X", "cores": 4, "ram_bytes": 16 * GIB - 120 * (1 << 20), "ram_gib": 16, "gpu": None}
    assert hardware_key(older) == hardware_key(newer) == {"cpu": "X", "cores": 4, "ram_gib": 16, "gpu": None}


def test_a_bad_baseline_match_is_refused_with_the_known_keys(tmp_path: Path) -> None:
    config = tmp_path / "harness.toml"
    config.write_text('[report]\nbaseline_match = ["cpu", "colour"]\n')
    done = harness("report", "--list", "--reports-dir", str(tmp_path), "--config", str(config))
    assert done.returncode == 2 and "baseline_match" in done.stderr and "hostname" in done.stderr, done.stderr


def test_harness_load_fails_when_requests_fail(tmp_path: Path, server: CannedServer) -> None:
    """A dead host: every request is an error, the exit status is 1 and the result says FAILED; the report of
    that run fails too."""
    done = harness(
        "load", "--host", "127.0.0.1:9", "--model", "m", "--requests", "3", "--users", "1",
        "--timeout", "5", "--run-dir", str(tmp_path),
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Result: FAILED: 3 error" in done.stdout, done.stdout
    report = harness("report", str(tmp_path / "latest"), "--no-baseline")
    assert report.returncode == 1 and "3 error" in report.stdout, report.stdout


def test_busy_answers_fail_harness_load_unless_expected(tmp_path: Path, server: CannedServer) -> None:
    with CannedServer(CannedBehaviour(chunks=20, chunk_delay_s=0.05), parallel=1, max_queue=0) as busy:
        args = ["load", "--host", busy.host, "--model", "m", "--users", "4", "--requests", "4"]
        done = harness(*args, "--run-dir", str(tmp_path / "a"))
        assert done.returncode == 1 and "busy (503; pass --allow-busy" in done.stdout, done.stdout
        done = harness(*args, "--run-dir", str(tmp_path / "b"), "--allow-busy")
        assert done.returncode == 0 and "busy" in done.stdout and "Result: OK" in done.stdout, done.stdout
