"""Model specs: what a fixture GGUF file contains, and the named profiles in `fixtures/`.

A `ModelSpec` is pure data (frozen, hashable, validated on creation). Profiles are TOML files: adding a
profile is adding a file, not code. `load_profile` takes a profile name or a path to a `.toml` file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.datafiles import data_dir
from harness.errors import SpecError
from harness.gguf.types import QUANT_BLOCK_SIZE, QUANTIZED_TYPES, TENSOR_TYPES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# Bump when the bytes a spec produces change (recipes, vocab layout, keys): it is part of the spec hash,
# so cached files built by older code are not reused.
BUILDER_VERSION = 1

WEIGHT_RECIPES = ("random", "oracle")
ARCHITECTURES = ("llama",)

DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'] }}: {{ message['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"
)


def fixtures_dir() -> Path:
    """Folder holding the profile TOML files ($HARNESS_FIXTURES_DIR, else `fixtures/`: harness.datafiles)."""
    override = os.environ.get("HARNESS_FIXTURES_DIR")
    if override:
        return Path(override)
    return data_dir("fixtures")


@dataclass(frozen=True, kw_only=True)
class OracleSpec:
    """What an oracle model generates: greedy decoding after `prompt` yields `continuation`, then EOS.

    `more` holds further (prompt, continuation) pairs: the model sees only the last token of a prompt, so
    each pair's prompt must end in its own token (a tool-calling oracle answers differently on the first
    turn and after a tool result). `target_logit` is the logit the right successor gets (before
    quantization); `min_margin` is the smallest gap between it and the runner-up that the builder accepts
    after simulating the tensor type.
    """

    prompt: str = "hello the"
    continuation: str = " is two one."
    more: tuple[tuple[str, str], ...] = ()
    target_logit: float = 16.0
    min_margin: float = 2.0

    @property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        """Every (prompt, continuation) pair, the main one first."""
        return ((self.prompt, self.continuation), *self.more)

    def __post_init__(self) -> None:
        more = self.more
        if not isinstance(more, (list, tuple)) or not all(
            isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(t, str) for t in pair)
            for pair in more
        ):
            raise SpecError(
                "oracle 'more' must be a list of [prompt, continuation] pairs of strings",
                'e.g. more = [["the prompt end", " its continuation."]]',
            )
        object.__setattr__(self, "more", tuple((prompt, continuation) for prompt, continuation in more))
        for prompt, continuation in self.more:
            if not prompt.strip() or not continuation.strip():
                raise SpecError(
                    f"oracle pair {[prompt, continuation]!r} has an empty prompt or continuation",
                    "give every [prompt, continuation] pair in 'more' text on both sides",
                )
        if not self.prompt.strip():
            raise SpecError("oracle prompt is empty", 'give [oracle] prompt a few words, e.g. "hello the"')
        if not self.continuation.strip():
            raise SpecError("oracle continuation is empty", 'give [oracle] continuation, e.g. " is two one."')
        if self.target_logit <= 0 or self.min_margin < 0:
            raise SpecError(
                "oracle target_logit must be > 0 and min_margin >= 0 "
                f"(got {self.target_logit}, {self.min_margin})",
                "use the defaults target_logit = 16.0, min_margin = 2.0",
            )


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """Everything that determines a fixture GGUF file, byte for byte."""

    name: str
    architecture: str = "llama"
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_ff: int
    context_length: int
    rope_freq_base: float = 10000.0
    norm_eps: float = 1e-5
    tensor_type: str = "f32"
    seed: int = 0
    weights: str = "random"
    words: tuple[str, ...] = ()
    pieces: tuple[str, ...] = ()  # extra tokens taken verbatim (spaces and punctuation included)
    oracle: OracleSpec | None = None
    chat_template: str = DEFAULT_CHAT_TEMPLATE
    vocab_size: int | None = None  # None: specials + bytes + pieces, as many as the words need

    def __post_init__(self) -> None:
        object.__setattr__(self, "words", tuple(self.words))
        object.__setattr__(self, "pieces", tuple(self.pieces))
        if self.weights == "oracle" and self.oracle is None:
            object.__setattr__(self, "oracle", OracleSpec())
        _validate(self)

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def replace(self, **changes: Any) -> ModelSpec:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON/TOML-friendly)."""
        data = dataclasses.asdict(self)
        data["words"] = list(self.words)
        if self.pieces:
            data["pieces"] = list(self.pieces)
        else:
            del data["pieces"]  # specs without pieces keep the hash they had before pieces existed
        if self.oracle is not None and not self.oracle.more:
            del data["oracle"]["more"]
        return data

    def spec_hash(self) -> str:
        """Hex sha256 of the canonical spec plus the builder version: equal hashes mean equal files."""
        payload = {"builder_version": BUILDER_VERSION, "spec": self.to_dict()}
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(text.encode()).hexdigest()


