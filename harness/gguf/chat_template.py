"""Audit a GGUF file's chat template (`tokenizer.chat_template`, Jinja) the way a chat client would use it.

`audit_chat_template` renders the template in jinja2's immutable sandbox, with the settings and helpers
Hugging Face transformers gives chat templates (trim_blocks, lstrip_blocks, loop controls, `tojson`,
`raise_exception`, `strftime_now`), for a standard conversation (system, user, assistant, user) with
`add_generation_prompt`. It reports, as (code, message, hint) `TemplateFinding`s with the checker's codes:

* template-hidden-unicode: invisible or bidirectional-control characters in the template text;
* template-unsafe: attribute access to dunder names (`__class__`, `__globals__`...), the `attr` filter, or
  Jinja's `cycler`/`joiner`/`lipsum`/`self` objects (the usual ways out of a template sandbox), or a render
  the sandbox stopped;
* template-error: the template does not parse, raises while rendering, or renders without the last user
  message;
* template-unknown-token: special-token-like text it emits (`<|im_start|>`, `<start_of_turn>`, `[INST]`...)
  that is not a token of the vocabulary;
* template-mismatch (`compare_with_go_template`): the Ollama Go TEMPLATE of a Modelfile builds another
  prompt for the same conversation.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jinja2
import jinja2.nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

STANDARD_CONVERSATION: tuple[Mapping[str, str], ...] = (
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Hello! Who are you?"},
    {"role": "assistant", "content": "I am an assistant. How can I help?"},
    {"role": "user", "content": "What is 2 + 2?"},
)

# Characters that change what a reader sees: zero-width, invisible operators, bidirectional controls, BOM,
# tag characters (and the soft hyphen). Sources: Unicode categories Cf; "Trojan Source" (CVE-2021-42574).
_HIDDEN = re.compile(
    "[\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb"
    "\U000e0000-\U000e007f]"
)
_INTERNAL_NAMES = frozenset({"cycler", "joiner", "lipsum", "self", "config", "request", "__builtins__"})
# Text that looks like a special token: <|name|>, <name_like_this>, </s>, [INST], [/INST]...
_SPECIAL = re.compile(r"<\|[^<>|\s]{1,48}\|>|</?[A-Za-z][A-Za-z0-9_.:-]{0,47}>|\[/?[A-Z][A-Z_]{1,23}\]")
_CONTEXT = 30


@dataclass(frozen=True)
class TemplateFinding:
    """One problem of a chat template, with a checker code."""

    code: str
    message: str
    hint: str


class _Unsafe(Exception):
    """An unsafe construct found in the template's syntax tree."""


def audit_chat_template(
    template: str, vocab: Collection[str] | None, *, bos_token: str = "", eos_token: str = ""
) -> list[TemplateFinding]:
    """Everything wrong with `template`; `vocab` is the set of token strings (None: not checked)."""
    findings = _hidden_characters(template)
    environment = _environment()
    try:
        tree = environment.parse(template)
    except jinja2.TemplateSyntaxError as error:
        findings.append(
            TemplateFinding(
                "template-error",
                f"the chat template does not parse: {error.message} (line {error.lineno})",
                "fix the Jinja syntax, or copy the template from the model's tokenizer_config.json",
            )
        )
        return findings
    unsafe = sorted(set(_unsafe_constructs(tree)))
    if unsafe:
        findings.append(
            TemplateFinding(
                "template-unsafe",
                f"the chat template reaches Python/Jinja internals: {', '.join(unsafe)}",
                "a chat template needs none of these: replace the template with the model's original one",
            )
        )
        return findings  # not rendered: the sandbox should not be put to the test by a hostile file
    rendered = render_chat_template(
        tree, STANDARD_CONVERSATION, bos_token=bos_token, eos_token=eos_token, environment=environment
    )
    if isinstance(rendered, TemplateFinding):
        findings.append(rendered)
        return findings
    if STANDARD_CONVERSATION[-1]["content"] not in rendered:
        findings.append(
            TemplateFinding(
                "template-error",
                "the chat template renders a standard conversation without its last user message "
                f"(rendered {len(rendered)} characters: {_excerpt(rendered, 0)})",
                "the template must loop over `messages` and emit each message's content",
            )
        )
    if vocab is not None:
        missing = sorted({m for m in _SPECIAL.findall(rendered) if m not in vocab})
        if missing:
            findings.append(
                TemplateFinding(
                    "template-unknown-token",
                    f"the chat template emits {', '.join(repr(m) for m in missing[:8])}, which "
                    f"{'is' if len(missing) == 1 else 'are'} not in the vocabulary: the model sees plain "
                    "text, not the special token it was trained on",
                    "use the special tokens of this model's vocabulary (tokenizer.ggml.tokens), or the "
                    "template of the model it was converted from",
                )
            )
    return findings


def render_chat_template(
    template: str | jinja2.nodes.Template,
    messages: Sequence[Mapping[str, Any]],
    *,
    bos_token: str = "",
    eos_token: str = "",
    add_generation_prompt: bool = True,
    environment: ImmutableSandboxedEnvironment | None = None,
) -> str | TemplateFinding:
    """`template` (text, or a tree parsed by `environment`) rendered for `messages` in the sandbox, or the
    finding saying why it could not be."""
    try:
        compiled = (environment or _environment()).from_string(template)
        return compiled.render(
            messages=[dict(m) for m in messages],
            add_generation_prompt=add_generation_prompt,
            bos_token=bos_token,
            eos_token=eos_token,
            tools=None,
            documents=None,
        )
    except SecurityError as error:
        return TemplateFinding(
            "template-unsafe",
            f"the sandbox stopped the chat template: {error}",
            "a chat template needs no access to Python objects: replace it with the model's original one",
        )
    except Exception as error:  # any failure of a file's template is a finding, not a crash
        return TemplateFinding(
            "template-error",
            f"the chat template fails on a standard conversation (system, user, assistant, user): "
            f"{type(error).__name__}: {error}",
            "fix the template so that it renders the messages a chat sends (test it with "
            "transformers' apply_chat_template)",
        )


