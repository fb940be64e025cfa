"""A Locust user that streams Ollama generate/chat requests, for load spread over many processes or machines.

Run it through `harness load --locust --workers N` (a headless master and N local worker processes, results
in a run record), or with Locust's own flags across machines::

    # on the master machine (results written to load.json, read by `harness load --import`)
    locust -f harness/load/locust_user.py --master --headless --expect-workers 4 -u 32 -r 32 -t 60s \\
        --host http://gpu-box:11434 --harness-model qwen2.5:0.5b --harness-out load.json
    # on each worker machine
    locust -f harness/load/locust_user.py --worker --master-host MASTER --harness-model qwen2.5:0.5b

Each request is measured like `harness.load` does it (a `time.perf_counter()` stamp per content chunk; TTFT,
inter-token latencies, end-to-end time and output tokens derived afterwards; one outcome per request: ok,
busy (503), timeout, error) and reported to Locust as custom request events (request_type `ttft`, `itl` (the
request's mean inter-token latency), `e2e` (its response length is the output tokens); failures carry the
error), so Locust's own tables and CSVs show them. The raw samples also travel to the master (custom
messages) and end up in the harness's "load" record format.

Accounting: every worker counts the requests it started and sends its samples in batches and a final
message with that count. The master's result lists, per worker, requests started and samples received; a
worker that never sent its final message (it died, or went missing for Locust's heartbeat) is listed in
`lost_workers`, so lost requests are reported, never silently dropped. With `--harness-requests R` the run
ends after R requests in all (split over the workers by their index), else at Locust's `--run-time`.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
from typing import Any

import gevent
from geventhttpclient import HTTPClient
from geventhttpclient.url import URL
from locust import User, constant, events, task
from locust.env import Environment
from locust.exception import StopUser
from locust.runners import STATE_MISSING, MasterRunner, WorkerRunner

log = logging.getLogger(__name__)

SAMPLES_MESSAGE = "harness_samples"
FINAL_MESSAGE = "harness_final"
STOP_MESSAGE = "harness_stop"
BATCH_SIZE = 200
BATCH_INTERVAL_S = 1.0
FINAL_WAIT_S = 10.0
DONE_POLL_S = 0.2
BUSY_STATUS = 503
READ_SIZE = 65536


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    group = parser.add_argument_group("ollama-harness")
    group.add_argument("--harness-model", default="harness-load", help="model to load (default harness-load)")
    group.add_argument("--harness-api", choices=("generate", "chat"), default="generate")
    group.add_argument("--harness-prompt", default="Why is the sky blue? Be brief.")
    group.add_argument("--harness-options", default="{}", help="request options as a JSON object")
    group.add_argument("--harness-requests", type=int, default=0, help="end after this many requests (0: no)")
    group.add_argument("--harness-workers", type=int, default=1, help="workers sharing --harness-requests")
    group.add_argument("--harness-timeout", type=float, default=120.0, help="seconds one request may take")
    group.add_argument("--harness-stall-timeout", type=float, default=60.0, help="seconds without a token")
    group.add_argument("--harness-out", default="", help="master: write the samples and accounting here")


def _quota(total: int, workers: int, index: int) -> int:
    """This worker's share of `total` requests (the first `total % workers` workers take one more)."""
    return total // workers + (1 if index < total % workers else 0)


