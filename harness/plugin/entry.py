"""The pytest plugin: options, the session (server, run record, models), fixtures, and result capture.

Installed as the `ollama_harness` pytest11 entry point, so its options exist in every pytest run, but it does
nothing until a suites folder activates it: `suites/conftest.py` calls `activate(config)`. An active session:

- opens `reports/<run-id>/` (harness.runs), reaches the server (harness.server: the named host, one already
  answering at the default address, or the embedded engine), reads its version, and says so in the header;
- records every test outcome, and lets tests record prompt, suite, load and memory results;
- stops the run at once, with one error naming the server, when the server stops answering;
- deletes the models it created (unless --keep-models), stops the engine it started, and marks the run
  complete, or incomplete with the reason (interrupted, server died, internal error).

Exit statuses are pytest's, plus: 2 when the session cannot start (a host the user named does not answer,
the --gguf file has check errors, a bad option): the message says why, without a traceback.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import pytest

from harness.config import load_config
from harness.errors import HarnessError
from harness.plugin.options import (
    DEFAULT_NUM_PREDICT,
    DEFAULT_PROFILE,
    DEFAULT_REQUEST_TIMEOUT_S,
    SuiteOptions,
    parse_threshold_flags,
    positive_int,
)
from harness.server_time import ServerTimeLog

if TYPE_CHECKING:
    from harness.plugin.session import HarnessSession

EXIT_CANNOT_START = 2
DEFAULT_TEST_TIMEOUT_S = 120.0
HARNESS_FIXTURES = ("harness_session", "ollama_client", "model_under_test", "fixture_models")

_PLUGIN_NAME = "ollama_harness_session"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ollama-harness", "ollama-harness suites (active in suites/)")
    group.addoption(
        "--ollama-host",
        metavar="HOST",
        default=None,
        action="append",
        help="Ollama server to test (default: $OLLAMA_HOST, else 127.0.0.1:11434; when nothing answers there "
        "and no host was named, the embedded engine is started); repeat it or separate hosts by commas to "
        "test several (one after another, or one per pytest-xdist worker with -n)",
    )
    group.addoption(
        "--embedded-engine",
        action="store_true",
        help="always test on the embedded engine started for the session, whatever answers elsewhere",
    )
    group.addoption(
        "--model", dest="harness_model", metavar="NAME", help="run the suites on this existing model"
    )
    group.addoption(
        "--gguf", dest="harness_gguf", metavar="PATH", help="run the suites on this GGUF file (checked first)"
    )
    group.addoption(
        "--profile",
        dest="harness_profile",
        metavar="NAME",
        default=DEFAULT_PROFILE,
        help=f"fixture profile of the model under test when no --model/--gguf (default {DEFAULT_PROFILE})",
    )
    group.addoption(
        "--modelfile",
        dest="harness_modelfile",
        metavar="TEMPLATE",
        help="Modelfile template (a modelfiles/*.j2 name or a path) for the created models",
    )
    group.addoption("--keep-models", action="store_true", help="do not delete the models the run created")
    group.addoption(
        "--run-dir", metavar="DIR", default="reports", help="folder of the run records (reports/)"
    )
    group.addoption(
        "--threshold",
        dest="harness_thresholds",
        metavar="SUITE=VALUE",
        action="append",
        default=[],
        help="minimum accuracy of a quality suite, e.g. math=0.6 (overrides harness.toml)",
    )
    group.addoption("--repeats", metavar="N", default="1", help="ask every quality item N times (pass rate)")
    group.addoption("--max-items", metavar="N", default=None, help="ask only the first N items of each suite")
    group.addoption(
        "--num-predict",
        metavar="N",
        default=str(DEFAULT_NUM_PREDICT),
        help=f"tokens per quality answer (default {DEFAULT_NUM_PREDICT})",
    )
    group.addoption(
        "--request-timeout",
        metavar="S",
        default=str(DEFAULT_REQUEST_TIMEOUT_S),
        help=f"seconds one request may take (default {DEFAULT_REQUEST_TIMEOUT_S:g})",
    )
    group.addoption(
        "--harness-config", metavar="PATH", help="harness.toml to use (default: found from the cwd up)"
    )
    group.addoption(
        "--matrix",
        dest="harness_matrix",
        metavar="TYPES",
        help="run the suites once per tensor type, e.g. f32,f16,q8_0,q4_0 (fixture: built in each type; "
        "--gguf: quantized by the server at create where it can)",
    )
    group.addoption(
        "--engine-models-dir",
        metavar="DIR",
        help="models folder of the embedded engine (default: a temporary folder removed at the end)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "quality: a quality suite (an expected failure on fixture models)")
    config.addinivalue_line(
        "markers", "fixture_weights(reason): needs the fixture models; skipped with --model/--gguf"
    )


def options_from_pytest(config: pytest.Config) -> SuiteOptions:
    """The validated SuiteOptions from the command line and harness.toml; raises HarnessError."""
    get = config.getoption
    model, gguf = get("harness_model"), get("harness_gguf")
    if get("embedded_engine") and get("ollama_host"):
        raise HarnessError("--embedded-engine and --ollama-host both given", "choose one server to test")
    if model and gguf:
        raise HarnessError("--model and --gguf both given", "test an existing model or a GGUF file, not both")
    timeout = get("request_timeout")
    try:
        request_timeout = float(timeout)
    except ValueError:
        request_timeout = 0.0
    if request_timeout <= 0:
        raise HarnessError(f"--request-timeout {timeout!r} must be a positive number of seconds", "e.g. 120")
    engine_models_dir = get("engine_models_dir")
    if model and get("harness_matrix"):
        raise HarnessError(
            "--matrix with --model: an existing model has one tensor type",
            "use --matrix with a fixture profile or with --gguf (an F16/F32 file the server can quantize)",
        )
    matrix: tuple[str, ...] = ()
    if get("harness_matrix") is not None:
        from harness.plugin.matrix import parse_matrix  # the GGUF package and numpy: only when asked for

        matrix = parse_matrix(get("harness_matrix"), fixture=not gguf)
    from harness.plugin.hosts import parse_hosts

    hosts = parse_hosts(get("ollama_host"))
    return SuiteOptions(
        host=hosts[0] if hosts else None,
        hosts=hosts,
        embedded=bool(get("embedded_engine")),
        model=model,
        gguf=Path(gguf).expanduser() if gguf else None,
        profile=get("harness_profile"),
        modelfile=get("harness_modelfile"),
        keep_models=bool(get("keep_models")),
        run_dir=Path(get("run_dir")),
        threshold_flags=parse_threshold_flags(get("harness_thresholds")),
        config=load_config(get("harness_config")),
        repeats=positive_int(get("repeats"), "--repeats") or 1,
        max_items=positive_int(get("max_items"), "--max-items"),
        num_predict=positive_int(get("num_predict"), "--num-predict") or DEFAULT_NUM_PREDICT,
        request_timeout_s=request_timeout,
        engine_models_dir=Path(engine_models_dir) if engine_models_dir else None,
        matrix=matrix,
    )


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


def activate(config: pytest.Config) -> None:
    """Turn the harness on for this pytest run (called by suites/conftest.py from `pytest_configure`)."""
    if not config.pluginmanager.has_plugin(_PLUGIN_NAME):
        from harness.plugin.scale_out import ScaleOutPlugin, needs_scale_out  # several hosts, pytest-xdist

        plugin = ScaleOutPlugin(config) if needs_scale_out(config) else HarnessPlugin(config)
        config.pluginmanager.register(plugin, _PLUGIN_NAME)


def _plugin(config: pytest.Config) -> HarnessPlugin:
    plugin = config.pluginmanager.get_plugin(_PLUGIN_NAME)
    if plugin is None:
        raise pytest.UsageError(
            "the ollama-harness fixtures need an active harness: call harness.plugin.entry.activate(config) "
            "from your conftest's pytest_configure (see suites/conftest.py)"
        )
    assert isinstance(plugin, HarnessPlugin)
    return plugin


def _suite_of(nodeid: str) -> str:
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
        self._previous_sigterm: Callable[[int, FrameType | None], Any] | int | None = None

    # -------------------------------------------------------------------------------------------- start

    def start(self) -> HarnessSession:
        """Start the session (run folder, server); raises HarnessError."""
        if self.harness is None:
            from harness.plugin.session import (
                HarnessSession,  # imports the client and the engine only when active
            )

            started = time.perf_counter()
            options = options_from_pytest(self.config)
            self.harness = HarnessSession.start(options, suites=[str(arg) for arg in self.config.args])
            self.harness.recorder.update({"session_start_s": round(time.perf_counter() - started, 6)})
            self.server_time = log_server_time(self.harness)
            if options.matrix:
                from harness.plugin.matrix import matrix_meta

                self.harness.recorder.update({"matrix": matrix_meta(options.matrix)})
        return self.harness

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        if self.config.option.collectonly:
            return
        try:
            self.start()
        except HarnessError as error:
            pytest.exit(f"ollama-harness cannot start: {error}", returncode=EXIT_CANNOT_START)
        self._install_sigterm()

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
        """--matrix: every test of the model under test runs once per tensor type (a session-scoped
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

    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        options = self.current_options()
        for item in items:
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(DEFAULT_TEST_TIMEOUT_S))
            if options is None:
                continue
            fixture_weights = item.get_closest_marker("fixture_weights")
            if fixture_weights is not None and not options.uses_fixture_model:
                reason = fixture_weights.args[0] if fixture_weights.args else "it needs the fixture models"
                item.add_marker(pytest.mark.skip(reason=f"--model/--gguf given: {reason}"))
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
        if harness is not None and harness.server_down is not None and _uses_server(item):
            pytest.fail(f"not run: {harness.server_down}", pytrace=False)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        harness = self.harness
        if harness is not None and report.failed and _uses_server(item) and harness.server_down is None:
            down = harness.check_server()
            if down is not None:
                item.session.shouldstop = f"{down}; the remaining tests were not run"
        return report

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        harness = self.harness
        if harness is None:
            return
        record = self.outcome_record(report)
        if record is not None:
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
            "suite": _suite_of(report.nodeid),
            "model": self.model_under_test,
        }
        if report.failed or report.skipped:
            record["message"] = _short_message(report)
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


