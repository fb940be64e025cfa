"""The plugin's pytest options cannot clash with other plugins' (it loads in every pytest run of the
environment): everything but the documented `--ollama-host` carries the `--harness-` prefix."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from harness.testing.helpers import clean_environ

# Options other plugins register: pytest-profiling's --profile, and the generic names the harness once took.
OTHER_PLUGIN = """
def pytest_addoption(parser):
    for name in ("--profile", "--model", "--threshold", "--repeats", "--gguf", "--matrix", "--max-items",
                 "--num-predict", "--run-dir", "--modelfile", "--keep-models", "--request-timeout"):
        parser.addoption(name, action="store", default=None, dest="other_" + name[2:].replace("-", "_"))
"""

PROBE = """
def test_options(pytestconfig):
    print("OTHER", pytestconfig.getoption("other_profile"), pytestconfig.getoption("other_model"))
    print("HARNESS", pytestconfig.getoption("harness_profile"), pytestconfig.getoption("harness_model"),
          pytestconfig.getoption("harness_repeats"), pytestconfig.getoption("ollama_host"))
"""


def _pytest(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "other_plugin.py").write_text(OTHER_PLUGIN)
    (tmp_path / "test_probe.py").write_text(PROBE)
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "other_plugin", "-s", "-q"]
    return subprocess.run(
        [*command, *args],
        cwd=tmp_path,
        env=clean_environ(PYTHONPATH=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_loads_beside_a_plugin_that_registers_the_generic_names(tmp_path: Path) -> None:
    done = _pytest(
        tmp_path,
        "--profile", "cpu", "--model", "theirs", "--repeats", "7",
        "--harness-profile", "tiny", "--harness-model", "ours", "--harness-repeats", "3",
        "--ollama-host", "localhost:1",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "conflicting option" not in done.stderr
    assert "OTHER cpu theirs" in done.stdout
    assert "HARNESS tiny ours 3 ['localhost:1']" in done.stdout


def test_every_plugin_option_carries_the_prefix(tmp_path: Path) -> None:
    done = _pytest(tmp_path, "--help")
    section = done.stdout.split("ollama-harness suites", 1)[1].split("\n\n", 1)[0]
    names = re.findall(r"^\s{2}(--[\w-]+)", section, flags=re.MULTILINE)
    assert "--ollama-host" in names and len(names) > 10
    assert [name for name in names if name != "--ollama-host" and not name.startswith("--harness-")] == []
