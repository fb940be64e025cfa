"""Thinking as Ollama does it for a model without a built-in parser: the `think` setting of a request, the
template's thinking tags, and the parser that splits the model's output into thinking and content.

Follows Ollama's `thinking` package (thinking/template.go `InferTags`, thinking/parser.go) and its use in
server/routes.go:

* A template has thinking tags when it uses `.Thinking` inside a `{{ range }}` over `.Messages`: the first and
  last texts of the list around it (`<think>`, `</think>`). Such a model has the `thinking` capability.
* `think` is true, false, or a level ("high", "medium", "low", "max"); anything else is a 400. A model with
  the capability thinks unless told `think: false`; on a model without it a true or a level is a 400
  (`"<model>" does not support thinking`). The template sees `.Think`, `.ThinkLevel` ("medium" for true) and
  `.IsThinkSet`.
* When thinking is on and the template has tags, `ThinkingParser` takes the output: text between the
  opening and closing tag (leading whitespace eaten) is thinking, the rest is content; a prompt that ends with
  the opening tag (the template opened it) starts inside the thinking. Chunks carry `thinking` beside the
  content (`message.thinking` in chat, `thinking` in generate), nothing while a tag is still ambiguous.

Not done: Ollama's second pass for structured outputs on a thinking model (it generates without `format`
until the thinking ends, then again with it); here `format` constrains the whole output. Models whose
thinking Ollama parses with a built-in parser (harmony, qwen3-coder...) are not recognised: their GGUF
config names the parser, which Ollama sets only for models from its registry.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import Any

from harness.engine.routing import ApiError
from harness.modelfile.gotemplate import GoTemplate

__all__ = ["ThinkSetting", "ThinkingParser", "think_setting", "thinking_events", "thinking_tags"]

THINK_LEVELS = ("high", "medium", "low", "max")


def thinking_tags(template: GoTemplate) -> tuple[str, str]:
    """The template's thinking tags (Ollama's `InferTags`); ("", "") when it has none."""
    return template.texts_around("Thinking", "Messages")


@dataclass(frozen=True)
class ThinkSetting:
    """A request's effective `think`: on or off, its level, and whether it was set (or defaulted)."""

    value: bool | None = None
    level: str = ""

    @property
    def template_flags(self) -> dict[str, Any]:
        """`.Think`, `.ThinkLevel` and `.IsThinkSet` as Ollama gives them to the template."""
        return {"Think": bool(self.value), "ThinkLevel": self.level, "IsThinkSet": self.value is not None}


def think_setting(raw_name: str, capabilities: list[str], body: Mapping[str, Any]) -> ThinkSetting:
    """The request's `think`, checked as Ollama checks it; a thinking model thinks unless told not to."""
    think = body.get("think")
    if think is not None and not isinstance(think, bool) and think not in THINK_LEVELS:
        raise ApiError(
            400,
            f"invalid think value: {json.dumps(think)} "
            '(must be "high", "medium", "low", "max", true, or false)',
        )
    if "thinking" not in capabilities:
        if think:
            raise ApiError(400, f"{json.dumps(raw_name)} does not support thinking")
        return ThinkSetting(None if think is None else False)
    if think is None or think is True:
        return ThinkSetting(True, "medium")
    if think is False:
        return ThinkSetting(False)
    return ThinkSetting(True, str(think))


class ThinkingParser:
    """Ollama's `thinking.Parser`: feed output pieces to `add`, get (thinking, content) to send now."""

    def __init__(self, opening: str, closing: str) -> None:
        self.opening, self.closing = opening, closing
        self.state = (
            "looking"  # -> "started" (eating blanks) -> "thinking" -> "ended" (eating blanks) -> "done"
        )
        self.pending = ""

    def add(self, piece: str) -> tuple[str, str]:
        """The thinking and the content that `piece` releases."""
        self.pending += piece
        thinking, content = [], []
        again = True
        while again:
            more_thinking, more_content, again = self._eat()
            thinking.append(more_thinking)
            content.append(more_content)
        return "".join(thinking), "".join(content)

    def _eat(self) -> tuple[str, str, bool]:
        text = self.pending
        if self.state == "looking":
            trimmed = text.lstrip()
            if trimmed.startswith(self.opening):
                after = trimmed[len(self.opening) :].lstrip()
                self.pending = after
                self.state = "thinking" if after else "started"
                return "", "", True
            if self.opening.startswith(trimmed):  # a partial tag, or only blanks so far
                return "", "", False
            self.state, self.pending = "done", ""
            return "", text, False
        if self.state == "started":
            trimmed, self.pending = text.lstrip(), ""
            if not trimmed:
                return "", "", False
            self.state, self.pending = "thinking", trimmed
            return "", "", True
        if self.state == "thinking":
            if self.closing in text:
                thinking, remaining = text.split(self.closing, 1)
                remaining = remaining.lstrip()
                self.pending = ""
                self.state = "done" if remaining else "ended"
                return thinking, remaining, False
            for size in range(min(len(text), len(self.closing)), 0, -1):
                if text.endswith(self.closing[:size]):
                    self.pending = text[-size:]
                    return text[:-size], "", False
            self.pending = ""
            return text, "", False
        if self.state == "ended":
            trimmed, self.pending = text.lstrip(), ""
            if trimmed:
                self.state = "done"
            return "", trimmed, False
        self.pending = ""
        return "", text, False


async def thinking_events(
    events: AsyncGenerator[dict[str, Any], None], *, parser: ThinkingParser, chat: bool
) -> AsyncGenerator[dict[str, Any], None]:
    """Chunks with the thinking split out of the text (chat: `message.content` / `message.thinking`;
    generate: `response` / `thinking`), as Ollama's handlers send them: nothing while it is ambiguous."""
    try:
        async for event in events:
            holder = event["message"] if chat else event
            key = "content" if chat else "response"
            thinking, content = parser.add(holder[key])
            if not thinking and not content and not event.get("done"):
                continue
            holder[key] = content
            if thinking:
                holder["thinking"] = thinking
            yield event
    finally:
        await events.aclose()
