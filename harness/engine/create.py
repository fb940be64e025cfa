"""`/api/create`: validate the request, the GGUF (decoder bounds, checker, trial load) and the template,
quantize the model layer when asked (`quantize`: F32, F16 or Q8_0, harness.gguf.quantize), then write the
layers and the manifest. Yields Ollama's progress statuses; raises ApiError."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
from collections.abc import AsyncGenerator, Mapping
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from harness.engine.ggufinfo import GGUFFormatError, GGUFInfo, human_parameter_size, is_gguf, read_gguf_info
from harness.engine.names import InvalidNameError, ModelName
from harness.engine.routing import ApiError
from harness.engine.store import (
    CONFIG_MEDIA_TYPE,
    MEDIA_LICENSE,
    MEDIA_MESSAGES,
    MEDIA_MODEL,
    MEDIA_PARAMS,
    MEDIA_SYSTEM,
    MEDIA_TEMPLATE,
    InvalidDigestError,
    Layer,
    Store,
    normalize_digest,
)
from harness.errors import HarnessError
from harness.gguf.check import check_gguf
from harness.gguf.findings import loads_but_wrong
from harness.gguf.llamacpp import trial_load
from harness.gguf.reader import read_gguf_header
from harness.modelfile.gotemplate import parse_template

if TYPE_CHECKING:
    from harness.gguf.quantize import Quantization


def _valid_relative_path(name: str) -> bool:
    """Go's io/fs.ValidPath: relative, slash-separated, no empty, `.` or `..` elements."""
    if name == ".":
        return True
    if not name or name.startswith("/") or "\\" in name:
        return False
    return all(part not in ("", ".", "..") for part in name.split("/"))


def model_details(config: Mapping[str, Any]) -> dict[str, Any]:
    """The `details` object of tags/show/ps, from a model's config blob."""
    family = config.get("model_family", "")
    return {
        "parent_model": "",
        "format": config.get("model_format", "gguf"),
        "family": family,
        "families": config.get("model_families") or ([family] if family else None),
        "parameter_size": config.get("model_type", ""),
        "quantization_level": config.get("file_type", ""),
    }


