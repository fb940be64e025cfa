"""`harness.gguf.quantize`: Ollama's quantize-at-create rules, on real files from the builder."""

from __future__ import annotations

from pathlib import Path

import pytest
from gguf import GGMLQuantizationType as T

from harness.errors import BuildError
from harness.gguf.build import build_cached
from harness.gguf.check import check_gguf
from harness.gguf.quantize import (
    OLLAMA_LISTED_TYPES,
    QuantizationError,
    UnsupportedQuantization,
    plan_quantization,
    quantize_gguf,
    tensor_target,
)
from harness.gguf.reader import TensorInfo, read_gguf_header
from harness.gguf.spec import load_profile


def _tensor(name: str, ne: tuple[int, ...], ggml_type: T = T.F16) -> TensorInfo:
    return TensorInfo(name=name, ne=ne, ggml_type=int(ggml_type), offset=0, info_offset=0)


@pytest.mark.parametrize(
    ("name", "ne", "target", "n_experts", "expected"),
    [
        ("blk.0.attn_q.weight", (64, 64), T.Q8_0, 0, T.Q8_0),
        ("token_embd.weight", (64, 600), T.Q8_0, 0, T.Q8_0),
        ("blk.0.attn_norm.weight", (64,), T.Q8_0, 0, T.F16),  # 1D: kept as it is
        ("output_norm.weight", (64, 2), T.Q8_0, 0, T.F16),  # a norm: kept
        ("blk.0.ffn_gate_inp.weight", (64, 8), T.Q8_0, 0, T.F16),  # expert router: kept
        ("rope_freqs", (32, 2), T.Q8_0, 0, T.F16),  # not a weight: kept
        ("v.blk.0.attn_q.weight", (64, 64), T.Q8_0, 0, T.F16),  # vision encoder: kept
        ("blk.0.ffn_down.weight", (48, 64), T.Q8_0, 0, T.F16),  # rows of 48 do not split into 32s
        ("blk.0.attn_q_b.weight", (64, 64), T.F16, 0, T.Q8_0),  # MLA: always Q8_0
        ("blk.0.attn_v.weight", (64, 64), T.F16, 8, T.Q8_0),  # 8 experts: Q8_0
        ("blk.0.attn_v.weight", (64, 64), T.F32, 0, T.F32),
    ],
)
def test_tensor_targets_follow_ollamas_rules(
    name: str, ne: tuple[int, ...], target: T, n_experts: int, expected: T
) -> None:
    assert tensor_target(_tensor(name, ne), target, n_experts) == expected


def test_f32_to_q8_0_is_byte_identical_to_the_builders_q8_0(tmp_path: Path) -> None:
    spec = load_profile("tiny")
    f32 = build_cached(spec.replace(tensor_type="f32"))
    written = quantize_gguf(f32.path, tmp_path / "q8.gguf", "q8_0")
    assert written.sha256 == build_cached(spec.replace(tensor_type="q8_0")).sha256
    assert read_gguf_header(f32.path).value("general.file_type") == 0  # the source is untouched


def test_f16_to_f32_and_q8_0_pass_the_checker(tmp_path: Path) -> None:
    f16 = build_cached(load_profile("tiny").replace(tensor_type="f16"))
    for requested, file_type, matrix_type in (("F32", 0, "F32"), ("Q8_0", 7, "Q8_0")):
        written = quantize_gguf(f16.path, tmp_path / f"{requested}.gguf", requested)
        header = read_gguf_header(written.path)
        assert header.value("general.file_type") == file_type
        types = {t.name: t.type_name for t in header.tensors}
        assert types["blk.0.attn_q.weight"] == matrix_type and types["blk.0.attn_norm.weight"] == "F32"
        assert check_gguf(written.path, deep=True).ok


def test_requests_ollama_refuses_and_types_only_llama_cpp_writes() -> None:
    f32 = read_gguf_header(build_cached(load_profile("tiny").replace(tensor_type="f32")).path)
    q8 = read_gguf_header(build_cached(load_profile("tiny").replace(tensor_type="q8_0")).path)
    with pytest.raises(
        QuantizationError,
        match=f"unsupported quantization type Q5_0 - supported types are {OLLAMA_LISTED_TYPES}",
    ):
        plan_quantization(f32, "q5_0")
    with pytest.raises(QuantizationError, match="only supported for F16, BF16 and F32 models"):
        plan_quantization(q8, "q8_0")
    with pytest.raises(UnsupportedQuantization, match="Q4_K_S is not supported by this engine"):
        plan_quantization(f32, "q4_k_s")
    assert plan_quantization(f32, "f32").target is None  # already that type
    assert plan_quantization(f32, "q8_0").source_type == "F32"


def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    f32 = build_cached(load_profile("tiny").replace(tensor_type="f32"))
    with pytest.raises(BuildError):
        quantize_gguf(f32.path, tmp_path / "missing" / "q8.gguf", "q8_0")
    assert list(tmp_path.iterdir()) == []
