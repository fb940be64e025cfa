"""Every command README.md shows is run here, so the README cannot rot.

Commands are the lines of indented code blocks and of ```sh / ```bash fences, the `$ ` lines of other fences
(a transcript: the lines under a `$ ` line are its shown output), and code spans in prose that start with a
command word. Each is exercised by its kind, in a copy of the checkout (harness.testing's make_workspace):

- `harness ...`: run for real on files made here (`my-model.gguf` a valid fixture, `so8t.gguf` the tiny
  fixture with its architecture renamed, `broken.gguf` and `donor.gguf` the failure story of
  tests/test_gguf_fix.py, a real run in `reports/`), with exit status 0. A transcript's commands run in
  order and must print exactly what is shown (paths aside). A code span in prose is a mention: the
  sub-command's `--help` must work and list every option the span names.
- `scripts/run-suites.sh ...`: run for real on an embedded engine (the README's `localhost:11434` swapped
  for it, models named by `--harness-model` created on it), narrowed by $PYTEST_ADDOPTS to one test and one
  item.
- `scripts/test.sh ...`: the lint and type checks for real, then pytest with `--collect-only`.
- `pytest ...`: with `--collect-only`.
- `docker compose ...`: a known sub-command and options, and one compose file in the repository root that
  validates against the compose-spec schema.
A command of any other kind fails the test until this file learns to exercise it.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from harness.engine import EmbeddedEngine
from harness.gguf.broken import write_broken
from harness.gguf.build import write_gguf
from harness.gguf.plan import plan_gguf
from harness.gguf.spec import load_profile
from harness.testing.helpers import (
    check_compose_file,
    clean_environ,
    edited,
    make_workspace,
    stand_in_engine,
    story_breakage,
)

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
SHELL_FENCES = {"sh", "bash", "shell"}
PROMPT = "$ "
README_OLLAMA_HOSTS = {"localhost:11434", "127.0.0.1:11434"}
# One quick test and one item per suite run: the point is that the command and its options work.
NARROW_SUITES = "-k test_generate_completes --harness-max-items 1 --harness-num-predict 8"
# A run for `harness report` to read: a load test too, so that its latency metrics exist.
REPORT_SUITES = (
    "-k 'test_generate_completes or test_closed_loop' --harness-max-items 1 --harness-num-predict 8"
)
COMMAND_TIMEOUT_S = 180
COMPOSE_FILES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
# `docker compose` sub-commands a README may show, with the options this test knows they take.
COMPOSE_OPTIONS = {
    "up": {"-d", "--detach", "--wait", "--wait-timeout"},
    "down": {"-v", "--volumes"},
    "pull": set(),
    "ps": set(),
    "logs": {"-f", "--follow"},
}


def kind_of(argv: tuple[str, ...]) -> str:
    """harness, pytest, script, compose, or unknown."""
    program = argv[0].removeprefix(".venv/bin/")
    if program in ("harness", "pytest"):
        return program
    if program.startswith("scripts/"):
        return "script"
    if argv[:2] == ("docker", "compose"):
        return "compose"
    return "unknown"


@dataclass(frozen=True)
class ShownCommand:
    """A command line shown in the README."""

    line: int  # 1-based line in README.md (of the paragraph, for a code span)
    text: str
    argv: tuple[str, ...]
    output: str | None = None  # the output shown under a `$ ` line
    mention: bool = False  # a code span in prose: that the sub-command and options exist
    transcript: int | None = None  # the `$ ` fence it belongs to: its commands run in order

    @property
    def kind(self) -> str:
        return kind_of(self.argv)


def parse_command(line: int, text: str, **fields: object) -> ShownCommand | None:
    argv = tuple(shlex.split(text, comments=True))
    return ShownCommand(line, text.strip(), argv, **fields) if argv else None  # type: ignore[arg-type]


def block_commands(first_line: int, content: str) -> Iterator[ShownCommand]:
    for index, line in enumerate(content.splitlines()):
        command = parse_command(first_line + index, line)
        if command:
            yield command


def fence_commands(first_line: int, content: str, info: str) -> Iterator[ShownCommand]:
    """`$ ` lines (each with the lines under it as its output), else every line of a shell fence."""
    lines = content.splitlines()
    prompts = [index for index, line in enumerate(lines) if line.startswith(PROMPT)]
    for index, end in zip(prompts, [*prompts[1:], len(lines)], strict=False):  # no prompt: none
        output = "\n".join(lines[index + 1 : end])
        text = lines[index][len(PROMPT) :]
        command = parse_command(first_line + index, text, output=output, transcript=first_line)
        if command:
            yield command
    if not prompts and info in SHELL_FENCES:
        yield from block_commands(first_line, content)


def span_commands(line: int, content: str) -> Iterator[ShownCommand]:
    """A code span in prose that starts with a command word; `harness gguf build / check / fix` is three."""
    words = shlex.split(content)
    if not words or kind_of(tuple(words)) == "unknown":
        return
    if "/" in words:
        first, last = words.index("/") - 1, len(words) - words[::-1].index("/")
        for alternative in words[first : last + 1 : 2]:
            argv = (*words[:first], alternative, *words[last + 1 :])
            yield ShownCommand(line, content, argv, mention=True)
    else:
        yield ShownCommand(line, content, tuple(words), mention=True)


def shown_commands(markdown: str) -> list[ShownCommand]:
    """Every command the README shows, in order; outside transcripts each argv once (the first wins)."""
    found: list[ShownCommand] = []
    for token in MarkdownIt("commonmark").parse(markdown):
        start = (token.map or (0, 0))[0] + 1
        if token.type == "code_block":
            found.extend(block_commands(start, token.content))
        elif token.type == "fence":
            found.extend(fence_commands(start + 1, token.content, token.info.strip().split(" ")[0]))
        elif token.type == "inline":
            for child in token.children or []:
                if child.type == "code_inline":
                    found.extend(span_commands(start, child.content))
    unique: dict[object, ShownCommand] = {}
    for command in found:
        unique.setdefault(command.argv if command.transcript is None else command, command)
    return list(unique.values())


COMMANDS = shown_commands(README.read_text(encoding="utf-8"))


def commands_of(*kinds: str) -> list[ShownCommand]:
    """The commands of these kinds outside transcripts."""
    return [command for command in COMMANDS if command.kind in kinds and command.transcript is None]


def transcripts() -> list[list[ShownCommand]]:
    grouped: dict[int, list[ShownCommand]] = {}
    for command in COMMANDS:
        if command.transcript is not None:
            grouped.setdefault(command.transcript, []).append(command)
    return list(grouped.values())


def command_id(command: ShownCommand) -> str:
    return f"L{command.line}:{' '.join(command.argv)}"


def transcript_id(transcript: list[ShownCommand]) -> str:
    return f"L{transcript[0].line}:" + " && ".join(" ".join(command.argv) for command in transcript)


# ------------------------------------------------------------------------------------------ the files


def write_readme_files(workspace: Path) -> None:
    """The files the README's commands name: a valid model, the so8t file of the checker's example, and the
    failure story's file with a donor for its tokenizer (as in tests/test_gguf_fix.py)."""
    tiny, oracle = load_profile("tiny"), load_profile("oracle")
    write_gguf(plan_gguf(tiny), workspace / "my-model.gguf")
    write_broken("unknown-arch", tiny, workspace / "so8t.gguf")
    write_gguf(plan_gguf(oracle), workspace / "donor.gguf")
    edited("oracle", workspace / "broken.gguf", story_breakage)


