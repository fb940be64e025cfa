"""TLS settings for the harness's HTTP clients, without the cost of a new SSL context per client.

httpx builds a fresh SSL context (loading certifi's bundle: about 50 ms of CPU) for every client and for
every `httpx.get`, even for plain `http://` URLs. The harness makes many short-lived clients and probes
against loopback servers, so `verify_for(url)` gives `False` for `http://` (no TLS is involved) and one
shared default context for `https://`.
"""

from __future__ import annotations

import functools
import ssl


@functools.cache
def _default_context() -> ssl.SSLContext:
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


def verify_for(host: str | None) -> bool | ssl.SSLContext:
    """The `verify` argument for an httpx (or ollama) client of `host` (a URL or an OLLAMA_HOST value,
    read as the official client does: TLS only with an explicit https:// scheme)."""
    return _default_context() if (host or "").lower().startswith("https://") else False
