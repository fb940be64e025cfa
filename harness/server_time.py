"""Time spent inside the server, from its own durations: what a suites session asked and how long it took.

Every generate/chat the session's client finishes is added (`ServerTimeLog.add`, installed as the client's
`on_completion`): the server's `total_duration` and eval counters, and the client's time to first token.
Requests without server durations (create, blob upload, show, list, delete, a failed generate) count with
their round trip (`add_request`, the client's `on_request`). At the end there is one "requests" record per
model (model None: the requests without durations). The time inside the server is the union of the
intervals [end - total_duration, end] (requests that overlap count once), which `harness` benchmarks
subtract from a run's wall time to get the harness's own overhead.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

MAX_TTFT_SAMPLES = 10_000  # per model, to keep the record bounded (also the decode rates)
MIN_RATE_TOKENS = 4  # a request's decode rate counts when it generated at least this many tokens
OTHER_REQUESTS = "\0other"  # the bucket of requests without server durations (recorded with model None)


def union_length(intervals: Iterable[tuple[float, float]]) -> float:
    """Total length covered by (start, end) intervals; overlaps count once."""
    total, current_start, current_end = 0.0, None, None
    for start, end in sorted(intervals):
        if current_end is None or start > current_end:
            if current_end is not None and current_start is not None:
                total += current_end - current_start
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_end is not None and current_start is not None:
        total += current_end - current_start
    return total


@dataclass
class _ModelTimes:
    requests: int = 0
    total_duration_s: float = 0.0
    client_s: float = 0.0  # the same requests end to end, as the client saw them
    eval_count: int = 0
    eval_duration_s: float = 0.0
    ttft_s: list[float] = field(default_factory=list)
    eval_rates: list[float] = field(default_factory=list)  # tokens/s of each request, by the server
    intervals: list[tuple[float, float]] = field(default_factory=list)


class ServerTimeLog:
    """Collects finished completions (thread-safe) and sums them up per model."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_model: dict[str, _ModelTimes] = {}

    def add(self, completion: Any) -> None:
        """Add one `harness.server's Completion` (called when it ends; its end is now). One that never got
        its final chunk (no server durations) counts with its end-to-end time."""
        end = time.monotonic()
        total = completion.total_duration_s or (0.0 if completion.done else completion.e2e_s or 0.0)
        with self._lock:
            times = self._by_model.setdefault(str(completion.model), _ModelTimes())
            times.requests += 1
            times.total_duration_s += total
            times.client_s += completion.e2e_s or 0.0
            times.eval_count += completion.eval_count or 0
            times.eval_duration_s += completion.eval_duration_s or 0.0
            if completion.ttft_s is not None and len(times.ttft_s) < MAX_TTFT_SAMPLES:
                times.ttft_s.append(round(completion.ttft_s, 6))
            count, seconds = completion.eval_count or 0, completion.eval_duration_s or 0.0
            if count >= MIN_RATE_TOKENS and seconds > 0 and len(times.eval_rates) < MAX_TTFT_SAMPLES:
                times.eval_rates.append(round(count / seconds, 3))
            if total > 0:
                times.intervals.append((end - total, end))

    def add_request(self, request: str, seconds: float) -> None:
        """Add a request without server durations (create, show, list, a failed generate...): its round
        trip on the client's clock, which on loopback is the server's time."""
        end = time.monotonic()
        with self._lock:
            times = self._by_model.setdefault(OTHER_REQUESTS, _ModelTimes())
            times.requests += 1
            times.total_duration_s += seconds
            times.client_s += seconds
            times.intervals.append((end - seconds, end))

    def busy_s(self) -> float:
        """Seconds in which the server was working on at least one of the logged requests."""
        with self._lock:
            return union_length(i for times in self._by_model.values() for i in times.intervals)

    def records(self) -> list[dict[str, Any]]:
        """One "requests" record per model (the run's results.jsonl)."""
        with self._lock:
            return [
                {
                    "kind": "requests",
                    "model": None if model == OTHER_REQUESTS else model,
                    "requests": times.requests,
                    "total_duration_s": round(times.total_duration_s, 6),
                    "busy_s": round(union_length(times.intervals), 6),
                    "client_s": round(times.client_s, 6),
                    "eval_count": times.eval_count,
                    "eval_duration_s": round(times.eval_duration_s, 6),
                    "ttft_s": times.ttft_s,
                    "eval_rates": times.eval_rates,
                }
                for model, times in sorted(self._by_model.items())
            ]


def server_seconds(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """From a run's records: the summed `total_duration` of the session client's requests, their union
    (`busy_s`, summed over models), and the load suite's request time (union of each scenario's requests,
    measured end to end by the load client: its requests run in parallel)."""
    summed = sum(float(r.get("total_duration_s") or 0.0) for r in records if r.get("kind") == "requests")
    busy = sum(float(r.get("busy_s") or 0.0) for r in records if r.get("kind") == "requests")
    load = 0.0
    for record in records:
        if record.get("kind") != "load":
            continue
        starts_ends = [
            (float(s.get("started_at") or 0.0), float(s.get("e2e_s") or 0.0))
            for s in record.get("samples") or []
            if isinstance(s, dict)
        ]
        load += union_length((start, start + e2e) for start, e2e in starts_ends)
    return {"total_duration_s": summed, "busy_s": busy, "load_s": load}
