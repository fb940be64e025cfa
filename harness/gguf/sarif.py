"""`harness gguf check --format sarif`: the checker's reports as one SARIF 2.1.0 log for code scanning in CI.

One run, tool `harness gguf check` with one rule per finding code (`check.CODES`); one result per finding,
located in its file (with the byte offset where the finding has one) and, for a key or tensor, a logical
location naming it. A file that could not be read at all is a `file-unreadable` result. Levels: error,
warning, note (for info). Spec: https://docs.oasis-open.org/sarif/sarif/v2.1.0/sarif-v2.1.0.html
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

from harness import __version__
from harness.gguf.findings import CODES, CheckReport

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
UNREADABLE = "file-unreadable"
_LEVELS = {"error": "error", "warning": "warning", "info": "note"}


def sarif_log(reports: list[CheckReport], unreadable: list[tuple[str, str, str]]) -> dict[str, Any]:
    """The SARIF log for `reports` and `unreadable` files ((path, message, hint) each)."""
    rules = [
        {
            "id": code,
            "shortDescription": {"text": info.description},
            "defaultConfiguration": {"level": _LEVELS[info.severity]},
        }
        for code, info in CODES.items()
    ]
    rules.append(
        {
            "id": UNREADABLE,
            "shortDescription": {"text": "the file cannot be opened or read"},
            "defaultConfiguration": {"level": "error"},
        }
    )
    index = {rule["id"]: position for position, rule in enumerate(rules)}
    results: list[dict[str, Any]] = []
    for report in reports:
        uri = _uri(report.path)
        for finding in report.findings:
            location: dict[str, Any] = {"physicalLocation": {"artifactLocation": {"uri": uri}}}
            if finding.offset is not None:
                location["physicalLocation"]["region"] = {"byteOffset": finding.offset}
            where = finding.key or finding.tensor
            if where:
                kind = "member" if finding.key else "variable"
                location["logicalLocations"] = [{"name": where, "kind": kind}]
            results.append(
                {
                    "ruleId": finding.code,
                    "ruleIndex": index[finding.code],
                    "level": _LEVELS[finding.severity],
                    "message": {"text": f"{finding.message}. Hint: {finding.hint}"},
                    "locations": [location],
                }
            )
    for path, message, hint in unreadable:
        results.append(
            {
                "ruleId": UNREADABLE,
                "ruleIndex": index[UNREADABLE],
                "level": "error",
                "message": {"text": f"{message}. Hint: {hint}"},
                "locations": [{"physicalLocation": {"artifactLocation": {"uri": _uri(PurePath(path))}}}],
            }
        )
    return {
        "$schema": SARIF_SCHEMA,
        "version": SARIF_VERSION,
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "harness gguf check",
                        "version": __version__,
                        "rules": rules,
                    }
                },
                "results": results,
            }
        ],
    }


def _uri(path: PurePath) -> str:
    """A relative path as a relative URI reference; an absolute one as a file: URI."""
    return path.as_uri() if path.is_absolute() else path.as_posix()
