"""The harness's one way to talk to an Ollama server (real Ollama or the embedded engine).

A thin layer over the official `ollama` client (`ollama.Client`), plus plain httpx for what that client
lacks: `GET /api/version`, `GET /`, `HEAD /api/blobs/:digest` (upload only when missing) and the old create
form of Ollama <= 0.5.4 (a Modelfile string). What it adds:

* generate/chat always stream and return a `Completion` with a monotonic timestamp per chunk, TTFT,
  inter-token gaps and the final chunk's server durations; a stream that ends without `done: true` is an
  error (real Ollama 0.33 does that when llama-server rejects the output);
* a per-request time limit and a stall limit (no data for N seconds, e.g. no first token), whose message
  says which request stalled and for how long;
* every failure is a `ServerError` (an `OllamaRequestError` when the server answered) naming the host, the
  request and the cause: "Ollama at http://127.0.0.1:11434 is not answering: connection refused",
  "... answered HTTP 404: model 'x' not found", "... closed the connection during generate ...".
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import httpx
import ollama
import pydantic

from harness.errors import GGUFReadError, ServerError
from harness.http_tls import verify_for
from harness.modelfile.parse import Command, Modelfile, parse_modelfile
from harness.ollama_host import parse_host
from harness.progress import NO_PROGRESS, Progress
from harness.server.failures import (
    CONNECT_ERRORS,
    DEFAULT_STATUS_HINT,
    STATUS_HINTS,
    TRANSPORT_FAILURES,
    Failure,
)
from harness.units import format_value

__all__ = ["STRUCTURED_CREATE_SINCE", "Completion", "OllamaClient", "OllamaRequestError", "parse_version"]

# Ollama 0.5.5 replaced the Modelfile string of /api/create with structured fields (files, from, ...).
STRUCTURED_CREATE_SINCE = (0, 5, 5)
SETTINGS_PATH = "/harness/settings"  # the embedded engine's scheduler settings (harness/engine/app.py)
_HASH_CHUNK = 1 << 20
_T = TypeVar("_T")


class OllamaRequestError(ServerError):
    """The server answered a request with an error: the HTTP status (-1 for an error line inside a stream,
    None when it never answered properly), the server's own error text, and the request."""

    def __init__(
        self,
        message: str,
        hint: str = "",
        *,
        request: str,
        status_code: int | None = None,
        server_message: str | None = None,
        partial: Completion | None = None,
    ) -> None:
        super().__init__(message, hint)
        self.request = request
        self.status_code = status_code
        self.server_message = server_message
        self.partial = partial


def parse_version(text: str) -> tuple[int, int, int]:
    """'0.33.0-rc2' -> (0, 33, 0); raises ValueError when there is no MAJOR.MINOR.PATCH."""
    match = re.match(r"v?(\d+)\.(\d+)\.(\d+)", text.strip())
    if not match:
        raise ValueError(f"not a version: {text!r}")
    major, minor, patch = (int(group) for group in match.groups())
    return major, minor, patch


@dataclass
class Completion:
    """One generate/chat reply, with client-side timings (monotonic seconds) and the server's counters.

    `chunk_times` are seconds after the request was sent, one per streamed chunk; `content_times` only those
    chunks that carried text (or thinking). Server durations are in seconds (Ollama sends nanoseconds).
    """

    model: str
    text: str = ""
    thinking: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # chat: message.tool_calls, as sent
    done: bool = False
    done_reason: str | None = None
    chunk_times: list[float] = field(default_factory=list)
    content_times: list[float] = field(default_factory=list)
    e2e_s: float | None = None
    total_duration_s: float | None = None
    load_duration_s: float | None = None
    prompt_eval_count: int | None = None
    prompt_eval_duration_s: float | None = None
    eval_count: int | None = None
    eval_duration_s: float | None = None

    @property
    def ttft_s(self) -> float | None:
        """Time to the first chunk with text, measured by the client."""
        return self.content_times[0] if self.content_times else None

    @property
    def itl_s(self) -> list[float]:
        """Gaps between consecutive chunks with text (inter-token latencies)."""
        times = self.content_times
        return [later - earlier for earlier, later in itertools.pairwise(times)]

    @property
    def eval_rate(self) -> float | None:
        """Generated tokens per second as the server measured them."""
        if self.eval_count is None or not self.eval_duration_s:
            return None
        return self.eval_count / self.eval_duration_s

    def server_durations(self) -> dict[str, float | int | None]:
        """The final chunk's timing fields (seconds and counts)."""
        return {
            "total_duration_s": self.total_duration_s,
            "load_duration_s": self.load_duration_s,
            "prompt_eval_count": self.prompt_eval_count,
            "prompt_eval_duration_s": self.prompt_eval_duration_s,
            "eval_count": self.eval_count,
            "eval_duration_s": self.eval_duration_s,
        }


