"""How many streamed chunks per second the load generator can read on one core (issue 10: at least 5,000).

Runs closed loops against the canned server (in its own process, so its CPU is not the client's) with both
transports, side by side, and prints chunks/s over wall time and per client CPU second (the loop thread's
`time.thread_time`), plus whether the client flagged itself saturated.

    # bulk: the server writes as fast as it can (chunks coalesce into few reads)
    .venv/bin/python benchmarks/bench_load.py
    # paced: about one network read per chunk
    python benchmarks/bench_load.py --concurrency 64 --requests 128 --chunks 100 --chunk-delay-s 0.01
    # as a pytest benchmark (bulk, asserts the target for both transports)
    .venv/bin/pytest -m bench benchmarks/bench_load.py

The target is met when chunks per client CPU second >= 5,000 (the client's one-core capacity); chunks per
wall second also depends on how fast the canned server can write, which on a shared 2-core machine it may
not do.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass, field

import pytest
from tabulate import tabulate

from harness.load.generator import LoadResult, Transport, run_closed_loop
from harness.testing.canned_server import CannedBehaviour, CannedServer

TARGET_CHUNKS_PER_S = 5000


def _measure(host: str, transport: Transport, args: argparse.Namespace) -> LoadResult:
    return run_closed_loop(
        host,
        "bench",
        concurrency=args.concurrency,
        requests=args.requests,
        prompt="x",
        options={"canned_chunks": args.chunks, "canned_chunk_delay_s": args.chunk_delay_s},
        timeout_s=120.0,
        stall_timeout_s=30.0,
        transport=transport,
    )


@dataclass
class BenchRun:
    """Table rows, and chunks per client CPU second per transport (one per repeat)."""

    rows: list[list[object]] = field(default_factory=list)
    per_cpu: dict[str, list[float]] = field(default_factory=dict)


def bench(args: argparse.Namespace) -> BenchRun:
    """Both transports, `args.repeats` times each, against one canned server in its own process."""
    transports: tuple[Transport, ...] = ("ollama", "httpx")
    run = BenchRun(per_cpu={t: [] for t in transports})
    with CannedServer(CannedBehaviour(chunks=args.chunks)) as server:
        _measure(server.host, "httpx", argparse.Namespace(**{**vars(args), "requests": 4}))  # warm-up
        for repeat in range(args.repeats):
            for transport in transports:
                result = _measure(server.host, transport, args)
                summary = result.summary()
                chunks = sum(len(s.itl_s) + 1 for s in result.samples if s.outcome == "ok")
                cpu_rate = chunks / result.client_cpu_s if result.client_cpu_s else float("inf")
                run.per_cpu[transport].append(cpu_rate)
                run.rows.append(
                    [
                        repeat,
                        transport,
                        summary["counts"]["ok"],
                        chunks,
                        f"{result.wall_s:.2f}",
                        f"{result.client_cpu_s:.2f}",
                        f"{chunks / result.wall_s:,.0f}",
                        f"{cpu_rate:,.0f}",
                        f"{1e6 / cpu_rate:.1f}",
                        summary["client_saturated"],
                    ]
                )
    return run


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--chunks", type=int, default=200, help="content chunks per request")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--chunk-delay-s",
        type=float,
        default=0.0,
        help="server sleep between chunks: 0 = as fast as it can write (chunks coalesce into few reads); "
        "e.g. 0.01 with --concurrency 64 = paced tokens, one read per chunk",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    run = bench(_parser().parse_args(argv))
    headers = ["rep", "transport", "ok", "chunks", "wall s", "client cpu s", "chunks/s wall", "chunks/cpu-s",
               "µs cpu/chunk", "saturated"]  # fmt: skip
    print(tabulate(run.rows, headers=headers))
    for name, rates in run.per_cpu.items():
        median = statistics.median(rates)
        verdict = "meets" if median >= TARGET_CHUNKS_PER_S else "MISSES"
        print(
            f"{name}: median {median:,.0f} chunks per client CPU second, {verdict} {TARGET_CHUNKS_PER_S:,}/s"
        )
    return 0


@pytest.mark.bench
@pytest.mark.timeout(300)
def test_client_reads_at_least_5000_chunks_per_cpu_second() -> None:
    run = bench(_parser().parse_args(["--requests", "100", "--repeats", "2"]))
    for name, rates in run.per_cpu.items():
        assert statistics.median(rates) >= TARGET_CHUNKS_PER_S, (name, rates)


if __name__ == "__main__":
    sys.exit(main())
