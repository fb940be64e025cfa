"""Tool calling suite: `tools` in, `message.tool_calls` out (suites/data/tools.yaml).

Every item is asked (chat, greedy) with its tools; the reply's content and the tool calls Ollama's parser
found are graded by harness.quality.json_graders (exact name, arguments equal as JSON, no call when none is
needed). The test fails when the strict accuracy is below the threshold (an expected failure on the fixture
models). A model without Ollama's `tools` capability gets it skipped, with the server's own reason.

Controls on the `oracle-tools` fixture (modelfiles/fixture-tools.j2, Qwen 2.5 style): the positive control
must give exactly one call, get_weather with {"city": "Paris"} (whole and streamed), and after a tool-role
message with the result exactly its final sentence: template, tool parser and history rendering in one. The
negative control, the same vocabulary and template with random weights, must make no valid call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from harness.errors import ServerError
from harness.quality.json_graders import tool_reply
from harness.quality.scoring import grade
from harness.quality.suite_data import load_suite

pytestmark = [pytest.mark.timeout(1800)]

TOOL_ORACLE = "oracle-tools"
TOOL_MODELFILE = "fixture-tools"
CONTROL_ITEM = "weather-paris"
TOOL_RESULT = '{"temperature": 22, "condition": "sunny"}'
GREEDY = {"temperature": 0, "seed": 0}


def capabilities(client: Any, model: str) -> list[str] | None:
    """The model's capabilities as /api/show lists them (None from a server that does not list them)."""
    shown = client.show(model)
    listed = getattr(shown, "capabilities", None)
    return None if listed is None else [str(capability) for capability in listed]


def skip_without_tools(client: Any, model: str) -> None:
    """Skip the test, with the server's own refusal as the reason, when the model cannot take tools."""
    if "tools" in (capabilities(client, model) or ["tools"]):
        return
    tools = list(load_suite("tools").item(CONTROL_ITEM).tools)
    try:
        client.chat(model, [{"role": "user", "content": "hi"}], tools=tools, options={"num_predict": 1})
    except ServerError as error:
        pytest.skip(f"{model} has no tools capability: {getattr(error, 'server_message', None) or error}")
    pytest.fail(f"{model} lacks the tools capability in /api/show, yet the server took a chat with tools")


def calls_of(reply: Any) -> list[tuple[str, Any]]:
    """(name, arguments) of each tool call in a reply."""
    return [(call["function"]["name"], call["function"].get("arguments")) for call in reply.tool_calls]


@pytest.mark.quality
def test_tools_accuracy_reaches_the_threshold(
    run_quality_suite: Callable[[str], Any], ollama_client: Any, model_under_test: Any
) -> None:
    skip_without_tools(ollama_client, model_under_test.name)
    outcome = run_quality_suite("tools")
    assert outcome.passed, outcome.summary_line()


@pytest.mark.fixture_weights("the tool call is known only for the oracle-tools fixture")
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_the_tool_oracle_calls_get_weather_then_answers(
    ollama_client: Any, fixture_models: Any, stream: bool
) -> None:
    oracle = fixture_models.from_profile(TOOL_ORACLE, modelfile=TOOL_MODELFILE)
    assert "tools" in (capabilities(ollama_client, oracle.name) or ["tools"])
    item = load_suite("tools").item(CONTROL_ITEM)
    question = {"role": "user", "content": item.prompt}
    options = {**GREEDY, "num_predict": 64}
    first = ollama_client.chat(oracle.name, [question], tools=item.tools, options=options, stream=stream)
    assert calls_of(first) == [("get_weather", {"city": "Paris"})], f"{first.tool_calls}, text {first.text!r}"
    assert first.text == ""
    assert first.done_reason == "stop"
    result = grade(item, tool_reply(first.text, first.tool_calls))
    assert result.passed, result.reason

    history = [
        question,
        {"role": "assistant", "content": "", "tool_calls": first.tool_calls},
        {"role": "tool", "content": TOOL_RESULT, "tool_name": "get_weather"},
    ]
    second = ollama_client.chat(oracle.name, history, tools=item.tools, options=options, stream=stream)
    final_sentence = oracle.oracle.more[0][1]
    assert (second.text, second.tool_calls) == (final_sentence, []), f"{second.text!r}, {second.tool_calls}"
    assert second.done_reason == "stop"


@pytest.mark.fixture_weights("random weights are built from a fixture profile")
def test_random_weights_with_the_same_template_make_no_valid_call(
    ollama_client: Any, fixture_models: Any
) -> None:
    model = fixture_models.from_profile(TOOL_ORACLE, modelfile=TOOL_MODELFILE, weights="random")
    assert "tools" in (capabilities(ollama_client, model.name) or ["tools"])
    suite = load_suite("tools")
    item = suite.item(CONTROL_ITEM)
    reply = ollama_client.chat(
        model.name,
        [{"role": "user", "content": suite.format_prompt(item)}],
        tools=item.tools,
        options={**GREEDY, "num_predict": 64},
    )
    result = grade(item, tool_reply(reply.text, reply.tool_calls))
    assert (result.score_strict, result.score_flexible, result.passed) == (0.0, 0.0, False), result.reason
    assert reply.tool_calls == [], f"random weights made a call: {reply.tool_calls}"
