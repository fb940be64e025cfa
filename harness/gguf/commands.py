"""`harness gguf ...` sub-commands: `build` (here) and `check` (added by the checker's own function)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from harness.gguf.build import build_gguf
from harness.gguf.spec import TENSOR_TYPES, list_profiles, load_profile


def register(subparsers: Any) -> None:
    """Add the `gguf` command group and its sub-commands."""
    gguf_parser = subparsers.add_parser("gguf", help="build and check GGUF model files")
    gguf_commands = gguf_parser.add_subparsers(dest="gguf_command", metavar="SUBCOMMAND")
    gguf_commands.required = True
    register_build(gguf_commands)
    register_check(gguf_commands)


def register_build(gguf_commands: Any) -> None:
    """`harness gguf build (--profile NAME | --spec FILE.toml) [--type T] [--seed N] -o OUT.gguf`."""
    parser = gguf_commands.add_parser(
        "build",
        help="build a fixture GGUF file from a profile or a spec file",
        description="Build a llama-architecture GGUF file from a named profile "
        f"({', '.join(list_profiles()) or 'see fixtures/'}) or a TOML spec file.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--profile", metavar="NAME", help="a profile in fixtures/ (e.g. tiny, oracle)")
    source.add_argument("--spec", metavar="FILE.toml", help="a TOML spec file")
    parser.add_argument(
        "--type", choices=TENSOR_TYPES, help="tensor type of the 2-D weights (overrides the spec)"
    )
    parser.add_argument("--seed", type=int, help="random seed (overrides the spec)")
    parser.add_argument("-o", "--output", required=True, metavar="OUT.gguf", help="where to write the file")
    parser.set_defaults(func=run_build)


def run_build(args: argparse.Namespace) -> int:
    spec = load_profile(args.profile or args.spec)
    changes: dict[str, Any] = {}
    if args.type:
        changes["tensor_type"] = args.type
    if args.seed is not None:
        changes["seed"] = args.seed
    if changes:
        spec = spec.replace(**changes)
    built = build_gguf(spec, args.output)
    print(f"path: {built.path}")
    print(f"size: {built.size}")
    print(f"sha256: {built.sha256}")
    print(f"spec_hash: {built.spec_hash}")
    return 0


def register_check(gguf_commands: Any) -> None:
    """`harness gguf check FILE [--json] [--deep]`: exit 0 no errors, 1 errors, 2 file unreadable."""
    parser = gguf_commands.add_parser(
        "check",
        help="check any GGUF file for problems llama.cpp/Ollama would fail on",
        description="Read a GGUF file's metadata (not its tensor data, unless --deep) and report every "
        "problem found, root cause first, each with a code, the expected and actual values, and a hint. "
        "Exit status: 0 no errors, 1 errors found, 2 the file cannot be read.",
    )
    parser.add_argument("file", metavar="FILE", help="the .gguf file to check")
    parser.add_argument("--json", action="store_true", help="print the report as a JSON object")
    parser.add_argument("--deep", action="store_true", help="also read the tensor data: NaN/Inf values")
    parser.set_defaults(func=run_check)


def run_check(args: argparse.Namespace) -> int:
    from harness.errors import GGUFReadError
    from harness.gguf.check import check_gguf

    try:
        report = check_gguf(args.file, deep=args.deep)
    except GGUFReadError as error:
        if not args.json:
            raise
        print(json.dumps({"path": args.file, "ok": False, "error": error.message, "hint": error.hint}))
        return error.exit_code
    print(report.to_json() if args.json else report.format_text())
    return 0 if report.ok else 1
