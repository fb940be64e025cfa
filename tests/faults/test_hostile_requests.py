"""Scenario: hostile requests to the engine.

Model names with path separators or `..`, `files` keys that escape the models folder, digests that do not
match the uploaded bytes (or are not digests at all), oversized bodies, malformed JSON and unknown fields:
each gets Ollama's status code and a clear `{"error": ...}`, and nothing is written outside the models
folder (the parent folder is snapshotted before and after) nor left half-written inside it.
Reproduce: `.venv/bin/pytest tests/faults/test_hostile_requests.py -q`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.engine import EmbeddedEngine
from harness.gguf.build import BuiltModel

from .conftest import GEN, start_engine, tree_snapshot

pytestmark = pytest.mark.timeout(120)

BAD_NAMES = [
    "../evil",
    "bad/../name",
    "../../../../tmp/evil",
    "a/b/c/d",
    "..",
    "./x",
    "x/..",
    "/abs",
    "evil\\..\\x",
    "x:../y",
    "x:..",
    "%2e%2e/x",
    "a\x00b",
]
ESCAPING_FILE_KEYS = ["../../x.gguf", "/etc/x.gguf", "a/../../x.gguf", "..\\x.gguf", "a//b.gguf", "..", ""]
OTHER_DIGEST = "sha256:" + "0" * 64


@pytest.fixture(scope="module")
def jail(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The parent folder of the engine's models folder: nothing may appear or change here."""
    return tmp_path_factory.mktemp("jail")


@pytest.fixture(scope="module")
def hostile_engine(jail: Path, tiny_gguf: BuiltModel) -> Iterator[EmbeddedEngine]:
    engine = start_engine(jail / "models")
    try:
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="module")
def http(hostile_engine: EmbeddedEngine) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=hostile_engine.url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def tiny_digest(http: httpx.Client, tiny_gguf: BuiltModel) -> str:
    digest = f"sha256:{tiny_gguf.sha256}"
    assert http.post(f"/api/blobs/{digest}", content=tiny_gguf.path.read_bytes()).status_code in (200, 201)
    created = http.post("/api/create", json={"model": "tiny", "files": {"m.gguf": digest}, "stream": False})
    assert created.status_code == 200, created.text
    return digest


@pytest.fixture(autouse=True)
def nothing_escapes(jail: Path, hostile_engine: EmbeddedEngine) -> Iterator[None]:
    """Outside the models folder nothing changes; inside it, no partial blob and no manifest outside
    manifests/<host>/<namespace>/<model>/<tag>."""
    outside_before = {k: v for k, v in tree_snapshot(jail).items() if not k.startswith("models")}
    yield
    outside_after = {k: v for k, v in tree_snapshot(jail).items() if not k.startswith("models")}
    assert outside_after == outside_before
    models = jail / "models"
    assert not [p.name for p in (models / "blobs").iterdir() if not p.name.startswith("sha256-")]
    for manifest in (models / "manifests").rglob("*"):
        if manifest.is_file():
            assert len(manifest.relative_to(models / "manifests").parts) == 4, manifest


def error_of(response: httpx.Response) -> str:
    body: Any = response.json()
    assert set(body) == {"error"} and body["error"], body
    return str(body["error"])


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_model_names_are_400_everywhere(http: httpx.Client, tiny_digest: str, name: str) -> None:
    requests: list[tuple[str, str, dict[str, Any], str | None]] = [
        ("POST", "/api/create", {"model": name, "files": {"m.gguf": tiny_digest}}, "invalid model name"),
        ("POST", "/api/create", {"model": "ok", "from": name}, "invalid model name"),
        ("POST", "/api/generate", {"model": name, "prompt": "x"}, "invalid model name"),
        ("POST", "/api/chat", {"model": name, "messages": []}, "invalid model name"),
        ("POST", "/api/show", {"model": name}, "invalid model name"),
        ("DELETE", "/api/delete", {"model": name}, f'name "{name}" is invalid'),
        ("POST", "/api/copy", {"source": "tiny", "destination": name}, f'destination "{name}" is invalid'),
    ]
    for method, path, body, message in requests:
        response = http.request(method, path, json=body)
        assert response.status_code == 400, (path, body, response.text)
        assert error_of(response) == message, (path, body)


@pytest.mark.parametrize("key", ESCAPING_FILE_KEYS)
def test_file_keys_that_escape_are_400(http: httpx.Client, tiny_digest: str, key: str) -> None:
    response = http.post("/api/create", json={"model": "escape", "files": {key: tiny_digest}})
    assert response.status_code == 400
    assert error_of(response) == "file path must be relative"
    assert http.post("/api/show", json={"model": "escape"}).status_code == 404


