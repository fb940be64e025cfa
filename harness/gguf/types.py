"""The GGUF value types and GGML tensor types as plain tables, without importing gguf-py or numpy.

The checker's command-line start-up must stay short, and importing gguf-py (which imports numpy) costs more
than the whole check of a small file. These tables copy gguf-py's `GGUFValueType` and `GGML_QUANT_SIZES`;
tests/test_gguf_types.py asserts they still equal gguf-py's, so they cannot drift. `ValueType` members
compare equal to gguf-py's (both are IntEnums), so either can be used where the other is expected.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

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


TENSOR_TYPES: dict[int, TensorType] = {
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
F32 = TENSOR_TYPES[0]
