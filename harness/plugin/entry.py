"""The pytest plugin: options, the session (server, run record, models), fixtures, and result capture.

Installed as the `ollama_harness` pytest11 entry point, so its options exist in every pytest run, but it does
nothing until a suites folder activates it: `suites/conftest.py` calls `activate(config)`. An active session:

- opens `reports/<run-id>/` (harness.runs), reaches the server (harness.server: the named host, one already
  answering at the default address, or the embedded engine), reads its version, and says so in the header;
- records every test outcome, and lets tests record prompt, suite, load and memory results;
- stops the run at once, with one error naming the server, when the server stops answering;
- deletes the models it created (unless --harness-keep-models), stops the engine it started, and marks the run
  complete, or incomplete with the reason (interrupted, server died, internal error).

Exit statuses are pytest's, plus: 2 when the session cannot start (a host the user named does not answer,
the --harness-gguf file has check errors, a bad option): the message says why, without a traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from harness.errors import HarnessError
from harness.plugin.hooks import EXIT_CANNOT_START, HarnessPlugin
from harness.plugin.options import (
    DEFAULT_PROFILE,
    DEFAULT_REQUEST_TIMEOUT_S,
)

if TYPE_CHECKING:
    pass

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
        "--harness-embedded-engine",
        action="store_true",
        help="always test on the embedded engine started for the session, whatever answers elsewhere",
    )
    group.addoption(
        "--harness-model", dest="harness_model", metavar="NAME", help="run the suites on this existing model"
    )
    group.addoption(
        "--harness-gguf",
        dest="harness_gguf",
        metavar="PATH",
        help="run the suites on this GGUF file (checked first)",
    )
    group.addoption(
        "--harness-profile",
        dest="harness_profile",
        metavar="NAME",
        default=DEFAULT_PROFILE,
        help="fixture profile of the model under test when no --harness-model/--harness-gguf "
        f"(default {DEFAULT_PROFILE})",
    )
    group.addoption(
        "--harness-modelfile",
        dest="harness_modelfile",
        metavar="TEMPLATE",
        help="Modelfile template (a modelfiles/*.j2 name or a path) for the created models",
    )
    group.addoption(
        "--harness-keep-models", action="store_true", help="do not delete the models the run created"
    )
    group.addoption(
        "--harness-run-dir", metavar="DIR", default="reports", help="folder of the run records (reports/)"
    )
    group.addoption(
        "--harness-threshold",
        dest="harness_thresholds",
        metavar="SUITE=VALUE",
        action="append",
        default=[],
        help="minimum accuracy of a quality suite, e.g. math=0.6 (overrides harness.toml)",
    )
    group.addoption(
        "--harness-repeats", metavar="N", default="1", help="ask every quality item N times (pass rate)"
    )
    group.addoption(
        "--harness-max-items", metavar="N", default=None, help="ask only the first N items of each suite"
    )
    group.addoption(
        "--harness-num-predict",
        metavar="N",
        default=None,
        help="tokens per quality answer (default: harness.toml [suites] num_predict, else each suite "
        "file's num_predict)",
    )
    group.addoption(
        "--harness-fewshot",
        dest="harness_fewshot",
        metavar="K",
        default=None,
        help="prepend K solved examples (each suite file's held-out fewshot list) to every quality prompt, "
        "for base models without a chat template (default 0)",
    )
    group.addoption(
        "--harness-request-timeout",
        metavar="S",
        default=str(DEFAULT_REQUEST_TIMEOUT_S),
        help=f"seconds one request may take (default {DEFAULT_REQUEST_TIMEOUT_S:g})",
    )
    group.addoption(
        "--harness-config", metavar="PATH", help="harness.toml to use (default: found from the cwd up)"
    )
    group.addoption(
        "--harness-matrix",
        dest="harness_matrix",
        metavar="TYPES",
        help="run the suites once per tensor type, e.g. f32,f16,q8_0,q4_0 (fixture: built in each type; "
        "--harness-gguf: quantized by the server at create where it can)",
    )
    group.addoption(
        "--harness-engine-models-dir",
        metavar="DIR",
        help="models folder of the embedded engine (default: a temporary folder removed at the end)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "quality: a quality suite (an expected failure on fixture models)")
    config.addinivalue_line(
        "markers",
        "fixture_weights(reason): needs the fixture models; skipped with --harness-model/--harness-gguf",
    )
    config.addinivalue_line(
        "markers",
        "destructive: feeds the server input that may kill it (broken files); runs after every other test",
    )


def activate(config: pytest.Config) -> None:
    """Turn the harness on for this pytest run (called by suites/conftest.py from `pytest_configure`)."""
    if not config.pluginmanager.has_plugin(_PLUGIN_NAME):
        from harness.plugin.scale_out import ScaleOutPlugin, needs_scale_out  # several hosts, pytest-xdist

        plugin = ScaleOutPlugin(config) if needs_scale_out(config) else HarnessPlugin(config)
        config.pluginmanager.register(plugin, _PLUGIN_NAME)


def active_plugin(config: pytest.Config) -> HarnessPlugin:
    plugin = config.pluginmanager.get_plugin(_PLUGIN_NAME)
    if plugin is None:
        raise pytest.UsageError(
            "the ollama-harness fixtures need an active harness: call harness.plugin.entry.activate(config) "
            "from your conftest's pytest_configure (see suites/conftest.py)"
        )
    assert isinstance(plugin, HarnessPlugin)
    return plugin


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="session")
def harness_host(request: pytest.FixtureRequest) -> str | None:
    """The host of this parameter when --ollama-host names several (None with one host or none)."""
    return getattr(request, "param", None)


@pytest.fixture(scope="session")
def harness_session(request: pytest.FixtureRequest, harness_host: str | None) -> Any:
    """The active HarnessSession (server, client, run record, options) of this test's host."""
    plugin = active_plugin(request.config)
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
    # lazy: pytest loads this plugin in every run; a session's modules load when it starts
    from harness.plugin.models import ModelFactory

    factory = ModelFactory(harness_session)
    yield factory


