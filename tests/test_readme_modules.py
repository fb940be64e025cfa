"""The README's "How it works" module table names every module of the harness, and nothing that is gone."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "harness"


def _table_rows() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## How it works", 1)[1]
    return [line for line in section.splitlines() if line.startswith("| `harness/")]


def _named_paths() -> set[Path]:
    """Every module a row names: `harness/...` paths, and bare `x.py` names in the folder named before."""
    named: set[Path] = set()
    for row in _table_rows():
        folder = PACKAGE
        for name in re.findall(r"`([^`]+)`", row):
            if name.startswith("harness/"):
                path = ROOT / name
                folder = path if name.endswith("/") else path.parent
                if not name.endswith("/"):
                    named.add(path)
            elif name.endswith(".py"):
                named.add(folder / name)
    return named


def test_every_module_is_in_the_readme_table() -> None:
    modules = {path for path in PACKAGE.rglob("*.py") if path.name != "__init__.py"}
    missing = sorted(str(path.relative_to(ROOT)) for path in modules - _named_paths())
    assert not missing, f"modules missing from the README's module table: {missing}"


def test_every_module_in_the_readme_table_exists() -> None:
    stale = sorted(str(path.relative_to(ROOT)) for path in _named_paths() if not path.exists())
    assert not stale, f"the README's module table names modules that do not exist: {stale}"