class _WorkerBook:
    """A worker's (or a local run's) samples not yet sent, and its request count."""

    def __init__(self, environment: Environment) -> None:
        self.environment = environment
        options = environment.parsed_options
        self.limit = int(getattr(options, "harness_requests", 0) or 0)
        self.workers = max(1, int(getattr(options, "harness_workers", 1) or 1))
        self.started = 0
        self.finished = 0
        self.final_sent = False
        self.pending: list[dict[str, Any]] = []
        self.sent = 0
        self.cpu0 = time.process_time()
        self.last_flush = time.monotonic()

    @property
    def index(self) -> int:
        runner = self.environment.runner
        return max(0, getattr(runner, "worker_index", 0))

    def take_ticket(self) -> bool:
        """Whether one more request may start (always, without --harness-requests)."""
        if self.limit and self.started >= _quota(self.limit, self.workers, self.index):
            return False
        self.started += 1
        return True

    def add(self, sample: dict[str, Any]) -> None:
        self.pending.append(sample)
        self.finished += 1
        quota_done = self.limit and self.finished >= _quota(self.limit, self.workers, self.index)
        if quota_done:
            self.final()
        elif len(self.pending) >= BATCH_SIZE or time.monotonic() - self.last_flush >= BATCH_INTERVAL_S:
            self.flush()

    def flush(self) -> None:
        runner = self.environment.runner
        batch, self.pending = self.pending, []
        self.last_flush = time.monotonic()
        if isinstance(runner, WorkerRunner) and batch:
            runner.send_message(SAMPLES_MESSAGE, {"index": self.index, "samples": batch})
            self.sent += len(batch)
        elif batch:  # a local (non-distributed) run: the master book is in this process
            _master_book(self.environment).receive(self.index, batch)
            self.sent += len(batch)

    def final(self) -> None:
        """Send what is left and the accounting, once: when the quota is done or the worker stops."""
        if self.final_sent:
            return
        self.final_sent = True
        self.flush()
        data = {
            "index": self.index,
            "started": self.started,
            "sent": self.sent,
            "cpu_s": time.process_time() - self.cpu0,
            "pid": os.getpid(),
        }
        runner = self.environment.runner
        if isinstance(runner, WorkerRunner):
            runner.send_message(FINAL_MESSAGE, data)
        else:
            _master_book(self.environment).finish(data)


class _MasterBook:
    """The master's view: samples per worker, finals, and which workers were lost."""

    def __init__(self, environment: Environment) -> None:
        self.environment = environment
        self.samples: dict[int, list[dict[str, Any]]] = {}
        self.finals: dict[int, dict[str, Any]] = {}
        self.seen: set[int] = set()
        self.t0: float | None = None
        self.wall_s = 0.0
        self.written = False

    def receive(self, index: int, batch: list[dict[str, Any]]) -> None:
        self.seen.add(index)
        self.samples.setdefault(index, []).extend(batch)

    def finish(self, data: dict[str, Any]) -> None:
        index = int(data["index"])
        self.seen.add(index)
        self.finals[index] = data

    def expected(self) -> set[int]:
        runner = self.environment.runner
        if isinstance(runner, MasterRunner):
            return {runner.get_worker_index(client.id) for client in runner.clients.all} | self.seen
        return self.seen | {0}

    def missing(self) -> set[int]:
        runner = self.environment.runner
        if not isinstance(runner, MasterRunner):
            return set()
        return {
            runner.get_worker_index(client.id)
            for client in runner.clients.all
            if client.state == STATE_MISSING
        }

    def result(self) -> dict[str, Any]:
        options = self.environment.parsed_options
        workers = []
        lost = []
        for index in sorted(self.expected()):
            received = len(self.samples.get(index, []))
            final = self.finals.get(index)
            entry = {"index": index, "samples": received, "final": final}
            workers.append(entry)
            if final is None:
                lost.append(
                    {"index": index, "samples_received": received, "why": "no final message: it died"}
                )
            elif final["started"] != received:
                lost.append(
                    {
                        "index": index,
                        "samples_received": received,
                        "why": f"started {final['started']} requests but {received} samples arrived",
                    }
                )
        samples = [dict(s) for index in sorted(self.samples) for s in self.samples[index]]
        first = min((s["started_at"] for s in samples), default=0.0)
        for sample in samples:
            sample["started_at"] -= first
        return {
            "model": getattr(options, "harness_model", None),
            "api": getattr(options, "harness_api", "generate"),
            "host": self.environment.host,
            "users": getattr(options, "num_users", None),
            "requests_limit": getattr(options, "harness_requests", 0) or None,
            "wall_s": self.wall_s,
            "client_cpu_s": sum(float((f or {}).get("cpu_s") or 0.0) for f in self.finals.values()),
            "samples": samples,
            "workers": workers,
            "lost_workers": lost,
        }

    def write(self) -> None:
        path = getattr(self.environment.parsed_options, "harness_out", "")
        if self.written or not path:
            return
        self.written = True
        temp = f"{path}.tmp{os.getpid()}"
        with open(temp, "w", encoding="utf-8") as out:
            json.dump(self.result(), out)
        os.replace(temp, path)


