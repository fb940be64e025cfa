"""Scenario: the disk fills while a GGUF is being built.

On a real 1 MiB tmpfs (mounted here when the test runs as root), the free-space pre-check passes for the
tiny fixture (about 600 KB), then, after the first tensor block is written, another writer takes all the
space left, so the builder's own writes fail with the kernel's ENOSPC. Where mounting is not allowed the
same point fails with an injected `OSError(ENOSPC)` instead; the test records which it used
(`user_properties["disk"]`, and the skip/xfail-free output line `disk-full mode: ...` with `-s`).

Checked: no partial file remains, the error names the bytes needed and the bytes free, and once the
space is freed the same build succeeds with the same bytes as a build elsewhere.
`tests/test_gguf_build.py` covers the pre-check refusal and interrupts; this is the end-to-end scenario.
Reproduce: `.venv/bin/pytest tests/faults/test_disk_full.py -q -s`.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from harness.errors import DiskFullError
from harness.gguf.build import BuiltModel, build_gguf, write_gguf
from harness.gguf.check import check_gguf
from harness.gguf.plan import GGUFPlan, TensorPlan, plan_gguf
from harness.gguf.spec import load_profile

pytestmark = pytest.mark.timeout(60)

FS_SIZE = 1 << 20


@pytest.fixture
def build_folder(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """(folder, mode): a real 1 MiB tmpfs ("tmpfs"), or a plain folder ("injected") where mount is refused."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={FS_SIZE}", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
        timeout=10,
    )
    if mounted.returncode != 0:
        yield mount_point, "injected"
        return
    try:
        yield mount_point, "tmpfs"
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False, timeout=10)


def _after_first_block(plan: GGUFPlan, index: int, action: Callable[[], None]) -> GGUFPlan:
    """`plan` with tensor `index` running `action` after its first data block has been handed out."""
    tensor = plan.tensors[index]

    def chunks() -> Iterator[np.ndarray]:
        blocks = tensor.iter_data()
        yield next(blocks)
        action()
        yield from blocks

    tensors = list(plan.tensors)
    tensors[index] = TensorPlan(tensor.name, tensor.shape, tensor.ggml_type, tensor.produce, chunks)
    return dataclasses.replace(plan, tensors=tensors)


def _fill(folder: Path) -> Callable[[], None]:
    """Another writer taking every free byte of `folder`'s filesystem (written until ENOSPC)."""

    def fill() -> None:
        with (folder / "filler").open("wb") as handle:
            block = b"\0" * 65536
            try:
                while True:
                    handle.write(block)
                    handle.flush()
            except OSError as error:
                assert error.errno == errno.ENOSPC
        # a 64 KiB write can fail with a few KiB still free: take those too
        with (folder / "filler").open("ab") as handle:
            try:
                while True:
                    handle.write(b"\0" * 512)
                    handle.flush()
            except OSError:
                pass

    return fill


def _raise_enospc() -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_disk_filling_mid_build_leaves_nothing_and_a_later_build_succeeds(
    build_folder: tuple[Path, str], tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    folder, mode = build_folder
    record_property("disk", mode)
    print(f"disk-full mode: {mode}")
    spec = load_profile("tiny")
    plan = plan_gguf(spec)
    needed = plan.file_size()
    assert needed < shutil.disk_usage(folder).free, "the pre-check must pass: the disk fills later"
    action = _fill(folder) if mode == "tmpfs" else _raise_enospc
    target = folder / "tiny.gguf"

    with pytest.raises(DiskFullError) as caught:
        write_gguf(_after_first_block(plan, 3, action), target)

    error = caught.value
    assert error.needed == needed
    assert f"needs {needed:,} bytes" in str(error)
    assert f"{error.free:,} bytes free" in str(error)
    assert error.hint
    leftovers = sorted(p.name for p in folder.iterdir())
    if mode == "tmpfs":
        assert error.free < needed
        assert leftovers == ["filler"], f"partial files left: {leftovers}"
        (folder / "filler").unlink()
    else:
        assert leftovers == []

    built = build_gguf(spec, target)
    reference: BuiltModel = build_gguf(spec, tmp_path / "reference.gguf")
    assert (built.size, built.sha256) == (reference.size, reference.sha256) == (needed, reference.sha256)
    assert check_gguf(built.path).ok
    assert sorted(p.name for p in folder.iterdir()) == ["tiny.gguf"]
