"""Every endpoint of the embedded engine, through the official `ollama` client (raw httpx only where the
client cannot send the request), with real GGUF files and real llama.cpp runners."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx
import ollama
import pytest

from harness.engine import EmbeddedEngine
from harness.gguf.build import BuiltModel
from harness.memory import estimate_model_memory
from harness.server.client import OllamaClient
from harness.testing.helpers import runner_pids

from .conftest import GREEDY, ORACLE_PROMPT, ORACLE_REPLY, create_from_gguf, post

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("tiny_and_oracle")]


# --- root, version ---------------------------------------------------------------------------------------


def test_root_get_and_head(engine: EmbeddedEngine) -> None:
    assert httpx.get(engine.url).text == "Ollama is running"
    head = httpx.head(engine.url)
    assert head.status_code == 200 and head.content == b""


def test_version_names_the_engine_and_the_ollama_level(engine: EmbeddedEngine) -> None:
    version = httpx.get(f"{engine.url}/api/version").json()["version"]
    level, _, build = version.partition("+")
    assert tuple(int(part) for part in level.split(".")) >= (0, 33, 0)
    assert build.startswith("harness.")


# --- blobs -----------------------------------------------------------------------------------------------


def test_blob_head_post_and_digest_errors(engine: EmbeddedEngine) -> None:
    data = b"some blob bytes"
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    url = f"{engine.url}/api/blobs/{digest}"
    assert httpx.head(url).status_code == 404
    assert httpx.post(url, content=data).status_code == 201
    assert httpx.head(url).status_code == 200
    assert httpx.post(url, content=data).status_code == 200
    wrong = post(engine, "/api/blobs/sha256:" + "0" * 64, content=b"other bytes")
    assert wrong.status_code == 400
    assert wrong.json()["error"].startswith('digest mismatch, expected "sha256:000')
    assert post(engine, "/api/blobs/..%2F..%2Fetc%2Fpasswd", content=b"x").status_code == 404  # no such route
    for bad in ("sha256:xyz", "md5-" + "0" * 64, "sha256:" + "g" * 64, "..sha256-" + "0" * 64):
        answer = post(engine, f"/api/blobs/{bad}", content=b"x")
        assert answer.status_code == 400 and answer.json() == {"error": "invalid digest format"}
        assert httpx.head(f"{engine.url}/api/blobs/{bad}").status_code == 400


def test_create_blob_through_the_client(client: ollama.Client, tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(b"client blob")
    assert client.create_blob(path) == f"sha256:{hashlib.sha256(b'client blob').hexdigest()}"


# --- create ----------------------------------------------------------------------------------------------


def test_create_streams_progress_then_success(client: ollama.Client, tiny_gguf: BuiltModel) -> None:
    digest = client.create_blob(tiny_gguf.path)
    statuses = [p.status for p in client.create(model="streamed", files={"m.gguf": digest}, stream=True)]
    assert statuses[0] == "parsing GGUF"
    assert "writing manifest" in statuses
    assert statuses[-1] == "success"


def test_create_from_with_template_system_parameters_messages_license(client: ollama.Client) -> None:
    template = "{{ if .System }}[{{ .System }}]{{ end }}{{ .Prompt }}"
    client.create(
        model="derived:v1",
        from_="tiny",
        template=template,
        system="be brief",
        parameters={"num_ctx": 256, "stop": ["</s>", "user:"], "temperature": 0.5},
        messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
        license="MIT",
    )
    shown = client.show("derived:v1")
    assert shown.template == template
    assert shown.license == "MIT"
    assert shown.parameters is not None and "num_ctx" in shown.parameters and '"user:"' in shown.parameters
    raw = httpx.post(f"{client._client.base_url}/api/show", json={"model": "derived:v1"}).json()
    assert raw["system"] == "be brief"  # the client's ShowResponse has no `system` or `messages` field
    assert [m["content"] for m in raw["messages"]] == ["hi", "hello"]
    assert shown.details.family == "llama" and shown.details.format == "gguf"
    assert shown.modelinfo is not None and shown.modelinfo["llama.context_length"] == 512
    assert shown.modelfile is not None and 'SYSTEM """be brief"""' in shown.modelfile


def test_create_error_paths(engine: EmbeddedEngine, client: ollama.Client, tiny_gguf: BuiltModel) -> None:
    digest = client.create_blob(tiny_gguf.path)
    cases = [
        ({"model": "x", "modelfile": "FROM tiny"}, "neither 'from' or 'files' was specified"),
        ({"model": "bad/../name", "files": {"m.gguf": digest}}, "invalid model name"),
        ({"model": "x", "files": {"../../x.gguf": digest}}, "file path must be relative"),
        ({"model": "x", "files": {"/abs/x.gguf": digest}}, "file path must be relative"),
        ({"model": "x", "files": {"m.gguf": ""}}, "invalid digest format"),
        ({"model": "x", "from": "tiny", "template": "{{ .Prompt "}, None),
    ]
    for body, message in cases:
        for stream in (True, False):
            answer = post(engine, "/api/create", json={**body, "stream": stream})
            assert answer.status_code == 400, body
            error = answer.json()["error"]
            assert error == message if message else error.startswith("template error: "), error


def test_create_rejects_non_gguf_bytes(client: ollama.Client, tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("this is not a model")
    digest = client.create_blob(path)
    with pytest.raises(ollama.ResponseError) as caught:
        client.create(model="notgguf", files={"notes.gguf": digest})
    assert caught.value.status_code == 400
    assert caught.value.error == "supplied file was not in GGUF format"


def test_create_rejects_truncated_file_like_ollamas_decoder(
    engine: EmbeddedEngine, client: ollama.Client, tiny_gguf: BuiltModel, tmp_path: Path
) -> None:
    data = tiny_gguf.path.read_bytes()
    path = tmp_path / "cut.gguf"
    path.write_bytes(data[: len(data) - 1000])
    digest = client.create_blob(path)
    with pytest.raises(ollama.ResponseError) as caught:
        client.create(model="cut", files={"cut.gguf": digest})
    assert caught.value.status_code == 500
    assert (
        caught.value.error.startswith('tensor "')
        and f"exceeds file size ({len(data) - 1000})" in caught.value.error
    )
    # streaming: the error arrives in-band after the first progress line, HTTP status stays 200
    answer = post(engine, "/api/create", json={"model": "cut", "files": {"cut.gguf": digest}})
    lines = [json.loads(line) for line in answer.text.splitlines()]
    assert answer.status_code == 200 and lines[0] == {"status": "parsing GGUF"}
    assert "exceeds file size" in lines[-1]["error"]


def test_create_rejects_a_file_llama_cpp_cannot_load(
    client: ollama.Client, no_context_length_gguf: Path
) -> None:
    digest = client.create_blob(no_context_length_gguf)
    with pytest.raises(ollama.ResponseError) as caught:
        client.create(model="noctx", files={"noctx.gguf": digest})
    assert caught.value.status_code == 500
    assert caught.value.error.startswith("failed to validate GGUF: ")
    assert "context_length" in caught.value.error
    assert "noctx:latest" not in [m.model for m in client.list().models]


# --- tags, show, copy, delete ---------------------------------------------------------------------------


def test_tags_lists_models_with_details(client: ollama.Client, tiny_gguf: BuiltModel) -> None:
    listed = {m.model: m for m in client.list().models}
    assert "tiny:latest" in listed
    tiny = listed["tiny:latest"]
    assert tiny.size is not None and tiny.size >= tiny_gguf.size
    assert tiny.digest is not None and len(tiny.digest) == 64
    assert tiny.details is not None and tiny.details.family == "llama"


def test_copy_delete_and_case_insensitive_lookup(client: ollama.Client) -> None:
    client.copy("tiny", "Copied:Tag")
    names = [m.model for m in client.list().models]
    assert "tiny:latest" in names and "Copied:Tag" in names
    assert client.show("copied:tag").details.family == "llama"
    client.delete("COPIED:tag")
    assert "Copied:Tag" not in [m.model for m in client.list().models]
    with pytest.raises(ollama.ResponseError) as caught:
        client.delete("copied:tag")
    assert caught.value.status_code == 404 and caught.value.error == "model 'copied:tag' not found"


def test_copy_and_delete_errors(engine: EmbeddedEngine) -> None:
    answer = post(engine, "/api/copy", json={"source": "missing", "destination": "x"})
    assert answer.status_code == 404 and answer.json()["error"] == 'model "missing" not found'
    answer = post(engine, "/api/copy", json={"source": "tiny", "destination": "a/b/c/d"})
    assert answer.status_code == 400 and answer.json()["error"] == 'destination "a/b/c/d" is invalid'
    answer = httpx.request("DELETE", f"{engine.url}/api/delete", json={"model": "../etc"})
    assert answer.status_code == 400 and answer.json()["error"] == 'name "../etc" is invalid'


def test_show_missing_model_is_404(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        client.show("nope")
    assert caught.value.status_code == 404 and caught.value.error == "model 'nope:latest' not found"


# --- generate --------------------------------------------------------------------------------------------


def test_generate_oracle_exact_reply_streaming_and_not(client: ollama.Client) -> None:
    whole = client.generate(model="oracle", prompt=ORACLE_PROMPT, raw=True, options=GREEDY)
    assert whole.response == ORACLE_REPLY
    assert whole.done and whole.done_reason == "stop" and whole.eval_count == 5
    chunks = list(
        client.generate(model="oracle", prompt=ORACLE_PROMPT, raw=True, options=GREEDY, stream=True)
    )
    assert "".join(c.response for c in chunks) == ORACLE_REPLY
    assert all(not c.done for c in chunks[:-1]) and chunks[-1].done
    final = chunks[-1]
    for field in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"):
        assert isinstance(final[field], int) and final[field] > 0, field
    assert final.prompt_eval_count and final.prompt_eval_count >= 3
    assert final.total_duration >= final.eval_duration + final.load_duration


def test_generate_num_predict_gives_length(client: ollama.Client) -> None:
    reply = client.generate(
        model="oracle", prompt=ORACLE_PROMPT, raw=True, options={**GREEDY, "num_predict": 3}
    )
    assert reply.done_reason == "length" and reply.eval_count == 3 and reply.response == " is two one"


def test_generate_stop_option(client: ollama.Client) -> None:
    reply = client.generate(
        model="oracle", prompt=ORACLE_PROMPT, raw=True, options={**GREEDY, "stop": [" one"]}
    )
    assert reply.response == " is two" and reply.done_reason == "stop"


def test_generate_through_template_and_system(client: ollama.Client) -> None:
    reply = client.generate(
        model="oracle", prompt="the", system="hello", template="{{ .System }} {{ .Prompt }}", options=GREEDY
    )
    assert reply.response == ORACLE_REPLY


def test_generate_request_errors(engine: EmbeddedEngine, client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        client.generate(model="missing", prompt="x")
    assert caught.value.status_code == 404 and caught.value.error == "model 'missing' not found"
    with pytest.raises(ollama.ResponseError) as caught:
        client.generate(model="oracle", prompt="x", raw=True, system="s")
    assert caught.value.status_code == 400
    assert caught.value.error == "raw mode does not support template, system, or context"
    with pytest.raises(ollama.ResponseError) as caught:
        client.generate(model="oracle", prompt="x", options={"num_ctx": "big"})  # type: ignore[dict-item]
    assert (
        caught.value.status_code == 500 and caught.value.error == 'option "num_ctx" must be of type integer'
    )
    with pytest.raises(ollama.ResponseError) as caught:
        client.generate(model="a:b:c", prompt="x")
    assert caught.value.status_code == 400 and caught.value.error == "invalid model name"
    assert post(engine, "/api/generate", content=b"").json() == {"error": "missing request body"}
    malformed = post(engine, "/api/generate", content=b"{not json")
    assert malformed.status_code == 400 and "error" in malformed.json()


def test_unknown_fields_and_options_are_ignored(engine: EmbeddedEngine) -> None:
    answer = post(
        engine,
        "/api/generate",
        json={
            "model": "oracle",
            "prompt": ORACLE_PROMPT,
            "raw": True,
            "stream": False,
            "whatever": 1,
            "options": {**GREEDY, "no_such_option": 3},
        },
    )
    assert answer.status_code == 200 and answer.json()["response"] == ORACLE_REPLY


def test_empty_prompt_loads_and_keep_alive_zero_unloads(client: ollama.Client) -> None:
    loaded = client.generate(model="tiny", prompt="")
    assert loaded.done and loaded.done_reason == "load"
    assert "tiny:latest" in [m.model for m in client.ps().models]
    unloaded = client.generate(model="tiny", prompt="", keep_alive=0)
    assert unloaded.done_reason == "unload"
    assert "tiny:latest" not in [m.model for m in client.ps().models]


# --- chat ------------------------------------------------------------------------------------------------


def test_chat_streaming_and_not(client: ollama.Client) -> None:
    client.create(
        model="oracle-chat", from_="oracle", template="{{ range .Messages }}{{ .Content }} {{ end }}"
    )
    messages = [{"role": "user", "content": "hello"}, {"role": "user", "content": "the"}]
    reply = client.chat(model="oracle-chat", messages=messages, options=GREEDY)
    assert reply.message.role == "assistant" and reply.done
    chunks = list(client.chat(model="oracle-chat", messages=messages, options=GREEDY, stream=True))
    assert "".join(c.message.content or "" for c in chunks) == reply.message.content
    assert chunks[-1].done and chunks[-1].eval_count
    loaded = client.chat(model="oracle-chat", messages=[])
    assert loaded.done_reason == "load"
    with pytest.raises(ollama.ResponseError) as caught:
        client.chat(model="nope", messages=messages)
    assert caught.value.status_code == 404


# --- ps, load errors ------------------------------------------------------------------------------------


def test_ps_reports_llama_cpp_buffers_and_clamped_context(
    client: ollama.Client, engine: EmbeddedEngine, oracle_gguf: BuiltModel
) -> None:
    """size is llama.cpp's logged model + KV + compute buffers (as Ollama 0.33), here within 10 % of
    harness.memory's estimate; the runner's resident memory is on /harness/runners and is bigger."""
    client.generate(model="oracle", prompt=ORACLE_PROMPT, raw=True, options={**GREEDY, "num_ctx": 100000})
    entry = next(m for m in client.ps().models if m.model == "oracle:latest")
    assert entry.context_length == 512
    assert entry.size_vram == 0
    estimate = estimate_model_memory(oracle_gguf.path, num_ctx=512)
    assert entry.size == pytest.approx(estimate.total_bytes, rel=0.1)
    runner = next(
        r
        for r in httpx.get(f"{engine.url}/harness/runners").json()["runners"]
        if r["model"] == "oracle:latest"
    )
    assert runner["buffer_bytes"] == entry.size
    assert runner["rss_bytes"] > 10 * entry.size  # a python process with llama.cpp linked in
    assert entry.details is not None and entry.details.family == "llama"
    assert entry.digest and entry.expires_at is not None
    assert "oracle:latest" in runner_pids(engine)


def test_changing_num_ctx_reloads_the_runner(client: ollama.Client, engine: EmbeddedEngine) -> None:
    client.generate(model="oracle", prompt="", options={"num_ctx": 256})
    first = runner_pids(engine)["oracle:latest"]
    client.generate(model="oracle", prompt="", options={"num_ctx": 256})
    assert runner_pids(engine)["oracle:latest"] == first
    client.generate(model="oracle", prompt="", options={"num_ctx": 128})
    assert runner_pids(engine)["oracle:latest"] != first
    assert next(m for m in client.ps().models if m.model == "oracle:latest").context_length == 128


def test_load_failure_carries_llama_cpp_cause(
    client: ollama.Client, engine: EmbeddedEngine, tiny_gguf: BuiltModel, no_context_length_gguf: Path
) -> None:
    """A model whose blob went bad after create fails on generate with llama-server's message, and the
    engine keeps serving other models."""
    create_from_gguf(client, "rotten", tiny_gguf.path)
    bad = no_context_length_gguf.read_bytes()
    bad_digest = hashlib.sha256(bad).hexdigest()
    (engine.models_dir / "blobs" / f"sha256-{bad_digest}").write_bytes(bad)
    manifest = engine.models_dir / "manifests" / "registry.ollama.ai" / "library" / "rotten" / "latest"
    manifest.write_text(manifest.read_text().replace(tiny_gguf.sha256, bad_digest))
    with pytest.raises(ollama.ResponseError) as caught:
        client.generate(model="rotten", prompt="hi")
    assert caught.value.status_code == 500
    assert caught.value.error.startswith(
        "llama-server process has terminated: exit status 1: error loading model: "
    )
    assert "key not found in model: llama.context_length" in caught.value.error
    assert (
        client.generate(model="oracle", prompt=ORACLE_PROMPT, raw=True, options=GREEDY).response
        == ORACLE_REPLY
    )


def test_a_prompt_longer_than_the_context_is_truncated_as_ollama_does(client: ollama.Client) -> None:
    """Ollama 0.33 keeps num_ctx / 2 + 3 prompt tokens: the first num_keep (and BOS), then the last ones
    (observed: 802 tokens, num_ctx 64 -> 35, num_ctx 128 -> 67)."""
    for num_ctx, kept in ((64, 35), (128, 67)):
        reply = client.generate(
            model="oracle", prompt="hello the " * 400, raw=True, options={**GREEDY, "num_ctx": num_ctx}
        )
        assert (reply.done, reply.prompt_eval_count) == (True, kept)


def test_pull_and_push_say_there_is_no_registry(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as pulled:
        client.pull("llama3.2")
    assert pulled.value.status_code == 500 and "no registry to pull from" in pulled.value.error
    assert "/api/create" in pulled.value.error  # what to do instead
    with pytest.raises(ollama.ResponseError) as pushed:
        client.push("tiny")
    assert pushed.value.status_code == 500 and "no registry to push to" in pushed.value.error


# --- context shift ---------------------------------------------------------------------------------------


def test_generation_past_the_context_shifts_it_as_ollama_does(client: ollama.Client) -> None:
    """With num_ctx 128 (llama.cpp makes the slot 256), 300 tokens: the runner drops the older half of the
    context when it fills and goes on, as Ollama 0.33's llama-server (`--context-shift`) does."""
    reply = client.generate(
        model="tiny", prompt="hello", raw=True, options={**GREEDY, "num_ctx": 128, "num_predict": 300}
    )
    assert (reply.done_reason, reply.eval_count) == ("length", 300)


def test_generation_without_num_predict_stops_at_ten_contexts(client: ollama.Client) -> None:
    """Ollama 0.33 ends a generation without num_predict at 10 x num_ctx tokens, done_reason "length"."""
    reply = client.generate(model="tiny", prompt="hello", raw=True, options={**GREEDY, "num_ctx": 128})
    assert (reply.done_reason, reply.eval_count) == ("length", 1280)


def test_settings_route_reports_the_scheduler_settings_a_client_cannot_see(engine: EmbeddedEngine) -> None:
    """GET /harness/settings (not Ollama's API): what the suites ask instead of assuming a queue; the client's
    `scheduler_settings` reads it, and is None where there is no such route."""
    settings = httpx.get(f"{engine.url}/harness/settings").json()
    assert settings["num_parallel"] >= 1 and settings["max_queue"] >= 1
    with OllamaClient(engine.host, timeout=30) as harness_client:
        assert harness_client.scheduler_settings() == {
            "num_parallel": settings["num_parallel"],
            "max_queue": settings["max_queue"],
        }
    with OllamaClient("127.0.0.1:9", timeout=5) as nowhere:
        assert nowhere.scheduler_settings() is None
