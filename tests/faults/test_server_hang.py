"""Scenario: the server hangs (accepts the connection, never answers).

A raw socket server on 127.0.0.1 holds every connection open without a byte of reply. The client's
stall and per-request limits and the load generator's watchdog must fire on their own, with a message
naming the request and how long it waited; no test here may lean on the global pytest timeout.
Reproduce: `.venv/bin/pytest tests/faults/test_server_hang.py -q`.
"""

from __future__ import annotations

import re
import time

import pytest

from harness.errors import ServerError
from harness.load.generator import run_closed_loop, run_open_loop
from harness.server.client import OllamaClient, OllamaRequestError

from .conftest import SilentServer

pytestmark = pytest.mark.timeout(30)

SLACK_S = 3.0  # how late past its limit a timeout may fire on a busy 2-core machine


def test_generate_stall_names_the_request_and_the_wait(silent_server: SilentServer) -> None:
    with OllamaClient(silent_server.host, timeout=30, stall_timeout=1.0) as client:
        start = time.monotonic()
        with pytest.raises(OllamaRequestError) as caught:
            client.generate("tiny", "hello", options={"num_predict": 4})
        waited = time.monotonic() - start
    assert 1.0 <= waited < 1.0 + SLACK_S
    message = str(caught.value)
    assert silent_server.host in message
    assert "stalled on generate (model 'tiny')" in message
    assert "no first token for 1 s" in message
    assert caught.value.request == "generate (model 'tiny')"
    assert silent_server.accepted >= 1


def test_chat_stall_fires_per_call_limit(silent_server: SilentServer) -> None:
    with OllamaClient(silent_server.host, timeout=30, stall_timeout=30) as client:
        start = time.monotonic()
        with pytest.raises(
            OllamaRequestError, match=r"stalled on chat \(model 'tiny'\): no first token for 0.5 s"
        ):
            client.chat("tiny", [{"role": "user", "content": "hi"}], stall_timeout=0.5)
        assert time.monotonic() - start < 0.5 + SLACK_S


def test_per_request_timeout_shorter_than_the_stall_limit_fires_first(silent_server: SilentServer) -> None:
    # timeout=1 s bounds the whole request even though the stall limit (4 s) would allow a longer wait.
    with OllamaClient(silent_server.host, timeout=1.0, stall_timeout=4.0) as client:
        start = time.monotonic()
        with pytest.raises(OllamaRequestError) as caught:
            client.generate("tiny", "hello")
        waited = time.monotonic() - start
    assert waited < 1.0 + SLACK_S, f"the 1 s request limit fired after {waited:.1f} s"
    message = str(caught.value).replace(silent_server.host, "HOST")
    assert "did not finish generate (model 'tiny') within 1 s (0 chunks so far)" in message, message


def test_plain_request_on_a_hung_server_says_how_long_it_waited(silent_server: SilentServer) -> None:
    with OllamaClient(silent_server.host, timeout=1.0) as client:
        start = time.monotonic()
        with pytest.raises(ServerError) as caught:
            client.version()
        assert time.monotonic() - start < 1.0 + SLACK_S
    message = str(caught.value).replace(silent_server.host, "HOST")  # a port may end in 1
    assert "did not answer GET /api/version within 1 s (read timeout)" in message, message


def test_load_closed_loop_stalls_end_as_timeouts_naming_the_wait(silent_server: SilentServer) -> None:
    start = time.monotonic()
    result = run_closed_loop(
        silent_server.host, "tiny", concurrency=2, requests=4, timeout_s=10.0, stall_timeout_s=0.5
    )
    wall = time.monotonic() - start
    assert result.counts() == {"ok": 0, "busy": 0, "timeout": 4, "error": 0}
    assert wall < 2 * 0.5 + 2 * SLACK_S  # two rounds of two stalled requests
    for sample in sorted(result.samples, key=lambda sample: sample.started_at):
        assert sample.error is not None
        cause, request = sample.error.split("\n")
        assert cause == "no first token for 0.5 s (stall timeout)"
        assert re.fullmatch(r"generate 'tiny', request [1-4], started \d+\.\d{3} s into the run", request)
        assert f"started {sample.started_at:.3f} s" in request
        assert 0.5 <= sample.e2e_s < 0.5 + SLACK_S
    assert sorted(int(s.error.split("request ")[1].split(",")[0]) for s in result.samples if s.error) == [
        1,
        2,
        3,
        4,
    ]
    assert result.errors_by_kind() == {"timeout: no first token for 0.5 s (stall timeout)": 4}


def test_load_open_loop_per_request_timeout_fires_without_a_stall_limit(silent_server: SilentServer) -> None:
    result = run_open_loop(
        silent_server.host, "tiny", rate_per_s=20.0, requests=3, seed=1, timeout_s=0.8, stall_timeout_s=None
    )
    assert result.counts()["timeout"] == 3
    assert {(s.error or "").splitlines()[0] for s in result.samples} == {
        "request took longer than 0.8 s (timeout)"
    }
    assert {(s.error or "").splitlines()[1].split(",")[0] for s in result.samples} == {"generate 'tiny'"}
    assert max(s.e2e_s for s in result.samples) < 0.8 + SLACK_S
