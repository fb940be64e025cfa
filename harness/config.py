"""The harness configuration: `harness.toml` in the current folder (or a parent up to the repository root),
or the file given with `--config`. Every setting has a default in code, so the file is optional.

Sections::

    [report]                 # how `harness report` compares runs
    confidence = 0.95        # of the bootstrap interval that decides "noise"
    bootstrap_resamples = 1000
    seed = 0

    [report.thresholds]      # worst change still judged "same", per metric name or glob pattern
    "accuracy_*" = "-5pt"    # percentage points
    "ttft_p95" = "+20%"      # relative to the baseline
    "rss_growth" = "+32MiB"  # absolute, with a unit (s, ms, B, KiB, MiB, GiB) or none

    [suites]
    num_predict = 1024       # tokens per quality answer, every suite (or a table: math = 1024)

    [suites.thresholds.gsm8k]  # minimum accuracy per suite, per model name pattern (most specific wins)
    "*" = 0.5
    "oracle*" = "100%"

    [load]                   # read by the load tests
    [memory]                 # read by the memory tests
"""

from __future__ import annotations

import fnmatch
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.units import THRESHOLD_SUFFIXES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CONFIG_NAME = "harness.toml"


class ConfigError(HarnessError):
    """The configuration file or a threshold given on the command line is invalid."""


_THRESHOLD = re.compile(r"^\s*([+-]?)\s*(\d+(?:\.\d*)?|\.\d+)\s*(%|pt|[a-zA-Z]*)\s*$")


@dataclass(frozen=True)
class Threshold:
    """The largest worsening of a metric still "same": relative (a fraction of the baseline) or absolute.

    `sign` is "+" or "-" when the text gave one: the direction it expects to be worse.
    """

    amount: float
    relative: bool
    text: str
    sign: str = ""

    def allowed(self, baseline: float) -> float:
        """The allowed worsening, in the metric's own unit, for this baseline value."""
        return self.amount * abs(baseline) if self.relative else self.amount


def parse_threshold(text: str | float | int) -> Threshold:
    """Parse "+20%", "-5pt", "+0.05", "+30ms", "+32MiB" (or a bare number) into a Threshold."""
    if isinstance(text, bool):
        raise ConfigError(f"invalid threshold {text!r}", 'write a change such as "+20%", "-5pt" or "+50ms"')
    if isinstance(text, (int, float)):
        text = str(text)
    match = _THRESHOLD.match(text)
    if match is None or match.group(3).lower() not in {*THRESHOLD_SUFFIXES, "%", "pt"}:
        raise ConfigError(
            f"invalid threshold {text!r}",
            'write a change such as "+20%" (relative), "-5pt" (percentage points), "+50ms" or "+32MiB"',
        )
    sign, number, unit = match.group(1), float(match.group(2)), match.group(3).lower()
    if unit == "%":
        return Threshold(number / 100, True, text.strip(), sign)
    if unit == "pt":
        return Threshold(number / 100, False, text.strip(), sign)
    return Threshold(number * THRESHOLD_SUFFIXES[unit], False, text.strip(), sign)


# Defaults, applied after the config file and the command line. Keys are metric names or glob patterns,
# matched against a metric's full name (load.c4.ttft_p95) or its family (ttft_p95).
DEFAULT_REPORT_THRESHOLDS: dict[str, str] = {
    "accuracy_*": "-5pt",
    "ttft_*": "+20%",
    "itl_*": "+20%",
    "e2e_*": "+20%",
    "tokens_per_s": "-10%",
    "requests_per_s": "-10%",
    "error_rate": "+1pt",
    "ps_size": "+10%",
    "rss_peak": "+10%",
    "rss_growth": "+32MiB",
}
FALLBACK_THRESHOLD = "+10%"
# What a baseline run must share with the run it is compared with: keys of run.json's "machine" (the
# hardware class, not the host name: every CI job is a fresh VM with another name). `[report]
# baseline_match` in harness.toml widens ([] = any machine) or narrows (add "hostname", "os") it.
BASELINE_MATCH_KEYS = ("cpu", "cores", "ram_gib", "gpu", "hostname", "os")
DEFAULT_BASELINE_MATCH = ("cpu", "cores", "ram_gib", "gpu")


def find_threshold(layers: list[Mapping[str, Threshold]], name: str, family: str) -> tuple[str, Threshold]:
    """The threshold for a metric: the first layer with a match wins; in a layer exact names beat patterns.

    Returns the key that matched (for the report) and the threshold.
    """
    for layer in layers:
        for key in (name, family):
            if key in layer:
                return key, layer[key]
        for key, threshold in layer.items():
            if fnmatch.fnmatchcase(name, key) or fnmatch.fnmatchcase(family, key):
                return key, threshold
    return "*", parse_threshold(FALLBACK_THRESHOLD)


def _parse_accuracy(value: Any, where: str) -> float:
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            value = float(value.strip()[:-1]) / 100
        except ValueError:
            value = None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ConfigError(
            f"invalid minimum accuracy {value!r} at {where}",
            'write a fraction such as 0.6 or a percentage "60%"',
        )
    return float(value)


