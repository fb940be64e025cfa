"""harness.plugin.options: thresholds from the command line, harness.toml and the suite files."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.config import load_config
from harness.errors import HarnessError
from harness.plugin.options import SuiteOptions, parse_suite_threshold, parse_threshold_flags, positive_int


def test_parse_threshold_reads_fractions_and_percentages() -> None:
    assert parse_suite_threshold("math=0.6") == ("math", 0.6)
    assert parse_suite_threshold("quantum=25%") == ("quantum", 0.25)


@pytest.mark.parametrize("text", ["math", "=0.5", "math=1.5", "math=abc", "math=-0.1"])
def test_parse_threshold_rejects_bad_values_with_a_hint(text: str) -> None:
    with pytest.raises(HarnessError) as caught:
        parse_suite_threshold(text)
    assert caught.value.hint


def test_threshold_flags_name_only_known_suites() -> None:
    assert parse_threshold_flags(["math=0.1", "math=0.2"]) == {"math": 0.2}
    with pytest.raises(HarnessError, match="unknown suite 'gsm8k'"):
        parse_threshold_flags(["gsm8k=0.5"])


def test_threshold_precedence_flag_then_config_then_suite_file_then_default(tmp_path: Path) -> None:
    config_file = tmp_path / "harness.toml"
    config_file.write_text('[suites.thresholds.math]\n"*" = 0.4\n"gemma*" = 0.1\n')
    config = load_config(config_file)
    options = SuiteOptions(config=config)
    assert options.threshold("math", "gemma3-270m", 0.5) == 0.1
    assert options.threshold("math", "llama3", 0.5) == 0.4
    assert options.threshold("quantum", "llama3", 0.3) == 0.3
    assert options.threshold("quantum", "llama3") == 0.5
    flagged = SuiteOptions(config=config, threshold_flags={"math": 0.9})
    assert flagged.threshold("math", "gemma3-270m", 0.5) == 0.9


def test_positive_int() -> None:
    assert positive_int("3", "--harness-repeats") == 3
    assert positive_int(None, "--harness-max-items") is None
    with pytest.raises(HarnessError, match="--harness-repeats '0' must be an integer >= 1"):
        positive_int("0", "--harness-repeats")
