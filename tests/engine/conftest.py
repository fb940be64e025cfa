"""Fixtures for the engine tests: real GGUF files from the builder, real engines in subprocesses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import pytest

from harness.engine import EmbeddedEngine
from harness.gguf.build import BuiltModel, build_cached, write_gguf
from harness.gguf.plan import plan_gguf
from harness.gguf.spec import load_profile
from harness.testing.helpers import one_thread_engine

ORACLE_PROMPT = "hello the"
ORACLE_REPLY = " is two one."
GREEDY = {"temperature": 0, "top_k": 1, "seed": 1}


@pytest.fixture(scope="session")
def oracle_gguf() -> BuiltModel:
    return build_cached(load_profile("oracle"))


@pytest.fixture(scope="session")
def oracle_2k_gguf() -> BuiltModel:
    """The oracle with room for a tool list in its context."""
    return build_cached(load_profile("oracle").replace(context_length=2048))


@pytest.fixture(scope="session")
def no_context_length_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model without `llama.context_length`: llama.cpp refuses to load it."""
    plan = plan_gguf(load_profile("tiny").replace(seed=7))
    del plan.kvs["llama.context_length"]
    path = tmp_path_factory.mktemp("broken") / "no-ctx.gguf"
    write_gguf(plan, path)
    return path


def make_engine(
    tmp_path_factory: pytest.TempPathFactory, env: dict[str, str] | None = None
) -> EmbeddedEngine:
    """A one-thread engine (harness.testing.helpers.one_thread_engine) on its own models folder."""
    return one_thread_engine(tmp_path_factory.mktemp("models"), env)


def create_from_gguf(client: ollama.Client, name: str, path: Path, **fields: object) -> None:
    digest = client.create_blob(path)
    client.create(model=name, files={"model.gguf": digest}, **fields)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedEngine]:
    with make_engine(tmp_path_factory) as running:
        yield running


@pytest.fixture(scope="module")
def client(engine: EmbeddedEngine) -> ollama.Client:
    return ollama.Client(host=engine.url, timeout=60)


@pytest.fixture(scope="module")
def tiny_and_oracle(client: ollama.Client, tiny_gguf: BuiltModel, oracle_gguf: BuiltModel) -> None:
    """Models "tiny" (random weights) and "oracle" (known greedy reply) on the module's engine."""
    create_from_gguf(client, "tiny", tiny_gguf.path)
    create_from_gguf(client, "oracle", oracle_gguf.path)


def post(engine: EmbeddedEngine, path: str, **kwargs: object) -> httpx.Response:
    """POST to one of the engine's paths."""
    return httpx.post(f"{engine.url}{path}", timeout=60, **kwargs)  # type: ignore[arg-type]
