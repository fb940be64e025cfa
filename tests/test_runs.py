"""The run record: folder layout, atomic run.json, line-by-line results that survive a crash, unique run ids,
the `latest` symlink, and the loader's checks."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

from harness.errors import RunRecordError
from harness.runs import (
    RESULTS_FILE,
    RUN_FILE,
    RunRecorder,
    harness_info,
    list_runs,
    load_run,
    machine_info,
    scan_runs,
)

SERVER = {"host": "127.0.0.1:11434", "version": "0.31.2", "engine_kind": "ollama"}


def test_create_writes_run_json_and_points_latest(tmp_path):
    reports = tmp_path / "reports"
    recorder = RunRecorder.create(reports, {"server": SERVER, "options": {"suites": ["arith"]}})
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{6}", recorder.run_id)
    meta = json.loads((recorder.path / RUN_FILE).read_text())
    assert meta["schema_version"] == 1 and meta["status"] == "running" and meta["finished_at"] is None
    assert meta["server"] == SERVER and meta["options"] == {"suites": ["arith"]}
    assert meta["process"] == {"pid": os.getpid(), "hostname": meta["machine"]["hostname"]}
    assert {"os", "cpu", "cores", "ram_bytes", "gpu", "fingerprint"} <= set(meta["machine"])
    assert (recorder.path / RESULTS_FILE).is_file()
    assert os.readlink(reports / "latest") == recorder.run_id  # relative: the folder can move
    assert load_run(reports / "latest").run_id == recorder.run_id
    recorder.finish()


def test_results_are_on_disk_line_by_line_before_finish(tmp_path):
    recorder = RunRecorder.create(tmp_path)
    recorder.append({"kind": "test", "nodeid": "a::b", "outcome": "passed", "duration_s": np.float32(0.5)})
    recorder.append({"kind": "load", "model": "m", "samples": [{"e2e_s": np.float64(0.2)}], "n": np.int64(3)})
    lines = (recorder.path / RESULTS_FILE).read_text().splitlines()
    assert [json.loads(line)["kind"] for line in lines] == ["test", "load"]
    assert json.loads(lines[1])["n"] == 3
    run = load_run(recorder.path)
    assert run.status == "running" and len(run.results) == 2  # this process is alive: still running
    recorder.finish()


def test_append_needs_a_known_kind(tmp_path):
    with RunRecorder.create(tmp_path) as recorder, pytest.raises(ValueError, match="kind"):
        recorder.append({"outcome": "passed"})


def test_update_and_finish(tmp_path):
    recorder = RunRecorder.create(tmp_path)
    recorder.update({"models": [{"name": "m", "digest": "sha256:00"}]})
    with pytest.raises(ValueError, match="managed by the recorder"):
        recorder.update({"status": "complete"})
    recorder.finish()
    run = load_run(recorder.path)
    assert run.complete and run.model_digests == {"sha256:00"} and run.meta["finished_at"]
    assert not run.warnings
    with pytest.raises(RunRecordError, match="already finished"):
        recorder.append({"kind": "test"})
    with pytest.raises(RunRecordError, match="already finished"):
        recorder.finish()
    assert not [entry for entry in tmp_path.iterdir() if entry.name.startswith(".")]  # no temp files left


def test_context_manager_marks_crash_and_interrupt_incomplete(tmp_path):
    with pytest.raises(RuntimeError), RunRecorder.create(tmp_path) as crashed:
        raise RuntimeError("server died")
    with pytest.raises(KeyboardInterrupt), RunRecorder.create(tmp_path) as interrupted:
        raise KeyboardInterrupt
    assert load_run(crashed.path).incomplete_reason == "crashed: RuntimeError: server died"
    run = load_run(interrupted.path)
    assert run.status == "incomplete" and "SIGINT" in str(run.incomplete_reason)
    assert "INCOMPLETE" in run.warnings[0]


def test_killed_process_leaves_partial_results_and_an_incomplete_run(tmp_path):
    """A real crash: the writer kills itself with SIGKILL after three results."""
    script = textwrap.dedent(f"""
        import os, signal
        from harness.runs import RunRecorder
        recorder = RunRecorder.create({str(tmp_path)!r})
        for index in range(3):
            recorder.append({{"kind": "test", "nodeid": f"t{{index}}", "outcome": "passed"}})
        print(recorder.path, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == -9
    run = load_run(done.stdout.strip())
    assert run.status == "incomplete" and "process" in str(run.incomplete_reason)
    assert [record["nodeid"] for record in run.results] == ["t0", "t1", "t2"]


def test_runs_started_at_once_get_distinct_folders(tmp_path):
    recorders: list[RunRecorder] = []
    lock = threading.Lock()

    def start() -> None:
        recorder = RunRecorder.create(tmp_path)
        with lock:
            recorders.append(recorder)

    threads = [threading.Thread(target=start) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len({recorder.path for recorder in recorders}) == 16
    assert load_run(tmp_path / "latest").run_id in {recorder.run_id for recorder in recorders}
    for recorder in recorders:
        recorder.finish()
    assert len(list_runs(tmp_path)) == 16


def test_run_id_collision_retries(tmp_path, monkeypatch):
    ids = iter(["20260101-000000-aaaaaa", "20260101-000000-aaaaaa", "20260101-000000-bbbbbb"])
    monkeypatch.setattr("harness.runs.new_run_id", lambda: next(ids))
    first, second = RunRecorder.create(tmp_path), RunRecorder.create(tmp_path)
    assert (first.run_id, second.run_id) == ("20260101-000000-aaaaaa", "20260101-000000-bbbbbb")


def test_latest_that_is_not_a_symlink_is_an_error(tmp_path):
    (tmp_path / "latest").mkdir()
    with pytest.raises(RunRecordError, match="not a symlink"):
        RunRecorder.create(tmp_path)


def test_unwritable_reports_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(RunRecordError, match="cannot create the reports folder"):
        RunRecorder.create(blocker / "reports")


def _finished_run(tmp_path: Path) -> Path:
    with RunRecorder.create(tmp_path) as recorder:
        for index in range(3):
            recorder.append({"kind": "test", "nodeid": f"t{index}", "outcome": "passed"})
    return recorder.path


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "holds a list"),
        (
            '{"schema_version": 99, "run_id": "x", "started_at": "y", "status": "complete"}',
            "schema version 99",
        ),
        ('{"run_id": "x", "started_at": "y", "status": "complete"}', "no valid schema_version"),
        ('{"schema_version": 1, "started_at": "y", "status": "complete"}', "lacks run_id"),
        ('{"schema_version": 1, "run_id": "x", "started_at": "y", "status": "weird"}', "unknown status"),
    ],
)
def test_bad_run_json(tmp_path, content, message):
    run = _finished_run(tmp_path)
    (run / RUN_FILE).write_text(content)
    with pytest.raises(RunRecordError, match=message) as caught:
        load_run(run)
    assert caught.value.hint


