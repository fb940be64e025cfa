"""harness.toml: thresholds, suite minimum accuracies, discovery, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.config import (
    ConfigError,
    HarnessConfig,
    find_threshold,
    load_config,
    parse_threshold,
)

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("text", "amount", "relative"),
    [
        ("+20%", 0.20, True),
        ("-10%", 0.10, True),
        ("-5pt", 0.05, False),
        ("+50ms", 0.05, False),
        ("+0.25", 0.25, False),
        ("+32MiB", 32 * 2**20, False),
        (5, 5.0, False),
    ],
)
def test_parse_threshold(text, amount, relative):
    threshold = parse_threshold(text)
    assert threshold.amount == pytest.approx(amount) and threshold.relative is relative


@pytest.mark.parametrize("text", ["fast", "+20 %%", "20 parsecs", "", "--5%"])
def test_parse_threshold_rejects_nonsense(text):
    with pytest.raises(ConfigError, match="invalid threshold") as caught:
        parse_threshold(text)
    assert "+20%" in caught.value.hint


def test_threshold_precedence_command_line_config_defaults():
    config = HarnessConfig(report_thresholds={"load.c4.*": parse_threshold("+50%")})
    layers = config.threshold_layers({"ttft_p95": parse_threshold("+30%")})
    assert find_threshold(layers, "load.c4.ttft_p95", "ttft_p95")[1].text == "+30%"
    assert find_threshold(layers, "load.c4.e2e_p50", "e2e_p50") == ("load.c4.*", parse_threshold("+50%"))
    assert find_threshold(layers, "load.c1.e2e_p50", "e2e_p50")[0] == "e2e_*"
    assert find_threshold(layers, "suite.arith.accuracy_strict", "accuracy_strict")[1].text == "-5pt"
    assert find_threshold(layers, "other.thing", "thing")[1].text == "+10%"


def test_example_harness_toml_at_the_repo_root_loads():
    config = load_config(REPO_ROOT / "harness.toml")
    assert config.source == REPO_ROOT / "harness.toml"
    assert config.report_thresholds


def test_load_config_sections(tmp_path):
    path = tmp_path / "harness.toml"
    path.write_text(
        """
        [report]
        confidence = 0.99
        bootstrap_resamples = 500
        [report.thresholds]
        ttft_p95 = "+30%"
        [suites.thresholds]
        coherence = 0.5
        [suites.thresholds.arith]
        "*" = 0.6
        "harness-oracle*" = "100%"
        "harness-oracle:f16" = 0.9
        [load]
        concurrency = [1, 4]
        [memory]
        max_growth_mib = 16
        """
    )
    config = load_config(path)
    assert config.confidence == 0.99 and config.bootstrap_resamples == 500
    assert config.report_thresholds["ttft_p95"].amount == pytest.approx(0.3)
    assert config.suite_threshold("arith", "harness-tiny:q8_0") == 0.6
    assert config.suite_threshold("arith", "harness-oracle:q4_0") == 1.0  # longest pattern wins over "*"
    assert config.suite_threshold("arith", "harness-oracle:f16") == 0.9  # exact name wins
    assert config.suite_threshold("coherence", "anything") == 0.5
    assert config.suite_threshold("unknown", "m", default=0.1) == 0.1
    assert config.load == {"concurrency": [1, 4]} and config.memory == {"max_growth_mib": 16}


def test_discovery_from_a_subfolder_stops_at_the_repository_root(tmp_path, monkeypatch):
    (tmp_path / ".git").mkdir()
    (tmp_path / "harness.toml").write_text('[report.thresholds]\n"e2e_*" = "+5%"\n')
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "sub" / "deeper")
    assert load_config().report_thresholds["e2e_*"].amount == pytest.approx(0.05)
    (tmp_path / "harness.toml").unlink()
    assert load_config() == HarnessConfig()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[report\n", "not valid TOML"),
        ("[report]\nconfidenc = 0.9\n", "unknown setting"),
        ("[report]\nconfidence = 2\n", "invalid [report] confidence"),
        ('report = "x"\n', "must be a table"),
        ("[report.thresholds]\nttft_p95 = true\n", "invalid threshold"),
        ("[suites.thresholds.arith]\n'*' = 1.5\n", "invalid minimum accuracy"),
    ],
)
def test_bad_config_names_file_and_problem(tmp_path, content, message):
    path = tmp_path / "harness.toml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=r"harness\.toml") as caught:
        load_config(path)
    assert message in caught.value.message and caught.value.hint


def test_missing_explicit_config_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="no config file"):
        load_config(tmp_path / "nope.toml")
