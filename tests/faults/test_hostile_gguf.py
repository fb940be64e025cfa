"""Scenario: hostile and broken GGUF files against the engine's create, and files that abort llama.cpp.

1. Property: the engine's `/api/create` rejects every file the GGUF checker rejects. Hypothesis mutates
   real fixture files (harness.gguf.broken.apply_mutations: bit flips, hostile integers over counts and
   lengths, cuts, inserts, deletes), a fixed budget of `FUZZ_EXAMPLES` against one engine; the engine
   process must survive every case. Longer campaign: `scripts/fuzz_engine_create.py`.
2. Every broken kind in harness.gguf.broken.BROKEN_KINDS: the checker rejects it and so does create.
3. Files that make llama.cpp abort (block_count 0, duplicate tokens): trial_load's child dies with
   GGML_ASSERT while this process survives; create rejects them (checker first); and, written straight
   into the engine's store (the engine has no checker-disabled create, so the manifest is written with
   harness.engine.store the way a model pulled from elsewhere would sit there), loading one kills only
   its own runner: the request fails clearly, the engine and another model's runner live on.
Reproduce: `.venv/bin/pytest tests/faults/test_hostile_gguf.py -q -s` (prints the fuzz figures).
"""

from __future__ import annotations

import contextlib
import hashlib
import signal
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.engine import EmbeddedEngine
from harness.engine.names import ModelName
from harness.engine.store import MEDIA_MODEL, Layer, Store
from harness.gguf.broken import (
    ABORT,
    BROKEN_KINDS,
    HOSTILE_U32,
    HOSTILE_U64,
    Mutation,
    apply_mutations,
    write_broken,
)
from harness.gguf.check import check_gguf
from harness.gguf.findings import loads_but_wrong
from harness.gguf.llamacpp import trial_load
from harness.gguf.reader import read_gguf_header
from harness.gguf.spec import ModelSpec
from harness.server.client import OllamaClient, OllamaRequestError
from harness.testing.helpers import alive, mutation_seeds, runner_pids

from .conftest import GEN, start_engine

pytestmark = pytest.mark.timeout(180)

SEED_SPEC = ModelSpec(name="fuzz", n_embd=32, n_layer=1, n_head=2, n_head_kv=1, n_ff=32, context_length=64)
FUZZ_EXAMPLES = 25
ABORT_KINDS = [name for name, kind in BROKEN_KINDS.items() if kind.llama_cause == ABORT]


class CreateProbe:
    """Uploads bytes to an engine and creates a model from them, keeping the figures of the campaign."""

    def __init__(self, engine: EmbeddedEngine, workdir: Path) -> None:
        self.engine = engine
        self.workdir = workdir
        self.http = httpx.Client(base_url=engine.url, timeout=httpx.Timeout(150.0, connect=5.0))
        self.cases: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.slowest_s = 0.0
        self.peak_rss = 0
        self._tree = psutil.Process(engine.pid)

    def create(self, data: bytes, name: str = "mutant", label: str = "fuzz") -> tuple[int, dict[str, Any]]:
        """Upload `data` as a blob, POST /api/create (non-streaming): (status, answer)."""
        digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
        start = time.perf_counter()
        upload = self.http.post(f"/api/blobs/{digest}", content=data)
        assert upload.status_code in (200, 201), upload.text
        answer = self.http.post(
            "/api/create", json={"model": name, "files": {"model.gguf": digest}, "stream": False}
        )
        self.slowest_s = max(self.slowest_s, time.perf_counter() - start)
        self.cases[label] += 1
        self.rejected[label] += answer.status_code != 200
        self._sample_memory()
        assert self.engine.process is not None and self.engine.process.poll() is None, "the engine died"
        return answer.status_code, answer.json()

    def _sample_memory(self) -> None:
        processes = [self._tree, *self._tree.children(recursive=True)]
        rss = 0
        for process in processes:
            with contextlib.suppress(psutil.Error):
                rss += process.memory_info().rss
        self.peak_rss = max(self.peak_rss, rss)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile-gguf")


@pytest.fixture(scope="module")
def probe(workdir: Path) -> Iterator[CreateProbe]:
    engine = start_engine(workdir / "models")
    probe = CreateProbe(engine, workdir)
    try:
        yield probe
        print(
            f"\nengine create: fuzz {probe.cases['fuzz']} cases ({probe.rejected['fuzz']} rejected), "
            f"broken kinds {probe.cases['kind']} ({probe.rejected['kind']} rejected), engine crashes 0, "
            f"slowest case {probe.slowest_s:.2f} s, peak engine+children RSS {probe.peak_rss / 2**20:.0f} MiB"
        )
    finally:
        probe.http.close()
        engine.stop()


@pytest.fixture(scope="module")
def seeds(workdir: Path) -> list[tuple[bytes, int]]:
    """(file bytes, size of the metadata part) of an F32 and a Q8_0 fixture."""
    return mutation_seeds(SEED_SPEC, workdir)


def _mutations() -> st.SearchStrategy[list[Mutation]]:
    """Mutations biased to the metadata part (the first 20 KB), where parsing happens."""
    metadata = st.integers(0, 20_000)
    mutation: st.SearchStrategy[Mutation] = st.one_of(
        st.tuples(st.just("flip"), metadata, st.integers(1, 255)),
        st.tuples(st.just("u64"), metadata, st.sampled_from(HOSTILE_U64)),
        st.tuples(st.just("u32"), metadata, st.sampled_from(HOSTILE_U32)),
        st.tuples(st.just("cut"), st.integers(0, 1 << 20), st.just(0)),
        st.tuples(st.just("insert"), metadata, st.binary(min_size=1, max_size=16)),
        st.tuples(st.just("delete"), metadata, st.integers(1, 64)),
    )
    return st.lists(mutation, min_size=1, max_size=3)


