"""Read a GGUF file's header the way Ollama's decoder does: metadata, tensor infos, and the bounds check.

Used at create time (Ollama's `parsing GGUF` step) and for `/api/show`, `/api/tags` and `/api/ps` details.
Only the header is read; tensor data is never loaded.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import gguf

GGUF_MAGIC = b"GGUF"
_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9
_FILE_TYPES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    32: "BF16",
}


class GGUFFormatError(ValueError):
    """The bytes are not a readable GGUF file (message in Ollama's decoder words)."""


@dataclass
class TensorInfo:
    name: str
    shape: list[int]
    ggml_type: int
    offset: int

    def n_elements(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count

    def n_bytes(self) -> int:
        try:
            block, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(self.ggml_type)]
        except (ValueError, KeyError) as error:
            raise GGUFFormatError(f"invalid type: {self.ggml_type}") from error
        return self.n_elements() * type_size // block

    def type_name(self) -> str:
        try:
            return gguf.GGMLQuantizationType(self.ggml_type).name
        except ValueError:
            return str(self.ggml_type)


@dataclass
class GGUFInfo:
    """Header of a GGUF file."""

    kv: dict[str, Any] = field(default_factory=dict)
    tensors: list[TensorInfo] = field(default_factory=list)

    @property
    def architecture(self) -> str:
        return str(self.kv.get("general.architecture", "unknown"))

    @property
    def parameter_count(self) -> int:
        return sum(tensor.n_elements() for tensor in self.tensors)

    @property
    def context_length(self) -> int | None:
        value = self.kv.get(f"{self.architecture}.context_length")
        return int(value) if isinstance(value, int) else None

    @property
    def embedding_length(self) -> int | None:
        value = self.kv.get(f"{self.architecture}.embedding_length")
        return int(value) if isinstance(value, int) else None

    @property
    def file_type(self) -> str:
        value = self.kv.get("general.file_type")
        if isinstance(value, int):
            return _FILE_TYPES.get(value, f"unknown ({value})")
        types = {t.type_name() for t in self.tensors if len(t.shape) > 1}
        return types.pop() if len(types) == 1 else "unknown"


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


def is_gguf(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(4) == GGUF_MAGIC


class _Reader:
    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle

    def read(self, size: int) -> bytes:
        data = self.handle.read(size)
        if len(data) != size:
            raise GGUFFormatError("unexpected EOF")
        return data

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        length = self.unpack("<Q")
        if length > 1 << 30:
            raise GGUFFormatError("unexpected EOF")
        return self.read(length).decode("utf-8", errors="replace")

    def value(self, value_type: int, keep_arrays: bool) -> Any:
        if value_type in _SCALARS:
            return self.unpack(_SCALARS[value_type])
        if value_type == _STRING:
            return self.string()
        if value_type == _ARRAY:
            item_type, count = self.unpack("<I"), self.unpack("<Q")
            if count > 1 << 31:
                raise GGUFFormatError("unexpected EOF")
            items = [self.value(item_type, keep_arrays) for _ in range(count)]
            return items if keep_arrays or count <= 5 else []
        raise GGUFFormatError(f"invalid type: {value_type}")


def read_gguf_info(path: Path, *, keep_arrays: bool = False) -> GGUFInfo:
    """Decode the header; raise GGUFFormatError with Ollama's texts: `invalid file magic`, `unexpected EOF`,
    `invalid type: N`, `invalid GGUF alignment: 0`, `tensor "x" offset+size (N) exceeds file size (M)`."""
    file_size = path.stat().st_size
    info = GGUFInfo()
    with path.open("rb") as handle:
        reader = _Reader(handle)
        if handle.read(4) != GGUF_MAGIC:
            raise GGUFFormatError("invalid file magic")
        reader.unpack("<I")  # version
        n_tensors, n_kv = reader.unpack("<Q"), reader.unpack("<Q")
        for _ in range(n_kv):
            key = reader.string()
            info.kv[key] = reader.value(reader.unpack("<I"), keep_arrays or key.startswith("general."))
        for _ in range(n_tensors):
            name = reader.string()
            n_dims = reader.unpack("<I")
            if n_dims > 4:
                raise GGUFFormatError(f'tensor "{name}" dimensions {n_dims} exceeds maximum')
            shape = [reader.unpack("<Q") for _ in range(n_dims)]
            info.tensors.append(TensorInfo(name, shape, reader.unpack("<I"), reader.unpack("<Q")))
        alignment = int(info.kv.get("general.alignment", 32))
        if alignment == 0:
            raise GGUFFormatError("invalid GGUF alignment: 0")
        data_start = -(-handle.tell() // alignment) * alignment
    for tensor in info.tensors:
        end = data_start + tensor.offset + tensor.n_bytes()
        if end > file_size:
            raise GGUFFormatError(
                f'tensor "{tensor.name}" offset+size ({end}) exceeds file size ({file_size})'
            )
    return info
