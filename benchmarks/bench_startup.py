"""Benchmark the command line's start-up: `harness gguf check FILE` on a small file, and `harness --help`.

Each command runs as a fresh process, hyperfine-style: 3 warm-up runs, then --runs timed runs, interleaved
(one of each command per round, so machine load hits all alike); reports mean, median, min and standard
deviation of the wall time, beside the floor `python -c pass` of the same interpreter. The file is the
`tiny` fixture (it carries a chat template, so the check renders it). Aim: median under 0.2 s for the check
and for --help. Also lists the modules the check imports that it should not (numpy, gguf, the engine).

    .venv/bin/python benchmarks/bench_startup.py [--runs 20]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.gguf.build import build_gguf
from harness.gguf.spec import load_profile

AIM_S = 0.2
HEAVY_MODULES = ("numpy", "gguf", "harness.engine.process", "httpx", "xllamacpp")


def _timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - start


def _heavy_imports(model: Path) -> list[str]:
    probe = (
        "import sys, contextlib, io\n"
        "from harness.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    main(['gguf', 'check', {str(model)!r}])\n"
        f"print(' '.join(m for m in {HEAVY_MODULES!r} if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    return done.stdout.split()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    harness = str(Path(sys.executable).with_name("harness"))
    with tempfile.TemporaryDirectory() as folder:
        model = build_gguf(load_profile("tiny"), Path(folder) / "tiny.gguf", progress=False).path
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "harness --help": [harness, "--help"],
            "harness gguf check --help": [harness, "gguf", "check", "--help"],
            "harness gguf check tiny.gguf": [harness, "gguf", "check", str(model)],
        }
        for _ in range(3):
            for command in commands.values():
                _timed(command)
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, command in commands.items():
                times[name].append(_timed(command))
        heavy = _heavy_imports(model)
    floor = statistics.median(times["python -c pass"])
    print(f"{'command':<30} {'mean':>8} {'median':>8} {'min':>8} {'stdev':>8} {'-floor':>8}")
    for name, values in times.items():
        median = statistics.median(values)
        print(
            f"{name:<30} {statistics.mean(values):8.3f} {median:8.3f} {min(values):8.3f} "
            f"{statistics.stdev(values):8.3f} {median - floor:8.3f}"
        )
    print(f"heavy modules imported by a check: {', '.join(heavy) or 'none'}")
    worst = max(statistics.median(times[n]) for n in ("harness --help", "harness gguf check tiny.gguf"))
    verdict = "meets" if worst < AIM_S and not heavy else "MISSES"
    print(f"{verdict} the aim: median under {AIM_S} s for the check and --help (worst {worst:.3f} s)")
    return 0 if verdict == "meets" else 1


if __name__ == "__main__":
    sys.exit(main())
