"""Blobs by sha256 and manifests on disk, laid out like `OLLAMA_MODELS`.

`blobs/sha256-<hex>` holds content; `manifests/<host>/<namespace>/<model>/<tag>` holds a Docker-style
manifest (schemaVersion 2) naming a config blob and layers by media type. Every path is built from a validated
digest or a validated `ModelName`, so nothing a client sends can point outside the models folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness.engine.names import InvalidNameError, ModelName

DIGEST_PATTERN = re.compile(r"^sha256[:-]([0-9a-fA-F]{64})$")
MANIFEST_MEDIA_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_MEDIA_TYPE = "application/vnd.docker.container.image.v1+json"
MEDIA_MODEL = "application/vnd.ollama.image.model"
MEDIA_TEMPLATE = "application/vnd.ollama.image.template"
MEDIA_SYSTEM = "application/vnd.ollama.image.system"
MEDIA_PARAMS = "application/vnd.ollama.image.params"
MEDIA_MESSAGES = "application/vnd.ollama.image.messages"
MEDIA_LICENSE = "application/vnd.ollama.image.license"


class InvalidDigestError(ValueError):
    """Not `sha256:<64 hex>` (400 `invalid digest format`)."""


class DigestMismatchError(ValueError):
    """Uploaded bytes do not hash to the digest in the URL."""


def normalize_digest(digest: str) -> str:
    """`sha256:<hex lowercase>`; raises InvalidDigestError."""
    match = DIGEST_PATTERN.match(digest or "")
    if not match:
        raise InvalidDigestError("invalid digest format")
    return f"sha256:{match.group(1).lower()}"


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


@dataclass
class Layer:
    media_type: str
    digest: str
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass
class Manifest:
    """A stored model: its name (as stored), config, layers, and the manifest file's digest and mtime."""

    name: ModelName
    config: Layer
    layers: list[Layer]
    digest: str
    modified_at: datetime
    size: int

    def layer(self, media_type: str) -> Layer | None:
        return next((layer for layer in self.layers if layer.media_type == media_type), None)


class Store:
    """The models folder."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.blobs = self.root / "blobs"
        self.manifests = self.root / "manifests"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.manifests.mkdir(parents=True, exist_ok=True)

    # --- blobs ---
    def blob_path(self, digest: str) -> Path:
        return self.blobs / normalize_digest(digest).replace(":", "-")

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    async def write_blob(self, digest: str, chunks: AsyncIterator[bytes]) -> None:
        """Store streamed bytes under their digest; DigestMismatchError (keeping nothing) on mismatch."""
        target = self.blob_path(digest)
        expected = normalize_digest(digest)
        hasher = hashlib.sha256()
        fd, temp = tempfile.mkstemp(dir=self.blobs, prefix=".partial-")
        try:
            with os.fdopen(fd, "wb") as handle:
                async for chunk in chunks:
                    hasher.update(chunk)
                    handle.write(chunk)
            got = f"sha256:{hasher.hexdigest()}"
            if got != expected:
                raise DigestMismatchError(f'digest mismatch, expected "{expected}", got "{got}"')
            os.replace(temp, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)

    def put_bytes(self, data: bytes, media_type: str) -> Layer:
        """Store small content (template, params, config) and return its layer."""
        digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
        path = self.blob_path(digest)
        if not path.exists():
            _atomic_write(path, data)
        return Layer(media_type, digest, len(data))

    def read_blob_text(self, digest: str) -> str:
        return self.blob_path(digest).read_text(encoding="utf-8")

    # --- manifests ---
    def _manifest_path(self, name: ModelName) -> Path:
        return self.manifests.joinpath(*name.manifest_parts())

    def _all_manifest_paths(self) -> list[Path]:
        return [p for p in self.manifests.glob("*/*/*/*") if p.is_file() and not p.name.startswith(".tmp-")]

    def resolve(self, name: ModelName) -> ModelName | None:
        """The stored spelling of `name` (lookup is case-insensitive), or None."""
        exact = self._manifest_path(name)
        if exact.is_file():
            return name
        for path in self._all_manifest_paths():
            stored = self._name_from_path(path)
            if stored is not None and stored.key() == name.key():
                return stored
        return None

    def _name_from_path(self, path: Path) -> ModelName | None:
        host, namespace, model, tag = path.relative_to(self.manifests).parts
        try:
            name = ModelName(host, namespace, model, tag)
            name.validate()
        except InvalidNameError:
            return None
        return name

    def load(self, name: ModelName) -> Manifest | None:
        stored = self.resolve(name)
        if stored is None:
            return None
        path = self._manifest_path(stored)
        raw = path.read_bytes()
        data = json.loads(raw)
        layers = [Layer(entry["mediaType"], entry["digest"], int(entry["size"])) for entry in data["layers"]]
        config = Layer(data["config"]["mediaType"], data["config"]["digest"], int(data["config"]["size"]))
        return Manifest(
            name=stored,
            config=config,
            layers=layers,
            digest=f"sha256:{hashlib.sha256(raw).hexdigest()}",
            modified_at=datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc),
            size=config.size + sum(layer.size for layer in layers),
        )

    def save(self, name: ModelName, config: Layer, layers: list[Layer]) -> None:
        """Write (or replace) the manifest of `name`, keeping the stored spelling of an existing name."""
        stored = self.resolve(name)
        if stored is not None and stored != name:
            self._manifest_path(stored).unlink()
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": config.to_json(),
            "layers": [layer.to_json() for layer in layers],
        }
        _atomic_write(self._manifest_path(name), json.dumps(manifest).encode())

    def delete(self, name: ModelName) -> bool:
        stored = self.resolve(name)
        if stored is None:
            return False
        path = self._manifest_path(stored)
        path.unlink()
        for parent in list(path.parents)[:3]:
            with contextlib.suppress(OSError):
                parent.rmdir()
        return True

    def copy(self, source: ModelName, destination: ModelName) -> bool:
        stored = self.resolve(source)
        if stored is None:
            return False
        data = self._manifest_path(stored).read_bytes()
        existing = self.resolve(destination)
        if existing is not None and existing != destination:
            self._manifest_path(existing).unlink()
        _atomic_write(self._manifest_path(destination), data)
        return True

    def list(self) -> list[Manifest]:
        manifests = []
        for path in self._all_manifest_paths():
            name = self._name_from_path(path)
            manifest = self.load(name) if name is not None else None
            if manifest is not None:
                manifests.append(manifest)
        return sorted(manifests, key=lambda m: m.modified_at, reverse=True)
