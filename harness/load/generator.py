"""Load generator: streamed generate/chat requests against an Ollama server, closed or open loop.

- **Closed loop** (`run_closed_loop`): `concurrency` workers, each sending its next request as soon as the
  previous one ends, until `requests` have been sent. Sweep it over `concurrency_levels(num_parallel)`
  (1, num_parallel, num_parallel + 1) to see queueing start.
- **Open loop** (`run_open_loop`): requests start at Poisson arrival times (seeded) at `rate_per_s`, whether
  or not earlier ones have finished, for `duration_s` or until `requests` have started.

Every request ends as exactly one outcome: `ok` (a `done: true` chunk arrived), `busy` (HTTP 503, Ollama's
full queue), `timeout` (past `timeout_s`, or no token for `stall_timeout_s`, first token included) or `error`
(anything else, with its text; a stream that ends without `done: true` is an error). Per chunk the generator
only appends a `time.perf_counter()` stamp; TTFT, inter-token latencies (ITL) and end-to-end latency are
derived after the request. Output tokens are the final chunk's `eval_count`, else the number of content
chunks.

The generator says when it was itself the bottleneck: it measures the CPU time of the thread running the
event loop (`time.thread_time`) against wall time, and the event loop's lag (how late a 50 ms timer fires);
`client_saturated` is set when CPU use passes `SATURATED_CPU_FRACTION` of one core, the loop lag's p99 passes
`SATURATED_LOOP_LAG_S`, or (open loop) requests started later than scheduled by more than that.

Two transports: `"ollama"` (the official `ollama.AsyncClient`, the default: what users run) and `"httpx"`
(a lean `httpx.AsyncClient` stream with `json.loads` per line, no pydantic models: for measuring servers
faster than the official client can read; see benchmarks/bench_load.py).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import random
import time
import urllib.parse
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, ParamSpec

import httpx
import numpy as np
import ollama

from harness.errors import HarnessError
from harness.http_tls import verify_for

Outcome = Literal["ok", "busy", "timeout", "error"]
OUTCOMES: tuple[Outcome, ...] = ("ok", "busy", "timeout", "error")
Transport = Literal["ollama", "httpx"]
P = ParamSpec("P")
Api = Literal["generate", "chat"]

SATURATED_CPU_FRACTION = 0.9
SATURATED_LOOP_LAG_S = 0.05
LOOP_LAG_INTERVAL_S = 0.05
PERCENTILES = (50, 90, 99)
DEFAULT_PROMPT = "Why is the sky blue? Be brief."
ERROR_KIND_CHARS = 120


@dataclass
class RequestSample:
    """One request's fate. Times in seconds; `started_at` is relative to the start of the run."""

    outcome: Outcome
    ttft_s: float | None
    itl_s: list[float]
    e2e_s: float
    output_tokens: int
    error: str | None = None
    started_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentiles(values: list[float]) -> dict[str, float | None]:
    """p50/p90/p99 (linear interpolation), mean and count; None where there are no values."""
    result: dict[str, float | None] = dict.fromkeys([f"p{p}" for p in PERCENTILES] + ["mean"])
    result["n"] = 0
    if values:
        arr = np.asarray(values, dtype=float)
        result.update({f"p{p}": float(np.percentile(arr, p)) for p in PERCENTILES})
        result.update(mean=float(arr.mean()), n=len(values))
    return result