def test_blob_digest_mismatch_is_400_and_keeps_nothing(http: httpx.Client, jail: Path) -> None:
    blobs_before = sorted(p.name for p in (jail / "models" / "blobs").iterdir())
    response = http.post(f"/api/blobs/{OTHER_DIGEST}", content=b"not the bytes of that digest")
    assert response.status_code == 400
    assert error_of(response).startswith(f'digest mismatch, expected "{OTHER_DIGEST}", got "sha256:')
    assert http.head(f"/api/blobs/{OTHER_DIGEST}").status_code == 404
    assert sorted(p.name for p in (jail / "models" / "blobs").iterdir()) == blobs_before


@pytest.mark.parametrize(
    "digest", ["sha256:xyz", "sha256:" + "0" * 63, "md5:" + "0" * 32, "sha256:..", "sha256-" + "0" * 64 + "x"]
)
def test_malformed_digests_are_400(http: httpx.Client, digest: str) -> None:
    for response in (
        http.post(f"/api/blobs/{digest}", content=b"x"),
        http.post("/api/create", json={"model": "d", "files": {"m.gguf": digest}}),
    ):
        assert response.status_code == 400, response.text
        assert "digest" in error_of(response)
    assert http.head(f"/api/blobs/{digest}").status_code == 400


def test_traversal_in_the_blob_url_is_refused(http: httpx.Client) -> None:
    for raw_path in (b"/api/blobs/..%2f..%2fevil", b"/api/blobs/sha256:..%2F..%2Fevil", b"/api/blobs/%2e%2e"):
        response = http.post(httpx.URL(raw_path=raw_path), content=b"payload")
        assert response.status_code in (400, 404, 405), response.text


def test_create_with_a_digest_that_was_never_uploaded(http: httpx.Client) -> None:
    response = http.post("/api/create", json={"model": "ghost", "files": {"m.gguf": OTHER_DIGEST}})
    assert response.status_code == 400
    assert "no such file or directory" in error_of(response)


def test_oversized_blob_with_a_wrong_digest_is_400_and_not_kept(http: httpx.Client, jail: Path) -> None:
    body = b"\x5a" * (48 << 20)
    wrong = "sha256:" + hashlib.sha256(b"something else").hexdigest()
    response = http.post(f"/api/blobs/{wrong}", content=body)
    assert response.status_code == 400 and error_of(response).startswith("digest mismatch")
    assert not [p for p in (jail / "models" / "blobs").iterdir() if p.stat().st_size >= len(body)]


def test_oversized_json_body_gets_a_clear_error(http: httpx.Client, tiny_digest: str) -> None:
    huge_prompt = "the " * (1 << 20)  # 4 MiB of prompt, far past the 512-token context
    response = http.post(
        "/api/generate",
        json={"model": "tiny", "prompt": huge_prompt, "raw": True, "stream": False, "options": GEN},
    )
    assert response.status_code == 400
    assert "context" in error_of(response)
    missing = http.post("/api/generate", json={"model": "missing", "prompt": huge_prompt})
    assert missing.status_code == 404 and error_of(missing) == "model 'missing' not found"


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"", 400, "missing request body"),
        (b"   \n", 400, "missing request body"),
        (b"{not json", 400, "invalid character"),
        (b'{"model": "tiny", "prompt": ', 400, "invalid character"),
        (b"[1, 2, 3]", 400, "cannot unmarshal"),
        (b'"just a string"', 400, "cannot unmarshal"),
        (b"\xff\xfe\x00garbage", 400, "invalid character"),
    ],
)
@pytest.mark.parametrize("path", ["/api/create", "/api/generate", "/api/chat", "/api/show"])
def test_malformed_json_is_400(http: httpx.Client, path: str, body: bytes, status: int, message: str) -> None:
    response = http.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == status
    assert message in error_of(response)


def test_unknown_fields_are_ignored_like_ollama(http: httpx.Client, tiny_digest: str) -> None:
    create = http.post(
        "/api/create",
        json={
            "model": "tiny-copy",
            "from": "tiny",
            "stream": False,
            "no_such_field": {"x": [1]},
            "path": "/etc",
        },
    )
    assert create.status_code == 200 and create.json()["status"] == "success"
    generate = http.post(
        "/api/generate",
        json={
            "model": "tiny-copy",
            "prompt": "the",
            "raw": True,
            "stream": False,
            "bogus": True,
            "options": {**GEN, "num_predict": 2, "no_such_option": 1},
        },
    )
    assert generate.status_code == 200 and generate.json()["done"] is True
