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
from collections.abc import Sequence

from harness import __version__
from harness.errors import HarnessError

# Modules that contribute sub-commands, in the order they appear in `harness --help`: the pipeline's order
# (build and check the GGUF, render the Modelfile, serve it, load it, report on the runs, gate an upgrade).
COMMAND_MODULES = (
    "harness.gguf.commands",
    "harness.modelfile.commands",
    "harness.engine.commands",
    "harness.load.commands",
    "harness.report.commands",
    "harness.upgrade.commands",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every area's sub-commands registered."""
    parser = argparse.ArgumentParser(
        prog="harness",
        description="Integration test harness for models served by Ollama.",
    )
    parser.add_argument("--version", action="version", version=f"ollama-harness {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `harness` console script; returns the exit status."""
    parser = build_parser()
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
