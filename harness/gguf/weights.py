"""Weight recipes: the float32 values of every tensor of a `llama` model, produced in row blocks.

- `random`: seeded uniform values of std 0.02 (numpy `default_rng`, one stream per tensor and row block,
  so the same spec gives the same bytes). The `output` rows of control, unknown and byte tokens are zero,
  so their logits are exactly 0, while the max over hundreds of random word-piece logits is positive with
  overwhelming probability: greedy decoding emits word pieces only, never lone byte tokens (which break
  real Ollama 0.33's streaming: llama-server rejects the output and the stream ends without done)
  and never EOS. Sampling at temperature > 0 can still
  pick them.
- `oracle`: attention and FFN outputs are zero (`attn_output`, `ffn_down`), so each token's embedding passes
  unchanged through the residual stream; chain tokens get orthonormal embedding directions and the
  `output` row of each successor is the scaled direction of its predecessor, so greedy decoding after the
  prompt yields the continuation, then EOS. `check_oracle_margins` verifies that in numpy for the file's
  tensor type.
"""

from __future__ import annotations

import functools
import math
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from gguf import GGMLQuantizationType, TokenType
from gguf.quants import dequantize, quantize

from harness.errors import BuildError, SpecError
from harness.gguf.spec import ModelSpec
from harness.gguf.types import BUILD_TYPES
from harness.gguf.vocab import Vocab

CHUNK_VALUES = 1 << 20  # values per produced row block (4 MiB of float32)
RANDOM_STD = 0.02
_INT8_UNIFORM_STD = math.sqrt((256**2 - 1) / 12)  # std of a uniform draw from -128..127
ORACLE_NOISE_LOGIT = 0.1  # std of the logits of the tokens that are not the successor
_ORACLE_STREAM = 0x0AC1E


