"""Several Ollama hosts in one run: parsing `--ollama-host`, and one run record fed by every host.

A run on several hosts has one run folder. Each host's `HarnessSession` writes through a `HostRecorder`
(the `RunRecorder` interface: `path`, `run_id`, `finished`, `append`, `update`, `finish`): its result records
carry `"host"`, and its run.json changes (server, models, its own status) go under run.json's
`hosts.<host>`, while the top-level `models` lists every host's models (with their host) and `server` is
the first host's. The recorder writes into a sink:

- `LocalSink`: the process owns the `RunRecorder` (no xdist, or the xdist controller);
- `WorkerSink`: an xdist worker, which buffers events (records and host run.json changes) that the plugin
  sends to the controller with each test report and at the worker's end; the controller applies them to
  its `LocalSink` with `apply_events`. Only the controller writes the run folder.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from harness.errors import HarnessError
from harness.runs import RunRecorder, json_default
from harness.server.reach import normalize_url

HOSTS_FOLDER = "hosts"  # per-host files (an embedded engine's log) live in <run>/hosts/<host>/


def parse_hosts(values: Iterable[str] | str | None) -> tuple[str, ...]:
    """`--ollama-host` values (repeatable, each possibly comma-separated) as a tuple, in order, without
    duplicates; raises HarnessError for an empty entry."""
    if values is None:
        return ()
    if isinstance(values, str):
        values = [values]
    hosts: list[str] = []
    for value in values:
        for part in str(value).split(","):
            host = part.strip()
            if not host:
                raise HarnessError(
                    f"--ollama-host {value!r} has an empty host",
                    "write hosts separated by commas, e.g. --ollama-host a:11434,b:11434",
                )
            if host not in hosts:
                hosts.append(host)
    labels = [host_label(host) for host in hosts]
    if len(set(labels)) != len(labels):
        raise HarnessError(
            f"--ollama-host names the same server twice: {', '.join(hosts)}", "name each server once"
        )
    return tuple(hosts)


def host_label(host: str) -> str:
    """The host as records carry it: "HOST:PORT" by Ollama's rules (what `Server.host` holds)."""
    return urlsplit(normalize_url(host)).netloc


class Sink(Protocol):
    def append(self, record: Mapping[str, Any]) -> None: ...

    def host_meta(self, label: str, changes: Mapping[str, Any]) -> None: ...


class LocalSink:
    """Writes a multi-host run into the process's own RunRecorder (thread-safe)."""

    def __init__(self, recorder: RunRecorder) -> None:
        self.recorder = recorder
        self._lock = threading.Lock()

    def append(self, record: Mapping[str, Any]) -> None:
        if not self.recorder.finished:
            self.recorder.append(record)

    def host_meta(self, label: str, changes: Mapping[str, Any]) -> None:
        with self._lock:
            if self.recorder.finished:
                return
            hosts = dict(self.recorder.meta.get("hosts") or {})
            hosts[label] = {**hosts.get(label, {}), **changes}
            update: dict[str, Any] = {"hosts": hosts}
            if "models" in changes:
                update["models"] = [
                    {**model, "host": name}
                    for name, entry in hosts.items()
                    for model in entry.get("models") or []
                ]
            server = self.recorder.meta.get("server") or {}
            if "server" in changes and not server.get("host"):
                update["server"] = changes["server"]
            self.recorder.update(update)

    def apply_events(self, payload: str | None) -> int:
        """Apply the events a worker sent (`WorkerSink.drain`); returns how many there were."""
        events = json.loads(payload) if payload else []
        for event in events:
            if event[0] == "record":
                self.append(event[1])
            else:
                self.host_meta(event[1], event[2])
        return len(events)


class WorkerSink:
    """An xdist worker's buffer of events for the controller (thread-safe)."""

    def __init__(self) -> None:
        self._events: list[list[Any]] = []
        self._lock = threading.Lock()

    def append(self, record: Mapping[str, Any]) -> None:
        with self._lock:
            self._events.append(["record", dict(record)])

    def host_meta(self, label: str, changes: Mapping[str, Any]) -> None:
        with self._lock:
            self._events.append(["meta", label, dict(changes)])

    def drain(self) -> str | None:
        """The buffered events as JSON (None when there are none), emptying the buffer."""
        with self._lock:
            events, self._events = self._events, []
        return json.dumps(events, default=json_default) if events else None


class HostRecorder:
    """One host's view of the run record (the `RunRecorder` interface the session uses)."""

    def __init__(self, sink: Sink, label: str, run_path: Path, run_id: str) -> None:
        self.sink = sink
        self.label = label
        self.run_id = run_id
        self.path = run_path / HOSTS_FOLDER / re.sub(r"[^\w.@-]+", "_", label)
        self.path.mkdir(parents=True, exist_ok=True)
        self.finished = False

    def append(self, record: Mapping[str, Any]) -> None:
        if not self.finished:
            self.sink.append({**record, "host": record.get("host") or self.label})

    def update(self, meta_changes: Mapping[str, Any]) -> None:
        if not self.finished:
            self.sink.host_meta(self.label, meta_changes)

    def finish(self, status: str = "complete", reason: str | None = None) -> None:
        if not self.finished:
            self.sink.host_meta(self.label, {"status": status, "incomplete_reason": reason})
            self.finished = True
