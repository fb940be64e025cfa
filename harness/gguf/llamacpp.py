"""Run llama.cpp (through xllamacpp) on a GGUF file, in a child process, and report what it said.

llama.cpp aborts the whole process on some bad files (GGML_ASSERT), and xllamacpp only raises a generic
"Failed to init server" while the real cause goes to stderr. So every call here runs
`python -m harness.gguf.llamacpp load|generate|tokenize ...` as a child in its own process group, captures its
stderr, extracts llama.cpp's cause line, kills the group on timeout, and never leaves a process behind.
Generation is greedy (temperature 0, top_k 1), 2 threads, no prompt cache.

`judge_files` gives llama.cpp's verdict (load, then a few greedy tokens) on many files with few children:
one child takes a batch of files in turn and reports each before starting the next, so an abort or a hang
costs only the file it happened on; the parent marks that file failed and starts a new child on the rest.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import BuildError

RESULT_MARKER = "HARNESS_LLAMACPP_RESULT "
BEGIN_MARKER = "HARNESS_LLAMACPP_BEGIN "
JUDGE_PROMPT = "hello the"
N_THREADS = 2
# The child keeps its server alive until os._exit: xllamacpp's Server destructor can block forever joining
# its worker thread, so it must never run.
_LIVE_SERVERS: list[Any] = []

# Markers of the line of llama.cpp's stderr that carries the cause of a failed load, in the order Ollama
# prefers them (`ollama_cause_line`).
_CAUSE_MARKERS = (
    "error loading model",
    "GGML_ASSERT",
    "gguf_init_from_",
    "llama_model_load_from_file",
    "error:",
)
# llama.cpp's log prefix: an optional timestamp, then the level letter.
_QUIET_LINE = re.compile(r"^(?:\d+\.\d+\.\d+\.\d+ )?[ID] ")
# The innermost cause (`extract_cause`): the text after the last of llama.cpp's nested prefixes.
_CAUSE_PATTERNS = (
    re.compile(
        r"error loading model(?: hyperparameters| vocabulary)?: "
        r"(?!error loading model|llama_model_loader: failed to load model)(.+)"
    ),
    re.compile(r"gguf_init_from_\w+: (.+)"),
    re.compile(r"(GGML_ASSERT\(.+\) failed)"),
    re.compile(r"^(?:[EW] )?(?:\S+: )?(.*(?:failed to load model|exception|error).*)$", re.IGNORECASE),
)


@dataclass(frozen=True)
class TrialLoad:
    """Outcome of a trial load: `cause` is llama.cpp's own cause line when it failed."""

    ok: bool
    cause: str | None
    stderr: str
    returncode: int | None


@dataclass(frozen=True)
class GenerationResult:
    """Greedy raw completion: the generated text and how many tokens it took."""

    text: str
    n_tokens: int


@dataclass(frozen=True)
class _ChildOutcome:
    result: dict[str, Any] | None
    stderr: str
    returncode: int | None
    timed_out: bool


def extract_cause(stderr: str) -> str | None:
    """llama.cpp's cause line from its log: the text after "error loading model: " (innermost prefix),
    else after "gguf_init_from_*: ", else a GGML_ASSERT, else the first error-looking line."""
    lines = stderr.splitlines()
    for pattern in _CAUSE_PATTERNS:
        for line in lines:
            match = pattern.search(line)
            if match:
                return match.group(1).strip()
    return None


def ollama_cause_line(stderr_text: str) -> str:
    """llama.cpp's cause line from its stderr, from the marker on, as Ollama quotes it in its errors (e.g.
    `error loading model: error loading model hyperparameters: ...`; `extract_cause` gives the innermost
    part).
    Info and debug lines (level letter I or D) are skipped: at verbosity 4 they name the same functions."""
    lines = [line for line in stderr_text.splitlines() if not _QUIET_LINE.match(line)]
    for marker in _CAUSE_MARKERS:
        for line in lines:
            index = line.find(marker)
            if index >= 0:
                return line[index:].strip()
    return ""


