"""The import graph of `harness/`: no cycles, and every import runs down the README's table of layers.

Every `import` counts, including those inside functions (a lazy import is for start-up time, never a way
around the layering)."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "harness"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _imports(name: str, path: Path) -> Iterator[str]:
    """The harness modules `name` imports (a `from package import module` names the module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name in MODULES)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            for alias in node.names:
                target = f"{source}.{alias.name}"
                if target in MODULES:
                    yield target
                elif source in MODULES:
                    yield source


GRAPH = {
    name: {target for target in _imports(name, path) if target != name} for name, path in MODULES.items()
}


def _unit(module: str) -> str:
    """The layering unit of a module: its package under harness/, or the module itself at the root."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "harness"


def _layers() -> dict[str, int]:
    """`unit -> layer` from the README's "Layers" table."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("### Layers", 1)[1].split("\n### ", 1)[0]
    layers = {}
    for line in section.splitlines():
        match = re.match(r"\|\s*(\d+)\s*\|(.*)\|\s*$", line)
        if match:
            for unit in re.findall(r"`([^`]+)`", match.group(2)):
                layers[unit] = int(match.group(1))
    return layers


def _cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in GRAPH[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(GRAPH):
        if node not in index:
            visit(node)
    return found


def test_the_import_graph_has_no_cycles() -> None:
    assert _cycles() == []


def test_every_unit_has_a_layer_in_the_readme() -> None:
    units = {_unit(name) for name in MODULES} - {"harness"}
    missing = sorted(units - set(_layers()))
    assert not missing, f"packages or root modules missing from the README's Layers table: {missing}"


def test_imports_run_down_the_layers() -> None:
    layers = {**_layers(), "harness": 0}  # harness/__init__.py: the version only
    upward = [
        f"{name} -> {target}"
        for name, targets in sorted(GRAPH.items())
        for target in sorted(targets)
        if _unit(name) != _unit(target) and layers[_unit(target)] >= layers[_unit(name)]
    ]
    assert not upward, f"imports that do not run down the layers: {upward}"


@pytest.mark.parametrize(
    ("source", "imported"),
    [
        ("from harness.report.metrics import collect_metrics\n", "harness.report.metrics"),
        ("from harness.gguf import archs\n", "harness.gguf.archs"),
        ("def f():\n    import harness.runs\n", "harness.runs"),
    ],
)
def test_the_walk_sees_every_import_form(tmp_path: Path, source: str, imported: str) -> None:
    path = tmp_path / "probe.py"
    path.write_text(source)
    assert imported in set(_imports("harness.probe", path))


def test_a_circle_is_found() -> None:
    saved = {name: set(targets) for name, targets in GRAPH.items()}
    try:
        GRAPH["harness.errors"].add("harness.runs")  # runs imports errors: now a circle
        assert ["harness.errors", "harness.runs"] in _cycles()
    finally:
        GRAPH.clear()
        GRAPH.update(saved)
