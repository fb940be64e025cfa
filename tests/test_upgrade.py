"""Runs across server versions: models matched by what the user gave (not the server's digest), the header
naming what differs, `--against-version`, the exact-output controls, and `harness upgrade-check` end to end
on the embedded engine. Run folders are written with the real RunRecorder; nothing is mocked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.cli import main
from harness.modelfile.identity import identity_from_shown, model_identity
from harness.report.metrics import model_identity_key
from harness.runs import RunRecorder
from harness.testing.helpers import one_thread_engine

REPO = Path(__file__).resolve().parents[1]
GGUF_SHA = "93" * 32
MODELFILE = 'FROM "/tmp/x/oracle.gguf"\nTEMPLATE """{{ .System }}{{ .Prompt }}"""\n'
EXPECTED = " is two one."


def model_entry(name: str, server_digest: str, *, gguf_sha: str = GGUF_SHA, identity: bool = True) -> dict:
    """A run.json model as the suites record it: the server's digest, and (newer runs) the identity."""
    entry: dict[str, Any] = {
        "name": name,
        "source": "fixture",
        "profile": "oracle",
        "tensor_type": None,
        "quantize": None,
        "gguf_sha256": gguf_sha,
        "digest": server_digest,
        "modelfile": MODELFILE,
    }
    if identity:
        entry["identity"] = model_identity(gguf_sha256=gguf_sha, profile="oracle", modelfile=MODELFILE)
    return entry


def make_run(
    reports: Path,
    *,
    name: str,
    server_digest: str,
    version: str,
    engine_kind: str = "ollama",
    oracle_output: str = EXPECTED,
    accuracy: float = 0.5,
    passed: tuple[bool, ...] = (True, False, True, False),
    open_rate: float | None = None,
    open_ttft_s: float = 0.01,
    **entry_options: Any,
) -> Path:
    """A finished run of one model: a suite with its prompts, one load scenario, the oracle's replies."""
    server = {"host": f"127.0.0.1:{11400 + len(version)}", "version": version, "engine_kind": engine_kind}
    models = [model_entry(name, server_digest, **entry_options)]
    with RunRecorder.create(reports, {"server": server, "models": models}) as recorder:
        for index, right in enumerate(passed):
            recorder.append(
                {
                    "kind": "prompt",
                    "suite": "math",
                    "model": name,
                    "item_id": f"item-{index}",
                    "repeat": 0,
                    "response": "4" if right else "5",
                    "score_strict": float(right),
                    "score_flexible": float(right),
                    "passed": right,
                }
            )
        recorder.append(
            {
                "kind": "suite",
                "suite": "math",
                "model": name,
                "n": len(passed),
                "accuracy_strict": accuracy,
                "accuracy_flexible": accuracy,
                "threshold": 0.0,
                "passed": True,
            }
        )
        samples = [
            {
                "outcome": "ok",
                "ttft_s": 0.010 + 0.001 * i,
                "itl_s": [0.002] * 3,
                "e2e_s": 0.02,
                "output_tokens": 4,
            }
            for i in range(30)
        ]
        recorder.append(
            {"kind": "load", "model": name, "scenario": "closed-c1", "samples": samples, "wall_s": 0.6}
        )
        if open_rate is not None:
            slow = [
                {
                    "outcome": "ok",
                    "ttft_s": open_ttft_s * (1 + 0.01 * i),
                    "itl_s": [0.002],
                    "e2e_s": open_ttft_s,
                }
                for i in range(40)
            ]
            recorder.append(
                {
                    "kind": "load",
                    "model": name,
                    "scenario": "open",
                    "rate": open_rate,
                    "samples": slow,
                    "wall_s": 2,
                }
            )
        for mode in ("template", "raw"):
            recorder.append(
                {
                    "kind": "exact",
                    "model": name,
                    "control": f"oracle.{mode}",
                    "expected": EXPECTED,
                    "output": oracle_output,
                    "done_reason": "stop",
                }
            )
    return recorder.path


def report(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any], str]:
    status = main(["report", *args, "--format", "json"])
    captured = capsys.readouterr()
    return status, json.loads(captured.out) if captured.out.strip() else {}, captured.err


