"""`harness gguf ...` sub-commands: `build` (here) and `check` (added by the checker's own function)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from harness.gguf.build import build_gguf
from harness.gguf.spec import list_profiles, load_profile
from harness.gguf.types import TENSOR_TYPES


def register(subparsers: Any) -> None:
    """Add the `gguf` command group and its sub-commands."""
    gguf_parser = subparsers.add_parser("gguf", help="build and check GGUF model files")
    gguf_commands = gguf_parser.add_subparsers(dest="gguf_command", metavar="SUBCOMMAND")
    gguf_commands.required = True
    register_build(gguf_commands)
    register_check(gguf_commands)
    register_fix(gguf_commands)


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
    from harness.errors import GGUFReadError  # start-up: each sub-command imports what it runs
    from harness.gguf.check import check_gguf  # start-up: each sub-command imports what it runs

    try:
        report = check_gguf(args.file, deep=args.deep)
    except GGUFReadError as error:
        if not args.json:
            raise
        print(json.dumps({"path": args.file, "ok": False, "error": error.message, "hint": error.hint}))
        return error.exit_code
    print(report.to_json() if args.json else report.format_text())
    return 0 if report.ok else 1


def register_fix(gguf_commands: Any) -> None:
    """`harness gguf fix IN.gguf (-o OUT | --in-place | --plan) [repairs]`: exit 0 fixed, 1 not, 2 bad."""
    parser = gguf_commands.add_parser(
        "fix",
        help="repair a broken GGUF file (keys, types, architecture, tokenizer, tensor names)",
        description="Write a corrected copy of a GGUF file: rename the architecture and move its "
        "keys, set or retype keys (types from the checker's architecture table), fill missing "
        "hyperparameters from a Hugging Face config.json or derive them from tensor shapes, copy a missing "
        "tokenizer and chat template from a donor GGUF, rename tensors (Hugging Face names are mapped "
        "automatically). Tensor data is streamed; the input is never changed (--in-place replaces it only "
        "with a copy that passes the checker). Exit status: 0 fixed and passes the checker, 1 could not fix "
        "everything (nothing written, unless --force), 2 unusable input or bad options.",
    )
    parser.add_argument("file", metavar="IN.gguf", help="the GGUF file to repair")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("-o", "--output", metavar="OUT.gguf", help="where to write the corrected copy")
    target.add_argument(
        "--in-place", action="store_true", help="replace IN.gguf (only with a copy that passes)"
    )
    target.add_argument("--plan", action="store_true", help="print what would change and why; write nothing")
    parser.add_argument(
        "--set",
        dest="set_values",
        action="append",
        default=[],
        metavar="KEY[:TYPE]=VALUE",
        help="set a key; its type comes from the architecture table unless given",
    )
    parser.add_argument("--arch", metavar="NAME", help="rename the architecture and move its keys to NAME.*")
    parser.add_argument("--config", metavar="config.json", help="a Hugging Face config.json for missing keys")
    parser.add_argument(
        "--tokenizer-from", metavar="DONOR.gguf", help="copy a missing tokenizer/chat template"
    )
    parser.add_argument(
        "--rename-tensor", action="append", default=[], metavar="OLD=NEW", help="rename a tensor"
    )
    parser.add_argument("--no-hf-names", action="store_true", help="do not map Hugging Face tensor names")
    parser.add_argument("--no-derive", action="store_true", help="do not derive keys from tensor shapes")
    parser.add_argument(
        "--force",
        action="store_true",
        help="write the copy even if it still fails the checker (never with --in-place)",
    )
    parser.set_defaults(func=run_fix)


def run_fix(args: argparse.Namespace) -> int:
    from pathlib import Path

    from harness.gguf.fix_plan import FixOptions, plan_fix  # start-up: each sub-command imports what it runs
    from harness.gguf.fix_write import write_fix  # start-up: each sub-command imports what it runs

    options = FixOptions(
        set_values=tuple(args.set_values),
        arch=args.arch,
        config=Path(args.config) if args.config else None,
        tokenizer_from=Path(args.tokenizer_from) if args.tokenizer_from else None,
        rename_tensors=tuple(args.rename_tensor),
        hf_names=not args.no_hf_names,
        derive=not args.no_derive,
    )
    plan = plan_fix(args.file, options)
    print(plan.format_text())
    if args.plan:
        return 0 if plan.ok else 1
    if not plan.ok and (args.in_place or not args.force):
        hint = "" if args.in_place else " (--force writes it anyway)"
        print(f"nothing written: the copy would still fail the checker{hint}")
        return 1
    result = write_fix(plan, args.output, in_place=args.in_place, force=args.force)
    print(result.report.summary_line())
    return 0 if result.report.ok else 1
