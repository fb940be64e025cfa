"""Values for `harness gguf fix`: typed conversions, values read from a file, Hugging Face config.json."""

from __future__ import annotations

import json
from pathlib import Path

from gguf import GGUFValueType

from harness.errors import GGUFReadError, HarnessError
from harness.gguf.plan import KV
from harness.gguf.reader import TYPE_NAMES, ArrayValue, KVEntry

TYPES_BY_NAME: dict[str, GGUFValueType] = {name: GGUFValueType(int(vt)) for vt, name in TYPE_NAMES.items()}
_INT_RANGES: dict[str, tuple[int, int]] = {
    "u8": (0, 2**8 - 1),
    "i8": (-(2**7), 2**7 - 1),
    "u16": (0, 2**16 - 1),
    "i16": (-(2**15), 2**15 - 1),
    "u32": (0, 2**32 - 1),
    "i32": (-(2**31), 2**31 - 1),
    "u64": (0, 2**64 - 1),
    "i64": (-(2**63), 2**63 - 1),
}
# Hugging Face config.json field -> key suffix under the architecture.
HF_CONFIG_KEYS: tuple[tuple[str, str], ...] = (
    ("max_position_embeddings", "context_length"),
    ("hidden_size", "embedding_length"),
    ("num_hidden_layers", "block_count"),
    ("num_attention_heads", "attention.head_count"),
    ("num_key_value_heads", "attention.head_count_kv"),
    ("intermediate_size", "feed_forward_length"),
    ("rms_norm_eps", "attention.layer_norm_rms_epsilon"),
    ("rope_theta", "rope.freq_base"),
    ("vocab_size", "vocab_size"),
)


class FixOptionError(HarnessError):
    """A `harness gguf fix` option is invalid (bad --set syntax, unknown tensor, unreadable config.json)."""


def kv_from_entry(entry: KVEntry) -> KV:
    """The `KV` to write for a value read from a file."""
    value = entry.value
    if entry.truncated:
        raise GGUFReadError(
            f"key {entry.key} holds a string longer than the fixer copies", "the file is probably corrupt"
        )
    if isinstance(value, ArrayValue):
        if value.items is None:
            raise GGUFReadError(
                f"key {entry.key} holds {value.length:,} items, more than the fixer copies",
                "the file is probably corrupt",
            )
        item_type = GGUFValueType(int(value.item_type))
        if not isinstance(value.items, list):
            return KV(value.items.tolist(), GGUFValueType.ARRAY, item_type)
        return KV([_raw(item) for item in value.items], GGUFValueType.ARRAY, item_type)
    return KV(_raw(value) if isinstance(value, str) else value, GGUFValueType(int(entry.type)))


def _raw(text: str) -> str | bytes:
    """`text` as read; its original bytes when it was not valid UTF-8 (the reader escaped them)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape")
    return text


def convert(value: object, type_name: str) -> object:
    """`value` as a value of GGUF type `type_name` (u32, f32, bool, str, arr[i32]...); ValueError if not."""
    if type_name.startswith("arr["):
        if not isinstance(value, list):
            raise ValueError(f"{value!r} is not an array")
        return [convert(item, type_name[4:-1]) for item in value]
    if type_name in _INT_RANGES:
        if isinstance(value, str):
            value = int(value, 0)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{value!r} is not an integer")
        low, high = _INT_RANGES[type_name]
        if not low <= value <= high:
            raise ValueError(f"{value} is outside the range of {type_name} ({low}..{high})")
        return value
    if type_name in ("f32", "f64"):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(f"{value!r} is not a number")
        return float(value)
    if type_name == "bool":
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
            return value.lower() in ("true", "1")
        if isinstance(value, (bool, int)) and value in (0, 1):
            return bool(value)
        raise ValueError(f"{value!r} is not a boolean (true/false)")
    if type_name == "str":
        if not isinstance(value, str):
            raise ValueError(f"{value!r} is not a string")
        return value
    raise ValueError(f"unknown GGUF type {type_name!r}")


def typed_kv(value: object, type_name: str) -> KV:
    """A `KV` of type `type_name` holding `value` converted to it."""
    converted = convert(value, type_name)
    if type_name.startswith("arr["):
        return KV(converted, GGUFValueType.ARRAY, TYPES_BY_NAME[type_name[4:-1]])
    return KV(converted, TYPES_BY_NAME[type_name])


def kv_type_name(kv: KV) -> str:
    """The type of `kv` as llama.cpp names it (u32, f32, arr[str]...)."""
    if kv.type == GGUFValueType.ARRAY and kv.sub_type is not None:
        return f"arr[{TYPE_NAMES[kv.sub_type]}]"
    return TYPE_NAMES[kv.type]


def show(value: object) -> str:
    """A short repr for messages."""
    text = repr(value)
    return text if len(text) <= 50 else text[:47] + "..."


def close_floats(a: object, b: object) -> bool:
    """Two floats equal to within float32 rounding."""
    return isinstance(a, float) and isinstance(b, float) and abs(a - b) <= 1e-6 * max(abs(a), abs(b))


def load_hf_config(path: Path) -> dict[str, object]:
    """A Hugging Face config.json (or the folder holding it); fields of `text_config` fill in missing ones."""
    file = path / "config.json" if path.is_dir() else path
    try:
        data = json.loads(file.read_text())
    except OSError as error:
        raise FixOptionError(
            f"--config {path}: cannot read it: {error.strerror}", "give the model's config.json"
        ) from None
    except ValueError as error:
        raise FixOptionError(
            f"--config {path}: not valid JSON: {error}", "give the model's config.json"
        ) from None
    if not isinstance(data, dict):
        raise FixOptionError(f"--config {path}: not a JSON object", "give the model's config.json")
    text_config = data.get("text_config")
    if isinstance(text_config, dict):
        return {**text_config, **{k: v for k, v in data.items() if v is not None}}
    return data
