"""A second `pytest suites/` run with nothing changed (issue 10): it builds no GGUF, creates no model
again, and its set-up takes under a second.

Starts one embedded engine for both runs (a warm re-run is against a server that is up), points the GGUF cache
at a fresh folder, and runs the suites twice with `--harness-keep-models` (models named by their content, so a
re-run finds them on the server). Reported per run: the set-up (session start + every model's build, upload
and create or look-up, from run.json), the GGUF files written into the cache, the models created vs found, and
the wall time.

    .venv/bin/python benchmarks/bench_warm_rerun.py                  # suites/ (the default run)
    .venv/bin/python benchmarks/bench_warm_rerun.py -- suites/test_lifecycle.py -k "not broken"
    .venv/bin/pytest -m bench benchmarks/bench_warm_rerun.py         # asserts the targets
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from _suites_run import run_suites
from tabulate import tabulate

from harness.engine import EmbeddedEngine

TARGET_SETUP_S = 1.0


@dataclass(frozen=True)
class RunFacts:
    wall_s: float
    session_start_s: float
    model_setup_s: float
    models_created: int
    models_found: int
    gguf_written: int  # GGUF files new or rewritten in the cache during the run
    returncode: int

    @property
    def setup_s(self) -> float:
        return self.session_start_s + self.model_setup_s


def _cache_state(cache: Path) -> dict[str, int]:
    return {str(path): path.stat().st_mtime_ns for path in cache.rglob("*.gguf")}


def _run(host: str, cache: Path, reports: Path, pytest_args: list[str]) -> RunFacts:
    before = _cache_state(cache)
    done, wall = run_suites(
        reports,
        "--ollama-host",
        host,
        "--harness-keep-models",
        *(pytest_args or ["suites/"]),
        env={"HARNESS_CACHE_DIR": str(cache)},
    )
    meta = json.loads((reports / "latest" / "run.json").read_text())
    models = [model for model in meta.get("models") or [] if model.get("created")]
    after = _cache_state(cache)
    return RunFacts(
        wall_s=wall,
        session_start_s=float(meta.get("session_start_s") or 0.0),
        model_setup_s=sum(float(model.get("setup_s") or 0.0) for model in models),
        models_created=sum(1 for model in models if not model.get("reused")),
        models_found=sum(1 for model in models if model.get("reused")),
        gguf_written=sum(1 for path, mtime in after.items() if before.get(path) != mtime),
        returncode=done.returncode,
    )


def measure(pytest_args: list[str]) -> tuple[RunFacts, RunFacts]:
    """The first (cold) and the second (warm) run against one engine and one fresh GGUF cache."""
    with tempfile.TemporaryDirectory(prefix="bench-warm-") as folder:
        root = Path(folder)
        with EmbeddedEngine(models_dir=root / "models") as engine:
            cold = _run(engine.host, root / "cache", root / "reports", pytest_args)
            warm = _run(engine.host, root / "cache", root / "reports", pytest_args)
    return cold, warm


def render(cold: RunFacts, warm: RunFacts) -> str:
    rows = [
        [label, *(getter(run) for run in (cold, warm))]
        for label, getter in (
            ("wall time", lambda r: f"{r.wall_s:.2f} s"),
            ("set-up: session start", lambda r: f"{r.session_start_s:.3f} s"),
            ("set-up: models (build, upload, create or find)", lambda r: f"{r.model_setup_s:.3f} s"),
            ("set-up total", lambda r: f"{r.setup_s:.3f} s"),
            ("GGUF files written to the cache", lambda r: str(r.gguf_written)),
            ("models created", lambda r: str(r.models_created)),
            ("models found on the server", lambda r: str(r.models_found)),
        )
    ]
    return tabulate(rows, headers=["", "first run", "re-run"], tablefmt="simple", disable_numparse=True)


def check(warm: RunFacts) -> list[str]:
    problems = []
    if warm.gguf_written:
        problems.append(f"the re-run wrote {warm.gguf_written} GGUF file(s)")
    if warm.models_created:
        problems.append(f"the re-run created {warm.models_created} model(s) again")
    if warm.setup_s >= TARGET_SETUP_S:
        problems.append(f"the re-run's set-up took {warm.setup_s:.2f} s (target < {TARGET_SETUP_S:g} s)")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("pytest_args", nargs="*", help="pytest arguments after -- (default: suites/)")
    args = parser.parse_args(argv)
    cold, warm = measure(args.pytest_args)
    print(render(cold, warm))
    problems = check(warm)
    print("OK" if not problems else "NOT MET: " + "; ".join(problems))
    return 0 if not problems else 1


@pytest.mark.bench
@pytest.mark.timeout(1800)
def test_warm_rerun_builds_and_creates_nothing_and_sets_up_in_under_a_second() -> None:
    cold, warm = measure([])
    print(render(cold, warm))
    assert cold.models_created > 0 and cold.gguf_written > 0, render(cold, warm)
    assert not check(warm), render(cold, warm)


if __name__ == "__main__":
    sys.exit(main())
