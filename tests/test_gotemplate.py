"""The Go text/template subset: syntax, Go's semantics, and refusal of what it does not support."""

from __future__ import annotations

import pytest

from harness.modelfile.gotemplate import GoStruct, TemplateError, parse_template


def render(text: str, data: object = None) -> str:
    return parse_template(text).render({} if data is None else data)


def message(role: str, content: str) -> GoStruct:
    return GoStruct("*api.Message", {"Role": role, "Content": content})


# ---------------------------------------------------------------------------------------------- syntax


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain text", "plain text"),
        ("{{ .Prompt }}", "hi"),
        ("a  {{- .Prompt }}", "ahi"),
        ("a \n\t {{- .Prompt -}} \n b", "ahib"),
        ("a {{.Prompt}} b", "a hi b"),
        ("{{ .Prompt }}\n{{- /* a comment */ -}}\n!", "hi!"),
        ("x{{/* comment\nover lines */}}y", "xy"),
        ('{{ "a\\tb\\n\\"q\\" \\u00e9" }}', 'a\tb\n"q" é'),
        ("{{ `raw \\n` }}", "raw \\n"),
        ("{{ 42 }} {{ -3 }} {{ 1.5 }} {{ 'a' }} {{ 0x10 }}", "42 -3 1.5 97 16"),
        ("{{ true }} {{ false }}", "true false"),
        ("{{-3}}", "-3"),
    ],
)
def test_text_actions_and_literals(text: str, expected: str) -> None:
    assert render(text, {"Prompt": "hi"}) == expected


def test_trim_markers_need_a_space_and_strip_all_whitespace() -> None:
    assert render("a \n {{- 1 -}} \n\n b") == "a1b"
    assert render("a {{ 1 }} b") == "a 1 b"


def test_missing_map_key_prints_no_value_like_go() -> None:
    assert render("[{{ .Nope }}]") == "[<no value>]"
    assert render("{{ if .Nope }}yes{{ else }}no{{ end }}") == "no"


def test_missing_struct_field_is_an_error() -> None:
    template = parse_template("{{ range .Messages }}{{ .Name }}{{ end }}")
    with pytest.raises(TemplateError, match=r"can't evaluate field Name in type \*api\.Message"):
        template.render({"Messages": [message("user", "x")]})


def test_field_of_nil_is_an_error() -> None:
    with pytest.raises(TemplateError, match="nil pointer evaluating"):
        render("{{ .A.B }}")


def test_nested_fields_and_root_variable() -> None:
    data = {"A": {"B": "deep"}, "System": "sys", "Messages": [message("user", "x")]}
    assert render("{{ .A.B }}", data) == "deep"
    assert render("{{ range .Messages }}{{ $.System }}:{{ .Content }}{{ end }}", data) == "sys:x"


# ---------------------------------------------------------------------------------------------- control


def test_if_else_if_else() -> None:
    text = '{{ if eq .R "a" }}A{{ else if eq .R "b" }}B{{ else }}other{{ end }}'
    assert [render(text, {"R": r}) for r in "abc"] == ["A", "B", "other"]


def test_truthiness_follows_go() -> None:
    text = "{{ if . }}t{{ else }}f{{ end }}"
    values = ["", "x", 0, 1, 0.0, [], [0], {}, {"a": 1}, None, False, True, message("u", "")]
    assert [parse_template(text).render(v) for v in values] == list("ftftfftftfftt")


def test_range_forms() -> None:
    data = {"Xs": ["a", "b", "c"], "M": {"k2": 2, "k1": 1}, "Empty": []}
    assert render("{{ range .Xs }}{{ . }}{{ end }}", data) == "abc"
    assert render("{{ range $i, $x := .Xs }}{{ $i }}={{ $x }} {{ end }}", data) == "0=a 1=b 2=c "
    assert render("{{ range $x := .Xs }}{{ $x }}{{ end }}", data) == "abc"
    assert render("{{ range $k, $v := .M }}{{ $k }}{{ $v }}{{ end }}", data) == "k11k22"
    assert render("{{ range .Empty }}x{{ else }}none{{ end }}", data) == "none"
    assert render("{{ range .Missing }}x{{ else }}none{{ end }}", data) == "none"
    assert render("{{ range 3 }}{{ . }}{{ end }}") == "012"


def test_break_and_continue() -> None:
    data = {"Xs": [1, 2, 3, 4]}
    assert render("{{ range .Xs }}{{ if eq . 3 }}{{ break }}{{ end }}{{ . }}{{ end }}", data) == "12"
    assert render("{{ range .Xs }}{{ if eq . 2 }}{{ continue }}{{ end }}{{ . }}{{ end }}", data) == "134"


def test_with_and_else_with() -> None:
    assert render("{{ with .A }}[{{ . }}]{{ else }}none{{ end }}", {"A": "x"}) == "[x]"
    assert render("{{ with .A }}[{{ . }}]{{ else with .B }}<{{ . }}>{{ end }}", {"B": "y"}) == "<y>"


def test_variables_declare_assign_and_scope() -> None:
    text = '{{ $s := "a" }}{{ range .Xs }}{{ $s = printf "%s%s" $s . }}{{ end }}{{ $s }}'
    assert render(text, {"Xs": ["b", "c"]}) == "abc"
    # a variable declared inside a block is gone after {{ end }}
    with pytest.raises(TemplateError, match="undefined variable '\\$y'"):
        parse_template("{{ if true }}{{ $y := 1 }}{{ end }}{{ $y }}")


def test_declaration_prints_nothing() -> None:
    assert render("{{ $x := 5 }}[{{ $x }}]") == "[5]"


