"""Modelfiles: jinja2 rendering and its errors, Ollama's grammar and error texts, /api/create fields."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.engine.prompt import render_chat, render_generate
from harness.errors import ModelfileError
from harness.modelfile.commands import register
from harness.modelfile.gotemplate import parse_template
from harness.modelfile.parse import Command, Modelfile, parse_modelfile, quote
from harness.modelfile.render import list_modelfile_templates, render_modelfile

SHIPPED = ["chatml", "fixture", "fixture-tools", "gemma", "llama3"]
USER_HI = [{"role": "user", "content": "hi"}]
EXPECTED_CHAT = {
    "llama3": (
        "<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    ),
    "chatml": "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "gemma": "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n",
    "fixture": "hi",
    "fixture-tools": "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
}
EXPECTED_STOPS = {
    "fixture-tools": ["<|im_start|>", "<|im_end|>"],
    "llama3": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
    "chatml": ["<|im_start|>", "<|im_end|>"],
    "gemma": ["<start_of_turn>", "<end_of_turn>"],
}


# ---------------------------------------------------------------------------------------------- rendering


def test_shipped_templates_are_listed() -> None:
    assert list_modelfile_templates() == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_each_shipped_template_renders_parses_and_its_template_works(name: str, tmp_path: Path) -> None:
    gguf = tmp_path / "model.gguf"
    text = render_modelfile(name, gguf_path=str(gguf), system="Be brief.", parameters={"num_ctx": 512})
    modelfile = parse_modelfile(text)
    assert modelfile.from_ == str(gguf)
    assert modelfile.system == "Be brief."
    assert modelfile.parameters["num_ctx"] == 512
    assert modelfile.parameters.get("stop", []) == EXPECTED_STOPS.get(name, [])
    assert modelfile.template is not None
    parse_template(modelfile.template)  # inside the supported subset
    assert render_chat(modelfile.template, USER_HI, system=None) == EXPECTED_CHAT[name]


def test_fixture_template_keeps_the_oracle_prompt_intact(tmp_path: Path) -> None:
    modelfile = parse_modelfile(render_modelfile("fixture", gguf_path=str(tmp_path / "oracle.gguf")))
    assert modelfile.template == "{{ .System }}{{ .Prompt }}"
    assert modelfile.system is None and modelfile.parameters == {}
    assert render_generate(modelfile.template, system=None, prompt="hello the") == "hello the"


def test_fixture_template_takes_a_custom_template_and_parameters(tmp_path: Path) -> None:
    text = render_modelfile(
        "fixture",
        gguf_path=str(tmp_path / "m.gguf"),
        template="[INST] {{ .Prompt }} [/INST]\n",
        parameters={"stop": ["</s>", "[INST]"], "temperature": 0, "use_mmap": False},
    )
    modelfile = parse_modelfile(text)
    assert modelfile.template == "[INST] {{ .Prompt }} [/INST]\n"
    assert modelfile.parameters == {"stop": ["</s>", "[INST]"], "temperature": 0.0, "use_mmap": False}


def test_missing_variable_names_file_and_line() -> None:
    with pytest.raises(ModelfileError) as error:
        render_modelfile("llama3")
    assert "llama3.j2:3:" in error.value.message
    assert "'gguf_path' is undefined" in error.value.message


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.j2"
    path.write_text("FROM {{ gguf_path }}\n\nTEMPLATE {{ .Prompt }}\n")
    with pytest.raises(ModelfileError, match=r"bad\.j2:3: template syntax error") as error:
        render_modelfile(path, gguf_path="x")
    assert "{% raw %}" in error.value.hint


def test_sandbox_blocks_unsafe_access(tmp_path: Path) -> None:
    path = tmp_path / "evil.j2"
    path.write_text("FROM x\n{{ ''.__class__.__mro__[1].__subclasses__() }}\n")
    with pytest.raises(ModelfileError, match=r"evil\.j2:2:"):
        render_modelfile(path)


def test_unknown_template_name_lists_the_shipped_ones() -> None:
    with pytest.raises(ModelfileError, match="unknown Modelfile template 'nope'") as error:
        render_modelfile("nope")
    assert "llama3" in error.value.hint


def test_quote_filter_round_trips_awkward_values(tmp_path: Path) -> None:
    system = '  starts with spaces and has "quotes"\nand two lines '
    text = render_modelfile("fixture", gguf_path=str(tmp_path / "m.gguf"), system=system)
    assert parse_modelfile(text).system == system


# ---------------------------------------------------------------------------------------------- grammar


def test_values_bare_quoted_and_triple_quoted() -> None:
    text = (
        "# a comment\n"
        "from llama3:8b\n"
        'SYSTEM "  kept spaces "\n'
        'TEMPLATE """line one\n  line two\n"""\n'
        "License MIT License\n"
        "LICENSE second\n"
        "parameter temperature 0.5\n"
        "MESSAGE user What is 1+1?\n"
        'MESSAGE assistant """2"""\n'
    )
    modelfile = parse_modelfile(text)
    assert modelfile.from_ == "llama3:8b"
    assert modelfile.system == "  kept spaces "
    assert modelfile.template == "line one\n  line two\n"
    assert modelfile.licenses == ["MIT License", "second"]
    assert modelfile.parameters == {"temperature": 0.5}
    assert modelfile.messages == [
        {"role": "user", "content": "What is 1+1?"},
        {"role": "assistant", "content": "2"},
    ]


def test_crlf_and_bom_are_accepted() -> None:
    modelfile = parse_modelfile("\ufeffFROM x\r\nSYSTEM hello\r\n")
    assert (modelfile.from_, modelfile.system) == ("x", "hello")


def test_repeated_stop_accumulates_and_other_parameters_keep_the_last() -> None:
    text = "FROM x\nPARAMETER stop <a>\nPARAMETER num_ctx 1\nPARAMETER stop <b>\nPARAMETER num_ctx 2\n"
    assert parse_modelfile(text).parameters == {"stop": ["<a>", "<b>"], "num_ctx": 2}


def test_parameter_types() -> None:
    text = (
        "FROM x\nPARAMETER seed -1\nPARAMETER top_p .9\nPARAMETER temperature 1e-1\n"
        "PARAMETER use_mmap T\nPARAMETER num_predict +3\n"
    )
    assert parse_modelfile(text).parameters == {
        "seed": -1,
        "top_p": 0.9,
        "temperature": 0.1,
        "use_mmap": True,
        "num_predict": 3,
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "FROM x\nFOO bar\n",
            '(line 2): command must be one of "from", "license", "template", "system", '
            '"adapter", "draft", "renderer", "parser", "parameter", "message", or "requires"',
        ),
        (
            "FROM x\nMESSAGE bot hi\n",
            '(line 2): message role must be one of "system", "user", or "assistant"',
        ),
        ("SYSTEM hello\n", "no FROM line"),
        ("", "no FROM line"),
        ('FROM x\nTEMPLATE """{{ .Prompt }}\n', "unexpected EOF"),
        ("FROM x\nPARAMETER stop\n", "unexpected EOF: stop"),
        ("FROM x\nMESSAGE user\n", "unexpected EOF: user"),
        ("FROM x\nPARAMETER num-ctx 5\n", "unexpected EOF: num"),
        ("FROM\n", '(line 2): command must be one of "from"'),
        ("FROM x\nPARAMETER foo 1\n", "unknown parameter 'foo'"),
        ("FROM x\nPARAMETER Temperature 1\n", "unknown parameter 'Temperature'"),
        ("FROM x\nPARAMETER num_ctx big\n", "invalid int value [big]"),
        ("FROM x\nPARAMETER num_ctx 1.5\n", "invalid int value [1.5]"),
        ("FROM x\nPARAMETER temperature warm\n", "invalid float value [warm]"),
        ("FROM x\nPARAMETER use_mmap maybe\n", "invalid bool value [maybe]"),
        ("FROM x\nREQUIRES latest\n", "requires must be a valid semver (e.g. 0.14.0)"),
    ],
)
def test_errors_use_ollamas_texts(text: str, message: str) -> None:
    with pytest.raises(ModelfileError) as error:
        parse_modelfile(text)
    assert error.value.message.startswith(message)
    assert error.value.hint


