"""Structured outputs suite: `format` = a JSON schema (suites/data/structured.yaml).

Every item is asked (chat, greedy) with its schema as `format`, graded by harness.quality.json_graders and
recorded. Two verdicts come from that one run:

- every answer parses and validates against its schema, on every model, fixture weights included: the
  server's grammar makes that so whatever the weights, so a failure means its grammar path is broken;
- the strict accuracy (exact field values) reaches the threshold: a quality check, an expected failure on
  the fixture models as for math and quantum.

Controls on the `oracle-tools` fixture: its greedy answer to a raw prompt is exactly the reference of the
item `country-italy` (nested `$ref`, enum, integer bounds, array), whole and streamed; the same vocabulary
and template with random weights still answers every schema validly.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from harness.quality.json_graders import schema_problem
from harness.quality.scoring import get_grader, grade
from harness.quality.suite_data import load_suite

pytestmark = [pytest.mark.timeout(1800)]

TOOL_ORACLE = "oracle-tools"
TOOL_MODELFILE = "fixture-tools"
CONTROL_ITEM = "country-italy"
GREEDY = {"temperature": 0, "seed": 0}
_OUTCOMES: dict[tuple[int, str], Any] = {}


@pytest.fixture
def structured_outcome(
    run_quality_suite: Callable[[str], Any], harness_session: Any, model_under_test: Any
) -> Any:
    """The suite asked once per session and model; both verdicts read it."""
    key = (id(harness_session), model_under_test.name)
    if key not in _OUTCOMES:
        _OUTCOMES[key] = run_quality_suite("structured")
    return _OUTCOMES[key]


def test_every_structured_answer_fits_its_schema(structured_outcome: Any) -> None:
    suite = load_suite("structured")
    valid = get_grader("schema-valid").grade
    refusals = iter(error for _, error in structured_outcome.errors)  # one per answer that is None
    problems = []
    for (item_id, _), response in zip(structured_outcome.results, structured_outcome.responses, strict=True):
        if response is None:
            problems.append(f"{item_id}: the request failed: {next(refusals)}")
            continue
        verdict = valid(suite.item(item_id), response)
        if not verdict.passed:
            problems.append(f"{item_id}: {verdict.reason} (answer {response[:80]!r})")
    assert not problems, f"{len(problems)} answer(s) do not fit their schema:\n" + "\n".join(problems)


@pytest.mark.quality
def test_structured_accuracy_reaches_the_threshold(structured_outcome: Any) -> None:
    assert structured_outcome.passed, structured_outcome.summary_line()


@pytest.mark.fixture_weights("the oracle's JSON answer is known only for the oracle-tools fixture")
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_the_oracle_fills_the_schema_exactly(ollama_client: Any, fixture_models: Any, stream: bool) -> None:
    oracle = fixture_models.from_profile(TOOL_ORACLE, modelfile=TOOL_MODELFILE)
    item = load_suite("structured").item(CONTROL_ITEM)
    prompt, expected = oracle.oracle.more[1]
    reply = ollama_client.generate(
        oracle.name,
        prompt,
        raw=True,
        format=dict(item.schema or {}),
        options={**GREEDY, "num_predict": 64},
        stream=stream,
    )
    assert reply.text == expected, f"{reply.text!r}, expected {expected!r}"
    assert reply.done_reason == "stop"
    assert json.loads(reply.text) == json.loads(item.answer)
    result = grade(item, reply.text)
    assert result.passed, result.reason


@pytest.mark.fixture_weights("random weights are built from a fixture profile")
def test_random_weights_still_answer_every_schema_validly(ollama_client: Any, fixture_models: Any) -> None:
    model = fixture_models.from_profile(TOOL_ORACLE, modelfile=TOOL_MODELFILE, weights="random")
    suite = load_suite("structured")
    schemas = {json.dumps(item.schema, sort_keys=True): item for item in suite.items}
    problems, exact = [], 0
    for item in schemas.values():
        reply = ollama_client.chat(
            model.name,
            [{"role": "user", "content": suite.format_prompt(item)}],
            format=dict(item.schema or {}),
            options={**GREEDY, "num_predict": suite.num_predict},
        )
        problem = schema_problem(item.schema or {}, reply.text)
        if problem is not None:
            problems.append(f"{item.id}: {problem} (answer {reply.text[:80]!r})")
        exact += grade(item, reply.text).passed
    assert not problems, "random weights broke the grammar:\n" + "\n".join(problems)
    assert exact <= len(schemas) // 2, f"random weights got {exact} of {len(schemas)} exactly right"
