"""Plan the repair of a broken GGUF file: which keys to set, retype, move or copy, which tensors to rename.

`plan_fix(path, options)` reads the file's metadata, runs the checker on it, and builds a `FixPlan`: the
key/value pairs and tensor names the corrected file will have, one `Change` per repair with the reason
(the option, config.json field or tensor shape it came from), and the checker's report on the planned file
(`after`), found by writing the planned metadata into a sparse file of the final size. What `after` still
reports is what cannot be fixed (a missing tensor: weights cannot be invented). `fix_write.write_fix`
writes the plan.

Repairs, in order: rename the architecture and move its keys (`--arch`), rename tensors (`--rename-tensor`,
then Hugging Face names through gguf-py's map), `--set` keys, retype wrongly typed keys to the type the
architecture table requires, fill missing hyperparameters from a Hugging Face config.json, derive the rest
from tensor shapes where that is unambiguous, copy a missing tokenizer / chat template from a donor GGUF.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from harness.gguf.build import write_gguf_metadata
from harness.gguf.check import check_gguf
from harness.gguf.findings import CheckReport, Finding
from harness.gguf.fix_repairs import Change, FixOptions, Repairs, TensorCopy, read_for_fix
from harness.gguf.fix_values import FixOptionError
from harness.gguf.plan import GGUF_HEADER_BYTES, KV, ggml_pad
from harness.gguf.reader import GGUFHeader

__all__ = ["Change", "FixOptionError", "FixOptions", "FixPlan", "TensorCopy", "check_planned", "plan_fix"]

# Why a finding the plan leaves standing cannot be fixed here, and what would fix it.
CANNOT_FIX: dict[str, str] = {
    "missing-tensor": "missing weights cannot be invented: reconvert from the original checkpoint",
    "data-beyond-eof": "the file is cut short; missing weights cannot be invented: fetch the file again",
    "wrong-shape": "the tensors disagree with the keys: --set the keys the weights imply, or reconvert",
    "missing-key": "no value known: pass --set KEY=VALUE or --config config.json",
    "missing-tokenizer": "pass --tokenizer-from DONOR.gguf (a GGUF with the same vocabulary)",
    "unknown-architecture": "pass --arch NAME (the architecture the weights follow, e.g. llama)",
    "missing-architecture": "pass --arch NAME",
    "vocab-size-mismatch": "the vocabulary and the embedding rows differ: use a donor of this model",
    "non-finite-weights": "corrupt weights cannot be repaired: reconvert from the original weights",
}


@dataclass
class FixPlan:
    """The corrected file's metadata, the changes that lead to it, and the checker's verdicts."""

    source: Path
    architecture: str
    alignment: int
    data_offset: int  # of the input
    kvs: dict[str, KV]
    tensors: list[TensorCopy]
    changes: list[Change]
    notes: list[str]
    before: CheckReport
    findings: list[Finding] = field(default_factory=list)  # the input's, and those its renames reveal
    after: CheckReport | None = None  # None: the tensor data cannot be copied (see `blocked`)
    blocked: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the planned file would pass the checker."""
        return not self.blocked and self.after is not None and self.after.ok

    def file_size(self) -> int:
        return self.metadata_size() + sum(ggml_pad(t.layout.nbytes, self.alignment) for t in self.tensors)

    def metadata_size(self) -> int:
        kv_bytes = sum(8 + len(key.encode()) + kv.nbytes() for key, kv in self.kvs.items())
        infos = sum(8 + len(t.name.encode()) + 4 + 8 * len(t.source.ne) + 4 + 8 for t in self.tensors)
        return ggml_pad(GGUF_HEADER_BYTES + kv_bytes + infos, self.alignment)

    def unfixed(self) -> list[Finding]:
        """Errors the planned file still has."""
        return [] if self.after is None else self.after.errors

    def format_text(self) -> str:
        """The plan as text: per finding of the input what fixes it, the other changes, what stays broken."""
        revealed = len(self.findings) - sum(1 for f in self.before.findings if f.severity != "info")
        more = f", {revealed} more once the names are fixed" if revealed > 0 else ""
        lines = [f"plan for {self.source}: {len(self.before.errors)} error(s) in the input{more}"]
        used: set[int] = set()
        for finding in self.findings:
            lines.append(f"{finding.severity} {finding.code}: {finding.message}")
            fixes = [(i, c) for i, c in enumerate(self.changes) if c.addresses(finding)]
            for index, change in fixes:
                used.add(index)
                lines.append(f"    fix: {change.what} ({change.why})")
            if not fixes:
                still = self.after is None or any(
                    f.code == finding.code and f.key == finding.key and f.tensor == finding.tensor
                    for f in self.after.errors
                )
                lines.append("    NOT FIXED" if still else "    gone after the other changes")
        others = [c for i, c in enumerate(self.changes) if i not in used]
        if others:
            lines.append("further changes:")
            lines.extend(f"    {c.what} ({c.why})" for c in others)
        lines.extend(f"note: {note}" for note in self.notes)
        unfixed = [*self.blocked, *(_cannot_fix(f) for f in self.unfixed())]
        if unfixed:
            lines.append("cannot fix:")
            lines.extend(f"    {line}" for line in unfixed)
        verdict = "would pass the checker" if self.ok else "would still fail the checker"
        lines.append(f"result: {len(self.changes)} change(s); the output {verdict}")
        return "\n".join(lines)


