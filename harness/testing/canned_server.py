"""A fast canned Ollama-NDJSON server for load tests and benchmarks.

It answers `/api/generate` and `/api/chat` the way Ollama streams them (one JSON object per line, a final
`done: true` chunk with `eval_count` and timings) without any model behind it, so the load generator can be
tested and measured on its own. Behaviour is set per server (`CannedBehaviour`) and can be overridden per
request through `options` keys prefixed `canned_` (Ollama ignores unknown options, so the same requests work
against a real server):

- `canned_chunks` (int): content chunks before the final one;
- `canned_first_chunk_delay_s`, `canned_chunk_delay_s` (float): sleep before the first / each later chunk;
- `canned_mode`: `normal`, `stall` (send `canned_after` chunks then go silent), `cut` (send `canned_after`
  chunks then end the stream cleanly without `done: true`, as Ollama 0.33 did with random weights), `abort`
  (drop the connection mid-stream), `error` (an in-band `{"error": ...}` line, as Ollama sends after streaming
  began);
- `canned_after` (int): chunks sent before a stall, cut, abort or error;
- `canned_eval_count` (bool): whether the final chunk carries `eval_count`;
- `canned_tokens_per_chunk` (int): `eval_count` = chunks x this (servers may send several tokens a chunk);
- `canned_text` (str): answer with this text instead, one word (a "token") a chunk, honouring the request's
  `num_predict` as a model does: past it the answer is cut off and `done_reason` is `length`
  (`reasoning_answer` builds a long worked answer that ends in an `Answer:` line).

Concurrency mimics Ollama's scheduler: `parallel` requests run at once, up to `max_queue` more wait, and
anything past that gets **503** `server busy, please try again.  maximum pending requests exceeded`.
With `runner_bytes`, the first request for a model starts a child process holding that much memory (a
stand-in for a `llama-server` runner); `/api/ps` lists it and `generate(prompt="", keep_alive=0)` stops it.

Run it in its own process with `CannedServer(...)` (a context manager) so that its CPU does not count as the
client's, or `python -m harness.testing.canned_server --port 11434`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from harness.subprocess_server import SubprocessServer

BUSY_MESSAGE = "server busy, please try again.  maximum pending requests exceeded"
CANNED_VERSION = "0.0.0-canned"
MODES = ("normal", "stall", "cut", "abort", "error")
# A fake runner: holds (and touches) N bytes until stopped, or until its server is gone (no orphans).
_RUNNER_CODE = (
    "import os, sys, time\n"
    "parent = int(sys.argv[2])\n"
    "held = bytearray(int(sys.argv[1]))\n"
    "held[::4096] = b'x' * len(held[::4096])\n"
    "while os.getppid() == parent:\n"
    "    time.sleep(0.2)\n"
)


@dataclass(frozen=True)
class CannedBehaviour:
    """How the canned server answers one request (see the module docstring for each field)."""

    chunks: int = 8
    first_chunk_delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    mode: str = "normal"
    after: int = 0
    eval_count: bool = True
    tokens_per_chunk: int = 1
    stall_s: float = 3600.0
    text: str = ""

    def with_options(self, options: dict[str, Any] | None) -> CannedBehaviour:
        """This behaviour with any `canned_<field>` options applied."""
        if not options:
            return self
        changes: dict[str, Any] = {}
        for f in fields(self):
            key = f"canned_{f.name}"
            if key in options:
                kind = type(getattr(self, f.name))
                changes[f.name] = kind(options[key])
        result = replace(self, **changes) if changes else self
        if result.mode not in MODES:
            raise ValueError(f"canned_mode must be one of {', '.join(MODES)}, got {result.mode!r}")
        return result


@dataclass
class _Runner:
    process: subprocess.Popen[bytes]
    size: int
    context_length: int


@dataclass
class _State:
    behaviour: CannedBehaviour
    parallel: int | None
    max_queue: int
    runner_bytes: int
    in_flight: int = 0
    slots: asyncio.Semaphore | None = None
    runners: dict[str, _Runner] = field(default_factory=dict)


def _timings(n_tokens: int, started: float) -> dict[str, int]:
    total = int((time.perf_counter() - started) * 1e9)
    return {
        "total_duration": total,
        "load_duration": 1000,
        "prompt_eval_count": 1,
        "prompt_eval_duration": 1000,
        "eval_count": n_tokens,
        "eval_duration": max(total - 2000, 1),
    }


def reasoning_answer(tokens: int, answer: str) -> str:
    """A worked answer of `tokens` words of reasoning, then `Answer: <answer>` on its own last line (for
    `canned_text`: a model that answers correctly, but at length)."""
    steps = [f"step {index} checks the product once more." for index in range(1, tokens)]
    words = " ".join(steps).split()[: max(0, tokens - 2)]
    return " ".join(words) + f"\nAnswer: {answer}"


def _text_tokens(behaviour: CannedBehaviour) -> list[str]:
    """`canned_text` split into tokens: each word with the whitespace before it."""
    words = behaviour.text.replace("\n", " \n ").split(" ")
    tokens: list[str] = []
    for word in words:
        if word == "":
            continue
        tokens.append(word if word == "\n" or not tokens or tokens[-1] == "\n" else f" {word}")
    return tokens


def _piece(base: dict[str, Any], chat: bool, text: str) -> bytes:
    if chat:
        return (
            json.dumps({**base, "message": {"role": "assistant", "content": text}, "done": False}) + "\n"
        ).encode()
    return (json.dumps({**base, "response": text, "done": False}) + "\n").encode()


def _pieces(
    model: str, chat: bool, behaviour: CannedBehaviour, num_predict: int | None
) -> tuple[list[bytes], dict[str, Any]]:
    """The content lines (bytes) and the final line: `chunks` x "tok ", or `text` cut at `num_predict`."""
    created = time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime())
    base: dict[str, Any] = {"model": model, "created_at": created}
    reason = "stop"
    if behaviour.text:
        tokens = _text_tokens(behaviour)
        if num_predict is not None and 0 <= num_predict < len(tokens):
            tokens, reason = tokens[:num_predict], "length"
        lines = [_piece(base, chat, token) for token in tokens]
    else:
        lines = [_piece(base, chat, "tok ")] * behaviour.chunks
    if chat:
        final = {**base, "message": {"role": "assistant", "content": ""}, "done": True, "done_reason": reason}
    else:
        final = {**base, "response": "", "done": True, "done_reason": reason}
    return lines, final


async def _stream(
    model: str, chat: bool, behaviour: CannedBehaviour, state: _State, num_predict: int | None = None
) -> AsyncIterator[bytes]:
    started = time.perf_counter()
    lines, final = _pieces(model, chat, behaviour, num_predict)
    try:
        if state.slots is not None:
            await state.slots.acquire()
        try:
            stop_at = min(behaviour.after, len(lines)) if behaviour.mode != "normal" else len(lines)
            for i in range(stop_at):
                delay = behaviour.first_chunk_delay_s if i == 0 else behaviour.chunk_delay_s
                if delay > 0:
                    await asyncio.sleep(delay)
                yield lines[i]
            if behaviour.mode == "stall":
                await asyncio.sleep(behaviour.stall_s)
                return
            if behaviour.mode == "cut":
                return
            if behaviour.mode == "abort":
                raise ConnectionAbortedError("canned server: stream aborted on purpose")
            if behaviour.mode == "error":
                yield (json.dumps({"error": "canned server: error after streaming began"}) + "\n").encode()
                return
            if not lines and behaviour.first_chunk_delay_s > 0:
                await asyncio.sleep(behaviour.first_chunk_delay_s)
            if behaviour.eval_count:
                final = {**final, **_timings(len(lines) * behaviour.tokens_per_chunk, started)}
            yield (json.dumps(final) + "\n").encode()
        finally:
            if state.slots is not None:
                state.slots.release()
    finally:
        state.in_flight -= 1


def _load_runner(state: _State, model: str, options: dict[str, Any]) -> None:
    if state.runner_bytes <= 0 or model in state.runners:
        return
    process = subprocess.Popen(
        [sys.executable, "-c", _RUNNER_CODE, str(state.runner_bytes), str(os.getpid())]
    )
    ctx = int(options.get("num_ctx", 2048))
    state.runners[model] = _Runner(process, state.runner_bytes, ctx)


def _unload_runner(state: _State, model: str) -> None:
    runner = state.runners.pop(model, None)
    if runner is not None:
        runner.process.terminate()
        runner.process.wait(timeout=10)


async def _completion(request: Request, chat: bool) -> Response:
    state: _State = request.app.state.canned
    try:
        body = await request.json()
    except json.JSONDecodeError:
        return JSONResponse({"error": "invalid JSON body"}, status_code=400)
    model = body.get("model") or ""
    if not model:
        return JSONResponse({"error": "model is required"}, status_code=400)
    options = body.get("options") or {}
    try:
        behaviour = state.behaviour.with_options(options)
    except (TypeError, ValueError) as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    empty = (not body.get("prompt")) if not chat else (not body.get("messages"))
    if empty:
        if body.get("keep_alive") in (0, "0", "0s"):
            _unload_runner(state, model)
            return JSONResponse({"model": model, "response": "", "done": True, "done_reason": "unload"})
        _load_runner(state, model, options)
        return JSONResponse({"model": model, "response": "", "done": True, "done_reason": "load"})
    limit = None if state.parallel is None else state.parallel + state.max_queue
    if limit is not None and state.in_flight >= limit:
        return JSONResponse({"error": BUSY_MESSAGE}, status_code=503)
    _load_runner(state, model, options)
    state.in_flight += 1
    num_predict = options.get("num_predict")
    budget = int(num_predict) if isinstance(num_predict, (int, float)) and num_predict >= 0 else None
    stream = _stream(model, chat, behaviour, state, budget)
    if body.get("stream", True) is False:
        parts = [json.loads(chunk) async for chunk in stream]
        return JSONResponse(_merge_parts(parts, chat), status_code=500 if "error" in parts[-1] else 200)
    return StreamingResponse(stream, media_type="application/x-ndjson")


def _merge_parts(parts: list[dict[str, Any]], chat: bool) -> dict[str, Any]:
    """One non-streamed reply from streamed parts: the last part with the text of all of them."""
    if not parts:
        return {"error": "canned server: no reply"}
    merged = dict(parts[-1])
    if chat:
        text = "".join(p.get("message", {}).get("content", "") for p in parts)
        merged["message"] = {"role": "assistant", "content": text}
    else:
        merged["response"] = "".join(p.get("response", "") for p in parts)
    return merged


async def _generate(request: Request) -> Response:
    return await _completion(request, chat=False)


async def _chat(request: Request) -> Response:
    return await _completion(request, chat=True)


async def _ps(request: Request) -> Response:
    state: _State = request.app.state.canned
    models = [
        {
            "name": name,
            "model": name,
            "size": runner.size,
            "size_vram": 0,
            "digest": "0" * 64,
            "details": {"format": "gguf", "family": "llama"},
            "expires_at": "2099-01-01T00:00:00Z",
            "context_length": runner.context_length,
        }
        for name, runner in state.runners.items()
        if runner.process.poll() is None
    ]
    return JSONResponse({"models": models})


async def _show(request: Request) -> Response:
    """Any model exists (so `--model NAME` works against the canned server)."""
    return JSONResponse({"details": {"format": "gguf", "family": "canned"}, "model_info": {}})


async def _tags(request: Request) -> Response:
    """No model is listed by name; the names a client asks for are answered anyway."""
    return JSONResponse({"models": []})


async def _root(request: Request) -> Response:
    return PlainTextResponse("Ollama is running")


async def _version(request: Request) -> Response:
    return JSONResponse({"version": CANNED_VERSION})


def create_app(
    behaviour: CannedBehaviour | None = None,
    *,
    parallel: int | None = None,
    max_queue: int = 0,
    runner_bytes: int = 0,
) -> Starlette:
    """The canned server as an ASGI app (see the module docstring)."""
    state = _State(behaviour or CannedBehaviour(), parallel, max_queue, runner_bytes)
    if parallel is not None:
        state.slots = asyncio.Semaphore(parallel)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        for model in list(state.runners):
            _unload_runner(state, model)

    app = Starlette(
        routes=[
            Route("/", _root, methods=["GET", "HEAD"]),
            Route("/api/version", _version),
            Route("/api/generate", _generate, methods=["POST"]),
            Route("/api/chat", _chat, methods=["POST"]),
            Route("/api/ps", _ps),
            Route("/api/show", _show, methods=["POST"]),
            Route("/api/tags", _tags),
        ],
        lifespan=lifespan,
    )
    app.state.canned = state
    return app


class CannedServer(SubprocessServer):
    """Runs the canned server in a child process on a free loopback port; stops it (and its runners) on exit.

    >>> with CannedServer(CannedBehaviour(chunks=4), parallel=2) as server:  # doctest: +SKIP
    ...     server.host   # "127.0.0.1:PORT", for ollama.AsyncClient(host=...)
    """

    name = "canned server"

    def __init__(
        self,
        behaviour: CannedBehaviour | None = None,
        *,
        parallel: int | None = None,
        max_queue: int = 0,
        runner_bytes: int = 0,
        start_timeout_s: float = 20.0,
    ) -> None:
        super().__init__(start_timeout_s=start_timeout_s)
        self.behaviour = behaviour or CannedBehaviour()
        self.parallel = parallel
        self.max_queue = max_queue
        self.runner_bytes = runner_bytes

    def _launch(self) -> subprocess.Popen[bytes]:
        """The child gets an already listening socket: no race for the port."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(1024)
        self.port = sock.getsockname()[1]
        argv = [sys.executable, "-m", "harness.testing.canned_server", "--fd", str(sock.fileno())]
        argv += ["--behaviour", json.dumps(asdict(self.behaviour)), "--max-queue", str(self.max_queue)]
        argv += ["--runner-bytes", str(self.runner_bytes)]
        if self.parallel is not None:
            argv += ["--parallel", str(self.parallel)]
        try:
            return subprocess.Popen(argv, pass_fds=(sock.fileno(),))
        finally:
            sock.close()

    def _hint(self) -> str:
        return (
            "run `python -m harness.testing.canned_server --port 0` to see its error; "
            "if the machine is overloaded, raise start_timeout_s"
        )

    def stop(self, timeout: float = 10.0) -> None:
        super().stop(timeout)
        self.process = None


