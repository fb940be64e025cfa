"""`harness report` end to end through `harness.cli.main`: run folders written with the real RunRecorder
(load samples drawn from seeded distributions), hand-broken folders, every output format, exit codes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.cli import main
from harness.config import HarnessConfig
from harness.report.compare import build_report
from harness.report.metrics import identity_of, load_by_identity
from harness.runs import RESULTS_FILE, RUN_FILE, RunRecorder, load_run

MODEL: dict[str, Any] = {
    "name": "harness-tiny:q8_0",
    "digest": "sha256:" + "ab" * 32,
    "spec_hash": "5f0e2c",
    "profile": "tiny",
    "tensor_type": "q8_0",
    "file_size": 487_424,
    "sha256": "ab" * 32,
}
SERVER = {"host": "127.0.0.1:11434", "version": "0.31.2", "engine_kind": "embedded"}


def load_samples(rng: np.random.Generator, n: int, slowdown: float) -> list[dict[str, Any]]:
    """Requests as the load generator records them: TTFT lognormal, inter-token gaps gamma, a few errors."""
    samples = []
    for _ in range(n):
        if rng.random() < 0.01:
            samples.append(
                {
                    "started_at": 0.0,
                    "outcome": "timeout",
                    "ttft_s": None,
                    "itl_s": [],
                    "e2e_s": 2.0,
                    "output_tokens": 0,
                    "error": "no answer within 30 s",
                }
            )
            continue
        tokens = int(rng.integers(24, 48))
        ttft = float(rng.lognormal(np.log(0.08 * slowdown), 0.25))
        gaps = rng.gamma(8.0, 0.02 * slowdown / 8.0, size=tokens - 1)
        samples.append(
            {
                "outcome": "ok",
                "ttft_s": ttft,
                "itl_s": gaps.tolist(),
                "e2e_s": ttft + float(gaps.sum()),
                "output_tokens": tokens,
                "error": None,
            }
        )
    return samples


def make_run(
    reports: Path,
    *,
    seed: int,
    slowdown: float = 1.0,
    accuracy: float = 0.9,
    rss_mib: float = 60.0,
    finish: str | None = "complete",
    meta: dict[str, Any] | None = None,
) -> Path:
    """A realistic run folder: suite + prompt + test records, two load scenarios, one memory record."""
    rng = np.random.default_rng(seed)
    recorder = RunRecorder.create(
        reports, {"server": SERVER, "models": [MODEL], "options": {"seed": seed}, **(meta or {})}
    )
    n_items = 20
    n_right = round(accuracy * n_items)
    for item in range(n_items):
        right = item < n_right
        recorder.append(
            {
                "kind": "prompt",
                "suite": "arith",
                "model": MODEL["name"],
                "item_id": f"arith-{item:02d}",
                "prompt": f"What is {item} + {item}?",
                "response": f"The answer is {2 * item if right else item}.",
                "extracted_strict": 2 * item if right else None,
                "extracted_flexible": 2 * item if right else item,
                "score_strict": 1.0 if right else 0.0,
                "score_flexible": 1.0 if right else 0.0,
                "passed": right,
                "reason": "exact" if right else f"expected {2 * item}, got {item}",
                "repeat": 0,
            }
        )
    suite_passed = accuracy >= 0.8
    recorder.append(
        {
            "kind": "suite",
            "suite": "arith",
            "model": MODEL["name"],
            "n": n_items,
            "accuracy_strict": n_right / n_items,
            "accuracy_flexible": n_right / n_items,
            "threshold": 0.8,
            "passed": suite_passed,
        }
    )
    recorder.append(
        {
            "kind": "test",
            "nodeid": "suites/test_arith.py::test_accuracy[tiny]",
            "suite": "arith",
            "model": MODEL["name"],
            "outcome": "passed" if suite_passed else "failed",
            "duration_s": 3.2,
        }
    )
    for scenario, concurrency, n in (("closed-c1", 1, 120), ("closed-c4", 4, 240)):
        samples = load_samples(rng, n, slowdown)
        busy = sum(s["e2e_s"] or 0.0 for s in samples)
        recorder.append(
            {
                "kind": "load",
                "model": MODEL["name"],
                "scenario": scenario,
                "concurrency": concurrency,
                "samples": samples,
                "wall_s": busy / concurrency * 1.05,
                "client_cpu_s": 0.4,
            }
        )
    rss = (rss_mib + rng.normal(0, 0.2, size=12).cumsum() * 0.1) * 2**20
    recorder.append(  # as harness.memory.memory_record writes it
        {
            "kind": "memory",
            "model": MODEL["name"],
            "scenario": "rss_growth",
            "ps_size": 1_900_000,
            "ps_size_vram": 0,
            "ps_context_length": 512,
            "estimate_bytes": 1_850_000,
            "rss_samples": [
                {"t_s": 0.5 * index, "rss_bytes": int(value), "anon_bytes": int(value) - 2**20}
                for index, value in enumerate(rss)
            ],
            "rss_peak_bytes": int(rss.max()),
            "rss_growth_bytes": int(rss[-3:].mean() - rss[:3].mean()),
            "unload_freed": None,
        }
    )
    recorder.append(
        {
            "kind": "memory",
            "model": MODEL["name"],
            "scenario": "unload",
            "ps_size": None,
            "rss_samples": [],
            "unload_freed": True,
        }
    )
    if finish:
        recorder.finish(finish, None if finish == "complete" else "interrupted (SIGINT)")
    else:
        recorder._results.close()  # the process "crashed": nobody calls finish
    return recorder.path


def report(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(["report", *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A baseline, a repeat from the same distributions, and a slower, less accurate run, in that order."""
    reports = tmp_path_factory.mktemp("reports")
    return {
        "baseline": make_run(reports, seed=1),
        "repeat": make_run(reports, seed=2),
        "slower": make_run(reports, seed=3, slowdown=1.6, accuracy=0.4, rss_mib=75.0),
    }


