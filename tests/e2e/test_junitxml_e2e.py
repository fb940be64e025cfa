"""`pytest suites/ --junitxml FILE` prints no warning and keeps the facts tests record (the broken-file
tests' stage, error and checker codes) as the test cases' properties, and in run.json."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.runs import load_run
from harness.testing.helpers import run_pytest

SUITES = Path(__file__).resolve().parents[2] / "suites"


@pytest.mark.timeout(300)
def test_junitxml_is_quiet_and_keeps_the_properties(tmp_path: Path) -> None:
    xml = tmp_path / "junit.xml"
    done, _ = run_pytest(
        tmp_path / "reports",
        str(SUITES / "test_lifecycle.py"), "--harness-embedded-engine",
        "-k", "broken and (magic or truncated)",
        "--junitxml", str(xml),
        cwd=SUITES.parent, timeout=240,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "warnings summary" not in output and "Warning:" not in output, output[-4000:]
    cases = ET.parse(xml).getroot().findall(".//testcase")
    assert len(cases) >= 2
    for case in cases:
        properties = {prop.get("name"): prop.get("value") for prop in case.iter("property")}
        assert properties["stage"] in ("create", "load", "generate"), properties
        assert properties["error"] and properties["checker_codes"].startswith("["), properties
    run = load_run(tmp_path / "reports" / "latest")
    recorded = [record for record in run.of_kind("test") if record.get("properties")]
    assert {"stage", "error", "checker_codes"} <= set(recorded[0]["properties"])
