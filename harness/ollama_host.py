"""OLLAMA_HOST values as base URLs, by the official Python client's rules (ollama-python,
`ollama/_client.py`, `_parse_host`): a missing scheme is http, a missing host 127.0.0.1, a missing port 11434
(80 for an explicit `http://`, 443 for `https://`); a bare IPv6 address gets its brackets back; a path is kept
without its slashes.

    127.0.0.1:11434 ... the same   example.com -> http://example.com:11434   https://h -> https://h:443
    :8080 -> http://127.0.0.1:8080   [::1] -> http://[::1]:11434   h:1/path/ -> http://h:1/path
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

DEFAULT_PORT = 11434
_SCHEME_PORTS = {"http": 80, "https": 443}


def parse_host(host: str | None) -> str:
    """The base URL (`scheme://host:port[/path]`) the official client would use for `host`."""
    text = host or ""
    scheme, _, hostport = text.partition("://")
    port = DEFAULT_PORT
    if not hostport:
        scheme, hostport = "http", text
    else:
        port = _SCHEME_PORTS.get(scheme, DEFAULT_PORT)
    split = urlsplit(f"{scheme}://{hostport}")
    name = split.hostname or "127.0.0.1"
    port = split.port or port
    try:
        if isinstance(ipaddress.ip_address(name), ipaddress.IPv6Address):
            name = f"[{name}]"  # urlsplit drops the brackets
    except ValueError:
        pass
    path = split.path.strip("/")
    return f"{scheme}://{name}:{port}/{path}" if path else f"{scheme}://{name}:{port}"