@dataclass
class LoadResult:
    """All samples of one load run, with what the client itself cost."""

    mode: Literal["closed", "open"]
    samples: list[RequestSample]
    wall_s: float
    client_cpu_s: float
    process_cpu_s: float
    loop_lag_s: list[float] = field(default_factory=list)
    launch_lag_s: list[float] = field(default_factory=list)
    concurrency: int | None = None
    rate_per_s: float | None = None
    seed: int | None = None
    transport: Transport = "ollama"
    api: Api = "generate"

    def counts(self) -> dict[str, int]:
        """Requests per outcome; always has all four keys and they add up to `len(samples)`."""
        counter = Counter(s.outcome for s in self.samples)
        return {outcome: counter.get(outcome, 0) for outcome in OUTCOMES}

    def errors_by_kind(self) -> dict[str, int]:
        """Non-ok requests grouped by the first line of their error text."""
        kinds = Counter(
            f"{s.outcome}: {(s.error or '').splitlines()[0][:ERROR_KIND_CHARS] if s.error else ''}".rstrip(
                ": "
            )
            for s in self.samples
            if s.outcome != "ok"
        )
        return dict(kinds.most_common())

    @property
    def client_cpu_fraction(self) -> float:
        return self.client_cpu_s / self.wall_s if self.wall_s > 0 else 0.0

    def saturation_reasons(self) -> list[str]:
        """Why the client may have been the bottleneck (empty when it was not).

        Loop lag also grows when other processes take the CPU: either way the latencies are not the server's.
        """
        reasons = []
        if self.client_cpu_fraction > SATURATED_CPU_FRACTION:
            reasons.append(f"client CPU {self.client_cpu_fraction:.0%} of one core")
        lag_p99 = float(np.percentile(self.loop_lag_s, 99)) if self.loop_lag_s else 0.0
        if lag_p99 > SATURATED_LOOP_LAG_S:
            reasons.append(f"event-loop lag p99 {lag_p99 * 1000:.0f} ms")
        launch_p99 = float(np.percentile(self.launch_lag_s, 99)) if self.launch_lag_s else 0.0
        if launch_p99 > SATURATED_LOOP_LAG_S:
            reasons.append(f"requests started late, p99 {launch_p99 * 1000:.0f} ms")
        return reasons

    @property
    def client_saturated(self) -> bool:
        return bool(self.saturation_reasons())

    def summary(self) -> dict[str, Any]:
        """Percentiles (p50/p90/p99/mean over ok requests), rates, counts, and the client's own cost."""
        ok = [s for s in self.samples if s.outcome == "ok"]
        ok_tokens = sum(s.output_tokens for s in ok)
        lag = percentiles(self.loop_lag_s)
        return {
            "mode": self.mode,
            "transport": self.transport,
            "api": self.api,
            "concurrency": self.concurrency,
            "rate_per_s": self.rate_per_s,
            "seed": self.seed,
            "requests": len(self.samples),
            "counts": self.counts(),
            "errors_by_kind": self.errors_by_kind(),
            "ttft_s": percentiles([s.ttft_s for s in ok if s.ttft_s is not None]),
            "itl_s": percentiles([d for s in ok for d in s.itl_s]),
            "e2e_s": percentiles([s.e2e_s for s in ok]),
            "output_tokens": ok_tokens,
            "output_tokens_per_s": ok_tokens / self.wall_s if self.wall_s > 0 else 0.0,
            "requests_per_s": len(ok) / self.wall_s if self.wall_s > 0 else 0.0,
            "wall_s": self.wall_s,
            "client_cpu_s": self.client_cpu_s,
            "process_cpu_s": self.process_cpu_s,
            "client_cpu_fraction": self.client_cpu_fraction,
            "loop_lag_p99_s": lag["p99"],
            "loop_lag_max_s": max(self.loop_lag_s) if self.loop_lag_s else None,
            "launch_lag_p99_s": percentiles(self.launch_lag_s)["p99"],
            "client_saturated": self.client_saturated,
            "saturation_reasons": self.saturation_reasons(),
        }

    def to_record(self, model: str, scenario: str) -> dict[str, Any]:
        """The run-record line of kind "load" (raw samples plus the summary)."""
        record: dict[str, Any] = {"kind": "load", "model": model, "scenario": scenario, "mode": self.mode}
        if self.concurrency is not None:
            record["concurrency"] = self.concurrency
        if self.rate_per_s is not None:
            record["rate"] = self.rate_per_s
        record["samples"] = [s.to_dict() for s in self.samples]
        record["wall_s"] = self.wall_s
        record["client_cpu_s"] = self.client_cpu_s
        record["summary"] = self.summary()
        return record