def trial_load(path: str | os.PathLike[str], *, n_ctx: int = 256, timeout: float = 60.0) -> TrialLoad:
    """Load `path` in llama.cpp in a child process; never raises for a bad model file."""
    outcome = _run_child(["load", str(path), "--n-ctx", str(n_ctx)], timeout)
    ok = outcome.result is not None and bool(outcome.result.get("ok"))
    return TrialLoad(
        ok=ok,
        cause=None if ok else _failure_cause(outcome, timeout),
        stderr=outcome.stderr,
        returncode=outcome.returncode,
    )


def generate(
    path: str | os.PathLike[str], prompt: str, *, n_predict: int = 16, n_ctx: int = 256, timeout: float = 60.0
) -> GenerationResult:
    """Greedy raw completion of `prompt` (BOS added, no template) by llama.cpp; BuildError with the cause
    if the model does not load or the request fails."""
    args = ["generate", str(path), "--n-ctx", str(n_ctx), "--n-predict", str(n_predict), "--prompt", prompt]
    result = _checked_result(_run_child(args, timeout), timeout, path)
    return GenerationResult(text=str(result["text"]), n_tokens=int(result["n_tokens"]))


def tokenize(path: str | os.PathLike[str], text: str, *, timeout: float = 60.0) -> list[int]:
    """Token ids llama.cpp gives `text` with the model's vocabulary (no BOS, raw text)."""
    result = _checked_result(_run_child(["tokenize", str(path), "--text", text], timeout), timeout, path)
    return [int(t) for t in result["tokens"]]


@dataclass(frozen=True)
class Verdict:
    """llama.cpp's verdict on one file: `ok` when it loaded and generated; else `cause` says why not."""

    path: str
    ok: bool
    cause: str | None
    text: str | None = None


def judge_files(
    paths: Sequence[str | os.PathLike[str]],
    *,
    n_predict: int = 3,
    n_ctx: int = 128,
    batch: int = 25,
    timeout: float = 30.0,
) -> list[Verdict]:
    """llama.cpp's verdict on each of `paths` (load, then `n_predict` greedy tokens after a short prompt),
    in order. Up to `batch` files share one child process; a file that aborts the child, or takes more
    than `timeout` seconds, fails with that cause and the next child starts after it."""
    names = [str(p) for p in paths]
    verdicts: dict[int, Verdict] = {}
    start = 0
    while start < len(names):
        chunk = names[start : start + batch]
        done = _judge_chunk(chunk, n_predict, n_ctx, timeout)
        for offset, verdict in enumerate(done):
            verdicts[start + offset] = verdict
        start += max(len(done), 1)
    return [verdicts[i] for i in range(len(names))]


def _judge_chunk(paths: list[str], n_predict: int, n_ctx: int, timeout: float) -> list[Verdict]:
    """Verdicts for a prefix of `paths` from one child: every file it finished, then the one it died or
    hung on (if any). Never empty: a child that dies before it starts the first file fails that file."""
    args = ["judge", *paths, "--n-ctx", str(n_ctx), "--n-predict", str(n_predict)]
    process = _spawn(args)
    lines: queue.Queue[str | None] = queue.Queue()
    stderr_parts: list[bytes] = []
    readers = [
        threading.Thread(target=_read_lines, args=(process.stdout, lines), daemon=True),
        threading.Thread(target=_read_all, args=(process.stderr, stderr_parts), daemon=True),
    ]
    for reader in readers:
        reader.start()
    results: list[dict[str, Any]] = []
    begun = -1  # the last file the child started
    deadline = time.monotonic() + timeout
    failure: str | None = None
    try:
        while len(results) < len(paths):
            try:
                line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                failure = f"timed out after {timeout:g} s (child killed)"
                break
            if line is None:
                break
            if line.startswith(BEGIN_MARKER):
                begun = int(line[len(BEGIN_MARKER) :])
                deadline = time.monotonic() + timeout
            elif line.startswith(RESULT_MARKER):
                results.append(json.loads(line[len(RESULT_MARKER) :]))
    finally:
        _kill_group(process)
        process.wait()
        for reader in readers:
            reader.join(timeout=5)
    stderr = b"".join(stderr_parts).decode(errors="replace")
    verdicts = []
    for result in results:
        index = int(result["index"])
        if result["ok"]:
            verdicts.append(Verdict(paths[index], True, None, result.get("text")))
        else:
            outcome = _ChildOutcome(result, _own_log(stderr, index), None, False)
            verdicts.append(Verdict(paths[index], False, _failure_cause(outcome, timeout)))
    if len(verdicts) < len(paths) and (begun == len(verdicts) or not verdicts):
        index = len(verdicts)  # the file it died or hung on (a death between files blames none)
        outcome = _ChildOutcome(None, _own_log(stderr, index), process.returncode, False)
        verdicts.append(Verdict(paths[index], False, failure or _failure_cause(outcome, timeout)))
    return verdicts


