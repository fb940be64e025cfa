"""How the suites reach a server: the host the user named, an Ollama already answering at the default
address, or the embedded engine started for the session when nothing answers and the user named no host.

A host the user named (`--ollama-host` or `$OLLAMA_HOST`) that does not answer is an error, never silently
replaced by the embedded engine: the user meant to test that server.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil

from harness.errors import ServerError
from harness.http_tls import verify_for
from harness.ollama_host import parse_host

DEFAULT_HOST = "127.0.0.1:11434"
READY_TEXT = "Ollama is running"
# Ollama's answer to a Host header it does not trust while it listens on loopback (a DNS-rebinding guard).
FORBIDDEN_HOST = (
    "HTTP 403 with an empty body: Ollama listens on loopback and refuses the Host header {host!r}; "
    "reach it as localhost or by IP address, have the proxy send Host: localhost:11434, "
    "or start Ollama with OLLAMA_HOST=0.0.0.0"
)
EMBEDDED_VERSION_TAG = "+harness"  # the embedded engine reports e.g. "0.33.0+harness.0.1.0"


@dataclass(frozen=True)
class HostRequest:
    """Where the user asked us to look: `host` as typed, `url` normalised, `named_by` the source (or None)."""

    host: str
    url: str
    named_by: str | None


def normalize_url(host: str) -> str:
    """Base URL for an OLLAMA_HOST-style value, by the official client's own rules (default port 11434)."""
    return parse_host(host)


def requested_host(option: str | None, environ: Mapping[str, str] | None = None) -> HostRequest:
    """The host to try: `--ollama-host`, else `$OLLAMA_HOST`, else the default (not named by the user)."""
    environ = os.environ if environ is None else environ
    if option:
        return HostRequest(option, normalize_url(option), "--ollama-host")
    from_env = environ.get("OLLAMA_HOST", "").strip()
    if from_env:
        return HostRequest(from_env, normalize_url(from_env), "$OLLAMA_HOST")
    return HostRequest(DEFAULT_HOST, normalize_url(DEFAULT_HOST), None)


def probe(url: str, *, timeout: float = 2.0) -> str | None:
    """None when an Ollama server answers `GET /` at `url` with "Ollama is running"; else why not."""
    try:
        response = httpx.get(url + "/", timeout=timeout, verify=verify_for(url))
    except httpx.TimeoutException:
        return f"no answer within {timeout:g} s"
    except httpx.HTTPError as error:
        return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    if response.status_code == 403 and not response.content:
        return FORBIDDEN_HOST.format(host=response.request.headers.get("host", ""))
    if response.status_code != 200 or READY_TEXT not in response.text:
        return f"HTTP {response.status_code} {response.text[:80]!r} is not an Ollama server"
    return None


@dataclass(frozen=True)
class Server:
    """A server the session talks to.

    `kind` is "embedded" for the harness's engine, "ollama" for any other server; `pid` is the server's
    process when it runs on this machine and can be found (for memory checks), else None; `how` is one line
    for the session header.
    """

    host: str
    url: str
    kind: str
    how: str
    pid: int | None

    def why_down(self, *, timeout: float = 2.0) -> str | None:
        """None while the server answers; else why it does not (its process exited, connection refused...)."""
        if self.pid is not None and not _process_running(self.pid):
            return f"its process {self.pid} has exited"
        return probe(self.url, timeout=timeout)

    def describe(self) -> str:
        """The server in a few words, for error messages: "the embedded engine at 127.0.0.1:PORT"."""
        what = "the embedded engine" if self.kind == "embedded" else "the Ollama server"
        return f"{what} at {self.host}"


def _process_running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _is_local(hostname: str) -> bool:
    if hostname in ("localhost", ""):
        return True
    try:
        address = ipaddress.ip_address(socket.gethostbyname(hostname))
    except (OSError, ValueError):
        return False
    return address.is_loopback or address.is_unspecified or hostname == socket.gethostname()


def find_listening_pid(url: str) -> int | None:
    """The pid of the local process listening on `url`'s port, or None (remote host, or not visible to us)."""
    parts = urlsplit(url)
    if parts.port is None or not _is_local(parts.hostname or ""):
        return None
    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, PermissionError):
        return None
    for connection in connections:
        if (
            connection.status == psutil.CONN_LISTEN
            and connection.laddr
            and connection.laddr.port == parts.port
        ):
            return connection.pid
    return None


def detect_kind(url: str, *, timeout: float = 2.0) -> str:
    """ "embedded" when the server's version has the harness engine's `+harness` build tag, else "ollama"."""
    try:
        version = (
            httpx.get(url + "/api/version", timeout=timeout, verify=verify_for(url)).json().get("version", "")
        )
    except (httpx.HTTPError, ValueError, AttributeError):
        return "ollama"
    return "embedded" if EMBEDDED_VERSION_TAG in str(version) else "ollama"


def _host_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.netloc


@contextmanager
def reach_server(
    request: HostRequest,
    *,
    models_dir: Path,
    engine_env: Mapping[str, str] | None = None,
    probe_timeout: float = 2.0,
    embedded: bool = False,
    engine_log: Path | None = None,
    while_starting: Callable[[], object] | None = None,
) -> Iterator[Server]:
    """Yield the server to test: the one answering at `request`, or an embedded engine started for the block
    (always, with `embedded=True`), its log written to `engine_log` when given. `while_starting` is called
    while the engine's process starts (work to overlap with it); not at all for an existing server.

    Raises `ServerError` when a host the user named does not answer, or when the embedded engine cannot start.
    """
    reason = "the embedded engine was asked for" if embedded else probe(request.url, timeout=probe_timeout)
    if reason is None:
        host = _host_of(request.url)
        named = f" ({request.named_by})" if request.named_by else ""
        kind = detect_kind(request.url, timeout=probe_timeout)
        what = "embedded engine (`harness serve`)" if kind == "embedded" else "server"
        yield Server(
            host=host,
            url=request.url,
            kind=kind,
            how=f"existing {what} at {host}{named}",
            pid=find_listening_pid(request.url),
        )
        return
    if request.named_by is not None and not embedded:
        raise ServerError(
            f"no Ollama server answers at {request.host} (from {request.named_by}): {reason}",
            "start it (`ollama serve`), correct the address, or unset --ollama-host and $OLLAMA_HOST "
            "to run on the embedded engine",
        )
    from harness.engine import EmbeddedEngine  # heavy import, only when the engine is needed

    models_dir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        try:
            engine = EmbeddedEngine(models_dir=models_dir, env=dict(engine_env or {}), log_path=engine_log)
            started = engine.start(while_starting)
            stack.push(engine)
        except OSError as error:
            raise ServerError(
                f"the embedded engine could not start: {error}",
                "`harness serve` runs the same engine by hand and shows its log",
            ) from error
        yield Server(
            host=started.host,
            url=started.url,
            kind="embedded",
            how=(
                f"{'--harness-embedded-engine:' if embedded else f'nothing answered at {request.host}, so'} "
                "this "
                f"session started the embedded engine at {started.host} (pid {started.pid}, models in "
                f"{models_dir})"
            ),
            pid=started.pid,
        )
