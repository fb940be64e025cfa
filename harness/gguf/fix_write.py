"""Write a `FixPlan`: the corrected metadata, then each tensor's bytes streamed from the input.

The metadata goes through `gguf.GGUFWriter` (`build.write_gguf_metadata`); each tensor's data is copied from
the input at its offset in bounded chunks (memory stays flat in the file size) and padded to the alignment.
Everything goes to a temp file next to the output (`build.atomic_output`), which the checker must pass
(unless `force`) before it is renamed into place; on any failure nothing is left behind and the input is
never touched (with `in_place` the input is replaced only by a copy that passed).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from harness.errors import BuildError
from harness.gguf.build import atomic_output, write_gguf_metadata
from harness.gguf.check import check_gguf
from harness.gguf.findings import CheckReport
from harness.gguf.fix_plan import FixPlan
from harness.gguf.plan import ggml_pad

COPY_CHUNK_BYTES = 8 << 20


class FixIncompleteError(BuildError):
    """The repaired copy still fails the checker, so it was not written (exit status 1)."""

    exit_code = 1


@dataclass(frozen=True)
class FixResult:
    """The written file and the checker's report on it."""

    path: Path
    size: int
    report: CheckReport


def write_fix(
    plan: FixPlan,
    output: str | os.PathLike[str] | None = None,
    *,
    in_place: bool = False,
    force: bool = False,
) -> FixResult:
    """Write the repaired copy of `plan.source` to `output` (or over the source with `in_place`).

    The copy is checked before it is renamed into place: if it has errors it is removed and
    `FixIncompleteError` raised, unless `force`, which writes it anyway (and the report says what is left);
    `in_place` replaces the source only with a copy that passes, `force` or not.
    """
    if plan.blocked:
        raise FixIncompleteError(
            f"{plan.source} cannot be repaired: {plan.blocked[0]}", "nothing was written"
        )
    target = _target(plan.source, output, in_place)
    reports: list[CheckReport] = []

    def verify(temp: Path) -> None:
        report = check_gguf(temp)
        reports.append(report)
        if not report.ok and (in_place or not force):
            first = report.errors[0]
            raise FixIncompleteError(
                f"the repaired copy still has {len(report.errors)} error(s), first "
                f"{first.code}: {first.message}",
                "nothing was written; see `harness gguf fix --plan`, or pass --force to write it anyway",
            )

    size = plan.file_size()
    with atomic_output(target, size, verify=verify) as temp:
        _write(plan, temp)
    report = reports[-1]
    report.path = target
    return FixResult(target, size, report)


def _target(source: Path, output: str | os.PathLike[str] | None, in_place: bool) -> Path:
    if in_place:
        if output is not None:
            raise BuildError("give either an output file or --in-place, not both", "drop -o or --in-place")
        return source
    if output is None:
        raise BuildError("no output file given", "pass -o OUT.gguf (or --in-place to replace the input)")
    target = Path(output)
    if target.exists() and os.path.samefile(target, source):
        raise BuildError(
            f"the output {target} is the input file", "choose another output file, or pass --in-place"
        )
    return target


def _write(plan: FixPlan, temp: Path) -> None:
    writer = write_gguf_metadata(
        temp, plan.architecture, plan.alignment, plan.kvs, (t.layout for t in plan.tensors)
    )
    try:
        assert writer.fout is not None
        out = writer.fout[0]
        with open(plan.source, "rb") as source:
            for tensor in plan.tensors:
                nbytes = tensor.layout.nbytes
                _copy_range(source, plan.data_offset + tensor.source.offset, nbytes, out, tensor.name)
                out.write(bytes(ggml_pad(nbytes, plan.alignment) - nbytes))
        out.flush()
    finally:
        writer.close()


def _copy_range(source: io.BufferedReader, start: int, nbytes: int, out: IO[bytes], name: str) -> None:
    """Copy `nbytes` from `source` at `start` to `out`, one bounded chunk at a time."""
    source.seek(start)
    buffer = bytearray(min(COPY_CHUNK_BYTES, max(nbytes, 1)))
    view = memoryview(buffer)
    left = nbytes
    while left:
        count = source.readinto(view[: min(left, len(buffer))])
        if not count:
            raise BuildError(
                f"the input ended inside tensor '{name}' ({left:,} bytes missing)",
                "the input changed while it was being repaired, or is cut short: fetch it again",
            )
        out.write(view[:count])
        left -= count