def readme_models() -> list[str]:
    """The models the README's commands name with --harness-model (created on the engine as stand-ins)."""
    return sorted(
        {
            command.argv[i + 1]
            for command in COMMANDS
            for i, arg in enumerate(command.argv[:-1])
            if arg == "--harness-model"
        }
    )


def swap_hosts(argv: tuple[str, ...], engine: EmbeddedEngine) -> list[str]:
    return [engine.host if arg in README_OLLAMA_HOSTS else arg for arg in argv]


def run_in(
    workspace: Path, argv: list[str], engine: EmbeddedEngine, pytest_options: str = ""
) -> subprocess.CompletedProcess[str]:
    """Run `argv` as the README's reader would, in `workspace` with the venv's tools on PATH and the Ollama
    host of the README being `engine`."""
    env = clean_environ(
        PATH=f"{Path(sys.prefix) / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        OLLAMA_HOST=engine.host,
        PYTEST_ADDOPTS=pytest_options,
    )
    return subprocess.run(
        argv,
        cwd=workspace,
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def explain(done: subprocess.CompletedProcess[str]) -> str:
    return f"exit {done.returncode}\n--- stdout\n{done.stdout[-4000:]}\n--- stderr\n{done.stderr[-3000:]}"


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedEngine]:
    with stand_in_engine(tmp_path_factory.mktemp("models"), readme_models()) as running:
        yield running


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, engine: EmbeddedEngine) -> Path:
    """A checkout with the README's files and one real run in reports/ (so reports/latest exists)."""
    checkout = make_workspace(REPO, tmp_path_factory.mktemp("readme") / "checkout")
    write_readme_files(checkout)
    done = run_in(checkout, [".venv/bin/pytest", "suites/", "-q"], engine, REPORT_SUITES)
    assert done.returncode == 0, explain(done)
    return checkout


