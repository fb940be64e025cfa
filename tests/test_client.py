"""OllamaClient against a real local HTTP server (pytest-httpserver) speaking Ollama's API."""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from harness.errors import GGUFReadError, ServerError
from harness.server.client import Completion, OllamaClient, OllamaRequestError, parse_version

pytestmark = pytest.mark.timeout(30)

FINAL = {
    "done": True,
    "done_reason": "stop",
    "total_duration": 2_000_000_000,
    "load_duration": 500_000_000,
    "prompt_eval_count": 3,
    "prompt_eval_duration": 100_000_000,
    "eval_count": 4,
    "eval_duration": 800_000_000,
}


def ndjson(*objects: dict[str, object], gap_s: float = 0.0) -> Iterator[bytes]:
    for number, item in enumerate(objects):
        if number and gap_s:
            time.sleep(gap_s)
        yield (json.dumps(item) + "\n").encode()


def generate_chunks(*pieces: str) -> list[dict[str, object]]:
    chunks: list[dict[str, object]] = [
        {"model": "m", "created_at": "2026-01-01T00:00:00Z", "response": piece, "done": False}
        for piece in pieces
    ]
    chunks.append({"model": "m", "created_at": "2026-01-01T00:00:00Z", "response": "", **FINAL})
    return chunks


def streaming(objects: list[dict[str, object]], gap_s: float = 0.0, first_delay_s: float = 0.0):  # type: ignore[no-untyped-def]
    def handler(request: Request) -> Response:
        def body() -> Iterator[bytes]:
            if first_delay_s:
                time.sleep(first_delay_s)
            yield from ndjson(*objects, gap_s=gap_s)

        return Response(body(), content_type="application/x-ndjson")

    return handler


@pytest.fixture
def client(httpserver: HTTPServer) -> Iterator[OllamaClient]:
    with OllamaClient(
        httpserver.url_for("/"), timeout=10, stall_timeout=5, connect_timeout=2
    ) as ollama_client:
        yield ollama_client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------------------------------- server


def test_version_and_ping(httpserver: HTTPServer, client: OllamaClient) -> None:
    httpserver.expect_request("/api/version").respond_with_json({"version": "0.33.0-rc2"})
    httpserver.expect_request("/").respond_with_data("Ollama is running")
    assert client.version() == "0.33.0-rc2"
    assert client.server_version() == (0, 33, 0)
    client.ping()


def test_ping_refuses_a_server_that_is_not_ollama(httpserver: HTTPServer, client: OllamaClient) -> None:
    httpserver.expect_request("/").respond_with_data("<html>nginx</html>")
    with pytest.raises(ServerError, match="not 'Ollama is running'"):
        client.ping()


def test_parse_version() -> None:
    assert parse_version("0.5.4") == (0, 5, 4)
    assert parse_version("v0.33.0-rc2") == (0, 33, 0)
    with pytest.raises(ValueError):
        parse_version("dev")


def test_connection_refused_names_the_host() -> None:
    port = free_port()
    with OllamaClient(f"127.0.0.1:{port}", timeout=5, connect_timeout=2) as dead:
        with pytest.raises(ServerError) as error:
            dead.version()
        assert (
            error.value.message == f"Ollama at http://127.0.0.1:{port} is not answering: connection refused"
        )
        with pytest.raises(ServerError, match="is not answering: connection refused"):
            dead.generate("m", "hi")
        with pytest.raises(ServerError, match="is not answering: connection refused"):
            dead.list()


def test_http_error_carries_status_and_server_text(httpserver: HTTPServer, client: OllamaClient) -> None:
    httpserver.expect_request("/api/generate").respond_with_json(
        {"error": "model 'nope' not found"}, status=404
    )
    with pytest.raises(OllamaRequestError) as error:
        client.generate("nope", "hi")
    assert error.value.status_code == 404
    assert error.value.server_message == "model 'nope' not found"
    assert error.value.message == (
        f"Ollama at {client.url} answered generate (model 'nope') with HTTP 404: model 'nope' not found"
    )
    assert "create or pull" in error.value.hint


def test_an_empty_403_says_what_ollama_refuses(httpserver: HTTPServer, client: OllamaClient) -> None:
    httpserver.expect_request("/api/generate").respond_with_data("", status=403)
    with pytest.raises(OllamaRequestError) as error:
        client.generate("m", "hi")
    assert error.value.status_code == 403
    assert error.value.message.endswith("answered generate (model 'm') with HTTP 403 and an empty body")
    assert "Origin outside OLLAMA_ORIGINS" in error.value.hint and "Host header" in error.value.hint


# ---------------------------------------------------------------------------------------------- streaming


