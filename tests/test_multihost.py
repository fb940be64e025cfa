"""The suites on several hosts: two embedded engines on 127.0.0.1, pytest-xdist workers bound one per host,
one run record labelled by host, and `harness report`'s hosts side by side."""

from __future__ import annotations

import importlib.util
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.config import HarnessConfig
from harness.engine import EmbeddedEngine
from harness.errors import HarnessError
from harness.load.generator import LoadResult, RequestSample
from harness.plugin.hosts import parse_hosts
from harness.report.compare import build_report
from harness.report.hosts import compare_hosts
from harness.report.render import render_report
from harness.runs import RunRecord, RunRecorder, load_run
from harness.testing.helpers import run_pytest

REPO = Path(__file__).resolve().parents[1]
SUITES = REPO / "suites"
if importlib.util.find_spec("xdist") is None:
    pytest.skip("needs the scale extra (pip install 'ollama-test-harness[scale]')", allow_module_level=True)
pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def two_engines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    root = tmp_path_factory.mktemp("engines")
    with EmbeddedEngine(models_dir=root / "a") as first, EmbeddedEngine(models_dir=root / "b") as second:
        yield first.host, second.host


def run_suites(reports: Path, *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    done, _ = run_pytest(reports, "-rA", *args, cwd=cwd, timeout=110)
    return done


def only_run(reports: Path) -> RunRecord:
    (folder,) = [entry for entry in reports.iterdir() if entry.is_dir() and not entry.is_symlink()]
    return load_run(folder)


def explain(done: subprocess.CompletedProcess[str]) -> str:
    return f"exit {done.returncode}\n{done.stdout[-5000:]}\n{done.stderr[-2000:]}"


SELECTED = ("-k", "num_predict or list_shows or reports_a_version")


def test_two_xdist_workers_on_two_hosts_write_one_run_record(
    two_engines: tuple[str, str], tmp_path: Path
) -> None:
    first, second = two_engines
    done = run_suites(
        tmp_path,
        str(SUITES / "test_lifecycle.py"),
        *SELECTED,
        "--ollama-host",
        f"{first},{second}",
        "-n",
        "2",
    )
    assert done.returncode == 0, explain(done)
    run = only_run(tmp_path)
    assert run.complete, run.incomplete_reason
    tests = run.of_kind("test")
    assert len(tests) == 6 and {t["outcome"] for t in tests} == {"passed"}
    by_host: dict[str, set[str]] = {}
    for test in tests:
        assert test["nodeid"].endswith(f"[{test['host']}]")
        by_host.setdefault(test["host"], set()).add(test["worker"])
    assert set(by_host) == {first, second}
    assert all(len(workers) == 1 for workers in by_host.values()), by_host  # one worker per host...
    assert by_host[first] != by_host[second]  # ...and a different one for each
    hosts = run.meta["hosts"]
    assert set(hosts) == {first, second}
    for host in (first, second):
        assert hosts[host]["status"] == "complete" and hosts[host]["server"]["host"] == host
        assert len(hosts[host]["models"]) == 1 and not hosts[host].get("cleanup_problems")
    assert {model["host"] for model in run.meta["models"]} == {first, second}
    timed = [r for r in run.of_kind("requests") if r["model"] is not None]  # each worker's server time
    assert {r["host"] for r in timed} == {first, second}
    assert all(r["requests"] > 0 and r["busy_s"] > 0 for r in timed)
    text = render_report(build_report(run, config=HarnessConfig()), "text")
    assert "== Hosts" in text and first in text and second in text


def test_without_xdist_the_hosts_run_one_after_another(two_engines: tuple[str, str], tmp_path: Path) -> None:
    first, second = two_engines
    done = run_suites(
        tmp_path,
        str(SUITES / "test_lifecycle.py"),
        *SELECTED,
        "--ollama-host",
        first,
        "--ollama-host",
        second,
    )
    assert done.returncode == 0, explain(done)
    run = only_run(tmp_path)
    assert run.complete
    order = [test["host"] for test in run.of_kind("test")]
    assert order == [first] * 3 + [second] * 3
    assert {r["host"] for r in run.of_kind("requests")} == {first, second}


def test_a_worker_that_dies_is_reported_and_the_run_is_incomplete(
    two_engines: tuple[str, str], tmp_path: Path
) -> None:
    first, second = two_engines
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "conftest.py").write_text((SUITES / "conftest.py").read_text())
    (suite / "test_die.py").write_text(
        textwrap.dedent(
            f"""
            import os

            def test_host(harness_session):
                if harness_session.server.host == {second!r}:
                    os._exit(3)
            """
        )
    )
    done = run_suites(
        tmp_path / "reports", str(suite), "--ollama-host", f"{first},{second}", "-n", "2", cwd=suite
    )
    assert done.returncode == 1, explain(done)
    run = only_run(tmp_path / "reports")
    assert run.status == "incomplete" and "died" in (run.incomplete_reason or ""), run.incomplete_reason
    assert len(run.meta["lost_workers"]) == 1
    outcomes = {test["nodeid"].rpartition("[")[2]: test["outcome"] for test in run.of_kind("test")}
    assert outcomes == {f"{first}]": "passed", f"{second}]": "failed"}


