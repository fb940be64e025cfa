"""Fixtures shared by the test packages (tests/engine, tests/faults): fixture GGUF files from the cache."""

from __future__ import annotations

import pytest

from harness.gguf.build import BuiltModel, build_cached
from harness.gguf.spec import load_profile


@pytest.fixture(scope="session")
def tiny_gguf() -> BuiltModel:
    return build_cached(load_profile("tiny"))


@pytest.fixture(scope="session")
def long_gguf() -> BuiltModel:
    """The tiny model with a 4096-token context: long generations, for concurrency tests and generations
    long enough to be interrupted."""
    return build_cached(load_profile("tiny").replace(name="tiny-long", context_length=4096))
