"""Ollama's OpenAI Responses endpoint (`POST /v1/responses`) for the embedded engine.

Follows Ollama's `openai/responses.go` (`FromResponsesRequest`, `ToResponse`, `ResponsesStreamConverter`)
and its middleware: the request becomes an /api/chat body run through the engine (so tools, structured
outputs and errors behave as on /api/chat), and the answer becomes a `response` object, or a stream of
Server-Sent Events `event: <type>` / `data: {json}` (response.created, response.in_progress,
response.output_item.added, response.content_part.added, response.output_text.delta, ... response.completed;
each with its `sequence_number`; no `[DONE]`).

Request: model, input (a string, or items: messages with a string or input_text / output_text /
input_image parts, function_call, function_call_output, reasoning), instructions (a system message first),
max_output_tokens (num_predict), temperature (default 1.0), top_p, tools (`{type, name, description,
parameters}`), text.format json_schema (the chat `format`), stream. The rest of the request is echoed back
(truncation, background, reasoning) or ignored (tool_choice, include, conversation), as in Ollama.
Errors are OpenAI error objects with Ollama's type for the status (openai_compat.forwarded_error).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from harness.engine.godecode import ANY, BOOL, FLOAT64, INT, STRING, GoField
from harness.engine.openai_compat import (
    EVENT_STREAM_HEADERS,
    forwarded_error,
    json_body,
    ollama_events,
    openai_errors,
    read_openai_body,
)
from harness.engine.openai_translate import OpenAIRequestError, openai_tool_calls
from harness.engine.routing import gin_route

if TYPE_CHECKING:
    from harness.engine.service import OllamaHandlers

RESPONSES_REQUEST_FIELDS: Mapping[str, GoField] = {
    "model": STRING,
    "background": BOOL,
    "input": ANY,
    "instructions": STRING,
    "max_output_tokens": INT,
    "temperature": FLOAT64,
    "top_p": FLOAT64,
    "truncation": STRING,
    "stream": BOOL,
    "tools": ANY,
    "text": ANY,
    "reasoning": ANY,
}


# --- request ----------------------------------------------------------------------------------------------


def _text_of(parts: Any, where: str) -> tuple[str, list[str]]:
    """A message's text and image URLs (`convertInputMessage`): a string, or a list of typed parts."""
    if parts is None:
        return "", []
    if isinstance(parts, str):
        return parts, []
    if not isinstance(parts, list):
        raise OpenAIRequestError(f"{where}: content must be a string or array")
    text, images = "", []
    for index, part in enumerate(parts):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text"):
            text += str(part.get("text") or "")
        elif kind == "input_image":
            if part.get("image_url"):
                images.append(str(part["image_url"]))
        else:
            raise OpenAIRequestError(f"{where}: content[{index}]: unknown content type: {kind or ''}")
    return text, images


