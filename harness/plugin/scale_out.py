"""The suites on several Ollama hosts, and under pytest-xdist: one run record for them all.

`activate` registers `ScaleOutPlugin` instead of the plain `HarnessPlugin` when `--ollama-host` names
several hosts, or when pytest-xdist runs the suites (`-n N`). Then:

- **Several hosts**: every test that uses the server is parametrized over the hosts (a session-scoped
  parameter `harness_host`, id = the host), so each host gets its own session (server, client, models built
  and created once per host) and its tests run together. Without xdist the hosts run one after another in
  this process. With xdist the tests of one host form one `xdist_group` (the run switches `--dist load` to
  `loadgroup`), so each worker is bound to one host (`-n` = the number of hosts runs them side by side;
  fewer workers take several hosts in turn).
- **xdist**: the controller owns the run record (`RunRecorder`); workers never write it. A worker's records
  (and its hosts' run.json changes) travel to the controller with each test report (`user_properties`,
  taken out again before anything else sees them) and, for the last ones, in the worker's `workeroutput`.
  A worker that dies is named in run.json (`lost_workers`) and makes the run incomplete.

Result records carry `"host"`; run.json holds `hosts.<host>` (server, models, status) next to the usual
fields (`server` is the first host's; `models` lists every host's models with their host).
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from typing import TYPE_CHECKING, Any

import pytest

from harness.errors import HarnessError, ServerError
from harness.plugin.hooks import (
    HarnessPlugin,
    log_server_time,
    short_message,
    suite_of,
    uses_server,
    write_server_time,
)
from harness.plugin.hosts import HostRecorder, LocalSink, WorkerSink, host_label, parse_hosts
from harness.plugin.options import SuiteOptions, options_from_pytest
from harness.plugin.progress import TerminalProgress
from harness.runs import RunRecorder
from harness.server.reach import normalize_url, probe

if TYPE_CHECKING:
    from harness.plugin.session import HarnessSession
    from harness.server_time import ServerTimeLog

HOST_PROPERTY = "harness_host"
MODEL_PROPERTY = "harness_model"
EVENTS_PROPERTY = "harness_events"
WORKER_PROPERTY = "harness_worker"
WORKEROUTPUT_KEY = "harness_events"
INTERNAL_PROPERTIES = frozenset({HOST_PROPERTY, MODEL_PROPERTY, EVENTS_PROPERTY, WORKER_PROPERTY})


def needs_scale_out(config: pytest.Config) -> bool:
    """Whether this run needs `ScaleOutPlugin`: several hosts, or pytest-xdist (controller or worker)."""
    with contextlib.suppress(HarnessError):
        if len(parse_hosts(config.getoption("ollama_host"))) > 1:
            return True
    return hasattr(config, "workerinput") or bool(getattr(config.option, "numprocesses", None))


def _role(config: pytest.Config) -> str:
    if hasattr(config, "workerinput"):
        return "worker"
    return "controller" if getattr(config.option, "numprocesses", None) else "local"


class ScaleOutPlugin(HarnessPlugin):
    """HarnessPlugin for several hosts and/or xdist (see the module docstring)."""

    def __init__(self, config: pytest.Config) -> None:
        super().__init__(config)
        self.role = _role(config)
        try:
            self.hosts = parse_hosts(config.getoption("ollama_host"))
        except HarnessError:
            self.hosts = ()  # reported by options_from_pytest at session start
        self.options: SuiteOptions | None = None
        self.recorder: RunRecorder | None = None
        self.sink: LocalSink | WorkerSink | None = None
        self.sessions: dict[str | None, HarnessSession] = {}
        self.server_times: dict[str | None, ServerTimeLog] = {}
        self.lost_workers: list[str] = []
        self._lock = threading.Lock()

    # -------------------------------------------------------------------------------------------- start

    @property
    def multi_host(self) -> bool:
        return len(self.hosts) > 1

    def current_options(self) -> SuiteOptions | None:
        return self.options

    def start(self) -> Any:
        """Open the run (controller/local: the RunRecorder, every named host probed; worker: the buffer)."""
        if self.options is not None:
            return self.harness
        options = options_from_pytest(self.config)
        options = dataclasses.replace(options, hosts=self.hosts)
        if self.role == "worker":
            self.sink = WorkerSink()
            self.options = options
            return None
        self.recorder = RunRecorder.create(
            options.run_dir,
            {"options": options.to_record(), "suites": [str(arg) for arg in self.config.args], "hosts": {}},
            update_latest=False,
        )
        self.sink = LocalSink(self.recorder)
        for host in self.hosts:
            why = probe(normalize_url(host))
            if why is not None:
                message = f"no Ollama server answers at {host} (from --ollama-host): {why}"
                self.recorder.failed_to_start(f"the session could not start: {message}")
                raise ServerError(message, "start it, or leave it out of --ollama-host")
        self.recorder.point_latest()
        self.options = options
        return None

    def session_for(self, host: str | None) -> HarnessSession:
        """The session of one host (None: the single host, or the default resolution), started once."""
        # lazy: pytest loads this plugin in every run; a session's modules load when it starts
        from harness.plugin.session import HarnessSession

        self.start()
        assert self.options is not None and self.sink is not None
        with self._lock:
            if host not in self.sessions:
                run_path, run_id = self._run_place()
                first = host or (self.hosts[0] if self.hosts else None)
                label = host_label(first) if first else self._worker_label()
                recorder = HostRecorder(self.sink, label, run_path, run_id)
                options = dataclasses.replace(self.options, host=host or self.options.host)
                session = HarnessSession.start(options, recorder=recorder)
                session.show_progress(TerminalProgress(self.config))
                self.sessions[host] = session
                self.server_times[host] = log_server_time(session)
                if self.harness is None:
                    self.harness = session
            return self.sessions[host]

    def _run_place(self) -> tuple[Any, str]:
        from pathlib import Path

        if self.recorder is not None:
            return self.recorder.path, self.recorder.run_id
        workerinput = self.config.workerinput  # type: ignore[attr-defined]
        return Path(workerinput["harness_run_path"]), str(workerinput["harness_run_id"])

    def _worker_label(self) -> str:
        workerinput = getattr(self.config, "workerinput", None)
        return f"default@{workerinput['workerid']}" if workerinput else "default"

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """Controller: tell each worker where the run folder is and whether tests are grouped by host."""
        if self.recorder is None:
            with contextlib.suppress(HarnessError):
                self.start()
        if self.recorder is not None:
            node.workerinput["harness_run_path"] = str(self.recorder.path)
            node.workerinput["harness_run_id"] = self.recorder.run_id

    def pytest_report_header(self, config: pytest.Config) -> list[str] | None:
        if self.recorder is None:
            return None
        hosts = ", ".join(self.hosts) if self.hosts else "the default server (each worker resolves its own)"
        how = "one after another" if self.role == "local" else "on xdist workers, one host per worker"
        return [
            f"ollama-harness: hosts: {hosts} ({how})",
            f"ollama-harness: run folder: {self.recorder.path}",
        ]

    # -------------------------------------------------------------------------------------------- collection

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        super().pytest_generate_tests(metafunc)
        if self.multi_host and "harness_host" in metafunc.fixturenames:
            ids = [host_label(host) for host in self.hosts]
            metafunc.parametrize("harness_host", self.hosts, indirect=True, scope="session", ids=ids)

    @pytest.hookimpl(tryfirst=True, optionalhook=True)
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        """Several hosts under xdist: the tests of one host are one scope, so one worker runs them all."""
        if not self.multi_host:
            return None
        from xdist.scheduler import LoadScopeScheduling

        labels = [host_label(host) for host in self.hosts]

        class HostScheduling(LoadScopeScheduling):
            def _split_scope(self, nodeid: str) -> str:
                return _host_in_nodeid(nodeid, labels) or nodeid

            def remove_node(self, node: Any) -> str | None:
                """As xdist's, except that the test running when a worker died is not given to the next
                worker of that host (xdist reports it failed; rerunning it could kill worker after worker)."""
                units = self.assigned_work.get(node, {}).values()
                crashed = next((nid for unit in units for nid, done in unit.items() if not done), None)
                for unit in units:
                    if crashed in unit:
                        unit[crashed] = True
                super().remove_node(node)
                return crashed

        return HostScheduling(config, log)

    # -------------------------------------------------------------------------------------------- running

    def _session_of(self, item: pytest.Item) -> HarnessSession | None:
        return self.sessions.get(_item_host(item))

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        session = self._session_of(item)
        if session is not None and session.server_down is not None and uses_server(item):
            pytest.fail(f"not run: {session.server_down}", pytrace=False)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
        report = yield
        session = self._session_of(item)
        if session is not None and report.failed and uses_server(item) and session.server_down is None:
            down = session.check_server()
            if down is not None:
                item.session.shouldstop = f"{down}; the remaining tests were not run"
        extra: list[tuple[str, Any]] = []
        if session is not None and session.server is not None:
            extra.append((HOST_PROPERTY, session.server.host))
        extra.append((MODEL_PROPERTY, self.model_under_test))
        if isinstance(self.sink, WorkerSink):
            extra.append((WORKER_PROPERTY, self._worker_label().removeprefix("default@")))
            events = self.sink.drain()
            if events is not None:
                extra.append((EVENTS_PROPERTY, events))
        report.user_properties = [*report.user_properties, *extra]  # a new list: not the item's
        return report

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if not isinstance(self.sink, LocalSink):
            return
        internal = {name: value for name, value in report.user_properties if name in INTERNAL_PROPERTIES}
        report.user_properties = [p for p in report.user_properties if p[0] not in INTERNAL_PROPERTIES]
        events = internal.get(EVENTS_PROPERTY)
        self.sink.apply_events(events if isinstance(events, str) else None)
        record = self.outcome_record(report)
        if record is None and report.failed and report.when not in ("setup", "call", "teardown"):
            record = {  # xdist's report for the test that was running when its worker died
                "kind": "test",
                "nodeid": report.nodeid,
                "phase": "worker-crash",
                "outcome": "failed",
                "duration_s": round(report.duration, 6),
                "suite": suite_of(report.nodeid),
                "model": None,
                "message": short_message(report),
            }
        if record is not None:
            record["model"] = internal.get(MODEL_PROPERTY) or record.get("model")
            record["host"] = internal.get(HOST_PROPERTY)
            if WORKER_PROPERTY in internal:
                record["worker"] = internal[WORKER_PROPERTY]
            self.sink.append(record)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """Controller: take a worker's last records; a worker that died makes the run incomplete."""
        if isinstance(self.sink, LocalSink):
            self.sink.apply_events(getattr(node, "workeroutput", {}).get(WORKEROUTPUT_KEY))
        if error is not None:
            name = getattr(node, "gateway", None)
            self.lost_workers.append(
                f"xdist worker {getattr(name, 'id', '?')} died: {str(error).strip()[:300]}"
            )

    # -------------------------------------------------------------------------------------------- end

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        self._restore_sigterm()
        reasons: list[str] = []
        for host, host_session in self.sessions.items():
            write_server_time(host_session, self.server_times[host])
            reason = host_session.server_down or self.interrupted
            host_session.finish(status="incomplete" if reason else "complete", reason=reason)
        if isinstance(self.sink, WorkerSink):
            events = self.sink.drain()
            if events is not None:
                self.config.workeroutput[WORKEROUTPUT_KEY] = events  # type: ignore[attr-defined]
            return
        if self.recorder is None or self.recorder.finished:
            return
        hosts = self.recorder.meta.get("hosts") or {}
        reasons += [
            f"{label}: {entry.get('incomplete_reason')}"
            for label, entry in hosts.items()
            if entry.get("status") == "incomplete"
        ]
        reasons += self.lost_workers
        if self.interrupted and not reasons:
            reasons.append(self.interrupted)
        if self.lost_workers:
            self.recorder.update({"lost_workers": self.lost_workers})
        if exitstatus not in (
            pytest.ExitCode.OK,
            pytest.ExitCode.TESTS_FAILED,
            pytest.ExitCode.NO_TESTS_COLLECTED,
        ):
            reasons.append(f"pytest ended with status {exitstatus}")
        reason = "; ".join(dict.fromkeys(reasons)) or None
        self.recorder.finish("incomplete" if reason else "complete", reason)
        state = f"INCOMPLETE ({reason})" if reason else "complete"
        self.summary = f"run {self.recorder.run_id} {state}: {self.recorder.path}"


def _host_in_nodeid(nodeid: str, labels: list[str]) -> str | None:
    """The host label among a test id's parameters ("test_x[a-HOST]" -> HOST), or None."""
    params = nodeid.rpartition("[")[2].removesuffix("]")
    for label in labels:
        if (
            params == label
            or params.startswith(f"{label}-")
            or params.endswith(f"-{label}")
            or f"-{label}-" in params
        ):
            return label
    return None


def _item_host(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("harness_host") if callspec is not None else None
