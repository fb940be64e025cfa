"""`harness gguf ...` sub-commands: `build`, `check` and `fix`.

Only what registering the arguments needs is imported at module level; each command imports its own
machinery when it runs (start-up time: `harness gguf check` runs in pre-commit hooks and over folders).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import GGUFReadError, HarnessError
from harness.gguf.spec import list_profiles, load_profile
from harness.gguf.types import TENSOR_TYPES

if TYPE_CHECKING:
    from harness.gguf.check import GoTemplate
    from harness.gguf.findings import CheckReport


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
    from harness.gguf.build import build_gguf  # numpy and gguf-py: for this command only

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
    """`harness gguf check PATH... [--format text|json|sarif] [--deep] [--modelfile FILE]`: exit 0 no
    errors, 1 errors, 2 a file unreadable (or bad options)."""
    parser = gguf_commands.add_parser(
        "check",
        help="check GGUF files for problems llama.cpp/Ollama would fail on",
        description="Read GGUF files' metadata (not their tensor data, unless --deep) and report every "
        "problem found, root cause first, each with a code, the expected and actual values, and a hint; "
        "then one summary line per file. A folder is searched for *.gguf files (recursively). "
        "Exit status: 0 no errors, 1 errors found, 2 a file cannot be read.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="a .gguf file, or a folder of them")
    parser.add_argument(
        "--format",
        choices=("text", "json", "sarif"),
        default="text",
        help="text (default), json (one object; a 'files' list for several files) or sarif (SARIF 2.1.0)",
    )
    parser.add_argument("--json", action="store_true", help="the same as --format json")
    parser.add_argument("--deep", action="store_true", help="also read the tensor data: NaN/Inf values")
    parser.add_argument(
        "--modelfile",
        metavar="FILE",
        help="an Ollama Modelfile: check that its TEMPLATE builds the prompt the chat template builds",
    )
    parser.set_defaults(func=run_check)


def run_check(args: argparse.Namespace) -> int:
    from harness.gguf.check import check_gguf  # start-up: each sub-command imports what it runs

    output = "json" if args.json else args.format
    files = gguf_files(args.paths)
    go_template = _go_template(args.modelfile, args) if args.modelfile else None
    reports: list[CheckReport] = []
    unreadable: list[tuple[str, str, str]] = []
    single = len(args.paths) == 1 and len(files) == 1 and not Path(args.paths[0]).is_dir()
    for path in files:
        try:
            report = check_gguf(path, deep=args.deep, go_template=go_template)
        except GGUFReadError as error:
            if single and output == "text":
                raise
            unreadable.append((str(path), error.message, error.hint))
            if output == "text":
                print(f"{path}: UNREADABLE: {error.message}\n        hint: {error.hint}", flush=True)
            continue
        reports.append(report)
        if output == "text":
            print(report.format_text(), flush=True)
    if output == "text" and not single:
        failed = sum(not r.ok for r in reports)
        print(
            f"checked {len(files)} file(s): {len(reports) - failed} OK, {failed} FAIL, "
            f"{len(unreadable)} unreadable"
        )
    elif output == "json":
        print(_json_output(reports, unreadable, single))
    elif output == "sarif":
        from harness.gguf.sarif import sarif_log

        print(json.dumps(sarif_log(reports, unreadable), indent=2))
    if unreadable:
        return GGUFReadError.exit_code
    return 0 if all(r.ok for r in reports) else 1


def gguf_files(paths: list[str]) -> list[Path]:
    """The files named by `paths`: files as given, folders searched for *.gguf (sorted), in order."""
    files: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*.gguf") if p.is_file())
            if not found:
                raise HarnessError(f"no .gguf files in {path}", "give a .gguf file or a folder holding some")
            files.extend(found)
        else:
            files.append(path)  # a missing file is reported by the checker, with the others
    return files


def _go_template(modelfile: str, args: argparse.Namespace) -> GoTemplate:
    """The prompt Ollama builds from `modelfile`'s TEMPLATE for the chat template audit's conversation,
    with the renderer the command line hands every command (the engine's prompt assembly)."""
    from harness.gguf.chat_template import STANDARD_CONVERSATION
    from harness.gguf.check import GoTemplate
    from harness.modelfile.gotemplate import TemplateError
    from harness.modelfile.parse import parse_modelfile

    try:
        text = Path(modelfile).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise HarnessError(
            f"cannot read Modelfile {modelfile}: {error}", "give the path of a Modelfile"
        ) from None
    parsed = parse_modelfile(text)
    if not parsed.template:
        raise HarnessError(
            f"Modelfile {modelfile} has no TEMPLATE to compare with the chat template",
            "add a TEMPLATE, or leave out --modelfile",
        )
    try:
        prompt = args.ollama_chat_prompt(parsed.template, list(STANDARD_CONVERSATION), parsed.system)
    except TemplateError as error:
        return GoTemplate(None, str(error))
    return GoTemplate(prompt)


def _json_output(reports: list[CheckReport], unreadable: list[tuple[str, str, str]], single: bool) -> str:
    entries: list[dict[str, Any]] = [report.to_dict() for report in reports]
    entries += [{"path": p, "ok": False, "error": m, "hint": h} for p, m, h in unreadable]
    if single:
        return json.dumps(entries[0], indent=2, default=str)
    return json.dumps({"ok": all(e["ok"] for e in entries), "files": entries}, indent=2, default=str)


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