def concurrency_levels(num_parallel: int, *, beyond: int = 1) -> list[int]:
    """Closed-loop levels that show queueing: 1, num_parallel, num_parallel + 1 ... num_parallel + beyond."""
    if num_parallel < 1:
        raise HarnessError(
            f"num_parallel must be at least 1, got {num_parallel}", "use the server's OLLAMA_NUM_PARALLEL"
        )
    return sorted({1, num_parallel, *(num_parallel + i for i in range(1, beyond + 1))})


def base_url(host: str) -> str:
    """The server's base URL from an OLLAMA_HOST-style value, by Ollama's rules.

    "127.0.0.1:8000" -> http://127.0.0.1:8000; "example" -> http://example:11434; ":8000" -> http://127.0.0.1:8000;
    "http://example" -> http://example:80; "https://example" -> https://example:443; a path is kept.
    """
    text = host.strip() or "127.0.0.1:11434"
    scheme, has_scheme, rest = text.partition("://")
    if not has_scheme:
        scheme, rest = "http", text
    netloc, _, path = rest.rstrip("/").partition("/")
    parts = urllib.parse.urlsplit(f"//{netloc}")
    name = parts.hostname or "127.0.0.1"
    if ":" in name:
        name = f"[{name}]"
    default_port = (443 if scheme == "https" else 80) if has_scheme else 11434
    url = f"{scheme}://{name}:{parts.port or default_port}"
    return f"{url}/{path}" if path else url


# --- one request ----------------------------------------------------------------------------------------


