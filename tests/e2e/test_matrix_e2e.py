"""End to end: `pytest suites/ --harness-matrix ...` on the embedded engine, and `harness report` on its run.

Kept short with -k: the oracle profile in f32 and q4_0 (built in each type), and a user's F32 GGUF that the
embedded engine quantizes to q8_0 and q4_K_M at create but not to q4_0 (Ollama quantizes to no q4_0): that
type is skipped with the reason.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.gguf.build import build_cached
from harness.gguf.spec import load_profile
from harness.plugin.matrix import NOT_SUPPORTED

from .test_suites_e2e import REPO, SUITES, explain, only_run, outcomes, run_suites

# the lifecycle's oracle tests (test_oracle_*), not the tool oracle's controls
SELECTED = "test_oracle_ or num_predict or ps_size or math"


@pytest.mark.timeout(300)
def test_matrix_runs_each_type_and_the_report_shows_it(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    done, _ = run_suites(
        reports,
        str(SUITES),
        "--harness-embedded-engine",
        "--harness-matrix",
        "q4_0,f32",
        "-k",
        SELECTED,
        "--harness-max-items",
        "2",
    )
    assert done.returncode == 0, explain(done)
    run = only_run(reports)
    tests = outcomes(run)
    for tensor_type in ("f32", "q4_0"):
        assert tests[f"suites/test_lifecycle.py::test_num_predict_is_exact[{tensor_type}]"] == "passed"
        assert tests[f"suites/test_math.py::test_math_accuracy_reaches_the_threshold[{tensor_type}]"] == (
            "xfailed"
        )
    assert tests["suites/test_lifecycle.py::test_oracle_output_is_the_same_in_every_matrix_type"] == "passed"
    entries = {entry["tensor_type"]: entry for entry in run.meta["matrix"]["entries"]}
    assert [entry["status"] for entry in entries.values()] == ["ok", "ok"]
    models = {model["name"]: model for model in run.meta["models"]}
    assert {models[entries[t]["model"]]["tensor_type"] for t in entries} == {"f32", "q4_0"}
    suites = {record["model"]: record for record in run.of_kind("suite")}
    assert set(suites) == {entries["f32"]["model"], entries["q4_0"]["model"]}
    report = subprocess.run(
        [sys.executable, "-m", "harness.cli", "report", str(reports / "latest"), "--no-baseline"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "== Quantization matrix" in report.stdout, report.stdout + report.stderr
    matrix = report.stdout.split("== Quantization matrix", 1)[1]
    q4_line = next(line for line in matrix.splitlines() if line.startswith("q4_0"))
    assert "(reference)" in next(line for line in matrix.splitlines() if line.startswith("f32"))
    assert q4_line.count("%)") >= 4, q4_line  # deltas of file size, /api/ps size, TTFT, tokens/s


@pytest.mark.timeout(300)
def test_the_server_quantizes_a_users_gguf_and_a_type_it_cannot_is_skipped_with_the_reason(
    tmp_path: Path,
) -> None:
    f32 = build_cached(load_profile("tiny").replace(tensor_type="f32"))
    reports = tmp_path / "reports"
    done, _ = run_suites(
        reports,
        str(SUITES / "test_lifecycle.py"),
        "--harness-embedded-engine",
        "--harness-gguf",
        str(f32.path),
        "--harness-modelfile",
        "fixture",
        "--harness-matrix",
        "f32,q8_0,q4_K_M,q4_0",
        "-k",
        "num_predict",
    )
    assert done.returncode == 0, explain(done)
    run = only_run(reports)
    tests = outcomes(run)
    assert tests["suites/test_lifecycle.py::test_num_predict_is_exact[f32]"] == "passed"
    assert tests["suites/test_lifecycle.py::test_num_predict_is_exact[q8_0]"] == "passed"
    assert tests["suites/test_lifecycle.py::test_num_predict_is_exact[q4_K_M]"] == "passed"
    assert tests["suites/test_lifecycle.py::test_num_predict_is_exact[q4_0]"] == "skipped"
    skipped = next(r for r in run.of_kind("test") if r["nodeid"].endswith("[q4_0]"))
    assert NOT_SUPPORTED in skipped["message"] and "Q4_0" in skipped["message"], skipped
    entries = {e["tensor_type"]: e for e in run.meta["matrix"]["entries"]}
    assert {entries[t]["status"] for t in ("f32", "q8_0", "q4_K_M")} == {"ok"}, entries
    assert entries["q4_0"]["status"] == "skipped" and NOT_SUPPORTED in entries["q4_0"]["reason"]
    quantized = next(m for m in run.meta["models"] if m["name"] == entries["q8_0"]["model"])
    assert quantized.get("quantize") == "q8_0", quantized
