"""Re-type a GGUF's weight matrices, as Ollama's `quantize` at create does (its server/quantization.go).

`quantize_gguf(source, output, "Q4_K_M")` writes a copy of an F32, F16 or BF16 file in which every weight
matrix Ollama would quantize is in the type Ollama picks for it, and everything else (norms, 1D tensors, the
tensors Ollama keeps as they are) is copied byte for byte; `general.file_type` names the new file type.

The per-tensor choice is Ollama's port of llama.cpp's `llama_tensor_get_type` (`tensor_target`): Q4_K_M
gives some `attn_v` and `ffn_down` matrices Q6_K, Q4_K_S gives some Q5_K, the output matrix gets Q6_K (or
Q8_0), and a matrix whose rows do not split into the type's blocks falls back (Q4_K to Q5_0, Q5_K to Q5_1,
Q6_K to Q8_0, then F16). The bytes come from ggml's own `ggml_quantize_chunk` (`ggml_quantize.py`), as in
Ollama. The data streams through in blocks of rows (memory stays flat in the file size), and the output is
written atomically.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType, LlamaFileType
from gguf.quants import dequantize

from harness.errors import HarnessError
from harness.gguf.build import BuiltModel, write_gguf
from harness.gguf.fix_repairs import read_for_fix
from harness.gguf.fix_values import kv_from_entry
from harness.gguf.ggml_quantize import quantize_rows
from harness.gguf.plan import KV, GGUFPlan, TensorPlan
from harness.gguf.reader import GGUFHeader, TensorInfo
from harness.gguf.types import (
    DEFAULT_TENSOR_TYPES,
    OLLAMA_FILE_TYPES,
    OLLAMA_LISTED_TYPES,
    SOURCE_FILE_TYPES,
    UNQUANTIZED,
)

T = GGMLQuantizationType
FALLBACK_TYPES = {T.Q4_K: T.Q5_0, T.Q5_K: T.Q5_1, T.Q6_K: T.Q8_0}  # rows that do not split into 256s
BLOCK_BYTES = 8 << 20  # source bytes read per block of rows
# Weights Ollama never quantizes (substrings of the tensor name), besides norms, 1D tensors and non-weights.
KEPT = (
    "_norm.weight", "ffn_gate_inp.weight", "ffn_gate_inp_shexp.weight", "ssm_conv1d.weight",
    "shortconv.conv.weight", "time_mix_first.weight", "time_mix_w1.weight", "time_mix_w2.weight",
    "time_mix_decay_w1.weight", "time_mix_decay_w2.weight", "time_mix_lerp_fused.weight", "attn_rel_b.weight",
    "per_layer_token_embd.weight", "mm.",
)  # fmt: skip
KEPT_NAMES = ("position_embd.weight", "token_types.weight")
# Attention tensors of multi-head latent attention, which Ollama always writes in Q8_0.
MLA_TENSORS = (
    "attn_k_b.weight",
    "attn_v_b.weight",
    "attn_kv_a_mqa.weight",
    "attn_q_a.weight",
    "attn_q_b.weight",
)


class QuantizationError(HarnessError):
    """A quantize request Ollama itself refuses (unknown type, quantized source); its message is Ollama's."""


@dataclass(frozen=True)
class Quantization:
    """What a quantize request means for one file: the source's file type and the one to write (None: the
    file is already in the requested type)."""

    source_type: str
    target: LlamaFileType | None


def plan_quantization(header: GGUFHeader, requested: str) -> Quantization:
    """Ollama's checks of a `quantize` value against a file (raises `QuantizationError` with its texts)."""
    name = requested.upper()
    wanted = OLLAMA_FILE_TYPES.get(name)
    if wanted is None:
        raise QuantizationError(
            f"unsupported quantization type {name} - supported types are {OLLAMA_LISTED_TYPES}",
            f"use one of {OLLAMA_LISTED_TYPES}",
        )
    value = header.value("general.file_type")
    source = SOURCE_FILE_TYPES.get(value) if isinstance(value, int) else None
    if source is None:
        raise QuantizationError(
            "quantization is only supported for F16, BF16 and F32 models", "quantize from an F16 or F32 file"
        )
    if wanted == OLLAMA_FILE_TYPES[source]:
        return Quantization(source, None)
    return Quantization(source, wanted)


