"""The embedding endpoints of the embedded engine (/api/embed, /api/embeddings, /v1/embeddings) against a
real engine and the fixture GGUFs, through raw httpx and the official `ollama` client; and that a model
which served embeddings still gives the oracle's exact greedy reply."""

from __future__ import annotations

import base64
import math

import httpx
import numpy as np
import ollama
import pytest

from harness.engine import EmbeddedEngine
from harness.engine.embed import EmbeddingError, normalize, raw_legacy_embeddings, reduce_dimensions
from harness.engine.scheduler import LoadOptions
from harness.testing.helpers import runner_pids

from .conftest import GREEDY, ORACLE_PROMPT, ORACLE_REPLY, post

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("tiny_and_oracle")]

EMBEDDING_LENGTH = 64  # llama.embedding_length of the tiny and oracle fixtures
CONTEXT_LENGTH = 512  # their llama.context_length: the engine's num_ctx is capped to it
LONG_INPUT = "hello " * 600  # about 600 tokens: over the context


def embed(engine: EmbeddedEngine, **body: object) -> httpx.Response:
    return post(engine, "/api/embed", json={"model": "tiny", **body})


def norm(vector: list[float]) -> float:
    return math.sqrt(sum(value * value for value in vector))


def close(a: list[float], b: list[float], tolerance: float = 1e-5) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= tolerance for x, y in zip(a, b, strict=True))


# --- /api/embed ------------------------------------------------------------------------------------------


def test_embed_one_input(engine: EmbeddedEngine, client: ollama.Client) -> None:
    answer = client.embed(model="tiny", input="why is the sky blue?")
    assert answer.model == "tiny"
    assert len(answer.embeddings) == 1
    vector = list(answer.embeddings[0])
    assert len(vector) == EMBEDDING_LENGTH
    assert norm(vector) == pytest.approx(1.0, abs=1e-5)
    assert answer.prompt_eval_count and answer.prompt_eval_count > 1
    assert answer.total_duration and answer.load_duration is not None
    assert answer.total_duration >= answer.load_duration


def test_embed_batch_equals_single_inputs_and_is_deterministic(engine: EmbeddedEngine) -> None:
    texts = ["why is the sky blue?", "why is the grass green?", "a"]
    batch = embed(engine, input=texts).json()
    singles = [embed(engine, input=text).json() for text in texts]
    assert len(batch["embeddings"]) == len(texts)
    for vector, single in zip(batch["embeddings"], singles, strict=True):
        assert close(vector, single["embeddings"][0])
    assert batch["prompt_eval_count"] == sum(single["prompt_eval_count"] for single in singles)
    assert embed(engine, input=texts).json()["embeddings"] == batch["embeddings"]
    first, second = batch["embeddings"][:2]
    assert not close(first, second, 1e-3)


def test_embed_empty_input_loads_the_model(engine: EmbeddedEngine) -> None:
    for empty in ("", [], None):
        answer = post(engine, "/api/embed", json={"model": "oracle", "input": empty, "keep_alive": "1m"})
        assert answer.status_code == 200
        assert answer.json() == {"model": "oracle", "embeddings": []}
    loaded = [entry["name"] for entry in httpx.get(f"{engine.url}/api/ps").json()["models"]]
    assert "oracle:latest" in loaded


def test_embed_errors(engine: EmbeddedEngine) -> None:
    for bad in (5, [1, 2], ["a", None], {"text": "a"}):
        answer = embed(engine, input=bad)
        assert (answer.status_code, answer.json()) == (400, {"error": "invalid input type"})
    missing = post(engine, "/api/embed", json={"model": "no-such-model", "input": "a"})
    assert (missing.status_code, missing.json()) == (404, {"error": "model 'no-such-model' not found"})
    with pytest.raises(ollama.ResponseError) as raised:
        ollama.Client(host=engine.url).embed(model="no-such-model", input="a")
    assert raised.value.status_code == 404
    wrong_type = embed(engine, input="a", dimensions="8")
    assert wrong_type.status_code == 400
    assert wrong_type.json()["error"] == (
        "json: cannot unmarshal string into Go struct field EmbedRequest.dimensions of type int"
    )


