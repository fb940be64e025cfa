"""Write GGUF files (streamed, atomic, free space checked) and cache built fixtures by spec hash.

`write_gguf` lays out header, KV pairs and tensor infos with `gguf.GGUFWriter` (tensor infos are added
first, so nothing is held in memory), then streams each tensor's row blocks to disk, one block at a time,
hashing as it goes. It writes to a temp file in the target folder and renames it on success; on any failure
(ENOSPC, Ctrl-C included) the temp file is removed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter

from harness.errors import BuildError, DiskFullError
from harness.gguf.plan import KV, GGUFPlan, ggml_pad, plan_gguf
from harness.gguf.spec import ModelSpec

# Builds expected to write more than this show a progress bar (on a terminal only): about a second of work.
PROGRESS_MIN_BYTES = 128 << 20


@dataclass(frozen=True)
class BuiltModel:
    """A GGUF file on disk and what identifies it."""

    path: Path
    sha256: str
    size: int
    spec_hash: str
    from_cache: bool = field(default=False, compare=False)  # build_cached found it built (not identity)


def build_gguf(spec: ModelSpec, path: str | os.PathLike[str], *, progress: bool | None = None) -> BuiltModel:
    """Build the GGUF file of `spec` at `path` (atomic, streamed)."""
    return write_gguf(plan_gguf(spec), path, progress=progress)


def write_gguf(plan: GGUFPlan, path: str | os.PathLike[str], *, progress: bool | None = None) -> BuiltModel:
    """Stream `plan` to `path` atomically; `progress=None` shows a bar only for big builds on a terminal."""
    target = Path(path)
    needed = plan.file_size()
    with atomic_output(target, needed) as temp:
        digest = _write(plan, temp, _progress_bar(progress, needed, target.name))
    return BuiltModel(path=target, sha256=digest, size=needed, spec_hash=plan.spec_hash)


@contextlib.contextmanager
def atomic_output(
    path: str | os.PathLike[str], needed: int, *, verify: Callable[[Path], None] | None = None
) -> Iterator[Path]:
    """A temp file next to `path` for the caller to write exactly `needed` bytes into.

    Free space is checked first (DiskFullError). When the block ends, the size is checked, `verify(temp)`
    runs if given, and the temp file is renamed to `path`; on any failure (ENOSPC, Ctrl-C, an error raised
    by `verify`) it is removed and `path` is left as it was.
    """
    target = Path(path)
    folder = target.parent
    if not folder.is_dir():
        raise BuildError(f"cannot write {target}: folder {folder} does not exist", "create the folder first")
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise DiskFullError(str(target), needed, free)
    try:
        fd, temp_name = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".partial")
    except OSError as error:
        raise BuildError(
            f"cannot write in {folder}: {error.strerror}", "choose a writable output folder"
        ) from error
    os.close(fd)
    temp = Path(temp_name)
    try:
        yield temp
        size = temp.stat().st_size
        if size != needed:
            raise BuildError(f"internal error: wrote {size} bytes, planned {needed}", "report this as a bug")
        if verify is not None:
            verify(temp)
        os.replace(temp, target)
    except OSError as error:
        temp.unlink(missing_ok=True)
        if error.errno == errno.ENOSPC:
            raise DiskFullError(str(target), needed, shutil.disk_usage(folder).free) from error
        raise BuildError(f"writing {target} failed: {error}", "check the output folder") from error
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class TensorLayout:
    """A tensor info to write: numpy-order `shape` (the writer stores it reversed), bytes and ggml type."""

    name: str
    shape: tuple[int, ...]
    nbytes: int
    ggml_type: GGMLQuantizationType


def write_gguf_metadata(
    temp: Path, architecture: str, alignment: int, kvs: Mapping[str, KV], tensors: Iterable[TensorLayout]
) -> GGUFWriter:
    """Write header, key/value pairs (`kvs` owns every key, general.architecture included) and tensor infos
    to `temp`, padded to `alignment`; returns the open writer, positioned at the start of the tensor data
    (its `fout[0]`), for the caller to stream the data into and close."""
    writer = GGUFWriter(None, architecture)
    writer.kv_data[0].clear()
    writer.data_alignment = alignment
    try:
        for key, kv in kvs.items():
            writer.add_key_value(key, kv.value, kv.type, kv.sub_type)
        for tensor in tensors:
            writer.add_tensor_info(
                tensor.name, tensor.shape, np.dtype(np.float32), tensor.nbytes, tensor.ggml_type
            )
        writer.write_header_to_file(temp)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        assert writer.fout is not None
        out = writer.fout[0]
        writer.write_padding(out, out.tell())
        out.flush()
    except BaseException:
        writer.close()
        raise
    return writer


def _write(plan: GGUFPlan, temp: Path, bar: _Progress | None) -> str:
    layouts = (TensorLayout(t.name, t.shape, t.nbytes, t.ggml_type) for t in plan.tensors)
    writer = write_gguf_metadata(temp, plan.architecture, plan.alignment, plan.kvs, layouts)
    try:
        assert writer.fout is not None
        out = writer.fout[0]
        hasher = hashlib.sha256(temp.read_bytes())
        # Three stages overlap (numpy, hashlib and file writes release the GIL): the next block is produced
        # and the previous one hashed while the current one is written. At most three blocks are alive.
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="gguf-write") as pool:
            hashing: Future[None] | None = None
            for data in _data_stream(plan, pool):
                if hashing is not None:
                    hashing.result()
                hashing = pool.submit(hasher.update, data)
                out.write(data)
                if bar is not None:
                    bar.update(len(data))
            if hashing is not None:
                hashing.result()
        out.flush()
    finally:
        writer.close()
        if bar is not None:
            bar.close()
    return hasher.hexdigest()


def _data_stream(plan: GGUFPlan, pool: ThreadPoolExecutor) -> Iterator[memoryview]:
    """The bytes of the tensor data section, in order, produced one block ahead on `pool`."""
    blocks = _padded_blocks(plan)
    upcoming = pool.submit(next, blocks, None)
    while True:
        data = upcoming.result()
        if data is None:
            return
        upcoming = pool.submit(next, blocks, None)
        yield data


def _padded_blocks(plan: GGUFPlan) -> Iterator[memoryview]:
    for tensor in plan.tensors:
        written = 0
        for block in tensor.iter_data():
            data = memoryview(np.ascontiguousarray(block).reshape(-1).view(np.uint8))  # type: ignore[arg-type]
            written += len(data)
            yield data
        if written != tensor.nbytes:
            raise BuildError(
                f"tensor {tensor.name}: produced {written} bytes, its shape and type need {tensor.nbytes}",
                "the tensor's producer does not match its declared shape/type",
            )
        padding = ggml_pad(written, plan.alignment) - written
        if padding:
            yield memoryview(bytes(padding))


class _Progress:
    def __init__(self, total: int, name: str) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=total, unit="B", unit_scale=True, desc=f"building {name}", leave=False)

    def update(self, n: int) -> None:
        self._bar.update(n)

    def close(self) -> None:
        self._bar.close()


def _progress_bar(progress: bool | None, total: int, name: str) -> _Progress | None:
    if progress is None:
        progress = total >= PROGRESS_MIN_BYTES and sys.stderr.isatty()
    return _Progress(total, name) if progress else None


# ------------------------------------------------------------------------------------------------- cache


def default_cache_dir() -> Path:
    """$HARNESS_CACHE_DIR, else $XDG_CACHE_HOME/ollama-harness/gguf, else ~/.cache/ollama-harness/gguf."""
    if os.environ.get("HARNESS_CACHE_DIR"):
        return Path(os.environ["HARNESS_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ollama-harness" / "gguf"


def build_cached(spec: ModelSpec, cache_dir: str | os.PathLike[str] | None = None) -> BuiltModel:
    """The GGUF file of `spec` from the cache, built once per spec hash (safe across processes)."""
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise BuildError(
            f"cannot create cache folder {folder}: {error.strerror}", "set HARNESS_CACHE_DIR"
        ) from error
    spec_hash = spec.spec_hash()
    stem = f"{spec.name}-{spec_hash[:16]}"
    gguf_path, sidecar = folder / f"{stem}.gguf", folder / f"{stem}.json"
    cached = _read_cached(gguf_path, sidecar, spec_hash)
    if cached is not None:
        return cached
    with _locked(folder / f"{stem}.lock"):
        cached = _read_cached(gguf_path, sidecar, spec_hash)  # another process may have built it meanwhile
        if cached is not None:
            return cached
        built = build_gguf(spec, gguf_path)
        record = {"sha256": built.sha256, "size": built.size, "spec_hash": spec_hash, "spec": spec.to_dict()}
        _write_json_atomic(sidecar, record)
        return built


def _read_cached(gguf_path: Path, sidecar: Path, spec_hash: str) -> BuiltModel | None:
    try:
        record = json.loads(sidecar.read_text())
        size = gguf_path.stat().st_size
    except (OSError, ValueError):
        return None
    if record.get("spec_hash") != spec_hash or record.get("size") != size:
        return None
    return BuiltModel(
        path=gguf_path, sha256=str(record["sha256"]), size=size, spec_hash=spec_hash, from_cache=True
    )


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    with open(lock_path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_json_atomic(path: Path, data: dict[str, object]) -> None:
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
