"""Exact-output controls across two runs: the oracle fixture's reply is known exactly, so the same model
(by identity, see `model_identities`) must give the same bytes on any server. A difference is a finding
about the server (its template, tokenizer, sampler or streaming), never noise and never the model's fault.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.report.metrics import model_identities
from harness.runs import RunRecord


@dataclass(frozen=True)
class ExactOutput:
    """One control's reply in the baseline and the current run (None: the run lacks it)."""

    model: str  # the model's identity key
    control: str  # e.g. "oracle.template", "oracle.raw"
    expected: str | None
    baseline: str | None
    current: str | None
    baseline_done: str | None = None
    current_done: str | None = None

    @property
    def equal(self) -> bool:
        """Both runs gave the same reply, ending the same way."""
        return self.baseline is not None and (self.baseline, self.baseline_done) == (
            self.current,
            self.current_done,
        )

    @property
    def verdict(self) -> str:
        if self.baseline is None or self.current is None:
            return "new" if self.baseline is None else "gone"
        return "identical" if self.equal else "SERVER CHANGED"


def exact_outputs(run: RunRecord) -> dict[tuple[str, str], dict[str, object]]:
    """The run's "exact" records keyed (model identity, control); the last one wins."""
    identities = model_identities(run)
    found: dict[tuple[str, str], dict[str, object]] = {}
    for record in run.of_kind("exact"):
        model = str(record.get("model") or "-")
        found[(identities.get(model, model), str(record.get("control") or "-"))] = record
    return found


def compare_exact_outputs(baseline: RunRecord, run: RunRecord) -> list[ExactOutput]:
    """Every exact-output control of either run, side by side (the current run's order first)."""
    before, after = exact_outputs(baseline), exact_outputs(run)
    rows = []
    for key in [*after, *(key for key in before if key not in after)]:
        old, new = before.get(key), after.get(key)
        expected = (new or old or {}).get("expected")
        rows.append(
            ExactOutput(
                model=key[0],
                control=key[1],
                expected=None if expected is None else str(expected),
                baseline=None if old is None else str(old.get("output")),
                current=None if new is None else str(new.get("output")),
                baseline_done=None if old is None else _text(old.get("done_reason")),
                current_done=None if new is None else _text(new.get("done_reason")),
            )
        )
    return rows


def _text(value: object) -> str | None:
    return None if value is None else str(value)
