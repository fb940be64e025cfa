"""The plan of a GGUF file: every key-value pair (with its GGUF type) and every tensor (with a producer).

A plan is pure data plus lazy producers; `build.write_gguf` streams it to disk. Other modules (e.g. the
checker's broken-file fixtures) take a plan from `plan_gguf(spec)`, change keys or tensors, and write it.
Shapes are numpy order `(out, in)`; the writer stores them reversed (ggml `ne` order).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
from gguf import GGMLQuantizationType, GGUFValueType, Keys
from gguf.quants import quantize

from harness.gguf import weights
from harness.gguf.spec import ModelSpec
from harness.gguf.types import BUILD_FILE_TYPES, BUILD_TYPES, tensor_nbytes
from harness.gguf.vocab import Vocab, build_vocab, text_units

GGUF_HEADER_BYTES = 4 + 4 + 8 + 8  # magic, version, tensor count, KV count
DEFAULT_ALIGNMENT = 32
GGML_QUANT_VERSION = 2

_SCALAR_SIZES = {
    GGUFValueType.UINT8: 1,
    GGUFValueType.INT8: 1,
    GGUFValueType.BOOL: 1,
    GGUFValueType.UINT16: 2,
    GGUFValueType.INT16: 2,
    GGUFValueType.UINT32: 4,
    GGUFValueType.INT32: 4,
    GGUFValueType.FLOAT32: 4,
    GGUFValueType.UINT64: 8,
    GGUFValueType.INT64: 8,
    GGUFValueType.FLOAT64: 8,
}


@dataclass(frozen=True)
class KV:
    """One metadata value and its GGUF type (`sub_type` is the element type of an ARRAY)."""

    value: object
    type: GGUFValueType
    sub_type: GGUFValueType | None = None

    def nbytes(self) -> int:
        """Bytes of the typed value as stored in the file (type tag included, key not)."""
        return 4 + _value_nbytes(self.value, self.type, self.sub_type)


def _value_nbytes(value: object, vtype: GGUFValueType, sub_type: GGUFValueType | None) -> int:
    if vtype == GGUFValueType.STRING:
        data = value.encode() if isinstance(value, str) else bytes(value)  # type: ignore[call-overload]
        return 8 + len(data)
    if vtype == GGUFValueType.ARRAY:
        items = list(value)  # type: ignore[call-overload]
        if sub_type is None:
            sub_type = GGUFValueType.get_type(items[0])
        return 4 + 8 + sum(_value_nbytes(item, sub_type, None) for item in items)
    return _SCALAR_SIZES[vtype]


def ggml_pad(n: int, alignment: int) -> int:
    return (n + alignment - 1) // alignment * alignment


@dataclass(frozen=True)
class TensorPlan:
    """One tensor: name, numpy shape, stored type and a producer of the bytes to write.

    `produce()` returns the whole array to write (float32/float16, or uint8 quantized rows). `chunks`, when
    given, yields the same data as consecutive row blocks, so big tensors stream without being held whole.
    """

    name: str
    shape: tuple[int, ...]
    ggml_type: GGMLQuantizationType
    produce: Callable[[], np.ndarray]
    chunks: Callable[[], Iterator[np.ndarray]] | None = None

    @property
    def nbytes(self) -> int:
        return tensor_nbytes(self.shape, self.ggml_type)

    def iter_data(self) -> Iterator[np.ndarray]:
        """The data to write, one block at a time."""
        if self.chunks is not None:
            yield from self.chunks()
        else:
            yield self.produce()


@dataclass
class GGUFPlan:
    """Everything a GGUF file holds, in file order; `file_size()` is exact."""

    architecture: str
    kvs: dict[str, KV]
    tensors: list[TensorPlan]
    alignment: int = DEFAULT_ALIGNMENT
    spec_hash: str = ""
    vocab: Vocab | None = field(default=None, repr=False)

    def tensor(self, name: str) -> TensorPlan:
        for tensor in self.tensors:
            if tensor.name == name:
                return tensor
        raise KeyError(name)

    def data_offset(self) -> int:
        """Byte offset of the tensor data section (after header, KV pairs and tensor infos, padded)."""
        kv_bytes = sum(8 + len(key.encode()) + kv.nbytes() for key, kv in self.kvs.items())
        info_bytes = sum(8 + len(t.name.encode()) + 4 + 8 * len(t.shape) + 4 + 8 for t in self.tensors)
        return ggml_pad(GGUF_HEADER_BYTES + kv_bytes + info_bytes, self.alignment)

    def file_size(self) -> int:
        """Exact size in bytes of the file `write_gguf` produces from this plan."""
        return self.data_offset() + sum(ggml_pad(t.nbytes, self.alignment) for t in self.tensors)


# ------------------------------------------------------------------------------------------ spec -> plan


def plan_gguf(spec: ModelSpec) -> GGUFPlan:
    """The full plan of a `llama` GGUF file for `spec` (vocab, keys, tensors with lazy producers).

    For oracle weights this also checks, in numpy, that greedy decoding survives the tensor type
    (raises BuildError naming the step and its margin otherwise).
    """
    vocab = spec_vocab(spec)
    recipes = weights.tensor_recipes(spec, vocab)
    tensors = [_tensor_plan(recipe, spec.tensor_type) for recipe in recipes]
    if spec.weights == "oracle":
        weights.check_oracle_margins(spec, vocab)
    return GGUFPlan(
        architecture=spec.architecture,
        kvs=_metadata(spec, vocab),
        tensors=tensors,
        spec_hash=spec.spec_hash(),
        vocab=vocab,
    )


def spec_vocab(spec: ModelSpec) -> Vocab:
    """The vocabulary a spec's file carries."""
    return build_vocab(_vocab_words(spec), size=spec.vocab_size, verbatim=spec.pieces)


