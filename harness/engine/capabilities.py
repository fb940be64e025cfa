"""Ollama's model capabilities, and the request checks that depend on them.

A model's capabilities (`/api/show` `capabilities`, Ollama's `Model.Capabilities`): `embedding` when its GGUF
has a `<arch>.pooling_type` key, else `completion`; `tools` and `insert` when its template uses `.Tools` or
`.Suffix`. Models of this engine never have `vision` or `thinking` (no projector, no thinking parser).

Before a request is scheduled Ollama checks it against them (server/routes.go), in this order: a string
`think` value (`think value "high" is not supported for this model`), `think: true` on a model without
thinking (`"<model>" does not support thinking`), then the capabilities the request needs: `completion`
(`"<model>" does not support generate` / `chat`), `insert` for a `suffix`, `tools` for `tools`
(`<host>/<namespace>/<model>:<tag> does not support insert`). All are 400s.

Two cases answer differently, both with a 400 that says why: images (this engine runs no vision projector)
and `tools` on a model whose template uses `.Tools` (Ollama's `tools` capability, but this engine cannot
parse tool calls out of the output).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from harness.engine.names import ModelName
from harness.engine.routing import ApiError


def model_capabilities(*, pooling: bool, template_vars: Iterable[str]) -> list[str]:
    """Ollama's capability list for a model: its GGUF has a pooling type or not; its template's variables."""
    names = {name.lower() for name in template_vars}
    capabilities = ["embedding" if pooling else "completion"]
    if "tools" in names:
        capabilities.append("tools")
    if "suffix" in names:
        capabilities.append("insert")
    return capabilities


def check_request(endpoint: str, raw_name: str, capabilities: list[str], body: dict[str, Any]) -> None:
    """Ollama's capability checks for a /api/generate or /api/chat body; raises ApiError(400)."""
    think = body.get("think")
    if isinstance(think, str) and think:
        raise ApiError(400, f"think value {json.dumps(think)} is not supported for this model")
    if think:
        raise ApiError(400, f"{json.dumps(raw_name)} does not support thinking")
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
    if "tools" in needed:
        raise ApiError(
            400,
            "tools are not supported by the embedded engine: it cannot parse tool calls out of a model's "
            "output (Ollama can); test tool calling against Ollama",
        )
