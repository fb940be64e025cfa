"""Fixtures shared by the test packages (tests/engine, tests/faults): fixture GGUF files from the cache."""

from __future__ import annotations

import os
import signal

import pytest

from harness.gguf.build import BuiltModel, build_cached
from harness.gguf.spec import load_profile


def pytest_configure(config: pytest.Config) -> None:
    """Give the processes the tests start a default SIGINT, as a terminal's foreground job has.

    A shell without job control (CI scripts, `cmd &`) starts background jobs with SIGINT ignored; the runs
    the tests start would inherit that, and the Ctrl-C tests would wait on a signal that never lands.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    # The engines' runners sleep at once instead of spinning: these tests share two cores with each other
    # (harness/engine/runner.py OPENMP_SPIN_COUNT says why that is faster on a loaded machine).
    os.environ.setdefault("GOMP_SPINCOUNT", "0")


@pytest.fixture(scope="session")
def tiny_gguf() -> BuiltModel:
    return build_cached(load_profile("tiny"))


@pytest.fixture(scope="session")
def long_gguf() -> BuiltModel:
    """The tiny model with a 4096-token context: long generations, for concurrency tests and generations
    long enough to be interrupted."""
    return build_cached(load_profile("tiny").replace(name="tiny-long", context_length=4096))