@pytest.fixture
def harness_property(request: pytest.FixtureRequest) -> Callable[[str, object], None]:
    """`harness_property(name, value)`: a fact about this test for run.json and --junitxml.

    Like pytest's `record_property`, without its warning under the default junit family (xunit2): the value
    goes to the test report's `user_properties`, which run.json keeps and which pytest's junitxml writes as
    the test case's `<property>` elements in every family."""

    def record(name: str, value: object) -> None:
        request.node.user_properties.append((name, value))

    return record


@pytest.fixture(scope="session")
def matrix_type(request: pytest.FixtureRequest) -> str | None:
    """The tensor type of this --harness-matrix parameter (None without --harness-matrix)."""
    return getattr(request, "param", None)


@pytest.fixture(scope="session")
def model_under_test(
    request: pytest.FixtureRequest, harness_session: Any, fixture_models: Any, matrix_type: str | None
) -> Any:
    """The model the suites test: --harness-model, --harness-gguf (created from the file), or the fixture
    profile's model; with --harness-matrix, that model in the tensor type of this parameter.

    Most tests need it, so when it cannot be set up the run ends at once with the reason (exit status 2).
    A matrix type the server cannot quantize to skips its tests with the reason instead.
    """
    # lazy: pytest loads this plugin in every run; a session's modules load when it starts
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
    active_plugin(request.config).model_under_test = model.name
    return model


@pytest.fixture
def run_quality_suite(
    harness_session: Any, ollama_client: Any, model_under_test: Any
) -> Callable[[str], Any]:
    """`run_quality_suite("math")`: ask the model under test every item of suites/data/math.yaml
    (--harness-max-items, --harness-repeats, --harness-num-predict, --harness-fewshot), grade, record, and
    return the `harness.quality.run.SuiteOutcome`. An item's schema goes as `format`, its tools as `tools`
    (the response is then the reply's content and tool calls, `harness.quality.json_graders.tool_reply`)."""
    # lazy: pytest loads this plugin in every run; a session's modules load when it starts
    from harness.quality.json_graders import tool_reply
    from harness.quality.run import Answer, Generation
    from harness.quality.run import run_quality_suite as run_suite
    from harness.quality.suite_data import load_suite

    options = harness_session.options

    def run(name: str) -> Any:
        suite = load_suite(name)
        items = suite.items[: options.max_items] if options.max_items else suite.items
        generation = Generation(
            num_predict=options.num_predict_for(suite.name, suite.num_predict, bounded=suite.bounded_answers),
            stop=suite.stop,
            fewshot=options.fewshot,
        )

        def ask(item: Any, prompt: str, repeat: int) -> Answer:
            reply = ollama_client.chat(
                model_under_test.name,
                [{"role": "user", "content": prompt}],
                options=generation.options(),
                format=dict(item.schema) if item.schema is not None else None,
                tools=list(item.tools) or None,
            )
            text = tool_reply(reply.text, reply.tool_calls) if item.tools else str(reply.text)
            return Answer(text, reply.done_reason, reply.eval_count)

        return run_suite(
            suite,
            items,
            model=model_under_test.name,
            ask=ask,
            record=harness_session.record,
            threshold=options.threshold(suite.name, model_under_test.name, suite.threshold),
            repeats=options.repeats,
            expected_to_fail=options.uses_fixture_model,
            generation=generation,
            progress=harness_session.progress,
        )

    return run
