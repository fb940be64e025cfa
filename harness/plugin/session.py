"""One suites session: the run record, the server, the client, and the models it created.

`HarnessSession.start` opens the run folder first (so that even a failure to reach the server is recorded),
then reaches the server (`harness.server`), reads its version, and keeps everything on an `ExitStack` that
`finish` unwinds: models this session created are deleted (unless --harness-keep-models), an embedded engine
is stopped, and the run is marked complete or incomplete with the reason.
"""

from __future__ import annotations

import contextlib
import importlib
import tempfile
import threading
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import HarnessError, ServerError
from harness.plugin.hosts import HostRecorder
from harness.plugin.options import SuiteOptions
from harness.progress import NO_PROGRESS, Progress
from harness.runs import RunRecorder
from harness.server.reach import Server, reach_server, requested_host

if TYPE_CHECKING:
    from harness.plugin.models import ModelUnderTest
    from harness.server.client import OllamaClient

# The embedded engine's scheduler settings for the suites: two parallel slots and a short queue, so that the
# load suite can fill both and then overflow the queue (503) within seconds on a CPU.
ENGINE_LOG = "engine.log"  # the embedded engine's log, kept in the run folder
EMBEDDED_NUM_PARALLEL = 2
EMBEDDED_MAX_QUEUE = 4
EMBEDDED_ENGINE_ENV = {
    "OLLAMA_NUM_PARALLEL": str(EMBEDDED_NUM_PARALLEL),
    "OLLAMA_MAX_QUEUE": str(EMBEDDED_MAX_QUEUE),
    "OLLAMA_KEEP_ALIVE": "5m",
}


SESSION_MODULES = ("harness.server.client", "harness.plugin.models")


def import_session_modules() -> None:
    """Import what the session needs next (the Ollama client, the GGUF builder: about half a second of a
    2-core machine), so that it happens while the embedded engine starts in its own process."""
    for module in SESSION_MODULES:
        importlib.import_module(module)