@dataclass(frozen=True)
class TensorRecipe:
    """How to produce one tensor's float32 values, `chunk_rows` rows at a time."""

    name: str
    shape: tuple[int, ...]
    make_chunk: Callable[[int], np.ndarray]  # block index -> float32 rows

    @property
    def chunk_rows(self) -> int:
        return max(1, CHUNK_VALUES // self.shape[-1]) if len(self.shape) > 1 else 1

    def chunks(self) -> Iterator[np.ndarray]:
        n_rows = self.shape[0] if len(self.shape) > 1 else 1
        for k in range(-(-n_rows // self.chunk_rows)):
            yield self.make_chunk(k)

    def full(self) -> np.ndarray:
        return np.concatenate(list(self.chunks()), axis=0)


def tensor_shapes(spec: ModelSpec, n_vocab: int) -> list[tuple[str, tuple[int, ...]]]:
    """Every tensor of a `llama` model in file order, with its numpy shape `(out, in)`."""
    n_embd, hd = spec.n_embd, spec.head_dim
    shapes: list[tuple[str, tuple[int, ...]]] = [("token_embd.weight", (n_vocab, n_embd))]
    for i in range(spec.n_layer):
        shapes += [
            (f"blk.{i}.attn_norm.weight", (n_embd,)),
            (f"blk.{i}.attn_q.weight", (spec.n_head * hd, n_embd)),
            (f"blk.{i}.attn_k.weight", (spec.n_head_kv * hd, n_embd)),
            (f"blk.{i}.attn_v.weight", (spec.n_head_kv * hd, n_embd)),
            (f"blk.{i}.attn_output.weight", (n_embd, spec.n_head * hd)),
            (f"blk.{i}.ffn_norm.weight", (n_embd,)),
            (f"blk.{i}.ffn_gate.weight", (spec.n_ff, n_embd)),
            (f"blk.{i}.ffn_up.weight", (spec.n_ff, n_embd)),
            (f"blk.{i}.ffn_down.weight", (n_embd, spec.n_ff)),
        ]
    shapes += [("output_norm.weight", (n_embd,)), ("output.weight", (n_vocab, n_embd))]
    return shapes


def tensor_recipes(spec: ModelSpec, vocab: Vocab) -> list[TensorRecipe]:
    """The recipe of every tensor of the spec's model, in file order."""
    make = _oracle_chunk_maker if spec.weights == "oracle" else _random_chunk_maker
    return [
        TensorRecipe(name, shape, make(spec, vocab, name, shape))
        for name, shape in tensor_shapes(spec, len(vocab))
    ]


def _is_norm(name: str) -> bool:
    return name.endswith("norm.weight")


def _rows(shape: tuple[int, ...], k: int) -> slice:
    chunk_rows = max(1, CHUNK_VALUES // shape[-1])
    return slice(k * chunk_rows, min(shape[0], (k + 1) * chunk_rows))


def _random_chunk_maker(
    spec: ModelSpec, vocab: Vocab, name: str, shape: tuple[int, ...]
) -> Callable[[int], np.ndarray]:
    if _is_norm(name):
        return lambda k: np.ones(shape, dtype=np.float32)
    silent = np.array([t != TokenType.NORMAL for t in vocab.token_types]) if name == "output.weight" else None

    def chunk(k: int) -> np.ndarray:
        rows = _rows(shape, k)
        rng = np.random.default_rng([spec.seed, zlib.crc32(name.encode()), k])
        n_rows = rows.stop - rows.start
        # uniform int8 noise scaled to RANDOM_STD: several times faster than normal floats, which keeps
        # building a 1 GiB model disk-bound
        block = np.frombuffer(rng.bytes(n_rows * shape[1]), dtype=np.int8).astype(np.float32)
        block = block.reshape(n_rows, shape[1])
        block *= np.float32(RANDOM_STD / _INT8_UNIFORM_STD)
        if silent is not None:
            block[silent[rows]] = 0.0
        return block

    return chunk


# ------------------------------------------------------------------------------------------------ oracle


@dataclass(frozen=True)
class OracleChain:
    """The decoding chain: `sources[i]` must be followed by `successors[i]` (the last successor is EOS)."""

    sources: tuple[int, ...]
    successors: tuple[int, ...]


def oracle_chain(spec: ModelSpec, vocab: Vocab) -> OracleChain:
    """Token chain of the oracle: for each (prompt, continuation) pair, the prompt's last token ->
    continuation tokens -> EOS; one successor per token across all pairs (validated)."""
    assert spec.oracle is not None
    sources: list[int] = []
    successors: list[int] = []
    for prompt, continuation in spec.oracle.pairs:
        prompt_ids = vocab.tokenize(prompt)
        continuation_ids = vocab.tokenize(continuation, add_space_prefix=False)
        if vocab.detokenize(continuation_ids) != continuation:
            raise SpecError(
                f"oracle continuation {continuation!r} does not survive tokenization",
                "use plain words, spaces and punctuation (or add its pieces to `pieces`)",
            )
        sources += [prompt_ids[-1], *continuation_ids]
        successors += [*continuation_ids, vocab.eos_id]
    seen: dict[int, int] = {}
    for source, successor in zip(sources, successors, strict=True):
        if seen.setdefault(source, successor) != successor:
            raise SpecError(
                f"oracle token {vocab.tokens[source]!r} would need two different successors "
                f"({vocab.tokens[seen[source]]!r} and {vocab.tokens[successor]!r})",
                "the oracle maps each token to one successor: don't repeat a word of the continuation "
                "(or the prompt's last word), and end each prompt of `more` in its own token",
            )
    if len(seen) > spec.n_embd:
        raise SpecError(
            f"oracle chain has {len(seen)} distinct tokens but n_embd is {spec.n_embd}",
            "shorten the continuation or raise n_embd",
        )
    return OracleChain(tuple(sources), tuple(successors))


@functools.lru_cache(maxsize=4)
def _oracle_matrices(spec: ModelSpec, vocab: Vocab) -> tuple[np.ndarray, np.ndarray]:
    """(token_embd, output) float32 matrices of the oracle model."""
    assert spec.oracle is not None
    chain = oracle_chain(spec, vocab)
    n, n_vocab = spec.n_embd, len(vocab)
    rng = np.random.default_rng([spec.seed, _ORACLE_STREAM])
    distinct = list(dict.fromkeys(chain.sources))
    directions, _ = np.linalg.qr(rng.standard_normal((n, len(distinct))))
    direction_of = {token: directions[:, j].astype(np.float32) for j, token in enumerate(distinct)}

    embedding = rng.standard_normal((n_vocab, n), dtype=np.float32) / np.float32(math.sqrt(n))
    for token, direction in direction_of.items():
        embedding[token] = direction
    # RMSNorm turns a unit vector u into sqrt(n)*u, so a row target/sqrt(n)*u scores `target` on it.
    output = rng.standard_normal((n_vocab, n), dtype=np.float32) * np.float32(
        ORACLE_NOISE_LOGIT / math.sqrt(n)
    )
    output[np.array([t != TokenType.NORMAL for t in vocab.token_types])] = 0.0
    for successor in set(chain.successors):
        output[successor] = 0.0
    scale = np.float32(spec.oracle.target_logit / math.sqrt(n))
    for source, successor in dict(zip(chain.sources, chain.successors, strict=True)).items():
        output[successor] += scale * direction_of[source]
    return embedding, output


def _oracle_chunk_maker(
    spec: ModelSpec, vocab: Vocab, name: str, shape: tuple[int, ...]
) -> Callable[[int], np.ndarray]:
    if _is_norm(name):
        return lambda k: np.ones(shape, dtype=np.float32)
    if name.endswith(("attn_output.weight", "ffn_down.weight")):
        return lambda k: np.zeros((_rows(shape, k).stop - _rows(shape, k).start, shape[1]), dtype=np.float32)
    if name in ("token_embd.weight", "output.weight"):
        index = 0 if name == "token_embd.weight" else 1
        return lambda k: _oracle_matrices(spec, vocab)[index][_rows(shape, k)]
    return _random_chunk_maker(spec, vocab, name, shape)


def _roundtrip(values: np.ndarray, ggml_type: GGMLQuantizationType) -> np.ndarray:
    return np.asarray(dequantize(quantize(values, ggml_type), ggml_type), dtype=np.float32)


def oracle_margins(spec: ModelSpec, vocab: Vocab) -> list[float]:
    """Per decoding step, the logit of the right successor minus the best other logit, simulated in numpy
    for the spec's tensor type (weights quantized and dequantized; activations rounded as llama.cpp's CPU
    matmul does: F16 for f16 weights, Q8_0 for q8_0/q4_0 weights)."""
    ggml_type = BUILD_TYPES[spec.tensor_type]
    embedding, output = (_roundtrip(m, ggml_type) for m in _oracle_matrices(spec, vocab))
    chain = oracle_chain(spec, vocab)
    margins = []
    for source, successor in zip(chain.sources, chain.successors, strict=True):
        x = embedding[source]
        h = x / np.sqrt(np.mean(x * x) + np.float32(spec.norm_eps))  # final RMSNorm, weight 1
        if spec.tensor_type == "f16":
            h = h.astype(np.float16).astype(np.float32)
        elif spec.tensor_type in ("q8_0", "q4_0"):
            h = _roundtrip(h[None, :], GGMLQuantizationType.Q8_0)[0]
        logits = output @ h
        right = float(logits[successor])
        logits[successor] = -np.inf
        margins.append(right - float(logits.max()))
    return margins


def check_oracle_margins(spec: ModelSpec, vocab: Vocab) -> None:
    """Raise BuildError if any oracle step's margin is below `min_margin` for the spec's tensor type."""
    assert spec.oracle is not None
    chain = oracle_chain(spec, vocab)
    for step, margin in enumerate(oracle_margins(spec, vocab)):
        if margin < spec.oracle.min_margin:
            source, successor = chain.sources[step], chain.successors[step]
            raise BuildError(
                f"oracle step {step} ({vocab.tokens[source]!r} -> {vocab.tokens[successor]!r}): logit margin "
                f"{margin:.3f} is below {spec.oracle.min_margin} in {spec.tensor_type}; greedy decoding "
                "might not follow the chain",
                "raise [oracle] target_logit, use a wider tensor type (f16/q8_0), or lower min_margin",
            )