def _master_book(environment: Environment) -> _MasterBook:
    book = getattr(environment, "harness_master_book", None)
    if book is None:
        book = _MasterBook(environment)
        environment.harness_master_book = book  # type: ignore[attr-defined]
    return book


def _worker_book(environment: Environment) -> _WorkerBook:
    book = getattr(environment, "harness_worker_book", None)
    if book is None:
        book = _WorkerBook(environment)
        environment.harness_worker_book = book  # type: ignore[attr-defined]
    return book


@events.init.add_listener
def _on_init(environment: Environment, **_: Any) -> None:
    runner = environment.runner
    if isinstance(runner, MasterRunner):
        book = _master_book(environment)
        runner.register_message(
            SAMPLES_MESSAGE, lambda environment, msg: book.receive(msg.data["index"], msg.data["samples"])
        )
        runner.register_message(FINAL_MESSAGE, lambda environment, msg: book.finish(msg.data))
    elif isinstance(runner, WorkerRunner):
        # Locust's run-time end quits the master without stopping the workers first: it asks them this way
        runner.register_message(STOP_MESSAGE, lambda environment, msg: environment.runner.stop())


@events.test_start.add_listener
def _on_test_start(environment: Environment, **_: Any) -> None:
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        _worker_book(environment)
        return
    book = _master_book(environment)
    book.t0 = time.perf_counter()
    if getattr(environment.parsed_options, "harness_requests", 0):
        gevent.spawn(_end_when_all_done, environment)


def _end_when_all_done(environment: Environment) -> None:
    """With --harness-requests: quit once every worker sent its final message (or went missing)."""
    book = _master_book(environment)
    runner = environment.runner
    assert runner is not None
    while True:
        gevent.sleep(DONE_POLL_S)
        expected = book.expected()
        if expected and expected <= set(book.finals) | book.missing():
            runner.quit()
            return


@events.test_stop.add_listener
def _on_test_stop(environment: Environment, **_: Any) -> None:
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        _worker_book(environment).final()
        return
    if not isinstance(runner, MasterRunner):  # a single-process run: its own book is the master's
        _worker_book(environment).final()
    book = _master_book(environment)
    if isinstance(runner, MasterRunner) and not book.expected() <= set(book.finals) | book.missing():
        runner.send_message(STOP_MESSAGE)
    deadline = time.monotonic() + FINAL_WAIT_S
    while time.monotonic() < deadline and not book.expected() <= set(book.finals) | book.missing():
        gevent.sleep(0.1)
    book.wall_s = time.perf_counter() - (book.t0 or time.perf_counter())
    book.write()


