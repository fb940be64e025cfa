"""Who may talk to the engine: Ollama's CORS rules (OLLAMA_ORIGINS) and its Host check on a loopback bind.

Ollama puts two gin middlewares in front of every route, 404 and 405 answers included:

1. gin-contrib/cors. A request whose `Origin` is neither absent nor the server's own origin must match an
   allowed origin (exact, or a pattern with one `*`), else `403` with an empty body. An allowed preflight
   (`OPTIONS`) is answered `204` with the preflight headers; other allowed requests go on with
   `Access-Control-Allow-Origin` and `Vary: Origin` added.
2. `allowedHostsMiddleware`. When the server listens on a loopback address, the `Host` header must name a
   loopback, private, unspecified or local address, `localhost`, this machine's hostname, or a name under
   `.localhost`, `.local` or `.internal`; else `403` (a guard against DNS rebinding). A named local host
   answers `OPTIONS` with `204`.

This module mirrors both as one ASGI middleware, with the allowed origins built as Ollama's
`envconfig.AllowedOrigins` builds them.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import psutil
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from harness.errors import HarnessError

DEFAULT_ORIGIN_HOSTS = ("localhost", "127.0.0.1", "0.0.0.0")
APP_ORIGINS = ("app://*", "file://*", "tauri://*", "vscode-webview://*", "vscode-file://*")
# gin-contrib/cors accepts an origin without `*` only under these schemes (AllowBrowserExtensions is on).
ORIGIN_SCHEMES = (
    "http://",
    "https://",
    "chrome-extension://",
    "safari-extension://",
    "moz-extension://",
    "ms-browser-extension://",
)
PREFLIGHT_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")  # cors.DefaultConfig
PREFLIGHT_HEADERS = (
    "Authorization",
    "Content-Type",
    "User-Agent",
    "Accept",
    "X-Requested-With",
    # OpenAI compatibility headers
    "OpenAI-Beta",
    "x-stainless-arch",
    "x-stainless-async",
    "x-stainless-custom-poll-interval",
    "x-stainless-helper-method",
    "x-stainless-lang",
    "x-stainless-os",
    "x-stainless-package-version",
    "x-stainless-poll-helper",
    "x-stainless-retry-count",
    "x-stainless-runtime",
    "x-stainless-runtime-version",
    "x-stainless-timeout",
)
PREFLIGHT_MAX_AGE_S = 12 * 3600
LOCAL_TLDS = ("localhost", "local", "internal")
GO_PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(net) for net in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)


def allowed_origins(ollama_origins: str = "") -> tuple[str, ...]:
    """OLLAMA_ORIGINS entries first, then the localhost origins and app schemes Ollama always allows.

    Raises HarnessError for an entry gin-contrib/cors would refuse at start (Ollama panics on it).
    """
    value = ollama_origins.strip().strip("\"'")
    extra = value.split(",") if value else []
    for origin in extra:
        if origin.count("*") > 1:
            raise HarnessError(
                f"OLLAMA_ORIGINS entry {origin!r} has more than one '*' (only one * is allowed)",
                "write one pattern per entry, e.g. OLLAMA_ORIGINS=http://*.example.com,https://app.example.com",
            )
        if "*" not in origin and not origin.startswith(ORIGIN_SCHEMES):
            raise HarnessError(
                f"OLLAMA_ORIGINS entry {origin!r} is a bad origin: origins must contain '*' or include "
                + ",".join(ORIGIN_SCHEMES),
                "give each entry its scheme and no spaces around commas, e.g. "
                "OLLAMA_ORIGINS=https://app.example.com,chrome-extension://*",
            )
    defaults = [
        f"{scheme}://{origin_host}{port}"
        for origin_host in DEFAULT_ORIGIN_HOSTS
        for port, scheme in (("", "http"), ("", "https"), (":*", "http"), (":*", "https"))
    ]
    return (*extra, *defaults, *APP_ORIGINS)


def _canonical_header_key(name: str) -> str:
    """Go's http.CanonicalHeaderKey: each dash-separated word capitalised."""
    return "-".join(word[:1].upper() + word[1:].lower() for word in name.split("-"))


@dataclass(frozen=True)
class OriginRules:
    """gin-contrib/cors's matching: `*` allows all; otherwise exact (lower-cased) or one-`*` patterns."""

    allow_all: bool
    exact: frozenset[str]
    patterns: tuple[tuple[str, str], ...]  # (prefix, suffix) around the `*`

    @classmethod
    def from_origins(cls, origins: Iterable[str]) -> OriginRules:
        normalized = list(dict.fromkeys(origin.strip().lower() for origin in origins))
        patterns = tuple((o.split("*")[0], o.split("*")[1]) for o in normalized if "*" in o)
        return cls("*" in normalized, frozenset(o for o in normalized if "*" not in o), patterns)

    def allows(self, origin: str) -> bool:
        if self.allow_all or origin in self.exact:
            return True
        return any(origin.startswith(prefix) and origin.endswith(suffix) for prefix, suffix in self.patterns)


