#!/usr/bin/env python3
"""A longer fuzzing campaign for the GGUF checker (the CI property test runs a few hundred cases).

Builds seed files with the harness's builder (F32, Q8_0, Q4_0), then checks many mutated copies (random
draws of the same mutations as tests/test_gguf_fuzz.py: bit flips, hostile integers over length and count
fields, cuts, inserts, deletes). Reports cases run, crashes (any exception; the input is saved), cases over
the time or memory limit, the slowest case, the tracemalloc peak, the process's max RSS and which finding
codes came first. Also measures a header-only check of a 1 GiB file (--bench-gib, 0 to skip).

    .venv/bin/python scripts/fuzz_checker.py --seconds 600 --seed 1
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

from harness.gguf.broken import HOSTILE_U32, HOSTILE_U64, MUTATION_OPS, Mutation, apply_mutations
from harness.gguf.build import build_gguf
from harness.gguf.check import check_gguf
from harness.gguf.reader import read_gguf_header
from harness.gguf.spec import ModelSpec

SEED_SPEC = ModelSpec(name="fuzz", n_embd=32, n_layer=2, n_head=2, n_head_kv=1, n_ff=64, context_length=64)
TIME_LIMIT_S = 1.0
MEMORY_LIMIT = 64 << 20


def random_mutation(rng: random.Random, data_offset: int, size: int) -> Mutation:
    op = rng.choice(MUTATION_OPS)
    # most mutations hit the metadata part, where the parsing happens
    position = rng.randrange(data_offset + 64) if rng.random() < 0.9 else rng.randrange(size + 1)
    if op == "flip":
        return (op, position, 1 << rng.randrange(8) if rng.random() < 0.7 else rng.randrange(1, 256))
    if op == "u64":
        return (op, position, rng.choice(HOSTILE_U64))
    if op == "u32":
        return (op, position, rng.choice(HOSTILE_U32))
    if op == "insert":
        return (op, position, rng.randbytes(rng.randrange(1, 17)))
    if op == "delete":
        return (op, position, rng.randrange(1, 65))
    return (op, rng.randrange(size + 1), 0)


def campaign(args: argparse.Namespace, workdir: Path) -> int:
    import tracemalloc

    seeds = []
    for tensor_type in ("f32", "q8_0", "q4_0"):
        built = build_gguf(SEED_SPEC.replace(tensor_type=tensor_type), workdir / f"seed-{tensor_type}.gguf")
        offset = read_gguf_header(built.path).data_offset or 0
        seeds.append((built.path.read_bytes(), offset))
    rng = random.Random(args.seed)
    crashes: list[Path] = []
    over_limit = 0
    first_codes: Counter[str] = Counter()
    slowest = (0.0, "")
    peak_max = 0
    cases = 0
    deadline = time.monotonic() + args.seconds
    mutant = workdir / "mutant.gguf"
    while cases < args.cases and time.monotonic() < deadline:
        data, offset = rng.choice(seeds)
        mutations = [random_mutation(rng, offset, len(data)) for _ in range(rng.randrange(1, 5))]
        mutant.write_bytes(apply_mutations(data, mutations))
        deep = rng.random() < args.deep_fraction
        tracemalloc.start()
        start = time.perf_counter()
        try:
            report = check_gguf(mutant, deep=deep)
            report.to_json()
        except Exception:
            saved = Path(args.crash_dir) / f"crash-{args.seed}-{cases}.gguf"
            saved.parent.mkdir(parents=True, exist_ok=True)
            saved.write_bytes(mutant.read_bytes())
            crashes.append(saved)
            print(f"CRASH case {cases} (saved {saved}):\n{traceback.format_exc()}", file=sys.stderr)
            report = None
        finally:
            elapsed = time.perf_counter() - start
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        cases += 1
        peak_max = max(peak_max, peak)
        if elapsed > slowest[0]:
            slowest = (elapsed, f"{mutations!r} deep={deep}")
        if elapsed > TIME_LIMIT_S or peak > MEMORY_LIMIT:
            over_limit += 1
            print(f"OVER LIMIT case {cases}: {elapsed:.3f} s, {peak:,} bytes: {mutations!r}", file=sys.stderr)
        if report is not None:
            first_codes[report.findings[0].code if report.findings else "(clean)"] += 1
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"cases run:          {cases:,} (seed {args.seed})")
    print(f"crashes:            {len(crashes)}")
    print(f"over time/memory:   {over_limit}")
    print(f"slowest case:       {slowest[0] * 1000:.1f} ms  {slowest[1][:200]}")
    print(f"tracemalloc peak:   {peak_max / 2**20:.2f} MiB (max over cases)")
    print(f"process max RSS:    {rss_kib / 1024:.1f} MiB")
    print("first finding code: " + ", ".join(f"{code} {n}" for code, n in first_codes.most_common()))
    return 1 if crashes or over_limit else 0


def bench_big_file(gib: float, workdir: Path) -> None:
    """Time a header-only check of a sparse `gib`-GiB llama file (the data section is a hole)."""
    from gguf import GGUFWriter

    from harness.gguf.plan import plan_gguf

    n_embd = 2048
    n_layer = max(1, int(gib * 2**30 / (4 * 12 * n_embd * n_embd)))
    spec = ModelSpec(
        name="bench",
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=16,
        n_head_kv=16,
        n_ff=4 * n_embd,
        context_length=4096,
    )
    plan = plan_gguf(spec)
    path = workdir / "big.gguf"
    writer = GGUFWriter(str(path), plan.architecture)
    writer.kv_data[0].clear()
    for key, kv in plan.kvs.items():
        writer.add_key_value(key, kv.value, kv.type, kv.sub_type)
    import numpy as np

    for tensor in plan.tensors:
        writer.add_tensor_info(
            tensor.name, tensor.shape, np.dtype(np.float32), tensor.nbytes, tensor.ggml_type
        )
    writer.write_header_to_file(path)
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    with open(path, "r+b") as handle:
        handle.truncate(plan.file_size())
    times = []
    for _ in range(5):
        start = time.perf_counter()
        report = check_gguf(path)
        times.append(time.perf_counter() - start)
    assert report.ok, report.format_text()
    print(
        f"header-only check of a {plan.file_size() / 2**30:.2f} GiB file ({len(plan.tensors)} tensors, "
        f"{len(plan.kvs)} keys): best {min(times) * 1000:.1f} ms, median {sorted(times)[2] * 1000:.1f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", type=int, default=10**9, help="stop after this many cases")
    parser.add_argument("--seconds", type=float, default=120.0, help="stop after this many seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--deep-fraction", type=float, default=0.2, help="share of cases checked with --deep")
    parser.add_argument("--crash-dir", default="fuzz-crashes", help="where crashing inputs are saved")
    parser.add_argument(
        "--bench-gib", type=float, default=1.0, help="size of the big-file benchmark (0: skip)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fuzz-checker-") as folder:
        workdir = Path(folder)
        if args.bench_gib > 0:
            bench_big_file(args.bench_gib, workdir)
        return campaign(args, workdir)


if __name__ == "__main__":
    sys.exit(main())
