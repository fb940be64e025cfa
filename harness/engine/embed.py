"""Ollama's embedding endpoints for the embedded engine: `/api/embed` and the legacy `/api/embeddings`.

As Ollama's `server/routes.go` (`EmbedHandler`, `EmbeddingsHandler`, `normalize`) and the llama-server runner
(`llm/llama_server.go`: `Embedding`, `normalizeEmbeddingError`, `legacyEmbeddingsWereRaw`) do it:

- `/api/embed` `{model, input (a string or a list of strings), truncate (default true), dimensions, options,
  keep_alive}` -> `{model, embeddings, total_duration, load_duration, prompt_eval_count}`. Each input is
  embedded by the runner, then L2-normalized here in float32; with `0 < dimensions < length` the vector is
  cut to `dimensions` and normalized again (other values of `dimensions` are ignored, as in Ollama).
  An empty input (`""`, `[]`, absent) still loads the model and answers `{"model", "embeddings": []}`.
  An input that is not a string or a list of strings is a 400 `invalid input type` (before the model is
  looked up). An input over the context: with truncate false a 400 `the input length exceeds the context
  length`; else its tokens are cut to the context (less one for BOS and one for EOS, as Ollama counts
  them) and embedded again, with the BOS/EOS the model adds.
- `/api/embeddings` `{model, prompt, options, keep_alive}` -> `{"embedding": [float64...]}`: the runner's
  vector as it comes (llama-server L2-normalizes it, except for the GGUFs whose Ollama embeddings were raw),
  no truncation, errors 500. An empty prompt loads the model and answers `{"embedding": []}`.

Field types are checked as Go decodes the request (`json: cannot unmarshal ...`, 400).

Differences from Ollama: a truncated input is embedded as its first tokens (BOS, the tokens, EOS as the model
adds them); Ollama detokenizes them and embeds the text, whose tokens can differ (with a SentencePiece vocab
the text gains a leading space, one token more, and then still exceeds the context). Inputs are embedded one
after the other (Ollama runs them concurrently; the vectors are the same). A runner that dies mid-request is
a 500 with the engine's usual runner-death text (Ollama: 400 `do embedding request: ...`).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from starlette.responses import JSONResponse, Response

from harness.engine.godecode import ANY, BOOL, INT, STRING, GoDecodeError, GoField, check_field_types
from harness.engine.routing import ApiError
from harness.engine.runner import RunnerDiedError, RunnerProcess, RunnerRequestError
from harness.gguf.reader import read_gguf_header

if TYPE_CHECKING:
    from harness.engine.scheduler import LoadedModel
    from harness.engine.service import ModelService

OPTIONS = GoField("map[string]interface {}")
EMBED_REQUEST_FIELDS: Mapping[str, GoField] = {
    "model": STRING,
    "input": ANY,
    "keep_alive": ANY,
    "truncate": BOOL,
    "dimensions": INT,
    "options": OPTIONS,
}
EMBEDDING_REQUEST_FIELDS: Mapping[str, GoField] = {
    "model": STRING,
    "prompt": STRING,
    "keep_alive": ANY,
    "options": OPTIONS,
}
CONTEXT_EXCEEDED = "the input length exceeds the context length"
# llama-server's texts for an input over the context or the batch (Ollama's `isEmbeddingInputLimitError`).
_LIMIT_MARKERS = (
    "too large",
    "context size",
    "context length",
    "physical batch size",
    "exceeds the available context",
)


class EmbeddingError(ValueError):
    """An embedding that cannot be answered (Ollama answers 400 with this text)."""


# --- request ------------------------------------------------------------------------------------------


def check_types(body: Mapping[str, Any], fields: Mapping[str, GoField], struct: str) -> None:
    """Raise a 400 ApiError with Go's unmarshal text for a field of the wrong JSON type."""
    try:
        check_field_types(body, fields, struct)
    except GoDecodeError as error:
        raise ApiError(400, str(error)) from None


