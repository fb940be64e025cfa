"""The suites' options: command-line flags and harness.toml, validated once.

Thresholds, highest precedence first: the command line (`--harness-threshold math=0.6`), then `harness.toml`
(`[suites.thresholds.math]`, per model name pattern), then `DEFAULT_THRESHOLDS`. A bad value is a
`HarnessError` that names the flag and the fix.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from harness.config import HarnessConfig, load_config
from harness.errors import HarnessError

QUALITY_SUITES = ("math", "quantum", "structured", "tools")
# Accuracy (strict grading) a model must reach for a quality suite to pass. Half right is a low bar for a
# chat model on these items and far above what a model that is not a language model can reach (about 0).
DEFAULT_THRESHOLDS: Mapping[str, float] = {"math": 0.5, "quantum": 0.5, "structured": 0.5, "tools": 0.5}
DEFAULT_PROFILE = "oracle"
DEFAULT_REQUEST_TIMEOUT_S = 120.0
# The fixture models are not language models (their answers only prove the grader scores them about zero),
# so a suite's chain-of-thought budget would only cost time on them: they get this one unless one is set.
FIXTURE_NUM_PREDICT = 64


@dataclass(frozen=True)
class SuiteOptions:
    """Everything the suites need to know about what to test and how, after validation."""

    host: str | None = None
    hosts: tuple[str, ...] = ()  # every --ollama-host (harness.plugin.hosts); `host` is this session's
    embedded: bool = False
    model: str | None = None
    gguf: Path | None = None
    profile: str = DEFAULT_PROFILE
    modelfile: str | None = None
    keep_models: bool = False
    run_dir: Path = Path("reports")
    threshold_flags: Mapping[str, float] = field(default_factory=dict)
    config: HarnessConfig = field(default_factory=HarnessConfig)
    repeats: int = 1
    max_items: int | None = None
    num_predict: int | None = None  # --num-predict (None: harness.toml, else each suite file)
    fewshot: int = 0  # --harness-fewshot K: solved examples before each question
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S
    engine_models_dir: Path | None = None
    matrix: tuple[str, ...] = ()  # --harness-matrix: tensor types, widest first (harness.plugin.matrix)

    @property
    def uses_fixture_model(self) -> bool:
        """True when the model under test is built from a fixture profile (no --harness-model/-gguf)."""
        return self.model is None and self.gguf is None

    def threshold(self, suite: str, model: str, suite_default: float | None = None) -> float:
        """The accuracy `suite` must reach on `model`: --harness-threshold, else harness.toml
        (`[suites.thresholds.<suite>]`, by model name pattern), else the suite file's own threshold, else
        `DEFAULT_THRESHOLDS`."""
        if suite in self.threshold_flags:
            return self.threshold_flags[suite]
        configured = self.config.suite_threshold(suite, model)
        if configured is not None:
            return configured
        return suite_default if suite_default is not None else DEFAULT_THRESHOLDS.get(suite, 0.5)

    def num_predict_for(self, suite: str, suite_default: int, *, bounded: bool = False) -> int:
        """Tokens per answer of `suite`: --num-predict, else harness.toml `[suites] num_predict`, else the
        suite file's `num_predict` (`FIXTURE_NUM_PREDICT` at most on a fixture model, unless the answers are
        `bounded` by a JSON schema and need the whole budget)."""
        if self.num_predict is not None:
            return self.num_predict
        configured = self.config.num_predict(suite)
        if configured is not None:
            return configured
        if self.uses_fixture_model and not bounded:
            return min(suite_default, FIXTURE_NUM_PREDICT)
        return suite_default

    def to_record(self) -> dict[str, Any]:
        """The options as plain data for run.json."""
        return {
            "host": self.host,
            "hosts": list(self.hosts),
            "embedded": self.embedded,
            "model": self.model,
            "gguf": str(self.gguf) if self.gguf else None,
            "profile": self.profile,
            "modelfile": self.modelfile,
            "keep_models": self.keep_models,
            "run_dir": str(self.run_dir),
            "threshold_flags": dict(self.threshold_flags),
            "config": str(self.config.source) if self.config.source else None,
            "repeats": self.repeats,
            "max_items": self.max_items,
            "num_predict": self.num_predict,
            "fewshot": self.fewshot,
            "request_timeout_s": self.request_timeout_s,
            "matrix": list(self.matrix),
        }


def parse_suite_threshold(text: str) -> tuple[str, float]:
    """`SUITE=VALUE` with VALUE a fraction in [0, 1] (or a percentage such as 60%)."""
    suite, sep, value_text = text.partition("=")
    suite = suite.strip()
    if not sep or not suite:
        raise HarnessError(
            f"--harness-threshold {text!r} is not SUITE=VALUE",
            f"write e.g. --harness-threshold math=0.6 (suites: {', '.join(QUALITY_SUITES)})",
        )
    return suite, _fraction(value_text.strip(), f"--harness-threshold {text}")


def _fraction(text: Any, where: str) -> float:
    try:
        value = float(str(text).rstrip("%")) / (100.0 if str(text).endswith("%") else 1.0)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise HarnessError(f"{where}: {text!r} is not an accuracy between 0 and 1", "use e.g. 0.5 or 50%")
    return value


def parse_threshold_flags(flags: Sequence[str]) -> dict[str, float]:
    """The `--harness-threshold SUITE=VALUE` flags as a table (a later flag for the same suite wins)."""
    thresholds: dict[str, float] = {}
    for flag in flags:
        suite, value = parse_suite_threshold(flag)
        if suite not in QUALITY_SUITES:
            raise HarnessError(
                f"--harness-threshold {flag}: unknown suite {suite!r}",
                f"thresholds apply to the quality suites: {', '.join(QUALITY_SUITES)}",
            )
        thresholds[suite] = value
    return thresholds


def positive_int(text: str | int | None, flag: str, *, minimum: int = 1) -> int | None:
    """An integer flag value >= minimum (None stays None)."""
    if text is None:
        return None
    try:
        value = int(text)
    except (TypeError, ValueError):
        value = minimum - 1
    if value < minimum:
        raise HarnessError(
            f"{flag} {text!r} must be an integer >= {minimum}", f"e.g. {flag} {max(minimum, 3)}"
        )
    return value


def options_from_pytest(config: pytest.Config) -> SuiteOptions:
    """The validated SuiteOptions from the command line and harness.toml; raises HarnessError."""
    get = config.getoption
    model, gguf = get("harness_model"), get("harness_gguf")
    if get("harness_embedded_engine") and get("ollama_host"):
        raise HarnessError(
            "--harness-embedded-engine and --ollama-host both given", "choose one server to test"
        )
    if model and gguf:
        raise HarnessError(
            "--harness-model and --harness-gguf both given", "test an existing model or a GGUF file, not both"
        )
    timeout = get("harness_request_timeout")
    try:
        request_timeout = float(timeout)
    except ValueError:
        request_timeout = 0.0
    if request_timeout <= 0:
        raise HarnessError(
            f"--harness-request-timeout {timeout!r} must be a positive number of seconds", "e.g. 120"
        )
    engine_models_dir = get("harness_engine_models_dir")
    if model and get("harness_matrix"):
        raise HarnessError(
            "--harness-matrix with --harness-model: an existing model has one tensor type",
            "use --harness-matrix with a fixture profile or with --harness-gguf "
            "(an F16/F32 file the server can quantize)",
        )
    matrix: tuple[str, ...] = ()
    if get("harness_matrix") is not None:
        from harness.plugin.matrix import parse_matrix  # the GGUF package and numpy: only when asked for

        matrix = parse_matrix(get("harness_matrix"), fixture=not gguf)
    # lazy: pytest loads this plugin in every run; a session's modules load when it starts
    from harness.plugin.hosts import parse_hosts

    hosts = parse_hosts(get("ollama_host"))
    return SuiteOptions(
        host=hosts[0] if hosts else None,
        hosts=hosts,
        embedded=bool(get("harness_embedded_engine")),
        model=model,
        gguf=Path(gguf).expanduser() if gguf else None,
        profile=get("harness_profile"),
        modelfile=get("harness_modelfile"),
        keep_models=bool(get("harness_keep_models")),
        run_dir=Path(get("harness_run_dir")),
        threshold_flags=parse_threshold_flags(get("harness_thresholds")),
        config=load_config(get("harness_config")),
        repeats=positive_int(get("harness_repeats"), "--harness-repeats") or 1,
        max_items=positive_int(get("harness_max_items"), "--harness-max-items"),
        num_predict=positive_int(get("harness_num_predict"), "--harness-num-predict"),
        fewshot=positive_int(get("harness_fewshot"), "--harness-fewshot", minimum=0) or 0,
        request_timeout_s=request_timeout,
        engine_models_dir=Path(engine_models_dir) if engine_models_dir else None,
        matrix=matrix,
    )
