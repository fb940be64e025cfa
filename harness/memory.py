"""Memory checks: what a loaded model should take, what the server says, and what the runner really holds.

- `estimate_model_memory(gguf, num_ctx=, num_parallel=)`: weights (tensor data as stored) + KV cache
  (`n_layer * n_ctx_total * (n_embd_k + n_embd_v) * bytes per element`, f16 by default, with
  `n_ctx_total = num_ctx * num_parallel` as Ollama gives llama-server; sliding-window layers of the
  architectures in `SWA_PATTERNS` hold only their window) + a compute-buffer allowance fitted to llama.cpp's
  own CPU `compute buffer size` (flash attention on: an f16 KQ mask of n_ubatch x num_ctx, one slot's
  context, n_ubatch rows of activations, and one row of logits per slot).
- `ps_entry(client_or_host, model)`: the model's `/api/ps` entry (size, size_vram, context_length...);
  `compare_with_ps(entry, estimate)` checks its size and context_length against the estimate.
- `runner_processes(server_pid)`: the server's child processes (Ollama's `llama-server`, the embedded
  engine's runners) with their resident memory.
- `rss_of(pid)`: resident bytes. On Linux it is **RssAnon + RssFile** from `/proc/<pid>/status` (VmRSS
  without shared-memory pages, so mmapped weights count once they are touched); elsewhere psutil's
  `memory_info().rss`. `rss_breakdown(pid)` gives the parts, and `RssAnon + VmSwap` is what a leak shows in.
- `MemorySampler`: samples one pid's RSS in a background thread during a run; `rss_growth()` for leak checks.
- `unload_and_check(...)`: unload with `keep_alive: 0` and check the entry leaves `/api/ps` and its runner
  exits (or gives its memory back).
- `memory_record(...)`: the run-record line of kind "memory".
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import ollama
import psutil

from harness.errors import GGUFReadError, HarnessError, ServerError
from harness.gguf.reader import ArrayValue, GGUFHeader, read_gguf_header
from harness.gguf.types import bytes_per_value
from harness.http_tls import verify_for

KV_CACHE_TYPES = ("f32", "f16", "q8_0", "q4_0")  # llama.cpp's --cache-type-k/v choices the estimate knows
DEFAULT_UBATCH = 512  # llama.cpp's n_ubatch default (Ollama's num_batch default is 512 too)
KV_CELL_PADDING = 256  # llama.cpp pads a sliding-window KV cache's size to this many cells
# Sliding-window attention in llama.cpp (`set_swa_pattern(n)`): in every n layers the last one attends to the
# whole context and the others to `<arch>.attention.sliding_window` tokens. Architectures not listed here
# are estimated with a full-context cache in every layer (an over-estimate if they slide).
SWA_PATTERNS = {"gemma2": 2, "gemma3": 6, "gemma3n": 5, "cohere2": 4}


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a loaded model should take; `total_bytes` is the sum of the three parts."""

    weights_bytes: int
    kv_bytes: int
    compute_bytes: int
    total_bytes: int
    num_ctx: int  # per slot, after clamping to the model's trained context (as Ollama does)
    num_parallel: int
    trained_context_length: int | None = None

    def to_dict(self) -> dict[str, int | None]:
        return asdict(self)


