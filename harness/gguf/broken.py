"""Broken GGUF files, one per failure class, to prove the checker (and to show what llama.cpp does).

Each `BrokenKind` changes a valid fixture in one way: most edit the `GGUFPlan` from `plan_gguf(spec)`
before it is written with `write_gguf`; truncations and a bad magic edit the bytes after writing. Each
records the finding code the checker must put first and what llama.cpp does with the same file:
`llama_cause` is a substring of llama.cpp's cause line, `ABORT` when llama.cpp aborts the process
(GGML_ASSERT), or None when llama.cpp loads the file without complaint. Causes were observed with
xllamacpp 2026.10 and Ollama 0.24/0.33; tests/test_gguf_check.py runs llama.cpp on each file to keep
them true.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFValueType
from gguf.quants import quantize

from harness.errors import SpecError
from harness.gguf.build import write_gguf
from harness.gguf.plan import GGUF_HEADER_BYTES, KV, GGUFPlan, TensorPlan, ggml_pad, plan_gguf
from harness.gguf.spec import ModelSpec

ABORT = "abort"

PlanEdit = Callable[[GGUFPlan, ModelSpec], None]
FileEdit = Callable[[Path, GGUFPlan], None]


@dataclass(frozen=True)
class BrokenKind:
    """One failure class: what is wrong, the checker code it must raise first, and llama.cpp's reaction."""

    name: str
    description: str
    code: str
    llama_cause: str | None
    edit_plan: PlanEdit | None = None
    edit_file: FileEdit | None = None
    deep: bool = False  # the checker finds it only with deep=True (it reads tensor values)


# ------------------------------------------------------------------------------------------- plan edits


def _arch_key(plan: GGUFPlan, suffix: str) -> str:
    return f"{plan.architecture}.{suffix}"


def _drop_key(suffix: str) -> PlanEdit:
    def edit(plan: GGUFPlan, spec: ModelSpec) -> None:
        del plan.kvs[_arch_key(plan, suffix)]

    return edit


def _retype_key(suffix: str, value_type: GGUFValueType) -> PlanEdit:
    def edit(plan: GGUFPlan, spec: ModelSpec) -> None:
        key = _arch_key(plan, suffix)
        plan.kvs[key] = KV(plan.kvs[key].value, value_type)

    return edit


def _set_u32(suffix: str, value: Callable[[ModelSpec], int]) -> PlanEdit:
    def edit(plan: GGUFPlan, spec: ModelSpec) -> None:
        plan.kvs[_arch_key(plan, suffix)] = KV(value(spec), GGUFValueType.UINT32)

    return edit


def _drop_tokenizer(plan: GGUFPlan, spec: ModelSpec) -> None:
    for key in [k for k in plan.kvs if k.startswith("tokenizer.")]:
        del plan.kvs[key]


def _drop_last_ffn_down(plan: GGUFPlan, spec: ModelSpec) -> None:
    name = f"blk.{spec.n_layer - 1}.ffn_down.weight"
    plan.tensors = [t for t in plan.tensors if t.name != name]


def _zeros(shape: tuple[int, ...], ggml_type: GGMLQuantizationType) -> Callable[[], np.ndarray]:
    def produce() -> np.ndarray:
        return quantize(np.zeros(shape, dtype=np.float32), ggml_type)

    return produce


def _filled(shape: tuple[int, ...], value: float) -> Callable[[], np.ndarray]:
    def produce() -> np.ndarray:
        return np.full(shape, value, dtype=np.float32)

    return produce


def _replace_tensor(plan: GGUFPlan, new: TensorPlan) -> None:
    plan.tensors = [new if t.name == new.name else t for t in plan.tensors]


def _widen_attn_q(plan: GGUFPlan, spec: ModelSpec) -> None:
    old = plan.tensor("blk.0.attn_q.weight")
    shape = (old.shape[0] + 8, *old.shape[1:])  # more rows: the row length stays a multiple of the block
    _replace_tensor(plan, TensorPlan(old.name, shape, old.ggml_type, _zeros(shape, old.ggml_type)))


def _nan_output(plan: GGUFPlan, spec: ModelSpec) -> None:
    old = plan.tensor("token_embd.weight")
    name = "output.weight" if any(t.name == "output.weight" for t in plan.tensors) else old.name
    shape = plan.tensor(name).shape
    _replace_tensor(plan, TensorPlan(name, shape, GGMLQuantizationType.F32, _filled(shape, float("nan"))))


