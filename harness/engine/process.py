"""`EmbeddedEngine`: the engine in a subprocess on a free loopback port, as a context manager."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import httpx
import psutil

from harness.errors import ServerError


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedEngine:
    """`with EmbeddedEngine(models_dir=..., env={...}) as engine:` -> engine.url, engine.host, engine.pid.

    The server runs `python -m harness.engine.commands` in its own process; `env` adds OLLAMA_* settings.
    Exit stops it (SIGTERM, then SIGKILL) and kills any runner process still alive, so nothing is left behind.
    The server's log goes to `log_path` (a temp file unless given). The server dies with the thread that
    started it (PR_SET_PDEATHSIG), so start it from a thread that outlives its use (normally the main one).
    """

    def __init__(
        self,
        models_dir: Path | str,
        env: Mapping[str, str] | None = None,
        *,
        startup_timeout: float = 30.0,
        log_path: Path | None = None,
        log_level: str = "info",
    ) -> None:
        self.models_dir = Path(models_dir)
        self.env = dict(env or {})
        self.startup_timeout = startup_timeout
        self.log_level = log_level
        self._own_log = log_path is None
        self.log_path = log_path or Path(tempfile.mkstemp(prefix="harness-engine-", suffix=".log")[1])
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._known_children: dict[int, psutil.Process] = {}

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def pid(self) -> int:
        assert self.process is not None, "engine not started"
        return self.process.pid

    def start(self) -> EmbeddedEngine:
        self.port = free_port()
        env = {**os.environ, **self.env}
        env.pop("OLLAMA_HOST", None)
        command = [
            sys.executable,
            "-m",
            "harness.engine.commands",
            "--host",
            self.host,
            "--models",
            str(self.models_dir),
            "--log-level",
            self.log_level,
        ]
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                command, env=env, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file
            )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(
                    f"the embedded engine exited during startup (status {self.process.returncode})",
                    f"see its log: {self.log_path}",
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url, timeout=1.0).text == "Ollama is running":
                    return self
            time.sleep(0.05)
        self.stop()
        raise ServerError(
            f"the embedded engine did not answer on {self.url} within {self.startup_timeout} s",
            f"see its log: {self.log_path}",
        )

    def runner_pids(self) -> list[int]:
        """Pids of the runner processes now alive (children of the engine)."""
        if self.process is None or self.process.poll() is not None:
            return []
        with contextlib.suppress(psutil.Error):
            children = psutil.Process(self.pid).children(recursive=True)
            self._known_children.update({child.pid: child for child in children})
            return [child.pid for child in children]
        return []

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the engine, SIGKILL it after `timeout`, then kill any runner still alive."""
        if self.process is None:
            return
        self.runner_pids()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for child in self._known_children.values():
            with contextlib.suppress(psutil.Error):
                child.kill()  # psutil checks the pid still names the same process
                child.wait(5)
        if self._own_log and self.process.returncode in (0, -signal.SIGTERM):
            self.log_path.unlink(missing_ok=True)  # a clean run's temp log is not worth keeping

    def __enter__(self) -> EmbeddedEngine:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
