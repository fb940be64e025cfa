"""`logprobs` / `top_logprobs` on generate and chat, in Ollama's shape, from llama.cpp's probabilities."""

from __future__ import annotations

import json
import math

import httpx
import ollama
import pytest

from harness.engine import EmbeddedEngine

from .conftest import ORACLE_PROMPT, ORACLE_REPLY

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("tiny_and_oracle")]
GREEDY = {"temperature": 0, "num_predict": 8}


def test_generate_logprobs_follow_the_greedy_tokens(engine: EmbeddedEngine) -> None:
    body = {"model": "oracle", "prompt": ORACLE_PROMPT, "raw": True, "options": GREEDY, "stream": False}
    answer = httpx.post(
        f"{engine.url}/api/generate", json={**body, "logprobs": True, "top_logprobs": 3}
    ).json()
    assert answer["response"] == ORACLE_REPLY
    logprobs = answer["logprobs"]
    assert "".join(item["token"] for item in logprobs).startswith(ORACLE_REPLY)
    for item in logprobs:
        assert item["logprob"] <= 0 and len(item["top_logprobs"]) == 3
        top = [alternative["logprob"] for alternative in item["top_logprobs"]]
        assert top == sorted(top, reverse=True)
        assert item["top_logprobs"][0]["token"] == item["token"]  # greedy: the most likely token won
        assert math.isclose(top[0], item["logprob"], abs_tol=1e-6)
        if item["token"]:
            assert bytes(item["bytes"]).decode() == item["token"]
    plain = httpx.post(f"{engine.url}/api/generate", json={**body, "logprobs": True}).json()
    assert plain["logprobs"] and all("top_logprobs" not in item for item in plain["logprobs"])
    assert "logprobs" not in httpx.post(f"{engine.url}/api/generate", json=body).json()


def test_streamed_chat_chunks_carry_their_logprobs(client: ollama.Client) -> None:
    chunks = list(
        client.chat("oracle", [{"role": "user", "content": "hi"}], options=GREEDY, stream=True, logprobs=True)
    )
    with_text = [chunk for chunk in chunks if chunk.message.content]
    assert with_text and all(chunk.logprobs for chunk in with_text)
    assert all(chunk.logprobs[0].token == chunk.message.content for chunk in with_text)  # type: ignore[index]


def test_top_logprobs_out_of_range_is_ollamas_400(engine: EmbeddedEngine) -> None:
    for path, extra in (("/api/generate", {"prompt": "a"}), ("/api/chat", {"messages": []})):
        answer = httpx.post(f"{engine.url}{path}", json={"model": "oracle", "top_logprobs": 21, **extra})
        assert (answer.status_code, answer.json()) == (
            400,
            {"error": "top_logprobs must be between 0 and 20"},
        )


def test_openai_chat_logprobs_are_ollamas_entries_under_content(engine: EmbeddedEngine) -> None:
    body = {
        "model": "oracle",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0,
        "max_tokens": 4,
        "logprobs": True,
        "top_logprobs": 2,
    }
    choice = httpx.post(f"{engine.url}/v1/chat/completions", json=body, timeout=60).json()["choices"][0]
    content = choice["logprobs"]["content"]
    assert content and all(len(item["top_logprobs"]) == 2 and item["logprob"] <= 0 for item in content)
    assert "".join(item["token"] for item in content).startswith(choice["message"]["content"])
    with httpx.stream("POST", f"{engine.url}/v1/chat/completions", json={**body, "stream": True}) as stream:
        events = [line[6:] for line in stream.iter_lines() if line.startswith("data: {")]
    deltas = [json.loads(event)["choices"][0] for event in events]
    assert any(delta.get("logprobs") for delta in deltas if delta["delta"]["content"])
