"""Ollama's model options (`api.Options` and its `Runner` part in api/types.go): every option a Modelfile
PARAMETER or a request's `options` may set, its Go kind, and its default (`api.DefaultOptions`). The
Modelfile parser types PARAMETER values with it; the embedded engine checks and merges request options
with it. Options Ollama has deprecated are dropped with a warning, not refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Per-request sampling options and their defaults.
RUNTIME_DEFAULTS: Mapping[str, Any] = {
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
# Load-time options (`api.Runner`): a change reloads the model.
LOAD_DEFAULTS: Mapping[str, Any] = {
    "num_ctx": 0,  # 0: the server's default (OLLAMA_CONTEXT_LENGTH)
    "num_batch": 512,
    "num_gpu": -1,
    "main_gpu": 0,
    "use_mmap": True,
    "num_thread": 0,
    "draft_num_predict": 4,  # speculative decoding with a model's own MTP tensors (Ollama 0.31+)
}
# The Go kind of every option: "int", "float", "bool" or "list" (of strings).
OPTION_KINDS: Mapping[str, str] = {
    **{name: "int" for name in ("num_keep", "seed", "num_predict", "top_k", "repeat_last_n")},
    **{name: "float" for name in ("top_p", "min_p", "typical_p", "temperature")},
    **{name: "float" for name in ("repeat_penalty", "presence_penalty", "frequency_penalty")},
    "stop": "list",
    **{name: "int" for name in ("num_ctx", "num_batch", "num_gpu", "main_gpu", "num_thread")},
    "use_mmap": "bool",
    "draft_num_predict": "int",
}
DEPRECATED_OPTIONS = (
    "penalize_newline",
    "low_vram",
    "f16_kv",
    "logits_all",
    "vocab_only",
    "use_mlock",
    "mirostat",
    "mirostat_tau",
    "mirostat_eta",
)
