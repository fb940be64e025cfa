"""The hooks of an active harness session (`HarnessPlugin`), and what the scale-out plugin shares with it.

`activate` (harness.plugin.entry) registers one `HarnessPlugin` per pytest run, or a `ScaleOutPlugin`
(harness.plugin.scale_out) for several hosts or pytest-xdist. The plugin starts the session at the first test
that needs a server, records every outcome, stops the run when the server dies, and finishes the run record.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable, Generator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import pytest

from harness.errors import HarnessError
from harness.plugin.options import (
    SuiteOptions,
    options_from_pytest,
)
from harness.plugin.progress import TerminalProgress
from harness.server_time import ServerTimeLog

if TYPE_CHECKING:
    from harness.plugin.session import HarnessSession

EXIT_CANNOT_START = 2
DEFAULT_TEST_TIMEOUT_S = 120.0
HARNESS_FIXTURES = ("harness_session", "ollama_client", "model_under_test", "fixture_models")


def log_server_time(session: HarnessSession) -> ServerTimeLog:
    """Log the time every request of the session's client spends inside the server (harness.server_time)."""
    log = ServerTimeLog()
    if session.client is not None:
        session.client.on_completion = log.add
        session.client.on_request = log.add_request
    return log


def write_server_time(session: HarnessSession, log: ServerTimeLog) -> None:
    """Write the session's "requests" records (one per model) into its run record."""
    for record in log.records():
        session.record(record)


def suite_of(nodeid: str) -> str:
    """`suites/test_math.py::test_x` -> "math"."""
    stem = Path(nodeid.split("::", 1)[0]).stem
    return stem.removeprefix("test_")


