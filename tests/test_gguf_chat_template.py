"""The chat template audit: real-style templates pass; failing, unsafe, hidden-Unicode and unknown-token
templates are named; a Modelfile's Go TEMPLATE is compared with the Jinja template prompt for prompt."""

from __future__ import annotations

import pytest

from harness.engine.prompt import render_chat
from harness.gguf.chat_template import (
    STANDARD_CONVERSATION,
    audit_chat_template,
    compare_with_go_template,
    render_chat_template,
)
from harness.gguf.spec import DEFAULT_CHAT_TEMPLATE

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LLAMA3 = (
    "{{ bos_token }}{% set ns = namespace(sys='') %}{% for m in messages %}"
    "<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
VOCAB = frozenset({"<|im_start|>", "<|im_end|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"})


def _codes(template: str, vocab: frozenset[str] | None = VOCAB) -> list[str]:
    return [f.code for f in audit_chat_template(template, vocab, bos_token="<|begin_of_text|>")]


@pytest.mark.parametrize("template", [CHATML, LLAMA3, DEFAULT_CHAT_TEMPLATE])
def test_real_style_templates_pass(template: str) -> None:
    assert _codes(template, VOCAB | {"<|begin_of_text|>"}) == []


def test_the_standard_conversation_is_rendered_with_a_generation_prompt() -> None:
    rendered = render_chat_template(CHATML, STANDARD_CONVERSATION)
    assert isinstance(rendered, str)
    assert rendered.count("<|im_start|>") == 5 and rendered.endswith("<|im_start|>assistant\n")
    assert "What is 2 + 2?" in rendered and "You are a helpful assistant." in rendered


@pytest.mark.parametrize(
    ("template", "code", "said"),
    [
        ("{% for m in messages %}{{ m['content'] }}", "template-error", "does not parse"),
        ("{{ raise_exception('System role not supported') }}", "template-error", "System role not supported"),
        ("{{ bos_token }}hello", "template-error", "without its last user message"),
        (
            "{{ messages.append(1) }}{% for m in messages %}{{ m.content }}{% endfor %}",
            "template-unsafe",
            "sandbox",
        ),
        ("{{ messages.__class__.__mro__ }}", "template-unsafe", ".__class__, .__mro__"),
        ("{{ self.__init__.__globals__ }}", "template-unsafe", "__globals__"),
        ("{% set c = cycler(1) %}{{ joiner() }}", "template-unsafe", "cycler, joiner"),
        ("{{ messages | attr('__len__') }}", "template-unsafe", "|attr"),
        ("{{ x['__class__'] }}", "template-unsafe", "['__class__']"),
        ("{% for m in messages %}\u202e{{ m.content }}{% endfor %}", "template-hidden-unicode", "U+202E"),
        (
            "{% for m in messages %}<|user|>{{ m.content }}{% endfor %}",
            "template-unknown-token",
            "'<|user|>'",
        ),
    ],
)
def test_each_template_problem_is_named(template: str, code: str, said: str) -> None:
    findings = audit_chat_template(template, VOCAB)
    assert [f.code for f in findings][:1] == [code], findings
    assert said in findings[0].message and findings[0].hint


def test_unknown_tokens_need_a_vocab() -> None:
    assert _codes("{% for m in messages %}<|user|>{{ m.content }}{% endfor %}", None) == []


GO_DEFAULT = "{{ range .Messages }}{{ .Role }}: {{ .Content }}\n{{ end }}assistant:"


def _ollama(go_template: str) -> str:
    """The prompt Ollama's /api/chat builds from `go_template` for the standard conversation."""
    return render_chat(go_template, list(STANDARD_CONVERSATION), system=None)


def test_a_go_template_that_builds_the_same_prompt_agrees() -> None:
    assert compare_with_go_template(DEFAULT_CHAT_TEMPLATE, _ollama(GO_DEFAULT)) is None


def test_a_different_go_template_shows_where_the_prompts_part() -> None:
    go = "{{ range .Messages }}{{ .Role }}:{{ .Content }}\n{{ end }}assistant:"  # no space after the colon
    finding = compare_with_go_template(DEFAULT_CHAT_TEMPLATE, _ollama(go))
    assert finding is not None and finding.code == "template-mismatch"
    assert "from character 7" in finding.message  # 'system:' then ' You' vs 'You'
    assert "'system:You are" in finding.message and "'system: You are" in finding.message


def test_a_leading_bos_text_is_not_a_difference() -> None:
    jinja = "{{ bos_token }}" + DEFAULT_CHAT_TEMPLATE
    assert compare_with_go_template(jinja, _ollama(GO_DEFAULT), bos_token="<s>") is None


def test_a_go_template_that_does_not_render_is_a_mismatch() -> None:
    finding = compare_with_go_template(DEFAULT_CHAT_TEMPLATE, None, go_error="'template' is not supported")
    assert finding is not None and "cannot be rendered: 'template' is not supported" in finding.message


@pytest.mark.parametrize(
    "bomb",
    [
        "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
        "{{ 'x' * 1000000000 }}",
        "{{ ['x'] * 1000000000 }}",
        "{{ 2 ** 100000000 }}",
    ],
)
def test_a_template_bomb_is_stopped_quickly(bomb: str) -> None:
    import time

    start = time.perf_counter()
    findings = audit_chat_template(bomb + "{% for m in messages %}{{ m.content }}{% endfor %}", None)
    assert time.perf_counter() - start < 5  # a hang guard: the sandbox stops it at once
    assert [f.code for f in findings] == ["template-unsafe"] and "sandbox stopped" in findings[0].message
