"""What a person running the suites sees while they work, and what a CI log gets: on a terminal, the model's
set-up (GGUF from the cache, upload bytes, Ollama's create statuses) and each quality prompt as it is graded;
in a log (not a terminal) none of it, unless -v; under -q nothing."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
from pathlib import Path

import pytest

from harness.testing.helpers import clean_environ

REPO = Path(__file__).resolve().parents[2]
ARGS = (
    "suites/test_math.py",
    "--harness-embedded-engine",
    "--harness-max-items",
    "2",
    "-p",
    "no:cacheprovider",
)
PROMPT_LINE = "math 2/2 "  # a graded prompt: item, verdict, running accuracy
SUMMARY = "math: 2 answers graded, accuracy 0.0% strict"


def run_suites(tmp_path: Path, *extra: str, terminal: bool) -> str:
    """The suites' output, on a pseudo-terminal or a pipe."""
    command = [sys.executable, "-m", "pytest", *ARGS, "--harness-run-dir", str(tmp_path / "reports"), *extra]
    env = clean_environ(COLUMNS="200")
    if not terminal:
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout + done.stderr
    main, child = pty.openpty()
    process = subprocess.Popen(command, cwd=REPO, env=env, stdin=child, stdout=child, stderr=child)
    os.close(child)
    output = bytearray()
    while True:
        ready, _, _ = select.select([main], [], [], 240)
        if not ready:
            process.kill()
            break
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    os.close(main)
    assert process.wait(timeout=60) == 0, output.decode(errors="replace")
    return output.decode(errors="replace")


@pytest.mark.timeout(300)
def test_a_terminal_sees_set_up_and_every_graded_prompt(tmp_path: Path) -> None:
    output = run_suites(tmp_path, terminal=True)
    assert "\r  math 1/2 arith-" in output and f"\r  {PROMPT_LINE}" in output  # one line, rewritten
    assert SUMMARY in output
    assert "oracle: GGUF " in output and "uploading oracle-" in output and "MiB / " in output
    assert "create 'harness-oracle-" in output and ": success" in output  # Ollama's create statuses


@pytest.mark.timeout(300)
def test_a_log_gets_none_of_it_and_q_silences_the_terminal(tmp_path: Path) -> None:
    log = run_suites(tmp_path, terminal=False)
    assert PROMPT_LINE not in log and SUMMARY not in log and "uploading" not in log
    quiet = run_suites(tmp_path, "-q", terminal=True)
    assert PROMPT_LINE not in quiet and SUMMARY not in quiet and "uploading" not in quiet


@pytest.mark.timeout(300)
def test_a_log_with_v_gets_one_line_per_prompt(tmp_path: Path) -> None:
    log = run_suites(tmp_path, "-v", terminal=False)
    lines = log.splitlines()
    assert [line for line in lines if line.startswith("  math 1/2 ")], log[-3000:]
    assert f"  {SUMMARY}" in log
    assert "uploading" not in log  # byte counts are statuses: never in a log
