"""What changed between two runs, prompt by prompt: the answers whose grade flipped (pass -> fail, fail ->
pass) against the baseline, with both responses, like promptfoo's compare view.

Prompts are matched by what was asked, not by run-specific names: the model's identity (profile or name and
digest, `harness.report.metrics.model_identities`), the suite, the item id and the repeat.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harness.report.metrics import model_identities
from harness.runs import RunRecord

PromptKey = tuple[str, str, str, int]  # (model identity, suite, item id, repeat)


@dataclass(frozen=True)
class FlippedPrompt:
    """One prompt graded differently in the baseline and the current run."""

    model: str  # the model's identity
    suite: str
    item_id: str
    repeat: int
    now_passed: bool  # True: fail -> pass; False: pass -> fail
    baseline_response: str | None
    current_response: str | None
    baseline_reason: str | None
    current_reason: str | None

    @property
    def change(self) -> str:
        return "fail -> pass" if self.now_passed else "pass -> fail"


def prompts_by_key(run: RunRecord) -> dict[PromptKey, Mapping[str, Any]]:
    """The run's prompt records keyed by (model identity, suite, item id, repeat); a later record of the
    same key (a rerun inside the run) wins."""
    identities = model_identities(run)
    keyed: dict[PromptKey, Mapping[str, Any]] = {}
    for record in run.of_kind("prompt"):
        model = str(record.get("model") or "-")
        key = (
            identities.get(model, model),
            str(record.get("suite") or "-"),
            str(record.get("item_id") or "-"),
            int(record.get("repeat") or 0),
        )
        keyed[key] = record
    return keyed


def flipped_prompts(run: RunRecord, baseline: RunRecord) -> list[FlippedPrompt]:
    """The prompts asked in both runs whose `passed` differs: pass -> fail first, then the current order."""
    before = prompts_by_key(baseline)
    flipped = []
    for key, record in prompts_by_key(run).items():
        earlier = before.get(key)
        if earlier is None or bool(earlier.get("passed")) == bool(record.get("passed")):
            continue
        flipped.append(
            FlippedPrompt(
                *key,
                now_passed=bool(record.get("passed")),
                baseline_response=earlier.get("response"),
                current_response=record.get("response"),
                baseline_reason=earlier.get("reason"),
                current_reason=record.get("reason"),
            )
        )
    return sorted(flipped, key=lambda prompt: prompt.now_passed)