def comparison(output: str) -> dict[str, dict[str, Any]]:
    return {row["metric"]: row for row in json.loads(output)["comparison"]}


def test_repeat_of_the_baseline_is_never_regressed(three_runs, capsys):
    status, out, err = report(
        capsys, str(three_runs["repeat"]), "--baseline", str(three_runs["baseline"]), "--format", "json"
    )
    rows = comparison(out)
    verdicts = {row["verdict"] for row in rows.values()}
    assert status == 0, err
    assert verdicts <= {"same", "noise", "better"}
    assert rows["load.closed-c4.ttft_p95"]["interval"] is not None
    assert rows["suite.arith.accuracy_strict"]["verdict"] == "same"


def test_slower_run_is_regressed_and_exits_1(three_runs, capsys):
    status, out, _ = report(
        capsys, str(three_runs["slower"]), "--baseline", str(three_runs["baseline"]), "--format", "json"
    )
    rows = comparison(out)
    assert status == 1
    for metric in (
        "load.closed-c4.ttft_p95",
        "load.closed-c1.e2e_p50",
        "load.closed-c4.itl_p50",
        "load.closed-c4.tokens_per_s",
        "suite.arith.accuracy_strict",
        "memory.rss_growth.rss_peak",
    ):
        assert rows[metric]["verdict"] == "REGRESSED", metric
    assert rows["load.closed-c4.tokens_per_s"]["relative_delta"] < -0.2
    assert any("arith failed" in reason for reason in json.loads(out)["failures"])


def test_the_same_difference_on_few_samples_is_noise(tmp_path):
    """A 30 % slowdown seen in three requests each is within the noise, not a regression."""
    from harness.config import parse_threshold
    from harness.report.stats import Samples, judge, percentile_statistic

    baseline = Samples(np.array([0.080, 0.120, 0.095]), percentile_statistic(50))
    current = Samples(np.array([0.150, 0.090, 0.124]), percentile_statistic(50))
    judgement = judge(
        baseline.value(),
        current.value(),
        "lower",
        parse_threshold("+20%"),
        baseline_samples=baseline,
        current_samples=current,
    )
    assert judgement.verdict == "noise"