def _rename_architecture(new_arch: str) -> PlanEdit:
    def edit(plan: GGUFPlan, spec: ModelSpec) -> None:
        old_prefix = f"{plan.architecture}."
        kvs: dict[str, KV] = {}
        for key, kv in plan.kvs.items():
            if key == "general.architecture":
                kv = KV(new_arch, GGUFValueType.STRING)
            elif key.startswith(old_prefix):
                key = new_arch + "." + key[len(old_prefix) :]
            kvs[key] = kv
        plan.kvs = kvs
        plan.architecture = new_arch

    return edit


def _token_array(plan: GGUFPlan, key: str) -> list[object]:
    return list(plan.kvs[key].value)  # type: ignore[call-overload]


def _set_array(plan: GGUFPlan, key: str, items: list[object]) -> None:
    old = plan.kvs[key]
    plan.kvs[key] = KV(items, old.type, old.sub_type)


def _duplicate_last_token(plan: GGUFPlan, spec: ModelSpec) -> None:
    tokens = _token_array(plan, "tokenizer.ggml.tokens")
    tokens[-1] = tokens[-2]
    _set_array(plan, "tokenizer.ggml.tokens", tokens)


def _shorten_vocab(plan: GGUFPlan, spec: ModelSpec, drop: int = 16) -> None:
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type"):
        if key in plan.kvs:
            _set_array(plan, key, _token_array(plan, key)[:-drop])
    vocab_size = _arch_key(plan, "vocab_size")
    if vocab_size in plan.kvs:
        plan.kvs[vocab_size] = KV(len(_token_array(plan, "tokenizer.ggml.tokens")), GGUFValueType.UINT32)


def _shorten_scores(plan: GGUFPlan, spec: ModelSpec) -> None:
    _set_array(plan, "tokenizer.ggml.scores", _token_array(plan, "tokenizer.ggml.scores")[:-5])


INVALID_UTF8_NAME = b"tiny \xff\xfe model"  # 0xFF can never appear in UTF-8


def _invalid_utf8_name(plan: GGUFPlan, spec: ModelSpec) -> None:
    plan.kvs["general.name"] = KV(INVALID_UTF8_NAME, GGUFValueType.STRING)


def _eos_beyond_vocab(plan: GGUFPlan, spec: ModelSpec) -> None:
    n_tokens = len(_token_array(plan, "tokenizer.ggml.tokens"))
    plan.kvs["tokenizer.ggml.eos_token_id"] = KV(n_tokens + 10, GGUFValueType.UINT32)


def _chat_template(text: str) -> PlanEdit:
    def edit(plan: GGUFPlan, spec: ModelSpec) -> None:
        plan.kvs["tokenizer.chat_template"] = KV(text, GGUFValueType.STRING)

    return edit


# A template that renders nothing of the conversation: it raises for any conversation with a system message.
FAILING_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for m in messages %}{{ m['content'] }}{% endfor %}"
)
UNSAFE_TEMPLATE = (
    "{{ messages.__class__.__mro__[1].__subclasses__() }}"
    "{% for m in messages %}{{ m['content'] }}{% endfor %}"
)
# U+202E RIGHT-TO-LEFT OVERRIDE hides the role prefix from a reader of the template.
HIDDEN_UNICODE_TEMPLATE = "{% for m in messages %}\u202e{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
UNKNOWN_TOKEN_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


# ------------------------------------------------------------------------------------------- file edits


def _truncate_to(size: Callable[[Path, GGUFPlan], int]) -> FileEdit:
    def edit(path: Path, plan: GGUFPlan) -> None:
        os.truncate(path, size(path, plan))

    return edit


def _mid_last_tensor(path: Path, plan: GGUFPlan) -> int:
    last = plan.tensors[-1]
    return plan.file_size() - ggml_pad(last.nbytes, plan.alignment) + last.nbytes // 2


def _mid_kv_section(path: Path, plan: GGUFPlan) -> int:
    kv_bytes = sum(8 + len(key.encode()) + kv.nbytes() for key, kv in plan.kvs.items())
    return GGUF_HEADER_BYTES + kv_bytes // 2


def _bad_magic(path: Path, plan: GGUFPlan) -> None:
    with open(path, "r+b") as handle:
        handle.write(b"GGXF")


