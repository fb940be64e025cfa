"""The suites run under the ollama-harness pytest plugin; this activates it for `pytest suites/`.

Everything else (options, the server, the run record, fixtures) lives in `harness.pytest_plugin`.
"""

from __future__ import annotations

import pytest

from harness.pytest_plugin import activate


def pytest_configure(config: pytest.Config) -> None:
    activate(config)
