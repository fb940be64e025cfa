"""Which models are loaded: load on first use, share parallel slots, keep_alive expiry, LRU eviction,
reload when load-time options change, and a bounded queue of waiting requests."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from harness.engine.config import EngineConfig
from harness.engine.runner import RunnerProcess

log = logging.getLogger("harness.engine")

# Go's time.Now().Add(math.MaxInt64) is about 292 years ahead: what Ollama shows for "forever".
_FOREVER_DELTA = timedelta(days=292 * 365)

_LOAD = "load"  # _try_reserve's answer: nothing loaded, the caller starts the runner

QUEUE_FULL_MESSAGE = "server busy, please try again.  maximum pending requests exceeded"


class QueueFullError(RuntimeError):
    """More requests are waiting than OLLAMA_MAX_QUEUE allows (503)."""

    def __init__(self) -> None:
        super().__init__(QUEUE_FULL_MESSAGE)


@dataclass(frozen=True)
class LoadOptions:
    """Options fixed when llama.cpp loads a model; changing any of them means a reload."""

    num_ctx: int
    num_batch: int
    num_thread: int
    embedding: bool = False  # llama-server's --embeddings (asked for by the embedding endpoints)

    def serves(self, wanted: LoadOptions) -> bool:
        """Whether a runner loaded with these options serves a request that wants `wanted`: the same options,
        except that a runner with embeddings on serves requests without them too."""
        return replace(self, embedding=wanted.embedding) == wanted and (
            self.embedding or not wanted.embedding
        )


@dataclass(frozen=True)
class ModelRequest:
    """What a request needs loaded."""

    key: str
    display_name: str
    model_path: Path
    digest: str
    details: dict[str, Any]
    load_options: LoadOptions
    keep_alive_s: float


@dataclass
class LoadedModel:
    """A running runner and its bookkeeping."""

    request: ModelRequest
    runner: RunnerProcess
    slots: int
    load_duration_s: float
    refcount: int = 0
    keep_alive_s: float = 300.0
    last_used: float = field(default_factory=time.monotonic)
    expires_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    expiry_task: asyncio.Task[None] | None = None
    broken: bool = False

    def usable(self) -> bool:
        return self.runner.alive() and not self.broken

    def matches(self, request: ModelRequest) -> bool:
        return self.request.model_path == request.model_path and self.request.load_options.serves(
            request.load_options
        )

    def ps_entry(self) -> dict[str, Any]:
        """One /api/ps entry: size as Ollama 0.33 reports it (llama.cpp's logged buffer sizes, else the file
        size; see `RunnerProcess.size_bytes`), size_vram 0 on CPU."""
        expires = self.expires_at
        if self.refcount > 0:
            expires = _expiry_time(self.keep_alive_s)
        return {
            "name": self.request.display_name,
            "model": self.request.display_name,
            "size": self.runner.size_bytes(),
            "digest": self.request.digest.removeprefix("sha256:"),
            "details": self.request.details,
            "expires_at": expires.isoformat(),
            "size_vram": 0,
            "context_length": self.request.load_options.num_ctx,
        }


def _expiry_time(keep_alive_s: float) -> datetime:
    now = datetime.now(timezone.utc).astimezone()
    return now + (_FOREVER_DELTA if math.isinf(keep_alive_s) else timedelta(seconds=keep_alive_s))


class Scheduler:
    """Loads, shares and unloads runners. All state changes happen under one asyncio.Condition."""

    def __init__(self, config: EngineConfig, log_dir: Path) -> None:
        self.config = config
        self.log_dir = log_dir
        self.loaded: dict[str, LoadedModel] = {}
        self.loading: set[str] = set()  # keys whose runner is starting (counted against the maximum)
        self.pending = 0
        self._changed = asyncio.Condition()

    async def acquire(self, request: ModelRequest) -> LoadedModel:
        """A loaded model with a slot reserved for the caller; raise QueueFullError or RunnerLoadError."""
        if self.pending >= self.config.max_queue:
            raise QueueFullError()
        self.pending += 1
        try:
            async with self._changed:
                while True:
                    outcome = await self._try_reserve(request)
                    if isinstance(outcome, LoadedModel):
                        return outcome
                    if outcome == _LOAD:
                        await self._load_unlocked(request)
                        continue
                    await self._changed.wait()
        finally:
            self.pending -= 1

    async def _load_unlocked(self, request: ModelRequest) -> None:
        """Start a runner without holding the lock, so other models keep serving meanwhile."""
        self.loading.add(request.key)
        self._changed.release()
        try:
            model = await self._load(request)
        finally:
            await self._changed.acquire()
            self.loading.discard(request.key)
            self._changed.notify_all()
        self.loaded[request.key] = model
        log.info("loaded runners count=%d", len(self.loaded))

    async def _try_reserve(self, request: ModelRequest) -> LoadedModel | str | None:
        """The reserved model, `_LOAD` when the caller should start its runner, or None to wait."""
        if request.key in self.loading:
            return None
        model = self.loaded.get(request.key)
        if model is not None and not model.usable():
            log.warning("runner for %s is gone (pid %d); reloading", request.display_name, model.runner.pid)
            await self._unload(model)
            model = None
        if model is not None and not model.matches(request):
            if model.refcount > 0:
                return None
            log.info("reloading %s: load options or model file changed", request.display_name)
            await self._unload(model)
            model = None
        if model is None:
            if len(self.loaded) + len(self.loading) >= self.config.max_loaded_models:
                idle = [m for m in self.loaded.values() if m.refcount == 0]
                if not idle:
                    return None
                await self._unload(min(idle, key=lambda m: m.last_used))
            return _LOAD
        if model.refcount >= model.slots:
            return None
        model.refcount += 1
        model.keep_alive_s = request.keep_alive_s
        model.last_used = time.monotonic()
        if model.expiry_task is not None:
            model.expiry_task.cancel()
            model.expiry_task = None
        return model

    async def _load(self, request: ModelRequest) -> LoadedModel:
        started = time.monotonic()
        options = request.load_options
        runner = await RunnerProcess.start(
            request.model_path,
            n_ctx=options.num_ctx * self.config.num_parallel,
            n_parallel=self.config.num_parallel,
            n_threads=options.num_thread,
            n_batch=options.num_batch,
            log_dir=self.log_dir,
            timeout_s=self.config.load_timeout_s,
            embedding=options.embedding,
        )
        return LoadedModel(request, runner, self.config.num_parallel, time.monotonic() - started)

    async def release(self, model: LoadedModel) -> None:
        """Give back a slot; start the keep_alive countdown when the model goes idle."""
        async with self._changed:
            model.refcount -= 1
            model.last_used = time.monotonic()
            if model.refcount == 0 and self.loaded.get(model.request.key) is model:
                if model.keep_alive_s <= 0 or not model.usable():
                    await self._unload(model)
                else:
                    model.expires_at = _expiry_time(model.keep_alive_s)
                    if not math.isinf(model.keep_alive_s):
                        model.expiry_task = asyncio.create_task(self._expire(model, model.keep_alive_s))
            self._changed.notify_all()

    async def _expire(self, model: LoadedModel, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        async with self._changed:
            if model.refcount == 0 and self.loaded.get(model.request.key) is model:
                model.expiry_task = None
                log.info("keep_alive expired, unloading %s", model.request.display_name)
                await self._unload(model)
                self._changed.notify_all()

    async def unload_when_idle(self, key: str) -> bool:
        """keep_alive 0 on a load request: unload now if idle, else as soon as the last request ends."""
        async with self._changed:
            model = self.loaded.get(key)
            if model is None:
                return False
            model.keep_alive_s = 0
            if model.refcount == 0:
                await self._unload(model)
                self._changed.notify_all()
            return True

    async def _unload(self, model: LoadedModel) -> None:
        if self.loaded.get(model.request.key) is model:
            del self.loaded[model.request.key]
        if model.expiry_task is not None and model.expiry_task is not asyncio.current_task():
            model.expiry_task.cancel()
        model.expiry_task = None
        await model.runner.stop()
        log.info("unloaded %s (pid %d)", model.request.display_name, model.runner.pid)

    async def unload_key(self, key: str) -> None:
        """Drop a model that was deleted or whose runner must go (idle or not)."""
        async with self._changed:
            model = self.loaded.get(key)
            if model is not None and model.refcount == 0:
                await self._unload(model)
                self._changed.notify_all()

    def ps(self) -> list[dict[str, Any]]:
        entries = [m.ps_entry() for m in self.loaded.values() if m.runner.alive()]
        return sorted(entries, key=lambda e: e["expires_at"], reverse=True)

    def runner_pids(self) -> list[dict[str, Any]]:
        return [
            {
                "model": m.request.display_name,
                "pid": m.runner.pid,
                "url": m.runner.url,
                "alive": m.runner.alive(),
                "rss_bytes": m.runner.rss_bytes(),
                "buffer_bytes": m.runner.buffer_bytes,
            }
            for m in self.loaded.values()
        ]

    async def shutdown(self) -> None:
        """Stop every runner."""
        for model in list(self.loaded.values()):
            with contextlib.suppress(Exception):
                await self._unload(model)
