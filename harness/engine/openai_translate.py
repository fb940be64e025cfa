"""OpenAI requests into Ollama's, and Ollama's answers back into OpenAI's shapes, as Ollama's
`openai/openai.go` does it (`FromChatRequest`, `FromCompleteRequest`, `ToChatCompletion`, `ToChunk`,
`ToCompletion`, `ToEmbeddingList`...). Pure functions on decoded JSON; the routes that use them are
`openai_compat.py` and `openai_responses.py`."""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from harness.engine.godecode import (
    go_dynamic_type,
)
from harness.modelfile.gotemplate import go_json

if TYPE_CHECKING:
    pass

SYSTEM_FINGERPRINT = "fp_ollama"
ENCODING_FORMATS = ("float", "base64")
REASONING_EFFORTS = ("high", "medium", "low", "none")
IMAGE_PREFIXES = tuple(f"data:image/{kind};base64," for kind in ("jpeg", "jpg", "png", "webp"))


class OpenAIRequestError(Exception):
    """A fault of the OpenAI request itself: 400 `invalid_request_error`."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# --- OpenAI request -> Ollama request -------------------------------------------------------------------


def _unsupported(what: str) -> OpenAIRequestError:
    return OpenAIRequestError(f"{what} is not supported by the embedded engine")


def _check_image_part(part: Mapping[str, Any]) -> None:
    """Ollama's checks of an image_url part, then the refusal: this engine runs no vision model."""
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise OpenAIRequestError("invalid message format")
    if url.startswith(("http://", "https://")):
        raise OpenAIRequestError(
            "image URLs are not currently supported, please use base64 encoded data instead"
        )
    prefix = next((p for p in ("data:;base64,", *IMAGE_PREFIXES) if url.startswith(p)), None)
    if prefix is None:
        raise OpenAIRequestError("invalid image input")
    try:
        base64.b64decode(url[len(prefix) :], validate=True)
    except (binascii.Error, ValueError):
        raise OpenAIRequestError("invalid image input") from None
    raise _unsupported("image_url content")


def ollama_tool_calls(calls: list[Any]) -> list[dict[str, Any]]:
    """Ollama tool calls for OpenAI ones (`FromCompletionToolCall`): the arguments string decoded."""
    converted = []
    for call in calls:
        call = call if isinstance(call, dict) else {}
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        try:
            arguments = json.loads(function.get("arguments") or "")
        except (TypeError, ValueError):
            raise OpenAIRequestError("invalid tool call arguments") from None
        if not isinstance(arguments, dict):
            raise OpenAIRequestError("invalid tool call arguments")
        entry = {"function": {"name": str(function.get("name") or ""), "arguments": arguments}}
        converted.append({"id": str(call["id"]), **entry} if call.get("id") else entry)
    return converted


def _tool_name(messages: list[dict[str, Any]], message: Mapping[str, Any]) -> str:
    """A tool message's tool name: its `name`, else the name of the call its `tool_call_id` answers (the
    last such call)."""
    if str(message.get("role") or "").lower() != "tool":
        return ""
    if message.get("name") or not message.get("tool_call_id"):
        return str(message.get("name") or "")
    for earlier in reversed(messages):
        for call in earlier.get("tool_calls") or []:
            if isinstance(call, dict) and call.get("id") == message["tool_call_id"]:
                return str((call.get("function") or {}).get("name") or "")
    return ""


