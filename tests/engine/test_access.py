"""Ollama's access rules on the live engine: CORS (OLLAMA_ORIGINS), the Host check, 404 and 405 answers.

The engine listens on 127.0.0.1, so Ollama's Host check applies as it does to a default `ollama serve`.
Expected answers are gin's and gin-contrib/cors's as Ollama configures them (server/routes.go).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from harness.engine.access import AccessMiddleware, allowed_origins
from harness.engine.process import EmbeddedEngine
from harness.errors import HarnessError, ServerError

from .conftest import make_engine


def ask(engine: EmbeddedEngine, method: str, path: str, **headers: str) -> httpx.Response:
    return httpx.request(method, f"{engine.url}{path}", headers=headers, timeout=10)


def test_a_foreign_origin_is_refused_with_an_empty_403(engine: EmbeddedEngine) -> None:
    for method, path in (("GET", "/api/tags"), ("POST", "/api/generate"), ("OPTIONS", "/api/chat")):
        answer = ask(engine, method, path, Origin="https://evil.example.com")
        assert (answer.status_code, answer.content) == (403, b""), (method, path)
        assert "access-control-allow-origin" not in answer.headers


def test_localhost_origins_get_cors_headers_and_requests_without_origin_none(engine: EmbeddedEngine) -> None:
    for origin in (
        "http://localhost",
        "http://localhost:3000",
        "https://127.0.0.1:8443",
        "tauri://localhost",
    ):
        answer = ask(engine, "GET", "/api/tags", Origin=origin)
        assert answer.status_code == 200 and answer.json() == {"models": []}, origin
        assert answer.headers["access-control-allow-origin"] == origin
        assert answer.headers["vary"] == "Origin"
    plain = ask(engine, "GET", "/api/tags")
    assert plain.status_code == 200 and "access-control-allow-origin" not in plain.headers
    same_origin = ask(engine, "GET", "/api/tags", Origin=f"http://{engine.host}")  # fetch() from the server
    assert same_origin.status_code == 200 and "access-control-allow-origin" not in same_origin.headers


def test_preflight_from_an_allowed_origin_is_a_204_with_the_preflight_headers(engine: EmbeddedEngine) -> None:
    answer = ask(
        engine,
        "OPTIONS",
        "/v1/chat/completions",
        Origin="http://localhost:5173",
        **{"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"},
    )
    assert (answer.status_code, answer.content) == (204, b"")
    assert answer.headers["access-control-allow-origin"] == "http://localhost:5173"
    assert answer.headers["access-control-allow-methods"] == "GET,POST,PUT,PATCH,DELETE,HEAD,OPTIONS"
    allowed_headers = answer.headers["access-control-allow-headers"].split(",")
    assert allowed_headers[:3] == ["Authorization", "Content-Type", "User-Agent"]
    assert allowed_headers[3:5] == ["Accept", "X-Requested-With"]
    assert "Openai-Beta" in allowed_headers and "X-Stainless-Timeout" in allowed_headers
    assert answer.headers["access-control-max-age"] == "43200"
    assert answer.headers.get_list("vary") == [
        "Origin",
        "Access-Control-Request-Method",
        "Access-Control-Request-Headers",
    ]


def test_a_host_header_naming_another_machine_is_refused(engine: EmbeddedEngine) -> None:
    """DNS rebinding: a page on evil.example.com that resolves to 127.0.0.1 must not reach the API."""
    for host in ("evil.example.com", "evil.example.com:11434", "8.8.8.8:11434", "[2001:db8::1]:11434"):
        answer = ask(engine, "GET", "/api/tags", Host=host)
        assert (answer.status_code, answer.content) == (403, b""), host


def test_local_host_headers_are_served(engine: EmbeddedEngine) -> None:
    local = ["localhost", "localhost:11434", "127.0.0.2", "[::1]:11434", "10.1.2.3", "192.168.0.7:80"]
    local += ["172.16.5.4", "0.0.0.0:11434", "ollama.localhost", "gpu-box.local", "svc.internal:11434"]
    local += [socket.gethostname().upper()]
    for host in local:
        answer = ask(engine, "GET", "/api/version", Host=host)
        assert answer.status_code == 200 and "version" in answer.json(), host


def test_options_without_origin_is_204_for_a_local_name_and_405_for_an_ip(engine: EmbeddedEngine) -> None:
    by_name = ask(engine, "OPTIONS", "/api/tags", Host="localhost:11434")
    assert (by_name.status_code, by_name.content) == (204, b"")
    by_address = ask(engine, "OPTIONS", "/api/tags")
    assert (by_address.status_code, by_address.text) == (405, "405 method not allowed")
    assert by_address.headers["allow"] == "HEAD, GET"


def test_unknown_paths_get_gos_404(engine: EmbeddedEngine) -> None:
    for method, path in (("GET", "/api/nothing"), ("GET", "/api/generate/"), ("DELETE", "/api/tags/")):
        answer = ask(engine, method, path)
        assert (answer.status_code, answer.text) == (404, "404 page not found"), (method, path)
        assert answer.headers["content-type"] == "text/plain"


def test_a_trailing_slash_redirects_where_the_method_has_the_path_without_it(engine: EmbeddedEngine) -> None:
    get = ask(engine, "GET", "/api/tags/?x=1")
    assert (get.status_code, get.headers["location"]) == (301, "/api/tags?x=1")
    assert get.text == '<a href="/api/tags?x=1">Moved Permanently</a>.\n\n'
    post = ask(engine, "POST", "/api/generate/")
    assert (post.status_code, post.headers["location"], post.content) == (307, "/api/generate", b"")
    foreign = ask(engine, "POST", "/api/generate/", Origin="https://evil.example.com")
    assert foreign.status_code == 307  # gin redirects before its CORS middleware runs
    assert ask(engine, "GET", "/api/tags//").status_code == 404  # one slash only


def test_known_paths_asked_with_another_method_get_405_and_allow(engine: EmbeddedEngine) -> None:
    expected = {
        ("GET", "/api/generate"): "POST",
        ("DELETE", "/api/tags"): "HEAD, GET",
        ("POST", "/"): "HEAD, GET",
        ("HEAD", "/api/ps"): "GET",  # gin answers HEAD only where HEAD is routed
        ("GET", "/api/blobs/sha256:abc"): "HEAD, POST",
        ("POST", "/api/delete"): "DELETE",
        ("POST", "/v1/models"): "GET",
        ("GET", "/v1/chat/completions"): "POST",
    }
    for (method, path), allow in expected.items():
        answer = ask(engine, method, path)
        assert answer.status_code == 405, (method, path)
        assert answer.headers["allow"] == allow, (method, path)
        if method != "HEAD":
            assert answer.text == "405 method not allowed"


@pytest.fixture(scope="module")
def engine_with_origins(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedEngine]:
    origins = "https://app.example.com,chrome-extension://*,http://*.corp.example"
    with make_engine(tmp_path_factory, {"OLLAMA_ORIGINS": origins}) as running:
        yield running


def test_ollama_origins_adds_exact_and_wildcard_origins(engine_with_origins: EmbeddedEngine) -> None:
    allowed = ("https://app.example.com", "chrome-extension://abcdef", "http://wiki.corp.example")
    for origin in (*allowed, "http://localhost:8080"):
        answer = ask(engine_with_origins, "GET", "/api/tags", Origin=origin)
        assert answer.status_code == 200, origin
        assert answer.headers["access-control-allow-origin"] == origin
    for origin in ("https://app.example.com.evil.io", "moz-extension://abc", "https://wiki.corp.example"):
        assert ask(engine_with_origins, "GET", "/api/tags", Origin=origin).status_code == 403, origin


def test_ollama_origins_star_allows_every_origin(tmp_path_factory: pytest.TempPathFactory) -> None:
    with make_engine(tmp_path_factory, {"OLLAMA_ORIGINS": "*"}) as running:
        answer = ask(running, "GET", "/api/tags", Origin="https://anywhere.example.org")
        assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == "*"
        assert "vary" not in answer.headers


def test_a_bad_ollama_origins_stops_the_engine_at_start_naming_the_entry(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    engine = make_engine(
        tmp_path_factory, {"OLLAMA_ORIGINS": "https://ok.example.com, https://spaced.example"}
    )
    with pytest.raises(ServerError):
        engine.start()
    engine.stop()
    log = engine.log_path.read_text()
    assert "OLLAMA_ORIGINS entry ' https://spaced.example' is a bad origin" in log
    assert "no spaces around commas" in log and "Traceback" not in log


def test_a_server_bound_to_all_interfaces_skips_the_host_check_but_keeps_cors() -> None:
    """Ollama checks Host only on a loopback bind (OLLAMA_HOST=0.0.0.0 serves any name)."""

    async def hello(request: object) -> PlainTextResponse:
        return PlainTextResponse("hello")

    async def statuses(bind_host: str) -> tuple[int, int]:
        middleware = [Middleware(AccessMiddleware, bind_host=bind_host, origins=allowed_origins())]
        app = Starlette(routes=[Route("/", hello)], middleware=middleware)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as client:
            named = await client.get("/", headers={"Host": "ollama.example.com"})
            foreign = await client.get("/", headers={"Origin": "https://evil.example.com"})
        return named.status_code, foreign.status_code

    for bind_host, host_status in (("0.0.0.0", 200), ("::", 200), ("127.0.0.1", 403), ("localhost", 403)):
        assert asyncio.run(statuses(bind_host)) == (host_status, 403), bind_host


def test_origin_settings_ollama_refuses_at_start_are_errors_naming_the_entry() -> None:
    assert allowed_origins(" 'https://a.example' ")[0] == "https://a.example"  # quotes and spaces trimmed
    assert allowed_origins()[-5:] == (
        "app://*",
        "file://*",
        "tauri://*",
        "vscode-webview://*",
        "vscode-file://*",
    )
    assert "http://0.0.0.0:*" in allowed_origins()
    with pytest.raises(HarnessError, match=r"'http://\*\.a\.\*' has more than one '\*'"):
        allowed_origins("http://*.a.*")
    with pytest.raises(HarnessError, match=r"'example.com' is a bad origin") as caught:
        allowed_origins("example.com")
    assert "scheme" in caught.value.hint
