"""The `harness` command.

Each area of the harness contributes its sub-commands through a `register(subparsers)` function in its own
`commands` module; this module only assembles them, runs the chosen one, and maps errors to exit codes:
0 success, 1 the thing checked failed (errors found, regression), 2 unusable input. User errors print a
message and a hint, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Mapping, Sequence

from harness import __version__
from harness.errors import HarnessError

# Top-level commands, in the order they appear in `harness --help` (the pipeline's order: build and check the
# GGUF, render the Modelfile, serve it, load it, report on the runs, gate an upgrade): the module that
# registers each, and its help line. The help line is repeated here so that `harness --help` lists the
# commands without importing their modules, and a command imports only its own area (start-up time:
# `harness gguf check` runs in pre-commit hooks); tests/test_cli.py asserts each line equals the one its
# module registers.
COMMANDS: dict[str, tuple[str, str]] = {
    "gguf": ("harness.gguf.commands", "build and check GGUF model files"),
    "modelfile": ("harness.modelfile.commands", "render, check and list Modelfile templates"),
    "serve": (
        "harness.engine.commands",
        "run the embedded Ollama-compatible engine (llama.cpp runners, Ollama's REST API)",
    ),
    "load": ("harness.load.commands", "a load run against one server (in process, or over Locust workers)"),
    "report": ("harness.report.commands", "report a run and compare it with a baseline"),
    "upgrade-check": (
        "harness.upgrade.commands",
        "run the suites on an old and a new Ollama and gate on the difference",
    ),
}
COMMAND_MODULES = tuple(module for module, _ in COMMANDS.values())


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser. Without `argv`, every area's sub-commands are registered; with it, only the
    command `argv` names is (the others appear with their help line, enough for `harness --help`)."""
    parser = argparse.ArgumentParser(
        prog="harness",
        description="Integration test harness for models served by Ollama.",
    )
    parser.add_argument("--version", action="version", version=f"ollama-harness {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    chosen = next((arg for arg in argv if not arg.startswith("-")), None) if argv is not None else None
    for name, (module, help_line) in COMMANDS.items():
        if argv is None or name == chosen:
            importlib.import_module(module).register(subparsers)
        else:
            subparsers.add_parser(name, help=help_line)
    gguf = subparsers.choices["gguf"]  # its check compares a Modelfile's prompt (--modelfile)
    gguf.set_defaults(ollama_chat_prompt=ollama_chat_prompt)
    return parser


def ollama_chat_prompt(template: str, messages: Sequence[Mapping[str, str]], system: str | None) -> str:
    """The prompt Ollama's /api/chat builds from a Modelfile TEMPLATE (and SYSTEM) for `messages`. Given to
    the gguf commands (`args.ollama_chat_prompt`): `harness gguf check --modelfile` compares it with the chat
    template, and the gguf package sits below the engine that owns Ollama's prompt assembly."""
    from harness.engine.prompt import render_chat  # start-up: imported only when a command asks for it

    return render_chat(template, messages, system=system)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `harness` console script; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    try:
        status = args.func(args)
    except HarnessError as error:
        print(f"harness: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("harness: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
