"""Ollama's model capabilities, and the request checks that depend on them.

A model's capabilities (`/api/show` `capabilities`, Ollama's `Model.Capabilities`): `embedding` when its GGUF
has a `<arch>.pooling_type` key, else `completion`; `tools` and `insert` when its template uses `.Tools` or
`.Suffix`; `thinking` when its template has thinking tags (thinking.py). Models of this engine never have
`vision` (no projector).

Before a request is scheduled Ollama checks it against them (server/routes.go), in this order: the `think`
value (`invalid think value: ...`; true or a level on a model without thinking: `"<model>" does not support
thinking`), then the capabilities the request needs: `completion`
(`"<model>" does not support generate` / `chat`), `insert` for a `suffix`, `tools` for `tools`
(`<host>/<namespace>/<model>:<tag> does not support insert`). All are 400s.

One case answers differently, with a 400 that says why: images (this engine runs no vision projector).
Tools on a model with the `tools` capability are served as Ollama serves them (see tools.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from harness.engine.names import ModelName
from harness.engine.routing import ApiError
from harness.engine.thinking import ThinkSetting, think_setting


def model_capabilities(*, pooling: bool, template_vars: Iterable[str], thinking: bool = False) -> list[str]:
    """Ollama's capability list for a model: its GGUF has a pooling type or not; its template's variables;
    whether its template has thinking tags (thinking.py)."""
    names = {name.lower() for name in template_vars}
    capabilities = ["embedding" if pooling else "completion"]
    if "tools" in names:
        capabilities.append("tools")
    if "suffix" in names:
        capabilities.append("insert")
    if thinking:
        capabilities.append("thinking")
    return capabilities


def check_request(
    endpoint: str, raw_name: str, capabilities: list[str], body: dict[str, Any]
) -> ThinkSetting:
    """Ollama's capability checks for a /api/generate or /api/chat body (ApiError 400); the request's
    effective `think`."""
    think = think_setting(raw_name, capabilities, body)
    if "completion" not in capabilities:
        raise ApiError(400, f"{json.dumps(raw_name)} does not support {endpoint}")
    needed = []
    if endpoint == "generate" and body.get("suffix"):
        needed.append("insert")
    if endpoint == "chat" and body.get("tools"):
        needed.append("tools")
    missing = [capability for capability in needed if capability not in capabilities]
    if missing:
        raise ApiError(400, f"{ModelName.parse(raw_name).full()} does not support " + "\n".join(missing))
    messages = body.get("messages")
    messages = messages if isinstance(messages, list) else []
    if body.get("images") or any(isinstance(m, dict) and m.get("images") for m in messages):
        raise ApiError(
            400,
            "images are not supported by the embedded engine: it runs no vision projector (Ollama can, for "
            "a vision model); test image input against Ollama",
        )
    return think
