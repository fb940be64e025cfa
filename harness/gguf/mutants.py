"""Structured mutants of a valid GGUF fixture, for the differential test of the checker against llama.cpp.

A `Mutant` is one named edit of a `GGUFPlan` (from `plan_gguf(spec)`), in one of these families: a key
dropped, retyped or given an odd value; a tensor dropped, reshaped, retyped or renamed; a tokenizer field
changed; the architecture swapped; and benign edits that must leave a loadable file (an extra key, keys or
tensors reordered, 2-D weights re-encoded F32 -> F16, a Unicode `general.name`). `all_mutants(plan)` lists
every single edit for a plan (deterministic order); `random_mutants` draws single and double edits from it
with a seeded generator; `write_mutant` writes one to disk.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType
from gguf.quants import QuantError, quantize

from harness.gguf import archs
from harness.gguf.build import write_gguf
from harness.gguf.plan import KV, GGUFPlan, TensorPlan

PlanEdit = Callable[[GGUFPlan], None]

FAMILIES = (
    "template",
    "key-drop",
    "key-type",
    "key-value",
    "tensor-drop",
    "tensor-shape",
    "tensor-type",
    "tensor-name",
    "tokenizer",
    "architecture",
    "benign",
)

_INT_TYPES = (
    GGUFValueType.UINT8,
    GGUFValueType.INT8,
    GGUFValueType.UINT16,
    GGUFValueType.INT16,
    GGUFValueType.UINT32,
    GGUFValueType.INT32,
    GGUFValueType.UINT64,
    GGUFValueType.INT64,
)
_RETYPES = (
    *_INT_TYPES,
    GGUFValueType.FLOAT32,
    GGUFValueType.FLOAT64,
    GGUFValueType.BOOL,
    GGUFValueType.STRING,
)
_INT_RANGES = {
    GGUFValueType.UINT8: (0, 2**8 - 1),
    GGUFValueType.INT8: (-(2**7), 2**7 - 1),
    GGUFValueType.UINT16: (0, 2**16 - 1),
    GGUFValueType.INT16: (-(2**15), 2**15 - 1),
    GGUFValueType.UINT32: (0, 2**32 - 1),
    GGUFValueType.INT32: (-(2**31), 2**31 - 1),
    GGUFValueType.UINT64: (0, 2**64 - 1),
    GGUFValueType.INT64: (-(2**63), 2**63 - 1),
}
# Tensor types a mutant may re-encode a weight into (zero bytes are valid data for every one of them).
_TENSOR_RETYPES = (
    GGMLQuantizationType.F16,
    GGMLQuantizationType.BF16,
    GGMLQuantizationType.Q8_0,
    GGMLQuantizationType.Q4_0,
    GGMLQuantizationType.Q4_K,
    GGMLQuantizationType.I32,
    GGMLQuantizationType.I8,
)
_SWAP_ARCHITECTURES = (
    *("qwen2", "qwen3", "gemma", "phi3", "mistral3", "bert", "gpt2", "granite", "deci", "mamba", "llama4"),
    *("stablelm", "orion", "refact", "minicpm", "xverse", "internlm2", "olmo", "arcee", "falcon"),
)
_UNICODE_NAME = "Modèle ☃ 模型 🦙"


@dataclass(frozen=True)
class Mutant:
    """One edit of a plan: `name` says what changed; `benign` edits must leave a file llama.cpp runs."""

    name: str
    family: str
    edit: PlanEdit
    benign: bool = False


def copy_plan(plan: GGUFPlan) -> GGUFPlan:
    """A copy of `plan` whose key dict and tensor list can be edited freely."""
    return dataclasses.replace(plan, kvs=dict(plan.kvs), tensors=list(plan.tensors))


def write_mutant(plan: GGUFPlan, mutants: tuple[Mutant, ...], path: str | os.PathLike[str]) -> Path:
    """`plan` with each of `mutants` applied in turn, written at `path`."""
    edited = copy_plan(plan)
    for mutant in mutants:
        mutant.edit(edited)
    return write_gguf(edited, path, progress=False).path


def all_mutants(plan: GGUFPlan) -> list[Mutant]:
    """Every single-edit mutant of `plan`, in a fixed order."""
    return [
        *_key_mutants(plan),
        *_tensor_mutants(plan),
        *_tokenizer_mutants(plan),
        *_architecture_mutants(plan),
        *_template_mutants(),
        *_benign_mutants(plan),
    ]


def random_mutants(plan: GGUFPlan, count: int, seed: int) -> list[tuple[Mutant, ...]]:
    """`count` mutants drawn with `random.Random(seed)`: every single edit once (in a shuffled order) while
    they last, then pairs of edits."""
    singles = all_mutants(plan)
    rng = random.Random(seed)
    order = list(singles)
    rng.shuffle(order)
    drawn: list[tuple[Mutant, ...]] = [(m,) for m in order[:count]]
    while len(drawn) < count:
        first, second = rng.sample(singles, 2)
        drawn.append((first, second))
    return drawn


def describe(mutants: tuple[Mutant, ...]) -> str:
    """The mutants' names joined with ' + '."""
    return " + ".join(m.name for m in mutants)