def test_requires_accepts_semver_forms() -> None:
    for version in ("0.14.0", "v0.5.7", "1.2", "0.14.0-rc1"):
        assert parse_modelfile(f"FROM x\nREQUIRES {version}\n").requires == version


def test_deprecated_parameter_is_dropped_with_a_warning() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        modelfile = parse_modelfile("FROM x\nPARAMETER mirostat 2\nPARAMETER num_ctx 8\n")
    assert modelfile.parameters == {"num_ctx": 8}
    assert "parameter mirostat is deprecated" in str(caught[0].message)


# ---------------------------------------------------------------------------------------------- round trip

_VALUE = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"))
    | st.sampled_from([" ", "\t", "\n", '"', "#"]),
    max_size=40,
).filter(lambda value: '"""' not in value)


@st.composite
def _commands(draw: st.DrawFn) -> list[Command]:
    commands = [Command("model", "llama3:latest")]
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["system", "template", "license", "message", "stop"]))
        value = draw(_VALUE)
        if kind == "message":
            role = draw(st.sampled_from(["system", "user", "assistant"]))
            commands.append(Command("message", f"{role}: {value}"))
        elif kind == "stop":
            commands.append(Command("stop", value))
        else:
            commands.append(Command(kind, value))
    return commands


@settings(max_examples=150, deadline=None)
@given(_commands())
def test_written_modelfile_parses_back_to_the_same_commands(commands: list[Command]) -> None:
    text = Modelfile(tuple(commands)).text()
    assert list(parse_modelfile(text).commands) == commands


