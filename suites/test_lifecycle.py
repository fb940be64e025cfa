"""Lifecycle suite: a model's whole life on the server, and what the server does with broken files.

create -> show (details match the GGUF) -> list -> generate and chat -> streaming equals non-streaming ->
seeded greedy decoding is deterministic -> num_predict is exact -> stop sequences stop -> keep_alive 0
unloads -> copy -> delete. The oracle fixture's exact continuation through the Modelfile's template is the
positive control (random weights cannot produce it). Every broken-GGUF class llama.cpp refuses is rejected at
create or at first load with an error that names the cause: no hang, no traceback, and the server stays up.

Ollama's own integration tests (integration/, e.g. basic_test.go) check the same things more loosely:
num_predict via logprob counts, final-chunk fields, /api/ps presence; we also check exact equality where a
fixture makes it knowable.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from pathlib import Path
from typing import Any

import ollama
import pytest

from harness.errors import ServerError
from harness.gguf import broken as broken_module
from harness.gguf.broken import ABORT, BROKEN_KINDS, write_broken
from harness.gguf.build import default_cache_dir
from harness.gguf.check import check_gguf
from harness.gguf.spec import load_profile
from harness.http_tls import verify_for
from harness.plugin.models import gguf_facts, unique_model_name

pytestmark = pytest.mark.timeout(120)

GREEDY = {"temperature": 0, "seed": 42}
GENERIC_PROMPT = "Count from one to twenty in words, separated by spaces:"
BROKEN_BASE_PROFILE = "tiny"
# Ollama's own decoder texts (fs/ggml/gguf.go, server/create.go), which the embedded engine repeats, for the
# classes that fail before the checker or llama.cpp get to speak; keyed by the checker's finding code.
OLLAMA_DECODER_CAUSES = {
    "bad-magic": "not in GGUF format",
    "empty-file": "not in GGUF format",
    "truncated-kv": "unexpected EOF",
    "data-beyond-eof": "exceeds file size",
}


def _prompt(model: Any) -> str:
    """The oracle's prompt for the oracle fixture (its answer is known), else a prompt any model continues."""
    return model.oracle.prompt if model.oracle is not None else GENERIC_PROMPT


def _bare(name: str) -> str:
    return name.removesuffix(":latest")


def _listed_names(client: Any) -> set[str]:
    return {_bare(str(entry.model)) for entry in client.list().models}


# ------------------------------------------------------------------------------------------- create, show


def test_server_reports_a_version(harness_session: Any) -> None:
    assert harness_session.server_version, "GET /api/version gave no version"


def test_create_and_show_details_match_the_gguf(ollama_client: Any, model_under_test: Any) -> None:
    shown = ollama_client.show(model_under_test.name)
    details = shown.details
    assert details is not None, f"show {model_under_test.name} has no details"
    if model_under_test.gguf_path is None:
        assert details.family, "show gives no family"
        return
    facts = gguf_facts(model_under_test.gguf_path)
    assert details.family == facts["family"], f"family {details.family!r}, the file says {facts['family']!r}"
    if "quantization_level" in facts:
        assert str(details.quantization_level).upper() == facts["quantization_level"], (
            f"quantization_level {details.quantization_level!r}, the file says {facts['quantization_level']}"
        )
    info = shown.modelinfo or {}
    context_key = f"{facts['family']}.context_length"
    if facts["context_length"] is not None and context_key in info:
        assert info[context_key] == facts["context_length"], (
            f"model_info {context_key} = {info[context_key]}, the file says {facts['context_length']}"
        )


def test_list_shows_the_model(ollama_client: Any, model_under_test: Any) -> None:
    assert _bare(model_under_test.name) in _listed_names(ollama_client)


def test_missing_model_is_404_not_a_hang(ollama_client: Any, model_under_test: Any) -> None:
    with pytest.raises(ServerError) as caught:
        ollama_client.generate(f"{model_under_test.name}-does-not-exist", "hello", options={"num_predict": 1})
    assert "not found" in caught.value.message


# ------------------------------------------------------------------------------------------- generation


def test_generate_completes_with_final_fields(ollama_client: Any, model_under_test: Any) -> None:
    reply = ollama_client.generate(
        model_under_test.name, _prompt(model_under_test), options={**GREEDY, "num_predict": 8}
    )
    assert reply.done, "the reply never reached done: true"
    assert reply.done_reason in ("stop", "length"), f"done_reason {reply.done_reason!r}"
    assert reply.eval_count and reply.eval_count > 0, "eval_count missing or zero"
    assert reply.total_duration_s and reply.total_duration_s > 0, "total_duration missing"


def test_chat_completes(ollama_client: Any, model_under_test: Any) -> None:
    reply = ollama_client.chat(
        model_under_test.name,
        [{"role": "user", "content": _prompt(model_under_test)}],
        options={**GREEDY, "num_predict": 8},
    )
    assert reply.done, "the chat reply never reached done: true"
    assert reply.done_reason in ("stop", "length"), f"done_reason {reply.done_reason!r}"


