"""Helpers the project's own tests and benchmarks share: pytest in a child process, engines for tests,
waiting with a bound, and GGUF fixtures edited or mutated for the checker and the engine."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import ollama
import psutil
import yaml
from gguf import GGUFValueType

from harness.engine import EmbeddedEngine
from harness.engine.process import free_port
from harness.errors import GGUFReadError
from harness.gguf.build import build_cached, build_gguf, write_gguf
from harness.gguf.plan import KV, GGUFPlan, plan_gguf
from harness.gguf.reader import read_gguf_header
from harness.gguf.spec import ModelSpec, load_profile
from harness.subprocess_server import SubprocessServer

# ------------------------------------------------------------------------------------ child processes


def clean_environ(**overrides: str) -> dict[str, str]:
    """This process's environment without the settings a test run or a CI job would leak into a child."""
    dropped = ("OLLAMA_HOST", "PYTEST_ADDOPTS", "PYTEST_CURRENT_TEST", "GITHUB_")
    env = {key: value for key, value in os.environ.items() if not key.startswith(dropped)}
    return {**env, **overrides}


def pytest_command(run_dir: Path, *args: str) -> list[str]:
    """`python -m pytest -p no:cacheprovider --harness-run-dir RUN_DIR ARGS`: the suites in a child."""
    return [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "--harness-run-dir",
        str(run_dir),
        *args,
    ]


