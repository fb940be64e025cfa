"""One llama.cpp runner per loaded model: a child process serving xllamacpp's HTTP API on a loopback port.

Child side: `python -m harness.engine.runner --model PATH --ctx N --parallel P [--threads T] [--batch B]`
loads the model into `xllamacpp.Server`, prints `READY <url>` on stdout and waits for SIGTERM/SIGINT.
On a load failure llama.cpp's own lines are on stderr and the child exits 1 (or dies of the abort).

Front side: `RunnerProcess` starts the child with its stderr kept in a log file, dies with the engine
(PR_SET_PDEATHSIG), streams `/completion` over httpx, and turns a failed start into Ollama 0.33's message
`llama-server process has terminated: exit status 1: error loading model: <cause>`.

Memory: `/api/ps` `size` is what Ollama 0.33 reports: the sum of the buffer sizes llama.cpp logs while
loading (`CPU_Mapped model buffer size`, `CPU KV buffer size`, `CPU compute buffer size`, `output buffer`),
parsed from the runner's log like Ollama's `memoryParsingWriter`, or the model file's size when no such
line was logged. The runner runs at llama.cpp verbosity 4 for those lines (load errors are still logged;
the price is a few info lines per request in the log, deleted when the runner stops). The runner's resident
memory (RssAnon + RssFile) is on the debug endpoint `/harness/runners` as `rss_bytes`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import logging
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import psutil

log = logging.getLogger("harness.engine")

_PR_SET_PDEATHSIG = 1
# Lines of llama.cpp's stderr that carry the cause of a failed load, in the order Ollama prefers them.
_CAUSE_MARKERS = (
    "error loading model",
    "GGML_ASSERT",
    "gguf_init_from_",
    "llama_model_load_from_file",
    "error:",
)
# llama.cpp's log prefix: an optional timestamp, then the level letter.
_QUIET_LINE = re.compile(r"^(?:\d+\.\d+\.\d+\.\d+ )?[ID] ")
# Ollama's `bufferSizeRegex` (llm/llama_server.go): `<component>: <backend> <kind> buffer size = X MiB`.
_BUFFER_SIZE = re.compile(
    r"^[^\n:]*?([A-Za-z_]\w*):\s+(\S+)\s+(model|KV|compute|output|RS)\s+buffer size\s*=\s*([\d.]+)\s*MiB",
    re.MULTILINE,
)
MIB = 1 << 20
_LOAD_DONE = "model loaded"  # llama-server's init line after the model and context are set up
_VERBOSITY = 4  # llama.cpp prints its buffer sizes at 4 (at 1 only errors, which are kept at 4 too)
_TIMEOUT = httpx.Timeout(None, connect=10.0)  # a completion may run long; connecting to loopback may not


def set_parent_death_signal() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (no orphans even if the engine is killed)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class RunnerLoadError(RuntimeError):
    """The runner could not load its model; the message is Ollama's text, `cause` llama.cpp's own line."""

    def __init__(self, message: str, cause: str = "") -> None:
        super().__init__(message)
        self.cause = cause or message


class RunnerDiedError(RuntimeError):
    """The runner process exited while serving a request."""


class RunnerRequestError(RuntimeError):
    """The runner refused a request (llama-server's status and message, e.g. a prompt over the context)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def extract_cause(stderr_text: str) -> str:
    """llama.cpp's cause line from a runner's stderr, from the marker on (e.g. `error loading model: ...`).
    Info and debug lines (level letter I or D) are skipped: at verbosity 4 they name the same functions."""
    lines = [line for line in stderr_text.splitlines() if not _QUIET_LINE.match(line)]
    for marker in _CAUSE_MARKERS:
        for line in lines:
            index = line.find(marker)
            if index >= 0:
                return line[index:].strip()
    return ""


def buffer_bytes(stderr_text: str) -> int | None:
    """The sum of llama.cpp's logged buffer sizes (model, KV, compute, output, RS), as Ollama's
    `memoryParsingWriter` adds them: keyed by (component, backend, kind), a repeated line replaces the
    earlier one. None when no line was found."""
    buffers = {
        (component, backend, kind): float(mib) * MIB
        for component, backend, kind, mib in _BUFFER_SIZE.findall(stderr_text)
    }
    return int(sum(buffers.values())) if buffers else None


def termination_message(returncode: int | None, stderr_text: str) -> str:
    """Ollama 0.33's wording for a runner that exited before becoming ready."""
    cause = extract_cause(stderr_text)
    if returncode is not None and returncode > 0:
        status = f"exit status {returncode}"
    elif returncode is not None and returncode < 0:
        try:
            status = f"signal: {signal.Signals(-returncode).name.removeprefix('SIG').lower()}"
        except ValueError:
            status = f"signal: {-returncode}"
        if cause:
            return f"llama-server process has terminated: {cause}"
    else:
        status = "exit status unknown"
    return f"llama-server process has terminated: {status}" + (f": {cause}" if cause else "")


class RunnerProcess:
    """Front-side handle of one runner child."""

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        url: str,
        log_path: Path,
        model_path: Path,
        buffer_bytes: int | None = None,
    ) -> None:
        self.process = process
        self.url = url
        self.log_path = log_path
        self.model_path = model_path
        self.buffer_bytes = buffer_bytes
        self.client = httpx.AsyncClient(base_url=url, timeout=_TIMEOUT)
        self._death: str | None = None  # why it exited, kept once known (its log goes when it is stopped)

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    async def start(
        cls,
        model_path: Path,
        *,
        n_ctx: int,
        n_parallel: int,
        n_threads: int,
        n_batch: int,
        log_dir: Path,
        timeout_s: float,
    ) -> RunnerProcess:
        """Start a runner and wait until its model is loaded; raise RunnerLoadError with the cause."""
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"runner-{os.getpid()}-{time.monotonic_ns()}.log"
        command = [
            sys.executable,
            "-m",
            "harness.engine.runner",
            "--model",
            str(model_path),
            "--ctx",
            str(n_ctx),
            "--parallel",
            str(n_parallel),
            "--threads",
            str(n_threads),
            "--batch",
            str(n_batch),
        ]
        with log_path.open("wb") as stderr_file:
            process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr_file,
                preexec_fn=set_parent_death_signal,
            )
        assert process.stdout is not None
        try:
            line = await asyncio.wait_for(
                process.stdout.readline(), None if timeout_s == float("inf") else timeout_s
            )
        except asyncio.CancelledError:
            await asyncio.shield(_kill(process))  # the request went away while loading: leave no runner
            raise
        except asyncio.TimeoutError:
            await _kill(process)
            cause = extract_cause(log_path.read_text(errors="replace"))
            message = f"timed out waiting for llama-server to start - {cause}".rstrip(" -")
            raise RunnerLoadError(message, cause) from None
        if not line.startswith(b"READY "):
            returncode = await process.wait()
            stderr_text = log_path.read_text(errors="replace")
            log_path.unlink()
            raise RunnerLoadError(termination_message(returncode, stderr_text), extract_cause(stderr_text))
        url = line.decode().split(" ", 1)[1].strip()
        buffers = buffer_bytes(await _load_log(log_path))
        log.info(
            "llama-server started: pid=%d url=%s model=%s buffers=%s",
            process.pid,
            url,
            model_path,
            "not logged" if buffers is None else f"{buffers / MIB:.2f} MiB",
        )
        return cls(process, url, log_path, model_path, buffers)

    def alive(self) -> bool:
        return self.process.returncode is None

    def size_bytes(self) -> int:
        """What /api/ps reports as `size`, as Ollama 0.33 does: the sum of the buffer sizes llama.cpp logged
        at load (model + KV + compute + output), else the model file's size."""
        if self.buffer_bytes is not None:
            return self.buffer_bytes
        try:
            return self.model_path.stat().st_size
        except OSError:
            return 0

    def rss_bytes(self) -> int:
        """Resident memory of the runner process (RssAnon + RssFile, as harness.memory measures it)."""
        from harness.memory import rss_of  # here, not at the top: the runner child does not need it

        try:
            return rss_of(self.pid)
        except psutil.Error:
            return 0

    def death_message(self) -> str:
        """Why the runner is gone, in Ollama's words, for errors on in-flight requests.

        The cause is read from the runner's log once the process has exited and kept: `stop()` deletes
        the log, possibly while other requests are still to report the death."""
        if self._death is not None:
            return self._death
        try:
            stderr_text = self.log_path.read_text(errors="replace")
        except OSError:
            stderr_text = ""
        message = termination_message(self.process.returncode, stderr_text)
        if self.process.returncode is not None:
            self._death = message
        return message

    async def completion(self, payload: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Stream llama-server `/completion` events (SSE `data:` lines) as dicts.

        Raises RunnerDiedError when the runner process exited, RunnerRequestError when it refused the
        request or its connection broke while the process lives on."""
        try:
            async with contextlib.AsyncExitStack() as stack:
                response = await self._post_completion(stack, {**payload, "stream": True})
                if response.status_code != 200:
                    body = await response.aread()
                    message = _error_text(body) or f"llama-server answered {response.status_code}"
                    raise RunnerRequestError(response.status_code, message)
                async for line in response.aiter_lines():
                    if line.startswith("data: "):
                        event = json.loads(line[6:])
                        if "error" in event:
                            raise RunnerRequestError(500, _error_text(json.dumps(event).encode()))
                        yield event
        except (httpx.TransportError, httpx.StreamError) as error:
            await asyncio.sleep(0.05)  # let asyncio see an exit that caused the error
            if not self.alive():
                raise RunnerDiedError(self.death_message()) from error
            raise RunnerRequestError(
                500, f"an error was encountered while running the model: {error}"
            ) from error

    async def _post_completion(
        self, stack: contextlib.AsyncExitStack, body: dict[str, Any]
    ) -> httpx.Response:
        """POST /completion and wait for the answer's head.

        llama-server may close a pooled keep-alive connection just as a request goes out on it (about once
        in 5,000 requests under load): the request fails before a byte of answer, the runner lives on. No
        token was streamed, so the request is sent once more, on a fresh connection."""
        try:
            return await stack.enter_async_context(self.client.stream("POST", "/completion", json=body))
        except httpx.TransportError as error:
            if isinstance(error, httpx.TimeoutException) or not self.alive():
                raise
            log.info(
                "runner pid=%d dropped a connection before answering (%r); retrying once", self.pid, error
            )
        fresh = await stack.enter_async_context(httpx.AsyncClient(base_url=self.url, timeout=_TIMEOUT))
        return await stack.enter_async_context(fresh.stream("POST", "/completion", json=body))

    async def stop(self) -> None:
        """Terminate the child (SIGTERM, then SIGKILL after 5 s) and close the HTTP client; the cause of an
        exit of its own is kept for `death_message` before the log is deleted."""
        await self.client.aclose()
        exited = not self.alive()
        await _kill(self.process)
        if exited or self.process.returncode not in (0, -signal.SIGTERM):  # not the exit asked for here
            self.death_message()
        with contextlib.suppress(OSError):
            self.log_path.unlink()


async def _load_log(log_path: Path, wait_s: float = 2.0) -> str:
    """The runner's log once llama.cpp's load lines are in it. llama.cpp logs through a worker thread,
    so `model loaded` can reach the file a moment after READY; wait for it, briefly."""
    deadline = time.monotonic() + wait_s
    while True:
        text = log_path.read_text(errors="replace")
        if _LOAD_DONE in text or time.monotonic() > deadline:
            return text
        await asyncio.sleep(0.01)


def _error_text(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body.decode(errors="replace").strip()
    error = data.get("error", data)
    return str(error.get("message", error)) if isinstance(error, dict) else str(error)


async def _kill(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    try:
        await asyncio.wait_for(process.wait(), 5.0)
    except asyncio.TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


def _serve(args: argparse.Namespace) -> int:
    set_parent_death_signal()
    # Only the main thread takes these signals; llama.cpp's threads inherit the mask.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = args.model
    params.n_ctx = args.ctx
    params.n_parallel = args.parallel
    params.kv_unified = False
    params.n_batch = args.batch
    if args.threads > 0:
        params.cpuparams.n_threads = args.threads
        params.cpuparams_batch.n_threads = args.threads
    params.verbosity = _VERBOSITY
    params.fit_params = False
    params.hostnames = ["127.0.0.1"]
    params.port = 0
    try:
        server = xllamacpp.Server(params)
    except RuntimeError as error:
        print(f"runner: {error}", file=sys.stderr, flush=True)
        return 1
    print(f"READY {server.listening_address}", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    sys.stdout.flush()
    os._exit(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.engine.runner")
    parser.add_argument("--model", required=True)
    parser.add_argument("--ctx", type=int, default=2048)
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--batch", type=int, default=512)
    return _serve(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