def _uses_server(item: pytest.Item) -> bool:
    names = getattr(item, "fixturenames", ())
    return any(name in names for name in HARNESS_FIXTURES)


def _short_message(report: pytest.TestReport) -> str:
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2])
    text = report.longreprtext or ""
    lines = [line for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("E ")]
    return "\n".join((errors or lines)[-5:])[:1000]


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="session")
def harness_host(request: pytest.FixtureRequest) -> str | None:
    """The host of this parameter when --ollama-host names several (None with one host or none)."""
    return getattr(request, "param", None)


@pytest.fixture(scope="session")
def harness_session(request: pytest.FixtureRequest, harness_host: str | None) -> Any:
    """The active HarnessSession (server, client, run record, options) of this test's host."""
    plugin = _plugin(request.config)
    try:
        return plugin.session_for(harness_host)
    except HarnessError as error:
        pytest.exit(f"ollama-harness cannot start: {error}", returncode=EXIT_CANNOT_START)


@pytest.fixture(scope="session")
def ollama_client(harness_session: Any) -> Any:
    """The session's OllamaClient (harness.server.client)."""
    return harness_session.require_client()


@pytest.fixture(scope="session")
def fixture_models(harness_session: Any) -> Iterator[Any]:
    """`fixture_models(profile)`: the session's model for a fixture profile, built and created once."""
    from harness.plugin.models import ModelFactory

    factory = ModelFactory(harness_session)
    yield factory


