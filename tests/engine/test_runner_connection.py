"""RunnerProcess's connection to its runner, against a stand-in runner: a real child process serving raw
HTTP on 127.0.0.1 that drops chosen connections without answering, or dies with a llama.cpp-like cause
on stderr.

Covers: a connection dropped before any answer is retried once on a fresh one (llama-server closes a pooled
keep-alive connection now and then under load); a live runner's broken connection is a request error, not a
death; a dead runner's cause survives `stop()` deleting its log.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from harness.engine.runner import RunnerDiedError, RunnerProcess, RunnerRequestError

pytestmark = pytest.mark.timeout(30)

# argv: how many connections to drop unanswered first, and whether to die (GGML_ASSERT, exit 134) instead.
STAND_IN = r"""
import socket, sys, os
drop, die = int(sys.argv[1]), sys.argv[2] == "die"
server = socket.create_server(("127.0.0.1", 0))
print(f"READY http://127.0.0.1:{server.getsockname()[1]}", flush=True)
number = 0
while True:
    connection, _ = server.accept()
    number += 1
    data = b""
    while b"\r\n\r\n" not in data:
        data += connection.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    fields = dict(line.split(b": ", 1) for line in head.lower().split(b"\r\n")[1:])
    length = int(fields[b"content-length"])
    while len(body) < length:
        body += connection.recv(65536)
    if die:
        print("llama.cpp/ggml.c:1: GGML_ASSERT(stand-in) failed", file=sys.stderr, flush=True)
        os._exit(134)
    if number <= drop:
        connection.close()
        continue
    event = b'data: {"content": "connection %d", "stop": true}\n\n' % number
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
    connection.sendall(head + event)
    connection.close()
"""


@asynccontextmanager
async def stand_in_runner(
    tmp_path: Path, *, drop: int = 0, die: bool = False
) -> AsyncIterator[RunnerProcess]:
    log_path = tmp_path / "runner.log"
    with log_path.open("wb") as stderr_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", STAND_IN, str(drop), "die" if die else "serve",
            stdout=asyncio.subprocess.PIPE, stderr=stderr_file,
        )  # fmt: skip
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 10)
    runner = RunnerProcess(process, line.decode().split()[1], log_path, tmp_path / "model.gguf")
    try:
        yield runner
    finally:
        await runner.stop()


async def events(runner: RunnerProcess) -> list[dict[str, Any]]:
    return [event async for event in runner.completion({"prompt": "hi", "n_predict": 1})]


def test_a_connection_dropped_before_any_answer_is_retried_once(tmp_path: Path) -> None:
    async def scenario() -> list[dict[str, Any]]:
        async with stand_in_runner(tmp_path, drop=1) as runner:
            return await events(runner)

    assert asyncio.run(scenario()) == [{"content": "connection 2", "stop": True}]


def test_a_live_runner_that_keeps_dropping_is_a_request_error_not_a_death(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with stand_in_runner(tmp_path, drop=2) as runner:
            with pytest.raises(RunnerRequestError, match="an error was encountered while running the model"):
                await events(runner)
            assert runner.alive()  # so the engine keeps it (only an exited runner marks its model broken)
            assert await events(runner) == [{"content": "connection 3", "stop": True}]

    asyncio.run(scenario())


DEATH = "llama-server process has terminated: exit status 134: GGML_ASSERT(stand-in) failed"


def test_a_dead_runners_cause_outlives_its_deleted_log(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with stand_in_runner(tmp_path, die=True) as runner:
            with pytest.raises(RunnerDiedError) as caught:
                await events(runner)
            assert str(caught.value) == DEATH
            await runner.stop()  # another request's failure stops the runner and deletes its log
            assert not runner.log_path.exists()
            assert runner.death_message() == DEATH  # what a second in-flight request reports

    asyncio.run(scenario())


def test_stop_reads_the_cause_of_an_exit_before_deleting_the_log(tmp_path: Path) -> None:
    async def scenario() -> tuple[str, str]:
        async with stand_in_runner(tmp_path, die=True) as runner:
            with pytest.raises(RunnerDiedError):
                await events(runner)
            # Two handles on the exited process that have not asked why yet: one stops it, then both ask.
            stopping = RunnerProcess(runner.process, runner.url, runner.log_path, runner.model_path)
            late = RunnerProcess(runner.process, runner.url, runner.log_path, runner.model_path)
            await stopping.stop()
            assert not runner.log_path.exists()
            return stopping.death_message(), late.death_message()

    kept, without_log = asyncio.run(scenario())
    assert kept == DEATH
    assert without_log == "llama-server process has terminated: exit status 134"  # no log, no crash