class _StatusError(Exception):
    """An HTTP error status or an in-band error line (status -1), for either transport."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


class _StreamIncomplete(Exception):
    """The stream ended without a `done: true` chunk."""


def _classify(exc: BaseException) -> tuple[Outcome, str]:
    if isinstance(exc, ollama.ResponseError):
        exc = _StatusError(exc.status_code, str(exc.error))
    if isinstance(exc, _StatusError):
        if exc.status == 503:
            return "busy", f"HTTP 503: {exc.text}"
        if exc.status == -1:
            return "error", f"error in stream: {exc.text}"
        return "error", f"HTTP {exc.status}: {exc.text}"
    if isinstance(exc, httpx.TimeoutException):
        return "timeout", f"{type(exc).__name__} (httpx timeout)"
    if isinstance(exc, _StreamIncomplete):
        return "error", str(exc)
    return "error", f"{type(exc).__name__}: {exc}"


class _Watchdog:
    """Cancels a request's task past its total deadline or when no token came for `stall_s`.

    It costs nothing per chunk: when its timer fires it reads the last stamp and sleeps again if the
    stream moved on. Its reason names the cause on the first line (errors are grouped by it) and the
    request (`label`) on the second.
    """

    def __init__(
        self,
        task: asyncio.Task[Any],
        stamps: list[float],
        start: float,
        timeout_s: float,
        stall_s: float | None,
        label: str,
    ) -> None:
        self.task = task
        self.label = label
        self.stamps = stamps
        self.start = start
        self.deadline = start + timeout_s
        self.timeout_s = timeout_s
        self.stall_s = stall_s
        self.reason: str | None = None
        self.loop = asyncio.get_running_loop()
        self.offset = self.loop.time() - time.perf_counter()  # perf_counter -> loop clock
        self.handle = self.loop.call_at(self._next_check(), self._check)

    def _next_check(self) -> float:
        due = self.deadline
        if self.stall_s is not None:
            last = self.stamps[-1] if self.stamps else self.start
            due = min(due, last + self.stall_s)
        return due + self.offset

    def _check(self) -> None:
        now = time.perf_counter()
        if self.task.done():
            return
        if now >= self.deadline:
            self.reason = f"request took longer than {self.timeout_s:g} s (timeout)"
        elif self.stall_s is not None:
            last = self.stamps[-1] if self.stamps else self.start
            if now - last >= self.stall_s:
                what = "first token" if not self.stamps else "next token"
                self.reason = f"no {what} for {self.stall_s:g} s (stall timeout)"
        if self.reason is not None:
            self.reason += f"\n{self.label}"
            self.task.cancel()
        else:
            self.handle = self.loop.call_at(self._next_check(), self._check)

    def stop(self) -> None:
        self.handle.cancel()


def _payload(api: Api, model: str, prompt: str, options: dict[str, Any] | None) -> dict[str, Any]:
    payload: dict[str, Any] = {"model": model, "stream": True}
    if api == "chat":
        payload["messages"] = [{"role": "user", "content": prompt}]
    else:
        payload["prompt"] = prompt
    if options:
        payload["options"] = options
    return payload


async def _read_ollama(
    client: ollama.AsyncClient, api: Api, payload: dict[str, Any], stamps: list[float]
) -> int | None:
    """Stream through the official client; stamps each content chunk; returns the final eval_count."""
    append, clock = stamps.append, time.perf_counter
    model, options = payload["model"], payload.get("options")
    if api == "chat":
        chat_stream = await client.chat(
            model=model, messages=payload["messages"], options=options, stream=True
        )
        async for chat_part in chat_stream:
            message = chat_part.message
            if message.content or message.thinking:
                append(clock())
            if chat_part.done:
                return chat_part.eval_count
    else:
        stream = await client.generate(model=model, prompt=payload["prompt"], options=options, stream=True)
        async for part in stream:
            if part.response or part.thinking:
                append(clock())
            if part.done:
                return part.eval_count
    raise _StreamIncomplete(f"stream ended without done:true after {len(stamps)} content chunks")


async def _read_httpx(
    client: httpx.AsyncClient, api: Api, payload: dict[str, Any], stamps: list[float]
) -> int | None:
    """Stream with plain httpx and json.loads per line; same contract as `_read_ollama`."""
    append, clock, loads = stamps.append, time.perf_counter, json.loads
    async with client.stream("POST", f"/api/{api}", json=payload) as response:
        if response.status_code != 200:
            body = (await response.aread()).decode(errors="replace")
            try:
                text = str(json.loads(body).get("error", body))
            except (json.JSONDecodeError, AttributeError):
                text = body
            raise _StatusError(response.status_code, text)
        chat = api == "chat"
        async for line in response.aiter_lines():
            if not line:
                continue
            part = loads(line)
            if "error" in part:
                raise _StatusError(-1, str(part["error"]))
            piece = (part.get("message") or {}) if chat else part
            if piece.get("content" if chat else "response") or piece.get("thinking"):
                append(clock())
            if part.get("done"):
                count = part.get("eval_count")
                return int(count) if count is not None else None
    raise _StreamIncomplete(f"stream ended without done:true after {len(stamps)} content chunks")


class _Session:
    """One client (official or lean) for a whole run, and the per-request bookkeeping."""

    def __init__(
        self,
        host: str,
        *,
        transport: Transport,
        api: Api,
        timeout_s: float,
        stall_timeout_s: float | None,
        max_connections: int | None,
    ) -> None:
        if transport not in ("ollama", "httpx"):
            raise HarnessError(f"unknown transport {transport!r}", "use 'ollama' or 'httpx'")
        if api not in ("generate", "chat"):
            raise HarnessError(f"unknown api {api!r}", "use 'generate' or 'chat'")
        if timeout_s <= 0 or (stall_timeout_s is not None and stall_timeout_s <= 0):
            raise HarnessError(
                "timeouts must be positive", "pass timeout_s > 0 and stall_timeout_s > 0 (or None)"
            )
        self.transport = transport
        self.api = api
        self.timeout_s = timeout_s
        self.stall_timeout_s = stall_timeout_s
        # httpx's own limits are a backstop only: the watchdog fires first and names the cause.
        read = (stall_timeout_s or timeout_s) + 1.0
        http_timeout = httpx.Timeout(
            timeout_s + 1.0, connect=min(timeout_s, 10.0) + 1.0, read=read, pool=None
        )
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self.client: ollama.AsyncClient | httpx.AsyncClient
        if transport == "ollama":
            self.client = ollama.AsyncClient(
                host=host, timeout=http_timeout, limits=limits, verify=verify_for(host)
            )
        else:
            self.client = httpx.AsyncClient(
                base_url=base_url(host), timeout=http_timeout, limits=limits, verify=verify_for(host)
            )
        self.t0 = time.perf_counter()
        self.numbers = itertools.count(1)  # requests in the order they start

    async def close(self) -> None:
        if isinstance(self.client, ollama.AsyncClient):
            await self.client.close()
        else:
            await self.client.aclose()

    async def request(self, model: str, prompt: str, options: dict[str, Any] | None) -> RequestSample:
        """Send one streamed request; never raises except on cancellation of the run itself."""
        payload = _payload(self.api, model, prompt, options)
        stamps: list[float] = []
        start = time.perf_counter()
        reader: Awaitable[int | None]
        if isinstance(self.client, ollama.AsyncClient):
            reader = _read_ollama(self.client, self.api, payload, stamps)
        else:
            reader = _read_httpx(self.client, self.api, payload, stamps)
        task = asyncio.ensure_future(reader)
        number, began = next(self.numbers), start - self.t0
        label = f"{self.api} {model!r}, request {number}, started {began:.3f} s into the run"
        watchdog = _Watchdog(task, stamps, start, self.timeout_s, self.stall_timeout_s, label)
        outcome: Outcome = "ok"
        error: str | None = None
        eval_count: int | None = None
        try:
            eval_count = await task
        except asyncio.CancelledError:
            if watchdog.reason is None:
                raise
            outcome, error = "timeout", watchdog.reason
        except Exception as exc:  # every request must end as one outcome: classify whatever went wrong
            outcome, error = _classify(exc)
        finally:
            watchdog.stop()
        end = time.perf_counter()
        itl = [b - a for a, b in itertools.pairwise(stamps)]
        tokens = eval_count if (outcome == "ok" and eval_count is not None) else len(stamps)
        return RequestSample(
            outcome=outcome,
            ttft_s=stamps[0] - start if stamps else None,
            itl_s=itl,
            e2e_s=end - start,
            output_tokens=tokens,
            error=error,
            started_at=start - self.t0,
        )


# --- runs -----------------------------------------------------------------------------------------------


async def _watch_loop_lag(lags: list[float]) -> None:
    loop = asyncio.get_running_loop()
    while True:
        expected = loop.time() + LOOP_LAG_INTERVAL_S
        await asyncio.sleep(LOOP_LAG_INTERVAL_S)
        lags.append(max(0.0, loop.time() - expected))


async def _measured(
    mode: Literal["closed", "open"],
    session: _Session,
    body: Callable[[list[RequestSample], list[float]], Awaitable[None]],
) -> LoadResult:
    """Run `body`, measuring wall time, the loop thread's CPU time, process CPU time and loop lag."""
    samples: list[RequestSample] = []
    loop_lag: list[float] = []
    launch_lag: list[float] = []
    monitor = asyncio.ensure_future(_watch_loop_lag(loop_lag))
    cpu0, proc0, wall0 = time.thread_time(), time.process_time(), time.perf_counter()
    session.t0 = wall0
    try:
        await body(samples, launch_lag)
    finally:
        wall = time.perf_counter() - wall0
        cpu, proc = time.thread_time() - cpu0, time.process_time() - proc0
        monitor.cancel()
        await session.close()
    return LoadResult(
        mode=mode,
        samples=samples,
        wall_s=wall,
        client_cpu_s=cpu,
        process_cpu_s=proc,
        loop_lag_s=loop_lag,
        launch_lag_s=launch_lag,
        transport=session.transport,
        api=session.api,
    )