def _own_log(stderr: str, index: int) -> str:
    """The part of a judge child's stderr written while it worked on file `index`."""
    own = stderr.split(f"{BEGIN_MARKER}{index}\n", 1)[-1]
    return own.split(f"{BEGIN_MARKER}{index + 1}\n", 1)[0]


def _read_lines(stream: Any, lines: queue.Queue[str | None]) -> None:
    for raw in iter(stream.readline, b""):
        lines.put(raw.decode(errors="replace").rstrip("\n"))
    lines.put(None)


def _read_all(stream: Any, parts: list[bytes]) -> None:
    for chunk in iter(lambda: stream.read(4096), b""):
        parts.append(chunk)


def _checked_result(outcome: _ChildOutcome, timeout: float, path: str | os.PathLike[str]) -> dict[str, Any]:
    if outcome.result is None or not outcome.result.get("ok"):
        raise BuildError(
            f"llama.cpp failed on {path}: {_failure_cause(outcome, timeout)}",
            "run `harness gguf check` on the file to find the problem",
        )
    return outcome.result


def _failure_cause(outcome: _ChildOutcome, timeout: float) -> str:
    if outcome.timed_out:
        return f"timed out after {timeout:g} s (child killed)"
    if outcome.result is not None and "error" in outcome.result:
        return str(outcome.result["error"])
    cause = extract_cause(outcome.stderr)
    if cause:
        return cause
    code = outcome.returncode
    if code is not None and code < 0:
        return f"llama.cpp process killed by signal {signal.Signals(-code).name}"
    return f"llama.cpp process exited with status {code} and no cause on stderr"


