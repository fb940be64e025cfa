"""Where the Modelfile SYSTEM and MESSAGEs go in the prompt (Ollama's ChatHandler and GenerateHandler),
read back from the engine's debug log of the prompt it sends to llama.cpp."""

from __future__ import annotations

import json
from collections.abc import Iterator

import ollama
import pytest

from harness.engine import EmbeddedEngine
from harness.gguf.build import BuiltModel

from .conftest import create_from_gguf

pytestmark = pytest.mark.timeout(120)

ECHO_TEMPLATE = "{{ range .Messages }}[{{ .Role }}:{{ .Content }}]{{ end }}"
STORED = [{"role": "user", "content": "m-user"}, {"role": "assistant", "content": "m-assistant"}]
STORED_TEXT = "[user:m-user][assistant:m-assistant]"
ONE_TOKEN = {"num_predict": 1, "temperature": 0}


@pytest.fixture(scope="module")
def debug_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedEngine]:
    models = tmp_path_factory.mktemp("models")
    with EmbeddedEngine(
        models, env={"HARNESS_NUM_THREAD": "1"}, log_path=models / "engine.log", log_level="debug"
    ) as running:
        yield running


@pytest.fixture(scope="module")
def client(debug_engine: EmbeddedEngine, oracle_gguf: BuiltModel) -> ollama.Client:
    client = ollama.Client(host=debug_engine.url, timeout=60)
    create_from_gguf(client, "base", oracle_gguf.path)
    client.create(
        model="withsystem", from_="base", template=ECHO_TEMPLATE, system="sys-model", messages=STORED
    )  # type: ignore[arg-type]
    return client


def last_prompt(engine: EmbeddedEngine) -> str:
    lines = [line for line in engine.log_path.read_text().splitlines() if "rendered prompt for " in line]
    assert lines, "the engine logged no prompt (is it at debug level?)"
    return str(json.loads(lines[-1].split(": ", 1)[1]))


def test_chat_puts_the_modelfile_system_first_unless_the_request_starts_with_one(
    client: ollama.Client, debug_engine: EmbeddedEngine
) -> None:
    client.chat(model="withsystem", messages=[{"role": "user", "content": "hi"}], options=ONE_TOKEN)
    assert last_prompt(debug_engine) == f"[system:sys-model]{STORED_TEXT}[user:hi]"
    client.chat(
        model="withsystem",
        messages=[{"role": "system", "content": "sys-req"}, {"role": "user", "content": "hi"}],
        options=ONE_TOKEN,
    )
    assert last_prompt(debug_engine) == f"{STORED_TEXT}[system:sys-req][user:hi]"


def test_generate_puts_the_request_system_or_the_modelfile_one_before_the_messages(
    client: ollama.Client, debug_engine: EmbeddedEngine
) -> None:
    client.generate(model="withsystem", prompt="hi", options=ONE_TOKEN)
    assert last_prompt(debug_engine) == f"[system:sys-model]{STORED_TEXT}[user:hi]"
    client.generate(model="withsystem", prompt="hi", system="sys-req", options=ONE_TOKEN)
    assert last_prompt(debug_engine) == f"[system:sys-req]{STORED_TEXT}[user:hi]"