# ------------------------------------------------------------------------------------------ the tests


def test_readme_shows_commands_of_known_kinds_only() -> None:
    assert commands_of("harness") and commands_of("script"), "the extraction found no commands"
    unknown = [command.text for command in COMMANDS if command.kind == "unknown"]
    assert not unknown, f"README commands this test cannot exercise (teach tests/test_readme.py): {unknown}"
    in_transcripts = [
        command.text for group in transcripts() for command in group if command.kind != "harness"
    ]
    assert not in_transcripts, f"`$ ` transcripts of other commands than harness: {in_transcripts}"


def test_extraction_reads_blocks_fences_prompts_and_spans() -> None:
    markdown = (
        "Run `harness report --list` or `harness gguf build / check -h`, not `harness/cli.py`.\n\n"
        "    scripts/x.sh --a   # comment\n\n"
        "```\n$ harness gguf check a.gguf\nshown line\n$ harness gguf check a.gguf\n```\n\n"
        "```sh\ndocker compose up -d\n```\n\n"
        "```\nnot a command\n```\n\n"
        "    scripts/x.sh --a\n"
    )
    commands = shown_commands(markdown)
    assert [(c.line, c.argv, c.output, c.mention, c.transcript) for c in commands] == [
        (1, ("harness", "report", "--list"), None, True, None),
        (1, ("harness", "gguf", "build", "-h"), None, True, None),
        (1, ("harness", "gguf", "check", "-h"), None, True, None),
        (3, ("scripts/x.sh", "--a"), None, False, None),
        (6, ("harness", "gguf", "check", "a.gguf"), "shown line", False, 6),
        (8, ("harness", "gguf", "check", "a.gguf"), "", False, 6),
        (12, ("docker", "compose", "up", "-d"), None, False, None),
    ]


def harness_help(workspace: Path, engine: EmbeddedEngine, argv: tuple[str, ...]) -> str:
    """The --help of the sub-command `argv` names (its other words and options are not parsed)."""
    words = [word for word in argv if not word.startswith("-")]
    done = run_in(workspace, [*words, "--help"], engine)
    assert done.returncode == 0, f"`{' '.join(argv)}` names no sub-command: {explain(done)}"
    return done.stdout


