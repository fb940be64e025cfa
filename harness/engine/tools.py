"""Tool calling as Ollama does it for a model without a built-in parser: tools and tool calls as the template
sees them, and the parser that finds tool calls in the model's output.

Follows Ollama's `tools` package (tools/tools.go, tools/template.go) and its use in server/routes.go
(ChatHandler):

* The tool-call tag is the first non-blank text inside the template's first `{{ if }}` on `.ToolCalls`, cut
  before any `{` and trimmed (Qwen 2.5: `<tool_call>`); without one it is `{`, so that any JSON object may be
  a call.
* `ToolCallParser.add` takes each piece of output: text before the tag (or before a partial tag at the end)
  is content; from the tag on, output is held back and searched for calls: the earliest (longest) tool name,
  then the first JSON object that looks like its arguments (`{"name", "arguments"|"parameters"}`, `{name:
  {...}}`, or the arguments themselves). With tag `{` or `[`, content that does not start with it ends the
  search, and a balanced object that is no call is given back as content.
* The chat handler sends content when the parser returns some (calls found in the same piece are dropped,
  as in Ollama), else the calls (each with a fresh `call_xxxxxxxx` id), else nothing until the end, when
  `remaining_content()` is sent.

Tools reach the template as Go values of Ollama's `api.Tool` (printing `{{ . }}` gives its JSON, printing
`{{ .Function }}` Go's struct form), and a message's tool calls as `api.ToolCall` (arguments print as JSON).
"""

from __future__ import annotations

import json
import secrets
import string
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

from harness.engine.godecode import json_kind
from harness.engine.routing import ApiError
from harness.modelfile.gotemplate import GoList, GoStruct, GoTemplate, go_json

__all__ = [
    "ToolCallParser",
    "go_tool",
    "go_tool_call",
    "go_tools",
    "tool_call_events",
    "tool_call_id",
    "tool_call_json",
    "tool_call_tag",
    "tools_of",
]

_ID_ALPHABET = string.ascii_lowercase + string.digits


def tool_call_id() -> str:
    """A fresh tool call id as Ollama makes them: `call_` and 8 random lower-case letters and digits."""
    return "call_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(8))


# --- request values -> Go values ------------------------------------------------------------------------


def _decode_error(value: Any, where: str, go_type: str) -> ApiError:
    """Go's error for a JSON value of the wrong kind in a request field: a 400."""
    return ApiError(
        400, f"json: cannot unmarshal {json_kind(value)} into Go struct field {where} of type {go_type}"
    )


def _object(value: Any, where: str, go_type: str) -> dict[str, Any]:
    """A JSON object of the request (None counts as empty); another value is Go's decode error."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _decode_error(value, where, go_type)
    return value


def _function(tool: Any) -> dict[str, Any]:
    tool = _object(tool, "ChatRequest.tools", "api.Tool")
    return _object(tool.get("function"), "Tool.tools.function", "api.ToolFunction")


def tools_of(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A request's `tools`, checked as Go decodes them into `api.Tools` (a 400 with Go's text otherwise)."""
    tools = body.get("tools")
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise _decode_error(tools, "ChatRequest.tools", "api.Tools")
    for tool in tools:
        _function(tool)
    return [tool or {} for tool in tools]


