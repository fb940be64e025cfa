"""Fixtures for the engine tests: real GGUF files from the builder, real engines in subprocesses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import ollama
import pytest

from harness.engine import EmbeddedEngine
from harness.gguf.build import BuiltModel, build_cached, write_gguf
from harness.gguf.plan import plan_gguf
from harness.gguf.spec import load_profile
from harness.testing import one_thread_engine

ORACLE_PROMPT = "hello the"
ORACLE_REPLY = " is two one."


@pytest.fixture(scope="session")
def oracle_gguf() -> BuiltModel:
    return build_cached(load_profile("oracle"))


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
    """A one-thread engine (harness.testing.one_thread_engine) on its own models folder."""
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