def _cannot_fix(finding: Finding) -> str:
    reason = CANNOT_FIX.get(finding.code, finding.hint)
    return f"{finding.code}: {finding.message} -- {reason}"


# ------------------------------------------------------------------------------------------- planning


def plan_fix(path: str | os.PathLike[str], options: FixOptions) -> FixPlan:
    """Plan the repair of `path`; GGUFReadError for an unusable input, FixOptionError for bad options."""
    header = read_for_fix(path)
    before = check_gguf(path)
    planner = Repairs(header, options)
    planner.rename()
    plan = FixPlan(
        source=Path(path),
        architecture=planner.arch,
        alignment=header.alignment,
        data_offset=header.data_offset or 0,
        kvs=dict(planner.kvs),
        tensors=list(planner.tensors),
        changes=planner.changes,
        notes=planner.notes,
        before=before,
        findings=[f for f in before.findings if f.severity != "info"],
        blocked=_blocked(header),
    )
    if planner.changes and not plan.blocked:
        # The checker stops at an unknown architecture: list what it finds once the names are right.
        seen = {(f.code, f.key, f.tensor) for f in plan.findings}
        renamed = check_planned(plan)
        plan.findings += [
            f for f in renamed.errors + renamed.warnings if (f.code, f.key, f.tensor) not in seen
        ]
    planner.repair()
    plan.architecture, plan.kvs, plan.tensors = planner.arch, planner.kvs, planner.tensors
    if not plan.blocked:
        plan.after = check_planned(plan)
    return plan


def _blocked(header: GGUFHeader) -> list[str]:
    """Reasons the tensor data cannot be copied at all (unknown types, data past the end of the file)."""
    assert header.data_offset is not None
    reasons = []
    for tensor in header.tensors:
        nbytes = tensor.nbytes
        if nbytes is None:
            reasons.append(f"tensor '{tensor.name}' has unknown ggml type {tensor.ggml_type}: cannot copy it")
        elif header.data_offset + tensor.offset + nbytes > header.file_size:
            reasons.append(
                f"tensor '{tensor.name}' lies beyond the end of the file -- "
                "missing weights cannot be invented: fetch the file again"
            )
    return reasons[:12]


def check_planned(plan: FixPlan) -> CheckReport:
    """The checker's report on the planned file: its metadata in a sparse file of the final size."""
    with tempfile.TemporaryDirectory(prefix="harness-fix-") as folder:
        sparse = Path(folder) / "planned.gguf"
        writer = write_gguf_metadata(
            sparse, plan.architecture, plan.alignment, plan.kvs, (t.layout for t in plan.tensors)
        )
        writer.close()
        os.truncate(sparse, plan.file_size())
        return check_gguf(sparse)