def test_default_baseline_is_newest_earlier_complete_like_run(tmp_path, capsys):
    reports = tmp_path / "reports"
    old = make_run(reports, seed=1)
    other_engine = make_run(reports, seed=2, meta={"server": {**SERVER, "engine_kind": "ollama"}})
    make_run(reports, seed=3, finish="incomplete")  # not complete
    other_model = make_run(reports, seed=4, meta={"models": [{**MODEL, "digest": "sha256:" + "cd" * 32}]})
    current = make_run(reports, seed=5)
    status, out, _ = report(capsys, str(current), "--format", "json")
    assert json.loads(out)["baseline"]["id"] == old.name
    assert status == 0
    _, out, _ = report(capsys, str(current), "--baseline", str(other_engine), "--format", "json")
    engine = {"aspect": "engine kind", "baseline": "ollama", "current": "embedded"}
    assert engine in json.loads(out)["differences"]
    status, out, _ = report(capsys, str(old), "--format", "json")  # later runs are never its baseline
    assert json.loads(out)["baseline"] is None and "No baseline" in json.loads(out)["baseline_note"]
    # nothing comparable: reported alone, with a note, still exit 0
    status, out, _ = report(capsys, str(other_model))
    assert status == 0
    assert "No baseline" in out


def test_latest_symlink_and_reports_dir_default(three_runs, capsys):
    latest = three_runs["slower"].parent / "latest"
    assert latest.resolve() == three_runs["slower"]
    status, out, _ = report(capsys, str(latest))
    assert status == 1
    assert f"Against baseline {three_runs['repeat'].name}" in out  # the newest earlier like run
    assert "REGRESSED" in out and "Result: FAILED" in out


def test_text_report_shows_every_section(three_runs, capsys):
    _, out, _ = report(capsys, str(three_runs["slower"]), "--baseline", str(three_runs["baseline"]))
    for text in (
        "== Run",
        "0.31.2",
        "embedded",
        MODEL["name"],
        "sha256:abababab",
        "== Suites",
        "40.0 % [21.9 %, 61.3 %]",  # the accuracy and its 95 % Wilson interval (8 of 20)
        "== Worst prompts",
        "expected 16, got 8",
        "== Latency",
        "TTFT",
        "p99",
        "== Throughput",
        "timeout",
        "== Memory",
        "/api/ps size",
        "== Against baseline",
        "== Prompts that changed grade against",
        "pass -> fail",
    ):
        assert text in out, text


def test_threshold_override_from_command_line_and_config(three_runs, capsys, tmp_path):
    args = [str(three_runs["slower"]), "--baseline", str(three_runs["baseline"]), "--format", "json"]
    _, out, _ = report(capsys, *args, "--threshold", "ttft_p95=+500%")
    assert comparison(out)["load.closed-c4.ttft_p95"]["verdict"] == "same"
    assert comparison(out)["load.closed-c4.ttft_p95"]["threshold"] == "+500%"
    config = tmp_path / "harness.toml"
    config.write_text('[report.thresholds]\n"load.closed-c4.*" = "+900%"\n')
    _, out, _ = report(capsys, *args, "--config", str(config))
    rows = comparison(out)
    assert rows["load.closed-c4.e2e_p99"]["verdict"] == "same"
    assert rows["load.closed-c1.e2e_p95"]["verdict"] == "REGRESSED"


@pytest.mark.parametrize("bad", ["ttft_p95", "ttft_p95=fast", "ttft_p95=-30%"])
def test_bad_threshold_is_a_clear_error(three_runs, capsys, bad):
    status, _, err = report(
        capsys, str(three_runs["repeat"]), "--baseline", str(three_runs["baseline"]), "--threshold", bad
    )
    assert status == 2
    assert "threshold" in err and "hint:" in err and "Traceback" not in err


def test_markdown_output_is_a_job_summary(three_runs, capsys):
    status, out, _ = report(
        capsys, str(three_runs["slower"]), "--baseline", str(three_runs["baseline"]), "--format", "markdown"
    )
    assert status == 1
    assert out.startswith("# Harness report")
    assert "## Against baseline" in out
    table = [line for line in out.splitlines() if line.startswith("| model") and "verdict" in line]
    assert table, out
    assert "**Result: FAILED" in out


def test_incomplete_run_is_reported_with_warning_first(tmp_path, capsys):
    run = make_run(tmp_path / "reports", seed=1, finish="incomplete")
    status, out, _ = report(capsys, str(run))
    assert out.splitlines()[0].startswith("WARNING: run") and "INCOMPLETE" in out.splitlines()[0]
    assert "interrupted (SIGINT)" in out
    assert "== Latency" in out
    assert status == 1


