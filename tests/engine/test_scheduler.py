"""Scheduler behaviour of the real engine: parallel slots, the bounded queue, keep_alive expiry, LRU
eviction, runner crash isolation, and shutdown without orphans."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import httpx
import ollama
import pytest

from harness.engine import EmbeddedEngine
from harness.gguf.build import BuiltModel
from harness.testing.helpers import alive, pending_requests, runner_pids, wait_until

from .conftest import create_from_gguf, make_engine

pytestmark = pytest.mark.timeout(120)

LONG = {"num_predict": 400, "temperature": 0, "top_k": 1, "seed": 1}
LONGER = {**LONG, "num_predict": 1200}  # busy long enough for the queue test to fill the queue behind it


def stream_times(
    client: ollama.Client,
    model: str,
    results: dict[str, object],
    key: str,
    started: threading.Event | None = None,
    options: dict[str, int] = LONG,
) -> None:
    """Stream one long generation, recording the arrival time of each chunk (or the error)."""
    stamps: list[float] = []
    try:
        for _ in client.generate(model=model, prompt="the", raw=True, options=options, stream=True):
            stamps.append(time.monotonic())
            if started is not None:
                started.set()
        results[key] = stamps
    except ollama.ResponseError as error:
        results[key] = error


@pytest.fixture(scope="module")
def parallel_engine(
    tmp_path_factory: pytest.TempPathFactory, long_gguf: BuiltModel
) -> Iterator[EmbeddedEngine]:
    env = {"OLLAMA_NUM_PARALLEL": "2", "OLLAMA_MAX_QUEUE": "1", "OLLAMA_CONTEXT_LENGTH": "2048"}
    with make_engine(tmp_path_factory, env) as engine:
        create_from_gguf(ollama.Client(host=engine.url), "long", long_gguf.path)
        yield engine


def test_two_requests_progress_at_once_with_two_slots(parallel_engine: EmbeddedEngine) -> None:
    client = ollama.Client(host=parallel_engine.url, timeout=60)
    client.generate(model="long", prompt="")  # load first, so both start together
    results: dict[str, object] = {}
    threads = [threading.Thread(target=stream_times, args=(client, "long", results, k)) for k in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    a, b = results["a"], results["b"]
    assert isinstance(a, list) and isinstance(b, list) and len(a) > 100 and len(b) > 100
    # each stream's first chunk came before the other one ended: the two ran side by side
    assert a[0] < b[-1] and b[0] < a[-1]
    assert next(m for m in client.ps().models if m.model == "long:latest").context_length == 2048


def test_queue_overflow_answers_503(parallel_engine: EmbeddedEngine) -> None:
    """Two slots busy, one request waiting (OLLAMA_MAX_QUEUE=1): the next one is refused at once."""
    client = ollama.Client(host=parallel_engine.url, timeout=60)
    client.generate(model="long", prompt="")
    results: dict[str, object] = {}
    threads = []
    for key in ("a", "b", "c"):
        started = threading.Event()
        thread = threading.Thread(target=stream_times, args=(client, "long", results, key, started, LONGER))
        thread.start()
        threads.append(thread)
        if key == "c":  # c waits for a slot: the queue is now full
            assert wait_until(lambda: pending_requests(parallel_engine) == 1, timeout=10)
        else:
            assert started.wait(10)
    with pytest.raises(ollama.ResponseError) as caught:
        client.generate(model="long", prompt="the", raw=True, options=LONG)
    for thread in threads:
        thread.join(60)
    assert caught.value.status_code == 503
    assert caught.value.error == "server busy, please try again.  maximum pending requests exceeded"
    assert all(isinstance(results[key], list) for key in ("a", "b", "c")), results


@pytest.fixture(scope="module")
def small_engine(
    tmp_path_factory: pytest.TempPathFactory, tiny_gguf: BuiltModel, oracle_gguf: BuiltModel
) -> Iterator[EmbeddedEngine]:
    env = {"OLLAMA_MAX_LOADED_MODELS": "1", "OLLAMA_KEEP_ALIVE": "1m"}
    with make_engine(tmp_path_factory, env) as engine:
        client = ollama.Client(host=engine.url)
        create_from_gguf(client, "tiny", tiny_gguf.path)
        create_from_gguf(client, "oracle", oracle_gguf.path)
        yield engine


def test_keep_alive_expiry_unloads(small_engine: EmbeddedEngine) -> None:
    client = ollama.Client(host=small_engine.url, timeout=60)
    client.generate(model="tiny", prompt="", keep_alive=-1)  # loaded for good: its pid can be read at leisure
    pid = runner_pids(small_engine)["tiny:latest"]
    client.generate(model="tiny", prompt="hello", options={"num_predict": 2}, keep_alive="2s")
    entry = next(m for m in client.ps().models if m.model == "tiny:latest")
    assert entry.expires_at is not None and entry.expires_at.year < 2200
    assert wait_until(lambda: not client.ps().models, timeout=10)
    assert wait_until(lambda: not alive(pid), timeout=10)


def test_negative_keep_alive_means_forever(small_engine: EmbeddedEngine) -> None:
    client = ollama.Client(host=small_engine.url, timeout=60)
    client.generate(model="tiny", prompt="", keep_alive=-1)
    entry = next(m for m in client.ps().models if m.model == "tiny:latest")
    assert entry.expires_at is not None and entry.expires_at.year > 2200
    client.generate(model="tiny", prompt="", keep_alive=0)
    assert not client.ps().models


def test_max_loaded_models_evicts_least_recently_used(small_engine: EmbeddedEngine) -> None:
    client = ollama.Client(host=small_engine.url, timeout=60)
    client.generate(model="tiny", prompt="")
    tiny_pid = runner_pids(small_engine)["tiny:latest"]
    client.generate(model="oracle", prompt="")
    assert [m.model for m in client.ps().models] == ["oracle:latest"]
    assert wait_until(lambda: not alive(tiny_pid), timeout=5)


def test_runner_crash_fails_that_request_only_and_next_reloads(small_engine: EmbeddedEngine) -> None:
    client = ollama.Client(host=small_engine.url, timeout=60)
    client.generate(model="tiny", prompt="")
    pid = runner_pids(small_engine)["tiny:latest"]
    stream = client.generate(model="tiny", prompt="the", raw=True, options={"num_predict": 400}, stream=True)
    next(iter(stream))
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(ollama.ResponseError) as caught:
        for _ in stream:
            pass
    assert caught.value.status_code == -1  # in-band: streaming had begun
    assert "llama-server process has terminated" in caught.value.error or "error" in caught.value.error
    reply = client.generate(model="tiny", prompt="hello", options={"num_predict": 3, "temperature": 0})
    assert reply.done and reply.eval_count == 3
    assert runner_pids(small_engine)["tiny:latest"] != pid


def test_shutdown_leaves_no_runner_behind(
    tmp_path_factory: pytest.TempPathFactory, tiny_gguf: BuiltModel
) -> None:
    with make_engine(tmp_path_factory) as engine:
        client = ollama.Client(host=engine.url, timeout=60)
        create_from_gguf(client, "tiny", tiny_gguf.path)
        client.generate(model="tiny", prompt="")
        pids = list(runner_pids(engine).values())
        assert pids and all(alive(pid) for pid in pids)
        engine_pid = engine.pid
    assert not alive(engine_pid)
    assert wait_until(lambda: not any(alive(pid) for pid in pids), timeout=5)


def test_killed_engine_takes_its_runners_with_it(
    tmp_path_factory: pytest.TempPathFactory, tiny_gguf: BuiltModel
) -> None:
    with make_engine(tmp_path_factory) as engine:
        client = ollama.Client(host=engine.url, timeout=60)
        create_from_gguf(client, "tiny", tiny_gguf.path)
        client.generate(model="tiny", prompt="")
        pids = list(runner_pids(engine).values())
        os.kill(engine.pid, signal.SIGKILL)
        assert engine.process is not None
        engine.process.wait(10)
        assert wait_until(lambda: not any(alive(pid) for pid in pids), timeout=5)


def test_client_disconnect_frees_the_slot(small_engine: EmbeddedEngine) -> None:
    """One slot: a stream the client abandons must not keep it (the next request would hang)."""
    client = ollama.Client(host=small_engine.url, timeout=30)
    with httpx.stream(
        "POST",
        f"{small_engine.url}/api/generate",
        json={"model": "tiny", "prompt": "the", "raw": True, "options": {"num_predict": 400}},
        timeout=30,
    ) as response:
        next(response.iter_lines())
    reply = client.generate(model="tiny", prompt="hello", options={"num_predict": 2})
    assert reply.done and reply.eval_count == 2