def _chat_messages(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The chat messages of a Responses request (`FromResponsesRequest`)."""
    messages: list[dict[str, Any]] = []
    if data.get("instructions"):
        messages.append({"role": "system", "content": data["instructions"]})
    source = data.get("input")
    if isinstance(source, str):
        if source:
            messages.append({"role": "user", "content": source})
        return messages
    if source is None:
        return messages
    if not isinstance(source, list):
        raise OpenAIRequestError(
            f"input must be a string or array: json: cannot unmarshal {_json_kind(source)} into Go value "
            "of type []json.RawMessage"
        )
    thinking = ""
    for index, item in enumerate(source):
        item = item if isinstance(item, dict) else {}
        kind = item.get("type") or ("message" if item.get("role") else "")
        if kind == "reasoning":
            thinking = str(item.get("encrypted_content") or "")
        elif kind == "message":
            text, images = _text_of(item.get("content"), f"input[{index}]")
            message: dict[str, Any] = {"role": str(item.get("role") or ""), "content": text}
            if images:
                message["images"] = images
            if message["role"] == "assistant" and thinking:
                message["thinking"], thinking = thinking, ""
            messages.append(message)
        elif kind == "function_call":
            try:
                arguments = json.loads(item["arguments"]) if item.get("arguments") else {}
            except ValueError as error:
                raise OpenAIRequestError(f"failed to parse function call arguments: {error}") from None
            function = {"name": item.get("name") or "", "arguments": arguments}
            call = {"id": str(item.get("call_id") or ""), "function": function}
            if messages and messages[-1]["role"] == "assistant":
                messages[-1].setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
            if thinking:
                messages[-1]["thinking"], thinking = thinking, ""
        elif kind == "function_call_output":
            messages.append(
                {
                    "role": "tool",
                    "content": str(item.get("output") or ""),
                    "tool_call_id": item.get("call_id"),
                }
            )
        else:
            raise OpenAIRequestError(f"input[{index}]: unknown input item type: {json.dumps(kind)}")
    if thinking:
        messages.append({"role": "assistant", "content": "", "thinking": thinking})
    return messages


def _json_kind(value: Any) -> str:
    return {bool: "bool", int: "number", float: "number", dict: "object"}.get(type(value), "value")


def responses_request_to_chat(data: Mapping[str, Any]) -> dict[str, Any]:
    """The /api/chat body for a (type-checked) Responses request."""
    options: dict[str, Any] = {"temperature": 1.0 if data.get("temperature") is None else data["temperature"]}
    if data.get("top_p") is not None:
        options["top_p"] = data["top_p"]
    if data.get("max_output_tokens") is not None:
        options["num_predict"] = data["max_output_tokens"]
    tools = []
    for tool in data.get("tools") or []:
        tool = tool if isinstance(tool, dict) else {}
        function = {"name": tool.get("name") or "", "description": tool.get("description") or ""}
        tools.append(
            {"type": tool.get("type") or "", "function": {**function, "parameters": tool.get("parameters")}}
        )
    body: dict[str, Any] = {
        "model": data.get("model") or "",
        "messages": _chat_messages(data),
        "options": options,
        "stream": bool(data.get("stream")),
    }
    if tools:
        body["tools"] = tools
    text_format = (data.get("text") or {}).get("format") if isinstance(data.get("text"), dict) else None
    if (
        isinstance(text_format, dict)
        and text_format.get("type") == "json_schema"
        and text_format.get("schema")
    ):
        body["format"] = text_format["schema"]
    return body


# --- answer -----------------------------------------------------------------------------------------------


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _echoed_tool(tool: Any) -> dict[str, Any]:
    """A request tool as the response repeats it (`ResponsesTool`: every field, null when not given)."""
    tool = _mapping(tool)
    fields = ("type", "name", "description", "strict", "parameters")
    return {key: tool.get(key, "" if key in ("type", "name") else None) for key in fields}


def _echo(data: Mapping[str, Any]) -> dict[str, Any]:
    """The request settings a response object repeats (`ToResponse`, `buildResponseObject`)."""
    reasoning_request = _mapping(data.get("reasoning"))
    reasoning = None
    if reasoning_request.get("effort") or reasoning_request.get("summary"):
        reasoning = {
            "effort": reasoning_request.get("effort") or None,
            "summary": reasoning_request.get("summary") or None,
        }
    text = _mapping(data.get("text"))
    return {
        "instructions": data.get("instructions") or None,
        "tools": [_echoed_tool(tool) for tool in data.get("tools") or []],
        "tool_choice": "auto",
        "truncation": data.get("truncation") or "disabled",
        "parallel_tool_calls": True,
        "text": {"format": text.get("format") or {"type": "text"}},
        "top_p": 1.0 if data.get("top_p") is None else data["top_p"],
        "presence_penalty": 0,
        "frequency_penalty": 0,
        "top_logprobs": 0,
        "temperature": 1.0 if data.get("temperature") is None else data["temperature"],
        "reasoning": reasoning,
        "max_output_tokens": data.get("max_output_tokens"),
        "max_tool_calls": None,
        "store": False,
        "background": bool(data.get("background")),
        "service_tier": "default",
        "metadata": {},
        "safety_identifier": None,
        "prompt_cache_key": None,
    }


def _response(
    response_id: str, model: str, data: Mapping[str, Any], status: str, output: list[Any], usage: Any
) -> dict[str, Any]:
    now = int(time.time())
    echo = _echo(data)
    head = {
        "id": response_id,
        "object": "response",
        "created_at": now,
        "completed_at": now if status == "completed" else None,
        "status": status,
        "incomplete_details": None,
        "model": model,
        "previous_response_id": None,
        "instructions": echo.pop("instructions"),
        "output": output,
        "error": None,
    }
    settings = list(echo.items())
    split = [key for key, _ in settings].index("max_output_tokens")
    return {**head, **dict(settings[:split]), "usage": usage, **dict(settings[split:])}


def _usage(event: Mapping[str, Any]) -> dict[str, Any]:
    prompt, completion = int(event.get("prompt_eval_count") or 0), int(event.get("eval_count") or 0)
    return {
        "input_tokens": prompt,
        "output_tokens": completion,
        "total_tokens": prompt + completion,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens_details": {"reasoning_tokens": 0},
    }


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message_item(item_id: str, status: str, text: str | None) -> dict[str, Any]:
    content = [] if text is None else [_text_part(text)]
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content}


def _call_item(item_id: str, call: Mapping[str, Any], status: str, arguments: str) -> dict[str, Any]:
    function = call["function"]
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call["id"],
        "name": function["name"],
        "arguments": arguments,
    }


def _reasoning_item(item_id: str, thinking: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": thinking}],
        "encrypted_content": thinking,
    }


def whole_response(
    response_id: str, item_id: str, model: str, answer: Mapping[str, Any], data: Mapping[str, Any]
) -> dict[str, Any]:
    """A `response` for a whole /api/chat answer (`ToResponse`)."""
    message = answer.get("message") or {}
    output: list[Any] = []
    if message.get("thinking"):
        output.append(_reasoning_item(f"rs_{response_id}", message["thinking"]))
    calls = openai_tool_calls(message.get("tool_calls") or [])
    for index, call in enumerate(calls):
        output.append(
            _call_item(f"fc_{response_id}_{index}", call, "completed", call["function"]["arguments"])
        )
    if not calls:
        output.append(_message_item(item_id, "completed", str(message.get("content") or "")))
    return _response(response_id, model, data, "completed", output, _usage(answer))


class ResponsesStream:
    """Ollama's `ResponsesStreamConverter`: /api/chat events in, Responses stream events out."""

    def __init__(self, response_id: str, item_id: str, model: str, data: Mapping[str, Any]) -> None:
        self.response_id, self.item_id, self.model, self.data = response_id, item_id, model, data
        self.sequence = 0
        self.first = True
        self.output_index = 0
        self.text = ""
        self.text_started = False
        self.calls_sent = False
        self.call_items: list[dict[str, Any]] = []
        self.thinking = ""
        self.reasoning_id = ""
        self.reasoning_done = False

    def event(self, kind: str, fields: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        fields = {**fields, "type": kind, "sequence_number": self.sequence}
        self.sequence += 1
        return kind, fields

    def process(self, chunk: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """The events for one /api/chat chunk."""
        message = chunk.get("message") or {}
        events = []
        if self.first:
            self.first = False
            empty = _response(self.response_id, self.model, self.data, "in_progress", [], None)
            events.append(self.event("response.created", {"response": empty}))
            events.append(self.event("response.in_progress", {"response": empty}))
        if message.get("thinking"):
            events += self._thinking(message["thinking"])
        if message.get("tool_calls"):
            events += self._calls(message["tool_calls"])
            self.calls_sent = True
        elif not self.calls_sent and message.get("content"):
            events += self._text(message["content"])
        if chunk.get("done"):
            events += self._completion(chunk)
        return events

    def _thinking(self, thinking: str) -> list[tuple[str, dict[str, Any]]]:
        events = []
        if not self.reasoning_id:
            self.reasoning_id = f"rs_{random.randrange(999999)}"
            item = {"id": self.reasoning_id, "type": "reasoning", "summary": []}
            events.append(
                self.event("response.output_item.added", {"output_index": self.output_index, "item": item})
            )
        self.thinking += thinking
        where = {"item_id": self.reasoning_id, "output_index": self.output_index, "summary_index": 0}
        events.append(self.event("response.reasoning_summary_text.delta", {**where, "delta": thinking}))
        return events

    def _finish_reasoning(self) -> list[tuple[str, dict[str, Any]]]:
        if not self.reasoning_id or self.reasoning_done:
            return []
        self.reasoning_done = True
        where = {"item_id": self.reasoning_id, "output_index": self.output_index, "summary_index": 0}
        item = _reasoning_item(self.reasoning_id, self.thinking)
        events = [
            self.event("response.reasoning_summary_text.done", {**where, "text": self.thinking}),
            self.event("response.output_item.done", {"output_index": self.output_index, "item": item}),
        ]
        self.output_index += 1
        return events

    def _calls(self, calls: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
        events = self._finish_reasoning()
        for index, call in enumerate(openai_tool_calls(calls)):
            item_id = f"fc_{random.randrange(999999)}_{index}"
            arguments = call["function"]["arguments"]
            self.call_items.append(_call_item(item_id, call, "completed", arguments))
            where = {"output_index": self.output_index + index}
            events.append(
                self.event(
                    "response.output_item.added",
                    {**where, "item": _call_item(item_id, call, "in_progress", "")},
                )
            )
            if arguments:
                events.append(
                    self.event(
                        "response.function_call_arguments.delta",
                        {"item_id": item_id, **where, "delta": arguments},
                    )
                )
            events.append(
                self.event(
                    "response.function_call_arguments.done",
                    {"item_id": item_id, **where, "arguments": arguments},
                )
            )
            events.append(self.event("response.output_item.done", {**where, "item": self.call_items[-1]}))
        return events

    def _where(self) -> dict[str, Any]:
        return {"item_id": self.item_id, "output_index": self.output_index, "content_index": 0}

    def _text(self, content: str) -> list[tuple[str, dict[str, Any]]]:
        events = self._finish_reasoning()
        if not self.text_started:
            self.text_started = True
            item = _message_item(self.item_id, "in_progress", None)
            events.append(
                self.event("response.output_item.added", {"output_index": self.output_index, "item": item})
            )
            events.append(
                self.event("response.content_part.added", {**self._where(), "part": _text_part("")})
            )
        self.text += content
        events.append(
            self.event("response.output_text.delta", {**self._where(), "delta": content, "logprobs": []})
        )
        return events

    def _completion(self, chunk: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        events = self._finish_reasoning()
        output: list[Any] = [_reasoning_item(self.reasoning_id, self.thinking)] if self.reasoning_id else []
        if not self.calls_sent and self.text_started:
            done_item = _message_item(self.item_id, "completed", self.text)
            events += [
                self.event("response.output_text.done", {**self._where(), "text": self.text, "logprobs": []}),
                self.event("response.content_part.done", {**self._where(), "part": _text_part(self.text)}),
                self.event(
                    "response.output_item.done", {"output_index": self.output_index, "item": done_item}
                ),
            ]
        if self.call_items:
            output += self.call_items
        elif self.text_started:
            output.append(_message_item(self.item_id, "completed", self.text))
        response = _response(self.response_id, self.model, self.data, "completed", output, _usage(chunk))
        events.append(self.event("response.completed", {"response": response}))
        return events


def _server_sent_event(kind: str, data: Mapping[str, Any]) -> bytes:
    """`event: <kind>` and `data: {json}` (keys sorted, as Go marshals the map Ollama builds)."""
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return f"event: {kind}\ndata: {payload}\n\n".encode()


async def _stream(answer: Response, converter: ResponsesStream) -> AsyncIterator[bytes]:
    events = ollama_events(answer)
    try:
        async for chunk in events:
            if "error" in chunk:
                error = {
                    "type": "error",
                    "sequence_number": converter.sequence,
                    "message": str(chunk["error"]),
                }
                yield _server_sent_event("error", error)
                return
            for kind, data in converter.process(chunk):
                yield _server_sent_event(kind, data)
    finally:
        await events.aclose()


async def responses(engine: OllamaHandlers, request: Request) -> Response:
    """POST /v1/responses: the request run as a chat, answered as a `response` (or its event stream)."""
    data = await read_openai_body(request, "openai.ResponsesRequest", RESPONSES_REQUEST_FIELDS)
    body = responses_request_to_chat(data)
    answer = await engine.handle_chat(body)
    if answer.status_code != 200:
        return forwarded_error(answer.status_code, str(json_body(answer).get("error", "")))
    response_id = f"resp_{random.randrange(999999)}"
    item_id = f"msg_{random.randrange(999999)}"
    model = body["model"]
    if not body["stream"]:
        chunk = json_body(answer)
        if "message" not in chunk:  # no messages: the model was only loaded
            chunk = {**chunk, "message": {"role": "assistant", "content": ""}}
        return JSONResponse(whole_response(response_id, item_id, model, chunk, data))
    converter = ResponsesStream(response_id, item_id, model, data)
    return StreamingResponse(_stream(answer, converter), headers=EVENT_STREAM_HEADERS)


def responses_routes(engine: OllamaHandlers) -> list[Route]:
    """The /v1/responses route."""

    async def endpoint(request: Request) -> Response:
        return await responses(engine, request)

    return [gin_route("/v1/responses", openai_errors(endpoint), ["POST"])]
