"""harness.server.reach: which host, whether it answers, and the embedded engine when nothing does."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import psutil
import pytest
from pytest_httpserver import HTTPServer

from harness.errors import ServerError
from harness.server.reach import (
    DEFAULT_HOST,
    HostRequest,
    detect_kind,
    find_listening_pid,
    probe,
    reach_server,
    requested_host,
)


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_requested_host_prefers_the_option_then_the_environment_then_the_default() -> None:
    assert requested_host("example.org:1234", {"OLLAMA_HOST": "other:1"}) == HostRequest(
        "example.org:1234", "http://example.org:1234", "--ollama-host"
    )
    assert requested_host(None, {"OLLAMA_HOST": ":5555"}) == HostRequest(
        ":5555", "http://127.0.0.1:5555", "$OLLAMA_HOST"
    )
    default = requested_host(None, {})
    assert default.named_by is None
    assert default.host == DEFAULT_HOST
    assert default.url == "http://127.0.0.1:11434"


def test_probe_accepts_only_an_ollama_server(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/").respond_with_data("Ollama is running")
    assert probe(httpserver.url_for("").rstrip("/")) is None
    httpserver.clear()
    httpserver.expect_request("/").respond_with_data("<html>nginx</html>")
    assert "is not an Ollama server" in (probe(httpserver.url_for("").rstrip("/")) or "")
    refused = probe(_closed_port_url(), timeout=1.0)
    assert refused is not None and "Connect" in refused


def test_a_named_host_that_does_not_answer_is_a_clear_error(tmp_path: Path) -> None:
    url = _closed_port_url()
    request = HostRequest(url, url, "--ollama-host")
    with pytest.raises(ServerError) as caught, reach_server(request, models_dir=tmp_path):
        pass
    assert f"no Ollama server answers at {url} (from --ollama-host)" in caught.value.message
    assert "embedded engine" in caught.value.hint
    assert not (tmp_path / "blobs").exists()  # nothing was started


def test_an_answering_server_is_used_as_it_is(httpserver: HTTPServer, tmp_path: Path) -> None:
    httpserver.expect_request("/").respond_with_data("Ollama is running")
    httpserver.expect_request("/api/version").respond_with_json({"version": "0.33.0-rc2"})
    url = httpserver.url_for("").rstrip("/")
    started: list[str] = []
    with reach_server(
        HostRequest(url, url, None), models_dir=tmp_path, while_starting=lambda: started.append("engine")
    ) as server:
        assert started == []  # nothing to overlap: no engine starts
        assert server.kind == "ollama"
        assert server.host == f"{httpserver.host}:{httpserver.port}"
        assert server.pid == os.getpid()  # the test server listens in this process
        assert server.why_down() is None


def test_detect_kind_recognises_the_embedded_engine_by_its_version_tag(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/api/version").respond_with_json({"version": "0.33.0+harness.0.1.0"})
    assert detect_kind(httpserver.url_for("").rstrip("/")) == "embedded"


def test_find_listening_pid_ignores_remote_hosts() -> None:
    assert find_listening_pid("http://192.0.2.1:11434") is None


@pytest.mark.timeout(60)
def test_nothing_answering_and_no_host_named_starts_the_embedded_engine(tmp_path: Path) -> None:
    url = _closed_port_url()
    engines_while_starting: list[list[int]] = []

    def while_starting() -> None:  # the engine's process exists, and runs the engine's module
        engines_while_starting.append(
            [c.pid for c in psutil.Process().children() if "harness.engine.commands" in c.cmdline()]
        )

    with reach_server(
        HostRequest(url, url, None), models_dir=tmp_path / "models", while_starting=while_starting
    ) as server:
        assert engines_while_starting == [[server.pid]]
        assert server.kind == "embedded"
        assert server.url != url
        assert server.why_down() is None
        assert "started the embedded engine" in server.how
        pid = server.pid
    assert pid is not None
    assert server.why_down(timeout=1.0) is not None  # stopped with the block


def test_probe_explains_ollamas_host_check_refusal(httpserver: HTTPServer) -> None:
    """Ollama on loopback answers an untrusted Host header (e.g. from a reverse proxy) with an empty 403."""
    httpserver.expect_request("/").respond_with_data("", status=403)
    reason = probe(httpserver.url_for("").rstrip("/")) or ""
    assert reason.startswith("HTTP 403 with an empty body: Ollama listens on loopback and refuses the Host")
    assert f"'{httpserver.host}:{httpserver.port}'" in reason and "OLLAMA_HOST=0.0.0.0" in reason
    httpserver.clear()
    httpserver.expect_request("/").respond_with_data("denied by policy", status=403)  # some other 403
    assert "'denied by policy' is not an Ollama server" in (probe(httpserver.url_for("").rstrip("/")) or "")