async def closed_loop(
    host: str,
    model: str,
    *,
    concurrency: int,
    requests: int,
    prompt: str = DEFAULT_PROMPT,
    options: dict[str, Any] | None = None,
    timeout_s: float = 120.0,
    stall_timeout_s: float | None = 60.0,
    api: Api = "generate",
    transport: Transport = "ollama",
    on_sample: Callable[[RequestSample], None] | None = None,
) -> LoadResult:
    """Async closed loop: `concurrency` workers share `requests` requests (see the module docstring);
    `on_sample` sees each request's sample as it ends (progress)."""
    if concurrency < 1 or requests < 0:
        raise HarnessError(
            f"bad closed-loop size: concurrency={concurrency}, requests={requests}",
            "use concurrency >= 1 and requests >= 0",
        )
    session = _Session(
        host, transport=transport, api=api, timeout_s=timeout_s, stall_timeout_s=stall_timeout_s,
        max_connections=concurrency,
    )  # fmt: skip
    tickets = iter(range(requests))

    async def body(samples: list[RequestSample], launch_lag: list[float]) -> None:
        async def worker() -> None:
            for _ in tickets:
                samples.append(await session.request(model, prompt, options))
                if on_sample is not None:
                    on_sample(samples[-1])

        await asyncio.gather(*(worker() for _ in range(concurrency)))

    result = await _measured("closed", session, body)
    result.concurrency = concurrency
    return result