def _seconds(nanoseconds: int | None) -> float | None:
    return None if nanoseconds is None else nanoseconds / 1e9


class OllamaClient:
    """A connection to one Ollama server.

    `timeout` bounds each request (seconds, wall clock); `stall_timeout` (default: `timeout`) bounds any
    wait for data, such as the first token while a model loads; `connect_timeout` bounds connecting.
    Both limits can be given per generate/chat call too.
    """

    def __init__(
        self,
        host: str | None,
        *,
        timeout: float = 300.0,
        stall_timeout: float | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        self.url = parse_host(host)
        self.timeout = timeout
        self.stall_timeout = stall_timeout if stall_timeout is not None else timeout
        self.connect_timeout = connect_timeout
        self._official = self._make_official(self.stall_timeout)
        self._http = httpx.Client(
            base_url=self.url,
            timeout=self._timeouts(timeout),
            follow_redirects=True,
            verify=verify_for(self.url),
        )
        self._server_version: tuple[int, int, int] | None = None
        # Called with every finished generate/chat Completion (the suites sum the server's own durations),
        # and with (request, seconds) for every other request and for a generate/chat that failed.
        self.on_completion: Callable[[Completion], None] | None = None
        self.on_request: Callable[[str, float], None] | None = None
        # Where blob hashing and upload (bytes) and create (Ollama's statuses) report (harness.progress).
        self.progress: Progress = NO_PROGRESS

    # ------------------------------------------------------------------------------------------ plumbing

    def _timeouts(self, read: float) -> httpx.Timeout:
        return httpx.Timeout(self.timeout, connect=self.connect_timeout, read=read)

    def _make_official(self, read_timeout: float) -> ollama.Client:
        return ollama.Client(host=self.url, timeout=self._timeouts(read_timeout), verify=verify_for(self.url))

    def close(self) -> None:
        """Close the connections."""
        self._official.close()
        self._http.close()

    def __enter__(self) -> OllamaClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _error(
        self,
        request: str,
        error: BaseException,
        *,
        stall: float | None = None,
        chunks: int = 0,
        read_timeout: float | None = None,
    ) -> ServerError:
        """Map any failure of `request` to a ServerError that names the host, the request and the cause.

        `stall` is the stall limit of a streamed request; `read_timeout` the limit of a plain one.
        """
        where = f"Ollama at {self.url}"
        if isinstance(error, ollama.ResponseError):
            if error.status_code == -1:
                message = f"{where} reported an error during {request}: {error.error}"
            else:
                said = f": {error.error}" if error.error.strip() else " and an empty body"
                message = f"{where} answered {request} with HTTP {error.status_code}{said}"
            return OllamaRequestError(
                message,
                STATUS_HINTS.get(error.status_code, DEFAULT_STATUS_HINT),
                request=request,
                status_code=error.status_code,
                server_message=error.error,
            )
        failure = Failure(where, request, error, stall, chunks, read_timeout)
        for types, describe in TRANSPORT_FAILURES:
            if isinstance(error, types):
                message, hint = describe(failure)
                if isinstance(error, CONNECT_ERRORS):
                    return ServerError(message, hint)
                return OllamaRequestError(message, hint, request=request)
        return OllamaRequestError(
            f"{where}: {request} failed: {type(error).__name__}: {error}", "check the server", request=request
        )

    def _call(self, request: str, function: Callable[[], _T], *, read_timeout: float | None = None) -> _T:
        """Run `function`, mapping its failures; `read_timeout` (default: the stall limit) names the wait."""
        started = time.monotonic()
        try:
            return function()
        except (ollama.ResponseError, httpx.HTTPError, ConnectionError, pydantic.ValidationError) as error:
            waited = read_timeout if read_timeout is not None else self.stall_timeout
            raise self._error(request, error, read_timeout=waited) from None
        finally:
            if self.on_request is not None:
                self.on_request(request, time.monotonic() - started)

    def _raw(self, method: str, path: str, request: str, **kwargs: Any) -> httpx.Response:
        """A plain httpx request; HTTP errors become OllamaRequestError with the server's error text."""

        def send() -> httpx.Response:
            response = self._http.request(method, path, **kwargs)
            if response.status_code >= 400:
                raise ollama.ResponseError(response.text or response.reason_phrase, response.status_code)
            return response

        return self._call(request, send, read_timeout=self.timeout)

    # ------------------------------------------------------------------------------------------ server

    def scheduler_settings(self) -> dict[str, int] | None:
        """What the server says of its scheduler (`num_parallel`, `max_queue`), or None when it cannot say.

        The embedded engine (`harness serve`) answers on its debug route GET /harness/settings; Ollama has no
        such route (404), so its settings are unknown to a client."""
        try:
            response = self._raw("GET", SETTINGS_PATH, f"GET {SETTINGS_PATH}")
            body = response.json()
        except (ServerError, ValueError):
            return None
        if not isinstance(body, dict):
            return None
        return {
            key: body[key]
            for key in ("num_parallel", "max_queue")
            if isinstance(body.get(key), int) and not isinstance(body.get(key), bool)
        }

    def version(self) -> str:
        """The server's version string (GET /api/version)."""
        response = self._raw("GET", "/api/version", "GET /api/version")
        try:
            text = str(response.json()["version"])
        except (ValueError, KeyError, TypeError):
            raise OllamaRequestError(
                f"Ollama at {self.url} answered GET /api/version with {response.text[:80]!r}, not a version",
                "is this an Ollama server?",
                request="GET /api/version",
            ) from None
        try:
            self._server_version = parse_version(text)
        except ValueError:
            self._server_version = None
        return text

    def server_version(self) -> tuple[int, int, int] | None:
        """The server's version as numbers (cached; None when it does not parse)."""
        if self._server_version is None:
            self.version()
        return self._server_version

    def ping(self) -> None:
        """Check that an Ollama server answers `GET /` with "Ollama is running"; raises ServerError if not."""
        response = self._raw("GET", "/", "GET /")
        if response.text.strip() != "Ollama is running":
            raise ServerError(
                f"the server at {self.url} answered GET / with {response.text[:80]!r}, "
                "not 'Ollama is running'",
                "check the host: it does not look like an Ollama server",
            )

    def _uses_structured_create(self) -> bool:
        version = self.server_version()
        # unparsable or development builds ("0.0.0") are taken as current
        return version is None or version == (0, 0, 0) or version >= STRUCTURED_CREATE_SINCE

    # ------------------------------------------------------------------------------------------ blobs, create

    def upload_blob(self, path: str | Path) -> str:
        """Upload a file as a blob unless the server has it (HEAD first); returns "sha256:<hex>"."""
        path = Path(path)
        digest_hash = hashlib.sha256()
        try:
            total = format_value(path.stat().st_size, "bytes")
            with path.open("rb") as handle:
                while chunk := handle.read(_HASH_CHUNK):
                    digest_hash.update(chunk)
                    self.progress.update(
                        f"hashing {path.name}: {format_value(handle.tell(), 'bytes')} / {total}"
                    )
        except OSError as error:
            raise GGUFReadError(
                f"cannot read {path}: {error.strerror or error}", "check the path to the model file"
            ) from None
        digest = f"sha256:{digest_hash.hexdigest()}"
        request = f"HEAD /api/blobs/{digest}"
        head = self._call(request, lambda: self._http.head(f"/api/blobs/{digest}"), read_timeout=self.timeout)
        if head.status_code == 200:
            return digest
        if head.status_code != 404:
            raise OllamaRequestError(
                f"Ollama at {self.url} answered {request} with HTTP {head.status_code}",
                "check the server",
                request=request,
                status_code=head.status_code,
            )
        with path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            self._raw(
                "POST",
                f"/api/blobs/{digest}",
                f"upload of {path.name}",
                content=self._reported_chunks(handle, f"uploading {path.name}", total),
                headers={"Content-Length": str(size)},
            )
        self.progress.note(f"uploaded {path.name} ({total})")
        return digest

    def _reported_chunks(self, handle: BinaryIO, label: str, total: str) -> Iterator[bytes]:
        """The file's bytes in chunks, reporting how many were sent."""
        sent = 0
        while chunk := handle.read(_HASH_CHUNK):
            sent += len(chunk)
            self.progress.update(f"{label}: {format_value(sent, 'bytes')} / {total}")
            yield chunk

    def create_model(
        self,
        name: str,
        *,
        gguf_path: str | Path | None = None,
        from_: str | None = None,
        template: str | None = None,
        system: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        messages: Sequence[Mapping[str, Any]] | None = None,
        license: str | Sequence[str] | None = None,
    ) -> None:
        """Create `name` from a local GGUF (uploaded as a blob) or from an existing model.

        Uses the structured create of Ollama >= 0.5.5, or a Modelfile string for older servers.
        """
        if (gguf_path is None) == (from_ is None):
            raise ServerError(f"create {name!r}: give exactly one of gguf_path and from_", "pass one of them")
        digest = self.upload_blob(gguf_path) if gguf_path is not None else None
        licenses = [license] if isinstance(license, str) else list(license or [])
        request = f"create {name!r}"
        if self._uses_structured_create():
            files = {Path(gguf_path).name: digest} if gguf_path is not None and digest else None
            fields: dict[str, Any] = {
                "model": name,
                "from_": from_,
                "files": files,
                "template": template,
                "system": system,
                "parameters": dict(parameters) if parameters is not None else None,
                "messages": list(messages) if messages is not None else None,
                "license": licenses or None,
            }
            self._create_structured(request, fields)
        else:
            commands = [Command("model", f"@{digest}" if digest else str(from_))]
            if template is not None:
                commands.append(Command("template", template))
            if system is not None:
                commands.append(Command("system", system))
            for key, value in (parameters or {}).items():
                for item in value if isinstance(value, (list, tuple)) else [value]:
                    text = ("true" if item else "false") if isinstance(item, bool) else str(item)
                    commands.append(Command(key, text))
            for message in messages or []:
                commands.append(Command("message", f"{message['role']}: {message['content']}"))
            commands.extend(Command("license", text) for text in licenses)
            self._create_legacy(request, name, Modelfile(tuple(commands)).text())

    def create_from_modelfile(
        self,
        name: str,
        modelfile: Modelfile | str,
        *,
        relative_dir: str | Path | None = None,
        quantize: str | None = None,
    ) -> None:
        """Create `name` from a Modelfile: its local FROM/ADAPTER files are uploaded as blobs first.
        `quantize` (e.g. "q8_0", "q4_K_M") asks the server to quantize an F16/F32 file at create."""

        parsed = parse_modelfile(modelfile) if isinstance(modelfile, str) else modelfile
        digests = {path: self.upload_blob(path) for path in parsed.local_paths(relative_dir).values()}
        request = f"create {name!r}"
        if self._uses_structured_create():
            fields = parsed.to_create_fields(digests, relative_dir=relative_dir)
            fields["from_"] = fields.pop("from", None)
            if quantize is not None:
                fields["quantize"] = quantize
            self._create_structured(request, {"model": name, **fields})
        else:
            text = parsed.to_legacy_text(digests, relative_dir=relative_dir)
            self._create_legacy(request, name, text, quantize=quantize)

    def _create_structured(self, request: str, fields: dict[str, Any]) -> None:
        last = None

        def run() -> None:
            nonlocal last
            for progress in self._official.create(**fields, stream=True):
                last = progress.status
                done = f" {progress.completed}/{progress.total}" if progress.total else ""
                self.progress.update(f"{request}: {last}{done}")
            self.progress.note(f"{request}: {last}")
            if last != "success":
                raise OllamaRequestError(
                    f"Ollama at {self.url} ended {request} without 'success' (last status: {last!r})",
                    "check the server log",
                    request=request,
                )

        self._call(request, run)

    def _create_legacy(
        self, request: str, name: str, modelfile_text: str, *, quantize: str | None = None
    ) -> None:
        body: dict[str, Any] = {"model": name, "name": name, "modelfile": modelfile_text, "stream": False}
        if quantize is not None:
            body["quantize"] = quantize
        response = self._raw("POST", "/api/create", request, json=body)
        status = response.json().get("status") if response.content else None
        if status != "success":
            raise OllamaRequestError(
                f"Ollama at {self.url} answered {request} with {response.text[:200]!r}, not success",
                "check the server log",
                request=request,
            )

    # ------------------------------------------------------------------------------------------ generation

    def generate(
        self,
        model: str,
        prompt: str,
        *,
        system: str | None = None,
        template: str | None = None,
        raw: bool | None = None,
        options: Mapping[str, Any] | None = None,
        keep_alive: float | str | None = None,
        format: str | dict[str, Any] | None = None,
        think: bool | None = None,
        timeout: float | None = None,
        stall_timeout: float | None = None,
        stream: bool = True,
    ) -> Completion:
        """POST /api/generate, streamed and timed (`stream=False`: one whole reply). Raises ServerError on
        any failure, including a stream that ends without `done: true`."""
        arguments: dict[str, Any] = {
            "model": model,
            "prompt": prompt,
            "system": system,
            "template": template,
            "raw": raw,
            "options": dict(options) if options is not None else None,
            "keep_alive": keep_alive,
            "format": format,
            "think": think,
            "stream": stream,
        }
        return self._stream_completion(
            f"generate (model {model!r})",
            model,
            lambda client: _chunks(client.generate(**arguments)),
            timeout,
            stall_timeout,
        )

    def chat(
        self,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        *,
        options: Mapping[str, Any] | None = None,
        keep_alive: float | str | None = None,
        format: str | dict[str, Any] | None = None,
        think: bool | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        timeout: float | None = None,
        stall_timeout: float | None = None,
        stream: bool = True,
    ) -> Completion:
        """POST /api/chat, streamed and timed; as `generate`. Tool calls the server parsed out of the reply
        are in `tool_calls`."""
        arguments: dict[str, Any] = {
            "model": model,
            "messages": list(messages),
            "options": dict(options) if options is not None else None,
            "keep_alive": keep_alive,
            "format": format,
            "think": think,
            "tools": list(tools) if tools is not None else None,
            "stream": stream,
        }
        return self._stream_completion(
            f"chat (model {model!r})",
            model,
            lambda client: _chunks(client.chat(**arguments)),
            timeout,
            stall_timeout,
        )

    def _stream_completion(
        self,
        request: str,
        model: str,
        start: Callable[[ollama.Client], Iterator[Any]],
        timeout: float | None,
        stall_timeout: float | None,
    ) -> Completion:
        limit = timeout if timeout is not None else self.timeout
        stall = stall_timeout if stall_timeout is not None else self.stall_timeout
        # httpx fixes a response's read timeout when its body starts, so the request limit bounds the wait for
        # the first token by lowering the read timeout; each later chunk checks the limit itself.
        read = min(stall, limit)
        client = self._official if read == self.stall_timeout else self._make_official(read)
        completion = Completion(model=model)
        began = time.monotonic()
        stream: Iterator[Any] | None = None
        try:
            stream = start(client)
            for chunk in stream:
                now = time.monotonic() - began
                completion.chunk_times.append(now)
                _absorb(completion, chunk, now)
                if chunk.done:
                    break
                if now > limit:
                    raise self._over_limit(request, limit, completion)
        except (ollama.ResponseError, httpx.HTTPError, ConnectionError, pydantic.ValidationError) as error:
            if self.on_request is not None:
                self.on_request(request, time.monotonic() - began)
            if isinstance(error, httpx.ReadTimeout) and time.monotonic() - began >= limit:
                raise self._over_limit(request, limit, completion) from None
            mapped = self._error(request, error, stall=stall, chunks=len(completion.chunk_times))
            if isinstance(mapped, OllamaRequestError):
                mapped.partial = completion
            raise mapped from None
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
            if client is not self._official:
                client.close()
        completion.e2e_s = time.monotonic() - began
        if self.on_completion is not None:
            self.on_completion(completion)
        if not completion.done:
            raise OllamaRequestError(
                f"the {request} stream from Ollama at {self.url} ended after {len(completion.chunk_times)} "
                f"chunks without a final done chunk (text so far: {completion.text[:60]!r})",
                "the server cut the reply short; its log says why (Ollama 0.33 does this when llama-server "
                "rejects the model's output)",
                request=request,
                partial=completion,
            )
        return completion

    def _over_limit(self, request: str, limit: float, completion: Completion) -> OllamaRequestError:
        """The error for a streamed request that ran past its per-request limit."""
        return OllamaRequestError(
            f"Ollama at {self.url} did not finish {request} within {limit:g} s "
            f"({len(completion.chunk_times)} chunks so far)",
            "raise the request timeout, lower num_predict, or check the server",
            request=request,
            partial=completion,
        )

    # ------------------------------------------------------------------------------------------ models

    def list(self) -> ollama.ListResponse:
        """GET /api/tags."""
        return self._call("list (GET /api/tags)", self._official.list)

    def ps(self) -> ollama.ProcessResponse:
        """GET /api/ps."""
        return self._call("ps (GET /api/ps)", self._official.ps)

    def show(self, name: str) -> ollama.ShowResponse:
        """POST /api/show."""
        return self._call(f"show {name!r}", lambda: self._official.show(name))

    def delete(self, name: str) -> None:
        """DELETE /api/delete."""
        self._call(f"delete {name!r}", lambda: self._official.delete(name))

    def copy(self, source: str, destination: str) -> None:
        """POST /api/copy."""
        self._call(f"copy {source!r} to {destination!r}", lambda: self._official.copy(source, destination))

    def unload(self, name: str) -> None:
        """Unload a model now (generate with an empty prompt and keep_alive 0)."""
        self._call(f"unload {name!r}", lambda: self._official.generate(model=name, prompt="", keep_alive=0))


def _chunks(reply: Any) -> Iterator[Any]:
    """The chunks of a reply: a stream as it is, a whole (`stream=False`) reply as its only chunk."""
    return iter([reply]) if hasattr(reply, "done") else iter(reply)


def _absorb(completion: Completion, chunk: Any, now: float) -> None:
    """Add one streamed GenerateResponse/ChatResponse to the completion."""
    message = getattr(chunk, "message", None)
    if message is not None:
        text, thinking = message.content or "", message.thinking or ""
        for call in message.tool_calls or []:
            completion.tool_calls.append(call.model_dump(mode="json", exclude_none=True))
    else:
        text, thinking = chunk.response or "", chunk.thinking or ""
    if text or thinking:
        completion.content_times.append(now)
    completion.text += text
    completion.thinking += thinking
    if chunk.done:
        completion.done = True
        completion.done_reason = chunk.done_reason
        completion.total_duration_s = _seconds(chunk.total_duration)
        completion.load_duration_s = _seconds(chunk.load_duration)
        completion.prompt_eval_count = chunk.prompt_eval_count
        completion.prompt_eval_duration_s = _seconds(chunk.prompt_eval_duration)
        completion.eval_count = chunk.eval_count
        completion.eval_duration_s = _seconds(chunk.eval_duration)
