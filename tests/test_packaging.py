"""The wheel works on its own: it carries the profiles, Modelfile templates and suites, and an install in a
fresh virtual environment, outside the checkout, builds fixtures, lists templates and runs the suites."""

from __future__ import annotations

import re
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from harness import DISTRIBUTION
from harness.datafiles import DATA_FOLDERS
from harness.testing.helpers import clean_environ

ROOT = Path(__file__).resolve().parents[1]


def _project_files() -> list[str]:
    """The files a build sees: tracked, plus new ones git does not ignore."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    return [name for name in listed if (ROOT / name).is_file()]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built from a clean copy of its files (no stale build/ folder)."""
    source = tmp_path_factory.mktemp("source")
    for name in _project_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes((ROOT / name).read_bytes())
    out = tmp_path_factory.mktemp("wheel")
    command = [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation"]
    built = subprocess.run([*command, "-q", "-w", str(out)], capture_output=True, text=True, check=False)
    assert built.returncode == 0, built.stderr
    (path,) = out.glob("*.whl")
    return path


def test_the_wheel_carries_the_package_and_its_data(wheel: Path) -> None:
    assert wheel.name.startswith(DISTRIBUTION.replace("-", "_") + "-")
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {str(path.relative_to(ROOT)) for path in (ROOT / "harness").rglob("*.py")}
    assert modules - names == set(), "modules missing from the wheel"
    for folder in DATA_FOLDERS:
        shipped = {
            f"harness/data/{name}"
            for name in _project_files()
            if name.startswith(f"{folder}/") and "__pycache__" not in name
        }
        assert shipped, folder
        assert shipped - names == set(), f"{folder}/ files missing from the wheel"
    assert {"harness/data/__init__.py", "harness/data/suites/__init__.py"} <= names  # for --pyargs
    assert not [name for name in names if name.startswith(("tests/", "reports/", "benchmarks/"))]
    metadata = zipfile.ZipFile(wheel).read(f"{wheel.name.split('-')[0]}-0.1.0.dist-info/METADATA").decode()
    assert f"Name: {DISTRIBUTION}" in metadata
    assert "pyinstrument" not in metadata


@pytest.mark.slow  # about 100 s on 2 cores: pip installs every dependency into the fresh venv
def test_the_wheel_works_in_a_fresh_venv_outside_the_checkout(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    work = tmp_path / "work"
    work.mkdir()
    env = clean_environ(HARNESS_CACHE_DIR=str(tmp_path / "cache"))

    def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args, cwd=work, env=env, capture_output=True, text=True, check=False, timeout=timeout
        )

    built = run(str(env_dir / "bin" / "harness"), "gguf", "build", "--profile", "oracle", "-o", "oracle.gguf")
    assert built.returncode == 0, built.stderr
    assert (work / "oracle.gguf").stat().st_size > 0
    listed = run(str(env_dir / "bin" / "harness"), "modelfile", "list")
    assert listed.returncode == 0, listed.stderr
    templates = dict(line.split("\t") for line in listed.stdout.splitlines())
    assert {"fixture", "llama3", "chatml", "gemma"} <= set(templates)
    assert all(str(env_dir) in path for path in templates.values())  # the installed copies, not the repo's
    suites = run(
        str(python), "-m", "pytest", "--pyargs", "harness.data.suites", "--harness-embedded-engine",
        "-p", "no:cacheprovider", "-q", "-rxs", timeout=600,
    )  # fmt: skip
    output = suites.stdout + suites.stderr
    assert suites.returncode == 0, output[-4000:]
    assert "--harness-embedded-engine: this session started the embedded engine" in output  # the header
    # the quality suites are expected failures on the fixture model (graded about zero): xfailed
    xfailed = re.search(r"(\d+) xfailed", output)
    assert xfailed and int(xfailed.group(1)) >= 2, output[-2000:]
    assert (work / "reports" / "latest").exists()
