"""Property test: the checker survives mutated real GGUF files.

Whatever the bytes, `check_gguf` returns a report (it raises only `GGUFReadError`, for files it cannot
open, which never happens here), within 1 s, allocating less than 64 MB (tracemalloc peak). Seeds are
files written by the harness's builder; mutations (bit flips, hostile integers written over length and
count fields, cuts, inserts, deletes) land mostly in the metadata part, where the parsing happens.
A longer campaign: `scripts/fuzz_checker.py`.
"""

from __future__ import annotations

import json
import time
import tracemalloc
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.gguf.broken import HOSTILE_U32, HOSTILE_U64, Mutation, apply_mutations
from harness.gguf.check import check_gguf
from harness.gguf.findings import CODES, CheckReport
from harness.gguf.spec import ModelSpec
from harness.testing.helpers import mutation_seeds

SEED_SPEC = ModelSpec(name="fuzz", n_embd=32, n_layer=1, n_head=2, n_head_kv=1, n_ff=32, context_length=64)
TIME_LIMIT_S = 3.0  # a hang guard with room for a busy machine (checks of these files take milliseconds)
MEMORY_LIMIT = 64 << 20


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def seeds(workdir: Path) -> list[tuple[bytes, int]]:
    """(file bytes, size of the metadata part) for an F32 and a Q8_0 fixture."""
    return mutation_seeds(SEED_SPEC, workdir)


def _position(metadata_bias: bool) -> st.SearchStrategy[int]:
    return st.integers(0, 20_000) if metadata_bias else st.integers(0, 1 << 20)


mutation: st.SearchStrategy[Mutation] = st.one_of(
    st.tuples(st.just("flip"), _position(True), st.integers(1, 255)),
    st.tuples(st.just("u64"), _position(True), st.sampled_from(HOSTILE_U64)),
    st.tuples(st.just("u32"), _position(True), st.sampled_from(HOSTILE_U32)),
    st.tuples(st.just("cut"), _position(False), st.just(0)),
    st.tuples(st.just("insert"), _position(True), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("delete"), _position(True), st.integers(1, 64)),
)


def checked(path: Path, deep: bool) -> tuple[CheckReport, float, int]:
    """Check `path` under tracemalloc: (report, seconds, peak bytes)."""
    tracemalloc.start()
    try:
        start = time.perf_counter()
        report = check_gguf(path, deep=deep)
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return report, elapsed, peak


def _assert_sane(report: CheckReport, elapsed: float, peak: int) -> None:
    assert elapsed < TIME_LIMIT_S, f"check took {elapsed:.3f} s"
    assert peak < MEMORY_LIMIT, f"check allocated {peak:,} bytes at peak"
    for finding in report.findings:
        assert finding.code in CODES
        assert finding.severity in ("error", "warning", "info")
        assert finding.message and finding.hint
    json.loads(report.to_json())
    report.format_text().encode("utf-8")  # printable: no lone surrogates from undecodable names


@settings(
    max_examples=250,
    deadline=timedelta(seconds=2),  # the per-check limit (1 s) is asserted on the check itself
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    seed_index=st.integers(0, 1),
    mutations=st.lists(mutation, min_size=1, max_size=4),
    deep=st.booleans(),
)
def test_mutated_files_never_crash_hang_or_bloat(
    seeds: list[tuple[bytes, int]], workdir: Path, seed_index: int, mutations: list[Mutation], deep: bool
) -> None:
    data, _ = seeds[seed_index]
    path = workdir / "mutant.gguf"
    path.write_bytes(apply_mutations(data, mutations))
    _assert_sane(*checked(path, deep))


@settings(
    max_examples=60,
    deadline=timedelta(seconds=2),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    version=st.sampled_from((1, 2, 3, 4, 2**24 * 3)),
    counts=st.tuples(st.sampled_from((*HOSTILE_U64, 2, 3)), st.sampled_from((*HOSTILE_U64, 2, 3))),
    body=st.lists(
        st.one_of(
            st.sampled_from(HOSTILE_U64).map(lambda v: v.to_bytes(8, "little")),
            st.sampled_from(HOSTILE_U32).map(lambda v: v.to_bytes(4, "little")),
            st.binary(max_size=24),
        ),
        max_size=24,
    ),
)
def test_synthetic_hostile_headers(
    workdir: Path, version: int, counts: tuple[int, int], body: list[bytes]
) -> None:
    path = workdir / "synthetic.gguf"
    header = (
        b"GGUF"
        + version.to_bytes(4, "little")
        + counts[0].to_bytes(8, "little")
        + counts[1].to_bytes(8, "little")
    )
    path.write_bytes(header + b"".join(body))
    report, elapsed, peak = checked(path, deep=True)
    _assert_sane(report, elapsed, peak)
    assert not report.ok  # no general.architecture can come out of these bodies


def test_unmutated_seeds_are_clean(seeds: list[tuple[bytes, int]], workdir: Path) -> None:
    for index, (data, _) in enumerate(seeds):
        path = workdir / f"clean-{index}.gguf"
        path.write_bytes(data)
        report, elapsed, peak = checked(path, deep=True)
        _assert_sane(report, elapsed, peak)
        assert report.findings == []