def poisson_arrivals(
    rate_per_s: float, *, seed: int, duration_s: float | None = None, requests: int | None = None
) -> list[float]:
    """Arrival offsets (seconds from the start) of a Poisson process, reproducible from `seed`."""
    if rate_per_s <= 0:
        raise HarnessError(
            f"rate_per_s must be positive, got {rate_per_s}", "pass requests per second, e.g. 2.0"
        )
    if duration_s is None and requests is None:
        raise HarnessError("an open loop needs an end", "pass duration_s or requests (or both)")
    rng = random.Random(seed)
    arrivals: list[float] = []
    t = 0.0
    while requests is None or len(arrivals) < requests:
        t += rng.expovariate(rate_per_s)
        if duration_s is not None and t > duration_s:
            break
        arrivals.append(t)
    return arrivals


async def open_loop(
    host: str,
    model: str,
    *,
    rate_per_s: float,
    duration_s: float | None = None,
    requests: int | None = None,
    seed: int = 0,
    prompt: str = DEFAULT_PROMPT,
    options: dict[str, Any] | None = None,
    timeout_s: float = 120.0,
    stall_timeout_s: float | None = 60.0,
    api: Api = "generate",
    transport: Transport = "ollama",
) -> LoadResult:
    """Async open loop: requests start at seeded Poisson arrival times (see the module docstring)."""
    arrivals = poisson_arrivals(rate_per_s, seed=seed, duration_s=duration_s, requests=requests)
    session = _Session(
        host, transport=transport, api=api, timeout_s=timeout_s, stall_timeout_s=stall_timeout_s,
        max_connections=None,
    )  # fmt: skip

    async def body(samples: list[RequestSample], launch_lag: list[float]) -> None:
        async def one() -> None:
            samples.append(await session.request(model, prompt, options))

        tasks = []
        for at in arrivals:
            delay = session.t0 + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            launch_lag.append(max(0.0, time.perf_counter() - session.t0 - at))
            tasks.append(asyncio.ensure_future(one()))
        await asyncio.gather(*tasks)

    result = await _measured("open", session, body)
    result.rate_per_s = rate_per_s
    result.seed = seed
    return result


def _blocking(run: Callable[P, Coroutine[Any, Any, LoadResult]]) -> Callable[P, LoadResult]:
    """A blocking twin of an async run (same arguments), for scripts and pytest tests."""

    @functools.wraps(run)
    def blocking(*args: P.args, **kwargs: P.kwargs) -> LoadResult:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(run(*args, **kwargs))
        raise HarnessError(
            f"run_{run.__name__}() was called from inside a running event loop",
            f"await harness.load.generator.{run.__name__}(...) instead",
        )

    return blocking


run_closed_loop = _blocking(closed_loop)
run_open_loop = _blocking(open_loop)