# ------------------------------------------------------------------------------------------------ keys


def _set_kv(key: str, kv: KV | None) -> PlanEdit:
    def edit(plan: GGUFPlan) -> None:
        if kv is None:
            plan.kvs.pop(key, None)
        else:
            plan.kvs[key] = kv

    return edit


def _coerced(value: object, value_type: GGUFValueType) -> object | None:
    """`value` stored as `value_type`, or None when it cannot be."""
    if value_type == GGUFValueType.STRING:
        return str(value)
    if value_type == GGUFValueType.BOOL:
        return bool(value)
    if isinstance(value, (str, list)):
        return None
    if value_type in (GGUFValueType.FLOAT32, GGUFValueType.FLOAT64):
        return float(value)  # type: ignore[arg-type]
    low, high = _INT_RANGES[value_type]
    if isinstance(value, float) and not value.is_integer():
        return None
    number = int(value)  # type: ignore[call-overload]
    return number if low <= number <= high else None


def _odd_values(kv: KV) -> Iterator[tuple[str, KV]]:
    value, value_type = kv.value, kv.type
    if value_type == GGUFValueType.ARRAY:
        items = list(value)  # type: ignore[call-overload]
        yield "one-item", KV(items[:1], value_type, kv.sub_type)  # gguf-py cannot write an empty array
        yield "one-short", KV(items[:-1], value_type, kv.sub_type)
        yield "one-long", KV([*items, items[-1]], value_type, kv.sub_type)
        return
    if value_type == GGUFValueType.STRING:
        for label, text in (("empty", ""), ("unknown", "no-such-thing"), ("unicode", _UNICODE_NAME)):
            yield label, KV(text, value_type)
        yield "invalid-utf8", KV(b"ab\xff\xfecd", value_type)
        return
    if value_type == GGUFValueType.BOOL:
        yield "flipped", KV(not value, value_type)
        return
    if value_type in (GGUFValueType.FLOAT32, GGUFValueType.FLOAT64):
        for label, number in (
            ("zero", 0.0),
            ("negative", -1.0),
            ("nan", math.nan),
            ("inf", math.inf),
            ("huge", 1e30),
            ("tiny", 1e-30),
        ):
            yield label, KV(number, value_type)
        return
    low, high = _INT_RANGES[value_type]
    assert isinstance(value, int)
    for label, number in (
        ("zero", 0),
        ("one", 1),
        ("minus-one", value - 1),
        ("plus-one", value + 1),
        ("double", value * 2),
        ("half", value // 2),
        ("max", high),
        ("big", 1 << 20),
    ):
        if low <= number <= high and number != value:
            yield label, KV(number, value_type)


def _key_mutants(plan: GGUFPlan) -> Iterator[Mutant]:
    for key, kv in plan.kvs.items():
        yield Mutant(f"drop {key}", "key-drop", _set_kv(key, None))
        if kv.type != GGUFValueType.ARRAY:
            for value_type in _RETYPES:
                coerced = _coerced(kv.value, value_type)
                if value_type != kv.type and coerced is not None:
                    name = f"retype {key} {kv.type.name.lower()} -> {value_type.name.lower()}"
                    yield Mutant(name, "key-type", _set_kv(key, KV(coerced, value_type)))
        elif kv.sub_type is not None and kv.sub_type != GGUFValueType.STRING:
            for sub_type in (GGUFValueType.FLOAT32, GGUFValueType.INT32, GGUFValueType.UINT32):
                if sub_type != kv.sub_type:
                    retyped = [_coerced(item, sub_type) for item in kv.value]  # type: ignore[attr-defined]
                    if all(item is not None for item in retyped):
                        name = f"retype {key} arr[{kv.sub_type.name.lower()}] -> arr[{sub_type.name.lower()}]"
                        yield Mutant(name, "key-type", _set_kv(key, KV(retyped, kv.type, sub_type)))
        for label, odd in _odd_values(kv):
            yield Mutant(f"{key} {label}", "key-value", _set_kv(key, odd))


# --------------------------------------------------------------------------------------------- tensors


def _zeros(shape: tuple[int, ...], ggml_type: GGMLQuantizationType) -> Callable[[], np.ndarray]:
    def produce() -> np.ndarray:
        if ggml_type == GGMLQuantizationType.F32:
            return np.zeros(shape, dtype=np.float32)
        block, type_size = GGML_QUANT_SIZES[ggml_type]
        count = math.prod(shape) // block * type_size
        return np.zeros(count, dtype=np.uint8)

    return produce


def _reencoded(tensor: TensorPlan, ggml_type: GGMLQuantizationType) -> Callable[[], np.ndarray]:
    """The tensor's own F32 values quantized to `ggml_type` (zeros where gguf-py has no quantizer)."""

    def produce() -> np.ndarray:
        data = tensor.produce()
        if tensor.ggml_type == GGMLQuantizationType.F32:
            try:
                return quantize(np.asarray(data, dtype=np.float32), ggml_type)
            except (NotImplementedError, QuantError):
                pass  # no quantizer, or rows not a multiple of the block: zero bytes of the declared size
        return _zeros(tensor.shape, ggml_type)()

    return produce


def _replace_tensor(name: str, new: Callable[[TensorPlan], TensorPlan | None]) -> PlanEdit:
    def edit(plan: GGUFPlan) -> None:
        tensors = []
        for tensor in plan.tensors:
            if tensor.name == name:
                replaced = new(tensor)
                if replaced is not None:
                    tensors.append(replaced)
            else:
                tensors.append(tensor)
        plan.tensors = tensors

    return edit


def _reshaped(shape: tuple[int, ...]) -> Callable[[TensorPlan], TensorPlan]:
    def new(tensor: TensorPlan) -> TensorPlan:
        return TensorPlan(tensor.name, shape, tensor.ggml_type, _zeros(shape, tensor.ggml_type))

    return new


def _retyped(ggml_type: GGMLQuantizationType) -> Callable[[TensorPlan], TensorPlan]:
    def new(tensor: TensorPlan) -> TensorPlan:
        return TensorPlan(tensor.name, tensor.shape, ggml_type, _reencoded(tensor, ggml_type))

    return new


def _renamed(name: str) -> Callable[[TensorPlan], TensorPlan]:
    def new(tensor: TensorPlan) -> TensorPlan:
        return dataclasses.replace(tensor, name=name)

    return new


def _shape_variants(shape: tuple[int, ...]) -> Iterator[tuple[str, tuple[int, ...]]]:
    """Other numpy shapes for a tensor (numpy order: the row length is last)."""
    yield "row+32", (*shape[:-1], shape[-1] + 32)
    yield "rows+1", (shape[0] + 1, *shape[1:]) if len(shape) > 1 else (shape[0] * 2,)
    if len(shape) == 2 and shape[0] != shape[1]:
        yield "transposed", (shape[1], shape[0])
    yield "extra-dim", (1, *shape) if len(shape) < 4 else shape[1:]
    if len(shape) > 1:
        yield "flattened", (math.prod(shape),)


def _tensor_mutants(plan: GGUFPlan) -> Iterator[Mutant]:
    for tensor in plan.tensors:
        name = tensor.name
        yield Mutant(f"drop tensor {name}", "tensor-drop", _replace_tensor(name, lambda t: None))
        for label, shape in _shape_variants(tensor.shape):
            yield Mutant(f"reshape {name} {label}", "tensor-shape", _replace_tensor(name, _reshaped(shape)))
        for ggml_type in _TENSOR_RETYPES:
            if ggml_type != tensor.ggml_type:
                yield Mutant(
                    f"retype tensor {name} -> {ggml_type.name}",
                    "tensor-type",
                    _replace_tensor(name, _retyped(ggml_type)),
                )
        yield Mutant(
            f"rename tensor {name}", "tensor-name", _replace_tensor(name, _renamed(name.replace(".", "_", 1)))
        )
    yield Mutant(
        "extra tensor blk.99.attn_q.weight",
        "tensor-name",
        lambda p: p.tensors.append(dataclasses.replace(p.tensors[-1], name="blk.99.attn_q.weight")),
    )


# ------------------------------------------------------------------------------------------- tokenizer


def _array_edit(key: str, change: Callable[[list[object]], list[object]]) -> PlanEdit:
    def edit(plan: GGUFPlan) -> None:
        old = plan.kvs.get(key)
        if old is not None and old.type == GGUFValueType.ARRAY:  # an earlier edit may have dropped it
            plan.kvs[key] = KV(change(list(old.value)), old.type, old.sub_type)  # type: ignore[call-overload]

    return edit


def _set_item(index: int, value: object) -> Callable[[list[object]], list[object]]:
    def change(items: list[object]) -> list[object]:
        items[index % len(items)] = value
        return items

    return change


def _without_byte_tokens(items: list[object]) -> list[object]:
    return [f"<0y{i:02X}>" if isinstance(t, str) and t.startswith("<0x") else t for i, t in enumerate(items)]


def _tokenizer_mutants(plan: GGUFPlan) -> Iterator[Mutant]:
    tokens_key, types_key = "tokenizer.ggml.tokens", "tokenizer.ggml.token_type"
    if "tokenizer.ggml.model" in plan.kvs:
        for model in sorted(archs.TOKENIZER_RULES):
            if model != plan.kvs["tokenizer.ggml.model"].value:
                yield Mutant(
                    f"tokenizer.ggml.model -> {model}",
                    "tokenizer",
                    _set_kv("tokenizer.ggml.model", KV(model, GGUFValueType.STRING)),
                )
    for pre in ("default", "llama-bpe", "no-such-pre"):
        yield Mutant(
            f"tokenizer.ggml.pre = {pre}",
            "tokenizer",
            _set_kv("tokenizer.ggml.pre", KV(pre, GGUFValueType.STRING)),
        )
    if tokens_key in plan.kvs:
        n_vocab = len(plan.kvs[tokens_key].value)  # type: ignore[arg-type]
        for key in archs.SPECIAL_TOKEN_KEYS:
            for label, token_id in (("n_vocab", n_vocab), ("last", n_vocab - 1), ("huge", 2**31)):
                yield Mutant(
                    f"{key} = {label}", "tokenizer", _set_kv(key, KV(token_id, GGUFValueType.UINT32))
                )
        yield Mutant("token 3 empty", "tokenizer", _array_edit(tokens_key, _set_item(3, "")))
        yield Mutant(
            "last token duplicated",
            "tokenizer",
            _array_edit(tokens_key, lambda t: [*t[:-1], t[-2]] if len(t) > 1 else t),
        )
        yield Mutant("byte tokens renamed", "tokenizer", _array_edit(tokens_key, _without_byte_tokens))
        yield Mutant("token 5 invalid UTF-8", "tokenizer", _array_edit(tokens_key, _set_item(5, b"\xff\xfe")))
    if types_key in plan.kvs:
        for token_type in (0, 7, 99, -1):
            yield Mutant(
                f"token_type of token 5 = {token_type}",
                "tokenizer",
                _array_edit(types_key, _set_item(5, token_type)),
            )
        yield Mutant(
            "every token_type = 3 (control)", "tokenizer", _array_edit(types_key, lambda t: [3] * len(t))
        )
    yield Mutant(
        "merges added",
        "tokenizer",
        _set_kv("tokenizer.ggml.merges", KV(["a b", "c d"], GGUFValueType.ARRAY, GGUFValueType.STRING)),
    )


# ---------------------------------------------------------------------------------------- architecture


def _swap_architecture(new_arch: str, move_keys: bool) -> PlanEdit:
    def edit(plan: GGUFPlan) -> None:
        old_prefix = f"{plan.architecture}."
        kvs: dict[str, KV] = {}
        for key, kv in plan.kvs.items():
            if key == "general.architecture":
                kv = KV(new_arch, GGUFValueType.STRING)
            elif move_keys and key.startswith(old_prefix):
                key = new_arch + "." + key[len(old_prefix) :]
            kvs[key] = kv
        plan.kvs = kvs
        plan.architecture = new_arch

    return edit


def architecture_sweep() -> list[Mutant]:
    """The fixture moved (keys renamed) to every architecture llama.cpp knows: beyond the checker's
    rules, where an OK verdict is not a guarantee (scripts/differential_campaign.py --sweep-architectures)."""
    return [
        Mutant(f"architecture -> {arch} (keys moved)", "architecture", _swap_architecture(arch, True))
        for arch in sorted(archs.LLAMACPP_ARCHITECTURES)
    ]


def _architecture_mutants(plan: GGUFPlan) -> Iterator[Mutant]:
    for arch in (*_SWAP_ARCHITECTURES, "so8t"):
        yield Mutant(f"architecture -> {arch} (keys moved)", "architecture", _swap_architecture(arch, True))
        yield Mutant(f"architecture -> {arch} (keys kept)", "architecture", _swap_architecture(arch, False))


# ---------------------------------------------------------------------------------------- chat template

# Chat templates a file may carry: some llama.cpp's server refuses at start-up, some only a chat request
# would trip over, some are fine (real templates use namespace(), loop controls, tojson and slicing).
_TEMPLATES = {
    "unterminated for": "{% for m in messages %}{{ m['content'] }}",
    "unknown filter": "{% for m in messages %}{{ m['content'] | no_such_filter }}{% endfor %}",
    "raises on system": (
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system') }}{% endif %}"
        "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    ),
    "reaches __class__": (
        "{{ messages.__class__.__name__ }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    ),
    "uses cycler": (
        "{% set c = cycler('a', 'b') %}{% for m in messages %}{{ c.next() }}{{ m['content'] }}{% endfor %}"
    ),
    "hidden U+200B": "{% for m in messages %}\u200b{{ m['content'] }}{% endfor %}",
    "ChatML tokens not in vocab": (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    ),
    "drops the messages": "{{ bos_token }}hello",
    "namespace and loop controls": (
        "{% set ns = namespace(n=0) %}{% for m in messages %}{% if m['role'] == 'system' %}{% continue %}"
        "{% endif %}{% set ns.n = ns.n + 1 %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant:{% endif %}"
    ),
    "tojson and slicing": "{% for m in messages[-2:] %}{{ m['content'] | tojson }}\n{% endfor %}",
}


def _template_mutants() -> Iterator[Mutant]:
    for label, text in _TEMPLATES.items():
        edit = _set_kv("tokenizer.chat_template", KV(text, GGUFValueType.STRING))
        yield Mutant(f"chat template: {label}", "template", edit)


# ------------------------------------------------------------------------------------------------ benign


def _reverse_keys(plan: GGUFPlan) -> None:
    plan.kvs = dict(reversed(plan.kvs.items()))


def _reverse_tensors(plan: GGUFPlan) -> None:
    plan.tensors = list(reversed(plan.tensors))


def _weights_to_f16(plan: GGUFPlan) -> None:
    plan.tensors = [
        _retyped(GGMLQuantizationType.F16)(t)
        if len(t.shape) == 2 and t.ggml_type == GGMLQuantizationType.F32
        else t
        for t in plan.tensors
    ]


def _benign_mutants(plan: GGUFPlan) -> Iterator[Mutant]:
    yield Mutant("extra key", "benign", _set_kv("custom.note", KV("hello", GGUFValueType.STRING)), True)
    yield Mutant("keys reversed", "benign", _reverse_keys, True)
    yield Mutant("tensors reversed", "benign", _reverse_tensors, True)
    yield Mutant("2-D weights F32 -> F16", "benign", _weights_to_f16, True)
    yield Mutant(
        "Unicode general.name",
        "benign",
        _set_kv("general.name", KV(_UNICODE_NAME, GGUFValueType.STRING)),
        True,
    )
    yield Mutant(
        "general.description added",
        "benign",
        _set_kv("general.description", KV("a tiny model", GGUFValueType.STRING)),
        True,
    )
