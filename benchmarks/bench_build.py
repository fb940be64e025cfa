"""Benchmark the GGUF builder on a model of at least 1 GiB (F32, random weights).

Reports build throughput against a plain sequential write of the same number of bytes into the same folder
(mean of one run before and one after the build; aim: >= 0.8x), and the peak RSS of the build process
(aim: flat with model size, under 100 MB). Each build runs in a child process so its `ru_maxrss` is its
own. All files are deleted afterwards.

    .venv/bin/python benchmarks/bench_build.py [--dir FOLDER] [--layers 16]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.gguf.plan import plan_gguf
from harness.gguf.spec import ModelSpec

BLOCK = 4 << 20

_CHILD = """
import json, resource, sys, time
from harness.gguf.build import build_gguf
from harness.gguf.spec import ModelSpec, spec_from_dict
spec = spec_from_dict(json.loads(sys.argv[1]))
start = time.perf_counter()
built = build_gguf(spec, sys.argv[2], progress=False)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "size": built.size,
                  "max_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def big_spec(n_layer: int) -> ModelSpec:
    """so8t-like, scaled up: hidden 1024, FFN 4096, 16 heads; 64 MiB of F32 weights per layer."""
    return ModelSpec(
        name=f"bench-{n_layer}l",
        n_embd=1024,
        n_layer=n_layer,
        n_head=16,
        n_head_kv=16,
        n_ff=4096,
        context_length=4096,
        tensor_type="f32",
        vocab_size=1000,
    )


def build_in_child(spec: ModelSpec, path: Path) -> dict[str, float]:
    output = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(spec.to_dict()), str(path)],
        check=True,
        capture_output=True,
        text=True,
        timeout=1800,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])  # type: ignore[no-any-return]


def plain_write(path: Path, size: int) -> float:
    """Seconds to write `size` bytes sequentially in 4 MiB blocks (no hashing, no generation)."""
    block = memoryview(os.urandom(BLOCK))
    start = time.perf_counter()
    with open(path, "wb") as handle:
        remaining = size
        while remaining > 0:
            handle.write(block[: min(BLOCK, remaining)])
            remaining -= BLOCK
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dir", default=".", help="folder on the disk to measure (a temp folder is made in it)"
    )
    parser.add_argument("--layers", type=int, default=16, help="layers of the big model (16 -> 1.03 GiB)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-build-", dir=args.dir))
    rows = []
    try:
        for n_layer in (max(1, args.layers // 4), args.layers):
            spec = big_spec(n_layer)
            size = plan_gguf(spec).file_size()
            if shutil.disk_usage(folder).free < 2 * size:
                print(f"not enough free space in {folder} for {size:,} bytes", file=sys.stderr)
                return 2
            plain_s = []
            for _ in range(2):  # before and after the build: the disk is shared and noisy
                os.sync()
                plain_s.append(plain_write(folder / "plain.bin", size))
                (folder / "plain.bin").unlink()
                os.sync()
                if len(plain_s) == 1:
                    build = build_in_child(spec, folder / "model.gguf")
                    (folder / "model.gguf").unlink()
            rows.append((spec.name, size, sum(plain_s) / 2, build["seconds"], build["max_rss_kb"]))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"{'model':<12} {'size':>15} {'plain MB/s':>11} {'build MB/s':>11} {'ratio':>6} {'peak RSS':>9}")
    for name, size, plain_s, build_s, rss_kb in rows:
        plain_rate, build_rate = size / plain_s / 1e6, size / build_s / 1e6
        print(
            f"{name:<12} {size:>15,} {plain_rate:>11.0f} {build_rate:>11.0f} {build_rate / plain_rate:>6.2f} "
            f"{rss_kb / 1024:>7.1f}MB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
