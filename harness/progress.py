"""Progress a person can see on long work, and silence where nobody watches.

Long operations (a blob's hashing and upload, a create, a load run, a quality suite) report to a `Progress`:
`update(text)` is a transient status that the next one replaces, `step(text)` one of many steps (a line where
the reader asked for detail, else a status), `note(text)` a line worth keeping. `NO_PROGRESS` drops all (the
default everywhere). `StreamProgress` writes to a stream: on a terminal the status is one line rewritten in
place (at most every `interval_s`) and notes are lines; when the stream is not a terminal (a CI log) statuses
are dropped and notes kept. The pytest plugin has its own (harness.plugin.progress: pytest's terminal
reporter, quiet under -q).
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from typing import Protocol, TextIO

CLEAR_LINE = "\r\x1b[K"


class Progress(Protocol):
    """Where long work reports how far it got."""

    def update(self, text: str) -> None:
        """A transient status line (replaced by the next one)."""

    def step(self, text: str) -> None:
        """One of many steps (a quality prompt graded): a line in detailed output, else a status."""

    def note(self, text: str) -> None:
        """A line worth keeping."""

    def close(self) -> None:
        """Clear the transient status."""


class NoProgress:
    """Reports nothing."""

    def update(self, text: str) -> None:
        pass

    def step(self, text: str) -> None:
        pass

    def note(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


NO_PROGRESS: Progress = NoProgress()


class StreamProgress:
    """Progress on a stream (default stderr): a live status line on a terminal, only notes otherwise."""

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        live: bool | None = None,
        interval_s: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.interval_s = interval_s
        self.clock = clock
        self._last = -float("inf")
        self._showing = False

    def update(self, text: str, *, force: bool = False) -> None:
        if not self.live:
            return
        now = self.clock()
        if not force and now - self._last < self.interval_s:
            return
        self._last = now
        width = shutil.get_terminal_size().columns - 1
        self.stream.write(CLEAR_LINE + text[:width])
        self.stream.flush()
        self._showing = True

    def step(self, text: str) -> None:
        self.update(text)

    def note(self, text: str) -> None:
        self.close()
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self._showing:
            self.stream.write(CLEAR_LINE)
            self.stream.flush()
            self._showing = False
