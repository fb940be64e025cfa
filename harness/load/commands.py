"""`harness load`: a load run against one server, in process (harness.load) or spread over Locust workers.

    harness load --host 127.0.0.1:11434 --model qwen2.5:0.5b --users 8 --requests 200          # in process
    harness load --locust --workers 4 --host ... --model ... --users 32 --duration 60            # Locust
    harness load --import load.json --host ...                  # a multi-machine Locust master's output

Both write a run folder (`reports/<run-id>/`) with one "load" record in `harness.load`'s format (samples,
wall_s, client_cpu_s, summary), labelled with the host and the runner, so `harness report` reads and
compares either. A Locust run also records each worker's accounting (requests started, samples received);
a worker that died or lost samples makes the run incomplete, with the reason.

Exit status: 0 when every request was served; 1 when any request failed (an error, a timeout, or a 503
"server busy" unless `--allow-busy` says the scenario expects them) or the run is incomplete, and the last
line says `Result: FAILED` with why; 2 for unusable options.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import importlib.util
import json
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import DISTRIBUTION
from harness.errors import HarnessError
from harness.load.generator import LoadResult, RequestSample, base_url, run_closed_loop
from harness.progress import Progress, StreamProgress
from harness.runs import RunRecorder

MASTER_LOG = "locust-master.log"
EXPECT_WORKERS_WAIT_S = 30
STOP_MARGIN_S = 30.0
# The locustfile, by path: importing it here would monkey-patch this process with gevent.
LOCUSTFILE = Path(__file__).with_name("locust_user.py")


@dataclass
class LocustRun:
    """What a Locust master wrote (`--harness-out`), with the workers' exit statuses added."""

    data: dict[str, Any]
    worker_exits: list[int | None] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        """Why the run is incomplete: lost workers, samples that did not arrive, workers that crashed."""
        found = [
            f"Locust worker {lost['index']} lost: {lost['why']} ({lost['samples_received']} samples arrived)"
            for lost in self.data.get("lost_workers") or []
        ]
        for index, code in enumerate(self.worker_exits):
            if code not in (0, None):
                found.append(f"Locust worker process {index} exited with status {code}")
        return found

    def to_result(self) -> LoadResult:
        samples = [RequestSample(**sample) for sample in self.data.get("samples") or []]
        return LoadResult(
            mode="closed",
            samples=samples,
            wall_s=float(self.data.get("wall_s") or 0.0),
            client_cpu_s=float(self.data.get("client_cpu_s") or 0.0),
            process_cpu_s=float(self.data.get("client_cpu_s") or 0.0),
            concurrency=self.data.get("users"),
            transport="httpx",  # the nearest of harness.load's transports: a lean HTTP client, no pydantic
            api=self.data.get("api") or "generate",
        )

    def to_record(self, model: str, scenario: str, host: str) -> dict[str, Any]:
        record = self.to_result().to_record(model, scenario)
        record["summary"]["transport"] = "locust"
        record.update(
            host=host,
            runner="locust",
            workers=self.data.get("workers") or [],
            lost_workers=self.data.get("lost_workers") or [],
        )
        return record


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _harness_args(
    *, model: str, api: str, prompt: str, options: str, requests: int, workers: int, timeout_s: float
) -> list[str]:
    return [
        "--harness-model", model, "--harness-api", api, "--harness-prompt", prompt,
        "--harness-options", options, "--harness-requests", str(requests), "--harness-workers", str(workers),
        "--harness-timeout", str(timeout_s), "--harness-stall-timeout", str(min(timeout_s, 60.0)),
    ]  # fmt: skip