def _spawn(args: Sequence[str]) -> subprocess.Popen[bytes]:
    """`python -m harness.gguf.llamacpp ARGS` in its own process group, stdout and stderr piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "harness.gguf.llamacpp", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        # no gdb backtrace on GGML_ASSERT (it attaches a debugger and takes seconds)
        env={**os.environ, "OMP_NUM_THREADS": str(N_THREADS), "GGML_NO_BACKTRACE": "1"},
    )


def _run_child(args: Sequence[str], timeout: float) -> _ChildOutcome:
    process = _spawn(args)
    timed_out = False
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(process)
        stdout, stderr = process.communicate()
    except BaseException:
        _kill_group(process)
        process.communicate()
        raise
    _kill_group(process)  # anything the child left in its group
    result = None
    for line in stdout.decode(errors="replace").splitlines():
        if line.startswith(RESULT_MARKER):
            result = json.loads(line[len(RESULT_MARKER) :])
    return _ChildOutcome(result, stderr.decode(errors="replace"), process.returncode, timed_out)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


# ------------------------------------------------------------------------------------------ child side


def _server(path: str, n_ctx: int, n_predict: int = 16) -> Any:
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = path
    params.n_ctx = n_ctx
    params.n_predict = n_predict
    params.n_parallel = 1
    params.cpuparams.n_threads = N_THREADS
    params.cpuparams_batch.n_threads = N_THREADS
    params.sampling.temp = 0.0
    params.sampling.top_k = 1
    params.sampling.seed = 0
    params.cache_prompt = False
    params.warmup = False
    params.fit_params = False  # otherwise the model is loaded twice (a memory-fit probe first)
    params.verbosity = 1  # errors only: keeps the cause line, drops the chatter
    params.hostnames = ["127.0.0.1"]
    params.port = 0
    server = xllamacpp.Server(params)
    _LIVE_SERVERS.append(server)
    return server


def _complete(server: Any, prompt: str, n_predict: int) -> dict[str, Any]:
    reply = server.handle_completions(
        {
            "prompt": prompt,
            "max_tokens": n_predict,
            "temperature": 0.0,
            "top_k": 1,
            "cache_prompt": False,
            "seed": 0,
        }
    )
    if "error" in reply:
        return {"ok": False, "error": reply["error"].get("message", str(reply["error"]))}
    return {
        "ok": True,
        "text": reply["choices"][0]["text"],
        "n_tokens": reply["usage"]["completion_tokens"],
        "finish_reason": reply["choices"][0].get("finish_reason"),
    }


def _judge(paths: Sequence[str], n_ctx: int, n_predict: int) -> None:
    """Child side of `judge_files`: load each file and complete the prompt, one result line per file."""
    for index, path in enumerate(paths):
        marker = f"{BEGIN_MARKER}{index}\n"
        os.write(2, marker.encode())
        sys.stdout.write(marker)
        sys.stdout.flush()
        try:
            result = _complete(_server(path, n_ctx, n_predict), JUDGE_PROMPT, n_predict)
        except RuntimeError:
            result = {"ok": False}  # the cause is on stderr, after this file's marker
        result["index"] = index
        sys.stdout.write(RESULT_MARKER + json.dumps(result) + "\n")
        sys.stdout.flush()


def _child(argv: Sequence[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m harness.gguf.llamacpp")
    parser.add_argument("action", choices=("load", "generate", "tokenize"))
    parser.add_argument("path")
    parser.add_argument("--n-ctx", type=int, default=256)
    parser.add_argument("--n-predict", type=int, default=16)
    parser.add_argument("--prompt", default="")
    parser.add_argument("--text", default="")
    args = parser.parse_args(argv)
    if not Path(args.path).is_file():
        return {"ok": False, "error": f"no such file: {args.path}"}
    try:
        server = _server(args.path, args.n_ctx, args.n_predict)
    except RuntimeError:
        return {"ok": False}  # the cause is on stderr
    if args.action == "load":
        return {"ok": True}
    if args.action == "tokenize":
        import httpx

        response = httpx.post(
            f"{server.listening_address}/tokenize",
            json={"content": args.text, "add_special": False},
            timeout=30,
        )
        return {"ok": True, "tokens": response.json()["tokens"]}
    return _complete(server, args.prompt, args.n_predict)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "judge":
        parser = argparse.ArgumentParser(prog="python -m harness.gguf.llamacpp judge")
        parser.add_argument("paths", nargs="+")
        parser.add_argument("--n-ctx", type=int, default=128)
        parser.add_argument("--n-predict", type=int, default=3)
        args = parser.parse_args(argv[1:])
        _judge(args.paths, args.n_ctx, args.n_predict)
        sys.stderr.flush()
        time.sleep(0.1)  # llama.cpp logs from a thread: let the last cause line reach stderr
        os._exit(0)
    result = _child(argv)
    sys.stdout.write(RESULT_MARKER + json.dumps(result) + "\n")
    sys.stdout.flush()
    if _LIVE_SERVERS:
        # Skip teardown: xllamacpp's Server destructor can block forever joining its threads.
        os._exit(0)
    # No server: exit normally, so llama.cpp's asynchronous logger flushes the cause lines to stderr.
    return 0


if __name__ == "__main__":
    sys.exit(main())
