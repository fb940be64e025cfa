"""Prompt assembly by Ollama's rules, checked against the outputs Ollama's own template tests expect
(ollama/ollama template/testdata and template_test.go), with the templates as Ollama ships them."""

from __future__ import annotations

import pytest

from harness.engine.prompt import collate, ollama_template, render_chat, render_generate
from harness.engine.thinking import ThinkSetting
from harness.modelfile.gotemplate import TemplateError

# Ollama's template/llama3-instruct.gotmpl
LLAMA3 = """{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>

{{ .Content }}<|eot_id|>
{{- end }}<|start_header_id|>assistant<|end_header_id|>

"""
# an older llama3-instruct.gotmpl, with both a .Messages and a legacy branch
LLAMA3_BOTH = """{{- if .Messages }}
{{- if .System }}<|start_header_id|>system<|end_header_id|>

{{ .System }}<|eot_id|>
{{- end }}
{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>

{{ .Content }}<|eot_id|>
{{- end }}<|start_header_id|>assistant<|end_header_id|>

{{ else -}}
{{ if .System }}<|start_header_id|>system<|end_header_id|>

{{ .System }}<|eot_id|>{{ end }}{{ if .Prompt }}<|start_header_id|>user<|end_header_id|>

{{ .Prompt }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>

{{ .Response }}<|eot_id|>
{{- end -}}"""
# Ollama's template/chatml.gotmpl
CHATML = """{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
"""
# Ollama's template/gemma-instruct.gotmpl
GEMMA = r"""{{- $system := "" }}
{{- range .Messages }}
{{- if eq .Role "system" }}
{{- if not $system }}{{ $system = .Content }}
{{- else }}{{ $system = printf "%s\n\n%s" $system .Content }}
{{- end }}
{{- continue }}
{{- else if eq .Role "user" }}<start_of_turn>user
{{- if $system }}
{{ $system }}
{{- $system = "" }}
{{- end }}
{{- else if eq .Role "assistant" }}<start_of_turn>model
{{- end }}
{{ .Content }}<end_of_turn>
{{ end }}<start_of_turn>model
"""

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
USER1 = {"role": "user", "content": "Hello, how are you?"}
ASSISTANT = {"role": "assistant", "content": "I'm doing great. How can I help you today?"}
USER2 = {"role": "user", "content": "I'd like to show off how chat templating works!"}

