"""Ollama's OpenAI-compatible endpoints (`/v1/...`) for the embedded engine.

Each OpenAI request is translated into the engine's own /api/chat or /api/generate body and run through the
same code path; the Ollama answer (JSON, or the NDJSON event stream) is translated back into OpenAI's shape,
as Ollama's `middleware/openai.go` and `openai/openai.go` do.

Supported:
- `POST /v1/chat/completions`: model, messages (content a string, or a list of `{"type": "text", "text"}`
  parts, each part becoming a message of its own as in Ollama), stream, stream_options.include_usage,
  max_tokens (num_predict), temperature (default 1.0), top_p (default 1.0), seed, stop (a string or a list;
  non-strings in the list are skipped), frequency_penalty, presence_penalty, reasoning_effort /
  reasoning.effort (`think`: the level, or false for "none"; the thinking comes back as `reasoning`).
- `POST /v1/completions`: model, prompt (a string), the same options (penalties default 0, a top_p of 0
  means 1.0, a non-string in a `stop` list is a 400), stream, stream_options.include_usage.
- `POST /v1/embeddings`: model, input (a string, "" meaning [""], or a list of strings), dimensions,
  encoding_format ("float" or "base64": little-endian float32 bytes; checked case-insensitively as Ollama's
  `EmbeddingsMiddleware` does), run through /api/embed; usage.prompt_tokens = total_tokens =
  prompt_eval_count (`ToEmbeddingList`).
- `GET /v1/models`, `GET /v1/models/{model}` (`data` is null when there is no model, as in Ollama).

Answers as Ollama's: ids `chatcmpl-N` / `cmpl-N` (N random below 999), `system_fingerprint: "fp_ollama"`,
finish_reason is Ollama's done_reason ("stop", "length", "load" for an empty completions prompt), usage from
prompt_eval_count and eval_count. Streams are Server-Sent Events, `data: {json}\\n\\n` chunks and then
`data: [DONE]\\n\\n`; with include_usage a last chunk with `choices: []` carries the usage (completions chunks
carry a zero usage before it, as Ollama's do).

Errors are `{"error": {"message", "type", "param": null, "code": null}}`. Faults of the OpenAI request itself
(bad JSON, field types, in Go's wording; empty messages; bad content parts...) are 400
`invalid_request_error`. Errors of the engine keep their status and text (404 `model 'x' not found`, 400,
500 for a model that fails to load, 503) with Ollama's type for the status (`openai.NewError`: 400
`invalid_request_error`, 404 `not_found_error`, others `api_error`).

Not supported, and said so, never silently wrong:
- tools, as /api/chat serves them (tools.py), for a model with the `tools` capability (else 400 `<full model
  name> does not support tools`, as Ollama); `tool_calls` in the answer (arguments as a JSON string,
  finish_reason `tool_calls`; streamed in a delta of their own), assistant `tool_calls` and `tool` messages
  (named after their call) in the history; `tool_choice` is ignored, as Ollama ignores it.
- reasoning effort "low", "medium" or "high" on a model without thinking: 400 `"<model>" does not support
  thinking`, Ollama's answer; other values get Ollama's `invalid reasoning value` 400.
- suffix (completions): 400 `<full model name> does not support insert`, Ollama's answer for such a model.
- image_url content parts (checked as Ollama checks them first), logprobs on /v1/completions (chat has
  them): Ollama supports them; a 400 names the field.
- `_debug_render_only` as in Ollama: chat answers the rendered prompt in `_debug_info` (usage 0,
  finish_reason null), completions an empty completion.
- response_format json_object / json_schema become `format`, as in Ollama (see structured.py); tools and
  suffix go to the engine's capability checks (capabilities.py), which answer as Ollama does.
- Ignored, as Ollama ignores them: n, user, logit_bias, tool_choice, max_completion_tokens, echo, best_of,
  and the `name` of a message that is not a tool result. A message's `reasoning` becomes its thinking.

Differences from Ollama: a body that is not JSON gets Python's decoder text, not Go's (same status and type).
And, deliberately, an error after a stream has begun. Ollama's middleware decodes the in-band
`{"error": ...}` line as if it were a chunk, so its client gets an empty delta and a stream that ends without
`[DONE]`, and the message is lost. Here the stream ends with `data: {"error": {...}}` (OpenAI's own in-band
shape, which OpenAI clients raise) and without `data: [DONE]`.
"""