def _vocab_words(spec: ModelSpec) -> list[str]:
    words = list(spec.words)
    if spec.oracle is not None:
        for prompt, continuation in spec.oracle.pairs:
            words += text_units(prompt, add_space_prefix=True)
            words += text_units(continuation)
    return words


def _tensor_plan(recipe: weights.TensorRecipe, tensor_type: str) -> TensorPlan:
    ggml_type = GGMLQuantizationType.F32 if len(recipe.shape) == 1 else BUILD_TYPES[tensor_type]

    def chunks() -> Iterator[np.ndarray]:
        for block in recipe.chunks():
            yield quantize(block, ggml_type)

    def produce() -> np.ndarray:
        return np.concatenate(list(chunks()), axis=0)

    return TensorPlan(recipe.name, recipe.shape, ggml_type, produce, chunks)


def _metadata(spec: ModelSpec, vocab: Vocab) -> dict[str, KV]:
    u32, f32, string, boolean = (
        GGUFValueType.UINT32,
        GGUFValueType.FLOAT32,
        GGUFValueType.STRING,
        GGUFValueType.BOOL,
    )
    arch = spec.architecture
    array = GGUFValueType.ARRAY
    kvs = {
        Keys.General.ARCHITECTURE: KV(arch, string),
        Keys.General.NAME: KV(spec.name, string),
        Keys.General.FILE_TYPE: KV(BUILD_FILE_TYPES[spec.tensor_type], u32),
        Keys.General.QUANTIZATION_VERSION: KV(GGML_QUANT_VERSION, u32),
        Keys.LLM.VOCAB_SIZE.format(arch=arch): KV(len(vocab), u32),
        Keys.LLM.CONTEXT_LENGTH.format(arch=arch): KV(spec.context_length, u32),
        Keys.LLM.EMBEDDING_LENGTH.format(arch=arch): KV(spec.n_embd, u32),
        Keys.LLM.BLOCK_COUNT.format(arch=arch): KV(spec.n_layer, u32),
        Keys.LLM.FEED_FORWARD_LENGTH.format(arch=arch): KV(spec.n_ff, u32),
        Keys.Attention.HEAD_COUNT.format(arch=arch): KV(spec.n_head, u32),
        Keys.Attention.HEAD_COUNT_KV.format(arch=arch): KV(spec.n_head_kv, u32),
        Keys.Rope.DIMENSION_COUNT.format(arch=arch): KV(spec.head_dim, u32),
        Keys.Rope.FREQ_BASE.format(arch=arch): KV(float(spec.rope_freq_base), f32),
        Keys.Attention.LAYERNORM_RMS_EPS.format(arch=arch): KV(float(spec.norm_eps), f32),
        Keys.Tokenizer.MODEL: KV("llama", string),
        Keys.Tokenizer.LIST: KV(list(vocab.tokens), array, string),
        Keys.Tokenizer.SCORES: KV(list(vocab.scores), array, f32),
        Keys.Tokenizer.TOKEN_TYPE: KV(list(vocab.token_types), array, GGUFValueType.INT32),
        Keys.Tokenizer.BOS_ID: KV(vocab.bos_id, u32),
        Keys.Tokenizer.EOS_ID: KV(vocab.eos_id, u32),
        Keys.Tokenizer.UNK_ID: KV(vocab.unk_id, u32),
        Keys.Tokenizer.ADD_BOS: KV(True, boolean),
        Keys.Tokenizer.ADD_EOS: KV(False, boolean),
    }
    if spec.chat_template:
        kvs[Keys.Tokenizer.CHAT_TEMPLATE] = KV(spec.chat_template, string)
    return kvs