def _omit_empty(pairs: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    return {key: value for key, value in pairs if value not in (None, "", [], {})}


def _struct_json(value: Any) -> str:
    """Go's json.Marshal of a struct value (fields in order, as built here)."""
    return go_json(value, sort_keys=False)


def _property_json(prop: Any) -> Any:
    """One parameter property as Ollama's `api.ToolProperty` marshals it (fields it does not know dropped)."""
    if not isinstance(prop, dict):
        return prop
    kind = prop.get("type")
    nested = prop.get("properties")
    return _omit_empty(
        [
            ("anyOf", [_property_json(p) for p in prop.get("anyOf") or []]),
            ("type", kind[0] if isinstance(kind, list) and len(kind) == 1 else kind),
            ("items", prop.get("items")),
            ("description", prop.get("description")),
            ("enum", prop.get("enum")),
            ("properties", _properties_json(nested) if isinstance(nested, dict) else None),
        ]
    )


def _properties_json(properties: Mapping[str, Any]) -> dict[str, Any]:
    """A parameters' `properties` as Ollama marshals them: a Go map, so sorted by name."""
    return {str(name): _property_json(properties[name]) for name in sorted(properties)}


def go_tool(tool: Mapping[str, Any]) -> GoStruct:
    """A request tool as Ollama's `api.Tool` (its `String()` is its JSON; its function prints as a struct)."""
    function = _function(tool)
    raw_params = function.get("parameters")
    params: dict[str, Any] = raw_params if isinstance(raw_params, dict) else {}
    raw_properties = params.get("properties")
    properties = _properties_json(raw_properties) if isinstance(raw_properties, dict) else None
    params_json = {
        "type": str(params.get("type") or ""),
        **_omit_empty([("$defs", params.get("$defs")), ("items", params.get("items"))]),
        **_omit_empty([("required", params.get("required"))]),
        "properties": properties,
    }
    function_json = {
        "name": str(function.get("name") or ""),
        "description": str(function.get("description") or ""),
        "parameters": params_json,
    }
    tool_json = {
        "type": str(tool.get("type") or ""),
        **_omit_empty([("items", tool.get("items"))]),
        "function": function_json,
    }
    properties_text = "{}" if properties is None else _struct_json(properties)
    parameters = GoStruct(
        "api.ToolFunctionParameters",
        {
            "Type": params_json["type"],
            "Defs": params.get("$defs"),
            "Items": params.get("items"),
            "Required": list(params.get("required") or []),
            "Properties": GoStruct("api.ToolPropertiesMap", {}, properties, properties_text),
        },
        params_json,
    )
    go_function = GoStruct(
        "api.ToolFunction",
        {
            "Name": function_json["name"],
            "Description": function_json["description"],
            "Parameters": parameters,
        },
        function_json,
    )
    return GoStruct(
        "api.Tool",
        {"Type": tool_json["type"], "Items": tool.get("items"), "Function": go_function},
        tool_json,
        _struct_json(tool_json),
    )


def go_tools(tools: Sequence[Mapping[str, Any]]) -> GoList:
    """The request's tools as the template's `.Tools` (Ollama's `api.Tools`: printing it gives its JSON)."""
    items = [go_tool(tool) for tool in tools]
    return GoList(items, _struct_json([item.json_value for item in items]))


def _go_value(value: Any) -> Any:
    """A JSON value as Go's `map[string]any` round trip leaves it: object keys sorted, and a whole float
    written as an integer (Go marshals float64 2.0 as `2`)."""
    if isinstance(value, dict):
        return {key: _go_value(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_go_value(item) for item in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return int(value)
    return value


def tool_call_json(call: Mapping[str, Any]) -> dict[str, Any]:
    """A tool call as Ollama's `api.ToolCall` marshals it: id (when set), function index, name, arguments."""
    call = _object(call, "ChatRequest.messages.tool_calls", "api.ToolCall")
    function = _object(call.get("function"), "ToolCall.messages.tool_calls.function", "api.ToolCallFunction")
    arguments = function.get("arguments")
    if arguments is not None and not isinstance(arguments, dict):
        raise ApiError(
            400, "Value looks like object, but can't find closing '}' symbol"
        )  # Ollama 0.33's text
    answer: dict[str, Any] = {"id": str(call["id"])} if call.get("id") else {}
    answer["function"] = {
        "index": int(function.get("index") or 0),
        "name": str(function.get("name") or ""),
        "arguments": _go_value(arguments or {}),
    }
    return answer


def go_tool_call(call: Mapping[str, Any]) -> GoStruct:
    """A message's tool call as the template sees Ollama's `api.ToolCall`: arguments print as their JSON,
    and `json` gives Go's field names (as Ollama 0.33 marshals it in a template)."""
    marshalled = tool_call_json(call)
    function = marshalled["function"]
    arguments = GoStruct(
        "api.ToolCallFunctionArguments", {}, function["arguments"], go_json(function["arguments"])
    )
    go_function = GoStruct(
        "api.ToolCallFunction", {"Index": function["index"], "Name": function["name"], "Arguments": arguments}
    )
    return GoStruct("api.ToolCall", {"ID": marshalled.get("id", ""), "Function": go_function})


# --- the parser -------------------------------------------------------------------------------------------


def tool_call_tag(template: GoTemplate) -> str:
    """The text that opens a tool call in the model's output (Ollama's `parseTag`)."""
    text = template.text_opening_if("ToolCalls")
    if text is None:
        return "{"
    tag = text.replace("\r\n", "\n").split("{", 1)[0].strip()
    return tag or "{"


def _arguments_in(obj: dict[str, Any], name: str) -> tuple[dict[str, Any] | None, bool]:
    """Ollama's `findObject`: the arguments inside a decoded object, and whether the search is over."""

    def member(key: str) -> dict[str, Any] | None:
        value = obj.get(key)
        if isinstance(value, dict):
            return value
        if isinstance(value, str):
            try:
                decoded = json.loads(value)
            except ValueError:
                return None
            return decoded if isinstance(decoded, dict) else None
        return None

    if "name" in obj:
        for key in ("arguments", "parameters"):
            found = member(key)
            if found is not None:
                return found, True
        return None, True
    found = member(name)
    if found is not None:
        return found, True
    for value in obj.values():
        children = value if isinstance(value, list) else [value]
        for child in (c for c in children if isinstance(c, dict)):
            result, done = _arguments_in(child, name)
            if done:
                return result, True
    return None, False


def _find_arguments(name: str, buffer: str) -> tuple[dict[str, Any] | None, int]:
    """Ollama's `findArguments`: the first balanced JSON object in `buffer` that decodes, searched for the
    arguments of tool `name`; and the offset of its last character (0 when there is none)."""
    start, depth, in_string, escaped = -1, 0, False, False
    for i, char in enumerate(buffer):
        if escaped:
            escaped = False
            continue
        if char == "\\":
            escaped = True
            continue
        if char == '"':
            in_string = not in_string
            continue
        if in_string:
            continue
        if char == "{":
            if depth == 0:
                start = i
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0 and start != -1:
                try:
                    data = json.loads(buffer[start : i + 1])
                except ValueError:
                    start = -1
                    continue
                if not isinstance(data, dict):
                    start = -1
                    continue
                arguments, found = _arguments_in(data, name)
                chosen = arguments if found else data
                return (None if chosen is None else _go_value(chosen)), i
            depth = max(depth, 0)
    return None, 0


def _find_tool(names: Sequence[str], buffer: str) -> tuple[str | None, int]:
    """Ollama's `findTool`: the earliest (then longest) tool name in `buffer` and the offset after it; none
    while the buffer ends in what could be the start of a longer name."""
    if not buffer:
        return None, 0
    longest = max((len(n) for n in names), default=0)
    for size in range(1, min(len(buffer), longest) + 1):
        tail = buffer[-size:]
        if any(len(tail) < len(n) and n.startswith(tail) for n in names):
            return None, 0
    best: str | None = None
    best_start = -1
    for name in names:
        position = buffer.find(name)
        if position == -1:
            continue
        if best is not None and (position, -len(name)) >= (best_start, -len(best)):
            continue
        best, best_start = name, position
    return (best, best_start + len(best)) if best is not None else (None, 0)


class ToolCallParser:
    """Ollama's `tools.Parser`: feed output pieces to `add`, get (tool calls, content to send)."""

    def __init__(self, tag: str, tools: Sequence[Mapping[str, Any]]) -> None:
        self.tag = tag
        self.names = [str(_function(tool).get("name") or "") for tool in tools]
        self.state = "looking"  # looking for the tag -> calling -> done
        self.buffer = ""
        self.count = 0

    def add(self, piece: str) -> tuple[list[dict[str, Any]], str]:
        """The tool calls completed by `piece` (without ids) and the content that may be sent now."""
        if self.state == "done":
            return [], piece
        self.buffer += piece
        content = ""
        if self.state == "looking":
            position, found = self._find_tag()
            if position == -1:
                content, self.buffer = self.buffer, ""
            else:
                content, self.buffer = self.buffer[:position], self.buffer[position:]
            if self.tag in ("{", "[") and content.strip():
                self.state = "done"
                content, self.buffer = content + self.buffer, ""
                return [], content
            if not found:
                return [], content
            self.state = "calling"
        calls = []
        while (call := self._next_call()) is not None:
            calls.append(call)
        if self._closed():
            self.state = "done"
            content, self.buffer = self.buffer, ""
        return calls, content

    def remaining_content(self) -> str:
        """What to send as content at the end (Ollama's `Content`): the held-back text when no call was
        found and the tag is `{` or `[`, else nothing."""
        if self.count > 0 or self.tag not in ("{", "["):
            return ""
        return self.buffer

    def _find_tag(self) -> tuple[int, bool]:
        position = self.buffer.find(self.tag)
        if position != -1:
            return position, True
        for size in range(min(len(self.buffer), len(self.tag)), 0, -1):
            if self.buffer.endswith(self.tag[:size]):
                return len(self.buffer) - size, False
        return -1, False

    def _next_call(self) -> dict[str, Any] | None:
        name, end = _find_tool(self.names, self.buffer)
        if name is None:
            return None
        arguments, last = _find_arguments(name, self.buffer)
        if arguments is None:
            return None
        end = max(end, last)
        call = {"function": {"index": self.count, "name": name, "arguments": arguments}}
        self.count += 1
        self.buffer = self.buffer[end:]
        return call

    def _closed(self) -> bool:
        """Ollama's `done`: with tag `{` or `[`, the held-back text holds a balanced pair."""
        pairs = {"{": "}", "[": "]"}
        if self.tag not in pairs:
            return False
        depth = 0
        for char in self.buffer:
            if char == self.tag:
                depth += 1
            elif char == pairs[self.tag]:
                depth -= 1
                if depth == 0:
                    return True
        return False


async def tool_call_events(
    events: AsyncGenerator[dict[str, Any], None], *, parser: ToolCallParser
) -> AsyncGenerator[dict[str, Any], None]:
    """A chat's chunks with tool calls parsed out, as Ollama's ChatHandler sends them: content as the parser
    releases it, a chunk with `message.tool_calls` (fresh ids) for calls, nothing while a possible call is
    held back (logprobs excepted), and the final chunk with what remains."""
    try:
        async for event in events:
            message = event["message"]
            calls, content = parser.add(message["content"])
            if content:
                message["content"] = content
            elif calls:
                message["content"] = ""
                message["tool_calls"] = [{"id": tool_call_id(), **call} for call in calls]
            elif message.get("thinking"):
                message["content"] = ""  # the thinking goes out; the text is held back
            else:
                if event.get("logprobs") and not event.get("done"):
                    yield {**event, "message": {**message, "content": ""}}
                if not event.get("done"):
                    continue
                message["content"] = parser.remaining_content()
            yield event
    finally:
        await events.aclose()
