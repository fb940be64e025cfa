"""Ollama's request options: defaults, type checks (`api/types.go:Options.FromMap`), and the mapping onto
llama.cpp's `/completion` sampling fields and load-time settings."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

log = logging.getLogger("harness.engine")

RUNTIME_DEFAULTS: dict[str, Any] = {
    "num_keep": 4,
    "seed": -1,
    "num_predict": -1,
    "top_k": 40,
    "top_p": 0.9,
    "min_p": 0.0,
    "typical_p": 1.0,
    "repeat_last_n": 64,
    "temperature": 0.8,
    "repeat_penalty": 1.0,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
    "stop": [],
}
LOAD_DEFAULTS: dict[str, Any] = {
    "num_ctx": 0,  # 0: the engine's default (OLLAMA_CONTEXT_LENGTH)
    "num_batch": 512,
    "num_gpu": -1,
    "main_gpu": 0,
    "use_mmap": True,
    "num_thread": 0,
}
_INT_OPTIONS = {
    "num_keep",
    "seed",
    "num_predict",
    "top_k",
    "repeat_last_n",
    "num_ctx",
    "num_batch",
    "num_gpu",
    "main_gpu",
    "num_thread",
}
_FLOAT_OPTIONS = {
    "top_p",
    "min_p",
    "typical_p",
    "temperature",
    "repeat_penalty",
    "presence_penalty",
    "frequency_penalty",
}
_BOOL_OPTIONS = {"use_mmap"}
_LIST_OPTIONS = {"stop"}


# Ollama 0.33 ends a generation without num_predict at 10 x num_ctx tokens (observed: num_ctx 128 -> 1,280).
UNLIMITED_PREDICT_CTX = 10


class OptionError(ValueError):
    """An option of the wrong type (Ollama answers 500 with this text)."""


def _coerce(key: str, value: Any) -> Any:
    if key in _INT_OPTIONS:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise OptionError(f'option "{key}" must be of type integer')
        return int(value)
    if key in _FLOAT_OPTIONS:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise OptionError(f'option "{key}" must be of type float')
        return float(value)
    if key in _BOOL_OPTIONS:
        if not isinstance(value, bool):
            raise OptionError(f'option "{key}" must be of type boolean')
        return value
    if key in _LIST_OPTIONS:
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


def completion_fields(options: Mapping[str, Any], num_ctx: int) -> dict[str, Any]:
    """llama.cpp `/completion` sampling fields for merged Ollama options, for a model loaded with `num_ctx`.

    A negative `num_predict` (no limit) becomes 10 x num_ctx, where Ollama 0.33 stops such a generation
    (done_reason "length"); the runner shifts its context as it fills (runner.py), as Ollama's does."""
    fields: dict[str, Any] = {
        "n_predict": options["num_predict"]
        if options["num_predict"] >= 0
        else UNLIMITED_PREDICT_CTX * num_ctx,
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