def test_an_unanswering_host_stops_the_run_before_any_test(
    two_engines: tuple[str, str], tmp_path: Path
) -> None:
    done = run_suites(
        tmp_path,
        str(SUITES / "test_lifecycle.py"),
        *SELECTED,
        "--ollama-host",
        f"{two_engines[0]},127.0.0.1:9",
    )
    assert done.returncode == 2, explain(done)
    assert "no Ollama server answers at 127.0.0.1:9" in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_parse_hosts_takes_repeats_and_commas_in_order() -> None:
    assert parse_hosts(None) == ()
    assert parse_hosts(["a:1,b:2", "c:3", "a:1"]) == ("a:1", "b:2", "c:3")
    with pytest.raises(HarnessError, match="empty host"):
        parse_hosts(["a:1,,b:2"])
    with pytest.raises(HarnessError, match="same server twice"):
        parse_hosts(["a:11434", "http://a:11434"])


def _load_record(host: str, e2e: float, rss: int) -> list[dict[str, object]]:
    samples = [RequestSample("ok", e2e / 4, [e2e / 8] * 3, e2e, 4) for _ in range(20)]
    load = LoadResult("closed", samples, wall_s=e2e * 20, client_cpu_s=0.1, process_cpu_s=0.1, concurrency=1)
    memory = {"kind": "memory", "model": "m", "ps_size": rss, "rss_samples": [rss, rss]}
    return [{**load.to_record("m", "c1"), "host": host}, {**memory, "host": host}]


def test_the_report_flags_the_host_that_is_slower_or_uses_more_memory(tmp_path: Path) -> None:
    models = [{"name": "m", "digest": "sha256:abc", "host": host} for host in ("fast:1", "slow:2")]
    with RunRecorder.create(tmp_path, {"models": models}) as recorder:
        for record in [*_load_record("fast:1", 0.1, 100 << 20), *_load_record("slow:2", 0.3, 300 << 20)]:
            recorder.append(record)
    run = load_run(recorder.path)
    rows = {row.metric: row for row in compare_hosts(run)}
    assert rows["load.c1.e2e_p50"].flagged == {"slow:2": "slower"}
    assert rows["load.c1.e2e_p50"].digest == "sha256:abc"
    assert rows["memory.ps_size"].flagged == {"slow:2": "more memory"}
    assert rows["load.c1.error_rate"].flagged == {}
    report = build_report(run, config=HarnessConfig())
    assert any(
        "host slow:2 is slower than the others on m: load.c1.e2e_p50" in note for note in report.warnings
    )
    assert "(SLOWER)" in render_report(report, "text")


def test_two_hand_started_serve_hosts_are_asked_their_queue_never_assumed(tmp_path: Path) -> None:
    """Two `harness serve` hosts the run did not start: one with its defaults (1 slot, a queue of 512), one
    with 2 slots and a queue of 3. The session asks each its settings: the overload test overflows the
    small queue, and skips the default one with the reason (512 queued requests are no test of a 503)."""
    with (
        EmbeddedEngine(models_dir=tmp_path / "a") as default,
        EmbeddedEngine(
            models_dir=tmp_path / "b", env={"OLLAMA_NUM_PARALLEL": "2", "OLLAMA_MAX_QUEUE": "3"}
        ) as small_queue,
    ):
        done = run_suites(
            tmp_path / "reports",
            str(SUITES / "test_load.py"),
            "--ollama-host",
            f"{default.host},{small_queue.host}",
        )
    assert done.returncode == 0, explain(done)
    run = only_run(tmp_path / "reports")
    overload = {t["host"]: t for t in run.of_kind("test") if "overload" in t["nodeid"]}
    assert overload[small_queue.host]["outcome"] == "passed", overload
    assert overload[default.host]["outcome"] == "skipped", overload
    assert "a queue of 512" in overload[default.host]["message"], overload
    hosts = run.meta["hosts"]
    assert hosts[small_queue.host]["server"]["num_parallel"] == 2
    assert hosts[small_queue.host]["server"]["max_queue"] == 3
    assert hosts[default.host]["server"]["settings_from"] == {"num_parallel": "server", "max_queue": "server"}
    (busy,) = [r for r in run.of_kind("load") if r["scenario"] == "overload"]
    assert busy["host"] == small_queue.host and busy["summary"]["counts"]["busy"] >= 1
