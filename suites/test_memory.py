"""Memory suite: what the server says a loaded model takes, what its runner really holds, and that unloading
gives it back.

- `/api/ps` `size` and `context_length` against `harness.memory.estimate_model_memory` (weights + KV cache +
  compute buffers), within a tolerance: servers report estimates or measurements, never exact bytes;
- the runner's resident memory (RssAnon + VmSwap) over N requests grows less than a threshold (a leak shows
  there: ollama#18106);
- `keep_alive: 0` removes the model from `/api/ps` and its runner process exits.

Runner checks need the server's process on this machine (the embedded engine, or a local Ollama whose pid is
visible); elsewhere they are skipped with the reason. Settings: harness.toml `[memory]`.
"""

from __future__ import annotations

from typing import Any

import ollama
import pytest

from harness.http_tls import verify_for
from harness.memory import (
    MemorySampler,
    estimate_model_memory,
    memory_record,
    ps_entry,
    runner_processes,
    unload_and_check,
)

pytestmark = pytest.mark.timeout(240)

MIB = 1 << 20
NUM_CTX = 256  # asked explicitly, so the expected context length does not depend on the server's default
DEFAULTS = {
    "ps_rel_tolerance": 0.5,  # |ps - estimate| <= rel * estimate + abs
    "ps_abs_tolerance_mib": 64,  # buffers the estimate does not model (output, graph overhead)
    "rss_requests": 20,
    "max_rss_growth_mib": 32,
}
PROMPT = "hello the"


def _setting(session: Any, name: str) -> Any:
    return session.options.config.memory.get(name, DEFAULTS[name])


def _load(client: Any, model: str, num_predict: int = 1) -> None:
    client.generate(model, PROMPT, options={"num_ctx": NUM_CTX, "num_predict": num_predict, "temperature": 0})


def _runner_pid(session: Any, model: Any) -> int:
    """The pid of the model's runner (it must be loaded); skips when it cannot be found."""
    if session.server.pid is None:
        pytest.skip(
            f"{session.server.describe()} runs elsewhere or its process is not visible: no runner RSS"
        )
    runners = runner_processes(session.server.pid)
    if model.gguf_sha256:
        matching = [runner for runner in runners if any(model.gguf_sha256 in part for part in runner.cmdline)]
        runners = matching or runners
    if len(runners) != 1:
        pytest.skip(
            f"found {len(runners)} runner processes under pid {session.server.pid}; cannot tell which one"
        )
    return runners[0].pid


def test_ps_size_and_context_length_match_the_estimate(
    harness_session: Any, ollama_client: Any, model_under_test: Any
) -> None:
    if model_under_test.gguf_path is None:
        pytest.skip(
            "--harness-model: the model's GGUF file is not at hand, so there is nothing to estimate from"
        )
    _load(ollama_client, model_under_test.name)
    entry = ps_entry(harness_session.server.host, model_under_test.name)
    assert entry is not None, f"{model_under_test.name} is not in /api/ps right after a request"
    train_ctx = model_under_test.context_length or NUM_CTX
    num_parallel = harness_session.num_parallel or 1
    estimate = estimate_model_memory(model_under_test.gguf_path, num_ctx=NUM_CTX, num_parallel=num_parallel)
    harness_session.record(
        memory_record(
            model_under_test.name,
            ps=entry,
            estimate=estimate,
            scenario="ps_vs_estimate",
            extra={
                "num_ctx": NUM_CTX,
                "num_parallel": num_parallel,
                "engine_kind": harness_session.server.kind,
            },
        )
    )
    assert entry.get("context_length") in (None, min(NUM_CTX, train_ctx)), (
        f"/api/ps context_length {entry.get('context_length')} for num_ctx {NUM_CTX} "
        f"(the file's context length is {train_ctx})"
    )
    size = int(entry["size"])
    if harness_session.server.kind == "ollama":
        assert int(entry.get("size_vram") or 0) <= size, "size_vram is larger than size"
    assert size >= 0.9 * estimate.weights_bytes, (
        f"/api/ps size {size / MIB:.1f} MiB is less than the weights ({estimate.weights_bytes / MIB:.1f} MiB)"
    )
    allowed = _setting(harness_session, "ps_rel_tolerance") * estimate.total_bytes + (
        _setting(harness_session, "ps_abs_tolerance_mib") * MIB
    )
    assert abs(size - estimate.total_bytes) <= allowed, (
        f"/api/ps size {size / MIB:.1f} MiB vs estimate {estimate.total_bytes / MIB:.1f} MiB "
        f"(weights {estimate.weights_bytes / MIB:.1f}, KV {estimate.kv_bytes / MIB:.1f}, compute "
        f"{estimate.compute_bytes / MIB:.1f}): off by more than {allowed / MIB:.1f} MiB"
    )


def test_runner_rss_growth_over_requests_is_bounded(
    harness_session: Any, ollama_client: Any, model_under_test: Any
) -> None:
    _load(ollama_client, model_under_test.name)
    pid = _runner_pid(harness_session, model_under_test)
    requests = int(_setting(harness_session, "rss_requests"))
    with MemorySampler(pid, interval_s=0.1) as sampler:
        for index in range(requests):
            ollama_client.generate(
                model_under_test.name,
                f"{PROMPT} {index}",
                options={"num_ctx": NUM_CTX, "num_predict": 16, "temperature": 0},
            )
    growth = sampler.rss_growth()
    limit = int(_setting(harness_session, "max_rss_growth_mib")) * MIB
    harness_session.record(
        memory_record(
            model_under_test.name,
            rss_samples=sampler.samples,
            scenario="rss_growth",
            extra={"requests": requests, "runner_pid": pid, "limit_bytes": limit, "growth_bytes": growth},
        )
    )
    assert len(sampler.samples) >= 2, f"the runner (pid {pid}) exited during the requests"
    assert growth < limit, (
        f"runner RSS (anon + swap) grew {growth / MIB:.1f} MiB over {requests} requests "
        f"(limit {limit / MIB:.0f} MiB, [memory] max_rss_growth_mib)"
    )


def _unload_others(host: str, keep: str) -> None:
    """Unload every other loaded model, so that the runners seen are this model's only."""
    with ollama.Client(host=host, timeout=30, verify=verify_for(host)) as client:
        for entry in client.ps().models:
            name = entry.model or ""
            if name and name.removesuffix(":latest") != keep.removesuffix(":latest"):
                client.generate(model=name, prompt="", keep_alive=0)


def test_unload_removes_the_model_and_frees_its_runner(
    harness_session: Any, ollama_client: Any, model_under_test: Any
) -> None:
    _unload_others(harness_session.server.host, model_under_test.name)
    _load(ollama_client, model_under_test.name)
    if harness_session.server.pid is None:
        pytest.skip(f"{harness_session.server.describe()} runs elsewhere: cannot see its runner processes")
    check = unload_and_check(
        harness_session.server.host,
        model_under_test.name,
        server_pid=harness_session.server.pid,
        timeout_s=30,
    )
    harness_session.record(memory_record(model_under_test.name, unload=check, scenario="unload"))
    assert check.ps_gone, f"{model_under_test.name} still in /api/ps {check.wait_s:.1f} s after keep_alive 0"
    assert check.runners_before, "no runner process was seen while the model was loaded"
    assert check.freed, (
        f"runner(s) {[r.pid for r in check.runners_after]} still alive {check.wait_s:.1f} s after unloading"
    )