def compare_with_go_template(
    template: str,
    go_prompt: str | None,
    *,
    go_error: str | None = None,
    bos_token: str = "",
    eos_token: str = "",
) -> TemplateFinding | None:
    """A template-mismatch finding when `go_prompt` - the prompt Ollama builds from a Modelfile TEMPLATE
    for STANDARD_CONVERSATION (or `go_error`, why it could not) - differs from the Jinja template's; None
    when they agree. A leading BOS text in the Jinja output is ignored (Ollama adds BOS as a token)."""
    jinja_prompt = render_chat_template(
        template, STANDARD_CONVERSATION, bos_token=bos_token, eos_token=eos_token
    )
    if isinstance(jinja_prompt, TemplateFinding):
        return None  # reported by audit_chat_template
    if bos_token and jinja_prompt.startswith(bos_token):
        jinja_prompt = jinja_prompt[len(bos_token) :]
    if go_prompt is None:
        return TemplateFinding(
            "template-mismatch",
            f"the Modelfile TEMPLATE cannot be rendered: {go_error}",
            "fix the Go template (Ollama would refuse it too)",
        )
    if go_prompt == jinja_prompt:
        return None
    at = next(
        (i for i, (a, b) in enumerate(zip(go_prompt, jinja_prompt, strict=False)) if a != b),
        min(len(go_prompt), len(jinja_prompt)),
    )
    return TemplateFinding(
        "template-mismatch",
        f"the Modelfile TEMPLATE and the chat template build different prompts for the same conversation, "
        f"from character {at}: Go TEMPLATE {_excerpt(go_prompt, at)} vs chat template "
        f"{_excerpt(jinja_prompt, at)} ({len(go_prompt)} vs {len(jinja_prompt)} characters)",
        "make the TEMPLATE emit exactly what the model's chat template emits (same special tokens, "
        "newlines and order), or drop TEMPLATE so that Ollama derives it from the GGUF",
    )


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, also bounded in work: `range()` yields at most RANGE_BUDGET items over a whole
    render (jinja2 caps one range, not nested ones), and `*` / `**` may not build huge values, so a hostile
    template cannot hang or exhaust the checker."""

    intercepted_binops = frozenset({"*", "**"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.range_left = RANGE_BUDGET
        self.globals["range"] = self._range

    def _range(self, *args: int) -> range:
        items = range(*args)
        self.range_left -= len(items)
        if self.range_left < 0:
            raise SecurityError(f"the template's loops go over more than {RANGE_BUDGET:,} range() items")
        return items

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int) and abs(right) > 64:
            raise SecurityError(f"the template raises a number to the power {right}")
        if operator == "*":
            count = right if isinstance(right, int) else left if isinstance(left, int) else 1
            sized = left if isinstance(right, int) else right
            if isinstance(sized, (str, list, tuple)) and len(sized) * count > MAX_BUILT:
                raise SecurityError(f"the template builds a value of {len(sized) * count:,} items")
        return super().call_binop(context, operator, left, right)


RANGE_BUDGET = 100_000
MAX_BUILT = 1 << 20


def _environment() -> ImmutableSandboxedEnvironment:
    """The environment transformers renders chat templates in (render_jinja_template), sandboxed and
    bounded."""
    environment = _BoundedSandbox(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    environment.filters["tojson"] = _tojson
    environment.globals["raise_exception"] = _raise_exception
    environment.globals["strftime_now"] = _strftime_now
    return environment


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, **kwargs: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, **kwargs)


def _raise_exception(message: str) -> None:
    raise jinja2.TemplateError(message)


def _strftime_now(format: str) -> str:
    import datetime

    return datetime.datetime.now().strftime(format)


def _hidden_characters(template: str) -> list[TemplateFinding]:
    found = [(m.start(), m.group()) for m in _HIDDEN.finditer(template)]
    if not found:
        return []
    shown = ", ".join(f"U+{ord(c):04X} {unicodedata.name(c, 'unnamed')} at {i}" for i, c in found[:5])
    more = f" and {len(found) - 5} more" if len(found) > 5 else ""
    return [
        TemplateFinding(
            "template-hidden-unicode",
            f"the chat template holds {len(found)} invisible or direction-changing character(s): "
            f"{shown}{more} (they hide what the template emits from a reader)",
            "remove them; a chat template needs none (escape them as \\u.... in string literals if meant)",
        )
    ]


def _unsafe_constructs(tree: jinja2.nodes.Template) -> list[str]:
    found: list[str] = []
    for node in tree.find_all(
        (jinja2.nodes.Getattr, jinja2.nodes.Getitem, jinja2.nodes.Name, jinja2.nodes.Filter)
    ):
        if isinstance(node, jinja2.nodes.Getattr) and node.attr.startswith("_"):
            found.append(f".{node.attr}")
        elif (
            isinstance(node, jinja2.nodes.Getitem)
            and isinstance(node.arg, jinja2.nodes.Const)
            and isinstance(node.arg.value, str)
            and node.arg.value.startswith("_")
        ):
            found.append(f"[{node.arg.value!r}]")
        elif isinstance(node, jinja2.nodes.Name) and node.name in _INTERNAL_NAMES:
            found.append(node.name)
        elif isinstance(node, jinja2.nodes.Filter) and node.name == "attr":
            found.append("|attr")
    return found


def _excerpt(text: str, at: int) -> str:
    return repr(text[max(at - _CONTEXT, 0) : at + _CONTEXT])
