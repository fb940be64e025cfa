#!/usr/bin/env python3
"""A longer fuzzing campaign for the embedded engine's `/api/create` (CI runs 25 cases:
tests/faults/test_hostile_gguf.py).

Mutates real fixture files (the random draws of scripts/fuzz_checker.py), uploads each mutant to one
engine and creates a model from it. The property: create rejects every file the GGUF checker rejects, and
the engine survives every case. With --generate, each accepted mutant is also asked for two tokens: a file
that passes both the checker and the trial load but kills its runner must fail only that request.
Reports cases run, violations (create accepted a checker-rejected file; inputs saved), engine crashes,
agreement counts, the slowest case and the peak RSS of the engine and its children.

    .venv/bin/python scripts/fuzz_engine_create.py --seconds 300 --seed 1 --generate
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fuzz_checker import SEED_SPEC, random_mutation

from harness.engine import EmbeddedEngine
from harness.gguf.broken import apply_mutations
from harness.gguf.build import build_gguf
from harness.gguf.check import check_gguf
from harness.gguf.reader import read_gguf_header


def tree_rss(pid: int) -> int:
    """RSS of a process and its children, in bytes."""
    total = 0
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        for process in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                total += process.memory_info().rss
    return total


def send_case(
    http: httpx.Client, name: str, digest: str, payload: bytes, checker_ok: bool, generate: bool
) -> tuple[str, bool]:
    """Upload, create (and optionally generate from) one mutant: (outcome text, created)."""
    http.post(f"/api/blobs/{digest}", content=payload).raise_for_status()
    created = http.post("/api/create", json={"model": name, "files": {"m.gguf": digest}, "stream": False})
    created_ok = created.status_code == 200
    outcome = f"checker {'ok' if checker_ok else 'rejects'}, create {'ok' if created_ok else 'rejects'}"
    if created_ok and generate:
        answer = http.post(
            "/api/generate",
            json={"model": name, "prompt": "the", "raw": True, "stream": False,
                  "options": {"num_predict": 2, "temperature": 0}},
        )  # fmt: skip
        outcome += f", generate {answer.status_code}"
    return outcome, created_ok


def campaign(args: argparse.Namespace, workdir: Path) -> int:
    seeds = []
    for tensor_type in ("f32", "q8_0"):
        built = build_gguf(SEED_SPEC.replace(tensor_type=tensor_type), workdir / f"seed-{tensor_type}.gguf")
        seeds.append((built.path.read_bytes(), read_gguf_header(built.path).data_offset or 0))
    rng = random.Random(args.seed)
    outcomes: Counter[str] = Counter()
    violations: list[Path] = []
    slowest, peak_rss, cases, transport_errors = 0.0, 0, 0, 0
    mutant = workdir / "mutant.gguf"
    engine = EmbeddedEngine(workdir / "models", env={"HARNESS_NUM_THREAD": "1"}).start()
    http = httpx.Client(base_url=engine.url, timeout=httpx.Timeout(150.0, connect=5.0))
    deadline = time.monotonic() + args.seconds
    try:
        while cases < args.cases and time.monotonic() < deadline:
            data, offset = rng.choice(seeds)
            mutations = [random_mutation(rng, offset, len(data)) for _ in range(rng.randrange(1, 5))]
            payload = apply_mutations(data, mutations)
            mutant.write_bytes(payload)
            checker_ok = check_gguf(mutant).ok
            digest = f"sha256:{hashlib.sha256(payload).hexdigest()}"
            start = time.perf_counter()
            name = f"m{cases}"
            try:
                outcome, created_ok = send_case(http, name, digest, payload, checker_ok, args.generate)
            except httpx.HTTPError as error:
                alive = engine.process is not None and engine.process.poll() is None
                step = error.request.method + " " + error.request.url.path if error._request else "?"
                print(
                    f"TRANSPORT ERROR case {cases} in {step} ({type(error).__name__}: {error}; "
                    f"engine alive: {alive}): "
                    f"{mutations!r}",
                    file=sys.stderr,
                )
                transport_errors += 1
                outcome, created_ok = "transport error", False
            slowest = max(slowest, time.perf_counter() - start)
            peak_rss = max(peak_rss, tree_rss(engine.pid))
            outcomes[outcome] += 1
            cases += 1
            if created_ok and not checker_ok:
                saved = Path(args.crash_dir) / f"violation-{args.seed}-{cases}.gguf"
                saved.parent.mkdir(parents=True, exist_ok=True)
                saved.write_bytes(payload)
                violations.append(saved)
                print(
                    f"VIOLATION case {cases}: create accepted a checker-rejected file ({saved})",
                    file=sys.stderr,
                )
            if engine.process is None or engine.process.poll() is not None:
                print(f"ENGINE DIED at case {cases}: {mutations!r}; log {engine.log_path}", file=sys.stderr)
                return 1
            if created_ok:
                http.request("DELETE", "/api/delete", json={"model": name})
    finally:
        http.close()
        engine.stop()
    print(f"cases run:        {cases:,} (seed {args.seed})")
    print(f"violations:       {len(violations)}")
    print("engine crashes:   0")
    print(f"transport errors: {transport_errors}")
    print(f"slowest case:     {slowest:.2f} s")
    print(f"peak engine RSS:  {peak_rss / 2**20:.0f} MiB (engine and children)")
    for outcome, count in outcomes.most_common():
        print(f"  {count:6d}  {outcome}")
    return 1 if violations or transport_errors else 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=300.0, help="time budget (default 300)")
    parser.add_argument("--cases", type=int, default=10**9, help="stop after this many cases")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--generate", action="store_true", help="also generate from every accepted mutant")
    parser.add_argument("--crash-dir", default="fuzz-violations", help="where violating inputs are saved")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fuzz-engine-") as workdir:
        return campaign(args, Path(workdir))


if __name__ == "__main__":
    sys.exit(main())