@dataclass(frozen=True)
class HarnessConfig:
    """The loaded configuration (defaults where the file says nothing)."""

    source: Path | None = None
    report_thresholds: dict[str, Threshold] = field(default_factory=dict)
    suite_thresholds: dict[str, dict[str, float]] = field(default_factory=dict)
    suite_num_predict: dict[str, int] = field(default_factory=dict)  # "*": every suite
    baseline_match: tuple[str, ...] | None = None  # [report] baseline_match (None: the default keys)
    confidence: float = 0.95
    bootstrap_resamples: int = 1000
    seed: int = 0
    load: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)

    def threshold_layers(
        self, overrides: Mapping[str, Threshold] | None = None
    ) -> list[Mapping[str, Threshold]]:
        """Threshold tables in order of precedence: command line, config file, defaults."""
        defaults = {key: parse_threshold(text) for key, text in DEFAULT_REPORT_THRESHOLDS.items()}
        return [dict(overrides or {}), self.report_thresholds, defaults]

    def suite_threshold(self, suite: str, model: str, default: float | None = None) -> float | None:
        """Minimum accuracy for `suite` on `model`: an exact model name, else the longest matching pattern."""
        table = self.suite_thresholds.get(suite, {})
        if model in table:
            return table[model]
        matching = [pattern for pattern in table if fnmatch.fnmatchcase(model, pattern)]
        if not matching:
            return default
        return table[max(matching, key=lambda pattern: len(pattern.replace("*", "")))]

    def num_predict(self, suite: str) -> int | None:
        """`[suites] num_predict` for `suite` (its own entry, else the one for every suite), or None."""
        return self.suite_num_predict.get(suite, self.suite_num_predict.get("*"))


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"invalid {where} {value!r}", "use an integer >= 1, e.g. 1024")
    return value


def _parse_num_predict(value: Any) -> dict[str, int]:
    """`[suites] num_predict`: one number for every suite, or a table of suite -> number."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(suite): _positive_int(v, f"[suites.num_predict] {suite}") for suite, v in value.items()}
    return {"*": _positive_int(value, "[suites] num_predict")}


def find_config_file(start: Path | None = None) -> Path | None:
    """`harness.toml` in `start` (default: the current folder) or a parent, up to the repository root."""
    folder = (start or Path.cwd()).resolve()
    for candidate in (folder, *folder.parents):
        if (candidate / CONFIG_NAME).is_file():
            return candidate / CONFIG_NAME
        if (candidate / ".git").exists():
            return None
    return None


def _table(data: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(
            f"[{where}] must be a table, found {type(value).__name__}", f"write it as [{where}]"
        )
    return value


def _parse(data: Mapping[str, Any], source: Path | None) -> HarnessConfig:
    report = _table(data, "report", "report")
    unknown = set(report) - {"thresholds", "confidence", "bootstrap_resamples", "seed", "baseline_match"}
    if unknown:
        raise ConfigError(
            f"unknown setting(s) in [report]: {', '.join(sorted(unknown))}",
            "known: thresholds, confidence, bootstrap_resamples, seed, baseline_match",
        )
    baseline_match = report.get("baseline_match")
    if baseline_match is not None:
        unknown_keys = (
            set(baseline_match) - set(BASELINE_MATCH_KEYS) if isinstance(baseline_match, list) else {None}
        )
        if unknown_keys or not all(isinstance(key, str) for key in baseline_match):
            raise ConfigError(
                f"invalid [report] baseline_match {baseline_match!r}",
                f"a list of machine keys among {', '.join(BASELINE_MATCH_KEYS)} (default: "
                f"{', '.join(DEFAULT_BASELINE_MATCH)}; [] matches any machine)",
            )
    thresholds = {
        str(key): parse_threshold(value)
        for key, value in _table(report, "thresholds", "report.thresholds").items()
    }
    confidence = report.get("confidence", 0.95)
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0.5 <= confidence < 1:
        raise ConfigError(f"invalid [report] confidence {confidence!r}", "use a value such as 0.95 or 0.99")
    resamples = report.get("bootstrap_resamples", 1000)
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 100:
        raise ConfigError(f"invalid [report] bootstrap_resamples {resamples!r}", "use an integer >= 100")
    seed = report.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"invalid [report] seed {seed!r}", "use an integer")
    suites: dict[str, dict[str, float]] = {}
    suites_table = _table(data, "suites", "suites")
    for suite, table in _table(suites_table, "thresholds", "suites.thresholds").items():
        where = f"suites.thresholds.{suite}"
        if not isinstance(table, dict):  # one number for every model
            table = {"*": table}
        suites[str(suite)] = {
            str(pattern): _parse_accuracy(value, f"{where}.{pattern}") for pattern, value in table.items()
        }
    return HarnessConfig(
        source=source,
        report_thresholds=thresholds,
        suite_thresholds=suites,
        suite_num_predict=_parse_num_predict(suites_table.get("num_predict")),
        baseline_match=tuple(baseline_match) if baseline_match is not None else None,
        confidence=float(confidence),
        bootstrap_resamples=resamples,
        seed=seed,
        load=_table(data, "load", "load"),
        memory=_table(data, "memory", "memory"),
    )


def load_config(path: str | os.PathLike[str] | None = None) -> HarnessConfig:
    """Load `path`, or the `harness.toml` found from the current folder up, or the defaults."""
    source = Path(path) if path is not None else find_config_file()
    if source is None:
        return HarnessConfig()
    if not source.is_file():
        raise ConfigError(
            f"no config file at {source}", "pass an existing file with --config, or leave it out"
        )
    try:
        data = tomllib.loads(source.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(
            f"{source} is not valid TOML: {error}", "fix the syntax (see harness.toml)"
        ) from error
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read {source}: {error}", "check the file's permissions") from error
    try:
        return _parse(data, source)
    except ConfigError as error:
        raise ConfigError(f"{source}: {error.message}", error.hint) from error