def test_runs_whose_server_digests_differ_but_gguf_digests_match_are_compared(tmp_path, capsys):
    """The same GGUF on 0.24.0 and 0.33.0: Ollama's digests differ, the identity does not."""
    reports = tmp_path / "reports"
    old = make_run(
        reports, name="harness-oracle-77ed88c2-aaaaaa", server_digest="d74e2b8274", version="0.24.0"
    )
    new = make_run(
        reports, name="harness-oracle-77ed88c2-bbbbbb", server_digest="d877bcd95d", version="0.33.0-rc2"
    )
    status, out, err = report(capsys, str(new))  # found on its own: same models, engine kind and machine
    assert status == 0, err
    assert out["baseline"]["id"] == old.name
    verdicts = {row["metric"]: row["verdict"] for row in out["comparison"]}
    assert verdicts["suite.math.accuracy_strict"] == "same"
    assert "new" not in verdicts.values() and "gone" not in verdicts.values(), verdicts
    assert {row["model"] for row in out["comparison"]} == {model_identity_key(model_entry("x", "y"))}
    assert out["differences"] == [
        {"aspect": "server version", "baseline": "0.24.0", "current": "0.33.0-rc2"},
        {"aspect": "server host", "baseline": "127.0.0.1:11406", "current": "127.0.0.1:11410"},
    ]
    assert [row["verdict"] for row in out["exact_outputs"]] == ["identical", "identical"]
    assert not any("other models" in warning for warning in out["warnings"])


def test_runs_recorded_before_the_identity_match_on_their_gguf_too(tmp_path, capsys):
    reports = tmp_path / "reports"
    old = make_run(reports, name="a", server_digest="11", version="0.24.0", identity=False)
    new = make_run(reports, name="b", server_digest="22", version="0.33.0")
    status, out, _ = report(capsys, str(new))
    assert status == 0 and out["baseline"]["id"] == old.name


def test_another_gguf_is_another_model_whatever_the_server_says(tmp_path, capsys):
    reports = tmp_path / "reports"
    other = make_run(reports, name="a", server_digest="same", version="0.33.0", gguf_sha="44" * 32)
    new = make_run(reports, name="b", server_digest="same", version="0.33.0")
    status, out, _ = report(capsys, str(new))
    assert status == 0 and out["baseline"] is None and "No baseline" in out["baseline_note"]
    _, out, _ = report(capsys, str(new), "--baseline", str(other))
    assert any("tested other models" in warning for warning in out["warnings"])
    assert {row["verdict"] for row in out["comparison"]} == {"new", "gone"}


def test_a_changed_exact_output_is_a_finding_about_the_server(tmp_path, capsys):
    reports = tmp_path / "reports"
    old = make_run(reports, name="a", server_digest="1", version="0.24.0")
    new = make_run(reports, name="b", server_digest="2", version="0.33.0", oracle_output=" is two two.")
    status, out, _ = report(capsys, str(new), "--baseline", str(old))
    assert status == 1
    assert [row["verdict"] for row in out["exact_outputs"]] == ["SERVER CHANGED", "SERVER CHANGED"]
    assert any("a finding about the server" in reason for reason in out["failures"])
    status = main(["report", str(new), "--baseline", str(old)])
    text = capsys.readouterr().out
    assert "Exact-output controls against the baseline" in text and "' is two two.' (stop)" in text


def test_against_version_picks_the_newest_complete_run_on_that_version(tmp_path, capsys):
    reports = tmp_path / "reports"
    make_run(reports, name="a", server_digest="1", version="0.33.0+harness.0.1.0", engine_kind="embedded")
    wanted = make_run(reports, name="b", server_digest="2", version="0.33.0", engine_kind="embedded")
    make_run(reports, name="c", server_digest="3", version="0.24.0")
    current = make_run(reports, name="d", server_digest="4", version="0.34.0")
    status, out, err = report(capsys, str(current), "--against-version", "0.33.0")
    assert status == 0, err
    assert out["baseline"]["id"] == wanted.name
    assert {"aspect": "engine kind", "baseline": "embedded", "current": "ollama"} in out["differences"]
    status, _, err = report(capsys, str(current), "--against-version", "0.20.0")
    assert status == 2 and "no complete run" in err and "0.20.0" in err and "Traceback" not in err


def test_identity_depends_on_the_template_and_parameters_not_on_the_from_path() -> None:
    base = model_identity(gguf_sha256=GGUF_SHA, modelfile=MODELFILE)
    moved = model_identity(gguf_sha256=GGUF_SHA, modelfile=MODELFILE.replace("/tmp/x", "/elsewhere"))
    other_template = model_identity(gguf_sha256=GGUF_SHA, modelfile=MODELFILE.replace(".System", ".Prompt"))
    with_parameter = model_identity(gguf_sha256=GGUF_SHA, modelfile=MODELFILE + "PARAMETER num_ctx 512\n")
    assert base == moved
    assert base != other_template and base["template_sha256"] != other_template["template_sha256"]
    assert with_parameter["parameters"] == {"num_ctx": 512} and with_parameter != base


