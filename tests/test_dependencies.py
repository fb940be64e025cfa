"""Declared dependencies match imports: every third-party module `harness/` and `suites/` import comes from a
distribution pyproject.toml declares (core, or the extra of the optional feature), every core dependency is
used, and the lock file pins every declared dependency at a version its specifier allows."""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
SHIPPED_EXTRAS = ("plot", "scale")  # the extras a user installs; "dev" is the project's own tooling
# Core dependencies no module imports by name, and why they are declared.
USED_WITHOUT_IMPORT = {
    "pytest-timeout": "the suites' per-test timeouts (pytest.mark.timeout, harness/plugin/hooks.py)",
}


def _declared(requirements: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(text).name) for text in requirements}


_PACKAGES = functools.cache(importlib.metadata.packages_distributions)
CORE = _declared(PYPROJECT["dependencies"])
EXTRAS = {name: _declared(PYPROJECT["optional-dependencies"][name]) for name in SHIPPED_EXTRAS}


def _imported_modules() -> dict[str, set[str]]:
    """Top-level third-party module -> the files importing it (lazy imports included)."""
    found: dict[str, set[str]] = {}
    for folder in ("harness", "suites"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in ("harness", "suites"):
                        found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


@functools.cache
def _distributions(module: str) -> frozenset[str]:
    """The distributions providing `module`; one not installed here (tomli on Python 3.11+) by its name."""
    names = _PACKAGES().get(module) or [module]
    return frozenset(canonicalize_name(name) for name in names)


def test_every_import_comes_from_a_declared_distribution() -> None:
    declared = CORE.union(*EXTRAS.values())
    undeclared = {
        module: sorted(files)
        for module, files in _imported_modules().items()
        if not _distributions(module) & declared
    }
    assert undeclared == {}, "imported, but no declared dependency provides them"


def test_every_core_dependency_is_used() -> None:
    imported = set().union(*(_distributions(module) for module in _imported_modules()))
    unused = CORE - imported - {canonicalize_name(name) for name in USED_WITHOUT_IMPORT}
    assert unused == set(), f"declared but never imported: {sorted(unused)}"


def test_no_private_names_of_the_ollama_client() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "harness").rglob("*.py")
        if "ollama._" in path.read_text(encoding="utf-8")
    ]
    assert offenders == []


def test_the_lock_file_pins_every_declared_dependency_within_its_range() -> None:
    pins: dict[str, list[Requirement]] = {}
    for line in (ROOT / "requirements-dev.lock").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            requirement = Requirement(line)
            pins.setdefault(canonicalize_name(requirement.name), []).append(requirement)
    declared = [*PYPROJECT["dependencies"], *PYPROJECT["optional-dependencies"]["dev"]]
    for extra in SHIPPED_EXTRAS:
        declared += PYPROJECT["optional-dependencies"][extra]
    for text in declared:
        wanted = Requirement(text)
        locked = pins.get(canonicalize_name(wanted.name))
        if wanted.marker is not None and not locked:
            continue  # only for other Pythons (tomli below 3.11) and resolved away
        assert locked, f"{wanted.name} is declared but not in requirements-dev.lock"
        for pin in locked:
            (version,) = (spec.version for spec in pin.specifier)
            assert wanted.specifier.contains(version, prereleases=True), f"{pin} outside {wanted.specifier}"