def _validate(spec: ModelSpec) -> None:
    if spec.architecture not in ARCHITECTURES:
        raise SpecError(
            f"unsupported architecture {spec.architecture!r}",
            f"the builder writes {', '.join(ARCHITECTURES)} only",
        )
    for name in ("n_embd", "n_layer", "n_head", "n_head_kv", "n_ff", "context_length"):
        value = getattr(spec, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise SpecError(f"{name} must be a positive integer (got {value!r})", f"set {name} to e.g. 64")
    if spec.n_embd % spec.n_head:
        raise SpecError(
            f"n_embd {spec.n_embd} is not divisible by n_head {spec.n_head}",
            "choose n_head so that n_embd / n_head is a whole, even head size",
        )
    if spec.head_dim % 2:
        raise SpecError(
            f"head size n_embd / n_head = {spec.head_dim} is odd; llama.cpp's RoPE aborts on odd head sizes",
            "choose n_head so that n_embd / n_head is even",
        )
    if spec.n_head % spec.n_head_kv:
        raise SpecError(
            f"n_head {spec.n_head} is not a multiple of n_head_kv {spec.n_head_kv}",
            "use n_head_kv = n_head, or a divisor of it (grouped-query attention)",
        )
    if spec.tensor_type not in TENSOR_TYPES:
        raise SpecError(f"unknown tensor type {spec.tensor_type!r}", f"use one of {', '.join(TENSOR_TYPES)}")
    if spec.tensor_type in QUANTIZED_TYPES:
        for name in ("n_embd", "n_ff"):
            value = getattr(spec, name)
            if value % QUANT_BLOCK_SIZE:
                raise SpecError(
                    f"{name} = {value} is not a multiple of {QUANT_BLOCK_SIZE}: {spec.tensor_type} rows are "
                    f"stored in blocks of {QUANT_BLOCK_SIZE} values",
                    f"round {name} to a multiple of {QUANT_BLOCK_SIZE} "
                    f"(e.g. {-(-value // QUANT_BLOCK_SIZE) * QUANT_BLOCK_SIZE}) or use f32/f16",
                )
    if spec.weights not in WEIGHT_RECIPES:
        raise SpecError(f"unknown weight recipe {spec.weights!r}", f"use one of {', '.join(WEIGHT_RECIPES)}")
    if not isinstance(spec.seed, int) or spec.seed < 0:
        raise SpecError(f"seed must be a non-negative integer (got {spec.seed!r})", "e.g. seed = 0")
    if spec.rope_freq_base <= 0 or spec.norm_eps <= 0:
        raise SpecError("rope_freq_base and norm_eps must be positive", "defaults: 10000.0 and 1e-5")
    if spec.vocab_size is not None and spec.vocab_size < 1:
        raise SpecError(
            f"vocab_size must be positive (got {spec.vocab_size})", "omit it to size the vocab by the words"
        )
    for word in spec.words:
        if not isinstance(word, str) or not word.strip() or any(c.isspace() for c in word):
            raise SpecError(f"bad word {word!r} in words", "words are non-empty strings without whitespace")
    for piece in spec.pieces:
        if not isinstance(piece, str) or len(piece) < 2 or piece != piece.lstrip():
            raise SpecError(
                f"bad piece {piece!r} in pieces",
                "pieces are tokens of two characters or more that do not start with whitespace",
            )


# --------------------------------------------------------------------------------------------- profiles

_SPEC_FIELDS = {f.name for f in dataclasses.fields(ModelSpec)}
_ORACLE_FIELDS = {f.name for f in dataclasses.fields(OracleSpec)}


def list_profiles() -> list[str]:
    """Names of the profiles in the fixtures folder (file stems), sorted."""
    folder = fixtures_dir()
    return sorted(p.stem for p in folder.glob("*.toml")) if folder.is_dir() else []


def load_profile(name_or_path: str | os.PathLike[str]) -> ModelSpec:
    """The spec of a named profile (`tiny`, `so8t-lite`, `oracle`, ...) or of a `.toml` file."""
    text = str(name_or_path)
    path = Path(text)
    if text.endswith(".toml") or os.sep in text or path.is_file():
        if not path.is_file():
            raise SpecError(f"spec file {path} does not exist", "check the path to the .toml spec")
    else:
        path = fixtures_dir() / f"{text}.toml"
        if not path.is_file():
            known = ", ".join(list_profiles()) or "(none found)"
            raise SpecError(
                f"unknown profile {text!r}",
                f"known profiles: {known}; or pass a path to a .toml spec file (add a profile by adding "
                f"{fixtures_dir()}/NAME.toml)",
            )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise SpecError(
            f"cannot read spec file {path}: {error}", "check the file exists and is UTF-8"
        ) from error
    except tomllib.TOMLDecodeError as error:
        raise SpecError(f"spec file {path} is not valid TOML: {error}", "fix the TOML syntax") from error
    data.setdefault("name", path.stem)
    return spec_from_dict(data, source=str(path))


def spec_from_dict(data: dict[str, Any], *, source: str = "spec") -> ModelSpec:
    """Build a spec from plain data (a parsed TOML table), naming unknown keys and bad values."""
    unknown = sorted(set(data) - _SPEC_FIELDS)
    if unknown:
        raise SpecError(
            f"{source}: unknown key(s) {', '.join(unknown)}",
            f"known keys: {', '.join(sorted(_SPEC_FIELDS))}",
        )
    values = dict(data)
    oracle = values.get("oracle")
    if oracle is not None:
        if not isinstance(oracle, dict):
            raise SpecError(
                f"{source}: [oracle] must be a table", "write an [oracle] section with prompt, continuation"
            )
        bad = sorted(set(oracle) - _ORACLE_FIELDS)
        if bad:
            raise SpecError(
                f"{source}: unknown key(s) in [oracle]: {', '.join(bad)}",
                f"known keys: {', '.join(sorted(_ORACLE_FIELDS))}",
            )
        values["oracle"] = OracleSpec(**oracle)
    for key, example in (("words", '["hello", "world"]'), ("pieces", '["<tool_call>", "}}"]')):
        if key in values:
            if not isinstance(values[key], list):
                raise SpecError(f"{source}: {key} must be a list of strings", f"e.g. {key} = {example}")
            values[key] = tuple(values[key])
    for key in ("rope_freq_base", "norm_eps"):
        if isinstance(values.get(key), int):
            values[key] = float(values[key])
    try:
        return ModelSpec(**values)
    except TypeError as error:
        raise SpecError(
            f"{source}: {error}",
            "every profile needs n_embd, n_layer, n_head, n_head_kv, n_ff, context_length",
        ) from error
