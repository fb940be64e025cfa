"""plugin.matrix and server_time: planning a --harness-matrix, the oracle in every type, model reuse and
the quantize refusal on the embedded engine, and the report's matrix table from a real run record."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from harness.engine import EmbeddedEngine
from harness.errors import HarnessError
from harness.gguf.build import build_cached
from harness.gguf.llamacpp import generate
from harness.gguf.spec import load_profile
from harness.gguf.types import TENSOR_TYPES
from harness.plugin.matrix import (
    NOT_SUPPORTED,
    QuantizeNotSupported,
    matrix_meta,
    parse_matrix,
    plan_entry,
    record_matrix_entry,
)
from harness.plugin.models import ModelFactory
from harness.plugin.options import SuiteOptions
from harness.progress import NO_PROGRESS
from harness.report.matrix import matrix_table, matrix_to_json, request_stats, summarise_matrix
from harness.runs import RunRecorder, load_run
from harness.server.client import Completion, OllamaClient
from harness.server_time import ServerTimeLog, server_seconds, union_length

# ------------------------------------------------------------------------------------------ planning


def test_parse_matrix_orders_widest_first_and_keeps_the_spelling() -> None:
    assert parse_matrix("q4_0, f16,f32 ,q8_0", fixture=True) == ("f32", "f16", "q8_0", "q4_0")
    assert parse_matrix("q4_K_M,F16,q8_0", fixture=False) == ("F16", "q8_0", "q4_K_M")
    assert parse_matrix(None, fixture=True) == ()


@pytest.mark.parametrize(
    ("text", "fixture", "expected"),
    [
        ("f32,q4_K_M", True, "unknown tensor type 'q4_K_M'"),
        ("f32,q9_9", False, "unknown tensor type 'q9_9'"),
        ("q8_0,Q8_0", False, "names 'Q8_0' twice"),
        (" , ", True, "names no tensor type"),
    ],
)
def test_parse_matrix_names_the_problem(text: str, fixture: bool, expected: str) -> None:
    with pytest.raises(HarnessError) as caught:
        parse_matrix(text, fixture=fixture)
    assert expected in caught.value.message
    assert caught.value.hint


def test_plan_entry_builds_fixtures_and_quantizes_other_types_of_a_file() -> None:
    assert plan_entry("q4_0", file_type=None).quantize is None  # a fixture is built in the type
    assert plan_entry("f16", file_type="F16").quantize is None  # the file as it is
    assert plan_entry("q4_K_M", file_type="F16").quantize == "q4_K_M"


def test_the_oracle_gives_the_same_exact_output_in_every_type() -> None:
    """The oracle's margin survives quantization: llama.cpp's greedy reply is the same in every type."""
    spec = load_profile("oracle")
    assert spec.oracle is not None
    replies = {
        tensor_type: generate(
            build_cached(spec.replace(tensor_type=tensor_type)).path, spec.oracle.prompt, n_predict=8
        ).text
        for tensor_type in TENSOR_TYPES
    }
    assert replies == dict.fromkeys(TENSOR_TYPES, spec.oracle.continuation)


# ------------------------------------------------------------------------------------------ server time


def test_union_length_counts_overlaps_once() -> None:
    assert union_length([]) == 0.0
    assert union_length([(0.0, 1.0), (0.5, 2.0), (3.0, 4.0)]) == pytest.approx(3.0)
    assert union_length([(2.0, 3.0), (0.0, 10.0)]) == pytest.approx(10.0)


def test_server_time_log_sums_per_model() -> None:
    log = ServerTimeLog()
    for model, total in (("a", 0.5), ("a", 0.25), ("b", 1.0)):
        completion = Completion(model=model, total_duration_s=total, eval_count=4, eval_duration_s=0.1)
        completion.content_times.append(0.01)
        log.add(completion)
    records = {record["model"]: record for record in log.records()}
    assert records["a"]["requests"] == 2 and records["a"]["total_duration_s"] == pytest.approx(0.75)
    assert records["a"]["eval_count"] == 8 and records["a"]["ttft_s"] == [0.01, 0.01]
    assert records["a"]["eval_rates"] == [40.0, 40.0]
    # Added one after the other (none overlaps in real time here, they end microseconds apart): the union
    # cannot exceed the sum.
    assert log.busy_s() <= 1.75 + 1e-9
    load = {"kind": "load", "samples": [{"started_at": 0, "e2e_s": 1.0}, {"started_at": 0.5, "e2e_s": 1.0}]}
    seconds = server_seconds([*records.values(), load])
    assert seconds["total_duration_s"] == pytest.approx(1.75)
    assert seconds["load_s"] == pytest.approx(1.5)


def test_request_stats_take_medians_so_a_slow_request_does_not_drag_the_rate() -> None:
    records = [
        {"kind": "requests", "model": "m", "eval_count": 80, "eval_duration_s": 10.0, "eval_rates": [100, 2]},
        {"kind": "requests", "model": "m", "eval_rates": [90], "ttft_s": [0.3, 0.1, 0.2]},
        {"kind": "requests", "model": None, "requests": 5},  # round trips without durations: not a model
        {"kind": "requests", "model": "old", "eval_count": 30, "eval_duration_s": 3.0},  # no rates: pooled
    ]
    stats = request_stats(records)
    assert set(stats) == {"m", "old"}
    assert stats["m"] == {"tokens_per_s": 90, "ttft_s": 0.2}
    assert stats["old"]["tokens_per_s"] == pytest.approx(10.0)


# ------------------------------------------------------------------------------------------ report


def _matrix_run(tmp_path: Path) -> Path:
    recorder = RunRecorder.create(tmp_path, {"matrix": matrix_meta(["f32", "q8_0", "q4_K_M"])})
    models = [
        {"name": "m-f32", "tensor_type": "f32", "file_size": 400},
        {"name": "m-q8", "tensor_type": "q8_0", "file_size": 100},
    ]
    recorder.update({"models": models})
    record_matrix_entry(recorder, "f32", model="m-f32")
    record_matrix_entry(recorder, "q8_0", model="m-q8")
    record_matrix_entry(recorder, "q4_K_M", skipped=f"q4_K_M: {NOT_SUPPORTED}")
    for name, accuracy, ps, rate, ttft in (("m-f32", 0.8, 2000, 10.0, 0.2), ("m-q8", 0.7, 1000, 20.0, 0.1)):
        recorder.append({"kind": "suite", "suite": "math", "model": name, "accuracy_strict": accuracy})
        recorder.append({"kind": "memory", "model": name, "ps_size": ps, "scenario": "ps_vs_estimate"})
        recorder.append(
            {"kind": "requests", "model": name, "eval_count": rate, "eval_duration_s": 1.0, "ttft_s": [ttft]}
        )
    recorder.finish("complete")
    return recorder.path


def test_summarise_matrix_gives_deltas_against_the_widest_type(tmp_path: Path) -> None:
    summary = summarise_matrix(load_run(_matrix_run(tmp_path)))
    assert summary is not None
    assert [row.tensor_type for row in summary.rows] == ["f32", "q8_0", "q4_K_M"]
    assert summary.reference is summary.rows[0]
    q8 = summary.rows[1]
    assert summary.delta(q8, "accuracy.math") == pytest.approx(-0.1)
    assert summary.delta(q8, "tokens_per_s") == pytest.approx(1.0)
    assert summary.delta(q8, "ttft_s") == pytest.approx(-0.5)
    assert summary.delta(q8, "ps_size") == pytest.approx(-0.5)
    assert summary.delta(q8, "file_size") == pytest.approx(-0.75)
    headers, rows = matrix_table(summary)
    table = dict(zip([row[0] for row in rows], rows, strict=True))
    assert headers[2] == "math strict"
    assert table["q8_0"][2] == "70.0 % (-10.0 pt)" and table["q8_0"][3] == "20.0 tok/s (+100.0 %)"
    assert "(reference)" in table["f32"][-1]
    assert table["q4_K_M"][-1] == f"skipped: q4_K_M: {NOT_SUPPORTED}"
    data = json.loads(json.dumps(matrix_to_json(summary)))
    assert data["reference"] == "f32" and data["rows"][1]["deltas"]["file_size"] == pytest.approx(-0.75)


def test_a_run_without_matrix_has_no_matrix_summary(tmp_path: Path) -> None:
    recorder = RunRecorder.create(tmp_path, {})
    recorder.finish("complete")
    assert summarise_matrix(load_run(recorder.path)) is None


# ------------------------------------------------------------------------------------------ on a server


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with EmbeddedEngine(models_dir=tmp_path_factory.mktemp("models")) as running:
        yield running


def _factory(engine: Any, client: OllamaClient, reports: Path, *, keep_models: bool) -> ModelFactory:
    recorder = RunRecorder.create(reports, {})
    added: list[Any] = []
    session = SimpleNamespace(
        options=SuiteOptions(keep_models=keep_models),
        recorder=recorder,
        require_client=lambda: client,
        add_model=added.append,
        progress=NO_PROGRESS,
    )
    return ModelFactory(session)


@pytest.mark.timeout(120)
def test_kept_models_are_found_again_not_recreated(engine: Any, tmp_path: Path) -> None:
    with OllamaClient(engine.host, timeout=60) as client:

        def setup(keep_models: bool) -> Any:
            factory = _factory(engine, client, tmp_path, keep_models=keep_models)
            return factory.from_profile("oracle", tensor_type="q4_0")

        first, again, fresh = setup(True), setup(True), setup(False)
    assert not first.reused and again.reused
    assert again.name == first.name == f"harness-oracle-q4_0-{first.name.split('-')[-1]}"
    assert again.digest == first.digest and again.file_size == first.file_size
    assert (
        fresh.name != first.name and not fresh.reused
    )  # without --harness-keep-models: a name of its own run
    assert first.tensor_type == "q4_0" and first.file_size and first.setup_s is not None


@pytest.mark.timeout(120)
def test_the_embedded_engine_quantizes_to_q8_0_and_q4_k_m_and_refuses_q4_0_saying_so(
    engine: Any, tmp_path: Path
) -> None:
    f32 = build_cached(load_profile("oracle").replace(tensor_type="f32"))
    with OllamaClient(engine.host, timeout=60) as client:
        factory = _factory(engine, client, tmp_path, keep_models=False)
        same = factory.from_gguf(f32.path, modelfile="fixture", tensor_type="f32")
        assert same.quantize is None and same.tensor_type == "f32"
        q8 = factory.from_gguf(f32.path, modelfile="fixture", tensor_type="q8_0")
        assert q8.quantize == "q8_0" and client.show(q8.name).details.quantization_level == "Q8_0"
        oracle = load_profile("oracle").oracle
        assert oracle is not None
        reply = client.generate(
            q8.name, oracle.prompt, raw=True, options={"temperature": 0, "num_predict": 8}
        )
        assert reply.text == oracle.continuation  # the quantized model is the oracle still
        q4_k_m = factory.from_gguf(f32.path, modelfile="fixture", tensor_type="q4_K_M")
        assert client.show(q4_k_m.name).details.quantization_level == "Q4_K_M"
        with pytest.raises(QuantizeNotSupported) as caught:
            factory.from_gguf(f32.path, modelfile="fixture", tensor_type="q4_0")  # Ollama never writes q4_0
    message = caught.value.message
    assert message.startswith(f"q4_0: quantizing the F32 file at create is {NOT_SUPPORTED}"), message
    assert "unsupported quantization type Q4_0 - supported types are" in message
