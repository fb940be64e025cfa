"""Requests/s and chunks/s: one in-process generator (harness.load) against Locust with 1, 2 and 4 workers.

All runs stream from the same canned NDJSON server (harness.testing.canned_server, its own process, no delay
between chunks: the server writes as fast as it can), with the same number of concurrent streams and the
same request count. Printed per runner: ok requests, requests/s and chunks/s over the run's wall time, the
client's CPU seconds (harness.load: the event loop's thread; Locust: the workers' processes together) and
the machine's CPU use during the run (psutil, all cores: when it is near 100 % the machine, not the runner,
is the limit).

    .venv/bin/python benchmarks/bench_locust.py                   # 32 streams, 2,000 requests, 32 chunks
    .venv/bin/python benchmarks/bench_locust.py --users 64 --requests 4000 --chunks 64
    .venv/bin/pytest -m bench benchmarks/bench_locust.py           # smaller, asserts every request counted
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil
import pytest
from tabulate import tabulate

from harness.load.commands import run_locust
from harness.load.generator import LoadResult, run_closed_loop
from harness.testing.canned_server import CannedBehaviour, CannedServer


@dataclass
class Row:
    runner: str
    ok: int
    requests: int
    chunks: int
    wall_s: float
    client_cpu_s: float
    machine_cpu: float

    def cells(self) -> list[object]:
        return [
            self.runner,
            f"{self.ok}/{self.requests}",
            f"{self.ok / self.wall_s:,.0f}",
            f"{self.chunks / self.wall_s:,.0f}",
            f"{self.wall_s:.2f}",
            f"{self.client_cpu_s:.2f}",
            f"{self.machine_cpu:.0f} %",
        ]


def _row(runner: str, result: LoadResult, machine_cpu: float) -> Row:
    ok = [s for s in result.samples if s.outcome == "ok"]
    chunks = sum(len(s.itl_s) + 1 for s in ok)
    return Row(runner, len(ok), len(result.samples), chunks, result.wall_s, result.client_cpu_s, machine_cpu)


def _with_machine_cpu(run: Callable[[], LoadResult]) -> tuple[LoadResult, float]:
    psutil.cpu_percent(None)
    result = run()
    return result, psutil.cpu_percent(None)


def bench(args: argparse.Namespace) -> list[Row]:
    options = {"canned_chunks": args.chunks}
    rows = []
    with CannedServer(CannedBehaviour(chunks=args.chunks)) as server:
        run_closed_loop(server.host, "bench", concurrency=2, requests=4, options=options, transport="httpx")
        for transport in ("httpx", "ollama"):
            closed = functools.partial(
                run_closed_loop, server.host, "bench", concurrency=args.users, requests=args.requests,
                prompt="x", options=options, transport=transport,
            )  # fmt: skip
            result, cpu = _with_machine_cpu(closed)
            rows.append(_row(f"harness.load.generator ({transport})", result, cpu))
        for workers in args.workers:
            started = time.perf_counter()
            locust = functools.partial(
                run_locust, server.host, "bench", workers=workers, users=args.users, requests=args.requests,
                prompt="x", options=options,
            )  # fmt: skip
            result, cpu = _with_machine_cpu(lambda run=locust: run().to_result())
            if len(result.samples) != args.requests:
                raise AssertionError(f"Locust x{workers}: {len(result.samples)} of {args.requests} counted")
            rows.append(
                _row(f"locust x{workers} ({time.perf_counter() - started:.0f} s with start)", result, cpu)
            )
    return rows


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--users", type=int, default=32, help="concurrent streams (default 32)")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--chunks", type=int, default=32, help="content chunks per request")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    rows = bench(args)
    print(
        f"{os.cpu_count()} cores; {args.users} streams, {args.requests} requests, {args.chunks} chunks each"
    )
    headers = ["runner", "ok", "req/s", "chunks/s", "wall s", "client cpu s", "machine cpu"]
    print(tabulate([row.cells() for row in rows], headers=headers, disable_numparse=True))
    return 0


@pytest.mark.bench
@pytest.mark.timeout(300)
def test_every_runner_counts_every_request() -> None:
    rows = bench(_parser().parse_args(["--users", "8", "--requests", "400", "--workers", "1", "2"]))
    assert [row.ok for row in rows] == [400] * len(rows)


if __name__ == "__main__":
    sys.exit(main())
