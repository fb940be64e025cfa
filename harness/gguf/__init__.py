"""Build and check GGUF files: specs and profiles, vocab, weight recipes, file plans, the streaming writer.

The names below are imported on first use (PEP 562), not with the package: `harness gguf check` must start
without numpy and gguf-py, which the builder needs.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BuiltModel": "harness.gguf.build",
    "build_cached": "harness.gguf.build",
    "build_gguf": "harness.gguf.build",
    "write_gguf": "harness.gguf.build",
    "KV": "harness.gguf.plan",
    "GGUFPlan": "harness.gguf.plan",
    "TensorPlan": "harness.gguf.plan",
    "plan_gguf": "harness.gguf.plan",
    "ModelSpec": "harness.gguf.spec",
    "OracleSpec": "harness.gguf.spec",
    "list_profiles": "harness.gguf.spec",
    "load_profile": "harness.gguf.spec",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'harness.gguf' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