def test_missing_folder_file_and_run_json(tmp_path):
    with pytest.raises(RunRecordError, match="no run folder"):
        load_run(tmp_path / "nope")
    (tmp_path / "file").write_text("")
    with pytest.raises(RunRecordError, match="not a run folder"):
        load_run(tmp_path / "file")
    with pytest.raises(RunRecordError, match=r"run\.json is missing"):
        load_run(tmp_path)


def test_torn_last_line_is_skipped_but_a_bad_middle_line_is_corrupt(tmp_path):
    run = _finished_run(tmp_path)
    results = run / RESULTS_FILE
    results.write_text(results.read_text() + '{"kind": "te')
    loaded = load_run(run)
    assert len(loaded.results) == 3 and "torn last line (4)" in loaded.warnings[0]
    lines = results.read_text().splitlines()
    results.write_text("\n".join([lines[0], "garbage", *lines[1:3]]) + "\n")
    with pytest.raises(RunRecordError, match=r"line 2 of results\.jsonl"):
        load_run(run)


def test_missing_results_file_is_a_warning(tmp_path):
    run = _finished_run(tmp_path)
    (run / RESULTS_FILE).unlink()
    loaded = load_run(run)
    assert loaded.results == [] and "results.jsonl is missing" in loaded.warnings[0]


def test_scan_and_list_runs(tmp_path):
    first, second = _finished_run(tmp_path), _finished_run(tmp_path)
    (tmp_path / "not-a-run").mkdir()
    (tmp_path / "README.md").write_text("runs live here")
    runs, broken = scan_runs(tmp_path)
    assert [run.path for run in runs] == [first, second]
    assert [path.name for path, _ in broken] == ["not-a-run"]
    assert runs[0].results == []  # listing reads run.json only
    assert len(list_runs(tmp_path, with_results=True)[0].results) == 3
    with pytest.raises(RunRecordError, match="no reports folder"):
        list_runs(tmp_path / "missing")


def test_machine_and_harness_info():
    first, second = machine_info(), machine_info()
    assert first["fingerprint"] == second["fingerprint"] and len(first["fingerprint"]) == 16
    assert first["cores"] >= 1 and first["ram_bytes"] > 0 and first["cpu"]
    info = harness_info()
    assert info["version"]
    assert info["commit"] is None or re.fullmatch(r"[0-9a-f]{40}", info["commit"])
