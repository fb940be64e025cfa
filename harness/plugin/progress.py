"""Progress of a suites session on pytest's terminal: model set-up (GGUF from the cache or built, blob
upload bytes, Ollama's create statuses) and every quality prompt as it is graded (item, verdict, running
accuracy).

How much shows depends on where the output goes, so that CI logs are not flooded (a status is one line
rewritten in place; a step is a quality prompt graded):

| output | status | step | note |
|---|---|---|---|
| a terminal | shown | shown as the status (a line with -v) | a line |
| not a terminal (a CI log) | - | a line with -v | a line with -v |
| -q | - | - | - |

Writes go around pytest's output capture (as its live logging does), on lines of their own; pytest's next
result starts a fresh line (`currentfspath` reset).
"""

from __future__ import annotations

from typing import Any

import pytest


class TerminalProgress:
    """`harness.progress.Progress` on pytest's terminal reporter."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.reporter: Any = config.pluginmanager.get_plugin("terminalreporter")
        verbosity = config.get_verbosity()
        terminal = self.reporter is not None and bool(self.reporter.isatty)
        self.live = terminal and verbosity >= 0  # statuses, rewritten in place
        self.lines = self.reporter is not None and (verbosity > 0 or (terminal and verbosity == 0))
        self.steps_as_lines = self.reporter is not None and verbosity > 0
        self._showing = False

    def _write(self, write: Any) -> None:
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        if capture is None:
            write()
            return
        with capture.global_and_fixture_disabled():
            write()

    def step(self, text: str) -> None:
        if self.steps_as_lines:
            self._line(text)
        else:
            self.update(text)

    def update(self, text: str) -> None:
        if self.live:

            def rewrite() -> None:
                if not self._showing:
                    self.reporter.ensure_newline()
                self.reporter.rewrite(f"  {text}", erase=True)
                self._showing = True

            self._write(rewrite)

    def note(self, text: str) -> None:
        if self.lines:
            self._line(text)

    def _line(self, text: str) -> None:
        def write() -> None:
            if self._showing:
                self.reporter.rewrite(f"  {text}", erase=True)
                self.reporter.write("\n")
                self._showing = False
            else:
                self.reporter.ensure_newline()
                self.reporter.write_line(f"  {text}")
            self.reporter.currentfspath = None  # pytest's next result starts a fresh line

        self._write(write)

    def close(self) -> None:
        """Keep the last status as a line (pytest counts the width of its current line, so no erasing)."""
        if self._showing:

            def end() -> None:
                self.reporter.write("\n")
                self.reporter.currentfspath = None
                self._showing = False

            self._write(end)
