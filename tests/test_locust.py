"""Distributed load on Locust: a headless master and local worker processes against real servers on 127.0.0.1.

The canned NDJSON server gives fast, exact expectations (8 chunks a request); one small run goes against
the embedded engine with a fixture model. Every run is read back through `harness report`'s summaries.
"""

from __future__ import annotations

import importlib.util
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from harness.cli import main as harness_main
from harness.config import HarnessConfig
from harness.engine import EmbeddedEngine
from harness.errors import HarnessError
from harness.gguf.build import build_cached
from harness.gguf.spec import load_profile
from harness.load.commands import record_locust_run, run_locust
from harness.report.compare import build_report
from harness.report.metrics import collect_metrics
from harness.runs import load_run
from harness.server.client import OllamaClient
from harness.testing.canned_server import CannedBehaviour, CannedServer

if importlib.util.find_spec("locust") is None:  # not imported here: locust would gevent-patch pytest
    pytest.skip("needs the scale extra (pip install 'ollama-test-harness[scale]')", allow_module_level=True)
pytestmark = pytest.mark.timeout(90)
CHUNKS = 8


@pytest.fixture(scope="module")
def canned() -> Iterator[CannedServer]:
    with CannedServer(CannedBehaviour(chunks=CHUNKS)) as server:
        yield server


def test_two_workers_account_for_every_request_and_the_report_reads_the_run(
    canned: CannedServer, tmp_path: Path
) -> None:
    run = run_locust(canned.host, "m", workers=2, users=4, requests=60, log_dir=tmp_path)
    assert run.problems == [] and run.worker_exits == [0, 0]
    workers = run.data["workers"]
    assert sorted(worker["index"] for worker in workers) == [0, 1]
    assert [worker["final"]["started"] for worker in workers] == [30, 30]
    assert sum(worker["samples"] for worker in workers) == 60 == len(run.data["samples"])
    samples = run.data["samples"]
    assert all(sample["outcome"] == "ok" for sample in samples)
    assert all(sample["output_tokens"] == CHUNKS and len(sample["itl_s"]) == CHUNKS - 1 for sample in samples)
    assert all(0 < sample["ttft_s"] <= sample["e2e_s"] for sample in samples)

    recorder = record_locust_run(
        run, reports_dir=tmp_path / "reports", host=canned.host, model="m", scenario="c4", meta={}
    )
    loaded = load_run(recorder.path)
    assert loaded.complete
    (record,) = loaded.of_kind("load")
    assert record["host"] == canned.host and record["runner"] == "locust"
    assert record["summary"]["counts"] == {"ok": 60, "busy": 0, "timeout": 0, "error": 0}
    metrics = collect_metrics(loaded)
    for name in ("ttft_p50", "itl_p50", "e2e_p99", "tokens_per_s", "requests_per_s", "error_rate"):
        assert metrics[("m", f"load.c4.{name}")].value is not None, name
    assert build_report(loaded, config=HarnessConfig()).exit_status == 0


def test_the_cli_writes_a_locust_run_and_an_in_process_run_the_report_compares(
    canned: CannedServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reports = tmp_path / "reports"
    common = ["load", "--host", canned.host, "--model", "m", "--users", "2", "--requests", "20"]
    assert harness_main([*common, "--run-dir", str(reports)]) == 0
    assert harness_main([*common, "--locust", "--workers", "2", "--run-dir", str(reports)]) == 0
    assert "20 requests (ok 20, busy 0, timeout 0, error 0)" in capsys.readouterr().out
    folders = [path for path in reports.iterdir() if path.is_dir() and not path.is_symlink()]
    in_process, locust = sorted((load_run(path) for path in folders), key=lambda run: run.started_at)
    assert [r.of_kind("load")[0]["runner"] for r in (in_process, locust)] == ["harness.load", "locust"]
    assert (locust.path / "locust-master.log").is_file()
    report = build_report(locust, config=HarnessConfig(), baseline=in_process)
    names = {row.name for row in report.comparison if row.baseline is not None and row.current is not None}
    assert {"load.c2.ttft_p50", "load.c2.requests_per_s"} <= names


def test_a_worker_that_dies_is_reported_and_the_run_is_incomplete(tmp_path: Path) -> None:
    slow = CannedBehaviour(chunks=4, chunk_delay_s=0.05)
    with CannedServer(slow) as server:
        port = server.port
        killed: list[int] = []

        def kill_one_worker() -> None:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not killed:
                time.sleep(0.5)
                for proc in psutil.Process().children():
                    streaming = any(c.raddr and c.raddr.port == port for c in proc.net_connections())
                    if "--worker" in proc.cmdline() and streaming:
                        proc.kill()
                        killed.append(proc.pid)
                        return

        killer = threading.Thread(target=kill_one_worker, daemon=True)
        killer.start()
        run = run_locust(server.host, "m", workers=2, users=2, duration_s=8, log_dir=tmp_path)
        killer.join(5)
    assert killed, "no worker was killed"
    assert any("lost" in problem for problem in run.problems), run.problems
    assert any(code not in (0, None) for code in run.worker_exits)
    recorder = record_locust_run(
        run, reports_dir=tmp_path / "reports", host=server.host, model="m", scenario="c2", meta={}
    )
    loaded = load_run(recorder.path)
    assert not loaded.complete and "lost" in (loaded.incomplete_reason or "")
    (record,) = loaded.of_kind("load")
    assert len(record["lost_workers"]) == 1 and record["summary"]["counts"]["ok"] > 0


def test_bad_sizes_are_refused_with_a_hint() -> None:
    with pytest.raises(HarnessError, match="every worker needs at least one user"):
        run_locust("127.0.0.1:1", "m", workers=3, users=2, requests=5)
    with pytest.raises(HarnessError, match="needs an end"):
        run_locust("127.0.0.1:1", "m", workers=1, users=1)


def test_a_small_run_against_the_embedded_engine(tmp_path: Path) -> None:
    tiny = build_cached(load_profile("tiny"))
    with EmbeddedEngine(models_dir=tmp_path / "models") as engine:
        with OllamaClient(engine.host, timeout=60) as client:
            client.create_model("tiny", gguf_path=tiny.path, template="{{ .Prompt }}")
        run = run_locust(
            engine.host, "tiny", workers=2, users=2, requests=6, options={"num_predict": 4}, log_dir=tmp_path
        )
    assert run.problems == []
    samples = run.data["samples"]
    assert len(samples) == 6 and [s["outcome"] for s in samples] == ["ok"] * 6, samples
    assert all(s["output_tokens"] == 4 and s["ttft_s"] is not None for s in samples)