def test_running_run_whose_process_is_gone_is_incomplete(tmp_path, capsys):
    run = make_run(tmp_path / "reports", seed=1, finish=None)
    meta = json.loads((run / RUN_FILE).read_text())
    meta["process"]["pid"] = 2**22 + 12345  # beyond pid_max on Linux: surely not running
    (run / RUN_FILE).write_text(json.dumps(meta))
    status, out, _ = report(capsys, str(run), "--format", "json")
    data = json.loads(out)
    assert data["run"]["status"] == "incomplete"
    assert "never finished" in data["warnings"][0]
    assert status == 1


def test_torn_last_line_is_skipped_with_warning(tmp_path, capsys):
    run = make_run(tmp_path / "reports", seed=1)
    with open(run / RESULTS_FILE, "a") as results:
        results.write('{"kind": "prompt", "suite": "ari')
    status, out, _ = report(capsys, str(run))
    assert "torn last line" in out.splitlines()[0]
    assert status == 0


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("missing_folder", "no run folder"),
        ("missing_run_json", "run.json is missing"),
        ("corrupt_run_json", "not valid JSON"),
        ("schema_99", "schema version 99"),
        ("corrupt_middle_line", "line 2 of results.jsonl"),
    ],
)
def test_broken_folders_exit_2_without_traceback(tmp_path, capsys, breakage, message):
    run = make_run(tmp_path / "reports", seed=1)
    if breakage == "missing_folder":
        run = run.parent / "20990101-000000-000000"
    elif breakage == "missing_run_json":
        (run / RUN_FILE).unlink()
    elif breakage == "corrupt_run_json":
        (run / RUN_FILE).write_text('{"schema_version": 1, "run_id": ')
    elif breakage == "schema_99":
        meta = json.loads((run / RUN_FILE).read_text())
        (run / RUN_FILE).write_text(json.dumps({**meta, "schema_version": 99}))
    else:
        lines = (run / RESULTS_FILE).read_text().splitlines()
        lines[1] = lines[1][:20]
        (run / RESULTS_FILE).write_text("\n".join(lines) + "\n")
    status, out, err = report(capsys, str(run))
    assert status == 2
    assert message in err and "hint:" in err
    assert "Traceback" not in err and out == ""


def test_broken_explicit_baseline_exits_2(three_runs, tmp_path, capsys):
    status, _, err = report(capsys, str(three_runs["repeat"]), "--baseline", str(tmp_path / "nope"))
    assert status == 2 and "no run folder" in err


def test_list_shows_runs_and_unreadable_folders(tmp_path, capsys):
    reports = tmp_path / "reports"
    first, second = make_run(reports, seed=1), make_run(reports, seed=2, finish="incomplete")
    (reports / "20200101-000000-bad000").mkdir()
    status, out, _ = report(capsys, "--list", "--reports-dir", str(reports))
    assert status == 0
    lines = out.splitlines()
    assert out.index(first.name) < out.index(second.name)
    assert any("incomplete" in line for line in lines if second.name in line)
    assert any("UNREADABLE" in line for line in lines if "bad000" in line)
    status, out, _ = report(capsys, "--list", "--reports-dir", str(reports), "--format", "json")
    data = json.loads(out)
    assert [run["id"] for run in data["runs"]] == [first.name, second.name]
    assert data["unreadable"][0]["path"].endswith("bad000")


def test_history_of_one_metric(three_runs, capsys):
    reports = three_runs["baseline"].parent
    status, out, _ = report(
        capsys, "--history", "tokens_per_s", "--reports-dir", str(reports), "--format", "json"
    )
    assert status == 0
    data = json.loads(out)
    assert [run["id"] for run in data["runs"]] == [path.name for path in three_runs.values()]
    c4 = [
        next(v["value"] for v in run["values"] if v["metric"] == "load.closed-c4.tokens_per_s")
        for run in data["runs"]
    ]
    assert c4[2] < 0.8 * c4[0]
    status, out, _ = report(capsys, "--history", "load.closed-c1.ttft_p50", "--reports-dir", str(reports))
    assert status == 0 and "ms" in out and len(out.splitlines()) == 2 + 3


def test_history_of_unknown_metric_names_the_known_ones(three_runs, capsys):
    status, _, err = report(
        capsys, "--history", "nonsense", "--reports-dir", str(three_runs["baseline"].parent)
    )
    assert status == 2 and "ttft_p95" in err


def test_plot_without_matplotlib_says_how_to_install(three_runs, capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)  # as if not installed
    status, _, err = report(capsys, str(three_runs["repeat"]), "--plot", str(tmp_path / "plot.png"))
    assert status == 2 and "pip install 'ollama-test-harness[plot]'" in err