@dataclass
class QuantizeState:
    """Ollama's quantizeState: counts over the whole file, and running counters the rules advance."""

    n_attn_v: int  # attn_v / attn_qkv / attn_kv_b weight tensors
    n_ffn_down: int  # blocks (blk.N) in the file
    has_output: bool  # an output.weight of its own (else token_embd.weight is the output matrix)
    i_attn_v: int = 0
    i_ffn_down: int = 0

    @classmethod
    def of(cls, tensors: Sequence[TensorInfo]) -> QuantizeState:
        names = [tensor.name for tensor in tensors]
        attn_v = ("attn_v.weight", "attn_qkv.weight", "attn_kv_b.weight")
        blocks = {name.split(".")[1] for name in names if name.startswith("blk.") and name.count(".") >= 2}
        return cls(
            n_attn_v=sum(1 for name in names if any(part in name for part in attn_v)),
            n_ffn_down=len(blocks),
            has_output="output.weight" in names,
        )


def use_more_bits(i_layer: int, n_layers: int) -> bool:
    """llama.cpp's choice of the layers that get more bits: the first and last eighth, and every third."""
    return i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8 or (i_layer - n_layers // 8) % 3 == 2


QWEN3_LINEAR_ATTENTION = {
    ".attn_q.weight": T.Q4_K,
    ".attn_k.weight": T.Q4_K,
    ".attn_v.weight": T.Q6_K,
    ".attn_output.weight": T.Q4_K,
    ".attn_qkv.weight": T.Q4_K,
    ".attn_gate.weight": T.Q4_K,
    ".ssm_ba.weight": T.Q4_K,
    ".ssm_beta.weight": T.Q4_K,
    ".ssm_alpha.weight": T.Q4_K,
    ".ssm_out.weight": T.Q4_K,
    ".ffn_down_exps.weight": T.Q6_K,
    ".ffn_down_shexp.weight": T.Q6_K,
    ".ffn_gate_exps.weight": T.Q4_K,
    ".ffn_gate_shexp.weight": T.Q4_K,
    ".ffn_up_exps.weight": T.Q4_K,
    ".ffn_up_shexp.weight": T.Q4_K,
}


def is_quantized_by_ollama(tensor: TensorInfo) -> bool:
    """Ollama's `newType` filter: weight matrices, less norms, vision and projector tensors, the kept few."""
    name = tensor.name
    return not (
        not name.endswith("weight")
        or name.startswith("v.")
        or len(tensor.ne) < 2
        or name in KEPT_NAMES
        or any(part in name for part in KEPT)
    )


def tensor_target(
    tensor: TensorInfo, file_type: LlamaFileType, state: QuantizeState, *, arch: str = "", n_experts: int = 0
) -> GGMLQuantizationType:
    """The type Ollama gives one tensor when quantizing a file to `file_type` (its `newType` and
    `getTensorNewType`); call it for the tensors in file order, as it advances `state`."""
    if not is_quantized_by_ollama(tensor):
        return T(tensor.ggml_type)
    name, chosen = tensor.name, DEFAULT_TENSOR_TYPES[file_type]
    k_quant = file_type in (LlamaFileType.MOSTLY_Q4_K_M, LlamaFileType.MOSTLY_Q4_K_S)
    if arch in ("qwen3next", "qwen35", "qwen35moe") and k_quant:
        special = next((kind for end, kind in QWEN3_LINEAR_ATTENTION.items() if name.endswith(end)), None)
        if special is not None:
            return special
    n_experts = max(1, n_experts)
    q4_k_m, q4_k_s = file_type == LlamaFileType.MOSTLY_Q4_K_M, file_type == LlamaFileType.MOSTLY_Q4_K_S
    if name == "output.weight" or (not state.has_output and name == "token_embd.weight"):
        # As in Ollama, whatever the target: even an F16 or F32 file gets a quantized output matrix.
        if tensor.ne[0] % GGML_QUANT_SIZES[chosen][0]:
            chosen = T.Q8_0
        elif chosen != T.Q8_0:
            chosen = T.Q6_K
    elif "attn_v.weight" in name:
        if q4_k_m and use_more_bits(state.i_attn_v, state.n_attn_v):
            chosen = T.Q6_K
        elif q4_k_s and state.i_attn_v < 4:
            chosen = T.Q5_K
        if n_experts == 8:
            chosen = T.Q8_0
        state.i_attn_v += 1
    elif "attn_k.weight" in name:
        if n_experts == 8:
            chosen = T.Q8_0
    elif any(part in name for part in MLA_TENSORS):
        chosen = T.Q8_0
    elif "ffn_down" in name:
        if q4_k_m and use_more_bits(state.i_ffn_down, state.n_ffn_down):
            chosen = T.Q6_K
        elif q4_k_s and state.i_ffn_down < state.n_ffn_down // 8:
            chosen = T.Q5_K
        state.i_ffn_down += 1
    elif "attn_output.weight" in name:
        if n_experts == 8 and k_quant:
            chosen = T.Q5_K
    elif "attn_qkv.weight" in name and q4_k_m:
        chosen = T.Q5_K
    if chosen not in UNQUANTIZED and tensor.ne[0] % GGML_QUANT_SIZES[chosen][0]:
        chosen = FALLBACK_TYPES.get(chosen, chosen)
        if tensor.ne[0] % GGML_QUANT_SIZES[chosen][0]:
            chosen = T.F16
    return chosen


def quantize_gguf(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    requested: str,
    *,
    threads: int | None = None,
) -> BuiltModel:
    """Write `source` re-typed to `requested` (an Ollama quantize name) at `output`, atomically; returns the
    written file with its sha256. `threads` is passed to `quantize_rows` (default: every usable CPU). Raises
    `QuantizationError` as `plan_quantization` does, `GGUFReadError` for an unreadable file, `BuildError`
    when writing fails."""
    header = read_for_fix(source)
    plan = plan_quantization(header, requested)
    target = plan.target if plan.target is not None else OLLAMA_FILE_TYPES[plan.source_type]
    arch = str(header.value("general.architecture") or "")
    n_experts = header.value(f"{arch}.expert_count")
    kvs = {key: kv_from_entry(entry) for key, entry in header.kvs.items()}
    kvs["general.file_type"] = KV(int(target), GGUFValueType.UINT32)
    assert header.data_offset is not None
    state = QuantizeState.of(header.tensors)
    experts = n_experts if isinstance(n_experts, int) else 0
    tensors = [
        _retyped(
            Path(source),
            header.data_offset + tensor.offset,
            tensor,
            tensor_target(tensor, target, state, arch=arch, n_experts=experts),
            threads,
        )
        for tensor in header.tensors
    ]
    return write_gguf(GGUFPlan(arch, kvs, tensors, alignment=header.alignment), output, progress=False)


def _retyped(
    source: Path, offset: int, tensor: TensorInfo, target: GGMLQuantizationType, threads: int | None
) -> TensorPlan:
    """The tensor read from `source` in blocks of rows, each converted from its type to `target`."""
    from_type = T(tensor.ggml_type)
    block, type_size = GGML_QUANT_SIZES[from_type]
    row_bytes = tensor.ne[0] // block * type_size
    n_rows = math.prod(tensor.ne[1:])
    rows_per_read = max(1, BLOCK_BYTES // max(row_bytes, 1))

    def chunks() -> Iterator[np.ndarray]:
        with open(source, "rb") as handle:
            for first in range(0, n_rows, rows_per_read):
                count = min(rows_per_read, n_rows - first)
                handle.seek(offset + first * row_bytes)
                raw = np.frombuffer(handle.read(count * row_bytes), dtype=np.uint8).reshape(count, row_bytes)
                if target == from_type:
                    yield raw
                else:
                    values = dequantize(raw, from_type).reshape(count, tensor.ne[0])
                    yield quantize_rows(values, target, threads=threads)

    def produce() -> np.ndarray:
        return np.concatenate(list(chunks()), axis=0)

    return TensorPlan(tensor.name, tuple(reversed(tensor.ne)), target, produce, chunks)