from __future__ import annotations

import base64
import binascii
import json
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from harness.engine.godecode import (
    ANY,
    BOOL,
    FLOAT32,
    FLOAT64,
    INT,
    STRING,
    GoDecodeError,
    GoField,
    check_field_types,
    go_dynamic_type,
    json_kind,
)
from harness.engine.names import InvalidNameError, ModelName
from harness.engine.routing import ApiError, gin_route
from harness.modelfile.gotemplate import go_json

if TYPE_CHECKING:
    from harness.engine.service import OllamaHandlers

SYSTEM_FINGERPRINT = "fp_ollama"
REASONING_EFFORTS = ("high", "medium", "low", "none")
IMAGE_PREFIXES = tuple(f"data:image/{kind};base64," for kind in ("jpeg", "jpg", "png", "webp"))
EVENT_STREAM_HEADERS = {"content-type": "text/event-stream"}


class OpenAIRequestError(Exception):
    """A fault of the OpenAI request itself: 400 `invalid_request_error`."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def error_response(status: int, message: str, error_type: str) -> JSONResponse:
    """OpenAI's error object (`openai.NewError`); texts that are not UTF-8 are shown backslash-escaped."""
    text = message.encode("utf-8", "backslashreplace").decode("utf-8")
    body = {"error": {"message": text, "type": error_type, "param": None, "code": None}}
    return JSONResponse(body, status_code=status)


ERROR_TYPES = {400: "invalid_request_error", 404: "not_found_error"}


def forwarded_error(status: int, message: str) -> JSONResponse:
    """An engine error as Ollama's middleware forwards it (`openai.NewError`): the engine's status and text,
    type `invalid_request_error` for a 400, `not_found_error` for a 404, else `api_error`."""
    return error_response(status, message, ERROR_TYPES.get(status, "api_error"))


# --- the request structs Ollama decodes (harness.engine.godecode checks them) -------------------------


STREAM_OPTIONS = GoField("openai.StreamOptions", "openai.StreamOptions", {"include_usage": BOOL})
CHAT_REQUEST_FIELDS: Mapping[str, GoField] = {
    "model": STRING,
    "messages": GoField(
        "[]openai.Message",
        "openai.Message",
        {
            "role": STRING,
            "content": ANY,
            "reasoning": STRING,
            "tool_calls": GoField("[]openai.ToolCall"),
            "name": STRING,
            "tool_call_id": STRING,
        },
    ),
    "stream": BOOL,
    "stream_options": STREAM_OPTIONS,
    "max_tokens": INT,
    "seed": INT,
    "stop": ANY,
    "temperature": FLOAT64,
    "frequency_penalty": FLOAT64,
    "presence_penalty": FLOAT64,
    "top_p": FLOAT64,
    "response_format": GoField(
        "openai.ResponseFormat",
        "openai.ResponseFormat",
        {"type": STRING, "json_schema": GoField("openai.JsonSchema", "openai.JsonSchema", {"schema": ANY})},
    ),
    "tools": GoField("[]api.Tool"),
    "reasoning": GoField("openai.Reasoning", "openai.Reasoning", {"effort": STRING}),
    "reasoning_effort": STRING,
    "logprobs": BOOL,
    "top_logprobs": INT,
    "_debug_render_only": BOOL,
}
COMPLETION_REQUEST_FIELDS: Mapping[str, GoField] = {
    "model": STRING,
    "prompt": STRING,
    "frequency_penalty": FLOAT32,
    "max_tokens": INT,
    "presence_penalty": FLOAT32,
    "seed": INT,
    "stop": ANY,
    "stream": BOOL,
    "stream_options": STREAM_OPTIONS,
    "temperature": FLOAT32,
    "top_p": FLOAT32,
    "suffix": STRING,
    "logprobs": INT,
    "_debug_render_only": BOOL,
}

EMBED_REQUEST_FIELDS: Mapping[str, GoField] = {
    "input": ANY,
    "model": STRING,
    "dimensions": INT,
    "encoding_format": STRING,
}
ENCODING_FORMATS = ("float", "base64")