def test_plot_draws_a_png(three_runs, capsys, tmp_path):
    pytest.importorskip("matplotlib")
    target = tmp_path / "latency.png"
    report(
        capsys, str(three_runs["slower"]), "--baseline", str(three_runs["baseline"]), "--plot", str(target)
    )
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_id_argument_is_resolved_in_reports_dir(three_runs, capsys):
    reports = three_runs["baseline"].parent
    status, out, _ = report(capsys, three_runs["repeat"].name, "--reports-dir", str(reports), "--no-baseline")
    assert status == 0 and three_runs["repeat"].name in out and "Against baseline" not in out


def test_without_run_argument_reports_latest_in_cwd(tmp_path, capsys, monkeypatch):
    run = make_run(tmp_path / "reports", seed=1)
    monkeypatch.chdir(tmp_path)
    status, out, _ = report(capsys)
    assert status == 0 and run.name in out


def test_plot_of_a_history(three_runs, capsys, tmp_path):
    pytest.importorskip("matplotlib")
    target = tmp_path / "history.png"
    status, _, _ = report(
        capsys,
        "--history",
        "ttft_p95",
        "--reports-dir",
        str(three_runs["baseline"].parent),
        "--plot",
        str(target),
    )
    assert status == 0 and target.read_bytes()[:4] == b"\x89PNG"


def test_expected_failure_of_a_fixture_model_is_not_a_failure(tmp_path, capsys):
    """The random-weights model must score about zero: its suite fails as expected, the report passes."""
    with RunRecorder.create(tmp_path, {"server": SERVER, "models": [MODEL]}) as recorder:
        recorder.append(
            {
                "kind": "suite",
                "suite": "arith",
                "model": MODEL["name"],
                "n": 20,
                "accuracy_strict": 0.0,
                "accuracy_flexible": 0.05,
                "threshold": 0.8,
                "passed": False,
                "expected_to_fail": True,
            }
        )
        recorder.append(
            {
                "kind": "test",
                "nodeid": "suites/test_arith.py::test_accuracy",
                "suite": "arith",
                "model": MODEL["name"],
                "outcome": "xfailed",
                "duration_s": 1.0,
            }
        )
    status, out, _ = report(capsys, str(recorder.path))
    assert status == 0 and "fails, as expected" in out and "Result: OK" in out


def test_saturated_load_client_is_a_warning(tmp_path, capsys):
    with RunRecorder.create(tmp_path, {"server": SERVER, "models": [MODEL]}) as recorder:
        samples = load_samples(np.random.default_rng(0), 20, 1.0)
        recorder.append(
            {
                "kind": "load",
                "model": MODEL["name"],
                "scenario": "open-r50",
                "rate": 50.0,
                "samples": samples,
                "wall_s": 3.0,
                "client_cpu_s": 2.9,
                "summary": {"client_saturated": True, "saturation_reasons": ["client CPU 97% of one core"]},
            }
        )
    status, out, _ = report(capsys, str(recorder.path))
    assert status == 0
    assert out.startswith("WARNING: load scenario open-r50") and "client CPU 97%" in out.splitlines()[0]


def _load_only_run(reports: Path, seed: int, slowdown: float, saturated: bool) -> Path:
    with RunRecorder.create(reports, {"server": SERVER, "models": [MODEL]}) as recorder:
        recorder.append(
            {
                "kind": "load",
                "model": MODEL["name"],
                "scenario": "closed-c4",
                "concurrency": 4,
                "samples": load_samples(np.random.default_rng(seed), 120, slowdown),
                "wall_s": 3.0 * slowdown,
                "client_cpu_s": 2.9 if saturated else 0.3,
                "summary": {
                    "client_saturated": saturated,
                    "saturation_reasons": ["client CPU 97% of one core"],
                },
            }
        )
    return recorder.path