def _append_garbage(path: Path, plan: GGUFPlan) -> None:
    with open(path, "ab") as handle:
        handle.write(b"\x00GARBAGE" * 16)


# ---------------------------------------------------------------------------------------------- kinds

BROKEN_KINDS: dict[str, BrokenKind] = {
    kind.name: kind
    for kind in (
        BrokenKind(
            "missing-context-length",
            "llama.context_length removed",
            "missing-key",
            "key not found in model: llama.context_length",
            edit_plan=_drop_key("context_length"),
        ),
        BrokenKind(
            "missing-embedding-length",
            "llama.embedding_length removed",
            "missing-key",
            "key not found in model: llama.embedding_length",
            edit_plan=_drop_key("embedding_length"),
        ),
        BrokenKind(
            "missing-tokenizer",
            "every tokenizer.* key removed",
            "missing-tokenizer",
            "key not found in model: tokenizer.ggml.model",
            edit_plan=_drop_tokenizer,
        ),
        BrokenKind(
            "missing-tensor",
            "the last block's ffn_down.weight removed",
            "missing-tensor",
            "ffn_down.weight' not found",
            edit_plan=_drop_last_ffn_down,
        ),
        BrokenKind(
            "wrong-shape",
            "blk.0.attn_q.weight has 8 extra rows",
            "wrong-shape",
            "tensor 'blk.0.attn_q.weight' has wrong shape",
            edit_plan=_widen_attn_q,
        ),
        BrokenKind(
            "truncated-data",
            "the file is cut in the middle of the last tensor's data",
            "data-beyond-eof",
            "data is not within the file bounds",
            edit_file=_truncate_to(_mid_last_tensor),
        ),
        BrokenKind(
            "unknown-arch",
            "general.architecture is 'so8t' (keys renamed so8t.*)",
            "unknown-architecture",
            "unknown model architecture: 'so8t'",
            edit_plan=_rename_architecture("so8t"),
        ),
        BrokenKind(
            "context-length-i32",
            "llama.context_length stored as i32 instead of u32",
            "wrong-type",
            "key llama.context_length has wrong type i32 but expected type u32",
            edit_plan=_retype_key("context_length", GGUFValueType.INT32),
        ),
        BrokenKind(
            "rope-freq-base-f64",
            "llama.rope.freq_base stored as f64 instead of f32",
            "wrong-type",
            "key llama.rope.freq_base has wrong type f64 but expected type f32",
            edit_plan=_retype_key("rope.freq_base", GGUFValueType.FLOAT64),
        ),
        BrokenKind(
            "rope-dims-wrong",
            "llama.rope.dimension_count is twice the head size",
            "bad-rope-dims",
            "invalid n_rot",
            edit_plan=_set_u32("rope.dimension_count", lambda spec: 2 * spec.head_dim),
        ),
        BrokenKind(
            "block-count-zero",
            "llama.block_count is 0",
            "zero-blocks",
            ABORT,
            edit_plan=_set_u32("block_count", lambda spec: 0),
        ),
        BrokenKind(
            "duplicate-tokens",
            "the last token string repeats the one before it",
            "duplicate-token",
            ABORT,
            edit_plan=_duplicate_last_token,
        ),
        BrokenKind(
            "vocab-shorter",
            "the token list is 16 tokens shorter than token_embd/output rows",
            "vocab-size-mismatch",
            "tensor 'token_embd.weight' has wrong shape",
            edit_plan=_shorten_vocab,
        ),
        BrokenKind(
            "scores-short",
            "tokenizer.ggml.scores has 5 entries fewer than the tokens",
            "tokenizer-length-mismatch",
            "Index out of array bounds for scores",
            edit_plan=_shorten_scores,
        ),
        BrokenKind(
            "bad-magic",
            "the first 4 bytes are 'GGXF'",
            "bad-magic",
            "invalid magic characters",
            edit_file=_bad_magic,
        ),
        BrokenKind(
            "kv-truncated",
            "the file is cut in the middle of the key/value section",
            "truncated-kv",
            "failed to read key-value pairs",
            edit_file=_truncate_to(_mid_kv_section),
        ),
        BrokenKind(
            "empty-file",
            "the file has 0 bytes",
            "empty-file",
            "failed to read magic",
            edit_file=_truncate_to(lambda path, plan: 0),
        ),
        BrokenKind(
            "invalid-utf8-name",
            "general.name holds the byte 0xFF, which is never valid UTF-8",
            "invalid-utf8",
            None,
            edit_plan=_invalid_utf8_name,
        ),
        BrokenKind(
            "trailing-bytes",
            "128 bytes appended after the last tensor's data",
            "trailing-bytes",
            None,
            edit_file=_append_garbage,
        ),
        BrokenKind(
            "eos-beyond-vocab",
            "tokenizer.ggml.eos_token_id is 10 past the last token",
            "bad-special-token",
            None,
            edit_plan=_eos_beyond_vocab,
        ),
        BrokenKind(
            "template-fails",
            "the chat template raises for a conversation with a system message",
            "template-error",
            None,
            edit_plan=_chat_template(FAILING_TEMPLATE),
        ),
        BrokenKind(
            "template-unsafe",
            "the chat template walks messages.__class__.__mro__ to __subclasses__()",
            "template-unsafe",
            "chat template parsing error",  # llama-server renders the template at start-up: it fails
            edit_plan=_chat_template(UNSAFE_TEMPLATE),
        ),
        BrokenKind(
            "template-hidden-unicode",
            "the chat template holds U+202E RIGHT-TO-LEFT OVERRIDE",
            "template-hidden-unicode",
            None,
            edit_plan=_chat_template(HIDDEN_UNICODE_TEMPLATE),
        ),
        BrokenKind(
            "template-unknown-token",
            "the chat template emits <|im_start|>/<|im_end|>, which the vocab lacks",
            "template-unknown-token",
            None,
            edit_plan=_chat_template(UNKNOWN_TOKEN_TEMPLATE),
        ),
        BrokenKind(
            "nan-weights",
            "output.weight (or the tied token_embd.weight) is all NaN",
            "non-finite-weights",
            None,
            edit_plan=_nan_output,
            deep=True,
        ),
    )
}


