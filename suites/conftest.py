"""The suites run under the ollama-harness pytest plugin; this activates it for `pytest suites/`.

Everything else (options, the server, the run record, fixtures) lives in `harness.plugin.entry`.
"""

from __future__ import annotations

import pytest

from harness.plugin.entry import activate

# Hypothesis's pytest plugin (installed for the harness's own tests) imports hypothesis in every run's
# terminal summary: about a second of the suites' wall time, for suites that do not use it.
UNUSED_PLUGINS = ("hypothesispytest",)


def pytest_configure(config: pytest.Config) -> None:
    activate(config)
    for name in UNUSED_PLUGINS:
        plugin = config.pluginmanager.get_plugin(name)
        if plugin is not None and "hypothesis" not in str(config.invocation_params.args):
            config.pluginmanager.unregister(plugin)