# Ollama's template/testdata/<template>/system-user-assistant-user
EXPECTED_SYSTEM_USER_ASSISTANT_USER = {
    "llama3": (
        "<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHello, how are you?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
        "I'm doing great. How can I help you today?<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n"
        "I'd like to show off how chat templating works!<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    ),
    "chatml": (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "Hello, how are you?<|im_end|>\n"
        "<|im_start|>assistant\nI'm doing great. How can I help you today?<|im_end|>\n<|im_start|>user\n"
        "I'd like to show off how chat templating works!<|im_end|>\n<|im_start|>assistant\n"
    ),
    "gemma": (
        "<start_of_turn>user\nYou are a helpful assistant.\nHello, how are you?<end_of_turn>\n"
        "<start_of_turn>model\n"
        "I'm doing great. How can I help you today?<end_of_turn>\n<start_of_turn>user\n"
        "I'd like to show off how chat templating works!<end_of_turn>\n<start_of_turn>model\n"
    ),
}
TEMPLATES = {"llama3": LLAMA3, "chatml": CHATML, "gemma": GEMMA}


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_chat_matches_ollama_testdata(name: str) -> None:
    messages = [SYSTEM, USER1, ASSISTANT, USER2]
    assert render_chat(TEMPLATES[name], messages, system=None) == EXPECTED_SYSTEM_USER_ASSISTANT_USER[name]


def test_gemma_user_assistant_user_matches_ollama_testdata() -> None:
    expected = (
        "<start_of_turn>user\nHello, how are you?<end_of_turn>\n<start_of_turn>model\n"
        "I'm doing great. How can I help you today?<end_of_turn>\n<start_of_turn>user\n"
        "I'd like to show off how chat templating works!<end_of_turn>\n<start_of_turn>model\n"
    )
    assert render_chat(GEMMA, [USER1, ASSISTANT, USER2], system=None) == expected


def test_older_llama3_with_messages_branch_gives_the_same_prompt() -> None:
    messages = [SYSTEM, USER1, ASSISTANT, USER2]
    # the .Messages branch renders the system from .System; the range renders it again as a message,
    # which is what Ollama does with this template
    rendered = render_chat(LLAMA3_BOTH, messages, system=None)
    system_block = "<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant.<|eot_id|>"
    assert rendered == system_block + EXPECTED_SYSTEM_USER_ASSISTANT_USER["llama3"]


# TestExecuteWithMessages in Ollama's template_test.go: three forms of one template, one expected prompt.
MISTRAL_FORMS = [
    "[INST] {{ if .System }}{{ .System }}\n\n{{ end }}{{ .Prompt }}[/INST] ",
    "[INST] {{ if .System }}{{ .System }}\n\n{{ end }}{{ .Prompt }}[/INST] {{ .Response }}",
    "[INST] {{ if .System }}{{ .System }}\n\n{{ end }}\n{{- range .Messages }}\n"
    '{{- if eq .Role "user" }}{{ .Content }}[/INST] '
    '{{ else if eq .Role "assistant" }}{{ .Content }}[INST] {{ end }}\n'
    "{{- end }}",
]


@pytest.mark.parametrize("template", MISTRAL_FORMS, ids=["no-response", "response", "messages"])
def test_legacy_and_messages_forms_agree(template: str) -> None:
    messages = [
        {"role": "user", "content": "Hello friend!"},
        {"role": "assistant", "content": "Hello human!"},
        {"role": "user", "content": "What is your name?"},
    ]
    expected = "[INST] Hello friend![/INST] Hello human![INST] What is your name?[/INST] "
    assert render_chat(template, messages, system=None) == expected
    with_system = [{"role": "system", "content": "You are a helpful assistant!"}, *messages]
    expected_system = (
        "[INST] You are a helpful assistant!\n\n"
        "Hello friend![/INST] Hello human![INST] What is your name?[/INST] "
    )
    assert render_chat(template, with_system, system=None) == expected_system


@pytest.mark.parametrize(
    "template",
    [
        "[INST] {{ .Prompt }}[/INST] ",
        "[INST] {{ .Prompt }}[/INST] {{ .Response }}",
        "\n{{- range $i, $m := .Messages }}\n"
        '{{- if eq .Role "user" }}[INST] {{ .Content }}[/INST] '
        '{{ else if eq .Role "assistant" }}{{ .Content }}{{ end }}\n'
        "{{- end }}",
    ],
)
def test_last_assistant_message_is_continued(template: str) -> None:
    messages = [
        {"role": "user", "content": "Hello friend!"},
        {"role": "assistant", "content": "Hello human!"},
        {"role": "user", "content": "What is your name?"},
        {"role": "assistant", "content": "My name is Ollama and I"},
    ]
    expected = (
        "[INST] Hello friend![/INST] Hello human![INST] What is your name?[/INST] My name is Ollama and I"
    )
    assert render_chat(template, messages, system=None) == expected


def test_chatml_legacy_response_form() -> None:
    template = (
        "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n"
        "{{ end }}{{ if .Prompt }}<|im_start|>user\n"
        "{{ .Prompt }}<|im_end|>\n{{ end }}<|im_start|>assistant\n{{ .Response }}<|im_end|>\n"
    )
    messages = [
        {"role": "system", "content": "You are a helpful assistant!"},
        {"role": "user", "content": "Hello friend!"},
        {"role": "assistant", "content": "Hello human!"},
        {"role": "user", "content": "What is your name?"},
    ]
    expected = (
        "<|im_start|>system\nYou are a helpful assistant!<|im_end|>\n<|im_start|>user\n"
        "Hello friend!<|im_end|>\n"
        "<|im_start|>assistant\nHello human!<|im_end|>\n<|im_start|>user\nWhat is your name?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert render_chat(template, messages, system=None) == expected


# ---------------------------------------------------------------------------------------------- generate


def test_generate_default_template_is_the_prompt() -> None:
    assert render_generate(None, system=None, prompt="hello the") == "hello the"
    assert render_generate("", system="ignored by the template", prompt="hello the") == "hello the"


def test_generate_fixture_style_template_keeps_the_prompt_intact() -> None:
    assert render_generate("{{ .System }}{{ .Prompt }}", system=None, prompt="hello the") == "hello the"
    assert render_generate("{{ .System }}{{ .Prompt }}", system="S: ", prompt="hello the") == "S: hello the"


def test_generate_request_system_wins_over_modelfile_system() -> None:
    template = "{{ .System }}|{{ .Prompt }}"
    assert render_generate(template, system="", model_system="model", prompt="p") == "model|p"
    assert render_generate(template, system="request", model_system="model", prompt="p") == "request|p"


def test_generate_with_chat_template() -> None:
    expected = "<|im_start|>system\nsys<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert render_generate(CHATML, system="sys", prompt="hi") == expected
    gemma = "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n"
    assert render_generate(GEMMA, system=None, prompt="hi") == gemma


def test_generate_includes_modelfile_messages() -> None:
    shots = [{"role": "user", "content": "1+1"}, {"role": "assistant", "content": "2"}]
    rendered = render_generate(CHATML, system=None, prompt="2+2", model_messages=shots)
    assert rendered == (
        "<|im_start|>user\n1+1<|im_end|>\n<|im_start|>assistant\n2<|im_end|>\n"
        "<|im_start|>user\n2+2<|im_end|>\n<|im_start|>assistant\n"
    )


def test_generate_with_suffix() -> None:
    # TestExecuteWithSuffix in Ollama's template_test.go
    template = (
        "{{- if .Suffix }}<PRE> {{ .Prompt }} <SUF>{{ .Suffix }} <MID>\n{{- else }}{{ .Prompt }}\n{{- end }}"
    )
    assert render_generate(template, system=None, prompt="def add(", suffix="return x") == (
        "<PRE> def add( <SUF>return x <MID>"
    )
    assert render_generate(template, system=None, prompt="hello") == "hello"


# ---------------------------------------------------------------------------------------------- chat rules


def test_chat_modelfile_system_is_prepended_unless_request_has_one() -> None:
    user = {"role": "user", "content": "hi"}
    with_model_system = render_chat(CHATML, [user], system="model system")
    assert with_model_system.startswith("<|im_start|>system\nmodel system<|im_end|>\n")
    own = render_chat(CHATML, [{"role": "system", "content": "mine"}, user], system="model system")
    assert "model system" not in own
    assert own.startswith("<|im_start|>system\nmine<|im_end|>\n")


def test_chat_consecutive_messages_are_merged() -> None:
    messages = [{"role": "user", "content": "Hello"}, {"role": "user", "content": "How are you?"}]
    assert render_chat(CHATML, messages, system=None) == (
        "<|im_start|>user\nHello\n\nHow are you?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_collate_matches_ollama() -> None:
    system, merged = collate(
        [
            {"role": "system", "content": "You are helpful"},
            {"role": "user", "content": "Hello"},
            {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
            {"role": "tool", "content": "72F", "tool_name": "get_temperature"},
            {"role": "system", "content": "Be brief"},
        ]
    )
    assert system == "You are helpful\n\nBe brief"
    assert [(m["role"], m["content"]) for m in merged] == [
        ("system", "You are helpful"),
        ("user", "Hello"),
        ("tool", "sunny"),
        ("tool", "72F"),
        ("system", "Be brief"),
    ]


def test_response_appended_only_when_needed() -> None:
    assert ollama_template("{{ .Prompt }}").vars() == ["prompt", "response"]
    assert ollama_template(CHATML).vars() == ["content", "messages", "role"]


def test_unsupported_template_is_refused_not_misrendered() -> None:
    with pytest.raises(TemplateError, match="not supported"):
        render_chat('{{ template "x" . }}', [USER1], system=None)


# Ollama's template/deepseek.gotmpl and template/gemma3-instruct.gotmpl: slice, len, nested and/not, $last
DEEPSEEK = """{{- if .System }}{{ .System }}{{ end }}
{{- range $i, $_ := .Messages }}
  {{- $last := eq (len (slice $.Messages $i)) 1 }}
  {{- if eq .Role "user" -}}
    <｜User｜>{{ .Content }}
  {{- else if eq .Role "assistant" -}}
    <｜Assistant｜>
    {{- if and $.IsThinkSet (and $last .Thinking) -}}
      <think>
        {{ .Thinking }}
      </think>
    {{- end }}{{ .Content }}{{- if not $last }}<｜end▁of▁sentence｜>{{- end }}
  {{- end }}
  {{- if and $last (ne .Role "assistant") -}}
    <｜Assistant｜>
    {{- if and $.IsThinkSet (not $.Think) -}}
      <think> </think>
    {{ end }}
  {{- end -}}
{{- end -}}
"""
GEMMA3 = """{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "user" }}<start_of_turn>user
{{- if and (eq $i 1) $.System }}
{{ $.System }}
{{ end }}
{{ .Content }}<end_of_turn>
{{ else if eq .Role "assistant" }}<start_of_turn>model
{{ .Content }}<end_of_turn>
{{ end }}
{{- if $last }}<start_of_turn>model
{{ end }}
{{- end }}
"""


def test_deepseek_matches_ollama_testdata() -> None:
    expected = (
        "You are a helpful assistant.<｜User｜>Hello, how are you?<｜Assistant｜>"
        "I'm doing great. How can I help you today?<｜end▁of▁sentence｜>"
        "<｜User｜>I'd like to show off how chat templating works!<｜Assistant｜>"
    )
    assert render_chat(DEEPSEEK, [SYSTEM, USER1, ASSISTANT, USER2], system=None) == expected


def test_deepseek_think_flag_reaches_the_template() -> None:
    rendered = render_chat(DEEPSEEK, [USER1], system=None, think=ThinkSetting(False))
    assert rendered == "<｜User｜>Hello, how are you?<｜Assistant｜><think> </think>\n    "


def test_gemma3_matches_ollama_testdata() -> None:
    expected = (
        "<start_of_turn>user\nYou are a helpful assistant.\n\nHello, how are you?<end_of_turn>\n"
        "<start_of_turn>model\nI'm doing great. How can I help you today?<end_of_turn>\n"
        "<start_of_turn>user\nI'd like to show off how chat templating works!<end_of_turn>\n"
        "<start_of_turn>model\n\n"
    )
    assert render_chat(GEMMA3, [SYSTEM, USER1, ASSISTANT, USER2], system=None) == expected