def test_embed_over_the_context_truncates_or_refuses(engine: EmbeddedEngine) -> None:
    refused = embed(engine, input=LONG_INPUT, truncate=False)
    assert refused.status_code == 400
    assert refused.json() == {"error": "the input length exceeds the context length"}
    truncated = embed(engine, input=LONG_INPUT).json()
    assert len(truncated["embeddings"][0]) == EMBEDDING_LENGTH
    # cut to the context less one token each for BOS and EOS (Ollama's count), then BOS added again:
    # the embedding of the input's first 510 tokens, "hello" 510 times
    assert truncated["prompt_eval_count"] == CONTEXT_LENGTH - 1
    first_tokens = embed(engine, input=" ".join(["hello"] * (CONTEXT_LENGTH - 2))).json()
    assert first_tokens["prompt_eval_count"] == CONTEXT_LENGTH - 1
    assert close(truncated["embeddings"][0], first_tokens["embeddings"][0])
    assert truncated == {**embed(engine, input=LONG_INPUT, truncate=True).json(), **_durations(truncated)}


def _durations(answer: dict[str, object]) -> dict[str, object]:
    return {key: answer[key] for key in ("total_duration", "load_duration")}


def test_embed_dimensions(engine: EmbeddedEngine) -> None:
    full = embed(engine, input="dimensions").json()["embeddings"][0]
    cut = embed(engine, input="dimensions", dimensions=16).json()["embeddings"][0]
    assert len(cut) == 16 and norm(cut) == pytest.approx(1.0, abs=1e-5)
    assert close(cut, [value / norm(full[:16]) for value in full[:16]])
    for ignored in (0, -3, EMBEDDING_LENGTH, 1000):
        assert close(embed(engine, input="dimensions", dimensions=ignored).json()["embeddings"][0], full)


def test_vector_maths() -> None:
    assert np.allclose(normalize([3.0, 4.0]), [0.6, 0.8])
    assert normalize([0.0, 0.0]).tolist() == [0.0, 0.0]
    with pytest.raises(EmbeddingError, match="NaN or Inf"):
        normalize([1.0, float("nan")])
    assert np.allclose(reduce_dimensions(np.array([3.0, 4.0, 12.0], dtype=np.float32), 2), [0.6, 0.8])
    assert raw_legacy_embeddings({"general.architecture": "nomic-bert", "nomic-bert.pooling_type": 1})
    assert not raw_legacy_embeddings({"general.architecture": "bert", "bert.pooling_type": 1})
    assert not raw_legacy_embeddings({"general.architecture": "llama"})


# --- /api/embeddings (legacy) ----------------------------------------------------------------------------


def test_legacy_embeddings(engine: EmbeddedEngine, client: ollama.Client) -> None:
    answer = client.embeddings(model="tiny", prompt="why is the sky blue?")
    vector = list(answer.embedding)
    assert len(vector) == EMBEDDING_LENGTH
    # llama-server's own L2 normalization (Ollama passes the runner's vector on)
    assert norm(vector) == pytest.approx(1.0, abs=1e-5)
    assert close(vector, embed(engine, input="why is the sky blue?").json()["embeddings"][0])
    assert post(engine, "/api/embeddings", json={"model": "tiny", "prompt": ""}).json() == {"embedding": []}
    missing = post(engine, "/api/embeddings", json={"model": "nope", "prompt": "a"})
    assert (missing.status_code, missing.json()) == (404, {"error": "model 'nope' not found"})
    too_long = post(engine, "/api/embeddings", json={"model": "tiny", "prompt": LONG_INPUT})
    assert (too_long.status_code, too_long.json()) == (
        500,
        {"error": "the input length exceeds the context length"},
    )


# --- /v1/embeddings --------------------------------------------------------------------------------------


