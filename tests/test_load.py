"""The load generator against the canned Ollama server on 127.0.0.1 (a real HTTP server, own process)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from harness.errors import HarnessError
from harness.load.generator import (
    OUTCOMES,
    LoadResult,
    RequestSample,
    Transport,
    base_url,
    closed_loop,
    concurrency_levels,
    percentiles,
    poisson_arrivals,
    run_closed_loop,
    run_open_loop,
)
from harness.testing.canned_server import BUSY_MESSAGE, CannedBehaviour, CannedServer

TRANSPORTS: list[Transport] = ["ollama", "httpx"]
LATE_S = 1.5  # how late past its limit a timeout may fire on a busy 2-core machine
pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def server() -> Iterator[CannedServer]:
    """No concurrency limit: every request is served at once."""
    with CannedServer(CannedBehaviour(chunks=4)) as canned:
        yield canned


@pytest.fixture(scope="module")
def limited_server() -> Iterator[CannedServer]:
    """Two requests at a time, no queue: a third concurrent request gets 503 busy."""
    with CannedServer(CannedBehaviour(chunks=4, chunk_delay_s=0.02), parallel=2, max_queue=0) as canned:
        yield canned


def _assert_accounted(result: LoadResult, sent: int) -> None:
    counts = result.counts()
    assert set(counts) == set(OUTCOMES)
    assert sum(counts.values()) == len(result.samples) == sent
    assert result.summary()["requests"] == sent
    assert all(s.outcome in OUTCOMES for s in result.samples)
    assert all((s.error is None) == (s.outcome == "ok") for s in result.samples)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_closed_loop_past_the_server_limit_gets_busy_and_every_request_is_counted(
    limited_server: CannedServer, transport: Transport
) -> None:
    result = run_closed_loop(
        limited_server.host,
        "m",
        concurrency=4,
        requests=24,
        timeout_s=10,
        stall_timeout_s=5,
        transport=transport,
    )
    _assert_accounted(result, 24)
    counts = result.counts()
    assert counts["ok"] > 0 and counts["busy"] > 0
    assert counts["timeout"] == counts["error"] == 0
    busy = [s for s in result.samples if s.outcome == "busy"]
    assert all(BUSY_MESSAGE in (s.error or "") and s.output_tokens == 0 for s in busy)
    assert result.summary()["errors_by_kind"] == {f"busy: HTTP 503: {BUSY_MESSAGE}": counts["busy"]}


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_closed_loop_within_the_limit_has_no_busy(limited_server: CannedServer, transport: Transport) -> None:
    result = run_closed_loop(
        limited_server.host, "m", concurrency=2, requests=6, timeout_s=10, transport=transport
    )
    _assert_accounted(result, 6)
    assert result.counts()["ok"] == 6
    assert all(s.output_tokens == 4 and len(s.itl_s) == 3 for s in result.samples)


def test_open_loop_follows_the_seeded_poisson_schedule(server: CannedServer) -> None:
    arrivals = poisson_arrivals(20.0, seed=7, requests=15)
    result = run_open_loop(server.host, "m", rate_per_s=20.0, requests=15, seed=7, timeout_s=10)
    _assert_accounted(result, 15)
    assert result.counts()["ok"] == 15
    started = sorted(s.started_at for s in result.samples)
    # each request starts at its scheduled time, give or take the machine's scheduling noise
    assert all(abs(got - want) < 0.15 for got, want in zip(started, arrivals, strict=True))
    record = result.to_record("m", "open-20")
    assert record["rate"] == 20.0 and record["summary"]["seed"] == 7


def test_poisson_arrivals_are_reproducible_and_have_the_asked_rate() -> None:
    a = poisson_arrivals(50.0, seed=1, requests=4000)
    assert a == poisson_arrivals(50.0, seed=1, requests=4000)
    assert a != poisson_arrivals(50.0, seed=2, requests=4000)
    assert a == sorted(a)
    mean_gap = a[-1] / len(a)
    assert abs(mean_gap - 1 / 50.0) < 0.1 / 50.0
    by_time = poisson_arrivals(50.0, seed=1, duration_s=2.0)
    assert by_time == [t for t in a if t <= 2.0]
    with pytest.raises(HarnessError):
        poisson_arrivals(0.0, seed=1, requests=3)
    with pytest.raises(HarnessError):
        poisson_arrivals(1.0, seed=1)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_stalled_stream_ends_as_timeout_within_the_bound(
    server: CannedServer, transport: Transport
) -> None:
    stall = 0.3
    result = run_closed_loop(
        server.host, "m", concurrency=2, requests=2, timeout_s=10, stall_timeout_s=stall, transport=transport,
        options={"canned_mode": "stall", "canned_after": 2},
    )  # fmt: skip
    _assert_accounted(result, 2)
    for sample in result.samples:
        assert sample.outcome == "timeout"
        assert "no next token for 0.3 s" in (sample.error or "")
        assert stall <= sample.e2e_s < stall + LATE_S
        assert sample.output_tokens == 2 and sample.ttft_s is not None


def test_no_first_token_and_a_total_deadline_are_timeouts_too(server: CannedServer) -> None:
    first = run_closed_loop(
        server.host, "m", concurrency=1, requests=1, timeout_s=10, stall_timeout_s=0.25,
        options={"canned_mode": "stall", "canned_after": 0},
    )  # fmt: skip
    (sample,) = first.samples
    assert sample.outcome == "timeout" and "no first token" in (sample.error or "")
    assert sample.ttft_s is None and 0.25 <= sample.e2e_s < 0.25 + LATE_S
    total = run_closed_loop(
        server.host, "m", concurrency=1, requests=1, timeout_s=0.4, stall_timeout_s=None,
        options={"canned_chunks": 50, "canned_chunk_delay_s": 0.05},
    )  # fmt: skip
    (sample,) = total.samples
    assert sample.outcome == "timeout" and "longer than 0.4 s" in (sample.error or "")
    assert 0.4 <= sample.e2e_s < 0.4 + LATE_S and sample.output_tokens > 0  # all 50 chunks: 2.5 s


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    ("mode", "text"),
    [
        ("cut", "stream ended without done:true after 3 content chunks"),
        ("abort", "RemoteProtocolError"),
        ("error", "error in stream: canned server: error after streaming began"),
    ],
)
def test_a_broken_stream_is_an_error_with_its_text(
    server: CannedServer, transport: Transport, mode: str, text: str
) -> None:
    result = run_closed_loop(
        server.host, "m", concurrency=1, requests=2, timeout_s=10, transport=transport,
        options={"canned_mode": mode, "canned_after": 3},
    )  # fmt: skip
    _assert_accounted(result, 2)
    assert [s.outcome for s in result.samples] == ["error", "error"]
    assert all(text in (s.error or "") and s.output_tokens == 3 for s in result.samples)


def test_a_dead_server_gives_errors_not_exceptions() -> None:
    with CannedServer() as canned:
        host = canned.host
    result = run_closed_loop(host, "m", concurrency=2, requests=3, timeout_s=5)
    _assert_accounted(result, 3)
    assert result.counts()["error"] == 3
    assert all("ConnectError" in (s.error or "") for s in result.samples)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_percentiles_match_known_delays(server: CannedServer, transport: Transport) -> None:
    first, gap, chunks = 0.12, 0.04, 5
    result = run_closed_loop(
        server.host, "m", concurrency=1, requests=3, timeout_s=10, transport=transport,
        options={"canned_chunks": chunks, "canned_first_chunk_delay_s": first, "canned_chunk_delay_s": gap},
    )  # fmt: skip
    summary = result.summary()
    assert summary["counts"]["ok"] == 3
    slack = 0.06  # sleeps never end early; a busy 2-core machine may wake them late
    assert first <= summary["ttft_s"]["p50"] < first + slack
    assert summary["itl_s"]["n"] == 3 * (chunks - 1)
    assert gap - 0.005 <= summary["itl_s"]["p50"] < gap + slack
    e2e = first + gap * (chunks - 1)
    assert e2e <= summary["e2e_s"]["p50"] < e2e + 2 * slack
    assert summary["output_tokens"] == 3 * chunks
    assert summary["output_tokens_per_s"] == pytest.approx(3 * chunks / result.wall_s)
    assert summary["requests_per_s"] == pytest.approx(3 / result.wall_s)


def test_percentile_arithmetic() -> None:
    values = [float(v) for v in range(1, 101)]
    got = percentiles(values)
    assert got == {
        "p50": 50.5,
        "p90": pytest.approx(90.1),
        "p99": pytest.approx(99.01),
        "mean": 50.5,
        "n": 100,
    }
    assert percentiles([]) == {"p50": None, "p90": None, "p99": None, "mean": None, "n": 0}


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_output_tokens_prefer_eval_count_else_count_chunks(
    server: CannedServer, transport: Transport
) -> None:
    options = {"canned_chunks": 4, "canned_tokens_per_chunk": 3}
    with_count = run_closed_loop(
        server.host, "m", concurrency=1, requests=1, options=options, transport=transport
    )
    assert with_count.samples[0].output_tokens == 12
    options["canned_eval_count"] = False
    without = run_closed_loop(
        server.host, "m", concurrency=1, requests=1, options=options, transport=transport
    )
    assert without.samples[0].outcome == "ok" and without.samples[0].output_tokens == 4


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_chat_streams_are_measured_too(server: CannedServer, transport: Transport) -> None:
    result = run_closed_loop(server.host, "m", concurrency=2, requests=4, api="chat", transport=transport)
    assert result.counts()["ok"] == 4
    assert all(s.output_tokens == 4 and len(s.itl_s) == 3 for s in result.samples)


def test_record_is_json_and_carries_every_sample(limited_server: CannedServer) -> None:
    result = run_closed_loop(limited_server.host, "m", concurrency=3, requests=6, timeout_s=10)
    record = json.loads(json.dumps(result.to_record("m", "closed-3")))
    assert record["kind"] == "load" and record["model"] == "m" and record["scenario"] == "closed-3"
    assert record["concurrency"] == 3 and len(record["samples"]) == 6
    assert set(record["samples"][0]) == {
        "outcome",
        "ttft_s",
        "itl_s",
        "e2e_s",
        "output_tokens",
        "error",
        "started_at",
    }
    assert record["wall_s"] > 0 and record["client_cpu_s"] >= 0
    summary = record["summary"]
    assert sum(summary["counts"].values()) == 6
    assert {"p50", "p90", "p99"} <= set(summary["e2e_s"])
    assert isinstance(summary["client_saturated"], bool)


def _result(cpu_s: float, wall_s: float, lag: list[float]) -> LoadResult:
    sample = RequestSample("ok", 0.1, [0.01], 0.2, 2)
    return LoadResult(
        "closed", [sample], wall_s=wall_s, client_cpu_s=cpu_s, process_cpu_s=cpu_s, loop_lag_s=lag
    )


def test_client_saturation_is_flagged_by_cpu_or_loop_lag() -> None:
    assert not _result(cpu_s=0.2, wall_s=1.0, lag=[0.001] * 20).client_saturated
    by_cpu = _result(cpu_s=0.95, wall_s=1.0, lag=[0.001] * 20)
    assert by_cpu.client_saturated and by_cpu.saturation_reasons() == ["client CPU 95% of one core"]
    by_lag = _result(cpu_s=0.2, wall_s=1.0, lag=[0.001] * 10 + [0.2] * 10)
    assert by_lag.client_saturated and by_lag.summary()["saturation_reasons"] == ["event-loop lag p99 200 ms"]


def test_an_idle_run_does_not_call_itself_saturated(server: CannedServer) -> None:
    result = run_closed_loop(
        server.host, "m", concurrency=1, requests=2, options={"canned_chunks": 3, "canned_chunk_delay_s": 0.1}
    )
    summary = result.summary()
    assert summary["client_cpu_fraction"] < 0.5
    assert not summary["client_saturated"]
    assert summary["loop_lag_p99_s"] is not None


def test_blocking_runner_refuses_a_running_loop(server: CannedServer) -> None:
    async def inside() -> None:
        with pytest.raises(HarnessError, match=r"await harness\.load\.generator\.closed_loop"):
            run_closed_loop(server.host, "m", concurrency=1, requests=1)
        result = await closed_loop(server.host, "m", concurrency=1, requests=1)
        assert result.counts()["ok"] == 1

    asyncio.run(inside())


def test_bad_arguments_are_harness_errors(server: CannedServer) -> None:
    with pytest.raises(HarnessError):
        run_closed_loop(server.host, "m", concurrency=0, requests=1)
    with pytest.raises(HarnessError):
        run_closed_loop(server.host, "m", concurrency=1, requests=1, timeout_s=0)
    with pytest.raises(HarnessError):
        run_closed_loop(server.host, "m", concurrency=1, requests=1, transport="curl")  # type: ignore[arg-type]


def test_concurrency_levels() -> None:
    assert concurrency_levels(4) == [1, 4, 5]
    assert concurrency_levels(1) == [1, 2]
    assert concurrency_levels(2, beyond=2) == [1, 2, 3, 4]
    with pytest.raises(HarnessError):
        concurrency_levels(0)


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("example", "http://example:11434"),
        (":8000", "http://127.0.0.1:8000"),
        ("", "http://127.0.0.1:11434"),
        ("http://example", "http://example:80"),
        ("https://example", "https://example:443"),
        ("http://example:9/ollama/", "http://example:9/ollama"),
        ("[::1]:8000", "http://[::1]:8000"),
    ],
)
def test_base_url_follows_ollama_host_rules(host: str, url: str) -> None:
    assert base_url(host) == url
