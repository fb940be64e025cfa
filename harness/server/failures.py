"""How a failed request is described to the user: a message that names the host, the request and the cause,
and a hint saying what to do, for every HTTP status and transport failure the client meets. Tables, first
match wins; `OllamaClient` builds its errors from them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pydantic


def connection_cause(error: BaseException) -> str:
    """A short cause for a transport error, looking through the official client's re-raises."""
    inner: BaseException = error
    if isinstance(error, ConnectionError) and error.__context__ is not None:
        inner = error.__context__
    text = str(inner) or type(inner).__name__
    lowered = text.lower()
    if "connection refused" in lowered or "errno 111" in lowered:
        return "connection refused"
    if "name or service not known" in lowered or "nodename nor servname" in lowered:
        return "unknown host name"
    if isinstance(inner, httpx.ConnectTimeout):
        return "connecting timed out"
    return text


# What to do about an HTTP status from the server.
STATUS_HINTS: dict[int, str] = {
    404: "create or pull the model first, or check its name",
    400: "the server rejected the request as invalid; its message says what to fix",
    503: "the server's queue is full; retry later or lower the concurrency",
    403: "Ollama refuses a browser Origin outside OLLAMA_ORIGINS, and (on a loopback bind) a Host header "
    "naming another machine: reach it as localhost or by IP address, or set OLLAMA_ORIGINS",
    -1: "the server failed part-way through; its log has the details",
}
DEFAULT_STATUS_HINT = "read the server's message; the server log may say more"
CONNECT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, ConnectionError)


@dataclass(frozen=True)
class Failure:
    """A failed request, as the descriptions below see it."""

    where: str
    request: str
    error: BaseException
    stall: float | None  # the stall limit of a streamed request
    chunks: int
    read_timeout: float | None  # the limit of a plain request


def _not_answering(failure: Failure) -> tuple[str, str]:
    return (
        f"{failure.where} is not answering: {connection_cause(failure.error)}",
        "start the server (ollama serve, or let the harness start its engine) or check the host",
    )


def _read_timeout(failure: Failure) -> tuple[str, str]:
    if failure.stall is None:
        waited = f"{failure.read_timeout:g} s" if failure.read_timeout is not None else "the read timeout"
        return (
            f"{failure.where} did not answer {failure.request} within {waited} (read timeout)",
            "the server is busy or hung; raise the timeout or read the server log",
        )
    what = "no first token" if failure.chunks == 0 else f"no data after {failure.chunks} chunks"
    return (
        f"{failure.where} stalled on {failure.request}: {what} for {failure.stall:g} s",
        "the model may load slowly or its runner hung; raise the stall timeout, read the server log",
    )


def _other_timeout(failure: Failure) -> tuple[str, str]:
    return (
        f"{failure.where} did not finish {failure.request} in time: {type(failure.error).__name__}",
        "raise the timeout or check the server",
    )


def _connection_closed(failure: Failure) -> tuple[str, str]:
    return (
        f"{failure.where} closed the connection during {failure.request}: {failure.error} (did the server "
        "crash?)",
        "check that the server is still running and read its log",
    )


def _invalid_request(failure: Failure) -> tuple[str, str]:
    error = failure.error
    detail = error.errors()[0].get("msg", error) if isinstance(error, pydantic.ValidationError) else error
    return f"invalid {failure.request}: {detail}", "check the request's arguments"


# Transport and client failures, first match wins: (exception types, message and hint).
TRANSPORT_FAILURES: tuple[
    tuple[type[BaseException] | tuple[type[BaseException], ...], Callable[[Failure], tuple[str, str]]], ...
] = (
    (CONNECT_ERRORS, _not_answering),
    (httpx.ReadTimeout, _read_timeout),
    (httpx.TimeoutException, _other_timeout),
    ((httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError), _connection_closed),
    (pydantic.ValidationError, _invalid_request),
)