def test_identity_of_a_model_already_on_a_server_comes_from_the_blob_it_shows() -> None:
    """Ollama's `show --modelfile` names the GGUF blob; two servers show the same blob for a pulled model."""
    shown = (
        '# Modelfile generated by "ollama show"\n'
        f"FROM /root/.ollama/models/blobs/sha256-{GGUF_SHA}\n"
        'TEMPLATE """{{ .Prompt }}"""\n'
        'PARAMETER stop "<|im_end|>"\n'
    )
    identity = identity_from_shown(shown)
    assert identity["gguf_sha256"] == GGUF_SHA
    assert identity["parameters"] == {"stop": ["<|im_end|>"]}
    assert identity_from_shown(shown.replace("/root/.ollama", "/home/other")) == identity
    assert identity_from_shown(None)["gguf_sha256"] is None


@pytest.mark.timeout(600)
def test_upgrade_check_end_to_end_on_the_embedded_engine(tmp_path, capsys):
    """Both legs on one embedded engine (the same server twice): the oracle's outputs are identical, every
    metric has a verdict, and the exit status follows the report."""
    reports = tmp_path / "reports"
    with one_thread_engine(tmp_path / "models") as engine:
        status = main(
            [
                "upgrade-check",
                "--from",
                engine.host,
                "--to",
                engine.host,
                "--suites",
                str(REPO / "suites"),
                "--reports-dir",
                str(reports),
                "--pytest-args",
                "-k 'test_oracle_continuation or test_closed_loop'",
                "--format",
                "json",
            ]
        )
    out = json.loads(capsys.readouterr().out)
    assert [row["verdict"] for row in out["exact_outputs"]] == ["identical", "identical"], out[
        "exact_outputs"
    ]
    assert out["comparison"] and all(row["verdict"] not in ("new", "gone") for row in out["comparison"])
    assert status == out["exit_status"]
    assert len([path for path in reports.iterdir() if not path.is_symlink()]) == 2


def test_upgrade_check_with_a_host_that_does_not_answer_exits_2(tmp_path, capsys):
    status = main(
        [
            "upgrade-check",
            "--from",
            "127.0.0.1:9",
            "--to",
            "127.0.0.1:9",
            "--suites",
            str(REPO / "suites"),
            "--reports-dir",
            str(tmp_path / "reports"),
        ]
    )
    err = capsys.readouterr().err
    assert status == 2 and "--from 127.0.0.1:9: no Ollama answers there" in err and "Traceback" not in err
    assert not (tmp_path / "reports").exists()  # nothing ran


def test_an_open_loop_at_another_rate_is_noted_and_not_judged(tmp_path, capsys):
    """The suites cap the open loop's rate at half the measured capacity: a slower old server got a lighter
    load, so the new one's longer queueing is no regression (the error rate is still judged)."""
    reports = tmp_path / "reports"
    old = make_run(reports, name="a", server_digest="1", version="0.24.0", open_rate=0.6, open_ttft_s=0.05)
    new = make_run(reports, name="b", server_digest="2", version="0.33.0", open_rate=2.8, open_ttft_s=2.0)
    status, out, _ = report(capsys, str(new), "--baseline", str(old))
    verdicts = {row["metric"]: row["verdict"] for row in out["comparison"]}
    assert status == 0, out["failures"]
    assert verdicts["load.open.ttft_p95"] == "noise" and verdicts["load.open.error_rate"] == "same"
    assert any("offered 0.6 req/s in the baseline and 2.8 req/s now" in note for note in out["warnings"])
    _, out, _ = report(
        capsys,
        str(new),
        "--baseline",
        str(
            make_run(reports, name="c", server_digest="3", version="0.24.0", open_rate=2.8, open_ttft_s=0.05)
        ),
    )
    assert {row["metric"]: row["verdict"] for row in out["comparison"]}["load.open.ttft_p95"] == "REGRESSED"


def test_prompts_that_flipped_across_servers_are_listed(tmp_path, capsys):
    """Per prompt: the same item on the same model (by identity) graded otherwise on the new server."""
    reports = tmp_path / "reports"
    old = make_run(reports, name="a", server_digest="1", version="0.24.0", passed=(True, True, False, False))
    new = make_run(reports, name="b", server_digest="2", version="0.33.0", passed=(True, False, True, False))
    _, out, _ = report(capsys, str(new), "--baseline", str(old))
    flips = {(row["item_id"], row["change"]) for row in out["flipped_prompts"]}
    assert flips == {("item-1", "pass -> fail"), ("item-2", "fail -> pass")}
    assert out["prompts_compared"] == 4
    main(["report", str(new), "--baseline", str(old)])
    assert f"Prompts that changed grade against {old.name}: 2 of 4 asked in both" in capsys.readouterr().out
    main(["report", str(old), "--baseline", str(old)])
    assert "all 4 graded as in the baseline" in capsys.readouterr().out
