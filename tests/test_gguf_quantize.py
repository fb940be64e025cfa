"""`harness.gguf.quantize`: Ollama's quantize-at-create rules, on real files from the builder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, LlamaFileType
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize

from harness.errors import BuildError
from harness.gguf.build import build_cached
from harness.gguf.check import check_gguf
from harness.gguf.ggml_quantize import quantize_rows
from harness.gguf.quantize import (
    OLLAMA_LISTED_TYPES,
    QuantizationError,
    QuantizeState,
    plan_quantization,
    quantize_gguf,
    tensor_target,
    use_more_bits,
)
from harness.gguf.reader import GGUFHeader, TensorInfo, read_gguf_header
from harness.gguf.spec import load_profile


def _tensor(name: str, ne: tuple[int, ...], ggml_type: T = T.F16) -> TensorInfo:
    return TensorInfo(name=name, ne=ne, ggml_type=int(ggml_type), offset=0, info_offset=0)


F = LlamaFileType
NO_STATE = QuantizeState(n_attn_v=0, n_ffn_down=0, has_output=True)


@pytest.mark.parametrize(
    ("name", "ne", "file_type", "n_experts", "expected"),
    [
        ("blk.0.attn_q.weight", (64, 64), F.MOSTLY_Q8_0, 0, T.Q8_0),
        ("token_embd.weight", (64, 600), F.MOSTLY_Q8_0, 0, T.Q8_0),
        ("blk.0.attn_norm.weight", (64,), F.MOSTLY_Q8_0, 0, T.F16),  # 1D: kept as it is
        ("output_norm.weight", (64, 2), F.MOSTLY_Q8_0, 0, T.F16),  # a norm: kept
        ("blk.0.ffn_gate_inp.weight", (64, 8), F.MOSTLY_Q8_0, 0, T.F16),  # expert router: kept
        ("rope_freqs", (32, 2), F.MOSTLY_Q8_0, 0, T.F16),  # not a weight: kept
        ("v.blk.0.attn_q.weight", (64, 64), F.MOSTLY_Q8_0, 0, T.F16),  # vision encoder: kept
        ("blk.0.ffn_up.weight", (48, 64), F.MOSTLY_Q8_0, 0, T.F16),  # rows of 48 do not split into 32s
        ("blk.0.attn_q_b.weight", (64, 64), F.MOSTLY_F16, 0, T.Q8_0),  # MLA: always Q8_0
        ("blk.0.attn_k.weight", (64, 64), F.MOSTLY_F16, 8, T.Q8_0),  # 8 experts: Q8_0
        ("blk.0.attn_q.weight", (256, 64), F.MOSTLY_Q4_K_M, 0, T.Q4_K),
        ("blk.0.attn_q.weight", (64, 64), F.MOSTLY_Q4_K_M, 0, T.Q5_0),  # Q4_K needs rows of 256
        ("blk.0.attn_output.weight", (256, 256), F.MOSTLY_Q4_K_S, 8, T.Q5_K),
        ("blk.0.attn_qkv.weight", (256, 768), F.MOSTLY_Q4_K_M, 0, T.Q5_K),
        ("blk.0.attn_qkv.weight", (96, 768), F.MOSTLY_Q4_K_M, 0, T.Q5_1),  # Q5_K needs rows of 256
        ("blk.0.attn_qkv.weight", (80, 768), F.MOSTLY_Q4_K_M, 0, T.F16),  # and Q5_1 rows of 32
        ("output.weight", (256, 1000), F.MOSTLY_Q4_K_M, 0, T.Q6_K),
        ("output.weight", (64, 1000), F.MOSTLY_Q4_K_M, 0, T.Q8_0),
        ("output.weight", (256, 1000), F.MOSTLY_F16, 0, T.Q6_K),  # Ollama's rule holds for F16 too
        ("output.weight", (256, 1000), F.MOSTLY_Q8_0, 0, T.Q8_0),
    ],
)
def test_tensor_targets_follow_ollamas_rules(
    name: str, ne: tuple[int, ...], file_type: LlamaFileType, n_experts: int, expected: T
) -> None:
    state = QuantizeState(n_attn_v=1, n_ffn_down=1, has_output=True)
    assert tensor_target(_tensor(name, ne), file_type, state, n_experts=n_experts) == expected


def test_k_quant_layers_that_get_more_bits_follow_use_more_bits() -> None:
    """16 blocks: Q4_K_M gives Q6_K to attn_v/ffn_down in layers 0-1, 14-15 and every third from 4."""
    tensors = [
        _tensor(f"blk.{i}.{kind}.weight", (256, 256)) for i in range(16) for kind in ("attn_v", "ffn_down")
    ]
    state = QuantizeState.of([*tensors, _tensor("token_embd.weight", (256, 100))])
    assert (state.n_attn_v, state.n_ffn_down, state.has_output) == (16, 16, False)
    q4_k_m = [tensor_target(t, F.MOSTLY_Q4_K_M, state) for t in tensors]
    more_bits = [i for i in range(16) if use_more_bits(i, 16)]
    assert more_bits == [0, 1, 4, 7, 10, 13, 14, 15]
    assert [i for i, kind in enumerate(q4_k_m[0::2]) if kind == T.Q6_K] == more_bits  # attn_v
    assert [i for i, kind in enumerate(q4_k_m[1::2]) if kind == T.Q6_K] == more_bits  # ffn_down
    assert set(q4_k_m) == {T.Q4_K, T.Q6_K}
    state = QuantizeState.of(tensors)
    q4_k_s = [tensor_target(t, F.MOSTLY_Q4_K_S, state) for t in tensors]
    assert [kind for kind in q4_k_s[0::2]] == [T.Q5_K] * 4 + [T.Q4_K] * 12  # attn_v: the first four
    assert [kind for kind in q4_k_s[1::2]] == [T.Q5_K] * 2 + [T.Q4_K] * 14  # ffn_down: the first eighth
    tied = QuantizeState(n_attn_v=0, n_ffn_down=0, has_output=False)  # no output.weight: the embedding is it
    assert tensor_target(_tensor("token_embd.weight", (256, 100)), F.MOSTLY_Q4_K_M, tied) == T.Q6_K
    assert tensor_target(_tensor("token_embd.weight", (256, 100)), F.MOSTLY_Q4_K_M, NO_STATE) == T.Q4_K


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
        assert types["output.weight"] == "Q8_0"  # Ollama quantizes the output matrix whatever the target
        assert check_gguf(written.path, deep=True).ok


def test_requests_ollama_refuses_and_the_k_quants_it_accepts() -> None:
    f32 = read_gguf_header(build_cached(load_profile("tiny").replace(tensor_type="f32")).path)
    q8 = read_gguf_header(build_cached(load_profile("tiny").replace(tensor_type="q8_0")).path)
    with pytest.raises(
        QuantizationError,
        match=f"unsupported quantization type Q5_0 - supported types are {OLLAMA_LISTED_TYPES}",
    ):
        plan_quantization(f32, "q5_0")
    with pytest.raises(QuantizationError, match="only supported for F16, BF16 and F32 models"):
        plan_quantization(q8, "q8_0")
    assert plan_quantization(f32, "q4_k_s").target == LlamaFileType.MOSTLY_Q4_K_S
    assert plan_quantization(f32, "Q4_K").target == LlamaFileType.MOSTLY_Q4_K_M  # Ollama's alias
    assert plan_quantization(f32, "f32").target is None  # already that type
    assert plan_quantization(f32, "q8_0").source_type == "F32"


def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    f32 = build_cached(load_profile("tiny").replace(tensor_type="f32"))
    with pytest.raises(BuildError):
        quantize_gguf(f32.path, tmp_path / "missing" / "q8.gguf", "q8_0")
    assert list(tmp_path.iterdir()) == []


def test_k_quants_are_ggmls_bytes_and_dequantize_close_to_the_source(tmp_path: Path) -> None:
    """so8t-lite's 512-wide matrices take Q4_K/Q6_K; every quantized matrix decodes near its F32 source."""
    f32 = build_cached(load_profile("so8t-lite").replace(tensor_type="f32"))
    source = read_gguf_header(f32.path)
    for requested, rms_limit in (("Q4_K_M", 0.12), ("Q4_K_S", 0.12)):
        written = quantize_gguf(f32.path, tmp_path / f"{requested}.gguf", requested)
        header = read_gguf_header(written.path)
        assert header.value("general.file_type") == int(LlamaFileType[f"MOSTLY_{requested}"])
        kinds = {t.name: T(t.ggml_type) for t in header.tensors}
        assert kinds["blk.0.attn_q.weight"] == T.Q4_K and kinds["output.weight"] == T.Q6_K
        assert check_gguf(written.path, deep=True).ok
        for tensor in header.tensors:
            original = _tensor_values(f32.path, source, tensor.name)
            decoded = _tensor_values(written.path, header, tensor.name)
            rms = float(np.sqrt(np.mean((decoded - original) ** 2)) / (np.sqrt(np.mean(original**2)) + 1e-12))
            assert rms < (rms_limit if kinds[tensor.name] != T.F32 else 1e-7), (requested, tensor.name, rms)


