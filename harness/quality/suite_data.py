"""Load and validate the prompt data of the quality suites (`suites/data/<suite>.yaml`).

A suite file has a header (suite name, version, description, the prompt-format instruction shared by all
its items, the pass threshold, the generation budget `num_predict` and `stop` sequences, a held-out
`fewshot` list of solved examples that are never scored, and named JSON schemas and tools that items refer
to) and a list of items (id, prompt, grader, answer, tags, grader-specific fields). Every problem in a file
is reported at once, each naming the file, the item id and the problem, as one `SuiteDataError`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness.datafiles import data_dir
from harness.errors import SuiteDataError
from harness.quality import json_graders  # noqa: F401  (registers the JSON and tool-call graders)
from harness.quality.scoring import Item, Rubric, get_grader, grader_names

DATA_DIR = data_dir("suites") / "data"
DIFFICULTIES = ("easy", "medium", "hard")
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_HEADER_KEYS = {
    "suite", "version", "description", "instruction", "threshold", "items", "num_predict", "stop", "fewshot",
    "schemas", "tools",
}  # fmt: skip
_FEWSHOT_KEYS = {"prompt", "solution", "answer"}
# Tokens an answer may take when the suite file sets no `num_predict`: room for a worked solution before the
# `Answer:` line (lm-evaluation-harness gives GSM8K chain-of-thought 256; our items need more, see math.yaml).
DEFAULT_SUITE_NUM_PREDICT = 512
_ITEM_KEYS = {
    "id", "prompt", "grader", "answer", "tags", "rel_tolerance", "tolerance", "units", "accept", "rubric",
    "check", "schema", "tools",
}  # fmt: skip
_HINT = "fix the file (see suites/data/README.md for the format)"


@dataclass(frozen=True)
class FewShotExample:
    """A solved example shown before the question (`--harness-fewshot K`): never one of the scored items."""

    prompt: str
    solution: str
    answer: str

    def as_text(self) -> str:
        """The example in the format the answers are graded in: question, worked solution, `Answer:` line."""
        solution = f"{self.solution.strip()}\n" if self.solution.strip() else ""
        return f"Question: {self.prompt.strip()}\n{solution}Answer: {self.answer}"


@dataclass(frozen=True)
class Suite:
    """A loaded, validated suite: its header and items, in file order."""

    name: str
    path: Path
    version: int
    description: str
    instruction: str
    threshold: float
    items: tuple[Item, ...]
    num_predict: int = DEFAULT_SUITE_NUM_PREDICT  # tokens per answer (a JSON schema's answers need it all)
    stop: tuple[str, ...] = ()
    fewshot: tuple[FewShotExample, ...] = ()

    @property
    def bounded_answers(self) -> bool:
        """Whether answers follow a JSON schema: they end within the budget whatever the weights, and need
        all of it (a fixture model keeps the suite's budget for them)."""
        return any(item.schema is not None for item in self.items)

    def item(self, item_id: str) -> Item:
        """The item with this id; `SuiteDataError` if there is none."""
        for item in self.items:
            if item.id == item_id:
                return item
        raise SuiteDataError(f"suite {self.name!r} has no item {item_id!r}", "list the items of the suite")

    def format_prompt(self, item: Item, fewshot: int = 0) -> str:
        """The text sent to the model: the question, then the suite's answer-format instruction; with
        `fewshot` K > 0, the instruction, K solved examples and the question in the same `Question:` format
        (lm-evaluation-harness's `num_fewshot`), so that a base model continues with a solution."""
        if fewshot <= 0:
            return f"{item.prompt.strip()}\n\n{self.instruction.strip()}"
        if fewshot > len(self.fewshot):
            raise SuiteDataError(
                f"--harness-fewshot {fewshot}: suite {self.name!r} has only {len(self.fewshot)} "
                "few-shot example(s)",
                f"use --harness-fewshot {len(self.fewshot)} or fewer, or add examples to 'fewshot' in "
                f"{self.path}",
            )
        examples = "\n\n".join(example.as_text() for example in self.fewshot[:fewshot])
        return f"{self.instruction.strip()}\n\n{examples}\n\nQuestion: {item.prompt.strip()}\n"


def list_suites(data_dir: Path = DATA_DIR) -> list[str]:
    """Names of the suite files in `data_dir`."""
    return sorted(path.stem for path in data_dir.glob("*.yaml"))


def load_suite(name_or_path: str | Path, data_dir: Path = DATA_DIR) -> Suite:
    """Load a suite by name ("math") or path; `SuiteDataError` listing every problem in the file."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = data_dir / f"{name_or_path}.yaml"
    try:
        # libyaml's safe loader when built in: 10x faster than the pure-Python one, the same documents
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        document = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)
    except FileNotFoundError:
        raise SuiteDataError(
            f"suite file not found: {path}", f"known suites: {', '.join(list_suites(data_dir)) or 'none'}"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise SuiteDataError(
            f"cannot read suite file {path}: {error}", "check the path and its permissions"
        ) from None
    except yaml.YAMLError as error:
        raise SuiteDataError(f"{path}: not valid YAML: {error}", _HINT) from None
    return _parse_suite(document, path)


def _parse_suite(document: Any, path: Path) -> Suite:
    if not isinstance(document, Mapping):
        raise SuiteDataError(f"{path}: expected a mapping with suite, instruction and items", _HINT)
    problems = [f"unknown header key {key!r}" for key in sorted(set(document) - _HEADER_KEYS)]
    for key in ("suite", "description", "instruction"):
        if not isinstance(document.get(key), str) or not document[key].strip():
            problems.append(f"header {key!r} must be a non-empty string")
    version = document.get("version", 1)
    if not isinstance(version, int) or isinstance(version, bool):
        problems.append(f"header 'version' must be an integer, not {version!r}")
    threshold = document.get("threshold", 0.5)
    if not _is_number(threshold) or not 0 <= threshold <= 1:
        problems.append(f"header 'threshold' must be a number in [0, 1], not {threshold!r}")
    num_predict = document.get("num_predict", DEFAULT_SUITE_NUM_PREDICT)
    if not isinstance(num_predict, int) or isinstance(num_predict, bool) or num_predict < 1:
        problems.append(f"header 'num_predict' must be a positive integer, not {num_predict!r}")
    stop = _string_list(document.get("stop", []))
    if stop is None:
        problems.append("header 'stop' must be a list of non-empty strings")
    fewshot = _parse_fewshot(document.get("fewshot", []), problems)
    tables = _named_tables(document, problems)
    raw_items = document.get("items")
    if not isinstance(raw_items, list) or not raw_items:
        problems.append("'items' must be a non-empty list")
        raw_items = []
    items: list[Item] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_items):
        item_id = raw.get("id") if isinstance(raw, Mapping) else None
        label = f"item {item_id!r}" if isinstance(item_id, str) else f"item #{index + 1}"
        item, item_problems = _parse_item(raw, tables)
        if isinstance(item_id, str):
            if item_id in seen:
                item_problems.append("duplicate id")
            seen.add(item_id)
        problems += [f"{label}: {problem}" for problem in item_problems]
        if item is not None:
            items.append(item)
    scored = {" ".join(item.prompt.split()) for item in items}
    problems += [
        f"fewshot example #{index + 1} is a scored item (few-shot examples must be held out)"
        for index, example in enumerate(fewshot)
        if " ".join(example.prompt.split()) in scored
    ]
    if problems:
        listed = "\n  ".join(problems)
        raise SuiteDataError(f"{path}: {len(problems)} problem(s):\n  {listed}", _HINT)
    return Suite(
        name=document["suite"],
        path=path,
        version=version,
        description=document["description"].strip(),
        instruction=document["instruction"].strip(),
        threshold=float(threshold),
        items=tuple(items),
        num_predict=int(num_predict),
        stop=stop or (),
        fewshot=tuple(fewshot),
    )


def _parse_fewshot(raw: Any, problems: list[str]) -> list[FewShotExample]:
    """The held-out solved examples (`fewshot:`), each with a prompt, an optional solution and an answer."""
    if not isinstance(raw, list):
        problems.append("'fewshot' must be a list of examples with prompt, solution and answer")
        return []
    examples = []
    for index, entry in enumerate(raw):
        label = f"fewshot example #{index + 1}"
        if not isinstance(entry, Mapping) or set(entry) - _FEWSHOT_KEYS:
            problems.append(f"{label}: must be a mapping with prompt, solution and answer only")
            continue
        prompt, solution, answer = entry.get("prompt"), entry.get("solution", ""), entry.get("answer")
        if isinstance(answer, (int, float)) and not isinstance(answer, bool):
            answer = str(answer)
        if not all(isinstance(value, str) for value in (prompt, solution, answer)) or not (
            str(prompt).strip() and str(answer).strip()
        ):
            problems.append(f"{label}: prompt and answer must be non-empty strings, solution a string")
            continue
        examples.append(FewShotExample(str(prompt).strip(), str(solution).strip(), str(answer).strip()))
    return examples


def _named_tables(document: Mapping[str, Any], problems: list[str]) -> dict[str, dict[str, Any]]:
    """The header's `schemas` (name -> JSON schema) and `tools` (name -> Ollama tool definition)."""
    tables: dict[str, dict[str, Any]] = {}
    for key in ("schemas", "tools"):
        table = document.get(key, {})
        if not isinstance(table, Mapping) or not all(isinstance(v, Mapping) for v in table.values()):
            problems.append(f"header {key!r} must map names to mappings")
            table = {}
        tables[key] = dict(table)
    for name, tool in tables["tools"].items():
        function = tool.get("function")
        if (
            tool.get("type") != "function"
            or not isinstance(function, Mapping)
            or function.get("name") != name
        ):
            problems.append(f"tool {name!r} must be {{type: function, function: {{name: {name}, ...}}}}")
    return tables


def _resolve(
    raw: Mapping[str, Any], tables: Mapping[str, Mapping[str, Any]], problems: list[str]
) -> tuple[Mapping[str, Any] | None, tuple[Mapping[str, Any], ...]]:
    """An item's schema (a name from `schemas`, or inline) and tools (names from `tools`)."""
    schema = raw.get("schema")
    if isinstance(schema, str):
        if schema not in tables["schemas"]:
            problems.append(f"unknown schema {schema!r} (the file's schemas: {', '.join(tables['schemas'])})")
        schema = tables["schemas"].get(schema)
    elif schema is not None and not isinstance(schema, Mapping):
        problems.append("'schema' must be a schema name or a JSON schema mapping")
        schema = None
    names = raw.get("tools", [])
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        problems.append("'tools' must be a list of tool names")
        names = []
    unknown = [name for name in names if name not in tables["tools"]]
    if unknown:
        problems.append(
            f"unknown tool(s) {', '.join(unknown)} (the file's tools: {', '.join(tables['tools'])})"
        )
    tools = tuple(tables["tools"][name] for name in names if name in tables["tools"])
    return schema, tools


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _string_list(value: Any) -> tuple[str, ...] | None:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(entry, str) and entry for entry in value):
        return tuple(value)
    return None


