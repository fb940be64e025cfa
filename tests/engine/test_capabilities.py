"""Model capabilities and the checks Ollama makes with them; generate's `suffix` and token `context`.

Texts and statuses are Ollama's (server/routes.go GenerateHandler and ChatHandler, `Model.Capabilities`).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import ollama
import pytest
from gguf import GGUFValueType

from harness.engine import EmbeddedEngine
from harness.gguf.build import BuiltModel
from harness.gguf.plan import KV
from harness.testing.helpers import edited

from .conftest import create_from_gguf

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("tiny_and_oracle")]
GREEDY = {"temperature": 0, "num_predict": 4}
INSERT_TEMPLATE = "<PRE> {{ .Prompt }} <SUF>{{ .Suffix }} <MID>"
TOOLS_TEMPLATE = "{{ if .Tools }}tools: {{ range .Tools }}{{ . }}{{ end }}{{ end }}{{ .Prompt }}"


def _error(engine: EmbeddedEngine, path: str, body: dict[str, object]) -> tuple[int, str]:
    answer = httpx.post(f"{engine.url}{path}", json=body, timeout=60)
    return answer.status_code, answer.json().get("error", "")


@pytest.fixture(scope="module")
def template_models(
    client: ollama.Client, tiny_gguf: BuiltModel, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Models "fim" (a template with .Suffix), "tooly" (with .Tools), "emb" (a GGUF with a pooling type)."""
    digest = client.create_blob(tiny_gguf.path)
    client.create(model="fim", files={"model.gguf": digest}, template=INSERT_TEMPLATE)
    client.create(model="tooly", files={"model.gguf": digest}, template=TOOLS_TEMPLATE)
    pooled = edited(
        "tiny",
        tmp_path_factory.mktemp("pooled") / "pooled.gguf",
        lambda plan: plan.kvs.__setitem__("llama.pooling_type", KV(1, GGUFValueType.UINT32)),
    )
    create_from_gguf(client, "emb", Path(pooled))


@pytest.mark.usefixtures("template_models")
def test_show_lists_ollamas_capabilities(client: ollama.Client) -> None:
    assert client.show("tiny").capabilities == ["completion"]
    assert client.show("fim").capabilities == ["completion", "insert"]
    assert client.show("tooly").capabilities == ["completion", "tools"]
    assert client.show("emb").capabilities == ["embedding"]


@pytest.mark.usefixtures("template_models")
def test_requests_a_model_cannot_serve_are_400s_with_ollamas_texts(engine: EmbeddedEngine) -> None:
    hi = [{"role": "user", "content": "hi"}]
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    cases = [
        ("/api/generate", {"model": "tiny", "prompt": "a", "suffix": "b"},
         "registry.ollama.ai/library/tiny:latest does not support insert"),
        ("/api/generate", {"model": "tiny", "prompt": "", "suffix": "b"},  # checked before the load, too
         "registry.ollama.ai/library/tiny:latest does not support insert"),
        ("/api/chat", {"model": "tiny", "messages": hi, "tools": [tool]},
         "registry.ollama.ai/library/tiny:latest does not support tools"),
        ("/api/generate", {"model": "tiny", "prompt": "a", "think": True},
         '"tiny" does not support thinking'),
        ("/api/chat", {"model": "tiny", "messages": hi, "think": "high"},
         '"tiny" does not support thinking'),  # Ollama 0.33: a level is thinking too
        ("/api/chat", {"model": "tiny", "messages": hi, "think": "bogus"},
         'invalid think value: "bogus" (must be "high", "medium", "low", "max", true, or false)'),
        ("/api/generate", {"model": "emb", "prompt": "a"}, '"emb" does not support generate'),
        ("/api/chat", {"model": "emb", "messages": hi}, '"emb" does not support chat'),
        ("/api/generate", {"model": "tiny", "prompt": "a", "context": ["x"]},
         "context must be an array of token ids"),
        ("/api/generate", {"model": "tiny", "prompt": "a", "images": ["aGk="]},
         "images are not supported by the embedded engine"),
        ("/api/chat", {"model": "tiny", "messages": [{"role": "user", "content": "a", "images": ["aGk="]}]},
         "images are not supported by the embedded engine"),
    ]  # fmt: skip
    for path, body, text in cases:
        status, error = _error(engine, path, body)
        assert status == 400 and error.startswith(text), (body, status, error)
    unload = httpx.post(f"{engine.url}/api/generate", json={"model": "emb", "keep_alive": 0}, timeout=60)
    assert unload.json()["done_reason"] == "unload"  # unloading needs no capability


@pytest.mark.usefixtures("template_models")
def test_suffix_is_rendered_into_an_insert_template(client: ollama.Client) -> None:
    plain = client.generate("fim", "def add(a, b):", options=GREEDY)
    filled = client.generate("fim", "def add(a, b):", suffix="    return total", options=GREEDY)
    assert filled.prompt_eval_count > plain.prompt_eval_count  # the suffix reached the prompt
    assert filled.done


def test_generate_returns_its_context_and_takes_it_back(client: ollama.Client) -> None:
    first = client.generate("tiny", "hello the", options=GREEDY)
    assert first.context and all(isinstance(token, int) for token in first.context)
    follow = client.generate("tiny", "the", context=first.context, options=GREEDY)
    alone = client.generate("tiny", "the", options=GREEDY)
    assert follow.prompt_eval_count >= alone.prompt_eval_count + len(first.context) - 1
    raw = client.generate("tiny", "hello the", raw=True, options=GREEDY)
    assert raw.context is None  # Ollama returns no context in raw mode