async def read_openai_body(request: Request, struct: str, fields: Mapping[str, GoField]) -> dict[str, Any]:
    """The request's JSON object, checked against the Go struct Ollama decodes it into."""
    raw = await request.body()
    if not raw.strip():
        raise OpenAIRequestError("EOF")
    try:
        data = json.loads(raw)
    except ValueError as error:
        raise OpenAIRequestError(f"invalid JSON in request body: {error}") from None
    if data is None:  # Go decodes `null` into a zero request
        data = {}
    if not isinstance(data, dict):
        raise OpenAIRequestError(f"json: cannot unmarshal {json_kind(data)} into Go value of type {struct}")
    try:
        check_field_types(data, fields, struct.removeprefix("openai."))
    except GoDecodeError as error:
        raise OpenAIRequestError(str(error)) from None
    return data


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


def _unix_time(timestamp: Any) -> int:
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
        "created": _unix_time(answer.get("created_at")),
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
        "created": _unix_time(answer.get("created_at")),
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


def json_body(response: Response) -> Any:
    """The decoded JSON body of a (non-streaming) engine answer."""
    return json.loads(bytes(response.body))


def server_sent_event(data: Mapping[str, Any]) -> bytes:
    """One SSE event: `data: {json}` and a blank line."""
    return b"data: " + json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


async def ollama_events(answer: Response) -> AsyncGenerator[dict[str, Any], None]:
    """The JSON objects of an engine answer: one per NDJSON line of a stream, or its one JSON body."""
    if not isinstance(answer, StreamingResponse):
        for line in bytes(answer.body).splitlines():
            if line.strip():
                yield json.loads(line)
        return
    pending = b""
    try:
        async for piece in answer.body_iterator:
            pending += piece.encode() if isinstance(piece, str) else bytes(piece)
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line.strip():
                    yield json.loads(line)
        if pending.strip():
            yield json.loads(pending)
    finally:
        close = getattr(answer.body_iterator, "aclose", None)
        if close is not None:
            await close()


async def sse_stream(
    answer: Response, completion_id: str, make_chunk: ChunkMaker, include_usage: bool
) -> AsyncIterator[bytes]:
    """The SSE body for a streamed engine answer, as Ollama's ChatWriter / CompleteWriter write it: a chunk
    per event; after the final one the usage chunk (with include_usage) and `[DONE]`. An in-band engine error
    ends the stream with OpenAI's error object and no `[DONE]`."""
    events = ollama_events(answer)
    tool_call_sent, first_chunk = False, True
    try:
        async for event in events:
            if "error" in event:
                yield server_sent_event(
                    {
                        "error": {
                            "message": str(event["error"]),
                            "type": "api_error",
                            "param": None,
                            "code": None,
                        }
                    }
                )
                return
            chunk = make_chunk(completion_id, event, include_usage)
            for choice in chunk.get("choices") or []:
                delta = choice.get("delta")
                if delta is None:
                    continue
                # ChatWriter: once a tool call has been sent, the finish reason is tool_calls; the role
                # comes in the first delta only, and a later delta with nothing in it is empty
                tool_call_sent = tool_call_sent or bool(delta.get("tool_calls"))
                if tool_call_sent and choice.get("finish_reason"):
                    choice["finish_reason"] = "tool_calls"
                if not first_chunk:
                    delta.pop("role", None)
                    if delta.get("content") == "" and len(delta) == 1:
                        del delta["content"]
            first_chunk = False
            yield server_sent_event(chunk)
            if event.get("done"):
                if include_usage:
                    yield server_sent_event({**chunk, "choices": [], "usage": usage(event)})
                yield b"data: [DONE]\n\n"
    finally:
        await events.aclose()


def translate_answer(
    answer: Response,
    *,
    stream: bool,
    include_usage: bool,
    completion_id: str,
    whole: Callable[[str, Mapping[str, Any]], dict[str, Any]],
    make_chunk: ChunkMaker,
) -> Response:
    """The OpenAI response for an engine answer: its error, one object, or an SSE stream."""
    if answer.status_code != 200:
        return forwarded_error(answer.status_code, str(json_body(answer).get("error", "")))
    if not stream:
        return JSONResponse(whole(completion_id, json_body(answer)))
    return StreamingResponse(
        sse_stream(answer, completion_id, make_chunk, include_usage), headers=EVENT_STREAM_HEADERS
    )


def _namespace(raw_name: str) -> str:
    """`owned_by`: the namespace of a name ("" for an invalid one, as Go's zero Name)."""
    try:
        return ModelName.parse(raw_name).namespace
    except InvalidNameError:
        return ""


