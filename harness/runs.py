"""The run record: one folder per run under `reports/`, written so that a crash never loses what was done.

A run folder `reports/<run-id>/` holds:

- `run.json`: what ran, where and on what (schema version, run id, times, status, harness version and commit,
  options, server, machine, models). Rewritten atomically (temp file + `os.replace`) on every update.
- `results.jsonl`: one result record per line, each with a `kind` ("test", "prompt", "suite", "load",
  "memory", "exact"), appended and flushed line by line, so the results written before a crash of the process
  survive it; fsynced at most once a second and at the end (`FSYNC_INTERVAL_S`), so a machine crash loses at
  most the last second, and a run of many small records does not wait on the disk for each.

`reports/latest` is a symlink to the newest run, replaced atomically, and only ever pointing at a folder whose
`run.json` exists. Writing goes through `RunRecorder`; reading through `load_run` and `list_runs`::

    with RunRecorder.create("reports", {"options": {"suites": ["gsm8k"]}}) as run:
        run.update({"server": {"host": "127.0.0.1:11434", "version": "0.31.2", "engine_kind": "ollama"}})
        run.append({"kind": "test", "nodeid": "suites/test_gsm8k.py::test_accuracy", "outcome": "passed"})
    # leaving the block finishes the run: "complete", or "incomplete" with the reason if it raised
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import platform
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil

from harness import __version__
from harness.errors import RunRecordError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
RUN_FILE = "run.json"
RESULTS_FILE = "results.jsonl"
LATEST_LINK = "latest"
# requests: harness.server_time; finding: a server a broken file killed; exact: an exact-output control's
# reply (the oracle), compared across runs
RESULT_KINDS = ("test", "prompt", "suite", "load", "memory", "requests", "finding", "exact")
FAILED_TO_START = "failed-to-start"  # the reason's prefix of a run that never started (latest not moved)
RUN_STATUSES = ("running", "complete", "incomplete")
FSYNC_INTERVAL_S = 1.0  # results.jsonl reaches the disk at least this often (and at the end)


def new_run_id(now: dt.datetime | None = None) -> str:
    """A run id that sorts by start time (UTC, to the second) and is unique thanks to a random suffix."""
    now = now or dt.datetime.now(dt.timezone.utc)
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def utc_now() -> str:
    """The current time as an ISO 8601 UTC string, as stored in run.json."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _gpu_names() -> str | None:
    """Names of the NVIDIA GPUs as nvidia-smi reports them, or None when there is none (or no nvidia-smi)."""
    nvidia_smi = shutil.which("nvidia-smi")
    if nvidia_smi is None:
        return None
    try:
        done = subprocess.run(
            [nvidia_smi, "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    names = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    return ", ".join(names) if done.returncode == 0 and names else None


GIB = 1 << 30
# The hardware class: what decides the numbers a run measures. Not the host name: every CI job is a fresh VM
# with another name, and its RAM differs by a few MiB from one VM to the next.
HARDWARE_CLASS_KEYS = ("cpu", "cores", "ram_gib", "gpu")


def hardware_key(machine: Mapping[str, Any], keys: tuple[str, ...] = HARDWARE_CLASS_KEYS) -> dict[str, Any]:
    """The values of `keys` in a run's "machine" record (the baseline key): `ram_gib` is worked out from
    `ram_bytes` for runs recorded before it existed, a missing GPU is None."""
    values = dict(machine)
    if values.get("ram_gib") is None and isinstance(values.get("ram_bytes"), int):
        values["ram_gib"] = round(values["ram_bytes"] / GIB)
    return {key: values.get(key) for key in keys}


def machine_info() -> dict[str, Any]:
    """Where the run happens: host name, OS, CPU, cores, RAM (bytes, and whole GiB), GPU, and a fingerprint
    of the hardware class (`HARDWARE_CLASS_KEYS`).

    Runs are compared with a baseline of the same hardware class (harness.report.compare), whatever the host
    is called. `HARNESS_HOSTNAME` names the host instead of the system's name (for tests and CI labels).
    """
    ram_bytes = psutil.virtual_memory().total
    info: dict[str, Any] = {
        "hostname": os.environ.get("HARNESS_HOSTNAME") or socket.gethostname(),
        "os": platform.platform(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "ram_bytes": ram_bytes,
        "ram_gib": round(ram_bytes / GIB),
        "gpu": _gpu_names(),
    }
    identity = json.dumps(list(hardware_key(info).values()))
    info["fingerprint"] = hashlib.sha256(identity.encode()).hexdigest()[:16]
    return info


def harness_info() -> dict[str, Any]:
    """The harness version and the git commit of its source tree (None when not run from a git checkout)."""
    commit: str | None = None
    git = shutil.which("git")
    if git is not None:
        try:
            done = subprocess.run(
                [git, "rev-parse", "HEAD"],
                cwd=Path(__file__).resolve().parent,
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
            if done.returncode == 0:
                commit = done.stdout.strip() or None
        except (OSError, subprocess.TimeoutExpired):
            commit = None
    return {"version": __version__, "commit": commit}


def json_default(value: Any) -> Any:
    """Encode the non-JSON types results commonly hold (numpy scalars and arrays, paths, datetimes)."""
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    if isinstance(value, (Path, dt.datetime, dt.date)):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"cannot store a {type(value).__name__} in a run record: {value!r}")


def _fsync_directory(path: Path) -> None:
    with contextlib.suppress(OSError):
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Write `data` as JSON to `path` through a temp file in the same folder and `os.replace`."""
    descriptor, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as temp:
            json.dump(data, temp, indent=2, ensure_ascii=False, default=json_default)
            temp.write("\n")
            temp.flush()
            os.fsync(temp.fileno())
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
        raise
    _fsync_directory(path.parent)


def point_latest(reports_dir: Path, run_dir: Path) -> None:
    """Point `reports_dir/latest` at `run_dir` atomically: a symlink under a temp name, then `os.replace`."""
    link = reports_dir / LATEST_LINK
    if link.exists() and not link.is_symlink():
        raise RunRecordError(
            f"{link} exists and is not a symlink, so it cannot point at the newest run",
            f"move {link} out of the way; the harness manages it as a symlink",
        )
    temp_link = reports_dir / f".{LATEST_LINK}.{secrets.token_hex(4)}"
    os.symlink(os.path.relpath(run_dir, reports_dir), temp_link)
    try:
        os.replace(temp_link, link)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp_link)
        raise


class RunRecorder:
    """Writes one run folder. Create with `RunRecorder.create`; usable as a context manager.

    Safe to call from several threads of one process (appends and updates are serialised).
    """

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        self.path = path
        self.meta = meta
        self._lock = threading.Lock()
        self._results = open(path / RESULTS_FILE, "a", encoding="utf-8")  # noqa: SIM115 (closed in finish)
        self._synced_at = time.monotonic()

    @property
    def run_id(self) -> str:
        """The run's id, which is also its folder name."""
        return str(self.meta["run_id"])

    @classmethod
    def create(
        cls,
        reports_dir: str | os.PathLike[str],
        meta: Mapping[str, Any] | None = None,
        *,
        update_latest: bool = True,
    ) -> RunRecorder:
        """Start a run: make a uniquely named folder (exclusive mkdir), write run.json, point `latest` at it.

        `meta` holds the caller's part of run.json (options, server, models, ...); the recorder fills in the
        run id, times, status, harness, machine and process fields.
        """
        reports = Path(reports_dir)
        try:
            reports.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RunRecordError(
                f"cannot create the reports folder {reports}: {error.strerror or error}",
                "choose a writable folder with --reports-dir",
            ) from error
        for _attempt in range(100):
            run_id = new_run_id()
            path = reports / run_id
            try:
                path.mkdir()
                break
            except FileExistsError:
                continue
            except OSError as error:
                raise RunRecordError(
                    f"cannot create the run folder {path}: {error.strerror or error}",
                    "choose a writable folder with --reports-dir",
                ) from error
        else:  # pragma: no cover - would need 100 random collisions in one second
            raise RunRecordError(f"could not find a free run id in {reports}", "try again")
        machine = machine_info()
        record: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "run_id": run_id,
            "started_at": utc_now(),
            "finished_at": None,
            "status": "running",
            "incomplete_reason": None,
            "harness": harness_info(),
            "options": {},
            "server": {"host": None, "version": None, "engine_kind": None},
            "machine": machine,
            "process": {"pid": os.getpid(), "hostname": socket.gethostname()},
            "models": [],
        }
        record.update(dict(meta or {}))
        record.update(schema_version=SCHEMA_VERSION, run_id=run_id, status="running")
        write_json_atomic(path / RUN_FILE, record)
        recorder = cls(path, record)
        if update_latest:
            recorder.point_latest()
        return recorder

    def point_latest(self) -> None:
        """Point `reports/latest` at this run (for a run created with `update_latest=False` once it has
        started for real); a filesystem without symlinks only logs a warning."""
        try:
            point_latest(self.path.parent, self.path)
        except OSError as error:
            log.warning("could not point %s at %s: %s", self.path.parent / LATEST_LINK, self.path, error)

    def failed_to_start(self, reason: str) -> None:
        """Close a run that never started (the server did not answer, the model file is unusable): kept,
        marked `failed_to_start` and incomplete with the reason; `latest` is not moved to it."""
        with contextlib.suppress(RunRecordError):
            self.update({"failed_to_start": True})
        if not self.finished:
            self.finish("incomplete", f"{FAILED_TO_START}: {reason}")

    @property
    def finished(self) -> bool:
        """Whether `finish` has been called."""
        return self._results.closed

    def _check_open(self) -> None:
        if self.finished:
            raise RunRecordError(
                f"run {self.run_id} is already finished ({self.meta['status']})",
                "start a new run with RunRecorder.create",
            )

    def append(self, record: Mapping[str, Any]) -> None:
        """Append one result record (with a "kind") to results.jsonl. When this returns the line is in the
        file (a crash of this process keeps it); it reaches the disk within `FSYNC_INTERVAL_S`."""
        kind = record.get("kind")
        if kind not in RESULT_KINDS:
            raise ValueError(f"a result record needs a kind among {RESULT_KINDS}, got {kind!r}")
        line = json.dumps(dict(record), ensure_ascii=False, default=json_default)
        with self._lock:
            self._check_open()
            self._results.write(line + "\n")
            self._results.flush()
            if time.monotonic() - self._synced_at >= FSYNC_INTERVAL_S:
                os.fsync(self._results.fileno())
                self._synced_at = time.monotonic()

    def update(self, meta_changes: Mapping[str, Any]) -> None:
        """Change top-level run.json fields (a given field replaces the stored one) and rewrite it."""
        protected = {"schema_version", "run_id", "status"} & set(meta_changes)
        if protected:
            raise ValueError(f"run.json fields {sorted(protected)} are managed by the recorder")
        with self._lock:
            self._check_open()
            self.meta.update(meta_changes)
            write_json_atomic(self.path / RUN_FILE, self.meta)

    def finish(self, status: str = "complete", reason: str | None = None) -> None:
        """Close the run as "complete", or "incomplete" with the reason (interrupted, crashed...)."""
        if status not in ("complete", "incomplete"):
            raise ValueError(f"a run finishes as 'complete' or 'incomplete', not {status!r}")
        if status == "incomplete" and not reason:
            reason = "the run stopped before it finished"
        with self._lock:
            self._check_open()
            self._results.flush()
            os.fsync(self._results.fileno())
            self._results.close()
            self.meta.update(
                status=status,
                finished_at=utc_now(),
                incomplete_reason=reason if status == "incomplete" else None,
            )
            write_json_atomic(self.path / RUN_FILE, self.meta)

    def __enter__(self) -> RunRecorder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.finished:
            return
        if exc_type is None:
            self.finish("complete")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.finish("incomplete", "interrupted (SIGINT)")
        else:
            self.finish("incomplete", f"crashed: {exc_type.__name__}: {exc}")


# ----------------------------------------------------------------------------------------------- reading


@dataclass
class RunRecord:
    """A run folder as loaded: run.json (`meta`), its result records, and warnings found while reading."""

    path: Path
    meta: dict[str, Any]
    results: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    status: str = "running"
    incomplete_reason: str | None = None

    @property
    def run_id(self) -> str:
        return str(self.meta["run_id"])

    @property
    def started_at(self) -> str:
        return str(self.meta["started_at"])

    @property
    def complete(self) -> bool:
        return self.status == "complete"

    @property
    def engine_kind(self) -> str | None:
        return (self.meta.get("server") or {}).get("engine_kind")

    @property
    def fingerprint(self) -> str | None:
        return (self.meta.get("machine") or {}).get("fingerprint")

    @property
    def model_digests(self) -> frozenset[str]:
        """The digests of the models the run tested (the key for finding a comparable baseline)."""
        return frozenset(
            str(model["digest"]) for model in self.meta.get("models") or [] if model.get("digest")
        )

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        """The result records of one kind, in the order they were written."""
        return [record for record in self.results if record.get("kind") == kind]


def _corrupt(path: Path, problem: str) -> RunRecordError:
    return RunRecordError(
        f"the run folder {path} is corrupt: {problem}",
        "the run was damaged or edited by hand; rerun the suites, or pass another run",
    )


def _read_meta(path: Path) -> dict[str, Any]:
    run_file = path / RUN_FILE
    if not path.exists():
        raise RunRecordError(
            f"no run folder at {path}",
            "pass a run folder such as reports/latest or reports/<run-id> (see `harness report --list`)",
        )
    if not path.is_dir():
        raise RunRecordError(
            f"{path} is not a run folder (it is a file)", "pass the run's folder, not a file inside it"
        )
    if not run_file.is_file():
        raise RunRecordError(
            f"{path} is not a run folder: {RUN_FILE} is missing",
            "the run never started properly or this is another folder; `harness report --list` lists runs",
        )
    try:
        meta = json.loads(run_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise _corrupt(path, f"{RUN_FILE} is not valid JSON ({error})") from error
    except (OSError, UnicodeDecodeError) as error:
        raise _corrupt(path, f"{RUN_FILE} cannot be read ({error})") from error
    if not isinstance(meta, dict):
        raise _corrupt(path, f"{RUN_FILE} holds a {type(meta).__name__}, not an object")
    version = meta.get("schema_version")
    if version != SCHEMA_VERSION:
        if isinstance(version, int):
            raise RunRecordError(
                f"the run at {path} has schema version {version}; this harness reads {SCHEMA_VERSION}",
                "report it with the harness version that wrote it, or rerun the suites with this one",
            )
        raise _corrupt(path, f"{RUN_FILE} has no valid schema_version (found {version!r})")
    missing = [key for key in ("run_id", "started_at", "status") if not isinstance(meta.get(key), str)]
    if missing:
        raise _corrupt(path, f"{RUN_FILE} lacks {', '.join(missing)}")
    if meta["status"] not in RUN_STATUSES:
        raise _corrupt(path, f"{RUN_FILE} has an unknown status {meta['status']!r}")
    return meta


def _read_results(path: Path, warnings: list[str]) -> list[dict[str, Any]]:
    results_file = path / RESULTS_FILE
    if not results_file.is_file():
        warnings.append(f"{RESULTS_FILE} is missing: the run has no results")
        return []
    try:
        lines = results_file.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as error:
        raise _corrupt(path, f"{RESULTS_FILE} cannot be read ({error})") from error
    results: list[dict[str, Any]] = []
    numbered = [(number, line) for number, line in enumerate(lines, start=1) if line.strip()]
    for index, (number, line) in enumerate(numbered):
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("kind"), str):
                raise ValueError("not a result record with a kind")
        except ValueError as error:
            if index == len(numbered) - 1:
                warnings.append(
                    f"ignored a torn last line ({number}) in {RESULTS_FILE}: the run stopped while writing it"
                )
                break
            raise _corrupt(
                path, f"line {number} of {RESULTS_FILE} is not a result record ({error})"
            ) from error
        results.append(record)
    return results


def _process_gone(meta: Mapping[str, Any]) -> str | None:
    """Why a "running" run's process is known to be gone, or None when it may still run (or cannot tell)."""
    process = meta.get("process") or {}
    pid, hostname = process.get("pid"), process.get("hostname")
    if not isinstance(pid, int) or hostname != socket.gethostname():
        return None
    try:
        started = dt.datetime.fromisoformat(str(meta["started_at"])).timestamp()
        created = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return f"its process (pid {pid}) is gone: it crashed or was killed"
    except (ValueError, psutil.Error):
        return None
    if created > started + 2:  # the pid now belongs to a process started after the run
        return f"its process (pid {pid}) is gone: it crashed or was killed"
    return None


def load_run(path: str | os.PathLike[str], *, with_results: bool = True) -> RunRecord:
    """Load and validate a run folder (or the `latest` symlink); raises RunRecordError on unusable input.

    A "running" run whose process has died on this host is reported as incomplete. A torn last line in
    results.jsonl (a crash while writing) is skipped with a warning.
    """
    given = Path(path)
    meta = _read_meta(given)
    run = RunRecord(path=given.resolve(), meta=meta, status=meta["status"])
    run.incomplete_reason = meta.get("incomplete_reason")
    if run.status == "running":
        gone = _process_gone(meta)
        if gone is not None:
            run.status, run.incomplete_reason = "incomplete", f"the run never finished: {gone}"
    if with_results:
        run.results = _read_results(given, run.warnings)
    if run.status == "incomplete":
        run.warnings.insert(
            0, f"run {run.run_id} is INCOMPLETE: {run.incomplete_reason or 'no reason given'}"
        )
    elif run.status == "running":
        run.warnings.insert(0, f"run {run.run_id} is still running: its results are partial")
    return run


def iter_run_folders(reports_dir: str | os.PathLike[str]) -> Iterator[Path]:
    """The candidate run folders in `reports_dir` (real folders, not `latest` nor hidden temp entries)."""
    reports = Path(reports_dir)
    if not reports.is_dir():
        raise RunRecordError(
            f"no reports folder at {reports}", "pass the folder that holds the runs with --reports-dir"
        )
    for entry in sorted(reports.iterdir()):
        if entry.is_dir() and not entry.is_symlink() and not entry.name.startswith("."):
            yield entry


def scan_runs(
    reports_dir: str | os.PathLike[str], *, with_results: bool = False
) -> tuple[list[RunRecord], list[tuple[Path, RunRecordError]]]:
    """All runs in `reports_dir`, oldest first, and the folders that could not be read (with why)."""
    runs: list[RunRecord] = []
    broken: list[tuple[Path, RunRecordError]] = []
    for folder in iter_run_folders(reports_dir):
        try:
            runs.append(load_run(folder, with_results=with_results))
        except RunRecordError as error:
            broken.append((folder, error))
    runs.sort(key=lambda run: (run.started_at, run.run_id))
    return runs, broken


def list_runs(reports_dir: str | os.PathLike[str], *, with_results: bool = False) -> list[RunRecord]:
    """The readable runs in `reports_dir`, oldest first (unreadable folders are skipped)."""
    return scan_runs(reports_dir, with_results=with_results)[0]