@pytest.fixture(scope="session")
def matrix_type(request: pytest.FixtureRequest) -> str | None:
    """The tensor type of this --matrix parameter (None without --matrix)."""
    return getattr(request, "param", None)


@pytest.fixture(scope="session")
def model_under_test(
    request: pytest.FixtureRequest, harness_session: Any, fixture_models: Any, matrix_type: str | None
) -> Any:
    """The model the suites test: --model, --gguf (created from the file), or the fixture profile's model;
    with --matrix, that model in the tensor type of this parameter.

    Most tests need it, so when it cannot be set up the run ends at once with the reason (exit status 2).
    A matrix type the server cannot quantize to skips its tests with the reason instead.
    """
    from harness.plugin.matrix import QuantizeNotSupported, record_matrix_entry

    options = harness_session.options
    try:
        if options.model:
            model = fixture_models.existing(options.model)
        elif options.gguf:
            model = fixture_models.from_gguf(
                options.gguf, modelfile=options.modelfile, tensor_type=matrix_type
            )
        else:
            model = fixture_models.from_profile(
                options.profile, modelfile=options.modelfile, tensor_type=matrix_type
            )
    except QuantizeNotSupported as error:
        record_matrix_entry(harness_session.recorder, matrix_type, skipped=error.message)
        pytest.skip(error.message)
    except HarnessError as error:
        pytest.exit(f"ollama-harness: the model under test could not be set up: {error}", EXIT_CANNOT_START)
    if matrix_type is not None:
        record_matrix_entry(harness_session.recorder, matrix_type, model=model.name)
    _plugin(request.config).model_under_test = model.name
    return model


@pytest.fixture
def run_quality_suite(
    harness_session: Any, ollama_client: Any, model_under_test: Any
) -> Callable[[str], Any]:
    """`run_quality_suite("math")`: ask the model under test every item of suites/data/math.yaml (--max-items,
    --repeats, --num-predict), grade, record, and return the `harness.quality.run.SuiteOutcome`."""
    from harness.quality.run import run_quality_suite as run_suite
    from harness.quality.suite_data import load_suite

    options = harness_session.options

    def ask(prompt: str, repeat: int) -> str:
        reply = ollama_client.chat(
            model_under_test.name,
            [{"role": "user", "content": prompt}],
            options={"temperature": 0, "seed": 0, "num_predict": options.num_predict},
        )
        return str(reply.text)

    def run(name: str) -> Any:
        suite = load_suite(name)
        items = suite.items[: options.max_items] if options.max_items else suite.items
        return run_suite(
            suite,
            items,
            model=model_under_test.name,
            ask=ask,
            record=harness_session.record,
            threshold=options.threshold(suite.name, model_under_test.name, suite.threshold),
            repeats=options.repeats,
            expected_to_fail=options.uses_fixture_model,
        )

    return run
