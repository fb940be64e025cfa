"""The quantization matrix: the same model in several tensor types, side by side.

`pytest suites/ --harness-matrix f32,f16,q8_0,q4_0` runs the suites once per type. A fixture profile is built
in each type (`harness.gguf`); a user's F32/F16 GGUF (`--harness-gguf`) is created as it is for its own type
and, for the others, with the server quantizing at create (`quantize`). A type the server refuses gets skipped
with its reason (Ollama and the embedded engine write f32, f16, q8_0, q4_K_M and q4_K_S, only from an F16,
BF16 or F32 file).

This module plans the matrix (`parse_matrix`, `MatrixEntry`) and records each type's outcome in run.json;
`harness.report.matrix` sums it up for `harness report`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from harness.errors import HarnessError
from harness.gguf.types import TENSOR_TYPES, TYPE_BITS, type_key
from harness.report.matrix import MATRIX_STATUS_OK, MATRIX_STATUS_SKIPPED

NOT_SUPPORTED = "not supported by this server"


class QuantizeNotSupported(HarnessError):
    """The server refused to quantize at create: the matrix skips that type with this reason."""


def parse_matrix(text: str | None, *, fixture: bool) -> tuple[str, ...]:
    """`--harness-matrix f32,f16,q8_0,q4_0` as a tuple of types, widest first; () when not given.

    With a fixture profile (`fixture`) only the types the builder writes are allowed; for a user's GGUF any
    type the server may quantize to (kept as written: Ollama spells them `q4_K_M`).
    """
    if text is None:
        return ()
    names = [name.strip() for name in text.split(",") if name.strip()]
    allowed = TENSOR_TYPES if fixture else tuple(TYPE_BITS)
    if not names:
        raise HarnessError(
            f"--harness-matrix {text!r} names no tensor type",
            f"e.g. --harness-matrix {','.join(TENSOR_TYPES)}",
        )
    seen: set[str] = set()
    for name in names:
        key = type_key(name)
        if key not in allowed:
            where = "a fixture profile is built in" if fixture else "known types are"
            raise HarnessError(
                f"--harness-matrix: unknown tensor type {name!r}", f"{where}: {', '.join(allowed)}"
            )
        if key in seen:
            raise HarnessError(f"--harness-matrix names {name!r} twice", "name each tensor type once")
        seen.add(key)
    return tuple(sorted(names, key=lambda name: -TYPE_BITS[type_key(name)]))


@dataclass(frozen=True)
class MatrixEntry:
    """How one type of the matrix gets onto the server: built (fixture), as the file is, or quantized."""

    tensor_type: str
    quantize: str | None = None  # the `quantize` field of the create request, when the server must do it

    @property
    def label(self) -> str:
        return type_key(self.tensor_type)


def plan_entry(tensor_type: str, *, file_type: str | None) -> MatrixEntry:
    """The entry for `tensor_type`: a fixture (`file_type` None) is built in that type; a user's file of that
    type is used as it is; any other type is asked of the server (`quantize`)."""
    if file_type is None or type_key(file_type) == type_key(tensor_type):
        return MatrixEntry(tensor_type)
    return MatrixEntry(tensor_type, quantize=tensor_type)


def quantize_refusal(tensor_type: str, file_type: str | None, server_message: str) -> QuantizeNotSupported:
    """The error for a create with `quantize` that the server refused (`_refused_quantize`)."""
    source = f"the {file_type} file" if file_type else "the file"
    return QuantizeNotSupported(
        f"{tensor_type}: quantizing {source} at create is {NOT_SUPPORTED} ({server_message})",
        "Ollama quantizes F16/BF16/F32 files to f32, f16, q8_0, q4_K_M, q4_K_S; or build the file in it",
    )


def matrix_meta(types: Iterable[str]) -> dict[str, Any]:
    """run.json's "matrix" at the start of a run: every type, none set up yet."""
    return {
        "types": list(types),
        "entries": [{"tensor_type": t, "status": "not run", "model": None, "reason": None} for t in types],
    }


def record_matrix_entry(
    recorder: Any, tensor_type: str | None, *, model: str | None = None, skipped: str | None = None
) -> None:
    """Mark one type of the run's matrix (run.json) as set up on `model`, or skipped with the reason."""
    matrix = recorder.meta.get("matrix")
    if tensor_type is None or not isinstance(matrix, dict) or recorder.finished:
        return
    entries = [dict(entry) for entry in matrix.get("entries") or []]
    for entry in entries:
        if entry.get("tensor_type") == tensor_type:
            entry.update(
                status=MATRIX_STATUS_SKIPPED if skipped else MATRIX_STATUS_OK, model=model, reason=skipped
            )
    recorder.update({"matrix": {**matrix, "entries": entries}})