def test_openai_embeddings_shape_and_base64(engine: EmbeddedEngine) -> None:
    native = embed(engine, input=["one", "two"]).json()
    answer = post(engine, "/v1/embeddings", json={"model": "tiny", "input": ["one", "two"]}).json()
    assert answer["object"] == "list" and answer["model"] == "tiny"
    assert [(item["object"], item["index"]) for item in answer["data"]] == [
        ("embedding", 0),
        ("embedding", 1),
    ]
    assert [item["embedding"] for item in answer["data"]] == native["embeddings"]
    tokens = native["prompt_eval_count"]
    assert answer["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    encoded = post(
        engine, "/v1/embeddings", json={"model": "tiny", "input": "one", "encoding_format": "BASE64"}
    ).json()
    decoded = np.frombuffer(base64.b64decode(encoded["data"][0]["embedding"]), dtype="<f4")
    assert decoded.tolist() == np.asarray(native["embeddings"][0], dtype=np.float32).tolist()
    short = post(engine, "/v1/embeddings", json={"model": "tiny", "input": "one", "dimensions": 8}).json()
    assert len(short["data"][0]["embedding"]) == 8


def test_openai_embeddings_errors(engine: EmbeddedEngine) -> None:
    def error(body: dict[str, object]) -> tuple[int, dict[str, object]]:
        answer = post(engine, "/v1/embeddings", json=body)
        return answer.status_code, answer.json()["error"]

    for body in ({"model": "tiny"}, {"model": "tiny", "input": []}):
        assert error(body) == (
            400,
            {"message": "invalid input", "type": "invalid_request_error", "param": None, "code": None},
        )
    status, message = error({"model": "tiny", "input": "a", "encoding_format": "int8"})
    assert status == 400
    assert (
        message["message"]
        == "Invalid value for 'encoding_format' = int8. Supported values: ['float', 'base64']."
    )
    status, message = error({"model": "tiny", "input": [1]})
    assert (status, message["message"]) == (400, "invalid input type")
    status, message = error({"model": "nope", "input": "a"})
    assert (status, message["message"]) == (404, "model 'nope' not found")
    empty = post(engine, "/v1/embeddings", json={"model": "tiny", "input": ""}).json()
    assert len(empty["data"]) == 1 and len(empty["data"][0]["embedding"]) == EMBEDDING_LENGTH


# --- completions on a model that served embeddings ------------------------------------------------------


def test_embedding_runners_serve_completions(engine: EmbeddedEngine, client: ollama.Client) -> None:
    base = LoadOptions(num_ctx=512, num_batch=512, num_thread=1)
    with_embeddings = LoadOptions(num_ctx=512, num_batch=512, num_thread=1, embedding=True)
    assert with_embeddings.serves(base) and with_embeddings.serves(with_embeddings)
    assert not base.serves(with_embeddings)
    assert not with_embeddings.serves(LoadOptions(num_ctx=256, num_batch=512, num_thread=1))
    client.generate(model="oracle", prompt="", keep_alive=0)  # unload whatever runner it had
    client.generate(model="oracle", prompt="", keep_alive="1m")
    completions_only = runner_pids(engine)["oracle:latest"]
    client.embed(model="oracle", input="x", keep_alive="1m")  # reloads with embeddings on
    embedding_runner = runner_pids(engine)["oracle:latest"]
    assert embedding_runner != completions_only
    client.generate(model="oracle", prompt="", keep_alive="1m")
    assert runner_pids(engine)["oracle:latest"] == embedding_runner


def test_generate_and_chat_unchanged_after_embeddings(engine: EmbeddedEngine, client: ollama.Client) -> None:
    assert len(client.embed(model="oracle", input=["hello the", "x"]).embeddings) == 2
    reply = client.generate(model="oracle", prompt=ORACLE_PROMPT, raw=True, options=GREEDY, stream=False)
    assert reply.response == ORACLE_REPLY
    chat = client.chat(model="oracle", messages=[{"role": "user", "content": ORACLE_PROMPT}], options=GREEDY)
    assert chat.message.content == ORACLE_REPLY
    assert len(client.embeddings(model="oracle", prompt="hello the").embedding) == EMBEDDING_LENGTH
    again = client.generate(model="oracle", prompt=ORACLE_PROMPT, raw=True, options=GREEDY, stream=False)
    assert again.response == ORACLE_REPLY
