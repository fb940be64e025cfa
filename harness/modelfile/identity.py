"""A model's identity across servers: what the user gave, not what a server computed.

Ollama writes its own manifest and config layers, so the digest `/api/tags` lists changes with the server
(its version, or the embedded engine) even for byte-identical inputs. Runs are matched instead on the GGUF
blob's sha256, the fixture profile and tensor type (or a create's `quantize`), and the Modelfile's
parameters and template digest: the same inputs on any server give the same identity.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from harness.errors import ModelfileError
from harness.modelfile.parse import parse_modelfile

# The blob file name of a FROM in the Modelfile a server shows (`.../blobs/sha256-<hex>`).
BLOB_SHA256 = re.compile(r"sha256[-:]([0-9a-f]{64})$")
IDENTITY_FIELDS = ("gguf_sha256", "profile", "tensor_type", "quantize", "parameters", "template_sha256")


def text_sha256(text: str | None) -> str | None:
    """Hex sha256 of a text (a TEMPLATE), or None when there is none."""
    return hashlib.sha256(text.encode()).hexdigest() if text is not None else None


def model_identity(
    *,
    gguf_sha256: str | None,
    profile: str | None = None,
    tensor_type: str | None = None,
    quantize: str | None = None,
    modelfile: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    template: str | None = None,
) -> dict[str, Any]:
    """The identity fields of a model: its GGUF's sha256, profile, tensor type, `quantize`, and the
    parameters and template digest of its Modelfile (given as text, or as `parameters` and `template`
    when a server showed them). A Modelfile without TEMPLATE leaves the template to the GGUF (None)."""
    if modelfile is not None:
        try:
            parsed = parse_modelfile(modelfile)
        except ModelfileError:
            parsed = None
        if parsed is not None:
            parameters, template = parsed.parameters, parsed.template
    return {
        "gguf_sha256": gguf_sha256,
        "profile": profile,
        "tensor_type": tensor_type,
        "quantize": quantize,
        "parameters": dict(sorted((parameters or {}).items())),
        "template_sha256": text_sha256(template),
    }


def identity_digest(identity: Mapping[str, Any]) -> str:
    """A short digest of the identity fields (16 hex), the same for the same inputs on any server."""
    fields = {name: identity.get(name) for name in IDENTITY_FIELDS}
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]


def identity_from_shown(modelfile: str | None) -> dict[str, Any]:
    """The identity of a model already on a server (`--model`), from the Modelfile `/api/show` gives: its
    FROM names the GGUF blob (`.../blobs/sha256-<hex>`), and it has the parameters and template.

    A pulled model has the registry's blob on every server. A model created from a local file need not:
    Ollama 0.33 writes the imported GGUF anew at create (its quantize step, even without a type), so the
    blob differs from 0.24's for the same file; such models are matched by `--gguf`, which hashes the file.
    """
    gguf_sha256 = None
    if modelfile:
        try:
            source = parse_modelfile(modelfile).from_
        except ModelfileError:
            source = ""
        found = BLOB_SHA256.search(source.strip())
        gguf_sha256 = found.group(1) if found else None
    return model_identity(gguf_sha256=gguf_sha256, modelfile=modelfile)