class HarnessPlugin:
    """The hooks of an active harness session (registered by `activate`)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.harness: HarnessSession | None = None  # once started
        self.interrupted: str | None = None
        self.summary: str | None = None
        self.model_under_test: str | None = None
        self.server_time: ServerTimeLog | None = None
        self.collected: list[str] = []  # node ids in the order they run
        self.reported: set[str] = set()  # node ids with an outcome record
        self._previous_sigterm: Callable[[int, FrameType | None], Any] | int | None = None
        self._sessionstart_seen = False

    # -------------------------------------------------------------------------------------------- start

    def start(self) -> HarnessSession:
        """Start the session (run folder, server); raises HarnessError."""
        if self.harness is None:
            # lazy: pytest loads this plugin in every run; a session's modules load when it starts
            from harness.plugin.session import (
                HarnessSession,  # imports the client and the engine only when active
            )

            started = time.perf_counter()
            options = options_from_pytest(self.config)
            self.harness = HarnessSession.start(options, suites=[str(arg) for arg in self.config.args])
            self.harness.show_progress(TerminalProgress(self.config))
            self.harness.recorder.update({"session_start_s": round(time.perf_counter() - started, 6)})
            self.server_time = log_server_time(self.harness)
            if options.matrix:
                # lazy: pytest loads this plugin in every run; a session's modules load when it starts
                from harness.plugin.matrix import matrix_meta

                self.harness.recorder.update({"matrix": matrix_meta(options.matrix)})
        return self.harness

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self._sessionstart_seen = True
        self._start_or_exit()

    def _start_or_exit(self) -> None:
        if self.config.option.collectonly:
            return
        try:
            self.start()
        except HarnessError as error:
            pytest.exit(f"ollama-harness cannot start: {error}", returncode=EXIT_CANNOT_START)
        self._install_sigterm()

    def _start_late(self) -> None:
        """Start a session activated after pytest's session start (`pytest --pyargs harness.data.suites`
        finds the suites' conftest only while collecting), and print the header it missed."""
        self._sessionstart_seen = True
        self._start_or_exit()
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        lines = self.pytest_report_header(self.config)
        if reporter is not None and lines:
            for line in lines:
                reporter.write_line(line)

    def _install_sigterm(self) -> None:
        """SIGTERM ends the run like Ctrl-C: fixtures clean up and the run is kept, marked incomplete."""

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            raise KeyboardInterrupt("SIGTERM")

        with contextlib.suppress(ValueError):  # not the main thread
            self._previous_sigterm = signal.signal(signal.SIGTERM, on_sigterm)

    def _restore_sigterm(self) -> None:
        """Put back the SIGTERM handler `_install_sigterm` replaced."""
        if self._previous_sigterm is not None:
            with contextlib.suppress(ValueError):
                signal.signal(signal.SIGTERM, self._previous_sigterm)

    def pytest_report_header(self, config: pytest.Config) -> list[str] | None:
        harness = self.harness
        if harness is None or harness.server is None:
            return None
        options = harness.options
        if options.model:
            under_test = f"existing model {options.model}"
        elif options.gguf:
            under_test = f"GGUF {options.gguf}"
        else:
            under_test = f"fixture profile {options.profile!r} (built, created and deleted by the run)"
        return [
            f"ollama-harness: server: {harness.server.how}",
            f"ollama-harness: server version {harness.server_version}, engine kind {harness.server.kind}",
            f"ollama-harness: model under test: {under_test}",
            f"ollama-harness: run folder: {harness.recorder.path}",
        ]

    # -------------------------------------------------------------------------------------------- collection

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        """--harness-matrix: every test of the model under test runs once per tensor type (a session-scoped
        parameter, so each type's model is set up once and its tests run together)."""
        if "matrix_type" not in metafunc.fixturenames:
            return
        options = self.harness.options if self.harness is not None else None
        matrix = options.matrix if options is not None else ()
        if not matrix and self.harness is None:
            with contextlib.suppress(HarnessError):
                matrix = options_from_pytest(self.config).matrix
        if matrix:
            metafunc.parametrize("matrix_type", matrix, indirect=True, scope="session", ids=list(matrix))

    def current_options(self) -> SuiteOptions | None:
        """The session's options once it started (ScaleOutPlugin: before any host is reached)."""
        return self.harness.options if self.harness is not None else None

    def session_for(self, host: str | None) -> HarnessSession:
        """The session of `host` (one host here: the session; ScaleOutPlugin: one per host)."""
        return self.start()

    @pytest.hookimpl(trylast=True)  # after pytest's own reordering by session-scoped parameters
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        if not self._sessionstart_seen:
            self._start_late()
        # Cases that may kill the server (broken files: Ollama 0.24 dies on some) run last, so that a server
        # they kill costs only what comes after them, never the quality, load or memory suites.
        items[:] = destructive_last(items)
        options = self.current_options()
        for item in items:
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(DEFAULT_TEST_TIMEOUT_S))
            if options is None:
                continue
            fixture_weights = item.get_closest_marker("fixture_weights")
            if fixture_weights is not None and not options.uses_fixture_model:
                reason = fixture_weights.args[0] if fixture_weights.args else "it needs the fixture models"
                item.add_marker(pytest.mark.skip(reason=f"--harness-model/--harness-gguf given: {reason}"))
            if item.get_closest_marker("quality") is not None and options.uses_fixture_model:
                item.add_marker(
                    pytest.mark.xfail(
                        strict=True,
                        reason=f"fixture profile {options.profile!r} is not a language model: the grader "
                        "must score it about zero and the suite must fail (a pass would mean a grading bug)",
                    )
                )

    # -------------------------------------------------------------------------------------------- running

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        harness = self.harness
        if harness is not None and harness.server_down is not None and uses_server(item):
            pytest.fail(f"not run: {harness.server_down}", pytrace=False)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        harness = self.harness
        if harness is not None and report.failed and uses_server(item) and not item.session.shouldstop:
            down = harness.check_server()  # the one already found (by the test itself), or found now
            if down is not None:
                item.session.shouldstop = f"{down}; the remaining tests were not run"
        return report

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.collected = [item.nodeid for item in session.items]

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        harness = self.harness
        if harness is None:
            return
        record = self.outcome_record(report)
        if record is not None:
            self.reported.add(report.nodeid)
            harness.record(record)

    def outcome_record(self, report: pytest.TestReport) -> dict[str, Any] | None:
        """The "test" record of a report that ends a test's outcome (None for the others)."""
        final = (
            report.when == "call"
            or (report.when == "setup" and not report.passed)
            or (report.when == "teardown" and report.failed)
        )
        if not final:
            return None
        outcome: str = report.outcome
        if hasattr(report, "wasxfail"):
            outcome = "xfailed" if report.skipped else "xpassed"
        record: dict[str, Any] = {
            "kind": "test",
            "nodeid": report.nodeid,
            "phase": report.when,
            "outcome": outcome,
            "duration_s": round(report.duration, 6),
            "suite": suite_of(report.nodeid),
            "model": self.model_under_test,
        }
        if report.failed or report.skipped:
            record["message"] = short_message(report)
        if hasattr(report, "wasxfail"):
            record["xfail_reason"] = report.wasxfail
        if report.user_properties:
            record["properties"] = dict(report.user_properties)
        return record

    # -------------------------------------------------------------------------------------------- end

    def pytest_keyboard_interrupt(self, excinfo: pytest.ExceptionInfo[BaseException]) -> None:
        value = excinfo.value
        if isinstance(value, pytest.exit.Exception):
            self.interrupted = f"stopped: {value.msg}"
        elif "SIGTERM" in str(value):
            self.interrupted = "interrupted (SIGTERM)"
        elif isinstance(value, pytest.Session.Interrupted):
            self.interrupted = f"stopped: {value}"
        else:
            self.interrupted = "interrupted (SIGINT)"

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        harness = self.harness
        self._restore_sigterm()
        if harness is None:
            return
        if self.server_time is not None:
            write_server_time(harness, self.server_time)
        if harness.server_down is not None:
            not_run = [nodeid for nodeid in self.collected if nodeid not in self.reported]
            if not_run:
                harness.record(not_run_finding(harness.server_down, not_run))
        reason: str | None = None
        if harness.server_down is not None:
            reason = harness.server_down
        elif self.interrupted is not None:
            reason = self.interrupted
        elif exitstatus not in (
            pytest.ExitCode.OK,
            pytest.ExitCode.TESTS_FAILED,
            pytest.ExitCode.NO_TESTS_COLLECTED,
        ):
            reason = (
                f"pytest ended with {pytest.ExitCode(exitstatus).name}"
                if exitstatus in {code.value for code in pytest.ExitCode}
                else f"pytest ended with status {exitstatus}"
            )
        harness.finish(status="incomplete" if reason else "complete", reason=reason)
        state = f"INCOMPLETE ({reason})" if reason else "complete"
        self.summary = f"run {harness.recorder.run_id} {state}: {harness.recorder.path}"

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.summary is not None:
            terminalreporter.write_sep("-", "ollama-harness")
            terminalreporter.write_line(self.summary)


def destructive_last(items: list[pytest.Item]) -> list[pytest.Item]:
    """The items in their order, those marked `destructive` moved to the end (in their own order)."""
    return sorted(items, key=lambda item: item.get_closest_marker("destructive") is not None)


def not_run_finding(server_down: str, not_run: list[str]) -> dict[str, Any]:
    """The "finding" record of the tests a dead server left unrun."""
    return {
        "kind": "finding",
        "finding": "not-run",
        "text": f"{len(not_run)} test(s) not run: {server_down}",
        "tests": not_run,
    }


def uses_server(item: pytest.Item) -> bool:
    names = getattr(item, "fixturenames", ())
    return any(name in names for name in HARNESS_FIXTURES)


def short_message(report: pytest.TestReport) -> str:
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2])
    text = report.longreprtext or ""
    lines = [line for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("E ")]
    return "\n".join((errors or lines)[-5:])[:1000]