def _parse_rubric(raw: Any, problems: list[str]) -> Rubric | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or set(raw) - {"required", "forbidden"}:
        problems.append("rubric must be a mapping with 'required' (and optional 'forbidden')")
        return None
    required_raw = raw.get("required")
    groups = [_string_list(group) for group in required_raw] if isinstance(required_raw, list) else [None]
    forbidden = _string_list(raw.get("forbidden", []))
    if not groups or any(group is None for group in groups):
        problems.append("rubric.required must be a list of groups, each a regex or a list of regexes")
        return None
    if forbidden is None:
        problems.append("rubric.forbidden must be a list of regexes")
        return None
    return Rubric(tuple(group for group in groups if group is not None), forbidden)


def _parse_item(raw: Any, tables: Mapping[str, Mapping[str, Any]]) -> tuple[Item | None, list[str]]:
    """The item and the problems found in it (item is None when it cannot be built)."""
    if not isinstance(raw, Mapping):
        return None, ["must be a mapping"]
    problems = [f"unknown key {key!r}" for key in sorted(set(raw) - _ITEM_KEYS)]
    item_id, prompt, grader = raw.get("id"), raw.get("prompt"), raw.get("grader")
    if not isinstance(item_id, str) or not _ID_RE.match(item_id):
        problems.append("'id' must be lower-case letters, digits and hyphens")
    if not isinstance(prompt, str) or not prompt.strip():
        problems.append("'prompt' must be a non-empty string")
    if grader not in grader_names():
        problems.append(f"unknown grader {grader!r} (known: {', '.join(grader_names())})")
    answer = raw.get("answer")
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        answer = str(answer)
    if not isinstance(answer, str) or not answer.strip():
        problems.append("'answer' (the reference) must be a non-empty string or number")
    tags = raw.get("tags")
    if not isinstance(tags, Mapping) or not isinstance(tags.get("topic"), str):
        problems.append("'tags' must be a mapping with 'topic' and 'difficulty'")
        tags = {}
    elif tags.get("difficulty") not in DIFFICULTIES:
        problems.append(f"tags.difficulty must be one of {', '.join(DIFFICULTIES)}")
    tolerances = {}
    for key in ("tolerance", "rel_tolerance"):
        if key in raw and not (_is_number(raw[key]) and raw[key] >= 0):
            problems.append(f"{key!r} must be a number >= 0")
        tolerances[key] = float(raw[key]) if _is_number(raw.get(key)) else None
    units, accept = _string_list(raw.get("units", [])), _string_list(raw.get("accept", []))
    if units is None or accept is None:
        problems.append("'units' and 'accept' must be lists of strings")
    check = raw.get("check")
    if check is not None and not isinstance(check, str):
        problems.append("'check' must be a string (a Python expression)")
    rubric = _parse_rubric(raw.get("rubric"), problems)
    schema, tools = _resolve(raw, tables, problems)
    if problems:
        return None, problems
    assert isinstance(item_id, str) and isinstance(prompt, str) and isinstance(grader, str)  # checked above
    item = Item(
        id=item_id,
        prompt=prompt.strip(),
        grader=grader,
        answer=str(answer).strip(),
        topic=str(tags["topic"]),
        difficulty=str(tags["difficulty"]),
        rel_tolerance=tolerances["rel_tolerance"],
        tolerance=tolerances["tolerance"],
        units=units or (),
        accept=accept or (),
        rubric=rubric,
        check=check,
        schema=schema,
        tools=tools,
    )
    return item, get_grader(grader).validate(item)
