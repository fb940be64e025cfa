"""A GGUF header as Ollama's engine sees it: the bounded reader from `harness.gguf.reader`, plus what is
engine-specific: Ollama's decoder error texts, the `details` (family, parameter_size, quantization_level)
and the JSON-ready `model_info`/`tensors` of `/api/show`.

Used at create time (Ollama's `parsing GGUF` step) and for `/api/show`, `/api/tags` and `/api/ps`.
Only the header is read; tensor data is never loaded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf

from harness.gguf.reader import GGUF_MAGIC, ArrayValue, GGUFHeader, ReadProblem, read_gguf_header

# Reader finding codes -> the words of Ollama's decoder (fs/ggml/gguf.go).
_TRUNCATED = {"empty-file", "truncated-header", "truncated-kv", "truncated-tensor-info"}
_SHOWN_ARRAY_ITEMS = 5  # without `verbose`, /api/show empties longer arrays (general.* arrays excepted)


class GGUFFormatError(ValueError):
    """The bytes are not a readable GGUF file (message in Ollama's decoder words)."""


def _decoder_message(problem: ReadProblem) -> str:
    """Ollama's text for a problem that stopped the reader; the reader's own words where Ollama has none."""
    if problem.code == "bad-magic":
        return "invalid file magic"
    if problem.code in _TRUNCATED:
        return "unexpected EOF"
    value_type = re.search(r"value type (\d+)", problem.message)
    if problem.code == "bad-kv" and value_type:
        return f"invalid type: {value_type.group(1)}"
    dims = re.search(r"has ([\d,]+) dimensions", problem.message)
    if problem.code == "bad-tensor-info" and dims:
        return f'tensor "{problem.tensor}" dimensions {dims.group(1).replace(",", "")} exceeds maximum'
    return problem.message


def _json_ready(value: object, keep_array: bool) -> Any:
    """A reader value as JSON: arrays as lists (or [] when not kept), strings with bad UTF-8 replaced."""
    if isinstance(value, ArrayValue):
        if not keep_array or value.items is None:
            return []
        items = value.items if isinstance(value.items, list) else value.items.tolist()
        return [_json_ready(item, True) for item in items]
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return value


def file_type_name(value: int) -> str:
    """Ollama's name for a `general.file_type` (F16, Q4_0, Q4_K_M...), from gguf's LlamaFileType."""
    try:
        name = gguf.LlamaFileType(value).name
    except ValueError:
        return "unknown"
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def human_parameter_size(count: int) -> str:
    """Ollama's `parameter_size` text: 270M, 1.2B, 426.62K."""
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if count >= limit:
            value = count / limit
            text = (
                f"{value:.2f}".rstrip("0").rstrip(".")
                if value < 10
                else f"{value:.0f}"
                if value >= 100
                else f"{value:.1f}".rstrip("0").rstrip(".")
            )
            return f"{text}{suffix}"
    return str(count)


@dataclass(frozen=True)
class GGUFInfo:
    """A fully read, bounds-checked GGUF header."""

    header: GGUFHeader

    @property
    def architecture(self) -> str:
        value = self.header.value("general.architecture")
        return value if isinstance(value, str) else "unknown"

    @property
    def parameter_count(self) -> int:
        return sum(tensor.n_elements for tensor in self.header.tensors)

    def _int(self, key: str) -> int | None:
        value = self.header.value(f"{self.architecture}.{key}")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def context_length(self) -> int | None:
        return self._int("context_length")

    @property
    def embedding_length(self) -> int | None:
        return self._int("embedding_length")

    @property
    def file_type(self) -> str:
        """`quantization_level`: general.file_type's name, else the one type of all matrices."""
        value = self.header.value("general.file_type")
        if isinstance(value, int) and not isinstance(value, bool):
            return file_type_name(value)
        types = {t.type_name for t in self.header.tensors if len(t.ne) > 1}
        return types.pop() if len(types) == 1 else "unknown"

    def model_info(self, *, verbose: bool = False) -> dict[str, Any]:
        """`/api/show` `model_info`: every key but the name and chat template, long arrays only if verbose."""
        info = {
            key: _json_ready(
                entry.value,
                verbose or key.startswith("general.") or len(entry.value) <= _SHOWN_ARRAY_ITEMS
                if isinstance(entry.value, ArrayValue)
                else True,
            )
            for key, entry in self.header.kvs.items()
            if key not in ("general.name", "tokenizer.chat_template")
        }
        info["general.parameter_count"] = self.parameter_count
        return info

    def tensors(self) -> list[dict[str, Any]]:
        """`/api/show` (verbose) `tensors`: name, type and shape (ggml order)."""
        return [{"name": t.name, "type": t.type_name, "shape": list(t.ne)} for t in self.header.tensors]


def is_gguf(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(4) == GGUF_MAGIC


def read_gguf_info(path: Path) -> GGUFInfo:
    """Read and bounds-check the header; raise GGUFFormatError with Ollama's texts: `invalid file magic`,
    `unexpected EOF`, `invalid type: N`, `invalid GGUF alignment: 0`,
    `tensor "x" offset+size (N) exceeds file size (M)`."""
    header = read_gguf_header(path)
    if not header.complete:
        stop = header.problems[-1] if header.problems else None
        raise GGUFFormatError(_decoder_message(stop) if stop else "unexpected EOF")
    if header.value("general.alignment") == 0:
        raise GGUFFormatError("invalid GGUF alignment: 0")
    assert header.data_offset is not None
    for tensor in header.tensors:
        size = tensor.nbytes
        if size is None:
            raise GGUFFormatError(f"invalid type: {tensor.ggml_type}")
        end = header.data_offset + tensor.offset + size
        if end > header.file_size:
            raise GGUFFormatError(
                f'tensor "{tensor.name}" offset+size ({end}) exceeds file size ({header.file_size})'
            )
    return GGUFInfo(header)