class _HideDeliberateAborts(logging.Filter):
    """Keeps uvicorn from logging a traceback for the `abort` mode's deliberate ConnectionAbortedError."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ConnectionAbortedError))


def serve(app: Starlette, *, port: int | None = None, fd: int | None = None) -> None:
    """Serve `app` with uvicorn on 127.0.0.1:`port` or on a bound socket `fd` until SIGTERM/SIGINT."""
    import uvicorn

    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port or 0,
        fd=fd,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=1,
    )
    logging.getLogger("uvicorn.error").addFilter(_HideDeliberateAborts())  # after Config set up logging
    uvicorn.Server(config).run()


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m harness.testing.canned_server", description=__doc__.splitlines()[0]
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", type=int, help="port on 127.0.0.1 (0 = any free port)")
    where.add_argument("--fd", type=int, help="an already bound, listening socket passed by the parent")
    parser.add_argument("--behaviour", default="{}", help="CannedBehaviour fields as a JSON object")
    parser.add_argument(
        "--parallel", type=int, default=None, help="requests served at once (default: no limit)"
    )
    parser.add_argument("--max-queue", type=int, default=0, help="requests that may wait past --parallel")
    parser.add_argument("--runner-bytes", type=int, default=0, help="memory a fake runner child holds")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    behaviour = CannedBehaviour(**json.loads(args.behaviour))
    app = create_app(
        behaviour, parallel=args.parallel, max_queue=args.max_queue, runner_bytes=args.runner_bytes
    )
    serve(app, port=args.port, fd=args.fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
