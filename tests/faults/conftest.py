"""Fixtures for the fault-injection scenarios (issue 7): real GGUF files, real engines in subprocesses,
real sockets on 127.0.0.1. Every helper that waits has a bound on time."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.engine import EmbeddedEngine
from harness.gguf.build import BuiltModel
from harness.server.client import OllamaClient
from harness.testing.helpers import one_thread_engine

GEN = {"temperature": 0, "top_k": 1, "seed": 1}


def start_engine(models_dir: Path, env: dict[str, str] | None = None) -> EmbeddedEngine:
    """A started one-thread engine (harness.testing.helpers.one_thread_engine) on `models_dir`."""
    return one_thread_engine(models_dir, env).start()


def tree_snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """relative path -> (size, mtime_ns) of every file and folder under `root`."""
    snapshot = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            stat = path.lstat()
            snapshot[str(path.relative_to(root))] = (stat.st_size, stat.st_mtime_ns)
    return snapshot


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory, tiny_gguf: BuiltModel) -> Iterator[EmbeddedEngine]:
    """One engine per module with `tiny` created."""
    engine = start_engine(tmp_path_factory.mktemp("faults") / "models")
    try:
        with OllamaClient(engine.host, timeout=60) as client:
            client.create_model("tiny", gguf_path=tiny_gguf.path)
        yield engine
    finally:
        engine.stop()


class SilentServer:
    """A TCP server on 127.0.0.1 that accepts connections, reads what comes, and never answers: a hung
    Ollama. `accepted` counts connections; closing the server closes every socket it holds."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.accepted = 0
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            self._held.append(conn)  # held open, never read to the end, never answered

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() on Linux
        self.listener.close()
        for conn in self._held:
            conn.close()
        self._thread.join(5)


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    try:
        yield server
    finally:
        server.close()
