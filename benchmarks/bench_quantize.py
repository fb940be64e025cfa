"""Benchmark quantize-at-create (`harness.gguf.quantize`): an F16 file to Q4_K_M, one thread against all.

One thread is the speed Ollama's own quantizer has (the same ggml function, called once per tensor); the
default splits each block of rows over every usable CPU. Both runs alternate (`--rounds` each) in one
process, write into the same folder, and must give byte-identical files. Reported: values quantized per
second (median), the speed-up (aim: >= 1.5x on 2 cores), and each run's peak RSS growth over the process
before it (aim: flat in model size, under 100 MB: tensors stream through in blocks of rows). The model is
so8t-like and scaled up (hidden 1024, FFN 4096); files are deleted afterwards.

    .venv/bin/python benchmarks/bench_quantize.py [--layers 4] [--rounds 3] [--type Q4_K_M] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench_build import big_spec
from tabulate import tabulate

from harness.gguf.build import build_gguf
from harness.gguf.ggml_quantize import usable_cpus
from harness.gguf.quantize import quantize_gguf
from harness.gguf.reader import read_gguf_header
from harness.gguf.spec import ModelSpec

TARGET_SPEEDUP = 1.5


def bench_spec(n_layer: int) -> ModelSpec:
    """bench_build's model (hidden 1024, FFN 4096: rows of whole 256-value blocks) in F16."""
    return big_spec(n_layer).replace(name=f"bench-quantize-{n_layer}l", tensor_type="f16")


def _peak_rss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--type", default="Q4_K_M")
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args(argv)
    cpus = usable_cpus()
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        source = build_gguf(bench_spec(args.layers), Path(folder) / "source.gguf", progress=False)
        header = read_gguf_header(source.path)
        values = sum(int(t.n_elements) for t in header.tensors)
        timings: dict[int, list[float]] = {1: [], cpus: []}
        digests: set[str] = set()
        rss_growth_kb = 0
        for _ in range(args.rounds):
            for threads in (1, cpus):
                before = _peak_rss_kb()
                start = time.perf_counter()
                written = quantize_gguf(source.path, Path(folder) / "out.gguf", args.type, threads=threads)
                timings[threads].append(time.perf_counter() - start)
                rss_growth_kb = max(rss_growth_kb, _peak_rss_kb() - before)
                digests.add(written.sha256)
    rows = [
        [f"{threads} thread{'s' if threads > 1 else ''}", f"{statistics.median(seconds):.2f} s",
         f"{values / statistics.median(seconds) / 1e6:.1f} M/s"]
        for threads, seconds in timings.items()
    ]  # fmt: skip
    speedup = statistics.median(timings[1]) / statistics.median(timings[cpus])
    same = len(digests) == 1
    size_mib = source.size / 2**20
    print(f"F16 {args.layers}-layer model ({size_mib:.0f} MiB, {values / 1e6:.1f} M values) to {args.type}")
    print(tabulate(rows, headers=["quantizer", "median time", "values/s"]))
    print(f"speed-up {speedup:.2f}x on {cpus} CPUs (aim >= {TARGET_SPEEDUP}x where there are 2 or more)")
    print(f"peak RSS growth {rss_growth_kb / 1024:.1f} MiB (aim < 100 MB); identical files: {same}")
    ok = same and rss_growth_kb < 100_000 and (cpus < 2 or speedup >= TARGET_SPEEDUP)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
