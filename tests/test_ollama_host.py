"""harness.ollama_host.parse_host: OLLAMA_HOST values as base URLs, as the official Python client reads them
(the cases of ollama-python's own `_parse_host` examples, which this parser must match)."""

from __future__ import annotations

import pytest

from harness.ollama_host import parse_host

V6 = "[0001:002:003:0004::1]"
CASES = [
    (None, "http://127.0.0.1:11434"),
    ("", "http://127.0.0.1:11434"),
    ("1.2.3.4", "http://1.2.3.4:11434"),
    (":56789", "http://127.0.0.1:56789"),
    ("1.2.3.4:56789", "http://1.2.3.4:56789"),
    ("http://1.2.3.4", "http://1.2.3.4:80"),
    ("https://1.2.3.4", "https://1.2.3.4:443"),
    ("https://1.2.3.4:56789", "https://1.2.3.4:56789"),
    ("example.com", "http://example.com:11434"),
    ("example.com:56789", "http://example.com:56789"),
    ("http://example.com", "http://example.com:80"),
    ("https://example.com", "https://example.com:443"),
    ("https://example.com:56789", "https://example.com:56789"),
    ("example.com/", "http://example.com:11434"),
    ("example.com:56789/", "http://example.com:56789"),
    ("example.com/path", "http://example.com:11434/path"),
    ("example.com:56789/path", "http://example.com:56789/path"),
    ("https://example.com:56789/path", "https://example.com:56789/path"),
    ("example.com:56789/path/", "http://example.com:56789/path"),
    (V6, f"http://{V6}:11434"),
    (f"{V6}:56789", f"http://{V6}:56789"),
    (f"http://{V6}", f"http://{V6}:80"),
    (f"https://{V6}", f"https://{V6}:443"),
    (f"https://{V6}:56789", f"https://{V6}:56789"),
    (f"{V6}/", f"http://{V6}:11434"),
    (f"{V6}:56789/", f"http://{V6}:56789"),
    (f"{V6}/path", f"http://{V6}:11434/path"),
    (f"{V6}:56789/path", f"http://{V6}:56789/path"),
    (f"https://{V6}:56789/path", f"https://{V6}:56789/path"),
    (f"{V6}:56789/path/", f"http://{V6}:56789/path"),
    ("0.0.0.0", "http://0.0.0.0:11434"),
    ("localhost:11434", "http://localhost:11434"),
]


@pytest.mark.parametrize(("host", "url"), CASES)
def test_parse_host_reads_ollama_host_like_the_official_client(host: str | None, url: str) -> None:
    assert parse_host(host) == url


def test_the_official_client_asks_where_parse_host_says(httpserver) -> None:  # type: ignore[no-untyped-def]
    import ollama

    httpserver.expect_request("/api/tags").respond_with_json({"models": []})
    for host in (
        f":{httpserver.port}",
        f"127.0.0.1:{httpserver.port}/",
        f"http://127.0.0.1:{httpserver.port}",
    ):
        assert parse_host(host) == f"http://127.0.0.1:{httpserver.port}"
        assert ollama.Client(host=host).list().models == []
