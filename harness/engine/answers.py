"""The shapes of the engine's answers: NDJSON streams or one combined object, `logprobs`, the
`_debug_render_only` answer, and /api/show's parameters and Modelfile texts (Ollama's server/routes.go and
api/types.go)."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from starlette.responses import JSONResponse, Response, StreamingResponse

from harness.engine.routing import (
    ApiError,
    error_body,
    error_response,
)
from harness.engine.store import (
    Manifest,
)

NDJSON = "application/x-ndjson"


def now() -> str:
    """`created_at`: the local time with its offset, as Go's time.Time marshals."""
    return datetime.now(timezone.utc).astimezone().isoformat()


async def respond(
    events: AsyncGenerator[dict[str, Any], None],
    stream: bool,
    combine: Callable[[list[dict[str, Any]]], dict[str, Any]],
) -> Response:
    """NDJSON when streaming (errors before the first line get their status, later ones go in-band);
    otherwise one JSON object built by `combine`, errors with their status."""
    if not stream:
        collected = []
        try:
            async for event in events:
                collected.append(event)
        except ApiError as error:
            return error_response(error.status, error.message)
        return JSONResponse(combine(collected))
    try:
        first = await events.__anext__()
    except StopAsyncIteration:
        return Response(b"", media_type=NDJSON)
    except ApiError as error:
        return error_response(error.status, error.message)

    async def lines() -> AsyncIterator[bytes]:
        yield json.dumps(first).encode() + b"\n"
        try:
            async for event in events:
                yield json.dumps(event).encode() + b"\n"
        except ApiError as error:
            yield json.dumps(error_body(error.message)).encode() + b"\n"
        finally:
            await events.aclose()

    return StreamingResponse(lines(), media_type=NDJSON)


def logprobs(event: dict[str, Any], top: int) -> list[dict[str, Any]]:
    """Ollama's `logprobs` of one runner event: token, logprob and bytes of each sampled token, with its
    `top` most likely alternatives when `top` > 0 (llama-server's `completion_probabilities`)."""

    def entry(probability: dict[str, Any]) -> dict[str, Any]:
        token = {"token": probability.get("token", ""), "logprob": probability.get("logprob", 0.0)}
        return {**token, "bytes": probability["bytes"]} if probability.get("bytes") else token

    converted = []
    for probability in event.get("completion_probabilities") or []:
        item = entry(probability)
        if top > 0:
            item["top_logprobs"] = [entry(p) for p in (probability.get("top_logprobs") or [])[:top]]
        converted.append(item)
    return converted


def rendered_only(body: dict[str, Any], empty: dict[str, Any], prompt: str) -> dict[str, Any]:
    """Ollama's answer to `_debug_render_only`: the rendered prompt, nothing generated."""
    return {
        "model": body["model"],
        "created_at": now(),
        **empty,
        "done": False,
        "_debug_info": {"rendered_template": prompt},
    }


def combine_generation(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """The one answer of a non-streamed generate or chat: the last chunk with every chunk's text joined."""
    final = dict(chunks[-1])
    if any("logprobs" in chunk for chunk in chunks):
        final["logprobs"] = [item for chunk in chunks for item in chunk.get("logprobs", [])]
    if "message" in final:
        final["message"] = {**final["message"], "content": "".join(c["message"]["content"] for c in chunks)}
        calls = [call for c in chunks for call in c["message"].get("tool_calls", [])]
        if calls:
            final["message"]["tool_calls"] = calls
        thinking = "".join(c["message"].get("thinking", "") for c in chunks)
        if thinking:
            final["message"] = {**final["message"], "thinking": thinking}
    else:
        final["response"] = "".join(c.get("response", "") for c in chunks)
        thinking = "".join(c.get("thinking", "") for c in chunks)
        if thinking:
            final["thinking"] = thinking
    return final


def parameters_text(parameters: dict[str, Any]) -> str:
    """/api/show's `parameters`: one `name value` line per value."""
    lines = []
    for key, value in parameters.items():
        for item in value if isinstance(value, list) else [value]:
            lines.append(f"{key:<30} {json.dumps(item) if isinstance(item, str) else item}")
    return "\n".join(lines)


def modelfile_text(
    manifest: Manifest,
    model_path: Path,
    template: str | None,
    system: str | None,
    parameters: dict[str, Any],
    licenses: list[str],
) -> str:
    """/api/show's `modelfile`: the Modelfile Ollama writes for a stored model."""
    lines = [
        '# Modelfile generated by "ollama show"',
        "# To build a new Modelfile based on this, replace FROM with:",
        f"# FROM {manifest.name}",
        "",
        f"FROM {model_path}",
    ]
    if template:
        lines.append(f'TEMPLATE """{template}"""')
    if system:
        lines.append(f'SYSTEM """{system}"""')
    for key, value in parameters.items():
        for item in value if isinstance(value, list) else [value]:
            lines.append(f"PARAMETER {key} {json.dumps(item) if isinstance(item, str) else item}")
    lines.extend(f'LICENSE """{text}"""' for text in licenses)
    return "\n".join(lines) + "\n"