def test_streaming_equals_non_streaming(
    harness_session: Any, ollama_client: Any, model_under_test: Any
) -> None:
    options = {**GREEDY, "num_predict": 16}
    streamed = ollama_client.generate(model_under_test.name, _prompt(model_under_test), options=options)
    # The harness client always streams; the official client asks for one JSON answer (stream: false).
    url = harness_session.server.url
    with ollama.Client(host=url, timeout=60, verify=verify_for(url)) as official:
        whole = official.generate(
            model=model_under_test.name, prompt=_prompt(model_under_test), options=options
        )
    assert streamed.done and whole.done
    assert streamed.text == whole.response, f"streamed {streamed.text!r} != non-streamed {whole.response!r}"
    assert streamed.eval_count == whole.eval_count
    assert streamed.done_reason == whole.done_reason


def test_seeded_greedy_decoding_is_deterministic(ollama_client: Any, model_under_test: Any) -> None:
    options = {**GREEDY, "num_predict": 16}
    first = ollama_client.generate(model_under_test.name, _prompt(model_under_test), options=options)
    second = ollama_client.generate(model_under_test.name, _prompt(model_under_test), options=options)
    assert first.text == second.text, f"{first.text!r} then {second.text!r} with seed 42, temperature 0"


def test_num_predict_is_exact(ollama_client: Any, model_under_test: Any) -> None:
    reply = ollama_client.generate(
        model_under_test.name, _prompt(model_under_test), options={**GREEDY, "num_predict": 3}
    )
    assert reply.eval_count == 3, f"num_predict 3 gave eval_count {reply.eval_count} ({reply.text!r})"
    assert reply.done_reason == "length", f"done_reason {reply.done_reason!r}, expected 'length'"


def test_stop_sequence_stops_before_it(ollama_client: Any, model_under_test: Any) -> None:
    baseline = ollama_client.generate(
        model_under_test.name, _prompt(model_under_test), options={**GREEDY, "num_predict": 16}
    )
    words = baseline.text.split()
    if len(words) < 2:
        pytest.skip(f"the model's greedy answer {baseline.text!r} has fewer than two words to stop at")
    stop = words[1]
    stopped = ollama_client.generate(
        model_under_test.name,
        _prompt(model_under_test),
        options={**GREEDY, "num_predict": 16, "stop": [stop]},
    )
    cut = baseline.text[: baseline.text.index(stop)]
    assert stop not in stopped.text, f"stop {stop!r} appears in {stopped.text!r}"
    assert stopped.text == cut, f"with stop {stop!r}: {stopped.text!r}, expected {cut!r}"
    assert stopped.done_reason == "stop"


def test_keep_alive_zero_unloads(ollama_client: Any, model_under_test: Any) -> None:
    ollama_client.generate(
        model_under_test.name, _prompt(model_under_test), options={**GREEDY, "num_predict": 1}
    )
    assert _bare(model_under_test.name) in {_bare(str(m.model)) for m in ollama_client.ps().models}
    ollama_client.unload(model_under_test.name)
    deadline = time.monotonic() + 15
    while _bare(model_under_test.name) in {_bare(str(m.model)) for m in ollama_client.ps().models}:
        assert time.monotonic() < deadline, "still in /api/ps 15 s after keep_alive 0"
        time.sleep(0.1)


def test_copy_then_delete(harness_session: Any, ollama_client: Any, model_under_test: Any) -> None:
    copy = f"{_bare(model_under_test.name)}-copy"
    ollama_client.copy(model_under_test.name, copy)
    try:
        assert {_bare(model_under_test.name), copy} <= _listed_names(ollama_client)
        assert (
            ollama_client.show(copy).details.family
            == ollama_client.show(model_under_test.name).details.family
        )
    finally:
        ollama_client.delete(copy)
    assert copy not in _listed_names(ollama_client)
    with pytest.raises(ServerError):
        ollama_client.show(copy)


# ------------------------------------------------------------------------------------------- positive control


@pytest.mark.fixture_weights("the oracle's continuation is known only for the oracle fixture")
def test_oracle_continuation_through_the_modelfile_template(
    harness_session: Any, ollama_client: Any, fixture_models: Any
) -> None:
    """The positive control. Both replies are recorded ("exact" records), so that `harness report` can show
    them equal, or not, across servers: a difference is a finding about the server, not the model."""
    oracle = fixture_models("oracle")
    expected = oracle.oracle
    replies = {}
    for mode, raw in (("template", False), ("raw", True)):
        reply = ollama_client.generate(
            oracle.name, expected.prompt, options={**GREEDY, "num_predict": 32}, raw=raw
        )
        replies[mode] = reply
        harness_session.record(
            {
                "kind": "exact",
                "model": oracle.name,
                "control": f"oracle.{mode}",
                "prompt": expected.prompt,
                "expected": expected.continuation,
                "output": reply.text,
                "done_reason": reply.done_reason,
            }
        )
    reply, raw_reply = replies["template"], replies["raw"]
    assert reply.text == expected.continuation, f"{reply.text!r}, expected {expected.continuation!r}"
    assert reply.done_reason == "stop"
    assert raw_reply.text == expected.continuation, (
        f"raw: {raw_reply.text!r}, expected {expected.continuation!r}"
    )


