"""The checker against llama.cpp itself: each mutant of a valid fixture is judged by `check_gguf` and by
llama.cpp (load, then a few greedy tokens, in child processes), and the two verdicts are compared.

A *miss* is a file the checker passes and llama.cpp cannot run: there must be none. A *false alarm* is a
file the checker fails and llama.cpp runs: each must come from a finding code listed in
`check.LOADS_BUT_WRONG` with the reason the checker still calls it an error. Benign mutants must pass both.
Used by tests/test_gguf_differential.py (a seeded sample) and scripts/differential_campaign.py (long runs).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from harness.gguf.check import check_gguf
from harness.gguf.findings import loads_but_wrong
from harness.gguf.llamacpp import judge_files
from harness.gguf.mutants import Mutant, describe, write_mutant
from harness.gguf.plan import GGUFPlan


@dataclass(frozen=True)
class Outcome:
    """Both verdicts on one mutant."""

    mutant: str
    benign: bool
    checker_ok: bool
    checker_codes: tuple[str, ...]
    llama_ok: bool
    llama_cause: str | None
    unjustified: tuple[str, ...] = ()  # error codes with no reason in check.LOADS_BUT_WRONG
    reasons: tuple[tuple[str, str], ...] = ()  # (code, why llama.cpp runs it anyway) for the others

    @property
    def kind(self) -> str:
        """agree-ok, agree-fail, miss (checker OK, llama.cpp fails) or false-alarm (the reverse)."""
        if self.checker_ok == self.llama_ok:
            return "agree-ok" if self.checker_ok else "agree-fail"
        return "miss" if self.checker_ok else "false-alarm"

    def line(self) -> str:
        checker = "OK" if self.checker_ok else "FAIL " + ",".join(self.checker_codes)
        llama = "runs" if self.llama_ok else f"fails: {self.llama_cause}"
        return f"{self.kind:<11} {self.mutant}: checker {checker}; llama.cpp {llama}"


@dataclass
class DifferentialReport:
    """All outcomes of a run, and what went wrong."""

    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0
    unwritable: list[str] = field(default_factory=list)  # mutants gguf-py's writer refused to write

    def of_kind(self, kind: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.kind == kind]

    @property
    def misses(self) -> list[Outcome]:
        return self.of_kind("miss")

    @property
    def false_alarms(self) -> list[Outcome]:
        return self.of_kind("false-alarm")

    @property
    def unjustified_false_alarms(self) -> list[Outcome]:
        return [o for o in self.false_alarms if o.unjustified]

    @property
    def broken_benign(self) -> list[Outcome]:
        """Benign mutants that either side failed."""
        return [o for o in self.outcomes if o.benign and not (o.checker_ok and o.llama_ok)]

    @property
    def passed(self) -> bool:
        return not (self.misses or self.unjustified_false_alarms or self.broken_benign)

    def summary(self) -> str:
        counts = Counter(o.kind for o in self.outcomes)
        alarms = Counter(code for o in self.false_alarms for code in o.checker_codes)
        reasons = {code: why for o in self.false_alarms for code, why in o.reasons}
        lines = [
            f"{len(self.outcomes)} mutants in {self.seconds:.1f} s: {counts['agree-ok']} both OK, "
            f"{counts['agree-fail']} both fail, {counts['miss']} misses, "
            f"{counts['false-alarm']} false alarms ({len(self.unjustified_false_alarms)} unjustified), "
            f"{len(self.broken_benign)} benign broken; {len(self.unwritable)} not writable (skipped)",
        ]
        for code, count in sorted(alarms.items()):
            lines.append(f"  false alarm {code} x{count}: {reasons.get(code, 'NOT JUSTIFIED')}")
        for outcome in (*self.misses, *self.unjustified_false_alarms, *self.broken_benign):
            lines.append("  " + outcome.line())
        return "\n".join(lines)


def run_differential(
    plan: GGUFPlan, mutants: Iterable[tuple[Mutant, ...]], folder: Path, *, batch: int = 25
) -> DifferentialReport:
    """Write each mutant of `plan` into `folder`, judge it both ways, and compare (files are removed)."""
    started = time.monotonic()
    drawn: list[tuple[Mutant, ...]] = []
    paths: list[Path] = []
    report = DifferentialReport()
    for index, mutant in enumerate(mutants):
        try:
            paths.append(write_mutant(plan, mutant, folder / f"mutant-{index:05d}.gguf"))
        except (ValueError, KeyError, IndexError, TypeError):
            report.unwritable.append(describe(mutant))  # gguf-py's writer refuses this combination
            continue
        drawn.append(mutant)
    checks = [check_gguf(path) for path in paths]
    verdicts = judge_files(paths, batch=batch)
    for mutant, check, verdict in zip(drawn, checks, verdicts, strict=True):
        report.outcomes.append(
            Outcome(
                mutant=describe(mutant),
                benign=all(m.benign for m in mutant),
                checker_ok=check.ok,
                checker_codes=tuple(dict.fromkeys(f.code for f in check.errors)),
                llama_ok=verdict.ok,
                llama_cause=verdict.cause,
                unjustified=tuple(dict.fromkeys(f.code for f in check.errors if not loads_but_wrong(f))),
                reasons=tuple((f.code, why) for f in check.errors if (why := loads_but_wrong(f))),
            )
        )
    for path in paths:
        path.unlink(missing_ok=True)
    report.seconds = time.monotonic() - started
    return report
