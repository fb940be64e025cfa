"""`harness modelfile ...`: render a Modelfile template, check a Modelfile, list the shipped templates."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from harness.errors import ModelfileError
from harness.modelfile.gotemplate import TemplateError, parse_template
from harness.modelfile.parse import parse_modelfile
from harness.modelfile.render import MODELFILES_DIR, list_modelfile_templates, render_modelfile


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `modelfile render|check|list` to the `harness` command."""
    parser = subparsers.add_parser("modelfile", help="render, check and list Modelfile templates")
    commands = parser.add_subparsers(dest="modelfile_command", metavar="SUBCOMMAND")
    commands.required = True

    render = commands.add_parser(
        "render",
        help="render a Modelfile template (modelfiles/<name>.j2 or a path) and check the result",
        description="Render a jinja2 Modelfile template, then parse the result with Ollama's grammar.",
    )
    render.add_argument("template", help=f"template name ({', '.join(list_modelfile_templates())}) or path")
    render.add_argument("--gguf", type=Path, help="the model file (sets gguf_path)")
    render.add_argument(
        "--var", action="append", default=[], metavar="NAME=VALUE", help="a template variable (repeatable)"
    )
    render.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a PARAMETER for the `parameters` variable (repeatable; a repeated name gives a list)",
    )
    render.add_argument("-o", "--output", type=Path, help="write the Modelfile here instead of stdout")
    render.set_defaults(func=render_command)

    check = commands.add_parser(
        "check", help="parse a Modelfile and print the /api/create fields it gives (as JSON)"
    )
    check.add_argument("modelfile", type=Path, help="the Modelfile to parse")
    check.set_defaults(func=check_command)

    listing = commands.add_parser("list", help="list the shipped Modelfile templates")
    listing.set_defaults(func=list_command)


def _pairs(items: list[str], option: str) -> list[tuple[str, str]]:
    pairs = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ModelfileError(f"{option} {item!r} is not NAME=VALUE", f"write {option} name=value")
        pairs.append((name, value))
    return pairs


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
        handle.write(text)
        temporary = handle.name
    os.replace(temporary, path)


def _warn_unsupported_template(text: str | None) -> None:
    if text is None:
        return
    try:
        parse_template(text)
    except TemplateError as error:
        print(
            f"harness: warning: the TEMPLATE uses Go template features the embedded engine does not support: "
            f"{error}",
            file=sys.stderr,
        )


def render_command(args: argparse.Namespace) -> int:
    variables: dict[str, object] = dict(_pairs(args.var, "--var"))
    if args.gguf is not None:
        gguf = args.gguf.expanduser()
        if not gguf.is_file():
            raise ModelfileError(
                f"--gguf {args.gguf}: no such file",
                "pass the path of the GGUF file the Modelfile should name",
            )
        variables["gguf_path"] = str(gguf.resolve())
    if args.param:
        parameters: dict[str, object] = {}
        for name, value in _pairs(args.param, "--param"):
            if name in parameters:
                previous = parameters[name]
                parameters[name] = [*previous, value] if isinstance(previous, list) else [previous, value]
            else:
                parameters[name] = value
        variables["parameters"] = parameters
    text = render_modelfile(args.template, **variables)
    modelfile = parse_modelfile(text)
    _warn_unsupported_template(modelfile.template)
    if args.output is not None:
        _write_atomically(args.output, text)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def check_command(args: argparse.Namespace) -> int:
    try:
        text = args.modelfile.read_text(encoding="utf-8")
    except OSError as error:
        raise ModelfileError(f"cannot read {args.modelfile}: {error.strerror}", "check the path") from None
    modelfile = parse_modelfile(text)
    _warn_unsupported_template(modelfile.template)
    relative_dir = args.modelfile.resolve().parent
    placeholders = {
        path: f"sha256:<digest of {path.name}>" for path in modelfile.local_paths(relative_dir).values()
    }
    fields = modelfile.to_create_fields(placeholders, relative_dir=relative_dir)
    print(json.dumps(fields, indent=2, ensure_ascii=False))
    return 0


def list_command(args: argparse.Namespace) -> int:
    for name in list_modelfile_templates():
        print(f"{name}\t{MODELFILES_DIR / (name + '.j2')}")
    return 0
