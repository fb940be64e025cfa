"""`/api/create` with `quantize` on the real engine: F32/F16 files re-typed at create (k-quants too), Ollama's
refusals."""

from __future__ import annotations

from pathlib import Path

import httpx
import ollama
import pytest

from harness.engine import EmbeddedEngine
from harness.gguf.build import BuiltModel, build_cached
from harness.gguf.spec import load_profile

from .conftest import ORACLE_PROMPT, ORACLE_REPLY, create_from_gguf

pytestmark = pytest.mark.timeout(120)
GREEDY = {"temperature": 0, "num_predict": 8}


@pytest.fixture(scope="module")
def oracle_f32() -> BuiltModel:
    return build_cached(load_profile("oracle").replace(tensor_type="f32"))


def _create(engine: EmbeddedEngine, path: Path, name: str, quantize: str) -> httpx.Response:
    """A non-streaming create of `path` with `quantize`, through the HTTP API."""
    digest = ollama.Client(host=engine.url).create_blob(path)
    body = {"model": name, "files": {"model.gguf": digest}, "quantize": quantize, "stream": False}
    return httpx.post(f"{engine.url}/api/create", json=body, timeout=60)


def test_quantize_to_q8_0_writes_a_new_model_layer_that_still_answers(
    engine: EmbeddedEngine, client: ollama.Client, oracle_f32: BuiltModel
) -> None:
    digest = client.create_blob(oracle_f32.path)
    statuses = [
        update.status
        for update in client.create(
            model="oracle-q8", files={"model.gguf": digest}, quantize="q8_0", stream=True
        )
    ]
    assert "quantizing F32 model to Q8_0" in statuses and statuses[-1] == "success"
    shown = client.show("oracle-q8")
    assert shown.details is not None and shown.details.quantization_level == "Q8_0"
    built_q8 = build_cached(load_profile("oracle").replace(tensor_type="q8_0"))
    assert f"creating new layer sha256:{built_q8.sha256}" in statuses  # the bytes the builder writes in Q8_0
    reply = client.generate("oracle-q8", ORACLE_PROMPT, raw=True, options=GREEDY)
    assert reply.response == ORACLE_REPLY


def test_quantize_from_an_existing_model_and_to_its_own_type(
    engine: EmbeddedEngine, client: ollama.Client, oracle_f32: BuiltModel
) -> None:
    create_from_gguf(client, "oracle-f32", oracle_f32.path)
    statuses = [
        u.status for u in client.create(model="oracle-f16", from_="oracle-f32", quantize="F16", stream=True)
    ]
    assert "quantizing F32 model to F16" in statuses
    shown = client.show("oracle-f16")
    assert shown.details is not None and shown.details.quantization_level == "F16"
    assert client.generate("oracle-f16", ORACLE_PROMPT, raw=True, options=GREEDY).response == ORACLE_REPLY
    same = [
        u.status for u in client.create(model="oracle-f32b", from_="oracle-f32", quantize="f32", stream=True)
    ]
    assert not any(status.startswith("quantizing") for status in same)  # already F32: nothing to do
    assert client.show("oracle-f32b").details.quantization_level == "F32"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("source_type", "quantize", "message"),
    [
        (
            "f32",
            "q4_0",
            "unsupported quantization type Q4_0 - supported types are F32, F16, Q4_K_S, Q4_K_M, Q8_0",
        ),
        ("q8_0", "f16", "quantization is only supported for F16, BF16 and F32 models"),
    ],
)
def test_refused_quantize_requests_get_a_500_naming_why(
    engine: EmbeddedEngine, client: ollama.Client, source_type: str, quantize: str, message: str
) -> None:
    source = build_cached(load_profile("tiny").replace(tensor_type=source_type))
    answer = _create(engine, source.path, f"refused-{source_type}", quantize)
    assert answer.status_code == 500 and answer.json() == {"error": message}
    assert f"refused-{source_type}:latest" not in {m.model for m in client.list().models}


@pytest.mark.parametrize("quantize", ["q4_K_M", "q4_K_S"])
def test_k_quants_load_in_llama_cpp_and_keep_the_oracles_reply(
    engine: EmbeddedEngine, client: ollama.Client, oracle_f32: BuiltModel, quantize: str
) -> None:
    """The oracle's 64-wide rows take the fallbacks (Q5_0, Q5_1, Q8_0); its margin keeps the exact reply."""
    name = f"oracle-{quantize.lower()}"
    statuses = [
        u.status
        for u in client.create(
            model=name,
            files={"model.gguf": client.create_blob(oracle_f32.path)},
            quantize=quantize,
            stream=True,
        )
    ]
    assert f"quantizing F32 model to {quantize.upper()}" in statuses and statuses[-1] == "success"
    shown = client.show(name)
    assert shown.details is not None and shown.details.quantization_level == quantize.upper()
    assert client.generate(name, ORACLE_PROMPT, raw=True, options=GREEDY).response == ORACLE_REPLY


def test_q4_k_m_of_a_512_wide_model_has_real_k_quant_blocks_and_answers(
    engine: EmbeddedEngine, client: ollama.Client
) -> None:
    f32 = build_cached(load_profile("so8t-lite").replace(tensor_type="f32"))
    create = _create(engine, f32.path, "so8t-q4km", "Q4_K_M")
    assert create.status_code == 200 and create.json() == {"status": "success"}
    listed = httpx.post(f"{engine.url}/api/show", json={"model": "so8t-q4km", "verbose": True}, timeout=60)
    types = {tensor["name"]: tensor["type"] for tensor in listed.json()["tensors"]}
    assert types["blk.0.attn_q.weight"] == "Q4_K" and types["output.weight"] == "Q6_K"
    assert types["blk.3.ffn_down.weight"] == "Q6_K" and types["blk.0.ffn_down.weight"] == "Q4_K"
    reply = client.generate("so8t-q4km", "the", raw=True, options=GREEDY)
    assert reply.done and reply.eval_count == GREEDY["num_predict"]