@pytest.mark.parametrize("command", [c for c in commands_of("harness") if c.mention], ids=command_id)
def test_harness_mention(command: ShownCommand, workspace: Path, engine: EmbeddedEngine) -> None:
    """A `harness ...` code span in prose: its sub-command exists and its --help lists the options named."""
    help_text = harness_help(workspace, engine, command.argv)
    options = [arg.split("=")[0] for arg in command.argv if arg.startswith("-")]
    missing = [option for option in options if option not in help_text]
    assert not missing, f"`{command.text}`: options not in its --help: {missing}"


@pytest.mark.parametrize("command", [c for c in commands_of("harness") if not c.mention], ids=command_id)
def test_harness_command(command: ShownCommand, workspace: Path, engine: EmbeddedEngine) -> None:
    """A `harness ...` line of a code block runs, on the README's files, with exit status 0."""
    done = run_in(workspace, swap_hosts(command.argv, engine), engine)
    assert done.returncode == 0, explain(done)


@pytest.mark.parametrize("transcript", transcripts(), ids=transcript_id)
def test_harness_transcript(transcript: list[ShownCommand], workspace: Path, engine: EmbeddedEngine) -> None:
    """`$ ` commands run in order and print what the README shows (paths aside), with exit status 0 or 1."""
    for command in transcript:
        done = run_in(workspace, swap_hosts(command.argv, engine), engine)
        assert done.returncode in (0, 1), explain(done)
        shown = [line.rstrip() for line in (command.output or "").splitlines()]
        printed = (done.stdout + done.stderr).replace(f"{workspace}/", "")
        assert [line.rstrip() for line in printed.splitlines()] == shown, (
            f"`{command.text}` prints something else than README.md shows at line {command.line}"
        )


@pytest.mark.parametrize("command", commands_of("script", "pytest"), ids=command_id)
def test_script_or_pytest_command(
    command: ShownCommand, tmp_path: Path, engine: EmbeddedEngine, workspace: Path
) -> None:
    """run-suites.sh runs for real (narrowed); test.sh and pytest lint or collect, without running tests."""
    argv = swap_hosts(command.argv, engine)
    if command.kind == "pytest":
        done = run_in(workspace, [*argv, "--collect-only", "-q"], engine)
        assert done.returncode == 0, explain(done)
        return
    script = REPO / command.argv[0]
    assert script.is_file() and os.access(script, os.X_OK), f"{command.argv[0]} is not an executable script"
    if script.name == "run-suites.sh":  # in a checkout of its own: reports/latest is this run's
        checkout = make_workspace(REPO, tmp_path / "checkout")
        write_readme_files(checkout)
        done = run_in(checkout, argv, engine, NARROW_SUITES)
        assert done.returncode == 0, explain(done)
        assert (checkout / "reports" / "latest" / "run.json").is_file(), explain(done)
        assert "Result: OK" in done.stdout, "run-suites.sh must print the run's report"
    elif script.name == "test.sh":  # in the shared workspace: its mypy cache makes a second run quick
        done = run_in(workspace, [*argv, "--collect-only", "-q"], engine)
        assert done.returncode == 0, explain(done)
        assert " collected" in done.stdout, explain(done)
    else:
        pytest.fail(f"README shows {command.argv[0]}, which tests/test_readme.py does not know how to run")


@pytest.mark.parametrize("command", commands_of("compose"), ids=command_id)
def test_docker_compose_command(command: ShownCommand) -> None:
    files = [REPO / name for name in COMPOSE_FILES if (REPO / name).is_file()]
    assert len(files) == 1, f"`{command.text}` needs exactly one compose file in the repository root: {files}"
    check_compose_file(files[0])
    subcommand, *options = command.argv[2:]
    assert subcommand in COMPOSE_OPTIONS, (
        f"`{command.text}`: unknown docker compose sub-command {subcommand!r}"
    )
    unknown = [option for option in options if option.split("=")[0] not in COMPOSE_OPTIONS[subcommand]]
    assert not unknown, (
        f"`{command.text}`: options this test does not know for `compose {subcommand}`: {unknown}"
    )