def test_generate_streams_with_timings(httpserver: HTTPServer, client: OllamaClient) -> None:
    httpserver.expect_request("/api/generate", method="POST").respond_with_handler(
        streaming(generate_chunks(" is", " two", " one."), gap_s=0.05, first_delay_s=0.1)
    )
    completion = client.generate("m", "hello the", raw=True, options={"temperature": 0})
    assert isinstance(completion, Completion)
    assert completion.text == " is two one."
    assert completion.done and completion.done_reason == "stop"
    assert len(completion.chunk_times) == 4 and len(completion.content_times) == 3
    assert completion.chunk_times == sorted(completion.chunk_times)
    assert completion.ttft_s is not None and completion.ttft_s >= 0.1
    assert len(completion.itl_s) == 2 and all(gap >= 0.04 for gap in completion.itl_s)
    assert completion.e2e_s is not None and completion.e2e_s >= completion.chunk_times[-1]
    assert completion.server_durations() == {
        "total_duration_s": 2.0,
        "load_duration_s": 0.5,
        "prompt_eval_count": 3,
        "prompt_eval_duration_s": 0.1,
        "eval_count": 4,
        "eval_duration_s": 0.8,
    }
    assert completion.eval_rate == pytest.approx(5.0)
    body = json.loads(httpserver.log[0][0].get_data())
    assert body["stream"] is True and body["raw"] is True and body["options"] == {"temperature": 0}


def test_chat_streams_message_content(httpserver: HTTPServer, client: OllamaClient) -> None:
    chunks: list[dict[str, object]] = [
        {"model": "m", "created_at": "t", "message": {"role": "assistant", "content": piece}, "done": False}
        for piece in ("Hel", "lo")
    ]
    chunks.append({"model": "m", "created_at": "t", "message": {"role": "assistant", "content": ""}, **FINAL})
    httpserver.expect_request("/api/chat", method="POST").respond_with_handler(streaming(chunks))
    completion = client.chat("m", [{"role": "user", "content": "hi"}])
    assert completion.text == "Hello" and completion.eval_count == 4
    assert json.loads(httpserver.log[0][0].get_data())["messages"] == [{"role": "user", "content": "hi"}]