def ollama_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ollama chat messages for OpenAI ones (`FromChatRequest`): each text part is a message of its own;
    tool calls, tool results (named after their call) and `reasoning` (as thinking) carried over."""
    converted: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role") or ""
        content = message.get("content")
        extra = {
            "thinking": message.get("reasoning") or "",
            "tool_calls": ollama_tool_calls(message.get("tool_calls") or []),
            "tool_name": _tool_name(messages, message),
            "tool_call_id": message.get("tool_call_id") or "",
        }
        if isinstance(content, str):
            converted.append({"role": role, "content": content, **extra})
            continue
        if not isinstance(content, list):
            if message.get("tool_calls") is None:  # content is optional only with tool calls
                raise OpenAIRequestError(f"invalid message content type: {go_dynamic_type(content)}")
            converted.append({"role": role, "content": "", **extra, "tool_name": ""})
            continue
        for part in content:
            if not isinstance(part, dict):
                raise OpenAIRequestError("invalid message format")
            if part.get("type") == "image_url":
                _check_image_part(part)
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise OpenAIRequestError("invalid message format")
            converted.append({"role": role, "content": part["text"]})
        if converted and message.get("tool_calls"):
            converted[-1].update(extra)
    return converted


def _stop_option(stop: Any, *, strict: bool) -> list[str] | None:
    """`stop` as Ollama's option: a string or the strings of a list (a non-string is skipped, or an error
    when `strict`, as in `FromCompleteRequest`); None when not set."""
    if isinstance(stop, str):
        return [stop]
    if not isinstance(stop, list):
        return None
    for item in stop:
        if strict and not isinstance(item, str):
            raise OpenAIRequestError(f"invalid type for 'stop' field: {go_dynamic_type(item)}")
    return [item for item in stop if isinstance(item, str)] or None


def _reasoning_effort(data: Mapping[str, Any]) -> str:
    """The requested reasoning effort ("" when none), checked as Ollama checks it."""
    if isinstance(data.get("reasoning"), dict):
        effort = data["reasoning"].get("effort") or ""
    else:
        effort = data.get("reasoning_effort") or ""
    if effort and effort not in REASONING_EFFORTS:
        raise OpenAIRequestError(
            f'invalid reasoning value: \'{effort}\' (must be "high", "medium", "low", or "none")'
        )
    return str(effort)


def _length_and_temperature(data: Mapping[str, Any], *, strict_stop: bool) -> dict[str, Any]:
    """The options both middlewares set alike: stop, num_predict from max_tokens, temperature (default 1)."""
    options: dict[str, Any] = {}
    stop = _stop_option(data.get("stop"), strict=strict_stop)
    if stop is not None:
        options["stop"] = stop
    if data.get("max_tokens") is not None:
        options["num_predict"] = data["max_tokens"]
    options["temperature"] = 1.0 if data.get("temperature") is None else data["temperature"]
    return options


def chat_request_to_ollama(data: Mapping[str, Any]) -> dict[str, Any]:
    """The /api/chat body for a (type-checked) chat completions request, with `think` when a reasoning
    effort is given (as Ollama's ChatRequest has it); unsupported fields raise."""
    messages = data.get("messages") or []
    if not messages:
        raise OpenAIRequestError("[] is too short - 'messages'")
    converted = ollama_messages(messages)
    options = _length_and_temperature(data, strict_stop=False)
    for name in ("seed", "frequency_penalty", "presence_penalty"):
        if data.get(name) is not None:
            options[name] = data[name]
    options["top_p"] = 1.0 if data.get("top_p") is None else data["top_p"]
    effort = _reasoning_effort(data)
    response_format = data.get("response_format") or {}
    format_type = str(response_format.get("type") or "").strip().lower()
    output_format: Any = None
    if format_type == "json_object":  # Ollama's ChatMiddleware: the old type means format "json"
        output_format = "json"
    elif format_type == "json_schema" and response_format.get("json_schema"):
        output_format = (response_format["json_schema"] or {}).get("schema")
    body = {
        "model": data.get("model") or "",
        "messages": converted,
        "options": options,
        "stream": bool(data.get("stream")),
    }
    if effort:
        body["think"] = False if effort == "none" else effort  # as FromChatRequest: a level, or off
    if output_format is not None:
        body["format"] = output_format
    if data.get("tools"):
        body["tools"] = data["tools"]
    if data.get("logprobs"):
        body["logprobs"] = True
    if data.get("_debug_render_only"):
        body["_debug_render_only"] = True
    if data.get("top_logprobs") is not None:
        body["top_logprobs"] = data["top_logprobs"]
    return body


def completion_request_to_ollama(data: Mapping[str, Any]) -> dict[str, Any]:
    """The /api/generate body for a (type-checked) completions request; unsupported fields raise."""
    options = _length_and_temperature(data, strict_stop=True)
    if data.get("seed") is not None:
        options["seed"] = data["seed"]
    options["frequency_penalty"] = data.get("frequency_penalty") or 0.0
    options["presence_penalty"] = data.get("presence_penalty") or 0.0
    options["top_p"] = data.get("top_p") or 1.0
    if (data.get("logprobs") or 0) > 0:
        raise _unsupported("logprobs")
    body = {
        "model": data.get("model") or "",
        "prompt": data.get("prompt") or "",
        "options": options,
        "stream": bool(data.get("stream")),
    }
    if data.get("_debug_render_only"):
        body["_debug_render_only"] = True
    if data.get("suffix"):
        body["suffix"] = data["suffix"]  # the engine's capability check answers it, as Ollama's does
    return body


def embed_request_to_ollama(data: Mapping[str, Any]) -> dict[str, Any]:
    """The /api/embed body for a (type-checked) embeddings request, checked as `EmbeddingsMiddleware` does."""
    encoding_format = data.get("encoding_format") or ""
    if encoding_format and encoding_format.lower() not in ENCODING_FORMATS:
        raise OpenAIRequestError(
            f"Invalid value for 'encoding_format' = {encoding_format}. Supported values: ['float', 'base64']."
        )
    value = data.get("input")
    if value == "":
        value = [""]
    if value is None or value == []:
        raise OpenAIRequestError("invalid input")
    return {"model": data.get("model") or "", "input": value, "dimensions": data.get("dimensions") or 0}


# --- Ollama answer -> OpenAI answer ---------------------------------------------------------------------


def unix_time(timestamp: Any) -> int:
    """Seconds since the epoch of an ISO 8601 time (now when it is missing or unreadable)."""
    try:
        return int(datetime.fromisoformat(str(timestamp)).timestamp())
    except ValueError:
        return int(time.time())


def usage(event: Mapping[str, Any]) -> dict[str, int]:
    """OpenAI usage from an Ollama final event (`ToUsage`)."""
    prompt_tokens = int(event.get("prompt_eval_count") or 0)
    completion_tokens = int(event.get("eval_count") or 0)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def openai_tool_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI tool calls for Ollama ones (`ToToolCalls`): arguments as a JSON string."""
    return [
        {
            "id": call.get("id", ""),
            "index": (call.get("function") or {}).get("index", 0),
            "type": "function",
            "function": {
                "name": (call.get("function") or {}).get("name", ""),
                "arguments": go_json((call.get("function") or {}).get("arguments") or {}),
            },
        }
        for call in calls
    ]


def _openai_message(role: str, message: Mapping[str, Any]) -> dict[str, Any]:
    """An OpenAI message (or delta) for an Ollama one: content, reasoning and tool_calls when there are."""
    answer: dict[str, Any] = {"role": role, "content": message.get("content", "")}
    if message.get("thinking"):
        answer["reasoning"] = message["thinking"]
    if message.get("tool_calls"):
        answer["tool_calls"] = openai_tool_calls(message["tool_calls"])
    return answer


def chat_completion(completion_id: str, answer: Mapping[str, Any]) -> dict[str, Any]:
    """A `chat.completion` for a whole /api/chat answer (`ToChatCompletion`); finish_reason `tool_calls`
    when the model called tools."""
    message = answer.get("message") or {}
    finish_reason = "tool_calls" if message.get("tool_calls") else answer.get("done_reason") or None
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": unix_time(answer.get("created_at")),
        "model": answer.get("model", ""),
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [
            {
                "index": 0,
                "message": _openai_message(message.get("role", ""), message),
                "finish_reason": finish_reason,
                **_choice_logprobs(answer),
            }
        ],
        "usage": usage(answer),
        **({"_debug_info": answer["_debug_info"]} if "_debug_info" in answer else {}),
    }


def _choice_logprobs(answer: Mapping[str, Any]) -> dict[str, Any]:
    """A choice's `logprobs`: Ollama's own entries as OpenAI's `content` list, when there are any."""
    return {"logprobs": {"content": answer["logprobs"]}} if answer.get("logprobs") else {}


def chat_chunk(completion_id: str, event: Mapping[str, Any], include_usage: bool) -> dict[str, Any]:
    """A `chat.completion.chunk` for one /api/chat event (`ToChunk`)."""
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": event.get("model", ""),
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [
            {
                "index": 0,
                "delta": _openai_message("assistant", event.get("message") or {}),
                "finish_reason": event.get("done_reason") or None,
                **_choice_logprobs(event),
            }
        ],
    }


