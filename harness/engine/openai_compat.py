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

import json
import random
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

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
    json_kind,
)
from harness.engine.names import InvalidNameError, ModelName
from harness.engine.openai_translate import (
    ChunkMaker,
    OpenAIRequestError,
    chat_chunk,
    chat_completion,
    chat_request_to_ollama,
    completion_request_to_ollama,
    embed_request_to_ollama,
    embedding_list,
    text_completion,
    text_completion_chunk,
    unix_time,
    usage,
)
from harness.engine.routing import ApiError, gin_route

if TYPE_CHECKING:
    from harness.engine.service import OllamaHandlers

EVENT_STREAM_HEADERS = {"content-type": "text/event-stream"}


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
                "created": unix_time(entry.get("modified_at")),
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
                "created": unix_time(shown.get("modified_at")),
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