def _split_host_port(value: str) -> str:
    """The host part of a Host header as Go's net.SplitHostPort gives it (the whole value if that fails)."""
    if value.startswith("["):
        inside, bracket, rest = value[1:].partition("]")
        return inside if bracket and rest.startswith(":") else value
    host, colon, _ = value.partition(":")
    return host if colon and ":" not in value[len(host) + 1 :] else value


def _local_addresses() -> set[str]:
    """Every address of this machine's interfaces (Ollama's isLocalIP)."""
    return {
        address.address.split("%")[0]
        for addresses in psutil.net_if_addrs().values()
        for address in addresses
        if address.family in (socket.AF_INET, socket.AF_INET6)
    }


def host_verdict(host_header: str) -> str | None:
    """Ollama's Host check for a loopback-bound server: "address" for a local address, "name" for a local
    name (which answers OPTIONS itself), None for any other host (403)."""
    host = _split_host_port(host_header)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None and (
        address.is_loopback
        or address.is_unspecified
        or any(address in network for network in GO_PRIVATE_NETWORKS)
        or str(address) in _local_addresses()
    ):
        return "address"
    return "name" if host_name_is_local(host) else None


def host_name_is_local(host: str) -> bool:
    """Ollama's allowedHost: empty, localhost, this machine's hostname, or a local top-level domain."""
    host = host.lower()
    if host in ("", "localhost") or host == socket.gethostname().lower():
        return True
    return any(host.endswith("." + tld) for tld in LOCAL_TLDS)


def binds_loopback(bind_host: str) -> bool:
    """Whether the server listens on a loopback address (only then does Ollama check Host headers)."""
    if bind_host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(bind_host.strip("[]")).is_loopback
    except ValueError:
        return False


class AccessMiddleware:
    """ASGI middleware: Ollama's CORS answer, then its Host check, in front of every route."""

    def __init__(self, app: ASGIApp, *, bind_host: str, origins: Sequence[str]) -> None:
        self.app = app
        self.check_host = binds_loopback(bind_host)
        self.rules = OriginRules.from_origins(origins)
        self.preflight_headers = [
            ("Access-Control-Allow-Methods", ",".join(PREFLIGHT_METHODS)),
            (
                "Access-Control-Allow-Headers",
                ",".join(dict.fromkeys(_canonical_header_key(h.lower()) for h in PREFLIGHT_HEADERS)),
            ),
            ("Access-Control-Max-Age", str(PREFLIGHT_MAX_AGE_S)),
        ]

    def _cors_headers(self, origin: str, *, preflight: bool) -> list[tuple[str, str]]:
        headers = list(self.preflight_headers) if preflight else []
        if self.rules.allow_all:
            return [*headers, ("Access-Control-Allow-Origin", "*")]
        vary = ["Origin", "Access-Control-Request-Method", "Access-Control-Request-Headers"]
        headers += [("Vary", value) for value in (vary if preflight else vary[:1])]
        return [*headers, ("Access-Control-Allow-Origin", origin)]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_headers = Headers(scope=scope)
        method, host, origin = (
            scope["method"],
            request_headers.get("host", ""),
            request_headers.get("origin", ""),
        )
        added: list[tuple[str, str]] = []
        if origin and origin not in (f"http://{host}", f"https://{host}"):
            if not self.rules.allows(origin):
                await _empty(send, 403)
                return
            added = self._cors_headers(origin, preflight=method == "OPTIONS")
            if method == "OPTIONS":
                await _empty(send, 204, added)
                return
        if self.check_host:
            verdict = host_verdict(host)
            if verdict is None or (verdict == "name" and method == "OPTIONS"):
                await _empty(send, 403 if verdict is None else 204, added)
                return
        if not added:
            await self.app(scope, receive, send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *_encoded(added)]}
            await send(message)

        await self.app(scope, receive, send_with_cors)


def _encoded(headers: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]


async def _empty(send: Send, status: int, headers: Iterable[tuple[str, str]] = ()) -> None:
    """An answer with no body, as gin's AbortWithStatus gives (Go sends no Content-Length with a 204)."""
    length = [] if status == 204 else [(b"content-length", b"0")]
    await send({"type": "http.response.start", "status": status, "headers": [*length, *_encoded(headers)]})
    await send({"type": "http.response.body", "body": b""})