def text_completion(completion_id: str, answer: Mapping[str, Any]) -> dict[str, Any]:
    """A `text_completion` for a whole /api/generate answer (`ToCompletion`)."""
    return {
        "id": completion_id,
        "object": "text_completion",
        "created": unix_time(answer.get("created_at")),
        "model": answer.get("model", ""),
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [
            {
                "text": answer.get("response", ""),
                "index": 0,
                "finish_reason": answer.get("done_reason") or None,
            }
        ],
        "usage": usage(answer),
    }


def text_completion_chunk(
    completion_id: str, event: Mapping[str, Any], include_usage: bool
) -> dict[str, Any]:
    """A streamed `text_completion` for one /api/generate event (`ToCompleteChunk`); with include_usage it
    carries a zero usage, as Ollama's `CompleteWriter` writes it."""
    chunk: dict[str, Any] = {
        "id": completion_id,
        "object": "text_completion",
        "created": int(time.time()),
        "choices": [
            {"text": event.get("response", ""), "index": 0, "finish_reason": event.get("done_reason") or None}
        ],
        "model": event.get("model", ""),
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }
    if include_usage:
        chunk["usage"] = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    return chunk


def embedding_list(model: str, answer: Mapping[str, Any], encoding_format: str) -> dict[str, Any]:
    """An OpenAI embedding list for an /api/embed answer (`ToEmbeddingList`): vectors as floats, or base64 of
    their little-endian float32 bytes."""
    as_base64 = encoding_format.lower() == "base64"
    data = [
        {
            "object": "embedding",
            "embedding": base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
            if as_base64
            else vector,
            "index": index,
        }
        for index, vector in enumerate(answer.get("embeddings") or [])
    ]
    tokens = int(answer.get("prompt_eval_count") or 0)
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


ChunkMaker = Callable[[str, Mapping[str, Any], bool], dict[str, Any]]