def run_locust(
    host: str,
    model: str,
    *,
    workers: int,
    users: int,
    requests: int | None = None,
    duration_s: float | None = None,
    api: str = "generate",
    prompt: str = "Why is the sky blue? Be brief.",
    options: dict[str, Any] | None = None,
    timeout_s: float = 120.0,
    log_dir: Path | None = None,
) -> LocustRun:
    """A headless Locust master and `workers` local worker processes against `host`, for `requests` requests
    in all or `duration_s` seconds (at least one of them); returns what the master collected.

    Raises HarnessError on bad sizes or when the master does not produce its result."""
    if workers < 1 or users < workers:
        raise HarnessError(
            f"--workers {workers} and --users {users}: every worker needs at least one user",
            "use --workers >= 1 and --users >= --workers",
        )
    if not requests and not duration_s:
        raise HarnessError("a Locust run needs an end", "pass --requests N or --duration S (or both)")
    if importlib.util.find_spec("locust") is None:
        raise HarnessError("Locust is not installed", f"pip install '{DISTRIBUTION}[scale]' (or locust)")
    url = base_url(host)
    port = _free_port()
    with contextlib.ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="harness-locust-")))
        logs = log_dir or folder
        out = folder / "result.json"
        common = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--skip-log-setup"]
        harness = _harness_args(
            model=model, api=api, prompt=prompt, options=json.dumps(options or {}), requests=requests or 0,
            workers=workers, timeout_s=timeout_s,
        )  # fmt: skip
        bound = duration_s if duration_s else STOP_MARGIN_S + timeout_s * (requests or 1)
        master_cmd = [
            *common, "--master", "--headless", "--master-bind-host", "127.0.0.1", "--master-bind-port",
            str(port), "--expect-workers", str(workers),
            "--expect-workers-max-wait", str(EXPECT_WORKERS_WAIT_S),
            "-u", str(users), "-r", str(users), "-t", f"{max(1, round(bound))}s", "--host", url,
            "--exit-code-on-error", "0", "--only-summary",
            "--stop-timeout", f"{round(min(timeout_s, 10.0))}s",
            "--harness-out", str(out), *harness,
        ]  # fmt: skip
        worker_cmd = [
            *common, "--worker", "--master-host", "127.0.0.1", "--master-port", str(port), "--host", url,
            *harness,
        ]  # fmt: skip
        master_log = stack.enter_context(open(logs / MASTER_LOG, "w", encoding="utf-8"))
        master = subprocess.Popen(master_cmd, stdout=master_log, stderr=subprocess.STDOUT)
        stack.callback(_stop, master)
        procs = []
        for index in range(workers):
            log = stack.enter_context(open(logs / f"locust-worker-{index}.log", "w", encoding="utf-8"))
            procs.append(subprocess.Popen(worker_cmd, stdout=log, stderr=subprocess.STDOUT))
            stack.callback(_stop, procs[-1])
        try:
            master.wait(timeout=bound + EXPECT_WORKERS_WAIT_S + STOP_MARGIN_S)
        except subprocess.TimeoutExpired as error:
            raise HarnessError(
                f"the Locust master did not end within {error.timeout:g} s",
                f"see {logs / MASTER_LOG}; lower --requests or set --duration",
            ) from error
        exits = [_wait(proc, 10.0) for proc in procs]
        if not out.is_file():
            tail = (logs / MASTER_LOG).read_text(errors="replace")[-2000:] if logs != folder else ""
            raise HarnessError(
                f"the Locust master (exit {master.returncode}) wrote no result",
                f"its log: {logs / MASTER_LOG}" + (f"\n{tail}" if tail else ""),
            )
        return LocustRun(json.loads(out.read_text(encoding="utf-8")), exits)


def _wait(proc: subprocess.Popen[bytes], timeout: float) -> int | None:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop(proc)
        return proc.returncode


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def record_locust_run(
    run: LocustRun, *, reports_dir: Path, host: str, model: str, scenario: str, meta: dict[str, Any]
) -> RunRecorder:
    """Write a finished Locust run as a run folder; incomplete (with the reason) when requests were lost."""
    recorder = RunRecorder.create(reports_dir, {**meta, "server": _server_meta(host)})
    recorder.append(run.to_record(model, scenario, host))
    problems = run.problems
    recorder.finish("incomplete" if problems else "complete", "; ".join(problems) or None)
    return recorder


def _server_meta(host: str) -> dict[str, Any]:
    from harness.server.reach import detect_kind  # start-up: the engine package is needed only here

    return {"host": host, "url": base_url(host), "engine_kind": detect_kind(base_url(host))}


# ------------------------------------------------------------------------------------------------ the CLI


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "load",
        help="a load run against one server (in process, or over Locust workers)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1:11434", help="the server (default 127.0.0.1:11434)")
    parser.add_argument("--model", help="the model to load (required unless --import)")
    parser.add_argument("--users", type=int, default=4, help="concurrent streams (default 4)")
    parser.add_argument("--requests", type=int, help="requests in all")
    parser.add_argument("--duration", type=float, help="seconds (Locust only)")
    parser.add_argument(
        "--api",
        choices=("generate", "chat"),
        default="generate",
        help="the endpoint to load (default generate)",
    )
    parser.add_argument(
        "--prompt",
        default="Why is the sky blue? Be brief.",
        help="the prompt of every request (chat: as the user)",
    )
    parser.add_argument("--options", default="{}", help="request options as a JSON object")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds one request may take")
    parser.add_argument("--scenario", help="scenario name in the run record (default from the settings)")
    parser.add_argument(
        "--allow-busy",
        action="store_true",
        help="503 'server busy' answers are expected (an overload scenario): counted, but not a failure",
    )
    parser.add_argument("--locust", action="store_true", help="run on Locust: a master and --workers workers")
    parser.add_argument("--workers", type=int, default=2, help="local Locust worker processes (default 2)")
    parser.add_argument(
        "--import", dest="import_path", metavar="JSON", help="record a Locust --harness-out file"
    )
    parser.add_argument("--run-dir", default="reports", help="folder of the run records (default reports/)")
    parser.set_defaults(func=handle)