@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=timedelta(seconds=150),  # a checker-clean mutant gets a llama.cpp trial load in a subprocess
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
    derandomize=True,  # a fixed, reproducible budget in CI; scripts/fuzz_engine_create.py explores
)
@given(seed_index=st.integers(0, 1), mutations=_mutations())
def test_create_rejects_every_file_the_checker_rejects(
    probe: CreateProbe, seeds: list[tuple[bytes, int]], seed_index: int, mutations: list[Mutation]
) -> None:
    data = apply_mutations(seeds[seed_index][0], mutations)
    path = probe.workdir / "mutant.gguf"
    path.write_bytes(data)
    report = check_gguf(path)
    status, answer = probe.create(data)
    if any(not loads_but_wrong(f) for f in report.errors):  # the others llama.cpp (and Ollama) load too
        assert status != 200, f"create accepted a file the checker rejects: {report.summary_line()}"
    if status != 200:
        assert 400 <= status < 600 and answer["error"], answer
    assert httpx.get(probe.engine.url, timeout=5).text == "Ollama is running"


@pytest.mark.parametrize("kind", sorted(BROKEN_KINDS))
def test_create_rejects_each_broken_kind_the_checker_rejects(probe: CreateProbe, kind: str) -> None:
    path = write_broken(kind, SEED_SPEC, probe.workdir / f"{kind}.gguf")
    report = check_gguf(path)
    status, answer = probe.create(path.read_bytes(), name=f"broken-{kind}", label="kind")
    if BROKEN_KINDS[kind].deep:
        assert report.ok, "a deep-only kind is invisible to the quick check the engine runs"
        return
    assert BROKEN_KINDS[kind].code in report.codes()
    if BROKEN_KINDS[kind].llama_cause is None:  # llama.cpp (and so Ollama) loads it: create accepts it
        assert status == 200, answer
        return
    assert not report.ok and BROKEN_KINDS[kind].code in {f.code for f in report.errors}
    assert status != 200 and answer["error"]


@pytest.mark.parametrize("kind", ABORT_KINDS)
def test_aborting_file_kills_only_the_trial_child(workdir: Path, kind: str) -> None:
    path = write_broken(kind, SEED_SPEC, workdir / f"abort-{kind}.gguf")
    result = trial_load(path, timeout=60)
    assert not result.ok
    assert result.returncode == -signal.SIGABRT
    assert "GGML_ASSERT" in result.stderr
    assert result.cause  # we are still here: the abort stayed in the child


def test_aborting_file_in_the_store_kills_only_its_runner(
    workdir: Path, tiny_gguf: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    models = tmp_path_factory.mktemp("abort-store") / "models"
    engine = start_engine(models)
    try:
        with OllamaClient(engine.host, timeout=60, stall_timeout=60) as client:
            client.create_model("tiny", gguf_path=tiny_gguf.path)
            client.generate("tiny", "the", raw=True, options={**GEN, "num_predict": 2})
            bystander = runner_pids(engine)["tiny:latest"]
            store = Store(models)
            tiny_manifest = store.load(ModelName.parse("tiny"))
            assert tiny_manifest is not None
            for kind in ABORT_KINDS:
                path = write_broken(kind, SEED_SPEC, workdir / f"store-{kind}.gguf")
                with pytest.raises(OllamaRequestError, match="failed to validate GGUF"):
                    client.create_model(kind, gguf_path=path)  # the checker stands in the way
                digest = client.upload_blob(path)
                layer = Layer(MEDIA_MODEL, digest, path.stat().st_size)
                store.save(ModelName.parse(kind), tiny_manifest.config, [layer])  # past the checker

                with pytest.raises(OllamaRequestError) as caught:
                    client.generate(kind, "the", raw=True, options={**GEN, "num_predict": 2})
                error = caught.value
                assert error.status_code == 500
                assert error.server_message and "llama-server process has terminated" in error.server_message
                assert kind not in " ".join(runner_pids(engine))
                assert engine.process is not None and engine.process.poll() is None
                assert runner_pids(engine)["tiny:latest"] == bystander and alive(bystander)
                reply = client.generate("tiny", "hello", options={**GEN, "num_predict": 2})
                assert reply.done
    finally:
        engine.stop()


def test_invalid_utf8_tensor_name_in_an_error_still_gets_a_json_answer(
    probe: CreateProbe, seeds: list[tuple[bytes, int]]
) -> None:
    data, data_offset = seeds[0]
    path = probe.workdir / "seed-f32.gguf"
    first = read_gguf_header(path).tensors[0]
    assert first.offset == 0
    name = first.name.encode()
    at = data.index(name, 0, data_offset)
    hostile = bytearray(data[: data_offset + 16])  # cut inside the first tensor's data
    hostile[at] = 0xFF  # the first tensor's name is no longer UTF-8
    digest = f"sha256:{hashlib.sha256(hostile).hexdigest()}"
    with httpx.Client(base_url=probe.engine.url, timeout=60) as http:  # its own connection: it may drop
        assert http.post(f"/api/blobs/{digest}", content=bytes(hostile)).status_code == 201
        answer = http.post(
            "/api/create", json={"model": "bad-utf8", "files": {"m.gguf": digest}, "stream": False}
        )
    assert answer.status_code == 500
    error = answer.json()["error"]
    assert "exceeds file size" in error
    assert "\\udcff" + name[1:].decode() in error, error  # the bad byte shown escaped, the name readable
