"""One llama.cpp runner per loaded model: a child process serving xllamacpp's HTTP API on a loopback port.

Child side: `python -m harness.engine.runner --model PATH --ctx N --parallel P [--threads T] [--batch B]
[--embedding [--pooling last]]` loads the model into `xllamacpp.Server`, prints `READY <url>` on stdout and
waits for SIGTERM/SIGINT. On a load failure llama.cpp's own lines are on stderr and the child exits 1 (or
dies of the abort).

Embeddings (llama-server's `--embeddings`) are on only in runners started for an embedding request: they
cost memory (llama.cpp reserves outputs for a whole batch: the compute buffer of the tiny fixture grows from
1.64 to 1.87 MiB, and /api/ps shows it). Such a runner still serves completions, unchanged: llama-server
switches between logits and embeddings per batch. The pooling is the GGUF's own `<arch>.pooling_type` when
it has one, else `last`: the last token's hidden state, what Ollama's llama.cpp runner returned for models
without a pooling type (runner/llamarunner `GetEmbeddingsIth(seq.iBatch)`). Ollama 0.30+ starts llama-server
with `--embedding` only for GGUFs with a pooling type, and answers 501 for the others.

Front side: `RunnerProcess` starts the child with its stderr kept in a log file, dies with the engine
(PR_SET_PDEATHSIG), streams `/completion` over httpx, and turns a failed start into Ollama 0.33's message
`llama-server process has terminated: exit status 1: error loading model: <cause>`.

Settings: Ollama 0.33's llama-server command line (`-c N -np P --load-mode none --flash-attn auto -b B
-ub B -t T --context-shift --keep 4`): weights read into memory rather than mapped, micro-batch = batch,
and the context shifted when a generation fills it (the older half after `n_keep` is dropped) instead of
stopping there.

Memory: `/api/ps` `size` is what Ollama 0.33 reports: the sum of the buffer sizes llama.cpp logs while
loading (`CPU model buffer size`, `CPU KV buffer size`, `CPU compute buffer size`, `output buffer`),
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

from harness.gguf.llamacpp import ollama_cause_line

log = logging.getLogger("harness.engine")

_PR_SET_PDEATHSIG = 1
# Ollama's `bufferSizeRegex` (llm/llama_server.go): `<component>: <backend> <kind> buffer size = X MiB`.
_BUFFER_SIZE = re.compile(
    r"^[^\n:]*?([A-Za-z_]\w*):\s+(\S+)\s+(model|KV|compute|output|RS)\s+buffer size\s*=\s*([\d.]+)\s*MiB",
    re.MULTILINE,
)
MIB = 1 << 20
_LOAD_DONE = "model loaded"  # llama-server's init line after the model and context are set up
_VERBOSITY = 4  # llama.cpp prints its buffer sizes at 4 (at 1 only errors, which are kept at 4 too)
_TIMEOUT = httpx.Timeout(None, connect=10.0)  # a completion may run long; connecting to loopback may not
NUM_KEEP = 4  # Ollama's default num_keep, its llama-server's `--keep` (requests send their own `n_keep`)
# The xllamacpp wheel's ggml runs its threads with OpenMP (Ollama's llama-server uses ggml's own pool, which
# spins too). libgomp's default spin (300,000 rounds at each barrier and after each graph) keeps waiting
# workers busy. Measured on 2 cores (Gemma 3 270M, 2 threads, benchmarks/README.md): at load ~3, 100,000
# rounds give Ollama's speed (prompt 558 vs 545 tok/s, generation 83.4 vs 84.9), the default 269 and 65.7,
# none 52 tok/s generation; on a machine loaded by other work (load 8 to 10) spinning starves the threads it
# waits for (100,000 rounds: 25 and 4.4 tok/s, Ollama 17 and 4.2; none: 169 and 51.8). The default is
# Ollama's speed on a machine the model has to itself; an explicit GOMP_SPINCOUNT in the environment wins
# (the project's own test run sets 0: its tests share two cores).
OPENMP_SPIN_COUNT = "100000"


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


def embedding_pooling(model_path: Path) -> str | None:
    """The `--pooling` a runner needs for embeddings: None when the GGUF names its own pooling type (llama.cpp
    reads it), else `last`. None too for an unreadable file: llama.cpp reports that better."""
    # Here, not at the top: the runner child imports this module and must not pay for the GGUF reader.
    from harness.errors import GGUFReadError
    from harness.gguf.reader import read_gguf_header

    try:
        header = read_gguf_header(model_path)
    except GGUFReadError:
        return None
    architecture = header.value("general.architecture")
    if not isinstance(architecture, str) or header.value(f"{architecture}.pooling_type") is not None:
        return None
    return "last"


class RunnerRequestError(RuntimeError):
    """The runner refused a request (llama-server's status and message, e.g. a prompt over the context)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


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
    cause = ollama_cause_line(stderr_text)
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
        embedding: bool = False,
    ) -> RunnerProcess:
        """Start a runner (with embeddings on if `embedding`) and wait until its model is loaded; raise
        RunnerLoadError with the cause."""
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
        if embedding:
            pooling = embedding_pooling(model_path)
            command += ["--embedding", *(["--pooling", pooling] if pooling else [])]
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
            cause = ollama_cause_line(log_path.read_text(errors="replace"))
            message = f"timed out waiting for llama-server to start - {cause}".rstrip(" -")
            raise RunnerLoadError(message, cause) from None
        if not line.startswith(b"READY "):
            returncode = await process.wait()
            stderr_text = log_path.read_text(errors="replace")
            log_path.unlink()
            raise RunnerLoadError(
                termination_message(returncode, stderr_text), ollama_cause_line(stderr_text)
            )
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
            raise await self._transport_failure(error) from error

    async def embedding(self, text: str | list[int], *, normalize: bool = True) -> tuple[list[float], int]:
        """llama-server's embedding of a text or of token ids taken as they are (`/v1/embeddings`,
        L2-normalized unless `normalize` is False) and the number of tokens it read. Raises like
        `completion`."""
        body: dict[str, Any] = {"input": text}
        if not normalize:
            body["embd_normalize"] = -1
        answer = await self._post_json("/v1/embeddings", body)
        data = answer.get("data") or [{}]
        usage = answer.get("usage") or {}
        tokens = int(usage.get("prompt_tokens") or data[0].get("tokens_evaluated") or 0)
        return list(data[0].get("embedding") or []), tokens

    async def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        """llama-server's tokens of `text` (`/tokenize`), with the BOS/EOS the model adds if `add_special`."""
        answer = await self._post_json("/tokenize", {"content": text, "add_special": add_special})
        return list(answer["tokens"])

    async def detokenize(self, tokens: list[int]) -> str:
        """llama-server's text of token ids (`/detokenize`)."""
        answer = await self._post_json("/detokenize", {"tokens": tokens})
        return str(answer.get("content", ""))

    async def _post_json(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST a JSON request and return the JSON answer; a refusal raises RunnerRequestError with
        llama-server's status and message. A pooled connection dropped before the answer (see
        `_post_completion`) is retried once: these requests have no side effects."""
        try:
            try:
                response = await self.client.post(path, json=body)
            except httpx.TransportError as error:
                if isinstance(error, httpx.TimeoutException) or not self.alive():
                    raise
                response = await self.client.post(path, json=body)
        except httpx.TransportError as error:
            raise await self._transport_failure(error) from error
        if response.status_code != 200:
            message = _error_text(response.content) or f"llama-server answered {response.status_code}"
            raise RunnerRequestError(response.status_code, message)
        answer = response.json()
        return answer if isinstance(answer, dict) else {"data": answer}

    async def _transport_failure(self, error: Exception) -> RuntimeError:
        """The error for a broken connection: RunnerDiedError when the process exited, else
        RunnerRequestError (500)."""
        await asyncio.sleep(0.05)  # let asyncio see an exit that caused the error
        if not self.alive():
            return RunnerDiedError(self.death_message())
        return RunnerRequestError(500, f"an error was encountered while running the model: {error}")

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


def server_params(
    model: str,
    *,
    n_ctx: int,
    n_parallel: int = 1,
    n_batch: int = 512,
    n_threads: int = 0,
    embedding: bool = False,
    pooling: str | None = None,
    verbosity: int = _VERBOSITY,
) -> Any:
    """xllamacpp.CommonParams for a llama-server set up as Ollama 0.33 starts its own (`-c N -np P
    --load-mode none --flash-attn auto -b B -ub B -t T --context-shift --keep 4`); `n_threads` 0: llama.cpp's
    default. Sets GOMP_SPINCOUNT (unless set) before importing xllamacpp: see OPENMP_SPIN_COUNT."""
    os.environ.setdefault("GOMP_SPINCOUNT", OPENMP_SPIN_COUNT)  # libgomp reads it when xllamacpp loads it
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = model
    params.n_ctx = n_ctx
    params.n_parallel = n_parallel
    params.kv_unified = False
    params.n_batch = n_batch
    params.n_ubatch = n_batch
    params.load_mode = xllamacpp.llama_load_mode.LLAMA_LOAD_MODE_NONE
    params.flash_attn_type = xllamacpp.llama_flash_attn_type.LLAMA_FLASH_ATTN_TYPE_AUTO
    params.ctx_shift = True
    params.n_keep = NUM_KEEP
    params.embedding = embedding
    if pooling:
        params.pooling_type = getattr(xllamacpp.llama_pooling_type, f"LLAMA_POOLING_TYPE_{pooling.upper()}")
    if n_threads > 0:
        params.cpuparams.n_threads = n_threads
        params.cpuparams_batch.n_threads = n_threads
    params.verbosity = verbosity
    params.fit_params = False
    return params


def _serve(args: argparse.Namespace) -> int:
    set_parent_death_signal()
    # Only the main thread takes these signals; llama.cpp's threads inherit the mask.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    params = server_params(
        args.model,
        n_ctx=args.ctx,
        n_parallel=args.parallel,
        n_batch=args.batch,
        n_threads=args.threads,
        embedding=args.embedding,
        pooling=args.pooling,
    )
    params.hostnames = ["127.0.0.1"]
    params.port = 0
    import xllamacpp  # loaded by server_params already

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
    parser.add_argument("--embedding", action="store_true")
    parser.add_argument("--pooling", choices=["none", "mean", "cls", "last", "rank"], default=None)
    return _serve(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