class HarnessSession:
    """The state the suites share for one pytest session. Create with `start`, end with `finish`."""

    def __init__(self, options: SuiteOptions, recorder: RunRecorder | HostRecorder) -> None:
        self.options = options
        self.recorder = recorder
        self._stack = ExitStack()
        self._lock = threading.Lock()
        self.server: Server | None = None
        self.client: OllamaClient | None = None
        self.server_version: str | None = None
        self.scheduler: dict[str, int] = {}  # what the server said of its settings (harness/engine/app.py)
        self.models: list[ModelUnderTest] = []
        self.server_down: str | None = None
        self.interrupted: str | None = None
        self.progress: Progress = NO_PROGRESS  # set by the plugin: harness.plugin.progress

    def show_progress(self, progress: Progress) -> None:
        """Report model set-up and quality prompts to `progress` (the client's uploads and creates too)."""
        self.progress = progress
        if self.client is not None:
            self.client.progress = progress

    @classmethod
    def start(
        cls,
        options: SuiteOptions,
        *,
        suites: list[str] | None = None,
        recorder: RunRecorder | HostRecorder | None = None,
    ) -> HarnessSession:
        """Open the run folder (or write through `recorder`: one host of a multi-host run), reach the server
        and read its version; raises HarnessError when that fails (the run folder is then kept, marked
        failed-to-start with the reason, and `reports/latest` is not moved to it)."""
        own_run = recorder is None
        if recorder is None:
            recorder = RunRecorder.create(
                options.run_dir, {"options": options.to_record(), "suites": suites or []}, update_latest=False
            )
        session = cls(options, recorder)
        try:
            if options.gguf is not None:
                # lazy: pytest loads this plugin in every run; a session's modules load when it starts
                from harness.plugin.models import check_user_gguf

                report = check_user_gguf(options.gguf)
                recorder.update({"gguf_check": report.summary_line()})
            session._connect()
        except HarnessError as error:
            session.finish_unstarted(f"the session could not start: {error.message}")
            raise
        except BaseException as error:
            session.finish_unstarted(f"start failed: {type(error).__name__}: {error}")
            raise
        if own_run and isinstance(recorder, RunRecorder):
            recorder.point_latest()
        return session

    def finish_unstarted(self, reason: str) -> None:
        """End a session that never started: clean up, and mark its run failed-to-start (a host of a
        multi-host run: incomplete with the reason)."""
        if isinstance(self.recorder, RunRecorder):
            self.finish(status="incomplete", reason=reason, unstarted=True)
        else:
            self.finish(status="incomplete", reason=reason)

    def _connect(self) -> None:
        models_dir = self.options.engine_models_dir
        if models_dir is None:
            models_dir = Path(
                self._stack.enter_context(tempfile.TemporaryDirectory(prefix="harness-engine-"))
            )
        self.server = self._stack.enter_context(
            reach_server(
                requested_host(self.options.host),
                models_dir=models_dir,
                engine_env=EMBEDDED_ENGINE_ENV,
                embedded=self.options.embedded,
                engine_log=self.recorder.path / ENGINE_LOG,
                while_starting=import_session_modules,
            )
        )
        # lazy: pytest loads this plugin in every run; a session's modules load when it starts
        from harness.server.client import OllamaClient

        self.client = OllamaClient(self.server.host, timeout=self.options.request_timeout_s)
        self.server_version = self.client.version()
        self.scheduler = self.client.scheduler_settings() or {}
        self.recorder.update(
            {
                "server": {
                    "host": self.server.host,
                    "url": self.server.url,
                    "version": self.server_version,
                    "engine_kind": self.server.kind,
                    "how": self.server.how,
                    "pid": self.server.pid,
                    "num_parallel": self.num_parallel,
                    "max_queue": self.max_queue,
                    "settings_from": {key: self.setting_source(key) for key in ("num_parallel", "max_queue")},
                    "log": ENGINE_LOG if self.is_embedded else None,
                }
            }
        )

    # ---------------------------------------------------------------------------------------- server facts

    @property
    def is_embedded(self) -> bool:
        """Whether the server is the embedded engine this session started."""
        return self.server is not None and self.server.kind == "embedded"

    def scheduler_setting(self, name: str) -> int | None:
        """A scheduler setting (`num_parallel`, `max_queue`) known or asked, never assumed: what the server
        says (the embedded engine, started here or by `harness serve`, answers), else harness.toml `[load]`,
        else None (unknown: the tests that need it skip with the reason)."""
        if name in self.scheduler:
            return self.scheduler[name]
        value = self.options.config.load.get(name)
        return int(value) if isinstance(value, int) and not isinstance(value, bool) else None

    def setting_source(self, name: str) -> str | None:
        """Where `scheduler_setting(name)` came from: "server", "harness.toml" or None (unknown)."""
        if name in self.scheduler:
            return "server"
        return "harness.toml" if self.scheduler_setting(name) is not None else None

    @property
    def num_parallel(self) -> int | None:
        """Parallel requests per model the server runs (`scheduler_setting`)."""
        return self.scheduler_setting("num_parallel")

    @property
    def max_queue(self) -> int | None:
        """Requests the server queues before answering 503 (`scheduler_setting`)."""
        return self.scheduler_setting("max_queue")

    def require_client(self) -> OllamaClient:
        """The client; raises ServerError when the session has none (start failed) or the server is down."""
        if self.server_down is not None:
            raise ServerError(self.server_down, "restart the server and rerun the suites")
        if self.client is None:
            raise ServerError("the session has no server", "see the error at the start of the run")
        return self.client

    def check_server(self) -> str | None:
        """After a failure: None while the server answers; else one message naming it, remembered so that the
        rest of the run can stop at once instead of waiting on timeouts."""
        if self.server is None:
            return None
        if self.server_down is None:
            why = self.server.why_down()
            if why is not None:
                self.server_down = f"{self.server.describe()} stopped answering: {why}"
        return self.server_down

    def death_finding(self, case: str, stage: str, path: Path) -> dict[str, Any]:
        """The "finding" record of a server that the input of `case` (the file `path`) killed at `stage`
        ("create", "load"): which server and version, which file (a server bug: bad input must get an error
        answer, never a crash)."""
        server = "the embedded engine" if self.is_embedded else "Ollama"
        doing = {"create": "creating", "load": "loading"}.get(stage, "using")
        return {
            "kind": "finding",
            "finding": "server-died",
            "text": f"{server} {self.server_version} exited while {doing} {case} ({path.name})",
            "case": case,
            "stage": stage,
            "file": str(path),
            "server_version": self.server_version,
            "reason": self.server_down,
        }

    # ---------------------------------------------------------------------------------------- recording

    def record(self, record: dict[str, Any]) -> None:
        """Append one result record to the run (thread-safe; a finished run ignores late records)."""
        if self.server is not None and "host" not in record:
            record = {**record, "host": self.server.host}
        if not self.recorder.finished:
            self.recorder.append(record)

    def add_model(self, model: ModelUnderTest) -> None:
        """Remember a model under test (for run.json and for clean-up)."""
        with self._lock:
            self.models.append(model)
            if not self.recorder.finished:
                self.recorder.update({"models": [entry.to_record() for entry in self.models]})

    def delete_created_models(self) -> list[str]:
        """Delete every model this session created (unless --harness-keep-models); returns the problems."""
        problems: list[str] = []
        if self.options.keep_models or self.client is None or self.server_down is not None:
            return problems
        for model in self.models:
            if not model.created:
                continue
            try:
                self.client.delete(model.name)
            except ServerError as error:
                problems.append(f"could not delete {model.name}: {error.message}")
        return problems

    def finish(self, *, status: str, reason: str | None = None, unstarted: bool = False) -> None:
        """Clean up (models, engine) and close the run record (`unstarted`: as failed-to-start); safe to call
        more than once."""
        problems = self.delete_created_models()
        try:
            self._stack.close()
        except (HarnessError, OSError) as error:
            problems.append(f"stopping the server failed: {error}")
        if not self.recorder.finished:
            if problems:
                with contextlib.suppress(HarnessError):
                    self.recorder.update({"cleanup_problems": problems})
            if unstarted and isinstance(self.recorder, RunRecorder):
                self.recorder.failed_to_start(reason or "the session could not start")
            else:
                self.recorder.finish(status, reason)
