"""Modelfiles rendered from jinja2 templates: `modelfiles/<name>.j2` (or any path).

Rendering uses a jinja2 `SandboxedEnvironment` with `StrictUndefined`, so a missing variable or a syntax
error is a `ModelfileError` naming the file and the line. Jinja2 keeps its usual delimiters; the Go template
text of a TEMPLATE (which also uses `{{ }}`) is written inside `{% raw %}...{% endraw %}`. Filters: `quote`
(a value as a Modelfile argument, quoted when needed), `as_list` (a scalar as a one-item list, for repeated
PARAMETERs such as `stop`).
"""

from __future__ import annotations

import os
import traceback
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from harness.datafiles import data_dir
from harness.errors import ModelfileError
from harness.modelfile.parse import quote

MODELFILES_DIR = data_dir("modelfiles")

# ---------------------------------------------------------------------------------------------- rendering


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def list_modelfile_templates(directory: Path = MODELFILES_DIR) -> list[str]:
    """Names of the shipped Modelfile templates (`modelfiles/<name>.j2`)."""
    return sorted(path.stem for path in directory.glob("*.j2") if not path.name.startswith("_"))


def _template_path(template_name_or_path: str | os.PathLike[str]) -> Path:
    text = os.fspath(template_name_or_path)
    candidate = Path(text).expanduser()
    if candidate.is_file():
        return candidate.resolve()
    if "/" in text or os.sep in text or text.endswith(".j2"):
        raise ModelfileError(
            f"Modelfile template {text} does not exist",
            f"give a path to a .j2 file or one of: {', '.join(list_modelfile_templates()) or '(none)'}",
        )
    shipped = MODELFILES_DIR / f"{text}.j2"
    if shipped.is_file():
        return shipped
    raise ModelfileError(
        f"unknown Modelfile template {text!r}",
        f"use one of: {', '.join(list_modelfile_templates()) or '(none)'}, or a path to a .j2 file",
    )


def _template_line(error: BaseException, filename: str) -> int | None:
    """The template line an exception was raised at (jinja2 rewrites tracebacks to template lines)."""
    line = None
    for frame in traceback.extract_tb(error.__traceback__):
        if frame.filename == filename:
            line = frame.lineno
    return line


def render_modelfile(template_name_or_path: str | os.PathLike[str], **variables: Any) -> str:
    """Render a Modelfile template (a name in `modelfiles/` or a path) with `variables`.

    Raises ModelfileError naming the file and line for a syntax error, a missing variable, or an
    operation the sandbox forbids.
    """
    path = _template_path(template_name_or_path)
    environment = SandboxedEnvironment(
        loader=jinja2.FileSystemLoader(str(path.parent)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    environment.filters["quote"] = quote
    environment.filters["as_list"] = _as_list
    try:
        template = environment.get_template(path.name)
    except jinja2.TemplateSyntaxError as error:
        raise ModelfileError(
            f"{path}:{error.lineno}: template syntax error: {error.message}",
            "fix the jinja2 syntax at that line (Go template text belongs inside {% raw %}...{% endraw %})",
        ) from None
    filename = template.filename or str(path)
    try:
        return template.render(**variables)
    except jinja2.UndefinedError as error:
        line = _template_line(error, filename)
        raise ModelfileError(
            f"{path}:{line}: {error.message}",
            "pass that variable (harness modelfile render ... --var NAME=VALUE; --gguf PATH for gguf_path)",
        ) from None
    except (jinja2.TemplateError, ModelfileError) as error:
        line = _template_line(error, filename)
        message = error.message if isinstance(error, ModelfileError) else str(error)
        raise ModelfileError(f"{path}:{line}: {message}", "fix the template at that line") from None
