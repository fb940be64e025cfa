"""Scenario: a runner dies while generating (SIGKILL to the llama.cpp runner process).

The request it was serving fails with a clear error naming the request, the next request reloads the
model and succeeds, and a load run with a kill in the middle accounts for every request (the killed one
is an `error`). Runner pids come from the engine's debug endpoint GET /harness/runners.
Reproduce: `.venv/bin/pytest tests/faults/test_runner_death.py -q`.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from harness.engine import EmbeddedEngine
from harness.gguf.build import BuiltModel
from harness.load.generator import run_closed_loop
from harness.server.client import OllamaClient, OllamaRequestError
from harness.testing.helpers import alive, runner_pids, wait_until

from .conftest import GEN, start_engine

pytestmark = pytest.mark.timeout(90)

MODEL = "long:latest"
LONG = {**GEN, "num_predict": 3000}  # about 2-3 s on one thread: long enough to be killed mid-stream


@pytest.fixture(scope="module")
def long_engine(tmp_path_factory: pytest.TempPathFactory, long_gguf: BuiltModel) -> Iterator[EmbeddedEngine]:
    engine = start_engine(
        tmp_path_factory.mktemp("runner-death") / "models", {"OLLAMA_CONTEXT_LENGTH": "4096"}
    )
    try:
        with OllamaClient(engine.host, timeout=60) as client:
            client.create_model("long", gguf_path=long_gguf.path)
        yield engine
    finally:
        engine.stop()


def kill_runner_later(engine: EmbeddedEngine, delay_s: float, killed: list[int]) -> threading.Thread:
    """A thread that waits for the model's runner, then `delay_s`, then SIGKILLs it (pid into `killed`)."""

    def kill() -> None:
        if not wait_until(lambda: MODEL in runner_pids(engine), timeout=20):
            return
        time.sleep(delay_s)
        pid = runner_pids(engine)[MODEL]
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    thread = threading.Thread(target=kill, daemon=True)
    thread.start()
    return thread


def test_killed_runner_fails_its_request_clearly_and_the_next_one_reloads(
    long_engine: EmbeddedEngine,
) -> None:
    with OllamaClient(long_engine.host, timeout=30, stall_timeout=10) as client:
        client.generate("long", "the", raw=True, options={**GEN, "num_predict": 1})  # loaded
        killed: list[int] = []
        killer = kill_runner_later(long_engine, 0.5, killed)
        start = time.monotonic()
        with pytest.raises(OllamaRequestError) as caught:
            client.generate("long", "the", raw=True, options=LONG)
        failed_after = time.monotonic() - start
        killer.join(5)
        assert killed, "the runner was never killed"
        assert not alive(killed[0])
        error = caught.value
        assert failed_after < 5.0
        assert error.request == "generate (model 'long')"
        assert long_engine.host in str(error)
        assert error.status_code == -1  # in-band: the stream had begun
        assert error.server_message and "llama-server process has terminated" in error.server_message
        assert error.partial is not None and len(error.partial.chunk_times) > 0  # what came before is kept

        reply = client.generate("long", "hello", options={**GEN, "num_predict": 3})
        assert reply.done and reply.text
        new_pid = runner_pids(long_engine)[MODEL]
        assert new_pid != killed[0] and alive(new_pid)


def test_load_run_with_a_runner_kill_accounts_for_every_request(long_engine: EmbeddedEngine) -> None:
    killed: list[int] = []
    requests = 5
    # concurrency 1: a request is in flight all the time (gaps between requests are milliseconds)
    killer = kill_runner_later(long_engine, 1.0, killed)
    result = run_closed_loop(
        long_engine.host,
        "long",
        concurrency=1,
        requests=requests,
        prompt="the",
        options={**GEN, "num_predict": 1000},
        timeout_s=30.0,
        stall_timeout_s=10.0,
    )
    killer.join(5)
    assert killed
    counts = result.counts()
    print(f"load with a runner kill: {counts}, wall {result.wall_s:.1f} s")
    assert sum(counts.values()) == len(result.samples) == requests
    assert counts == {"ok": requests - 1, "busy": 0, "timeout": 0, "error": 1}
    (failed,) = [s for s in result.samples if s.outcome == "error"]
    assert failed.error and "llama-server process has terminated" in failed.error
    after = result.samples[result.samples.index(failed) + 1 :]
    assert after and all(s.outcome == "ok" for s in after)  # the next request reloaded the model
    assert runner_pids(long_engine)[MODEL] != killed[0]