class ModelCreator:
    """Runs one create request against the store; the GGUF validation results are cached per blob digest."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._validated: set[str] = set()

    def check_request(self, body: Mapping[str, Any]) -> ModelName:
        """Checks that answer with a real status code even on a streaming create."""
        files = body.get("files") or {}
        if not isinstance(files, dict):
            raise ApiError(400, "files must be an object mapping file names to digests")
        for file_name, digest in files.items():
            if not _valid_relative_path(str(file_name)):
                raise ApiError(400, "file path must be relative")
            if not digest:
                raise ApiError(400, "invalid digest format")
        try:
            name = ModelName.parse(body.get("model") or body.get("name") or "")
        except InvalidNameError:
            raise ApiError(400, "invalid model name") from None
        if body.get("adapters"):
            raise ApiError(400, "adapters are not supported by this engine")
        if not body.get("from") and not files:
            raise ApiError(400, "neither 'from' or 'files' was specified")
        if body.get("from"):
            try:
                ModelName.parse(body["from"])
            except InvalidNameError:
                if not files:
                    raise ApiError(400, "invalid model name") from None
        for digest in files.values():
            try:
                normalize_digest(str(digest))
            except InvalidDigestError:
                raise ApiError(400, "invalid digest format") from None
        template = body.get("template")
        if template:
            try:
                parse_template(template)
            except ValueError as error:
                raise ApiError(400, f"template error: {error}") from None
        if len(files) > 1:
            raise ApiError(400, "only one GGUF file is supported by this engine")
        for file_name, digest in files.items():
            path = self.store.blob_path(digest)
            if not path.is_file():
                raise ApiError(400, f"open {path}: no such file or directory")
            if PurePosixPath(file_name).suffix == ".safetensors":
                raise ApiError(400, "safetensors models are not supported by this engine")
            if not is_gguf(path):
                raise ApiError(
                    400,
                    "supplied file was not in GGUF format" if file_name.endswith(".gguf") else "unknown type",
                )
        return name

    async def create(self, name: ModelName, body: Mapping[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        """Progress statuses, ending with `success`; raises ApiError."""
        layers: list[Layer] = []
        config: dict[str, Any] = {}
        inherited: dict[str, Any] = {}
        files = body.get("files") or {}
        if files:
            digest = normalize_digest(str(next(iter(files.values()))))
            yield {"status": "parsing GGUF"}
            info = await self._validate_gguf(digest)
            yield {"status": "validating GGUF model", "digest": digest}
            model_path = self.store.blob_path(digest)
            layers.append(Layer(MEDIA_MODEL, digest, model_path.stat().st_size))
            config = self._config_for(info)
            yield {"status": f"using existing layer {digest}"}
        else:
            source = self.store.load(ModelName.parse(body["from"]))
            if source is None:
                raise ApiError(404, f"model '{body['from']}' not found")
            config = json.loads(self.store.read_blob_text(source.config.digest))
            for layer in source.layers:
                if layer.media_type == MEDIA_PARAMS:
                    inherited = json.loads(self.store.read_blob_text(layer.digest))
                else:
                    layers.append(layer)
            for layer in layers:
                yield {"status": f"using existing layer {layer.digest}"}
        requested = str(body.get("quantize") or body.get("quantization") or "")
        model_layer = next((layer for layer in layers if layer.media_type == MEDIA_MODEL), None)
        if requested and model_layer is not None:
            quantization = self._quantization(model_layer.digest, requested)
            if quantization.target is not None:
                yield {"status": f"quantizing {quantization.source_type} model to {requested.upper()}"}
                digest = await asyncio.to_thread(self._write_quantized, model_layer.digest, requested)
                info = await self._validate_gguf(digest)
                layers[layers.index(model_layer)] = Layer(
                    MEDIA_MODEL, digest, self.store.blob_path(digest).stat().st_size
                )
                config = {**config, **self._config_for(info)}
                yield {"status": f"creating new layer {digest}"}
        for media_type, value in (
            (MEDIA_TEMPLATE, body.get("template")),
            (MEDIA_SYSTEM, body.get("system")),
        ):
            if value:
                layers = [layer for layer in layers if layer.media_type != media_type]
                layers.append(self._new_layer(value.encode(), media_type))
                yield {"status": f"creating new layer {layers[-1].digest}"}
        if body.get("messages"):
            layers = [layer for layer in layers if layer.media_type != MEDIA_MESSAGES]
            layers.append(self._new_layer(json.dumps(body["messages"]).encode(), MEDIA_MESSAGES))
        license_value = body.get("license")
        if license_value:
            layers = [layer for layer in layers if layer.media_type != MEDIA_LICENSE]
            for text in [license_value] if isinstance(license_value, str) else list(license_value):
                layers.append(self._new_layer(str(text).encode(), MEDIA_LICENSE))
        parameters = {**inherited, **(body.get("parameters") or {})}
        if parameters:
            layers.append(self._new_layer(json.dumps(parameters).encode(), MEDIA_PARAMS))
        config_layer = self.store.put_bytes(json.dumps(config).encode(), CONFIG_MEDIA_TYPE)
        yield {"status": "writing manifest"}
        self.store.save(name, config_layer, layers)
        yield {"status": "success"}

    def _quantization(self, digest: str, requested: str) -> Quantization:
        """What quantizing the model blob to `requested` means; Ollama's errors as 500s (they come from its
        createModel, after the request was accepted)."""
        from harness.gguf.quantize import (
            plan_quantization,  # numpy and ggml through ctypes: only a create that quantizes pays for them
        )

        try:
            return plan_quantization(read_gguf_header(self.store.blob_path(digest)), requested)
        except HarnessError as error:
            raise ApiError(500, error.message) from None

    def _write_quantized(self, digest: str, requested: str) -> str:
        """Write the quantized copy of a model blob into the store; returns its digest."""
        from harness.gguf.quantize import (
            quantize_gguf,  # numpy and ggml through ctypes: only a create that quantizes pays for them
        )

        fd, temp_name = tempfile.mkstemp(dir=self.store.blobs, prefix=".quantize-", suffix=".gguf")
        os.close(fd)
        try:
            written = quantize_gguf(self.store.blob_path(digest), temp_name, requested)
            new_digest = f"sha256:{written.sha256}"
            os.replace(written.path, self.store.blob_path(new_digest))
        except HarnessError as error:
            raise ApiError(500, f"quantization failed: {error.message}") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp_name)
        return new_digest

    def _new_layer(self, data: bytes, media_type: str) -> Layer:
        return self.store.put_bytes(data, media_type)

    async def _validate_gguf(self, digest: str) -> GGUFInfo:
        path = self.store.blob_path(digest)
        try:
            info = read_gguf_info(path)
        except GGUFFormatError as error:
            raise ApiError(500, str(error)) from None
        if digest not in self._validated:
            cause = await asyncio.to_thread(_validation_failure, path)
            if cause:
                raise ApiError(500, f"failed to validate GGUF: {cause}")
            self._validated.add(digest)
        return info

    @staticmethod
    def _config_for(info: GGUFInfo) -> dict[str, Any]:
        return {
            "model_format": "gguf",
            "model_family": info.architecture,
            "model_families": [info.architecture],
            "model_type": human_parameter_size(info.parameter_count),
            "file_type": info.file_type,
            "architecture": "amd64",
            "os": "linux",
            "context_length": info.context_length,
            "parameter_count": info.parameter_count,
        }


# Files up to this size also get the checker's deep scan (NaN/Inf weights) at create, as Ollama's
# llama-quantize validation reads every tensor; bigger ones would make create take minutes in numpy.
DEEP_CHECK_MAX_BYTES = 2 << 30


def _validation_failure(path: Path) -> str | None:
    """The GGUF checker's error findings that llama.cpp refuses too, else llama.cpp's cause from a trial
    load (in a subprocess), else None: the file is valid. Errors llama.cpp loads anyway (an out-of-range
    special token id, a chat template that fails one conversation...: check.LOADS_BUT_WRONG) do not stop a
    create, as they do not stop Ollama's."""

    report = check_gguf(path, deep=path.stat().st_size <= DEEP_CHECK_MAX_BYTES)
    refused = [finding for finding in report.errors if not loads_but_wrong(finding)]
    if refused:
        return "; ".join(finding.message for finding in refused)
    result = trial_load(path, n_ctx=256, timeout=120.0)
    if not result.ok:
        return result.cause or f"llama.cpp could not load the file (exit status {result.returncode})"
    return None
