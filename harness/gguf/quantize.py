"""Re-type a GGUF's weight matrices, as Ollama's `quantize` at create does (its server/quantization.go).

`quantize_gguf(source, output, "Q8_0")` writes a copy of an F32, F16 or BF16 file in which every weight
matrix Ollama would quantize is in the target type, and everything else (norms, 1D tensors, the tensors
Ollama keeps as they are) is copied byte for byte; `general.file_type` names the new type. A matrix whose
rows do not split into the type's blocks falls back to F16, as in Ollama. The data streams through in
blocks of rows (memory stays flat in the file size), and the output is written atomically.

Targets are the types gguf's numpy quantizers write: F32, F16 and Q8_0. Ollama also offers Q4_K_S and
Q4_K_M (and BF16), which need llama.cpp's k-quant search: `UnsupportedQuantization` says so.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType, LlamaFileType
from gguf.quants import dequantize, quantize

from harness.errors import HarnessError
from harness.gguf.build import BuiltModel, write_gguf
from harness.gguf.fix_repairs import read_for_fix
from harness.gguf.fix_values import kv_from_entry
from harness.gguf.plan import KV, GGUFPlan, TensorPlan
from harness.gguf.reader import GGUFHeader, TensorInfo

T = GGMLQuantizationType
# Ollama's `ParseFileType`: the names it accepts (upper case), and the file type each one means.
OLLAMA_FILE_TYPES = {
    "F32": LlamaFileType.ALL_F32,
    "F16": LlamaFileType.MOSTLY_F16,
    "Q8_0": LlamaFileType.MOSTLY_Q8_0,
    "Q4_K_S": LlamaFileType.MOSTLY_Q4_K_S,
    "Q4_K_M": LlamaFileType.MOSTLY_Q4_K_M,
    "Q4_K": LlamaFileType.MOSTLY_Q4_K_M,
    "BF16": LlamaFileType.MOSTLY_BF16,
}
OLLAMA_LISTED_TYPES = "F32, F16, Q4_K_S, Q4_K_M, Q8_0"  # what its error message lists
SOURCE_FILE_TYPES: dict[int, str] = {
    LlamaFileType.ALL_F32: "F32",
    LlamaFileType.MOSTLY_F16: "F16",
    LlamaFileType.MOSTLY_BF16: "BF16",
}
WRITTEN_TYPES = {
    LlamaFileType.ALL_F32: T.F32,
    LlamaFileType.MOSTLY_F16: T.F16,
    LlamaFileType.MOSTLY_Q8_0: T.Q8_0,
}
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


class UnsupportedQuantization(HarnessError):
    """A type Ollama writes but numpy cannot (the k-quants, BF16)."""


@dataclass(frozen=True)
class Quantization:
    """What a quantize request means for one file: the source's file type and the one to write (None: the
    file is already in the requested type)."""

    source_type: str
    target: LlamaFileType | None


def plan_quantization(header: GGUFHeader, requested: str) -> Quantization:
    """Ollama's checks of a `quantize` value against a file (raises `QuantizationError` with its texts,
    `UnsupportedQuantization` for a type only llama.cpp can write)."""
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
    if wanted not in WRITTEN_TYPES:
        raise UnsupportedQuantization(
            f"quantization to {name} is not supported by this engine: it writes F32, F16 and Q8_0",
            "real Ollama also writes Q4_K_S and Q4_K_M; or quantize the file with llama.cpp's llama-quantize",
        )
    return Quantization(source, wanted)


def tensor_target(tensor: TensorInfo, target: GGMLQuantizationType, n_experts: int) -> GGMLQuantizationType:
    """The type Ollama gives one tensor when quantizing a file to `target` (its `newType`, for the targets
    written here): weight matrices get the target, with Ollama's exceptions; the rest keep their type."""
    name = tensor.name
    keep = (
        not name.endswith("weight")
        or name.startswith("v.")
        or len(tensor.ne) < 2
        or name in KEPT_NAMES
        or any(part in name for part in KEPT)
    )
    if keep:
        return T(tensor.ggml_type)
    chosen = target
    if any(part in name for part in MLA_TENSORS) or (
        n_experts == 8 and ("attn_v.weight" in name or "attn_k.weight" in name)
    ):
        chosen = T.Q8_0
    block = GGML_QUANT_SIZES[chosen][0]
    if chosen not in (T.F32, T.F16, T.BF16) and tensor.ne[0] % block:
        chosen = T.F16
    return chosen


def quantize_gguf(
    source: str | os.PathLike[str], output: str | os.PathLike[str], requested: str
) -> BuiltModel:
    """Write `source` re-typed to `requested` (an Ollama quantize name) at `output`, atomically; returns the
    written file with its sha256. Raises `QuantizationError` / `UnsupportedQuantization` as
    `plan_quantization` does, `GGUFReadError` for an unreadable file, `BuildError` when writing fails."""
    header = read_for_fix(source)
    plan = plan_quantization(header, requested)
    target = plan.target if plan.target is not None else OLLAMA_FILE_TYPES[plan.source_type]
    arch = str(header.value("general.architecture") or "")
    n_experts = header.value(f"{arch}.expert_count")
    kvs = {key: kv_from_entry(entry) for key, entry in header.kvs.items()}
    kvs["general.file_type"] = KV(int(target), GGUFValueType.UINT32)
    assert header.data_offset is not None
    tensors = [
        _retyped(
            Path(source),
            header.data_offset + tensor.offset,
            tensor,
            tensor_target(tensor, WRITTEN_TYPES[target], n_experts if isinstance(n_experts, int) else 0),
        )
        for tensor in header.tensors
    ]
    return write_gguf(GGUFPlan(arch, kvs, tensors, alignment=header.alignment), output, progress=False)


def _retyped(source: Path, offset: int, tensor: TensorInfo, target: GGMLQuantizationType) -> TensorPlan:
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
                    yield quantize(dequantize(raw, from_type).reshape(count, tensor.ne[0]), target)

    def produce() -> np.ndarray:
        return np.concatenate(list(chunks()), axis=0)

    return TensorPlan(tensor.name, tuple(reversed(tensor.ne)), target, produce, chunks)
