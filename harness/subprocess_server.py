"""`SubprocessServer`: the shared handle of an HTTP server run as a child process on 127.0.0.1.

A subclass says how to launch the child (`_launch`, which also sets `port`); the base gives `host`, `url`,
`pid`, waits until `GET /` answers (or the child exits, or time runs out: `ServerError` with the subclass's
hint), and stops it with SIGTERM, then SIGKILL. It is a context manager.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable
from types import TracebackType
from typing import TypeVar

import httpx

from harness.errors import ServerError
from harness.http_tls import verify_for

_Server = TypeVar("_Server", bound="SubprocessServer")


class SubprocessServer:
    """Base for a server in a child process: `with Server(...) as s:` gives s.host, s.url, s.pid."""

    name = "server"  # for messages: "the embedded engine", "the canned server"

    def __init__(self, *, start_timeout_s: float) -> None:
        self.start_timeout_s = start_timeout_s
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise ServerError(f"the {self.name} is not running", "use it as a context manager")
        return self.process.pid

    # --- what a subclass provides ---
    def _launch(self) -> subprocess.Popen[bytes]:
        """Start the child; set `self.port` before returning."""
        raise NotImplementedError

    def _is_ready(self, response: httpx.Response) -> bool:
        """Whether the answer to `GET /` means the server is up."""
        return response.status_code == 200

    def _hint(self) -> str:
        """Where to look when the server does not come up."""
        return "run it by hand to see its error"

    # --- lifecycle ---
    def start(self: _Server, while_starting: Callable[[], object] | None = None) -> _Server:
        """Launch the child and wait until it answers; on failure stop it and raise ServerError.
        `while_starting` is called between the two: work that can overlap the child's start."""
        self.process = self._launch()
        try:
            if while_starting is not None:
                while_starting()
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(
                    f"the {self.name} exited with status {self.process.returncode} before it was ready",
                    self._hint(),
                )
            with contextlib.suppress(httpx.HTTPError):
                if self._is_ready(httpx.get(self.url + "/", timeout=1.0, verify=verify_for(self.url))):
                    return
            time.sleep(0.05)
        raise ServerError(
            f"the {self.name} did not answer on {self.url} within {self.start_timeout_s:.0f} s", self._hint()
        )

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the child, SIGKILL it after `timeout` seconds."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout)

    def __enter__(self: _Server) -> _Server:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