@dataclass(frozen=True)
class _Hyper:
    arch: str
    n_layer: int
    n_embd: int
    n_head: int
    n_embd_k: int
    n_embd_v: int
    n_ff: int
    n_vocab: int
    n_ctx_train: int | None
    n_swa: int = 0  # sliding-window size (0: every layer attends to the whole context)
    n_layer_swa: int = 0  # layers that attend to the window only

    def kv_cells(self, n_ctx_slot: int, num_parallel: int, n_ubatch: int) -> int:
        """KV cache cells over all layers: full-context layers hold every slot's context; a sliding-window
        layer holds, per slot, the window plus one ubatch (padded), at most the slot's context."""
        full = (self.n_layer - self.n_layer_swa) * n_ctx_slot * num_parallel
        return full + self.n_layer_swa * self.window_cells(n_ctx_slot, n_ubatch) * num_parallel

    def window_cells(self, n_ctx_slot: int, n_ubatch: int) -> int:
        """Cells per slot of a sliding-window layer's KV cache."""
        window = -(-(self.n_swa + n_ubatch) // KV_CELL_PADDING) * KV_CELL_PADDING
        return min(n_ctx_slot, window)


def _int_key(header: GGUFHeader, key: str, path: Path, *, default: int | None = None) -> int:
    """An integer hyperparameter; a per-layer array counts as its largest item."""
    value = header.value(key)
    if isinstance(value, ArrayValue):
        items = value.items
        value = max(int(v) for v in items) if items is not None and len(items) else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    if default is not None:
        return default
    raise GGUFReadError(
        f"{path} has no usable {key}; cannot estimate its memory",
        "run `harness gguf check` on the file: llama.cpp will not load it either",
    )


def _hyperparameters(path: Path) -> tuple[_Hyper, int]:
    """The hyperparameters the estimate needs, and the bytes of tensor data."""
    header = read_gguf_header(path)
    if not header.complete:
        problem = header.problems[0].message if header.problems else "incomplete metadata"
        raise GGUFReadError(
            f"cannot read the metadata of {path}: {problem}", "run `harness gguf check` on it"
        )
    arch = header.value("general.architecture")
    if not isinstance(arch, str):
        raise GGUFReadError(f"{path} has no general.architecture", "run `harness gguf check` on it")
    n_embd = _int_key(header, f"{arch}.embedding_length", path)
    n_head = _int_key(header, f"{arch}.attention.head_count", path)
    n_head_kv = _int_key(header, f"{arch}.attention.head_count_kv", path, default=n_head)
    head_dim = n_embd // n_head if n_head else 0
    n_embd_k = _int_key(header, f"{arch}.attention.key_length", path, default=head_dim) * n_head_kv
    n_embd_v = _int_key(header, f"{arch}.attention.value_length", path, default=head_dim) * n_head_kv
    tokens = header.value("tokenizer.ggml.tokens")
    n_vocab = tokens.length if isinstance(tokens, ArrayValue) else 0
    if not n_vocab:
        n_vocab = _int_key(header, f"{arch}.vocab_size", path, default=0)
    weights = 0
    for tensor in header.tensors:
        size = tensor.nbytes
        if size is None:
            raise GGUFReadError(
                f"{path}: tensor {tensor.name} has an unknown type ({tensor.type_name})",
                "the estimate needs every tensor's size; check the file",
            )
        weights += size
    n_layer = _int_key(header, f"{arch}.block_count", path)
    n_swa = _int_key(header, f"{arch}.attention.sliding_window", path, default=0)
    pattern = SWA_PATTERNS.get(arch, 0)
    n_layer_swa = n_layer - n_layer // pattern if n_swa and pattern else 0
    hyper = _Hyper(
        arch=arch,
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=n_head,
        n_embd_k=n_embd_k,
        n_embd_v=n_embd_v,
        n_ff=_int_key(header, f"{arch}.feed_forward_length", path, default=4 * n_embd),
        n_vocab=n_vocab,
        n_ctx_train=_int_key(header, f"{arch}.context_length", path, default=0) or None,
        n_swa=n_swa,
        n_layer_swa=n_layer_swa,
    )
    return hyper, weights


def _compute_allowance(
    hyper: _Hyper, n_ctx_slot: int, n_ctx_total: int, n_outputs: int, *, n_ubatch: int, flash_attention: bool
) -> int:
    """llama.cpp's CPU compute buffer, approximately (fitted on llama and Gemma 3 models; see
    tests/test_memory.py).

    llama-server keeps one KV stream per slot (`kv_unified = false`), so attention spans one slot's context.
    With flash attention (llama.cpp's `auto` on CPU) the context-dependent part is the f16 KQ mask,
    n_ubatch x n_ctx_slot x 2 bytes, and a second one over the window when some layers slide; without flash
    attention add the f32 attention scores, x n_head x 4 bytes. Then the layer's f32 activations for n_ubatch
    tokens (4 n_embd + 2 n_ff + n_embd_k + n_embd_v per token), and the logits (n_vocab + n_embd) of the rows
    that are output: llama.cpp reserves its graph for `n_outputs_max`, one per slot, not for the whole
    ubatch. llama.cpp caps n_ubatch by the whole context (all slots).
    """
    ubatch = min(n_ubatch, n_ctx_total)
    activations = 4 * hyper.n_embd + 2 * hyper.n_ff + hyper.n_embd_k + hyper.n_embd_v
    attended = n_ctx_slot + (hyper.window_cells(n_ctx_slot, ubatch) if hyper.n_layer_swa else 0)
    attention = ubatch * attended * (2 if flash_attention else 2 + 4 * hyper.n_head)
    return attention + 4 * ubatch * activations + 4 * n_outputs * (hyper.n_vocab + hyper.n_embd)


def estimate_model_memory(
    gguf_path: str | Path,
    *,
    num_ctx: int,
    num_parallel: int = 1,
    kv_cache_type: str = "f16",
    n_ubatch: int = DEFAULT_UBATCH,
    flash_attention: bool = True,
    clamp_to_trained: bool = True,
) -> MemoryEstimate:
    """What loading `gguf_path` with `num_ctx` tokens per slot and `num_parallel` slots should take.

    With `clamp_to_trained` num_ctx is first capped at the file's `<arch>.context_length`, as Ollama does
    (its `/api/ps` context_length is the capped value).
    """
    if num_ctx < 1 or num_parallel < 1:
        raise HarnessError(
            f"num_ctx and num_parallel must be positive (got {num_ctx}, {num_parallel})",
            "pass the model's context length per request and the server's OLLAMA_NUM_PARALLEL",
        )
    if kv_cache_type not in KV_CACHE_TYPES:
        raise HarnessError(
            f"unknown KV cache type {kv_cache_type!r}", f"use one of {', '.join(KV_CACHE_TYPES)}"
        )
    path = Path(gguf_path)
    hyper, weights = _hyperparameters(path)
    if clamp_to_trained and hyper.n_ctx_train:
        num_ctx = min(num_ctx, hyper.n_ctx_train)
    n_ctx_total = num_ctx * num_parallel
    cells = hyper.kv_cells(num_ctx, num_parallel, min(n_ubatch, n_ctx_total))
    kv = int(cells * (hyper.n_embd_k + hyper.n_embd_v) * bytes_per_value(kv_cache_type))
    compute = _compute_allowance(
        hyper, num_ctx, n_ctx_total, num_parallel, n_ubatch=n_ubatch, flash_attention=flash_attention
    )
    total = weights + kv + compute
    return MemoryEstimate(weights, kv, compute, total, num_ctx, num_parallel, hyper.n_ctx_train)


# --- what the server says -------------------------------------------------------------------------


def _ps_models(client_or_host: Any) -> list[dict[str, Any]]:
    if isinstance(client_or_host, str):
        with ollama.Client(host=client_or_host, timeout=30.0, verify=verify_for(client_or_host)) as client:
            response: Any = client.ps()
    elif hasattr(client_or_host, "ps"):
        response = client_or_host.ps()
    else:
        raise HarnessError(
            f"ps_entry needs a host or a client, got {type(client_or_host).__name__}",
            'pass "127.0.0.1:11434" or an ollama.Client',
        )
    if hasattr(response, "model_dump"):
        response = response.model_dump(mode="json")
    models = response.get("models") if isinstance(response, dict) else getattr(response, "models", None)
    return [m.model_dump(mode="json") if hasattr(m, "model_dump") else dict(m) for m in (models or [])]


def _same_model(a: str, b: str) -> bool:
    def norm(name: str) -> str:
        return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"

    return norm(a) == norm(b)


def ps_entry(client_or_host: Any, model: str) -> dict[str, Any] | None:
    """The model's entry in `/api/ps` as a dict (None when it is not loaded); "m" matches "m:latest"."""
    try:
        models = _ps_models(client_or_host)
    except (ollama.ResponseError, httpx.HTTPError, ConnectionError) as exc:
        raise ServerError(
            f"GET /api/ps failed: {exc}", "check that the server is running and reachable"
        ) from exc
    for entry in models:
        if any(_same_model(str(entry.get(key) or ""), model) for key in ("model", "name")):
            return entry
    return None


@dataclass(frozen=True)
class PsComparison:
    """An `/api/ps` entry against the estimate: `ok` when the size is in bounds and the context matches."""

    size: int | None
    estimate_bytes: int
    size_ratio: float | None
    context_length: int | None
    expected_context_length: int
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def compare_with_ps(
    entry: dict[str, Any] | None, estimate: MemoryEstimate, *, tolerance: float = 0.5
) -> PsComparison:
    """Check `/api/ps` `size` within `tolerance` (relative) of the estimate and `context_length` == num_ctx.

    The default tolerance is wide on purpose: Ollama's size is parsed from llama-server's own log (HEAD) or is
    its own estimate (older versions), and on tiny models fixed buffers dominate (0.33 reported 1.9 MB where
    this estimate, matching the llama.cpp we ship, says about 3.4 MB). Tighten it for real-sized models.
    """
    if not 0 < tolerance < 1:
        raise HarnessError(f"tolerance must be between 0 and 1, got {tolerance}", "0.5 allows 0.5x to 2x")
    low, high = 1 - tolerance, 1 / (1 - tolerance)
    problems: list[str] = []
    if entry is None:
        problems.append("the model is not in /api/ps (not loaded, or already unloaded)")
        return PsComparison(None, estimate.total_bytes, None, None, estimate.num_ctx, problems)
    size = entry.get("size")
    ratio = size / estimate.total_bytes if isinstance(size, int) and estimate.total_bytes else None
    if ratio is None:
        problems.append(f"/api/ps has no usable size ({size!r})")
    elif not low <= ratio <= high:
        problems.append(
            f"/api/ps size {size:,} B is {ratio:.2f}x the estimate {estimate.total_bytes:,} B "
            f"(allowed {low:.2f}x to {high:.2f}x)"
        )
    context = entry.get("context_length")
    if context != estimate.num_ctx:
        problems.append(
            f"/api/ps context_length is {context!r}, expected {estimate.num_ctx} (num_ctx per slot)"
        )
    return PsComparison(size, estimate.total_bytes, ratio, context, estimate.num_ctx, problems)


# --- what the processes hold ----------------------------------------------------------------------


def rss_breakdown(pid: int) -> dict[str, int]:
    """RssAnon, RssFile, RssShmem, VmRSS, VmSwap in bytes from /proc/<pid>/status (Linux only)."""
    wanted = ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmSwap")
    result: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                key, _, rest = line.partition(":")
                if key in wanted:
                    result[key] = int(rest.split()[0]) * 1024
    except FileNotFoundError:
        raise psutil.NoSuchProcess(pid) from None
    return result


def rss_of(pid: int) -> int:
    """Resident bytes of `pid`: RssAnon + RssFile on Linux, psutil's memory_info().rss elsewhere."""
    if sys.platform.startswith("linux"):
        parts = rss_breakdown(pid)
        if "RssAnon" in parts:
            return parts["RssAnon"] + parts.get("RssFile", 0)
    return int(psutil.Process(pid).memory_info().rss)


@dataclass(frozen=True)
class RunnerSnapshot:
    """A child of the server (a model runner) and its resident bytes (`rss_of`)."""

    pid: int
    cmdline: list[str]
    rss_bytes: int


def runner_processes(server_pid: int) -> list[RunnerSnapshot]:
    """All live descendants of `server_pid` (Ollama's llama-server, the embedded engine's runners)."""
    try:
        children = psutil.Process(server_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        raise ServerError(f"no process {server_pid}", "pass the pid of the running server") from None
    found = []
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            if child.status() == psutil.STATUS_ZOMBIE:
                continue
            found.append(RunnerSnapshot(child.pid, child.cmdline(), rss_of(child.pid)))
    return found


@dataclass(frozen=True)
class RssSample:
    t_s: float  # seconds since the sampler started
    rss_bytes: int
    anon_bytes: int | None  # RssAnon + VmSwap on Linux, None elsewhere


class MemorySampler:
    """Samples a pid's resident memory every `interval_s` in a background thread (a context manager).

    One sample is taken on entry and one on exit, so a live process always gives at least two. Sampling
    stops quietly when the process exits; `samples` keeps what was seen.
    """

    def __init__(self, pid: int, *, interval_s: float = 0.1) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.samples: list[RssSample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rss-sampler-{pid}", daemon=True)
        self._t0 = 0.0

    def sample(self) -> RssSample | None:
        """Take one sample now (also called by the thread); None once the process is gone."""
        try:
            if sys.platform.startswith("linux"):
                parts = rss_breakdown(self.pid)
                rss = parts.get("RssAnon", 0) + parts.get("RssFile", 0)
                anon: int | None = parts.get("RssAnon", 0) + parts.get("VmSwap", 0)
            else:
                rss, anon = rss_of(self.pid), None
        except psutil.NoSuchProcess:
            return None
        sample = RssSample(time.monotonic() - self._t0, rss, anon)
        self.samples.append(sample)
        return sample

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            if self.sample() is None:
                return

    def __enter__(self) -> MemorySampler:
        """Sample once now (the thread may start late on a busy machine), then every `interval_s`."""
        self._t0 = time.monotonic()
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.sample()

    @property
    def peak_bytes(self) -> int:
        return max((s.rss_bytes for s in self.samples), default=0)

    def rss_growth(self, *, window: int = 3, anon: bool = True) -> int:
        """Growth over the run: median of the last `window` samples minus median of the first `window`."""
        return rss_growth(self.samples, window=window, anon=anon)


def rss_growth(samples: list[RssSample], *, window: int = 3, anon: bool = True) -> int:
    """Median of the last `window` samples minus the median of the first (RssAnon + VmSwap where known)."""
    if len(samples) < 2:
        raise HarnessError("need at least two RSS samples to measure growth", "sample longer or more often")
    k = max(1, min(window, len(samples) // 2))

    def value(s: RssSample) -> int:
        return s.anon_bytes if (anon and s.anon_bytes is not None) else s.rss_bytes

    first = statistics.median(value(s) for s in samples[:k])
    last = statistics.median(value(s) for s in samples[-k:])
    return int(last - first)


# --- unload ---------------------------------------------------------------------------------------


@dataclass
class UnloadCheck:
    """What unloading did: gone from /api/ps, runners that exited, and memory they gave back."""

    ps_gone: bool
    runners_before: list[RunnerSnapshot]
    runners_after: list[RunnerSnapshot] = field(default_factory=list)
    wait_s: float = 0.0

    @property
    def freed_bytes(self) -> int:
        return sum(r.rss_bytes for r in self.runners_before) - sum(r.rss_bytes for r in self.runners_after)

    @property
    def freed(self) -> bool:
        """Gone from /api/ps, and every runner seen before has exited (or none was seen)."""
        before = {r.pid for r in self.runners_before}
        return self.ps_gone and not any(r.pid in before for r in self.runners_after)


def unload_and_check(
    host: str, model: str, *, server_pid: int | None = None, timeout_s: float = 30.0, poll_s: float = 0.1
) -> UnloadCheck:
    """Unload `model` (generate with an empty prompt and keep_alive 0) and wait until it is gone.

    With `server_pid` the server's runner processes are compared before and after (Ollama stops a model's
    runner on unload; the embedded engine does the same).
    """
    before = runner_processes(server_pid) if server_pid is not None else []
    start = time.monotonic()
    try:
        with ollama.Client(host=host, timeout=timeout_s, verify=verify_for(host)) as client:
            client.generate(model=model, prompt="", keep_alive=0)
            while True:
                after = runner_processes(server_pid) if server_pid is not None else []
                gone = ps_entry(client, model) is None
                still = {r.pid for r in after} & {r.pid for r in before}
                if (gone and not still) or time.monotonic() - start > timeout_s:
                    return UnloadCheck(gone, before, after, time.monotonic() - start)
                time.sleep(poll_s)
    except (ollama.ResponseError, httpx.HTTPError, ConnectionError) as exc:
        raise ServerError(
            f"unloading {model} on {host} failed: {exc}", "check that the server is up and the model exists"
        ) from exc


# --- run record -----------------------------------------------------------------------------------


def memory_record(
    model: str,
    *,
    ps: dict[str, Any] | None = None,
    estimate: MemoryEstimate | None = None,
    rss_samples: list[RssSample] | None = None,
    unload: UnloadCheck | None = None,
    scenario: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The run-record line of kind "memory" (see the contract in the run-record schema)."""
    samples = rss_samples or []
    record: dict[str, Any] = {
        "kind": "memory",
        "model": model,
        "ps_size": ps.get("size") if ps else None,
        "ps_size_vram": ps.get("size_vram") if ps else None,
        "ps_context_length": ps.get("context_length") if ps else None,
        "estimate_bytes": estimate.total_bytes if estimate else None,
        "estimate": estimate.to_dict() if estimate else None,
        "rss_samples": [asdict(s) for s in samples],
        "rss_peak_bytes": max((s.rss_bytes for s in samples), default=None),
        "rss_growth_bytes": rss_growth(samples) if len(samples) >= 2 else None,
        "unload_freed": unload.freed if unload else None,
        "unload_freed_bytes": unload.freed_bytes if unload else None,
    }
    if scenario is not None:
        record["scenario"] = scenario
    if extra:
        record.update(extra)
    return record


to_record = memory_record
