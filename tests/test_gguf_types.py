"""The checker's own copies of gguf-py's tables (kept so that a check imports neither gguf-py nor numpy)
still equal the installed gguf-py's."""

from __future__ import annotations

from gguf.constants import GGML_QUANT_SIZES, MODEL_ARCH_NAMES, GGMLQuantizationType, GGUFValueType

from harness.gguf.arch_names import LLAMACPP_ARCHITECTURES
from harness.gguf.types import GGML_TYPES, ValueType


def test_tensor_types_equal_gguf_py() -> None:
    ours = {t.id: (t.name, t.block_size, t.type_size) for t in GGML_TYPES.values()}
    theirs = {int(q): (GGMLQuantizationType(q).name, *sizes) for q, sizes in GGML_QUANT_SIZES.items()}
    assert ours == theirs


def test_value_types_equal_gguf_py() -> None:
    assert {v.name: int(v) for v in ValueType} == {v.name: int(v) for v in GGUFValueType}
    assert ValueType.UINT32 == GGUFValueType.UINT32 and hash(ValueType.STRING) == hash(GGUFValueType.STRING)


def test_architectures_equal_gguf_py() -> None:
    assert frozenset(MODEL_ARCH_NAMES.values()) == LLAMACPP_ARCHITECTURES
