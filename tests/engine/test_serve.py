"""`harness serve`: its arguments, and a server started from the environment alone (OLLAMA_HOST,
OLLAMA_MODELS) that stops cleanly on SIGINT."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from harness.engine import commands
from harness.engine.process import free_port

pytestmark = pytest.mark.timeout(60)


def test_serve_subcommand_arguments(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers())
    args = parser.parse_args(["serve", "--host", "127.0.0.1:1234", "--models", str(tmp_path)])
    assert args.func is commands.serve and args.host == "127.0.0.1:1234" and args.models == tmp_path


def test_server_configured_by_environment_stops_on_sigint(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "OLLAMA_HOST": f"127.0.0.1:{port}", "OLLAMA_MODELS": str(tmp_path / "models")}
    process = subprocess.Popen(
        [sys.executable, "-m", "harness.engine.commands"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/", timeout=1).text == "Ollama is running":
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.05)
        assert httpx.get(f"http://127.0.0.1:{port}/api/tags").json() == {"models": []}
        assert (tmp_path / "models" / "blobs").is_dir() and (tmp_path / "models" / "manifests").is_dir()
        process.send_signal(signal.SIGINT)
        assert process.wait(15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
