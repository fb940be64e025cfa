"""Scenario: load at four times the parallel slots against the engine.

1,000 streamed requests (tiny fixture model, num_predict 4) from 8 closed-loop workers against an engine
with OLLAMA_NUM_PARALLEL=2 and OLLAMA_MAX_QUEUE=2, so the queue overflows and some requests get 503.
Every request must end as exactly one of ok / busy (503) / timeout / error, the counts must add up to
1,000, nothing may be an unexplained error, and the engine must still answer afterwards.
Reproduce: `.venv/bin/pytest tests/faults/test_overload.py -q -s` (prints the counts).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.engine import EmbeddedEngine
from harness.gguf.build import BuiltModel
from harness.load.generator import OUTCOMES, LoadResult, run_closed_loop
from harness.server.client import OllamaClient
from harness.testing.helpers import runner_pids

from .conftest import GEN, start_engine

pytestmark = pytest.mark.timeout(120)

NUM_PARALLEL = 2
REQUESTS = 1000


@pytest.fixture(scope="module")
def busy_engine(tmp_path_factory: pytest.TempPathFactory, tiny_gguf: BuiltModel) -> Iterator[EmbeddedEngine]:
    env = {"OLLAMA_NUM_PARALLEL": str(NUM_PARALLEL), "OLLAMA_MAX_QUEUE": "2"}
    engine = start_engine(tmp_path_factory.mktemp("overload") / "models", env)
    try:
        with OllamaClient(engine.host, timeout=60) as client:
            client.create_model("tiny", gguf_path=tiny_gguf.path)
            client.generate("tiny", "the", raw=True, options={**GEN, "num_predict": 1})  # loaded
        yield engine
    finally:
        engine.stop()


def overload(engine: EmbeddedEngine) -> LoadResult:
    return run_closed_loop(
        engine.host,
        "tiny",
        concurrency=4 * NUM_PARALLEL,
        requests=REQUESTS,
        prompt="the",
        options={**GEN, "num_predict": 4},
        timeout_s=20.0,
        stall_timeout_s=10.0,
    )


def test_thousand_requests_at_four_times_the_slots_all_accounted_for(busy_engine: EmbeddedEngine) -> None:
    result = overload(busy_engine)
    counts = result.counts()
    print(f"\noverload: {REQUESTS} requests -> {counts} in {result.wall_s:.1f} s; {result.errors_by_kind()}")
    assert len(result.samples) == REQUESTS
    assert set(counts) == set(OUTCOMES) and sum(counts.values()) == REQUESTS
    assert all(sample.outcome in OUTCOMES for sample in result.samples)
    assert counts["ok"] > 0 and counts["busy"] > 0, (
        "4x the slots with a queue of 2 must both serve and refuse"
    )
    for sample in result.samples:
        if sample.outcome == "busy":
            assert (
                sample.error == "HTTP 503: server busy, please try again.  maximum pending requests exceeded"
            )
        elif sample.outcome == "ok":
            assert sample.output_tokens == 4
        else:
            assert sample.error, f"{sample.outcome} without a reason"
    # Errors are allowed here (the issue asks only that each request ends as one of the four outcomes);
    # a healthy engine has none: see the slow test below.

    with OllamaClient(busy_engine.host, timeout=30) as client:
        reply = client.generate("tiny", "hello", options={**GEN, "num_predict": 3})
        assert reply.done and reply.eval_count == 3
        assert [model.model for model in client.ps().models] == ["tiny:latest"]
    assert len(runner_pids(busy_engine)) == 1  # no leaked runner


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sustained_overload_has_no_errors_and_keeps_its_runner(busy_engine: EmbeddedEngine) -> None:
    """Known bug (about one per 5,000 requests on 2 cores): llama-server closes a pooled keep-alive
    connection, the engine reports "an error was encountered while running the model: Server disconnected
    without sending a response", marks the live runner broken and restarts it, failing the other
    in-flight request with a plain-text 500 (death_message reads the runner log stop() just deleted)."""
    runner_before = runner_pids(busy_engine)
    for _ in range(5):
        result = overload(busy_engine)
        errors = [sample.error for sample in result.samples if sample.outcome == "error"]
        assert not errors, errors
    assert runner_pids(busy_engine) == runner_before