@pytest.mark.fixture_weights("the oracle's continuation is known only for the oracle fixture")
def test_oracle_output_is_the_same_in_every_matrix_type(
    harness_session: Any, ollama_client: Any, fixture_models: Any
) -> None:
    """--harness-matrix: the oracle built in each type gives the same exact reply (margin survives q4_0)."""
    types = harness_session.options.matrix
    if len(types) < 2:
        pytest.skip("no --harness-matrix of two or more tensor types")
    replies = {}
    for tensor_type in types:
        oracle = fixture_models.from_profile("oracle", tensor_type=tensor_type)
        reply = ollama_client.generate(
            oracle.name, oracle.oracle.prompt, options={**GREEDY, "num_predict": 32}, raw=True
        )
        replies[tensor_type] = (reply.text, reply.done_reason)
    expected = (load_profile("oracle").oracle.continuation, "stop")
    assert all(reply == expected for reply in replies.values()), (
        f"expected {expected} in every type: {replies}"
    )


@pytest.mark.fixture_weights("random weights are built from a fixture profile")
def test_random_weights_generate_without_error(ollama_client: Any, fixture_models: Any) -> None:
    tiny = fixture_models("tiny")
    reply = ollama_client.generate(tiny.name, "hello", options={**GREEDY, "num_predict": 8})
    assert reply.done, "random weights: the reply never reached done: true"


# ------------------------------------------------------------------------------------------- broken files


# The classes llama.cpp refuses (and NaN weights, which Ollama's create validation reads); the others load
# and run in llama.cpp, so a server takes them: only the checker names them (tests/test_gguf_check.py). Chat
# template classes are left out too: llama-server parses the Jinja template, Ollama renders its Go TEMPLATE.
REFUSED_KINDS = sorted(
    name
    for name, kind in BROKEN_KINDS.items()
    if (kind.llama_cause is not None or kind.deep) and not kind.code.startswith("template-")
)


@pytest.mark.destructive
@pytest.mark.timeout(90)
@pytest.mark.parametrize("kind_name", REFUSED_KINDS)
def test_broken_gguf_is_rejected_with_its_cause(
    kind_name: str, harness_session: Any, ollama_client: Any, harness_property: Any
) -> None:
    kind = BROKEN_KINDS[kind_name]
    spec = load_profile(BROKEN_BASE_PROFILE)
    path = _broken_file(kind_name, spec)
    findings = check_gguf(path, deep=kind.deep)
    name = unique_model_name(f"broken-{kind_name}", spec.spec_hash(), harness_session.recorder.run_id)
    stage, error = _create_and_load(ollama_client, name, path)
    harness_property("stage", stage)
    harness_property("error", error)
    harness_property("checker_codes", [finding.code for finding in findings.errors])
    if harness_session.check_server() is not None:
        harness_session.record(harness_session.death_finding(kind_name, stage, path))
    assert harness_session.server_down is None, (
        f"the server died on {kind_name}: {harness_session.server_down}"
    )
    assert error is not None, f"{kind.description}: accepted at create and generated without error"
    if harness_session.server.kind == "embedded":
        causes = [finding.message for finding in findings.errors]
        if kind.llama_cause not in (None, ABORT):
            causes.append(kind.llama_cause)
        if kind.code in OLLAMA_DECODER_CAUSES:
            causes.append(OLLAMA_DECODER_CAUSES[kind.code])
        assert any(cause in error for cause in causes), (
            f"{kind_name}: the error does not name the cause.\n  error: {error}\n  expected one of: {causes}"
        )


def _broken_file(kind_name: str, spec: Any) -> Path:
    """The broken file of `kind_name`, written once per spec and version of harness.gguf.broken into the GGUF
    cache (a warm re-run builds no GGUF)."""
    source = hashlib.sha256(Path(broken_module.__file__ or "").read_bytes()).hexdigest()[:12]
    path = default_cache_dir() / "broken" / f"{kind_name}-{spec.spec_hash()[:16]}-{source}.gguf"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        write_broken(BROKEN_KINDS[kind_name], spec, partial)
        os.replace(partial, path)
    return path


def _create_and_load(client: Any, name: str, path: Path) -> tuple[str, str | None]:
    """Create `name` from `path`, then generate once; returns (stage reached, error text or None)."""
    try:
        client.create_model(name, gguf_path=path)
    except ServerError as error:
        return "create", error.message
    try:
        client.generate(name, "hello", options={"num_predict": 2})
    except ServerError as error:
        return "load", error.message
    finally:
        with contextlib.suppress(ServerError):
            client.delete(name)
    return "generate", None
