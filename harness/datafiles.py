"""Where the harness's data folders are: `fixtures/` (profiles), `modelfiles/` (templates), `suites/` (the
pytest suites and their data).

In a checkout of the repository (an editable install) they are the repository's top-level folders, the
source of truth. An installed wheel carries copies of them in the package, as `harness/data/<folder>`
(setup.py's build step maps them there), found through `importlib.resources`.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

DATA_FOLDERS = ("fixtures", "modelfiles", "suites")
PACKAGED_DATA = "data"  # harness/data/<folder> inside a built wheel
_CHECKOUT = Path(__file__).resolve().parents[1]


def in_checkout() -> bool:
    """True when `harness` is imported from a checkout of the repository rather than an installed wheel."""
    return (_CHECKOUT / "pyproject.toml").is_file() and (_CHECKOUT / "suites").is_dir()


def data_dir(folder: str) -> Path:
    """The folder `fixtures`, `modelfiles` or `suites`: the repository's own in a checkout, else the copy
    shipped in the package."""
    if folder not in DATA_FOLDERS:
        raise ValueError(f"unknown data folder {folder!r} (one of {', '.join(DATA_FOLDERS)})")
    if in_checkout():
        return _CHECKOUT / folder
    # A wheel installs as plain files, so the package's resources are a real folder on disk.
    return Path(str(resources.files("harness") / PACKAGED_DATA / folder))
