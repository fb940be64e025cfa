"""Turn a model's TEMPLATE plus a request into the prompt text, by Ollama's rules.

Follows Ollama's `template/template.go` (`Parse`, `Execute`, `collate`) and the prompt assembly in
`server/routes.go` (GenerateHandler, ChatHandler):

* no TEMPLATE means `{{ .Prompt }}`; a template that uses neither `.Messages` nor `.Response` gets
  `{{ .Response }}` appended;
* messages are collated: consecutive messages of one role (except `tool`) are merged with a blank line,
  and every system message's content is joined into `.System`;
* a template that uses `.Messages` is rendered once with `System`, `Messages`, `Tools`, `Response` = ""
  (tools and tool calls as Go values, see tools.py);
  otherwise each completed user/assistant turn is rendered with `.System`/`.Prompt`/`.Response`, and the
  last turn with the template cut after `{{ .Response }}`, the pieces concatenated;
* generate: the request's system (else the Modelfile SYSTEM), then the Modelfile MESSAGEs, then the prompt
  as a user message; with a suffix, the template gets only `.Prompt` and `.Suffix`;
* chat: the Modelfile MESSAGEs, then the request's messages; the Modelfile SYSTEM is put first when the
  request's first message is not a system message.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from harness.engine.thinking import ThinkSetting
from harness.engine.tools import go_tool_call, go_tools
from harness.modelfile.gotemplate import GoStruct, GoTemplate, parse_template

__all__ = ["DEFAULT_TEMPLATE", "collate", "ollama_template", "render_chat", "render_generate"]

DEFAULT_TEMPLATE = "{{ .Prompt }}"

# Go field name -> JSON name of Ollama's api.Message.
_MESSAGE_FIELDS = {
    "Role": "role",
    "Content": "content",
    "Thinking": "thinking",
    "Images": "images",
    "ToolCalls": "tool_calls",
    "ToolName": "tool_name",
    "ToolCallID": "tool_call_id",
}


def ollama_template(text: str | None) -> GoTemplate:
    """Parse a TEMPLATE as Ollama's `template.Parse` does (default template, `.Response` appended).
    Parsed templates are immutable and cached, so rendering the same TEMPLATE per request is cheap."""
    return _parse_cached(text if text else DEFAULT_TEMPLATE)


@functools.lru_cache(maxsize=128)
def _parse_cached(text: str) -> GoTemplate:
    template = parse_template(text)
    names = template.vars()
    if "messages" not in names and "response" not in names:
        template = template.with_response_appended()
    return template


def _message(message: Mapping[str, Any]) -> dict[str, Any]:
    """An API message (JSON names) with every field of api.Message present."""
    return {
        "role": str(message.get("role", "")),
        "content": str(message.get("content") or ""),
        "thinking": str(message.get("thinking") or ""),
        "images": list(message.get("images") or []),
        "tool_calls": list(message.get("tool_calls") or []),
        "tool_name": str(message.get("tool_name") or ""),
        "tool_call_id": str(message.get("tool_call_id") or ""),
    }


def _as_struct(message: dict[str, Any]) -> GoStruct:
    """A message as the template sees it. Its `json` is that of a struct without JSON tags, as Ollama 0.33
    marshals it: every field under its Go name, empty lists as null."""
    fields = {go: message[js] for go, js in _MESSAGE_FIELDS.items()}
    fields["ToolCalls"] = [go_tool_call(call) for call in message["tool_calls"]]
    json_value = {go: value if value != [] else None for go, value in fields.items()}
    return GoStruct("*api.Message", fields, json_value)


def collate(messages: Sequence[Mapping[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """Ollama's `collate`: (all system contents joined by a blank line, messages with runs of one role
    merged, tool messages excepted)."""
    system: list[str] = []
    collated: list[dict[str, Any]] = []
    for raw in messages:
        message = _message(raw)
        if message["role"] == "system":
            system.append(message["content"])
        if collated and collated[-1]["role"] == message["role"] and message["role"] != "tool":
            collated[-1]["content"] += "\n\n" + message["content"]
        else:
            collated.append(message)
    return "\n\n".join(system), collated


def _flags(think: ThinkSetting | None) -> dict[str, Any]:
    return (think or ThinkSetting()).template_flags


def _execute(
    template: GoTemplate,
    messages: Sequence[Mapping[str, Any]],
    *,
    prompt: str = "",
    suffix: str = "",
    think: ThinkSetting | None = None,
    tools: Sequence[Mapping[str, Any]] = (),
) -> str:
    """Ollama's `Template.Execute`."""
    if prompt and suffix:
        return template.render({"Prompt": prompt, "Suffix": suffix, "Response": "", **_flags(think)})
    system, collated = collate(messages)
    names = template.vars()
    if "messages" in names or "document" in names:
        return template.render(
            {
                "System": system,
                "Messages": [_as_struct(m) for m in collated],
                "Tools": go_tools(tools),
                "Response": "",
                "Query": "",
                "Document": "",
                "Instruction": "",
                **_flags(think),
            }
        )
    parts: list[str] = []
    turn = {"System": "", "Prompt": "", "Response": ""}

    def render_turn() -> None:
        parts.append(template.render({**turn, **_flags(think)}))
        turn.update(System="", Prompt="", Response="")

    for message in collated:
        role, content = message["role"], message["content"]
        if role == "system":
            if turn["Prompt"] or turn["Response"]:
                render_turn()
            turn["System"] = content
        elif role == "user":
            if turn["Response"]:
                render_turn()
            turn["Prompt"] = content
        elif role == "assistant":
            turn["Response"] = content
    parts.append(template.truncated_after_response().render({**turn, **_flags(think)}))
    return "".join(parts)


def render_generate(
    template: str | None,
    *,
    system: str | None,
    prompt: str,
    model_system: str | None = None,
    model_messages: Sequence[Mapping[str, Any]] = (),
    suffix: str | None = None,
    think: ThinkSetting | None = None,
) -> str:
    """The prompt Ollama's /api/generate builds (not raw mode).

    `system` is the request's system; when empty, `model_system` (the Modelfile SYSTEM) is used.
    `model_messages` are the Modelfile MESSAGEs. Raises TemplateError for an unsupported template.
    """
    parsed = ollama_template(template)
    if suffix:
        return _execute(parsed, [], prompt=prompt, suffix=suffix, think=think)
    messages: list[Mapping[str, Any]] = []
    effective_system = system or model_system
    if effective_system:
        messages.append({"role": "system", "content": effective_system})
    messages.extend(model_messages)
    messages.append({"role": "user", "content": prompt})
    return _execute(parsed, messages, think=think)


def render_chat(
    template: str | None,
    messages: Sequence[Mapping[str, Any]],
    *,
    system: str | None,
    model_messages: Sequence[Mapping[str, Any]] = (),
    think: ThinkSetting | None = None,
    tools: Sequence[Mapping[str, Any]] = (),
) -> str:
    """The prompt Ollama's /api/chat builds from `messages` (dicts with role, content, tool_calls...).

    `system` is the Modelfile SYSTEM: put first unless the request's first message is a system message.
    `model_messages` are the Modelfile MESSAGEs, placed before the request's messages. `tools` are the
    request's tools (the template's `.Tools`).
    """
    parsed = ollama_template(template)
    combined: list[Mapping[str, Any]] = [*model_messages, *messages]
    if messages and messages[0].get("role") != "system" and system:
        combined.insert(0, {"role": "system", "content": system})
    return _execute(parsed, combined, think=think, tools=tools)