def test_quote_refuses_triple_quotes() -> None:
    with pytest.raises(ModelfileError, match="three double quotes"):
        quote('say """hi"""')


# ---------------------------------------------------------------------------------------------- create fields


def test_create_fields_for_a_local_gguf(tmp_path: Path) -> None:
    gguf = tmp_path / "weights" / "tiny.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF")
    text = (
        "FROM ./weights/tiny.gguf\nTEMPLATE {{ .Prompt }}\nSYSTEM sys\nPARAMETER stop a\nPARAMETER stop b\n"
        "PARAMETER num_ctx 256\nMESSAGE user q\nMESSAGE assistant a\nLICENSE MIT\n"
    )
    modelfile = parse_modelfile(text)
    assert modelfile.local_paths(tmp_path) == {"./weights/tiny.gguf": gguf}
    digest = "sha256:" + "ab" * 32
    fields = modelfile.to_create_fields({gguf: digest}, relative_dir=tmp_path)
    assert fields == {
        "files": {"tiny.gguf": digest},
        "template": "{{ .Prompt }}",
        "system": "sys",
        "parameters": {"stop": ["a", "b"], "num_ctx": 256},
        "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
        "license": ["MIT"],
    }
    legacy = modelfile.to_legacy_text({gguf: digest}, relative_dir=tmp_path)
    assert legacy.startswith(f"FROM @{digest}\nTEMPLATE {{{{ .Prompt }}}}\n")
    assert parse_modelfile(legacy).parameters == modelfile.parameters


def test_create_fields_for_a_model_name() -> None:
    assert parse_modelfile("FROM llama3:8b\nSYSTEM s\n").to_create_fields() == {
        "from": "llama3:8b",
        "system": "s",
    }


def test_local_file_without_digest_and_missing_gguf_are_errors(tmp_path: Path) -> None:
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelfileError, match="no blob digest was given"):
        parse_modelfile("FROM m.gguf\n").to_create_fields({}, relative_dir=tmp_path)
    with pytest.raises(ModelfileError, match=r"FROM gone\.gguf: no such file"):
        parse_modelfile("FROM gone.gguf\n").to_create_fields({}, relative_dir=tmp_path)
    with pytest.raises(ModelfileError, match=r"FROM \./ is a directory"):
        parse_modelfile("FROM ./\n").to_create_fields({}, relative_dir=tmp_path)


# ---------------------------------------------------------------------------------------------- command line


def _run(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="harness")
    register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_cli_render_writes_a_parseable_modelfile(tmp_path: Path) -> None:
    out = tmp_path / "Modelfile"
    (tmp_path / "m.gguf").write_bytes(b"GGUF")  # only its path goes into the Modelfile
    status = _run(
        [
            "modelfile",
            "render",
            "chatml",
            "--gguf",
            str(tmp_path / "m.gguf"),
            "--param",
            "stop=x",
            "--param",
            "stop=y",
            "--param",
            "num_ctx=64",
            "--var",
            "system=hello",
            "-o",
            str(out),
        ]
    )
    assert status == 0
    modelfile = parse_modelfile(out.read_text())
    assert modelfile.parameters == {"stop": ["<|im_start|>", "<|im_end|>", "x", "y"], "num_ctx": 64}
    assert modelfile.system == "hello"


def test_cli_render_with_a_missing_gguf_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from harness.cli import main

    status = main(["modelfile", "render", "gemma", "--gguf", str(tmp_path / "missing.gguf")])
    captured = capsys.readouterr()
    assert status == 2 and captured.out == ""
    assert "--gguf" in captured.err and "missing.gguf: no such file" in captured.err


def test_cli_check_prints_create_fields(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    (tmp_path / "Modelfile").write_text("FROM ./m.gguf\nPARAMETER num_ctx 64\n")
    assert _run(["modelfile", "check", str(tmp_path / "Modelfile")]) == 0
    assert '"m.gguf": "sha256:<digest of m.gguf>"' in capsys.readouterr().out


def test_cli_render_reports_bad_var() -> None:
    with pytest.raises(ModelfileError, match="is not NAME=VALUE"):
        _run(["modelfile", "render", "fixture", "--var", "novalue"])