def test_chat_keeps_tool_calls_streamed_and_whole(httpserver: HTTPServer, client: OllamaClient) -> None:
    call = {"id": "call_1", "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}}
    message = {"role": "assistant", "content": "", "tool_calls": [call]}
    chunks: list[dict[str, object]] = [
        {"model": "m", "created_at": "t", "message": message, "done": False},
        {"model": "m", "created_at": "t", "message": {"role": "assistant", "content": ""}, **FINAL},
    ]
    httpserver.expect_ordered_request("/api/chat", method="POST").respond_with_handler(streaming(chunks))
    whole = {"model": "m", "created_at": "t", "message": message, **FINAL}
    httpserver.expect_ordered_request("/api/chat", method="POST").respond_with_json(whole)
    tools = [{"type": "function", "function": {"name": "get_weather"}}]
    for stream in (True, False):
        completion = client.chat("m", [{"role": "user", "content": "hi"}], tools=tools, stream=stream)
        assert [c["function"]["name"] for c in completion.tool_calls] == ["get_weather"]
        assert completion.tool_calls[0]["function"]["arguments"] == {"city": "Paris"}
        assert (completion.text, completion.done, completion.eval_count) == ("", True, 4)
    bodies = [json.loads(entry[0].get_data()) for entry in httpserver.log]
    assert [body["stream"] for body in bodies] == [True, False]
    assert all(body["tools"] == tools for body in bodies)


def test_in_band_error_line_is_a_server_error(httpserver: HTTPServer, client: OllamaClient) -> None:
    objects = [*generate_chunks("a")[:1], {"error": "llama-server process has terminated: exit status 1"}]
    httpserver.expect_request("/api/generate").respond_with_handler(streaming(objects))
    with pytest.raises(OllamaRequestError) as error:
        client.generate("m", "hi")
    assert error.value.status_code == -1
    assert "reported an error during generate (model 'm'): llama-server process has terminated" in str(
        error.value
    )
    assert error.value.partial is not None and error.value.partial.text == "a"


def test_stream_cut_without_done_is_an_error(httpserver: HTTPServer, client: OllamaClient) -> None:
    httpserver.expect_request("/api/generate").respond_with_handler(streaming(generate_chunks("x", "y")[:2]))
    with pytest.raises(OllamaRequestError, match="ended after 2 chunks without a final done chunk") as error:
        client.generate("m", "hi")
    assert error.value.partial is not None and error.value.partial.text == "xy"


def test_first_token_stall_says_which_request_and_how_long(
    httpserver: HTTPServer, client: OllamaClient
) -> None:
    httpserver.expect_request("/api/generate").respond_with_handler(
        streaming(generate_chunks("late"), first_delay_s=2.5)
    )
    started = time.monotonic()
    with pytest.raises(OllamaRequestError) as error:
        client.generate("slow", "hi", stall_timeout=0.4)
    assert time.monotonic() - started < 2.2  # well before the first token would have come
    assert error.value.message == (
        f"Ollama at {client.url} stalled on generate (model 'slow'): no first token for 0.4 s"
    )
    # The test server answers one request at a time: wait until the late reply is done so that it cannot
    # hold up the next test's requests.
    httpserver.expect_request("/api/version").respond_with_json({"version": "0.0.0"})
    assert client.version() == "0.0.0"


def test_request_time_limit(httpserver: HTTPServer, client: OllamaClient) -> None:
    httpserver.expect_request("/api/generate").respond_with_handler(
        streaming(generate_chunks("a", "b", "c", "d", "e"), gap_s=0.15)
    )
    with pytest.raises(OllamaRequestError, match=r"did not finish generate \(model 'm'\) within 0.3 s"):
        client.generate("m", "hi", timeout=0.3)


# ---------------------------------------------------------------------------------------------- blobs, create


def test_upload_blob_heads_first_and_skips_post_when_present(
    httpserver: HTTPServer, client: OllamaClient, tmp_path: Path
) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(b"GGUF" + bytes(100))
    digest = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    httpserver.expect_request(f"/api/blobs/{digest}", method="HEAD").respond_with_data("", status=200)
    assert client.upload_blob(path) == digest
    assert [request.method for request, _ in httpserver.log] == ["HEAD"]


def test_upload_blob_posts_when_missing(httpserver: HTTPServer, client: OllamaClient, tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(b"GGUF" + bytes(3 << 20))  # more than one hashing chunk
    digest = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    received: list[bytes] = []

    def store(request: Request) -> Response:
        received.append(request.get_data())
        return Response("", status=201)

    httpserver.expect_request(f"/api/blobs/{digest}", method="HEAD").respond_with_data("", status=404)
    httpserver.expect_request(f"/api/blobs/{digest}", method="POST").respond_with_handler(store)
    assert client.upload_blob(path) == digest
    assert [request.method for request, _ in httpserver.log] == ["HEAD", "POST"]
    assert received == [path.read_bytes()]


def test_upload_blob_digest_mismatch_is_reported(
    httpserver: HTTPServer, client: OllamaClient, tmp_path: Path
) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(b"GGUF")
    digest = "sha256:" + hashlib.sha256(b"GGUF").hexdigest()
    httpserver.expect_request(f"/api/blobs/{digest}", method="HEAD").respond_with_data("", status=404)
    httpserver.expect_request(f"/api/blobs/{digest}", method="POST").respond_with_json(
        {"error": "digest mismatch"}, status=400
    )
    with pytest.raises(OllamaRequestError, match="HTTP 400: digest mismatch"):
        client.upload_blob(path)


def test_upload_of_a_missing_file(client: OllamaClient, tmp_path: Path) -> None:
    with pytest.raises(GGUFReadError, match="cannot read"):
        client.upload_blob(tmp_path / "nope.gguf")


def _blob_present(httpserver: HTTPServer, path: Path) -> str:
    digest = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    httpserver.expect_request(f"/api/blobs/{digest}", method="HEAD").respond_with_data("", status=200)
    return digest


def test_create_structured_form(httpserver: HTTPServer, client: OllamaClient, tmp_path: Path) -> None:
    path = tmp_path / "tiny.gguf"
    path.write_bytes(b"GGUF tiny")
    digest = _blob_present(httpserver, path)
    httpserver.expect_request("/api/version").respond_with_json({"version": "0.33.0"})
    progress = [{"status": "parsing GGUF"}, {"status": "writing manifest"}, {"status": "success"}]
    httpserver.expect_request("/api/create", method="POST").respond_with_handler(streaming(progress))
    client.create_model(
        "tiny:test",
        gguf_path=path,
        template="{{ .Prompt }}",
        system="sys",
        parameters={"stop": ["a"], "num_ctx": 256},
        messages=[{"role": "user", "content": "q"}],
        license="MIT",
    )
    body = json.loads(next(r for r, _ in httpserver.log if r.path == "/api/create").get_data())
    assert body["model"] == "tiny:test"
    assert body["files"] == {"tiny.gguf": digest}
    assert "from" not in body and "modelfile" not in body
    assert body["template"] == "{{ .Prompt }}" and body["system"] == "sys"
    assert body["parameters"] == {"stop": ["a"], "num_ctx": 256}
    assert body["messages"] == [{"role": "user", "content": "q"}]


def test_create_in_band_error(httpserver: HTTPServer, client: OllamaClient, tmp_path: Path) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(b"GGUF bad")
    _blob_present(httpserver, path)
    httpserver.expect_request("/api/version").respond_with_json({"version": "0.33.0"})
    progress = [{"status": "parsing GGUF"}, {"error": "invalid file magic"}]
    httpserver.expect_request("/api/create", method="POST").respond_with_handler(streaming(progress))
    with pytest.raises(OllamaRequestError, match=r"error during create 'bad': invalid file magic"):
        client.create_model("bad", gguf_path=path)


def test_create_legacy_form_for_0_5_4(httpserver: HTTPServer, client: OllamaClient, tmp_path: Path) -> None:
    path = tmp_path / "tiny.gguf"
    path.write_bytes(b"GGUF old")
    digest = _blob_present(httpserver, path)
    httpserver.expect_request("/api/version").respond_with_json({"version": "0.5.4"})
    httpserver.expect_request("/api/create", method="POST").respond_with_json({"status": "success"})
    client.create_model("old", gguf_path=path, template="{{ .Prompt }}", parameters={"stop": ["a", "b"]})
    body = json.loads(next(r for r, _ in httpserver.log if r.path == "/api/create").get_data())
    assert "files" not in body and body["name"] == "old" and body["stream"] is False
    assert (
        body["modelfile"]
        == f"FROM @{digest}\nTEMPLATE {{{{ .Prompt }}}}\nPARAMETER stop a\nPARAMETER stop b\n"
    )


def test_create_from_modelfile(httpserver: HTTPServer, client: OllamaClient, tmp_path: Path) -> None:
    path = tmp_path / "tiny.gguf"
    path.write_bytes(b"GGUF mf")
    digest = _blob_present(httpserver, path)
    httpserver.expect_request("/api/version").respond_with_json({"version": "0.24.0"})
    httpserver.expect_request("/api/create", method="POST").respond_with_handler(
        streaming([{"status": "success"}])
    )
    client.create_from_modelfile("mf", "FROM ./tiny.gguf\nPARAMETER num_ctx 64\n", relative_dir=tmp_path)
    body = json.loads(next(r for r, _ in httpserver.log if r.path == "/api/create").get_data())
    assert body["files"] == {"tiny.gguf": digest} and body["parameters"] == {"num_ctx": 64}


# ---------------------------------------------------------------------------------------------- models


def test_model_management_calls(httpserver: HTTPServer, client: OllamaClient) -> None:
    httpserver.expect_request("/api/tags").respond_with_json(
        {"models": [{"model": "a:latest", "name": "a:latest"}]}
    )
    httpserver.expect_request("/api/ps").respond_with_json(
        {
            "models": [
                {"model": "a:latest", "name": "a:latest", "size": 10, "size_vram": 0, "context_length": 512}
            ]
        }
    )
    httpserver.expect_request("/api/copy", method="POST").respond_with_data("")
    httpserver.expect_request("/api/delete", method="DELETE").respond_with_json(
        {"error": "model 'gone' not found"}, status=404
    )
    assert [m.model for m in client.list().models] == ["a:latest"]
    assert client.ps().models[0].context_length == 512
    client.copy("a", "b")
    with pytest.raises(
        OllamaRequestError, match="answered delete 'gone' with HTTP 404: model 'gone' not found"
    ):
        client.delete("gone")


def test_unload_sends_keep_alive_zero(httpserver: HTTPServer, client: OllamaClient) -> None:
    httpserver.expect_request("/api/generate").respond_with_json(
        {"model": "a", "created_at": "t", "response": "", "done": True, "done_reason": "unload"}
    )
    client.unload("a")
    body = json.loads(httpserver.log[0][0].get_data())
    assert body["keep_alive"] == 0 and body["prompt"] == ""


def test_server_that_dies_mid_request_is_named(tmp_path: Path) -> None:
    # A listener that accepts each connection, reads the request and closes without answering, as a crashed
    # Ollama does (OLLAMA-OBSERVED: "Server disconnected without sending a response").
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                connection, _ = listener.accept()
                connection.recv(65536)
                connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with OllamaClient(f"127.0.0.1:{port}", timeout=5, connect_timeout=2) as dying:
            with pytest.raises(ServerError) as error:
                dying.generate("m", "hi")
            assert error.value.message.startswith(
                f"Ollama at http://127.0.0.1:{port} closed the connection during generate (model 'm')"
            )
            assert "did the server crash?" in error.value.message
            with pytest.raises(ServerError, match="closed the connection during ps"):
                dying.ps()
    finally:
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        listener.close()
        thread.join(timeout=5)
    assert not thread.is_alive()
