#!/usr/bin/env python3
"""A long differential campaign: structured mutants of valid fixtures, each judged by `harness gguf check`'s
checker and by llama.cpp (load + a few greedy tokens in child processes), until a time budget runs out.

    .venv/bin/python scripts/differential_campaign.py --budget-s 900 --min-mutants 1000

Each profile's mutants are every single edit (shuffled by the seed), then random pairs of edits. Prints the
tally, every false alarm code with the reason it is accepted (check.LOADS_BUT_WRONG), and every miss,
unjustified false alarm or broken benign mutant. Exit status 0 when there are none and at least
--min-mutants were judged; 1 otherwise. The seeded sample in the default test run:
tests/test_gguf_differential.py.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from harness.gguf.differential import DifferentialReport, run_differential
from harness.gguf.mutants import architecture_sweep, random_mutants
from harness.gguf.plan import plan_gguf
from harness.gguf.spec import load_profile


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--budget-s", type=float, default=600.0, help="stop drawing mutants after this long")
    parser.add_argument("--min-mutants", type=int, default=1000, help="fail when fewer were judged")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profiles", default="tiny,oracle", help="comma-separated fixture profiles")
    parser.add_argument("--chunk", type=int, default=100, help="mutants written and judged per round")
    parser.add_argument("--batch", type=int, default=25, help="mutants per llama.cpp child process")
    parser.add_argument(
        "--sweep-architectures",
        action="store_true",
        help="only move the tiny fixture to every architecture llama.cpp knows, and report (beyond the "
        "architectures with rules in harness/gguf/archs.py an OK is not a guarantee)",
    )
    args = parser.parse_args()
    if args.sweep_architectures:
        plan = plan_gguf(load_profile("tiny").replace(n_layer=1))
        with tempfile.TemporaryDirectory(prefix="differential-") as folder:
            sweep = run_differential(
                plan, [(m,) for m in architecture_sweep()], Path(folder), batch=args.batch
            )
        print(sweep.summary())
        return 0 if sweep.passed else 1

    deadline = time.monotonic() + args.budget_s
    plans = [plan_gguf(load_profile(name)) for name in args.profiles.split(",")]
    queues = [random_mutants(plan, 20_000, args.seed + index) for index, plan in enumerate(plans)]
    total = DifferentialReport()
    position = 0
    with tempfile.TemporaryDirectory(prefix="differential-") as folder:
        while time.monotonic() < deadline and position < len(queues[0]):
            for plan, queue in zip(plans, queues, strict=True):
                chunk = queue[position : position + args.chunk]
                report = run_differential(plan, chunk, Path(folder), batch=args.batch)
                total.outcomes.extend(report.outcomes)
                total.unwritable.extend(report.unwritable)
                total.seconds += report.seconds
                print(
                    f"{len(total.outcomes)} mutants, {len(total.misses)} misses, "
                    f"{len(total.false_alarms)} false alarms, {total.seconds:.0f} s",
                    flush=True,
                )
            position += args.chunk
    print(total.summary())
    if len(total.outcomes) < args.min_mutants:
        print(f"only {len(total.outcomes)} mutants judged, fewer than --min-mutants {args.min_mutants}")
        return 1
    return 0 if total.passed else 1


if __name__ == "__main__":
    sys.exit(main())