# ---------------------------------------------------------------------------------------------- functions


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{{ eq "a" "b" "a" }}', "true"),
        ("{{ ne 1 2 }}", "true"),
        ("{{ lt 1 2 }} {{ le 2 2 }} {{ gt 1 2 }} {{ ge 2 3 }}", "true true false false"),
        ('{{ and 1 0 2 }} {{ and 1 2 }} {{ or 0 "" }} {{ or 0 3 }}', "0 2  3"),
        ("{{ not 0 }} {{ not .Xs }}", "true false"),
        ('{{ len .Xs }} {{ len "héllo" }}', "3 6"),
        ('{{ index .Xs 1 }} {{ index .M "k" }}', "b v"),
        ('{{ slice .Xs 1 }} {{ slice "abcd" 1 3 }}', "[b c] bc"),
        ('{{ print "a" 1 2 "b" }}', "a1 2b"),
        ('{{ printf "%s-%d-%v-%q%%" "x" 7 true "q" }}', 'x-7-true-"q"%'),
        ('{{ .Xs | len }} {{ "x" | printf "%s!" }}', "3 x!"),
        ('{{ json .M }} {{ json "<a&b>" }}', '{"k":"v"} "\\u003ca\\u0026b\\u003e"'),
        ("{{ (len .Xs) }} {{ eq (len .Xs) 3 }}", "3 true"),
        ("{{ 1e6 }} {{ 0.000001 }} {{ 100000.5 }}", "1e+06 1e-06 100000.5"),
    ],
)
def test_functions(text: str, expected: str) -> None:
    assert render(text, {"Xs": ["a", "b", "c"], "M": {"k": "v"}}) == expected


def test_and_or_short_circuit() -> None:
    # the second operand would fail (field of nil) if it were evaluated
    assert render("{{ and .Missing .Missing.Field }}") == "<no value>"
    assert render('{{ or "x" .Missing.Field }}') == "x"


def test_eq_of_different_kinds_is_an_error_unless_nil() -> None:
    with pytest.raises(TemplateError, match="incompatible types for comparison"):
        render('{{ eq 1 "1" }}')
    assert render('{{ eq .Missing "x" }}') == "false"


# ---------------------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('{{ template "x" }}', "{{template}} is not supported"),
        ('{{ define "x" }}y{{ end }}', "{{define}} is not supported"),
        ('{{ block "x" . }}y{{ end }}', "{{block}} is not supported"),
        ("{{ html .X }}", "function 'html' is not supported"),
        ("{{ upper .X }}", "function 'upper' not defined"),
        ("{{ (.X).Y }}", "field access on a parenthesized pipeline is not supported"),
        ('{{ printf "%5s" "x" }}', "printf verb %5s is not supported"),
        ("{{ if .X }}open", "has no {{end}}"),
        ("{{ end }}", "unexpected {{end}}"),
        ("{{ .X ", "unclosed action"),
        ("{{ /* c */ }}", "unrecognized character in action"),
        ("{{/* c */ x }}", "comment ends before closing delimiter"),
        ("{{ $nope }}", "undefined variable '$nope'"),
        ("{{ break }}", "{{break}} outside {{range}}"),
        ('{{ "open }}', "unterminated quoted string"),
        ("{{ }}", "missing value for command"),
        ("{{ nil }}", "nil is not a command"),
    ],
)
def test_unsupported_or_malformed_is_refused(text: str, fragment: str) -> None:
    with pytest.raises(TemplateError) as error:
        render(text, {"X": "x"})
    assert fragment in str(error.value)
    assert "line 1, column" in str(error.value)


def test_error_names_line_and_column() -> None:
    with pytest.raises(TemplateError, match="line 3, column 7"):
        parse_template("a\nb\nc  {{ foo }}")


def test_argument_to_non_function_fails_at_render() -> None:
    template = parse_template('{{ .X "y" }}')
    with pytest.raises(TemplateError, match="can't give argument to non-function X"):
        template.render({"X": "x"})


# ---------------------------------------------------------------------------------------------- tree helpers


def test_vars_matches_ollama_template_parse_cases() -> None:
    # cases from Ollama's template_test.go TestParse (before Parse appends .Response)
    assert parse_template("{{ .System }} {{ .Prompt }}").vars() == ["prompt", "system"]
    assert parse_template("{{ with .Tools }}{{ . }}{{ end }} {{ .System }} {{ .Prompt }}").vars() == [
        "prompt",
        "system",
        "tools",
    ]
    text = (
        '{{ range .Messages }}{{ if eq .Role "tool" }}Tool Result: {{ .ToolName }} {{ .Content }}{{ end }}'
        "{{ end }}"
    )
    assert parse_template(text).vars() == ["content", "messages", "role", "toolname"]
    assert parse_template("{{ range $i, $m := .Messages }}{{ $m.Content }}{{ end }}").vars() == [
        "$m",
        "content",
        "messages",
    ]


def test_truncated_after_response_drops_everything_after_it() -> None:
    template = parse_template("[{{ .Prompt }}]{{ .Response }}<end>{{ if .X }}x{{ end }}")
    assert template.truncated_after_response().render({"Prompt": "p", "Response": "r", "X": 1}) == "[p]r"
    assert template.render({"Prompt": "p", "Response": "r", "X": 1}) == "[p]r<end>x"


def test_with_response_appended() -> None:
    template = parse_template("{{ .Prompt }}").with_response_appended()
    assert template.render({"Prompt": "p", "Response": "r"}) == "pr"
    assert template.vars() == ["prompt", "response"]