def embed_inputs(value: Any) -> list[str]:
    """The texts of an EmbedRequest `input`: a non-empty string, or each string of a list; `invalid input
    type` (400) for anything else (None and "" are no input)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    raise ApiError(400, "invalid input type")


# --- vector maths -------------------------------------------------------------------------------------


def normalize(vector: Sequence[float] | np.ndarray) -> np.ndarray:
    """The vector scaled to L2 norm 1 in float32 arithmetic, as Ollama's `normalize` (a zero vector stays
    zero); NaN or Inf values raise EmbeddingError."""
    values = np.asarray(vector, dtype=np.float32)
    if not np.all(np.isfinite(values)):
        raise EmbeddingError("embedding contains NaN or Inf values")
    # Ollama sums the squares in float32, in order: cumsum adds sequentially (sum would add pairwise).
    total = np.cumsum(values * values, dtype=np.float32)[-1] if len(values) else np.float32(0)
    scale = np.float32(1.0 / max(float(np.sqrt(np.float64(total))), 1e-12))
    return values * scale


def reduce_dimensions(vector: np.ndarray, dimensions: int) -> np.ndarray:
    """The first `dimensions` values normalized again when `0 < dimensions < len(vector)`, else the vector."""
    if 0 < dimensions < len(vector):
        return normalize(vector[:dimensions])
    return vector


def float32_json(vector: np.ndarray) -> list[float]:
    """The values as JSON numbers with the shortest text that reads back as the same float32 (as Go encodes
    a []float32)."""
    return [float(str(value)) for value in vector.astype(np.float32)]


def runner_error(error: RunnerRequestError) -> ApiError:
    """A runner refusal as Ollama passes it on: an input over the context or batch becomes 400
    `the input length exceeds the context length`, others keep llama-server's status and text."""
    message = str(error).strip()
    if any(marker in message.lower() for marker in _LIMIT_MARKERS):
        return ApiError(400, CONTEXT_EXCEEDED)
    return ApiError(error.status, message)


# --- what the GGUF says ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class EmbeddingFacts:
    """The GGUF metadata Ollama consults for embeddings."""

    bos_token_id: int
    eos_token_id: int
    adds_bos: bool
    adds_eos: bool
    raw_legacy: bool  # /api/embeddings returned the runner's raw vector for this GGUF

    def truncation_limit(self, tokens: Sequence[int], num_ctx: int) -> int:
        """How many of `tokens` (no BOS/EOS) fit in `num_ctx`: one less for a BOS and one less for an EOS
        the runner will add. Ollama reads the flags as `<arch>.add_bos_token` / `<arch>.add_eos_token`,
        keys no GGUF has, so both default to true."""
        limit = num_ctx
        if tokens and tokens[0] != self.bos_token_id and self.adds_bos:
            limit -= 1
        if tokens and tokens[-1] != self.eos_token_id and self.adds_eos:
            limit -= 1
        return limit


def _bool(value: object, default: bool) -> bool:
    return value if isinstance(value, bool) else default


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def raw_legacy_embeddings(metadata: Mapping[str, object]) -> bool:
    """Ollama's `legacyEmbeddingsWereRaw`: only GGUFs with a pooling type whose old runner did not normalize
    (BERT with a non-BERT tokenizer or `normalize_embeddings` false, nomic-bert unless it normalizes)."""
    architecture = metadata.get("general.architecture")
    if not isinstance(architecture, str) or f"{architecture}.pooling_type" not in metadata:
        return False
    normalize_key = f"{architecture}.normalize_embeddings"
    if architecture == "bert":
        tokenizer = metadata.get("tokenizer.ggml.model")
        if isinstance(tokenizer, str) and tokenizer != "bert":
            return True
        return not _bool(metadata.get(normalize_key), True)
    if architecture in ("nomic-bert", "nomic-bert-moe"):
        return not _bool(metadata.get(normalize_key), False)
    return False


@functools.lru_cache(maxsize=32)
def embedding_facts(model_path: Path) -> EmbeddingFacts:
    """The facts of a model blob (blobs are content-addressed, so they are read once)."""

    header = read_gguf_header(model_path)
    metadata = {key: entry.value for key, entry in header.kvs.items()}
    architecture = metadata.get("general.architecture")
    return EmbeddingFacts(
        bos_token_id=_int(metadata.get("tokenizer.ggml.bos_token_id")),
        eos_token_id=_int(metadata.get("tokenizer.ggml.eos_token_id")),
        adds_bos=_bool(metadata.get(f"{architecture}.add_bos_token"), True),
        adds_eos=_bool(metadata.get(f"{architecture}.add_eos_token"), True),
        raw_legacy=raw_legacy_embeddings(metadata),
    )


