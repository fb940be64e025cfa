"""Ollama's request options: defaults, type checks (`api/types.go:Options.FromMap`), and the mapping onto
llama.cpp's `/completion` sampling fields and load-time settings."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from harness.modelfile.options import LOAD_DEFAULTS, OPTION_KINDS, RUNTIME_DEFAULTS

log = logging.getLogger("harness.engine")


class OptionError(ValueError):
    """An option of the wrong type (Ollama answers 500 with this text)."""


def _coerce(key: str, value: Any) -> Any:
    kind = OPTION_KINDS.get(key)
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise OptionError(f'option "{key}" must be of type integer')
        return int(value)
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise OptionError(f'option "{key}" must be of type float')
        return float(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise OptionError(f'option "{key}" must be of type boolean')
        return value
    if kind == "list":
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise OptionError(f'option "{key}" must be of type array of strings')
        return list(value)
    return value


def merge_options(*layers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Defaults, then each layer in order (model parameters, request options); unknown keys are logged and
    dropped, `None` values ignored, wrong types raise OptionError."""
    merged: dict[str, Any] = {**RUNTIME_DEFAULTS, **LOAD_DEFAULTS}
    for layer in layers:
        for key, value in (layer or {}).items():
            if value is None:
                continue
            if key not in merged:
                log.warning("invalid option provided option=%s", key)
                continue
            merged[key] = _coerce(key, value)
    return merged


def completion_fields(options: Mapping[str, Any]) -> dict[str, Any]:
    """llama.cpp `/completion` sampling fields for merged Ollama options."""
    fields: dict[str, Any] = {
        "n_predict": options["num_predict"],
        "temperature": options["temperature"],
        "top_k": options["top_k"],
        "top_p": options["top_p"],
        "min_p": options["min_p"],
        "typical_p": options["typical_p"],
        "repeat_last_n": options["repeat_last_n"],
        "repeat_penalty": options["repeat_penalty"],
        "presence_penalty": options["presence_penalty"],
        "frequency_penalty": options["frequency_penalty"],
        "n_keep": options["num_keep"],
        "stop": options["stop"],
        "cache_prompt": True,
    }
    if options["seed"] >= 0:
        fields["seed"] = options["seed"]
    return fields
