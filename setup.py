"""Build step: ship the repository's data folders inside the package.

`fixtures/` (profiles), `modelfiles/` (templates) and `suites/` (the pytest suites and their data) stay at the
top of the repository, the source of truth; a built wheel carries copies as `harness/data/<folder>`, which
`harness.datafiles` finds through importlib.resources. Everything else is in pyproject.toml.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
DATA_FOLDERS = ("fixtures", "modelfiles", "suites")  # harness.datafiles.DATA_FOLDERS
SKIPPED = ("__pycache__", ".pytest_cache")


def data_files(folder: Path) -> list[Path]:
    """The files of a data folder, without caches and hidden files."""
    return sorted(
        path
        for path in folder.rglob("*")
        if path.is_file()
        and not any(part in SKIPPED or part.startswith(".") for part in path.relative_to(folder).parts)
        and path.suffix != ".pyc"
    )


class BuildPyWithData(build_py):
    """build_py, plus the data folders copied to harness/data/ (and made packages, for `pytest --pyargs`)."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the repository's folders themselves
        target = Path(self.build_lib) / "harness" / "data"
        for folder in DATA_FOLDERS:
            for path in data_files(ROOT / folder):
                destination = target / folder / path.relative_to(ROOT / folder)
                self.mkpath(str(destination.parent))
                self.copy_file(str(path), str(destination))
        for package in (target, target / "suites"):
            init = package / "__init__.py"
            if not init.exists():
                init.write_text('"""Data shipped with ollama-test-harness (see harness.datafiles)."""\n')


setup(cmdclass={"build_py": BuildPyWithData})
