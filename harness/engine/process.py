"""`EmbeddedEngine`: the engine in a subprocess on a free loopback port, as a context manager."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

import httpx
import psutil

from harness.subprocess_server import SubprocessServer


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedEngine(SubprocessServer):
    """`with EmbeddedEngine(models_dir=..., env={...}) as engine:` -> engine.url, engine.host, engine.pid.

    The server runs `python -m harness.engine.commands` in its own process; `env` adds OLLAMA_* settings.
    Exit stops it (SIGTERM, then SIGKILL) and kills any runner process still alive, so nothing is left behind.
    The server's log goes to `log_path` (a temp file unless given). The server dies with the thread that
    started it (PR_SET_PDEATHSIG), so start it from a thread that outlives its use (normally the main one).
    """

    name = "embedded engine"

    def __init__(
        self,
        models_dir: Path | str,
        env: Mapping[str, str] | None = None,
        *,
        startup_timeout: float = 30.0,
        log_path: Path | None = None,
        log_level: str = "info",
    ) -> None:
        super().__init__(start_timeout_s=startup_timeout)
        self.models_dir = Path(models_dir)
        self.env = dict(env or {})
        self.log_level = log_level
        self._own_log = log_path is None
        self.log_path = log_path or Path(tempfile.mkstemp(prefix="harness-engine-", suffix=".log")[1])
        self._known_children: dict[int, psutil.Process] = {}

    def _launch(self) -> subprocess.Popen[bytes]:
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
            return subprocess.Popen(
                command, env=env, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file
            )

    def _is_ready(self, response: httpx.Response) -> bool:
        return response.text == "Ollama is running"

    def _hint(self) -> str:
        return f"see its log: {self.log_path}"

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
        super().stop(timeout)
        for child in self._known_children.values():
            with contextlib.suppress(psutil.Error):
                child.kill()  # psutil checks the pid still names the same process
                child.wait(5)
        if self._own_log and self.process.returncode in (0, -signal.SIGTERM):
            self.log_path.unlink(missing_ok=True)  # a clean run's temp log is not worth keeping