class OllamaUser(User):
    """Streams one generate/chat request after another (no wait time) and measures each like harness.load."""

    wait_time = constant(0)
    abstract = False

    def on_start(self) -> None:
        options = self.environment.parsed_options
        self.api = getattr(options, "harness_api", "generate")
        self.model = getattr(options, "harness_model", "harness-load")
        prompt = getattr(options, "harness_prompt", "Why is the sky blue? Be brief.")
        request_options = json.loads(getattr(options, "harness_options", "{}") or "{}")
        payload: dict[str, Any] = {"model": self.model, "stream": True}
        if self.api == "chat":
            payload["messages"] = [{"role": "user", "content": prompt}]
        else:
            payload["prompt"] = prompt
        if request_options:
            payload["options"] = request_options
        self.body = json.dumps(payload).encode()
        self.timeout_s = float(getattr(options, "harness_timeout", 120.0))
        stall = float(getattr(options, "harness_stall_timeout", 60.0))
        url = URL(self.host or "http://127.0.0.1:11434")
        self.http = HTTPClient.from_url(url, concurrency=1, network_timeout=stall, connection_timeout=10.0)
        self.path = f"{url.path.rstrip('/')}/api/{self.api}"
        self.book = _worker_book(self.environment)

    def on_stop(self) -> None:
        self.http.close()

    @task
    def stream(self) -> None:
        if not self.book.take_ticket():
            raise StopUser()
        sample = self._one_request()
        self.book.add(sample)
        self._report(sample)

    def _one_request(self) -> dict[str, Any]:
        stamps: list[float] = []
        start = time.perf_counter()
        outcome, error, eval_count = "ok", None, None
        try:
            with gevent.Timeout(self.timeout_s):
                eval_count = self._read(stamps)
        except gevent.Timeout:
            outcome, error = "timeout", f"request took longer than {self.timeout_s:g} s (timeout)"
        except gevent.GreenletExit:
            outcome, error = "error", "interrupted: the run ended while the request was in flight"
            end = time.perf_counter()
            self.book.add(_sample(outcome, error, stamps, start, end, None))
            raise
        except _Busy as busy:
            outcome, error = "busy", str(busy)
        except TimeoutError:
            what = "first token" if not stamps else "next token"
            outcome, error = "timeout", f"no {what} within the stall timeout"
        except Exception as exc:  # every request ends as one outcome
            outcome, error = "error", f"{type(exc).__name__}: {exc}"
        return _sample(outcome, error, stamps, start, time.perf_counter(), eval_count)

    def _read(self, stamps: list[float]) -> int | None:
        response = self.http.post(self.path, body=self.body, headers={"Content-Type": "application/json"})
        try:
            if response.status_code != 200:
                text = response.read().decode(errors="replace")
                if response.status_code == BUSY_STATUS:
                    raise _Busy(f"HTTP 503: {text[:200]}")
                raise RuntimeError(f"HTTP {response.status_code}: {text[:200]}")
            key = "response"
            append, clock, loads = stamps.append, time.perf_counter, json.loads
            for line in _lines(response):
                part = loads(line)
                if "error" in part:
                    raise RuntimeError(f"error in stream: {part['error']}")
                piece = part.get("message") or {} if self.api == "chat" else part
                if piece.get("content" if self.api == "chat" else key) or piece.get("thinking"):
                    append(clock())
                if part.get("done"):
                    count = part.get("eval_count")
                    return int(count) if count is not None else None
            raise RuntimeError(f"stream ended without done:true after {len(stamps)} content chunks")
        finally:
            response.release()

    def _report(self, sample: dict[str, Any]) -> None:
        fire = self.environment.events.request.fire
        failed = sample["outcome"] != "ok"
        exception = RuntimeError(f"{sample['outcome']}: {sample['error']}") if failed else None
        if sample["ttft_s"] is not None:
            fire(
                request_type="ttft",
                name=self.api,
                response_time=sample["ttft_s"] * 1000,
                response_length=0,
                exception=None,
                context={},
            )
        if sample["itl_s"]:
            mean_itl = sum(sample["itl_s"]) / len(sample["itl_s"])
            fire(
                request_type="itl",
                name=self.api,
                response_time=mean_itl * 1000,
                response_length=0,
                exception=None,
                context={},
            )
        fire(
            request_type="e2e",
            name=self.api,
            response_time=sample["e2e_s"] * 1000,
            response_length=sample["output_tokens"],
            exception=exception,
            context={},
        )


def _lines(response: Any) -> Any:
    """The non-empty lines of a streamed body, each as soon as it is complete."""
    buffer = b""
    while True:
        chunk = response.read(READ_SIZE)
        if not chunk:
            break
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        yield from (line for line in lines if line.strip())
    if buffer.strip():
        yield buffer


class _Busy(Exception):
    """HTTP 503: the server's queue is full."""


def _sample(
    outcome: str, error: str | None, stamps: list[float], start: float, end: float, eval_count: int | None
) -> dict[str, Any]:
    """A sample in harness.load's RequestSample shape (started_at is the wall clock, made relative later)."""
    return {
        "outcome": outcome,
        "ttft_s": stamps[0] - start if stamps else None,
        "itl_s": [b - a for a, b in itertools.pairwise(stamps)],
        "e2e_s": end - start,
        "output_tokens": eval_count if (outcome == "ok" and eval_count is not None) else len(stamps),
        "error": error,
        "started_at": time.time() - (end - start),
    }
