"""Engine settings, read from the same environment variables as `ollama serve` where they apply."""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("harness.engine")

DEFAULT_PORT = 11434
DEFAULT_KEEP_ALIVE_S = 300.0
FOREVER = math.inf

_GO_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_GO_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_go_duration(text: str) -> float:
    """Seconds in a Go duration string such as "5m", "1h30m", "-1s", "0"; raises ValueError otherwise."""
    text = text.strip()
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    if body == "0":
        return 0.0
    position, total = 0, 0.0
    for match in _GO_DURATION_PART.finditer(body):
        if match.start() != position:
            break
        total += float(match.group(1)) * _GO_UNIT_SECONDS[match.group(2)]
        position = match.end()
    if not body or position != len(body):
        raise ValueError(f'time: invalid duration "{text}"')
    return sign * total


def parse_keep_alive(value: object) -> float:
    """Ollama's keep_alive: a number of seconds or a Go duration string; negative means forever (inf)."""
    if isinstance(value, bool):
        raise ValueError("invalid keep_alive")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            seconds = float(value)
        except ValueError:
            seconds = parse_go_duration(value)
    else:
        raise ValueError(f"unsupported type: {type(value).__name__}")
    return FOREVER if seconds < 0 else seconds


def parse_host(value: str) -> tuple[str, int]:
    """OLLAMA_HOST rules: `[scheme://]host[:port]`; no scheme means http, default port 11434."""
    value = value.strip().strip("\"'")
    port = DEFAULT_PORT
    if "://" in value:
        scheme, value = value.split("://", 1)
        port = 443 if scheme == "https" else 80
    value = value.split("/", 1)[0]
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        if rest.startswith(":"):
            port = int(rest[1:])
    elif value.count(":") == 1:
        host, port_text = value.split(":")
        port = int(port_text) if port_text else port
    else:
        host = value
    return host or "127.0.0.1", port


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name, "").strip().strip("\"'")
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        log.warning("invalid environment variable, using default: %s=%r default=%d", name, text, default)
        return default


@dataclass(frozen=True)
class EngineConfig:
    """Everything the engine needs to know at start; see `from_env`."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    models_dir: Path = field(default_factory=lambda: Path.home() / ".ollama" / "models")
    keep_alive_s: float = DEFAULT_KEEP_ALIVE_S
    num_parallel: int = 1
    max_loaded_models: int = 3
    max_queue: int = 512
    context_length: int = 4096
    num_thread: int = 0
    load_timeout_s: float = 300.0
    origins: str = ""  # OLLAMA_ORIGINS as given: extra allowed origins, comma-separated (see access.py)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> EngineConfig:
        """Read OLLAMA_HOST, OLLAMA_MODELS, OLLAMA_KEEP_ALIVE, OLLAMA_NUM_PARALLEL, OLLAMA_MAX_LOADED_MODELS,
        OLLAMA_MAX_QUEUE, OLLAMA_CONTEXT_LENGTH, OLLAMA_LOAD_TIMEOUT (invalid values warn, use defaults),
        OLLAMA_ORIGINS, and this engine's own HARNESS_NUM_THREAD (runner threads when a request sets no
        num_thread)."""
        env = os.environ if env is None else env
        host, port = parse_host(env.get("OLLAMA_HOST", "") or f"127.0.0.1:{DEFAULT_PORT}")
        models = env.get("OLLAMA_MODELS", "").strip().strip("\"'")
        keep_alive = DEFAULT_KEEP_ALIVE_S
        if env.get("OLLAMA_KEEP_ALIVE", "").strip():
            try:
                keep_alive = parse_keep_alive(env["OLLAMA_KEEP_ALIVE"].strip().strip("\"'"))
            except ValueError:
                log.warning("invalid OLLAMA_KEEP_ALIVE %r, using 5m", env["OLLAMA_KEEP_ALIVE"])
        load_timeout = 300.0
        if env.get("OLLAMA_LOAD_TIMEOUT", "").strip():
            try:
                load_timeout = parse_keep_alive(env["OLLAMA_LOAD_TIMEOUT"].strip())
            except ValueError:
                log.warning("invalid OLLAMA_LOAD_TIMEOUT, using 5m")
            load_timeout = FOREVER if load_timeout <= 0 else load_timeout
        max_loaded = _env_int(env, "OLLAMA_MAX_LOADED_MODELS", 0)
        context_length = _env_int(env, "OLLAMA_CONTEXT_LENGTH", 0)
        return cls(
            host=host,
            port=port,
            models_dir=Path(models).expanduser() if models else Path.home() / ".ollama" / "models",
            keep_alive_s=keep_alive,
            num_parallel=max(1, _env_int(env, "OLLAMA_NUM_PARALLEL", 1)),
            max_loaded_models=max_loaded if max_loaded > 0 else 3,
            max_queue=max(1, _env_int(env, "OLLAMA_MAX_QUEUE", 512)),
            context_length=context_length if context_length > 0 else 4096,
            num_thread=max(0, _env_int(env, "HARNESS_NUM_THREAD", 0)),
            load_timeout_s=load_timeout,
            origins=env.get("OLLAMA_ORIGINS", ""),
        )