@pytest.mark.parametrize("saturated", [False, True], ids=["client-idle", "client-saturated"])
def test_timings_of_a_saturated_load_client_are_never_regressed(tmp_path, capsys, saturated):
    """The same 2x slowdown is REGRESSED when the client was idle, noise when it was itself the bottleneck."""
    baseline = _load_only_run(tmp_path, 1, 1.0, saturated=False)
    current = _load_only_run(tmp_path, 2, 2.0, saturated=saturated)
    status, out, _ = report(capsys, str(current), "--baseline", str(baseline), "--format", "json")
    rows = comparison(out)
    timing = [name for name in rows if name.split(".")[-1].startswith(("ttft", "itl", "e2e"))]
    assert timing
    verdicts = {rows[name]["verdict"] for name in timing}
    if saturated:
        assert status == 0 and "REGRESSED" not in verdicts and "noise" in verdicts
    else:
        assert status == 1 and "REGRESSED" in verdicts


def test_a_failed_test_fails_the_report(tmp_path, capsys):
    with RunRecorder.create(tmp_path, {"server": SERVER, "models": [MODEL]}) as recorder:
        recorder.append(
            {
                "kind": "test",
                "nodeid": "suites/test_api.py::test_show",
                "suite": "api",
                "model": MODEL["name"],
                "outcome": "failed",
                "duration_s": 0.1,
            }
        )
    status, out, _ = report(capsys, str(recorder.path), "--format", "json")
    assert status == 1 and json.loads(out)["failures"] == [f"api failed on {MODEL['name']}"]


def test_report_splits_the_session_time_between_server_and_harness(tmp_path, capsys):
    """From the session client's request records (the server's own durations) and the load samples."""
    recorder = RunRecorder.create(tmp_path, {"server": SERVER, "models": [MODEL]})
    recorder.append({"kind": "requests", "model": MODEL["name"], "requests": 30, "busy_s": 5.0})
    recorder.append({"kind": "requests", "model": None, "requests": 4, "busy_s": 0.5})
    samples = [{"started_at": 100.0, "e2e_s": 1.0}, {"started_at": 100.5, "e2e_s": 1.0}]  # overlap: 1.5 s
    recorder.append({"kind": "load", "model": MODEL["name"], "scenario": "closed-c2", "samples": samples})
    recorder.finish()
    meta = json.loads((recorder.path / RUN_FILE).read_text())
    meta.update(started_at="2026-11-26T01:00:00+00:00", finished_at="2026-11-26T01:00:10+00:00")
    (recorder.path / RUN_FILE).write_text(json.dumps(meta))

    _, out, _ = report(capsys, str(recorder.path))
    split = "7.0 s inside the server (its own durations), 3.0 s in the harness (30 % of the session)"
    assert f"time     {split}" in out
    _, out, _ = report(capsys, str(recorder.path), "--format", "json")
    assert json.loads(out)["run"]["time"] == {"session_s": 10.0, "server_s": 7.0, "harness_s": 3.0}


def test_report_of_a_run_without_request_records_has_no_time_split(three_runs, capsys):
    _, out, _ = report(capsys, str(three_runs["baseline"]))
    assert "inside the server" not in out
    _, out, _ = report(capsys, str(three_runs["baseline"]), "--format", "json")
    assert json.loads(out)["run"]["time"] is None


def test_runs_of_the_same_model_under_run_specific_names_are_matched_by_identity(tmp_path, capsys):
    """Fixture model names carry the run id: the comparison, the flipped prompts and the plot's baseline
    match the model by profile and digest instead, so nothing is "new" or "gone"."""
    runs = []
    for seed, suffix in ((1, "aaaaaa"), (2, "bbbbbb")):
        path = make_run(tmp_path, seed=seed, accuracy=0.9 if seed == 1 else 0.85)
        lines = (path / "results.jsonl").read_text().replace(MODEL["name"], f"harness-tiny-5f0e2c-{suffix}")
        (path / "results.jsonl").write_text(lines)
        meta = json.loads((path / "run.json").read_text())
        meta["models"] = [{**MODEL, "name": f"harness-tiny-5f0e2c-{suffix}"}]
        (path / "run.json").write_text(json.dumps(meta))
        runs.append(load_run(path))
    baseline, current = runs
    report = build_report(current, config=HarnessConfig(), baseline=baseline)
    assert report.comparison and {row.verdict for row in report.comparison}.isdisjoint({"new", "gone"})
    assert [p.item_id for p in report.flipped] == ["arith-17"] and report.flipped[0].change == "pass -> fail"
    current_loads = load_by_identity(current)
    assert set(current_loads) == set(load_by_identity(baseline))
    assert identity_of(current, "harness-tiny-5f0e2c-bbbbbb") == identity_of(
        baseline, "harness-tiny-5f0e2c-aaaaaa"
    )
