"""The checker against llama.cpp itself, on a seeded sample of structured mutants of the tiny fixture.

Every mutant is judged by `check_gguf` and by llama.cpp (load + 3 greedy tokens, several mutants per child
process). Misses (checker OK, llama.cpp fails) must be 0; false alarms must each come from an error listed
with its reason in `check.LOADS_BUT_WRONG`; benign mutants must pass both. The long campaign (thousands of
mutants, two fixtures, pairs of edits): scripts/differential_campaign.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.gguf.differential import run_differential
from harness.gguf.findings import CODES, LOADS_BUT_WRONG
from harness.gguf.mutants import FAMILIES, all_mutants, describe, random_mutants
from harness.gguf.plan import GGUFPlan, plan_gguf
from harness.gguf.spec import load_profile

pytestmark = pytest.mark.timeout(300)

SAMPLE = 120
SEED = 16


@pytest.fixture(scope="module")
def plan() -> GGUFPlan:
    return plan_gguf(load_profile("tiny").replace(n_layer=1))


def test_a_seeded_sample_has_no_miss(plan: GGUFPlan, tmp_path: Path) -> None:
    drawn = random_mutants(plan, SAMPLE, SEED)
    named = {m.name: m for m in all_mutants(plan)}
    # The example, and every benign edit, always run.
    drawn += [(named["tokenizer.ggml.model -> bert"],)]
    drawn += [(m,) for m in named.values() if m.benign]
    report = run_differential(plan, drawn, tmp_path, batch=40)
    assert not report.misses, report.summary()
    assert not report.unjustified_false_alarms, report.summary()
    assert not report.broken_benign, report.summary()
    assert len(report.outcomes) + len(report.unwritable) == len(drawn)
    kinds = {o.kind for o in report.outcomes}
    assert {"agree-ok", "agree-fail"} <= kinds, report.summary()  # the sample exercises both verdicts
    bert = next(o for o in report.outcomes if o.mutant == "tokenizer.ggml.model -> bert")
    assert not bert.llama_ok and bert.checker_codes == ("tokenizer-mismatch",), bert.line()


def test_the_mutants_cover_every_family(plan: GGUFPlan) -> None:
    mutants = all_mutants(plan)
    assert {m.family for m in mutants} == set(FAMILIES)
    assert len({m.name for m in mutants}) == len(mutants)
    names = [describe(m) for m in random_mutants(plan, 50, 1)]
    assert names == [describe(m) for m in random_mutants(plan, 50, 1)]  # seeded: reproducible
    assert names != [describe(m) for m in random_mutants(plan, 50, 2)]
    assert len(random_mutants(plan, len(mutants) + 10, 1)[-1]) == 2  # past the singles: pairs


def test_every_justification_names_a_code() -> None:
    for key, reason in LOADS_BUT_WRONG.items():
        assert key.split(":", 1)[0] in CODES and CODES[key.split(":", 1)[0]].severity == "error", key
        assert len(reason) > 40, key