# --- embedding on a loaded model ------------------------------------------------------------------------


async def _embed_text(
    runner: RunnerProcess, text: str, facts: EmbeddingFacts, num_ctx: int, truncate: bool
) -> tuple[list[float], int]:
    """One input's runner vector and token count; over the context it is truncated (`truncate`) or a 400."""
    try:
        return await runner.embedding(text, normalize=not facts.raw_legacy)
    except RunnerRequestError as error:
        refusal = runner_error(error)
        if refusal.status != 400 or not truncate:
            raise refusal from None
    tokens = await runner.tokenize(text)
    limit = facts.truncation_limit(tokens, num_ctx)
    if len(tokens) <= limit:
        raise EmbeddingError("input exceeds maximum context length and cannot be truncated further")
    if limit <= 0:
        raise EmbeddingError("input after truncation exceeds maximum context length")
    with_special = await runner.tokenize(text, add_special=True)
    bos = [facts.bos_token_id] if with_special[:1] == [facts.bos_token_id] != tokens[:1] else []
    eos = [facts.eos_token_id] if with_special[-1:] == [facts.eos_token_id] != tokens[-1:] else []
    try:
        return await runner.embedding(bos + tokens[:limit] + eos, normalize=not facts.raw_legacy)
    except RunnerRequestError as error:
        raise runner_error(error) from None


class Embeddings:
    """The two endpoints, on the engine's model lookup, scheduler and errors."""

    def __init__(self, engine: ModelService) -> None:
        self.engine = engine

    async def _release(self, model: LoadedModel, failed: bool) -> None:
        if failed:
            model.broken = True
        await self.engine.release(model)

    async def embed(self, body: dict[str, Any]) -> Response:
        """POST /api/embed."""
        started = time.monotonic_ns()
        check_types(body, EMBED_REQUEST_FIELDS, "EmbedRequest")
        inputs = embed_inputs(body.get("input"))
        manifest = self.engine.find_model(str(body.get("model") or ""))
        model = await self.engine.acquire_for(manifest, body, embedding=True)
        loaded = time.monotonic_ns()
        failed = False
        try:
            if not inputs:
                return JSONResponse({"model": body["model"], "embeddings": []})
            facts = embedding_facts(model.request.model_path)
            num_ctx = model.request.load_options.num_ctx
            truncate = body.get("truncate") is not False
            dimensions = int(body.get("dimensions") or 0)
            embeddings: list[list[float]] = []
            tokens = 0
            for text in inputs:
                vector, count = await _embed_text(model.runner, text, facts, num_ctx, truncate)
                embeddings.append(float32_json(reduce_dimensions(normalize(vector), dimensions)))
                tokens += count
        except EmbeddingError as error:
            raise ApiError(400, str(error)) from None
        except RunnerDiedError as error:
            failed = True
            raise ApiError(500, str(error)) from None
        except RunnerRequestError as error:
            raise ApiError(error.status, str(error)) from None
        finally:
            await self._release(model, failed)
        answer: dict[str, Any] = {"model": body["model"], "embeddings": embeddings}
        answer["total_duration"] = time.monotonic_ns() - started
        answer["load_duration"] = loaded - started
        if tokens:
            answer["prompt_eval_count"] = tokens
        return JSONResponse(answer)

    async def embeddings(self, body: dict[str, Any]) -> Response:
        """POST /api/embeddings (legacy)."""
        check_types(body, EMBEDDING_REQUEST_FIELDS, "EmbeddingRequest")
        manifest = self.engine.find_model(str(body.get("model") or ""))
        model = await self.engine.acquire_for(manifest, body, embedding=True)
        failed = False
        try:
            if not body.get("prompt"):
                return JSONResponse({"embedding": []})
            facts = embedding_facts(model.request.model_path)
            vector, _ = await model.runner.embedding(body["prompt"], normalize=not facts.raw_legacy)
        except RunnerDiedError as error:
            failed = True
            raise ApiError(500, str(error)) from None
        except RunnerRequestError as error:
            raise ApiError(500, runner_error(error).message) from None
        finally:
            await self._release(model, failed)
        return JSONResponse({"embedding": [float(np.float32(value)) for value in vector]})
