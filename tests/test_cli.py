"""The `harness` command: every command listed by `harness --help` without importing it, each help line the
one its module registers, and a command importing only its own area."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import COMMANDS, build_parser
from harness.gguf.build import build_gguf
from harness.gguf.spec import load_profile


def test_help_lists_each_command_with_the_line_its_module_registers() -> None:
    full = build_parser().format_help()  # every module imported and registered
    assert build_parser(["--help"]).format_help() == full  # help lines from COMMANDS only
    for name, (_, help_line) in COMMANDS.items():
        assert name in full and " ".join(help_line.split()[:4]) in " ".join(full.split())


def test_a_chosen_command_is_fully_registered_and_the_others_listed() -> None:
    parser = build_parser(["gguf", "check", "x.gguf"])
    assert parser.format_help() == build_parser().format_help()
    args = parser.parse_args(["gguf", "check", "x.gguf", "--format", "sarif"])
    assert args.paths == ["x.gguf"] and args.format == "sarif"


def _modules_after(argv: list[str]) -> set[str]:
    probe = (
        "import contextlib, io, sys\n"
        "from harness.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        f"        main({argv!r})\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    return set(done.stdout.split())


@pytest.fixture(scope="module")
def no_template_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = load_profile("tiny").replace(n_layer=1, chat_template="")
    return build_gguf(spec, tmp_path_factory.mktemp("cli") / "plain.gguf").path


def test_a_metadata_check_imports_no_numpy_gguf_jinja_or_engine(no_template_model: Path) -> None:
    loaded = _modules_after(["gguf", "check", str(no_template_model)])
    assert "harness.gguf.check" in loaded
    heavy = {"numpy", "gguf", "jinja2", "harness.engine", "harness.report", "httpx", "xllamacpp"}
    assert not heavy & loaded, heavy & loaded


def test_help_imports_no_command_module() -> None:
    loaded = _modules_after(["--help"])
    assert not {module for module, _ in COMMANDS.values()} & loaded
