"""The OpenAI-compatible endpoints (/v1) of the embedded engine, through raw httpx, against real engines and
the oracle fixture model, whose greedy continuation of `hello the` is known: each answer is compared with the
engine's own /api/chat or /api/generate answer for the same request."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import ollama
import pytest
from starlette.responses import StreamingResponse

from harness.engine import EmbeddedEngine
from harness.engine.openai_compat import translate_answer
from harness.engine.openai_translate import chat_chunk, chat_completion
from harness.gguf.build import BuiltModel

from .conftest import ORACLE_PROMPT, ORACLE_REPLY, create_from_gguf, make_engine

pytestmark = pytest.mark.timeout(120)

# Greedy through the OpenAI layer, and the same options as Ollama's layer hands them to /api/*.
GREEDY = {"temperature": 0, "seed": 1}
OLLAMA_GREEDY = {"temperature": 0, "top_p": 1.0, "seed": 1}
# `oracle-chat` joins the message contents, so these two messages render as the oracle prompt.
MESSAGES = [{"role": "user", "content": "hello"}, {"role": "user", "content": " the"}]


@pytest.fixture(scope="module", autouse=True)
def models(client: ollama.Client, oracle_gguf: BuiltModel) -> None:
    create_from_gguf(client, "oracle", oracle_gguf.path)
    client.create(
        model="oracle-chat", from_="oracle", template="{{ range .Messages }}{{ .Content }}{{ end }}"
    )


def post(engine: EmbeddedEngine, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{engine.url}{path}", timeout=60, **kwargs)


def sse_payloads(response: httpx.Response) -> list[str]:
    """The `data:` payloads of an SSE body, checking the framing: every event is `data: ...` + blank line."""
    assert response.headers["content-type"] == "text/event-stream"
    assert response.text.endswith("\n\n")
    events = response.text[:-2].split("\n\n")
    assert all(event.startswith("data: ") and "\n" not in event for event in events), events
    return [event.removeprefix("data: ") for event in events]


def streamed_chunks(response: httpx.Response) -> list[dict[str, Any]]:
    """The JSON chunks of a complete SSE stream, which must end with `[DONE]`."""
    payloads = sse_payloads(response)
    assert payloads[-1] == "[DONE]" and "[DONE]" not in payloads[:-1]
    return [json.loads(payload) for payload in payloads[:-1]]


def expected_usage(ollama_answer: dict[str, Any]) -> dict[str, int]:
    prompt, completion = ollama_answer["prompt_eval_count"], ollama_answer["eval_count"]
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def openai_error(message: str, error_type: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": None, "code": None}}


# --- chat completions ------------------------------------------------------------------------------------


def test_chat_completion_equals_api_chat(engine: EmbeddedEngine) -> None:
    native = post(
        engine,
        "/api/chat",
        json={"model": "oracle-chat", "messages": MESSAGES, "stream": False, "options": OLLAMA_GREEDY},
    ).json()
    assert native["message"]["content"] == ORACLE_REPLY
    answer = post(
        engine, "/v1/chat/completions", json={"model": "oracle-chat", "messages": MESSAGES, **GREEDY}
    )
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert re.fullmatch(r"chatcmpl-\d{1,3}", body["id"])
    assert body["object"] == "chat.completion" and body["system_fingerprint"] == "fp_ollama"
    assert body["model"] == "oracle-chat" and abs(body["created"] - time.time()) < 120
    assert body["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": ORACLE_REPLY}, "finish_reason": "stop"}
    ]
    assert body["usage"] == expected_usage(native) and body["usage"]["completion_tokens"] == 5


def test_chat_content_parts_are_messages_of_their_own(engine: EmbeddedEngine) -> None:
    parts = [{"type": "text", "text": "hello"}, {"type": "text", "text": " the"}]
    answer = post(
        engine,
        "/v1/chat/completions",
        json={"model": "oracle-chat", "messages": [{"role": "user", "content": parts}], **GREEDY},
    )
    assert answer.json()["choices"][0]["message"]["content"] == ORACLE_REPLY


def test_chat_max_tokens_and_stop(engine: EmbeddedEngine) -> None:
    cut = post(
        engine,
        "/v1/chat/completions",
        json={"model": "oracle-chat", "messages": MESSAGES, "max_tokens": 3, **GREEDY},
    ).json()
    assert cut["choices"][0]["message"]["content"] == " is two one"
    assert cut["choices"][0]["finish_reason"] == "length" and cut["usage"]["completion_tokens"] == 3
    stopped = post(
        engine,
        "/v1/chat/completions",
        json={"model": "oracle-chat", "messages": MESSAGES, "stop": " one", **GREEDY},
    ).json()
    assert stopped["choices"][0]["message"]["content"] == " is two"
    assert stopped["choices"][0]["finish_reason"] == "stop"


def test_chat_streaming_sse_framing_and_done(engine: EmbeddedEngine) -> None:
    answer = post(
        engine,
        "/v1/chat/completions",
        json={"model": "oracle-chat", "messages": MESSAGES, "stream": True, **GREEDY},
    )
    chunks = streamed_chunks(answer)
    assert len({chunk["id"] for chunk in chunks}) == 1 and re.fullmatch(r"chatcmpl-\d{1,3}", chunks[0]["id"])
    for chunk in chunks:
        assert chunk["object"] == "chat.completion.chunk" and chunk["system_fingerprint"] == "fp_ollama"
        assert chunk["model"] == "oracle-chat" and "usage" not in chunk
    # as Ollama 0.33's ChatWriter: the role in the first delta only, empty content left out later
    assert [chunk["choices"][0]["delta"].get("role") for chunk in chunks] == ["assistant"] + [None] * (
        len(chunks) - 1
    )
    assert chunks[-1]["choices"][0]["delta"] == {}
    assert "".join(chunk["choices"][0]["delta"].get("content", "") for chunk in chunks) == ORACLE_REPLY
    assert [chunk["choices"][0]["finish_reason"] for chunk in chunks] == [None] * (len(chunks) - 1) + ["stop"]


def test_chat_streaming_include_usage_and_length(engine: EmbeddedEngine) -> None:
    native = post(
        engine,
        "/api/chat",
        json={
            "model": "oracle-chat",
            "messages": MESSAGES,
            "stream": False,
            "options": {**OLLAMA_GREEDY, "num_predict": 3},
        },
    ).json()
    answer = post(
        engine,
        "/v1/chat/completions",
        json={
            "model": "oracle-chat",
            "messages": MESSAGES,
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": 3,
            **GREEDY,
        },
    )
    *content, final, usage_chunk = streamed_chunks(answer)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in [*content, final]) == " is two one"
    assert final["choices"][0]["finish_reason"] == "length" and "usage" not in final
    assert usage_chunk["choices"] == [] and usage_chunk["id"] == final["id"]
    assert usage_chunk["usage"] == expected_usage(native) and usage_chunk["usage"]["completion_tokens"] == 3


# --- completions -----------------------------------------------------------------------------------------


def test_completion_equals_api_generate(engine: EmbeddedEngine) -> None:
    native = post(
        engine,
        "/api/generate",
        json={"model": "oracle", "prompt": ORACLE_PROMPT, "stream": False, "options": OLLAMA_GREEDY},
    ).json()
    assert native["response"] == ORACLE_REPLY
    body = post(engine, "/v1/completions", json={"model": "oracle", "prompt": ORACLE_PROMPT, **GREEDY}).json()
    assert re.fullmatch(r"cmpl-\d{1,3}", body["id"])
    assert body["object"] == "text_completion" and body["system_fingerprint"] == "fp_ollama"
    assert body["model"] == "oracle" and isinstance(body["created"], int)
    assert body["choices"] == [{"text": ORACLE_REPLY, "index": 0, "finish_reason": "stop"}]
    assert body["usage"] == expected_usage(native)
    cut = post(
        engine,
        "/v1/completions",
        json={"model": "oracle", "prompt": ORACLE_PROMPT, "max_tokens": 3, **GREEDY},
    ).json()
    assert cut["choices"] == [{"text": " is two one", "index": 0, "finish_reason": "length"}]
    assert cut["usage"]["completion_tokens"] == 3
    stopped = post(
        engine,
        "/v1/completions",
        json={"model": "oracle", "prompt": ORACLE_PROMPT, "stop": [" one"], **GREEDY},
    ).json()
    assert stopped["choices"][0]["text"] == " is two"
    loaded = post(engine, "/v1/completions", json={"model": "oracle", "prompt": ""}).json()
    assert loaded["choices"] == [{"text": "", "index": 0, "finish_reason": "load"}]


def test_completion_streaming_with_usage(engine: EmbeddedEngine) -> None:
    native = post(
        engine,
        "/api/generate",
        json={"model": "oracle", "prompt": ORACLE_PROMPT, "stream": False, "options": OLLAMA_GREEDY},
    ).json()
    answer = post(
        engine,
        "/v1/completions",
        json={
            "model": "oracle",
            "prompt": ORACLE_PROMPT,
            "stream": True,
            "stream_options": {"include_usage": True},
            **GREEDY,
        },
    )
    *chunks, usage_chunk = streamed_chunks(answer)
    assert "".join(chunk["choices"][0]["text"] for chunk in chunks) == ORACLE_REPLY
    zero = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    assert all(chunk["object"] == "text_completion" and chunk["usage"] == zero for chunk in chunks)
    assert [chunk["choices"][0]["finish_reason"] for chunk in chunks][-2:] == [None, "stop"]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"] == expected_usage(native)
    plain = streamed_chunks(
        post(
            engine,
            "/v1/completions",
            json={"model": "oracle", "prompt": ORACLE_PROMPT, "stream": True, **GREEDY},
        )
    )
    assert all("usage" not in chunk for chunk in plain) and plain[-1]["choices"][0]["finish_reason"] == "stop"


# --- models ----------------------------------------------------------------------------------------------


def test_models_list_and_retrieve(engine: EmbeddedEngine) -> None:
    listing = httpx.get(f"{engine.url}/v1/models").json()
    assert listing["object"] == "list"
    entry = next(model for model in listing["data"] if model["id"] == "oracle:latest")
    assert entry["object"] == "model" and entry["owned_by"] == "library"
    assert abs(entry["created"] - time.time()) < 3600
    one = httpx.get(f"{engine.url}/v1/models/oracle").json()
    assert one == {"id": "oracle", "object": "model", "created": one["created"], "owned_by": "library"}
    missing = httpx.get(f"{engine.url}/v1/models/missing")
    assert missing.status_code == 404
    assert missing.json() == openai_error("model 'missing:latest' not found", "not_found_error")


def test_models_list_is_null_without_models(tmp_path_factory: pytest.TempPathFactory) -> None:
    with make_engine(tmp_path_factory) as empty:
        assert httpx.get(f"{empty.url}/v1/models").json() == {"object": "list", "data": None}


# --- errors ----------------------------------------------------------------------------------------------


def test_unknown_model_is_404_streaming_or_not(engine: EmbeddedEngine) -> None:
    for stream in (False, True):
        answer = post(
            engine, "/v1/chat/completions", json={"model": "missing", "messages": MESSAGES, "stream": stream}
        )
        assert answer.status_code == 404 and answer.headers["content-type"] == "application/json"
        assert answer.json() == openai_error("model 'missing' not found", "not_found_error")
        answer = post(engine, "/v1/completions", json={"model": "missing", "prompt": "x", "stream": stream})
        assert answer.status_code == 404
        assert answer.json() == openai_error("model 'missing' not found", "not_found_error")


CHAT_REQUEST_ERRORS = [
    ([], "json: cannot unmarshal array into Go value of type openai.ChatCompletionRequest"),
    ({"model": "oracle", "messages": []}, "[] is too short - 'messages'"),
    ({"model": "oracle"}, "[] is too short - 'messages'"),
    (
        {"model": "oracle", "messages": [{"role": "user", "content": 2}]},
        "invalid message content type: float64",
    ),
    ({"model": "oracle", "messages": [{"role": "user"}]}, "invalid message content type: <nil>"),
    (
        {"model": "oracle", "messages": ["hi"]},
        "json: cannot unmarshal string into Go struct field ChatCompletionRequest.messages"
        " of type openai.Message",
    ),
    (
        {"model": "oracle", "messages": MESSAGES, "temperature": "hot"},
        "json: cannot unmarshal string into Go struct field ChatCompletionRequest.temperature"
        " of type float64",
    ),
    (
        {"model": "oracle", "messages": MESSAGES, "max_tokens": 2.5},
        "json: cannot unmarshal number 2.5 into Go struct field ChatCompletionRequest.max_tokens of type int",
    ),
    (
        {"model": "oracle", "messages": [{"role": "user", "content": [{"type": "audio"}]}]},
        "invalid message format",
    ),
    (
        {
            "model": "oracle",
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}
            ],
        },
        "image URLs are not currently supported, please use base64 encoded data instead",
    ),
    (
        {
            "model": "oracle",
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": "data:;base64,aGk="}]}
            ],
        },
        "image_url content is not supported by the embedded engine",
    ),
    (
        {"model": "oracle", "messages": MESSAGES, "reasoning_effort": "extreme"},
        'invalid reasoning value: \'extreme\' (must be "high", "medium", "low", or "none")',
    ),
]


def test_chat_request_errors_are_400_invalid_request(engine: EmbeddedEngine) -> None:
    empty = post(engine, "/v1/chat/completions", content=b"")
    assert empty.status_code == 400 and empty.json() == openai_error("EOF", "invalid_request_error")
    malformed = post(engine, "/v1/chat/completions", content=b"{not json")
    assert malformed.status_code == 400 and malformed.json()["error"]["type"] == "invalid_request_error"
    for body, message in CHAT_REQUEST_ERRORS:
        answer = post(engine, "/v1/chat/completions", json=body)
        assert answer.status_code == 400, body
        assert answer.json() == openai_error(message, "invalid_request_error"), body


def test_engine_refusals_keep_ollamas_texts(engine: EmbeddedEngine) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    cases = [
        ("/v1/chat/completions", {"messages": MESSAGES}, 400, "model is required"),
        (
            "/v1/chat/completions",
            {"model": "oracle", "messages": MESSAGES, "tools": tools},
            400,
            "registry.ollama.ai/library/oracle:latest does not support tools",
        ),
        ("/v1/chat/completions", {"model": "missing", "messages": MESSAGES, "tools": tools}, 404, None),
        (
            "/v1/chat/completions",
            {"model": "oracle", "messages": MESSAGES, "reasoning": {"effort": "high"}},
            400,
            '"oracle" does not support thinking',
        ),
        (
            "/v1/completions",
            {"model": "oracle", "prompt": "x", "suffix": "y"},
            400,
            "registry.ollama.ai/library/oracle:latest does not support insert",
        ),
    ]
    for path, body, status, message in cases:
        answer = post(engine, path, json=body)
        assert answer.status_code == status, body
        error_type = "invalid_request_error" if status == 400 else "not_found_error"  # by status, as 0.33
        assert answer.json() == openai_error(message or "model 'missing' not found", error_type), body
    none = post(
        engine,
        "/v1/chat/completions",
        json={"model": "oracle-chat", "messages": MESSAGES, "reasoning_effort": "none"},
    )
    assert none.status_code == 200


def test_completion_request_errors(engine: EmbeddedEngine) -> None:
    cases = [
        ({"model": "oracle", "prompt": "x", "stop": ["a", 1]}, "invalid type for 'stop' field: float64"),
        (
            {"model": "oracle", "prompt": ["x"]},
            "json: cannot unmarshal array into Go struct field CompletionRequest.prompt of type string",
        ),
        (
            {"model": "oracle", "prompt": "x", "stream_options": {"include_usage": "yes"}},
            "json: cannot unmarshal string into Go struct field "
            "CompletionRequest.stream_options.include_usage of type bool",
        ),
    ]
    for body, message in cases:
        answer = post(engine, "/v1/completions", json=body)
        assert answer.status_code == 400, body
        assert answer.json() == openai_error(message, "invalid_request_error"), body


def test_engine_error_before_the_stream_keeps_its_status(engine: EmbeddedEngine) -> None:
    unconvertible = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "foo"}}}
    for path, body, status, text in (
        ("/v1/completions", {"model": "missing", "prompt": "hi"}, 404, "model 'missing' not found"),
        (
            "/v1/chat/completions",
            {
                "model": "oracle",
                "messages": [{"role": "user", "content": "hi"}],
                "response_format": unconvertible,
            },
            400,
            "JSON schema conversion failed:\\nUnrecognized schema",
        ),
    ):
        answer = post(engine, path, json={**body, "stream": True})
        assert answer.status_code == status and answer.headers["content-type"] == "application/json"
        error = answer.json()["error"]
        assert error["type"] == {400: "invalid_request_error", 404: "not_found_error"}[status]
        assert text in error["message"], answer.text


def test_error_after_the_stream_began_goes_in_band() -> None:
    """The translation of an engine stream that fails midway (a runner that dies cannot be timed from
    outside): the chunks so far, then OpenAI's error object, and no `[DONE]`."""

    async def ndjson() -> AsyncIterator[bytes]:
        yield b'{"model":"m","created_at":"2025-01-01T00:00:00+00:00","message":{"role":"assistant",'
        yield b'"content":"hi"},"done":false}\n'
        yield b'{"error":"llama runner process has terminated"}\n'

    async def body() -> str:
        answer = translate_answer(
            StreamingResponse(ndjson(), media_type="application/x-ndjson"),
            stream=True,
            include_usage=True,
            completion_id="chatcmpl-7",
            whole=chat_completion,
            make_chunk=chat_chunk,
        )
        assert isinstance(answer, StreamingResponse)
        pieces: list[bytes] = []
        async for piece in answer.body_iterator:
            assert isinstance(piece, bytes)
            pieces.append(piece)
        return b"".join(pieces).decode()

    events = asyncio.run(body()).split("\n\n")
    assert events[-1] == "" and len(events) == 3
    first = json.loads(events[0].removeprefix("data: "))
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": "hi"}
    assert json.loads(events[1].removeprefix("data: ")) == openai_error(
        "llama runner process has terminated", "api_error"
    )