def _options(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise HarnessError(
            f"--options {text!r} is not JSON: {error}", "write e.g. --options '{\"num_predict\": 16}'"
        ) from error
    if not isinstance(value, dict):
        raise HarnessError(
            f"--options {text!r} is not a JSON object", "write e.g. --options '{\"num_predict\": 16}'"
        )
    return value


def handle(args: argparse.Namespace) -> int:
    """Run (or import) the load and write the run folder; 0 when every request was accounted for."""
    run_dir = Path(args.run_dir)
    meta: dict[str, Any] = {"options": {key: value for key, value in vars(args).items() if key != "func"}}
    if args.import_path:
        path = Path(args.import_path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise HarnessError(
                f"cannot read the Locust result {path}: {error}", "pass the --harness-out file"
            ) from error
        run = LocustRun(data)
        model = args.model or data.get("model") or "-"
        scenario = args.scenario or f"locust-u{data.get('users')}"
        recorder = record_locust_run(
            run, reports_dir=run_dir, host=args.host, model=model, scenario=scenario, meta=meta
        )
        return _print(recorder, run.to_result(), run.problems, allow_busy=args.allow_busy)
    if not args.model:
        raise HarnessError("--model is required", "name the model to load, e.g. --model qwen2.5:0.5b")
    options = _options(args.options)
    if args.locust:
        recorder = RunRecorder.create(run_dir, {**meta, "server": _server_meta(args.host)})
        try:
            run = run_locust(
                args.host, args.model, workers=args.workers, users=args.users, requests=args.requests,
                duration_s=args.duration, api=args.api, prompt=args.prompt, options=options,
                timeout_s=args.timeout, log_dir=recorder.path,
            )  # fmt: skip
        except BaseException as error:
            recorder.finish("incomplete", f"the Locust run failed: {error}")
            raise
        scenario = args.scenario or f"c{args.users}"
        record = run.to_record(args.model, scenario, args.host)
        record["failed_requests"] = failed_requests(run.to_result(), allow_busy=args.allow_busy)
        recorder.append(record)
        problems = run.problems
        recorder.finish("incomplete" if problems else "complete", "; ".join(problems) or None)
        return _print(recorder, run.to_result(), problems, allow_busy=args.allow_busy)
    if not args.requests:
        raise HarnessError(
            "an in-process run needs --requests N", "e.g. --requests 100 (--duration is Locust's)"
        )
    progress = LoadProgress(args.requests, StreamProgress())
    with RunRecorder.create(run_dir, {**meta, "server": _server_meta(args.host)}) as recorder:
        result = run_closed_loop(
            args.host, args.model, concurrency=args.users, requests=args.requests, prompt=args.prompt,
            options=options, timeout_s=args.timeout, api=args.api, transport="httpx",
            on_sample=progress.sample,
        )  # fmt: skip
        progress.close()
        record = result.to_record(args.model, args.scenario or f"c{args.users}")
        record.update(
            host=args.host,
            runner="harness.load",
            failed_requests=failed_requests(result, allow_busy=args.allow_busy),
        )
        recorder.append(record)
    return _print(recorder, result, [], allow_busy=args.allow_busy)


class LoadProgress:
    """`load: 37/200 requests, 1 error, 12.3 req/s`: requests done, errors, and the rate over the last
    `window_s` seconds, as a status line (on a terminal only: harness.progress.StreamProgress)."""

    def __init__(
        self,
        total: int,
        progress: Progress,
        *,
        window_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.progress = progress
        self.window_s = window_s
        self.clock = clock
        self.done = 0
        self.errors = 0
        self._ends: collections.deque[float] = collections.deque()
        self.started = clock()

    def sample(self, sample: RequestSample) -> None:
        now = self.clock()
        self.done += 1
        self.errors += sample.outcome != "ok"
        self._ends.append(now)
        while self._ends and self._ends[0] < now - self.window_s:
            self._ends.popleft()
        rate = len(self._ends) / max(min(self.window_s, now - self.started), 1e-3)
        errors = f"{self.errors} error{'' if self.errors == 1 else 's'}"
        self.progress.update(f"load: {self.done}/{self.total} requests, {errors}, {rate:.1f} req/s")

    def close(self) -> None:
        self.progress.close()


def failed_requests(result: LoadResult, *, allow_busy: bool) -> list[str]:
    """Why the requests of a load run count as failed: errors and timeouts, and 503s unless expected."""
    counts = result.counts()
    failed = [f"{counts[kind]} {kind}" for kind in ("error", "timeout") if counts[kind]]
    if counts["busy"] and not allow_busy:
        failed.append(f"{counts['busy']} busy (503; pass --allow-busy when the scenario expects them)")
    return failed


def _print(recorder: RunRecorder, result: LoadResult, problems: list[str], *, allow_busy: bool) -> int:
    summary = result.summary()
    counts = ", ".join(f"{key} {value}" for key, value in summary["counts"].items())
    print(
        f"{summary['requests']} requests ({counts}) in {summary['wall_s']:.1f} s: "
        f"{summary['requests_per_s']:.1f} req/s, {summary['output_tokens_per_s']:.0f} tok/s"
    )
    for problem in problems:
        print(f"INCOMPLETE: {problem}")
    print(f"run {recorder.run_id}: {recorder.path}")
    reasons = [*problems, *failed_requests(result, allow_busy=allow_busy)]
    for kind, count in result.errors_by_kind().items() if reasons else ():
        print(f"  {count} x {kind}")
    print("Result: FAILED: " + "; ".join(reasons) if reasons else "Result: OK")
    return 1 if reasons else 0
