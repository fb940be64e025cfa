"""Ollama model names: `[host/][namespace/]model[:tag]`, with Ollama's part rules and defaults."""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"

_PART_RULES = {
    # part: (allowed characters after the first, max length)
    "host": (re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:\-]*"), 350),
    "namespace": (re.compile(r"[A-Za-z0-9_][A-Za-z0-9_\-]*"), 80),
    "model": (re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*"), 80),
    "tag": (re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*"), 80),
}


class InvalidNameError(ValueError):
    """A model name that breaks Ollama's rules (the API answers 400 `invalid model name`)."""


@dataclass(frozen=True)
class ModelName:
    """A fully qualified model name; `str()` gives the shortest display form, as `ollama list` shows it."""

    host: str
    namespace: str
    model: str
    tag: str

    @classmethod
    def parse(cls, text: str) -> ModelName:
        """Parse and validate a name, filling Ollama's defaults; raises InvalidNameError."""
        if not isinstance(text, str) or not text.strip():
            raise InvalidNameError("invalid model name")
        rest = text.strip()
        if "@" in rest:
            rest = rest.split("@", 1)[0]
        tag = DEFAULT_TAG
        colon = rest.rfind(":")
        if colon > rest.rfind("/"):
            rest, tag = rest[:colon], rest[colon + 1 :]
        parts = rest.split("/")
        if len(parts) > 3:
            raise InvalidNameError("invalid model name")
        host, namespace = DEFAULT_HOST, DEFAULT_NAMESPACE
        if len(parts) == 3:
            host, namespace, model = parts
        elif len(parts) == 2:
            namespace, model = parts
        else:
            (model,) = parts
        name = cls(host, namespace, model, tag)
        name.validate()
        return name

    def validate(self) -> None:
        """Raise InvalidNameError unless every part follows its character and length rule."""
        for part, value in (
            ("host", self.host),
            ("namespace", self.namespace),
            ("model", self.model),
            ("tag", self.tag),
        ):
            pattern, max_len = _PART_RULES[part]
            if not (1 <= len(value) <= max_len) or not pattern.fullmatch(value):
                raise InvalidNameError("invalid model name")
        if self.tag.lower() in ("cloud", "local") or self.tag.lower().endswith("-cloud"):
            raise InvalidNameError("invalid model name")

    def full(self) -> str:
        """Ollama's `Name.String()`: host/namespace/model:tag, as error texts give it."""
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    def key(self) -> str:
        """Case-insensitive identity of the name."""
        return self.full().lower()

    def manifest_parts(self) -> tuple[str, str, str, str]:
        """Path parts of the manifest under `manifests/` (each already validated: no separators, no `..`)."""
        return (self.host, self.namespace, self.model, self.tag)

    def __str__(self) -> str:
        if self.host == DEFAULT_HOST and self.namespace == DEFAULT_NAMESPACE:
            return f"{self.model}:{self.tag}"
        if self.host == DEFAULT_HOST:
            return f"{self.namespace}/{self.model}:{self.tag}"
        return self.full()