def write_broken(kind: str | BrokenKind, spec: ModelSpec, path: str | os.PathLike[str]) -> Path:
    """Write `spec`'s fixture at `path`, broken in the way `kind` (a name in BROKEN_KINDS) says."""
    if isinstance(kind, str):
        if kind not in BROKEN_KINDS:
            raise SpecError(f"unknown broken kind {kind!r}", f"use one of {', '.join(BROKEN_KINDS)}")
        kind = BROKEN_KINDS[kind]
    plan = plan_gguf(spec)
    plan = dataclasses.replace(plan, kvs=dict(plan.kvs), tensors=list(plan.tensors))
    if kind.edit_plan is not None:
        kind.edit_plan(plan, spec)
    target = write_gguf(plan, path).path
    if kind.edit_file is not None:
        kind.edit_file(target, plan)
    return target


# ------------------------------------------------------------------------------------ byte mutations
# Shared by the property test (hypothesis draws the mutations) and scripts/fuzz_checker.py (random draws).

# Values that break naive readers: huge counts and lengths, sign bits, all-ones, invalid type ids.
HOSTILE_U64 = (0, 1, 2**31, 2**32 - 1, 2**32, 2**40, 2**60, 2**62, 2**63, 2**64 - 1)
HOSTILE_U32 = (0, 1, 4, 9, 12, 13, 99, 2**31, 2**32 - 1)

MUTATION_OPS = ("flip", "u64", "u32", "cut", "insert", "delete")
Mutation = tuple[str, int, int | bytes]  # (op, position, argument)


def apply_mutations(data: bytes, mutations: list[Mutation]) -> bytes:
    """Apply byte-level mutations in order; positions wrap around the current length.

    flip: xor the byte with arg; u64/u32: overwrite with the little-endian integer arg; cut: keep the first
    `position` bytes; insert: insert the bytes arg; delete: remove arg bytes.
    """
    out = bytearray(data)
    for op, position, arg in mutations:
        pos = position % (len(out) + 1)
        if op == "flip" and out:
            out[pos % len(out)] ^= int(arg) & 0xFF
        elif op in ("u64", "u32"):
            size = 8 if op == "u64" else 4
            out[pos : pos + size] = int(arg).to_bytes(size, "little")
        elif op == "cut":
            del out[pos:]
        elif op == "insert":
            out[pos:pos] = bytes(arg)
        elif op == "delete":
            del out[pos : pos + int(arg)]
    return bytes(out)
