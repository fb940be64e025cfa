"""The one table of tensor and file types: the GGUF value types and GGML tensor types as stored in a file
(with block sizes), which types fixtures are built in, their GGML and file-type numbers, bits per weight,
the names Ollama's quantize at create accepts, and the comparable key of a type name. The reader and the
checker, the builder, the weight recipes, quantize, the matrix and the memory estimate all read it.

Block and type sizes are gguf-py's `GGML_QUANT_SIZES` (ggml's `type_traits`) and value types its
`GGUFValueType`, copied so that this module does not import gguf-py (nor numpy): `harness gguf check` must
start in well under 0.2 s (tests/test_gguf_types.py asserts the copies equal gguf-py's). File types are
llama.cpp's `llama_ftype` (gguf-py's `LlamaFileType`). The tables whose values are gguf-py enums
(`BUILD_TYPES`, `OLLAMA_FILE_TYPES`...) are made on first use (module `__getattr__`), for the same reason.
`ValueType` members compare equal to gguf-py's (both are IntEnums), so either can be used where the
other is expected.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

DEFAULT_ALIGNMENT = 32  # GGUF_DEFAULT_ALIGNMENT


class ValueType(IntEnum):
    """A GGUF metadata value type (gguf-py: GGUFValueType)."""

    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


@dataclass(frozen=True)
class TensorType:
    """A GGML tensor type: its id, name, elements per block and bytes per block."""

    id: int
    name: str
    block_size: int
    type_size: int

    @property
    def is_integer(self) -> bool:
        """I8, I16, I32, I64: integer data, never model weights."""
        return self.name in ("I8", "I16", "I32", "I64")


GGML_TYPES: dict[int, TensorType] = {
    t.id: t
    for t in (
        TensorType(0, "F32", 1, 4),
        TensorType(1, "F16", 1, 2),
        TensorType(2, "Q4_0", 32, 18),
        TensorType(3, "Q4_1", 32, 20),
        TensorType(6, "Q5_0", 32, 22),
        TensorType(7, "Q5_1", 32, 24),
        TensorType(8, "Q8_0", 32, 34),
        TensorType(9, "Q8_1", 32, 40),
        TensorType(10, "Q2_K", 256, 84),
        TensorType(11, "Q3_K", 256, 110),
        TensorType(12, "Q4_K", 256, 144),
        TensorType(13, "Q5_K", 256, 176),
        TensorType(14, "Q6_K", 256, 210),
        TensorType(15, "Q8_K", 256, 292),
        TensorType(16, "IQ2_XXS", 256, 66),
        TensorType(17, "IQ2_XS", 256, 74),
        TensorType(18, "IQ3_XXS", 256, 98),
        TensorType(19, "IQ1_S", 256, 50),
        TensorType(20, "IQ4_NL", 32, 18),
        TensorType(21, "IQ3_S", 256, 110),
        TensorType(22, "IQ2_S", 256, 82),
        TensorType(23, "IQ4_XS", 256, 136),
        TensorType(24, "I8", 1, 1),
        TensorType(25, "I16", 1, 2),
        TensorType(26, "I32", 1, 4),
        TensorType(27, "I64", 1, 8),
        TensorType(28, "F64", 1, 8),
        TensorType(29, "IQ1_M", 256, 56),
        TensorType(30, "BF16", 1, 2),
        TensorType(34, "TQ1_0", 256, 54),
        TensorType(35, "TQ2_0", 256, 66),
        TensorType(39, "MXFP4", 32, 17),
        TensorType(40, "NVFP4", 64, 36),
        TensorType(41, "Q1_0", 128, 18),
    )
}
F32 = GGML_TYPES[0]
GGML_TYPES_BY_NAME: dict[str, TensorType] = {t.name: t for t in GGML_TYPES.values()}


# Fixture builds: the types a profile's 2-D weights can be written in.
TENSOR_TYPES = ("f32", "f16", "q8_0", "q4_0")
QUANTIZED_TYPES = ("q8_0", "q4_0")
QUANT_BLOCK_SIZE = GGML_TYPES_BY_NAME["Q8_0"].block_size  # values per block of q8_0 and q4_0 (32)

# Bits per weight of the types a matrix may name (the widest is the reference for its deltas): fixture
# profiles are built in TENSOR_TYPES; a user's GGUF may also ask the server for Ollama's quantize types.
TYPE_BITS: Mapping[str, float] = {
    "f32": 32.0,
    "bf16": 16.0,
    "f16": 16.0,
    "q8_0": 8.5,
    "q6_k": 6.56,
    "q5_k_m": 5.69,
    "q5_k_s": 5.54,
    "q5_1": 6.0,
    "q5_0": 5.5,
    "q4_k_m": 4.89,
    "q4_k_s": 4.58,
    "q4_1": 5.0,
    "q4_0": 4.5,
    "q3_k_l": 4.27,
    "q3_k_m": 3.91,
    "q3_k_s": 3.5,
    "q2_k": 2.63,
}

OLLAMA_LISTED_TYPES = "F32, F16, Q4_K_S, Q4_K_M, Q8_0"  # what its error message lists


def type_key(tensor_type: str) -> str:
    """The comparable form of a type name: lower case (`Q4_K_M` -> `q4_k_m`)."""
    return tensor_type.strip().lower()


def bytes_per_value(type_name: str) -> float:
    """Bytes one value takes in a GGML type named in lower case (`f16` -> 2.0, `q8_0` -> 34/32)."""
    known = GGML_TYPES_BY_NAME[type_name.upper()]
    return known.type_size / known.block_size


def tensor_nbytes(shape: tuple[int, ...], ggml_type: int) -> int:
    """Bytes of a tensor of numpy `shape` stored as `ggml_type` (rows of whole blocks)."""
    known = GGML_TYPES[int(ggml_type)]
    n_elements = 1
    for dim in shape:
        n_elements *= int(dim)
    return n_elements // known.block_size * known.type_size


def _gguf_tables() -> dict[str, Any]:
    """The tables whose values are gguf-py enums (imported here, on first use: see the module docstring)."""
    from gguf import GGMLQuantizationType, LlamaFileType

    T = GGMLQuantizationType
    tables: dict[str, Any] = {"T": T}
    # Fixture builds: each build type's GGML type, and the general.file_type (llama_ftype) of a file whose
    # 2-D weights all have it.
    tables["BUILD_TYPES"] = {"f32": T.F32, "f16": T.F16, "q8_0": T.Q8_0, "q4_0": T.Q4_0}
    tables["BUILD_FILE_TYPES"] = {
        "f32": int(LlamaFileType.ALL_F32),
        "f16": int(LlamaFileType.MOSTLY_F16),
        "q4_0": int(LlamaFileType.MOSTLY_Q4_0),
        "q8_0": int(LlamaFileType.MOSTLY_Q8_0),
    }
    # Ollama's `ParseFileType` (quantize at create): the names it accepts (upper case), the file type of each.
    tables["OLLAMA_FILE_TYPES"] = {
        "F32": LlamaFileType.ALL_F32,
        "F16": LlamaFileType.MOSTLY_F16,
        "Q8_0": LlamaFileType.MOSTLY_Q8_0,
        "Q4_K_S": LlamaFileType.MOSTLY_Q4_K_S,
        "Q4_K_M": LlamaFileType.MOSTLY_Q4_K_M,
        "Q4_K": LlamaFileType.MOSTLY_Q4_K_M,
        "BF16": LlamaFileType.MOSTLY_BF16,
    }
    # The file types Ollama quantizes from.
    tables["SOURCE_FILE_TYPES"] = {
        LlamaFileType.ALL_F32: "F32",
        LlamaFileType.MOSTLY_F16: "F16",
        LlamaFileType.MOSTLY_BF16: "BF16",
    }
    # Ollama's FileType.ToTensorType: the type a file type's weight matrices get by default.
    tables["DEFAULT_TENSOR_TYPES"] = {
        LlamaFileType.ALL_F32: T.F32,
        LlamaFileType.MOSTLY_F16: T.F16,
        LlamaFileType.MOSTLY_BF16: T.BF16,
        LlamaFileType.MOSTLY_Q8_0: T.Q8_0,
        LlamaFileType.MOSTLY_Q4_K_S: T.Q4_K,
        LlamaFileType.MOSTLY_Q4_K_M: T.Q4_K,
    }
    tables["UNQUANTIZED"] = (T.F32, T.F16, T.BF16)
    return tables


_LAZY: dict[str, Any] = {}
_LAZY_NAMES = (
    "T",
    "BUILD_TYPES",
    "BUILD_FILE_TYPES",
    "OLLAMA_FILE_TYPES",
    "SOURCE_FILE_TYPES",
    "DEFAULT_TENSOR_TYPES",
    "UNQUANTIZED",
)


def __getattr__(name: str) -> Any:
    if name not in _LAZY_NAMES:
        raise AttributeError(f"module 'harness.gguf.types' has no attribute {name!r}")
    if not _LAZY:
        _LAZY.update(_gguf_tables())
    return _LAZY[name]