# --- handlers -------------------------------------------------------------------------------------------


def openai_errors(
    method: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """The handler with OpenAI's error objects for request faults and engine errors."""

    async def endpoint(request: Request) -> Response:
        try:
            return await method(request)
        except OpenAIRequestError as error:
            return error_response(400, error.message, "invalid_request_error")
        except ApiError as error:
            return forwarded_error(error.status, error.message)

    return endpoint


def _translated(
    answer: Response,
    data: Mapping[str, Any],
    id_prefix: str,
    *,
    whole: Callable[[str, Mapping[str, Any]], dict[str, Any]],
    make_chunk: ChunkMaker,
) -> Response:
    """An engine answer in OpenAI's form for the request `data`: whole or streamed as it asked, with usage in
    the stream when `stream_options.include_usage` says so, under a fresh `<id_prefix>-N` id."""
    return translate_answer(
        answer,
        stream=bool(data.get("stream")),
        include_usage=bool((data.get("stream_options") or {}).get("include_usage")),
        completion_id=f"{id_prefix}-{random.randrange(999)}",
        whole=whole,
        make_chunk=make_chunk,
    )


class OpenAICompat:
    """The /v1 handlers: OpenAI requests run through the engine's own /api handlers."""

    def __init__(self, engine: OllamaHandlers) -> None:
        self.engine = engine

    async def chat_completions(self, request: Request) -> Response:
        """POST /v1/chat/completions."""
        data = await read_openai_body(request, "openai.ChatCompletionRequest", CHAT_REQUEST_FIELDS)
        body = chat_request_to_ollama(data)
        answer = await self.engine.handle_chat(body)
        return _translated(answer, data, "chatcmpl", whole=chat_completion, make_chunk=chat_chunk)

    async def completions(self, request: Request) -> Response:
        """POST /v1/completions."""
        data = await read_openai_body(request, "openai.CompletionRequest", COMPLETION_REQUEST_FIELDS)
        body = completion_request_to_ollama(data)
        answer = await self.engine.handle_generate(body)
        return _translated(answer, data, "cmpl", whole=text_completion, make_chunk=text_completion_chunk)

    async def embeddings(self, request: Request) -> Response:
        """POST /v1/embeddings."""
        data = await read_openai_body(request, "openai.EmbedRequest", EMBED_REQUEST_FIELDS)
        body = embed_request_to_ollama(data)
        answer = await self.engine.handle_embed(body)
        if answer.status_code != 200:
            return forwarded_error(answer.status_code, str(json_body(answer).get("error", "")))
        return JSONResponse(
            embedding_list(body["model"], json_body(answer), data.get("encoding_format") or "")
        )

    async def list_models(self, request: Request) -> Response:
        """GET /v1/models (`ToListCompletion`)."""
        listing = json_body(await self.engine.tags(request))
        models = [
            {
                "id": entry["name"],
                "object": "model",
                "created": _unix_time(entry.get("modified_at")),
                "owned_by": _namespace(entry["name"]),
            }
            for entry in listing.get("models") or []
        ]
        return JSONResponse({"object": "list", "data": models or None})

    async def retrieve_model(self, request: Request) -> Response:
        """GET /v1/models/{model} (`ToModel`)."""
        raw_name = request.path_params["model"]
        shown = json_body(await self.engine.handle_show({"model": raw_name}))
        return JSONResponse(
            {
                "id": raw_name,
                "object": "model",
                "created": _unix_time(shown.get("modified_at")),
                "owned_by": _namespace(raw_name),
            }
        )


def openai_routes(engine: OllamaHandlers) -> list[Route]:
    """The /v1 routes Ollama serves for OpenAI clients (/v1/responses: openai_responses.py)."""
    compat = OpenAICompat(engine)
    return [
        gin_route("/v1/chat/completions", openai_errors(compat.chat_completions), ["POST"]),
        gin_route("/v1/completions", openai_errors(compat.completions), ["POST"]),
        gin_route("/v1/embeddings", openai_errors(compat.embeddings), ["POST"]),
        gin_route("/v1/models", openai_errors(compat.list_models), ["GET"]),
        gin_route("/v1/models/{model}", openai_errors(compat.retrieve_model), ["GET"]),
    ]