def run_pytest(
    run_dir: Path, *args: str, cwd: Path, timeout: float, env: Mapping[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], float]:
    """`python -m pytest -p no:cacheprovider --harness-run-dir RUN_DIR ARGS` in a child process with a clean
    environment (plus `env`): the finished process (output captured) and its wall time in seconds."""
    command = pytest_command(run_dir, *args)
    started = time.perf_counter()
    done = subprocess.run(
        command,
        cwd=cwd,
        env=clean_environ(**(env or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return done, time.perf_counter() - started


def alive(pid: int) -> bool:
    """The process exists and is not a zombie waiting to be reaped."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll `condition` every 50 ms until it holds (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


# ------------------------------------------------------------------------------------ checkouts

CHECKOUT_IGNORE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "reports",
    ".*cache",
    ".hypothesis",
    "__pycache__",
    "*.egg-info",
    "*.gguf",
    "build",
    "dist",
)


def make_workspace(checkout: Path, dest: Path) -> Path:
    """A copy of `checkout` at `dest`, as a CI job sees it after `scripts/setup-venv.sh`: the project's
    files, and a `.venv` made of links to the running virtual environment with a current install stamp, so
    that setup-venv.sh finds it ready and installs nothing (and never into the real venv)."""
    shutil.copytree(checkout, dest, ignore=CHECKOUT_IGNORE, symlinks=True)
    venv = dest / ".venv"
    venv.mkdir()
    for name in ("bin", "lib", "lib64", "include", "pyvenv.cfg"):
        if (Path(sys.prefix) / name).exists():
            (venv / name).symlink_to(Path(sys.prefix) / name)
    os.utime(dest / "pyproject.toml", (0, 0))
    (venv / ".harness-installed").touch()
    return dest


def check_compose_file(path: Path, timeout: float = 60) -> dict[str, Any]:
    """Validate a compose file against the compose-spec schema (shipped by check-jsonschema, a dev
    dependency, run from this virtual environment) and return it; an AssertionError if it is not valid."""
    checker = Path(sys.prefix) / "bin" / "check-jsonschema"
    done = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"{path.name} is not a valid compose file:\n{done.stdout}{done.stderr}"
    with path.open(encoding="utf-8") as file:
        compose: dict[str, Any] = yaml.safe_load(file)
    return compose


# ------------------------------------------------------------------------------------ engines


def one_thread_engine(models_dir: Path, env: Mapping[str, str] | None = None) -> EmbeddedEngine:
    """An engine (not started) on `models_dir`, logging to `models_dir/engine.log`. Runners use one thread:
    on a busy 2-core machine llama.cpp's spinning worker threads slow tiny models down by orders of
    magnitude."""
    models_dir.mkdir(parents=True, exist_ok=True)
    return EmbeddedEngine(
        models_dir, env={"HARNESS_NUM_THREAD": "1", **(env or {})}, log_path=models_dir / "engine.log"
    )


def _debug_state(engine: EmbeddedEngine) -> dict[str, Any]:
    """The engine's debug endpoint GET /harness/runners: its runners and its queue."""
    return dict(httpx.get(f"{engine.url}/harness/runners", timeout=5).json())


def runner_pids(engine: EmbeddedEngine) -> dict[str, int]:
    """model name -> runner pid."""
    return {runner["model"]: runner["pid"] for runner in _debug_state(engine)["runners"]}


def pending_requests(engine: EmbeddedEngine) -> int:
    """Requests waiting in the engine's queue for a slot or a load."""
    return int(_debug_state(engine)["pending"])


@contextmanager
def stand_in_engine(models_dir: Path, model_names: list[str]) -> Iterator[EmbeddedEngine]:
    """A running engine serving the oracle fixture under each of `model_names` (the stand-in for a
    model pulled from the Ollama registry)."""
    with one_thread_engine(models_dir) as engine:
        client = ollama.Client(host=engine.url, timeout=60)
        digest = client.create_blob(build_cached(load_profile("oracle")).path)
        for name in model_names:
            client.create(model=name, files={"model.gguf": digest})
        yield engine


class RealOllama(SubprocessServer):
    """`with RealOllama(binary, home) as server:` a real `ollama serve` on a free loopback port, in its own
    HOME and models folder under `home`, with cloud features off (how tests compare the engine with real
    Ollama; its log is `home/serve.log`). The binary must lie where Ollama installed it (it finds its runner
    in `../lib/ollama`)."""

    name = "real Ollama server"

    def __init__(self, binary: Path, home: Path, *, start_timeout_s: float = 60.0) -> None:
        super().__init__(start_timeout_s=start_timeout_s)
        self.binary = binary
        self.home = home
        self.log_path = home / "serve.log"

    def _launch(self) -> subprocess.Popen[bytes]:
        self.port = free_port()
        self.home.mkdir(parents=True, exist_ok=True)
        env = {
            **clean_environ(),
            "HOME": str(self.home),
            "OLLAMA_NO_CLOUD": "1",
            "OLLAMA_HOST": self.host,
            "OLLAMA_MODELS": str(self.home / "models"),
        }
        with self.log_path.open("ab") as log_file:
            return subprocess.Popen(
                [str(self.binary), "serve"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
            )

    def _is_ready(self, response: httpx.Response) -> bool:
        return response.text == "Ollama is running"

    def _hint(self) -> str:
        return f"see its log: {self.log_path}"


# ------------------------------------------------------------------------------------ GGUF fixtures


def edited(spec_name: str, path: Path, edit: Callable[[GGUFPlan], object]) -> Path:
    """The fixture `spec_name` written at `path` after `edit(plan)` changed its plan."""
    plan = plan_gguf(load_profile(spec_name))
    plan = dataclasses.replace(plan, kvs=dict(plan.kvs), tensors=list(plan.tensors))
    edit(plan)
    return write_gguf(plan, path).path


def story_breakage(plan: GGUFPlan) -> None:
    """The failure story: keys under 'so8t', no context/embedding length, f64 RoPE base, no tokenizer."""
    kvs: dict[str, KV] = {}
    for key, kv in plan.kvs.items():
        if key.startswith("tokenizer.") or key in ("llama.context_length", "llama.embedding_length"):
            continue
        if key == "llama.rope.freq_base":
            kv = KV(kv.value, GGUFValueType.FLOAT64)
        if key == "general.architecture":
            kv = KV("so8t", GGUFValueType.STRING)
        kvs[key.replace("llama.", "so8t.", 1)] = kv
    plan.kvs = kvs
    plan.architecture = "so8t"


def mutation_seeds(
    spec: ModelSpec, folder: Path, tensor_types: tuple[str, ...] = ("f32", "q8_0")
) -> list[tuple[bytes, int]]:
    """Seed files for mutation fuzzing, one per tensor type, written in `folder`: (file bytes, size of the
    metadata part)."""
    seeds = []
    for tensor_type in tensor_types:
        built = build_gguf(spec.replace(tensor_type=tensor_type), folder / f"seed-{tensor_type}.gguf")
        data_offset = read_gguf_header(built.path).data_offset
        if data_offset is None:
            raise GGUFReadError(f"{built.path}: no tensor data offset", "the builder wrote a broken seed")
        seeds.append((built.path.read_bytes(), data_offset))
    return seeds