def _tensor_values(path: Path, header: GGUFHeader, name: str) -> np.ndarray:
    """One tensor's values as float32, decoded with gguf's numpy dequantizers (independent of ggml)."""
    (tensor,) = [t for t in header.tensors if t.name == name]
    block, type_size = GGML_QUANT_SIZES[T(tensor.ggml_type)]
    n_bytes = int(np.prod(tensor.ne)) // block * type_size
    assert header.data_offset is not None
    raw = np.fromfile(path, dtype=np.uint8, count=n_bytes, offset=header.data_offset + tensor.offset)
    return dequantize(raw, T(tensor.ggml_type)).reshape(-1)


def test_quantizing_rows_on_several_threads_gives_the_same_bytes() -> None:
    values = np.random.default_rng(3).standard_normal((600, 1024)).astype(np.float32)  # 600k values: 2 runs
    for qtype in (T.Q4_K, T.Q6_K, T.Q8_0, T.F16):
        one = quantize_rows(values, qtype, threads=1)
        assert np.array_equal(quantize_rows(values, qtype, threads=3), one), qtype.name
        assert one.shape == (600, 1024 // GGML_QUANT_SIZES[qtype][0] * GGML_QUANT_SIZES[qtype][1])
    with pytest.raises(ValueError, match="rows of 100 values do not split into Q4_K blocks of 256"):
        quantize_rows(values[:, :100], T.Q4_K)
