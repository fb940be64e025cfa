"""Ollama's request options: defaults, type checks (`api/types.go:Options.FromMap`), and the mapping onto
llama.cpp's `/completion` sampling fields and load-time settings."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from harness.modelfile.options import LOAD_DEFAULTS, OPTION_KINDS, RUNTIME_DEFAULTS

log = logging.getLogger("harness.engine")


# Ollama 0.33 ends a generation without num_predict at 10 x num_ctx tokens (observed: num_ctx 128 -> 1,280).
UNLIMITED_PREDICT_CTX = 10


def prompt_token_limit(num_ctx: int) -> int:
    """The most prompt tokens Ollama 0.33 hands its llama-server for a model loaded with `num_ctx`; a longer
    prompt is truncated (observed: num_ctx 64, 128, 300, 2000 -> 35, 67, 153, 1003 tokens)."""
    return num_ctx // 2 + 3


def truncated_prompt(tokens: list[int], limit: int, keep: int) -> list[int]:
    """Ollama 0.33's truncation of a prompt over `limit` tokens: the first `keep` (its num_keep, plus the
    BOS token), then the last ones, `limit` in all (`truncating input prompt` in its log)."""
    if len(tokens) <= limit:
        return tokens
    keep = min(keep, limit)
    return tokens[:keep] + tokens[len(tokens) - (limit - keep) :]


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
