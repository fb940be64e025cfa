"""Modelfiles parsed with Ollama's grammar and turned into `/api/create` fields.

Parsing follows Ollama's `parser/parser.go` character by character, with its error texts: commands FROM,
PARAMETER, TEMPLATE, SYSTEM, ADAPTER, LICENSE, MESSAGE, REQUIRES (and DRAFT, RENDERER, PARSER), any case;
`#` comments; bare, `"..."` and `\"\"\"...\"\"\"` values; `(line N): command must be one of ...`,
`(line N): message role must be one of ...`, `unexpected EOF`, `no FROM line`. PARAMETER values are typed
as `api.FormatParams` types them (`unknown parameter 'x'`, `invalid int value [x]`...; the option table is
`harness.modelfile.options`), repeated `stop` values accumulate, deprecated parameters are dropped with a
warning.

`Modelfile.to_create_fields` gives the structured `/api/create` body of Ollama >= 0.5.5 (FROM a local file
-> `files` {basename: digest}, FROM a name -> `from`); `Modelfile.to_legacy_text` gives the Modelfile string
that Ollama <= 0.5.4 takes, with local files replaced by `@sha256:...` blob references.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import ModelfileError
from harness.modelfile.options import DEPRECATED_OPTIONS, OPTION_KINDS


def quote(value: Any) -> str:
    """A value written as a Modelfile argument: bare when that round-trips, else quoted."""
    text = ("true" if value else "false") if isinstance(value, bool) else str(value)
    if '"""' in text:
        raise ModelfileError(
            f"cannot write a Modelfile value that contains three double quotes: {text[:60]!r}",
            'Ollama\'s Modelfile grammar has no escape for """',
        )
    needs_quotes = not text or "\n" in text or "\r" in text or text != text.strip() or text.startswith('"')
    if not needs_quotes:
        return text
    if '"' in text or "\n" in text or "\r" in text:
        return f'"""{text}"""'
    return f'"{text}"'


# ---------------------------------------------------------------------------------------------- parsing

_COMMANDS = ("from", "license", "template", "system", "adapter", "draft", "renderer", "parser", "parameter")
_INVALID_COMMAND = (
    'command must be one of "from", "license", "template", "system", "adapter", "draft", "renderer", '
    '"parser", "parameter", "message", or "requires"'
)
_INVALID_ROLE = 'message role must be one of "system", "user", or "assistant"'
_VALID_COMMANDS = {*_COMMANDS, "message", "requires"}

_NIL, _NAME, _VALUE, _PARAMETER, _MESSAGE, _COMMENT = range(6)


class _UnexpectedEOF(Exception):
    pass


class _ParseFailure(Exception):
    pass


@dataclass(frozen=True)
class Command:
    """One Modelfile command as Ollama stores it: name ("model" for FROM, the parameter name for
    PARAMETER) and args ("role: content" for MESSAGE)."""

    name: str
    args: str

    def text(self) -> str:
        """The command as a Modelfile line (Ollama's Command.String, with round-trip-safe quoting)."""
        if self.name == "model":
            return f"FROM {self.args}"
        if self.name in (
            "license",
            "template",
            "system",
            "adapter",
            "renderer",
            "parser",
            "requires",
            "draft",
        ):
            return f"{self.name.upper()} {quote(self.args)}"
        if self.name == "message":
            role, _, content = self.args.partition(": ")
            return f"MESSAGE {role} {quote(content)}"
        return f"PARAMETER {self.name} {quote(self.args)}"


def _is_space(char: str) -> bool:
    return char in (" ", "\t")


def _is_newline(char: str) -> bool:
    return char in ("\r", "\n")


def _is_alpha(char: str) -> bool:
    return ("a" <= char <= "z") or ("A" <= char <= "Z")


def _next_state(char: str, state: int) -> tuple[int, str]:
    """Ollama's parseRuneForState: (next state, the character to keep or "")."""
    if state == _NIL:
        if char == "#":
            return _COMMENT, ""
        if _is_space(char) or _is_newline(char):
            return _NIL, ""
        return _NAME, char
    if state == _NAME:
        if _is_alpha(char):
            return _NAME, char
        if _is_space(char):
            return _VALUE, ""
        raise _ParseFailure(_INVALID_COMMAND)
    if state == _VALUE:
        if _is_newline(char) or _is_space(char):
            return _NIL, char
        return _VALUE, char
    if state == _PARAMETER:
        if _is_alpha(char) or (char.isdigit() and char.isascii()) or char == "_":
            return _PARAMETER, char
        if _is_space(char):
            return _VALUE, ""
        raise _UnexpectedEOF()
    if state == _MESSAGE:
        if _is_alpha(char):
            return _MESSAGE, char
        if _is_space(char):
            return _VALUE, ""
        raise _UnexpectedEOF()
    if _is_newline(char):  # comment
        return _NIL, ""
    return _COMMENT, ""


def _unquote(text: str) -> str | None:
    if text.startswith('"""'):
        return text[3:-3] if len(text) >= 6 and text.endswith('"""') else None
    if text.startswith('"'):
        return text[1:-1] if len(text) >= 2 and text.endswith('"') else None
    return text


_GO_SPACE = " \t\n\r\v\f\u0085\u00a0\u1680\u2028\u2029\u202f\u205f\u3000" + "".join(
    chr(code) for code in range(0x2000, 0x200B)
)


def _go_trim_space(text: str) -> str:
    """Go's strings.TrimSpace (Unicode White_Space)."""
    return text.strip(_GO_SPACE)


def _parse_commands(text: str) -> list[Command]:
    """Ollama's ParseFile state machine; raises ModelfileError with Ollama's error text."""
    if text.startswith("\ufeff"):
        text = text[1:]
    commands: list[Command] = []
    state, line, buffer, role = _NIL, 1, "", ""
    name = ""
    for char in text:
        if _is_newline(char):
            line += 1
        try:
            following, keep = _next_state(char, state)
        except _UnexpectedEOF:
            raise ModelfileError(f"unexpected EOF: {buffer}", _EOF_HINT) from None
        except _ParseFailure as failure:
            raise ModelfileError(f"(line {line}): {failure}", _COMMAND_HINT) from None
        if following != state:
            if state == _NAME:
                if buffer.lower() not in _VALID_COMMANDS:
                    raise ModelfileError(f"(line {line}): {_INVALID_COMMAND}", _COMMAND_HINT)
                lowered = buffer.lower()
                if lowered == "from":
                    name = "model"
                elif lowered == "parameter":
                    following = _PARAMETER
                elif lowered == "message":
                    following = _MESSAGE
                    name = "message"
                else:
                    name = lowered
            elif state == _PARAMETER:
                name = buffer
            elif state == _MESSAGE:
                if buffer not in ("system", "user", "assistant"):
                    raise ModelfileError(
                        f"(line {line}): {_INVALID_ROLE}", "use MESSAGE system|user|assistant TEXT"
                    )
                role = buffer
            elif state == _VALUE:
                value = _unquote(_go_trim_space(buffer))
                if value is None or _is_space(char):
                    buffer += char
                    continue
                if role:
                    value, role = f"{role}: {value}", ""
                commands.append(Command(name, value))
            buffer = ""
            state = following
        if keep and keep.isprintable():
            buffer += keep
    if state == _VALUE:
        value = _unquote(_go_trim_space(buffer))
        if value is None:
            raise ModelfileError("unexpected EOF", _EOF_HINT)
        if role:
            value = f"{role}: {value}"
        commands.append(Command(name, value))
    elif state not in (_NIL, _COMMENT):
        raise ModelfileError("unexpected EOF", _EOF_HINT)
    if not any(command.name == "model" for command in commands):
        raise ModelfileError("no FROM line", "a Modelfile needs FROM <model name or path to a GGUF file>")
    return commands


_EOF_HINT = (
    'a quoted value is not closed, or a command has no value (close """ / " and give every command a value)'
)
_COMMAND_HINT = (
    "each line is COMMAND VALUE; commands: FROM, PARAMETER, TEMPLATE, SYSTEM, ADAPTER, LICENSE, MESSAGE"
)

# ---------------------------------------------------------------------------------------------- parameters

_GO_BOOLS = {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True}
_GO_BOOLS.update({"0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False})
_GO_FLOAT = re.compile(r"[+-]?((\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?|inf(inity)?|nan)", re.IGNORECASE)


def _typed_parameter(name: str, value: str) -> Any:
    """One PARAMETER value typed as Ollama's api.FormatParams types it (same error texts)."""
    kind = OPTION_KINDS.get(name)
    if kind is None:
        raise ModelfileError(f"unknown parameter '{name}'", f"known parameters: {', '.join(OPTION_KINDS)}")
    hint = f"PARAMETER {name} takes {'an' if kind == 'int' else 'a'} {kind} value"
    if kind == "int":
        if not re.fullmatch(r"[+-]?\d+", value) or not -(2**63) <= int(value) < 2**63:
            raise ModelfileError(f"invalid int value [{value}]", hint)
        return int(value)
    if kind == "float":
        if not _GO_FLOAT.fullmatch(value):
            raise ModelfileError(f"invalid float value [{value}]", hint)
        return float(value)
    if kind == "bool":
        if value not in _GO_BOOLS:
            raise ModelfileError(f"invalid bool value [{value}]", hint)
        return _GO_BOOLS[value]
    return [value]


def format_parameters(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """PARAMETER (name, value) pairs -> typed parameters: lists accumulate, others keep the last value,
    deprecated names are dropped with a warning (as Ollama's CLI does)."""
    parameters: dict[str, Any] = {}
    for name, value in pairs:
        if name in DEPRECATED_OPTIONS:
            warnings.warn(f"parameter {name} is deprecated", stacklevel=2)
            continue
        typed = _typed_parameter(name, value)
        if isinstance(typed, list) and isinstance(parameters.get(name), list):
            parameters[name] = [*parameters[name], *typed]
        else:
            parameters[name] = typed
    return parameters


_SEMVER = re.compile(
    r"v(0|[1-9]\d*)(\.(0|[1-9]\d*)(\.(0|[1-9]\d*)"
    r"(-(0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)(\.(0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*))*)?"
    r"(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?)?)?"
)

# ---------------------------------------------------------------------------------------------- Modelfile


def _expand(path: str, relative_dir: Path) -> Path:
    candidate = Path(path).expanduser()
    if not candidate.is_absolute():
        candidate = relative_dir / candidate
    return Path(os.path.abspath(candidate))


def _looks_like_path(value: str) -> bool:
    return value.startswith(("/", "./", "../", "~", "\\")) or value.lower().endswith((".gguf", ".bin"))


@dataclass(frozen=True)
class Modelfile:
    """A parsed Modelfile: its commands in order, and the fields Ollama derives from them."""

    commands: tuple[Command, ...]
    parameters: dict[str, Any] = field(default_factory=dict)

    def _last(self, name: str) -> str | None:
        values = [command.args for command in self.commands if command.name == name]
        return values[-1] if values else None

    @property
    def from_(self) -> str:
        """The FROM value (the last FROM, as Ollama keeps)."""
        value = self._last("model")
        assert value is not None  # parse_modelfile guarantees a FROM
        return value

    @property
    def template(self) -> str | None:
        return self._last("template")

    @property
    def system(self) -> str | None:
        return self._last("system")

    @property
    def adapter(self) -> str | None:
        return self._last("adapter")

    @property
    def requires(self) -> str | None:
        return self._last("requires")

    @property
    def licenses(self) -> list[str]:
        return [command.args for command in self.commands if command.name == "license"]

    @property
    def messages(self) -> list[dict[str, str]]:
        """MESSAGE commands as API messages."""
        out = []
        for command in self.commands:
            if command.name == "message":
                role, _, content = command.args.partition(": ")
                out.append({"role": role, "content": content})
        return out

    def local_paths(self, relative_dir: str | os.PathLike[str] | None = None) -> dict[str, Path]:
        """FROM and ADAPTER values that name existing local files, as absolute paths (to upload as blobs)."""
        base = Path(relative_dir) if relative_dir is not None else Path.cwd()
        found = {}
        for value in (self.from_, self.adapter):
            if value is not None and _expand(value, base).is_file():
                found[value] = _expand(value, base)
        return found

    def _file_fields(
        self, value: str, digests: Mapping[Path, str], base: Path, what: str
    ) -> dict[str, str] | None:
        path = _expand(value, base)
        if path in digests:
            return {path.name: digests[path]}
        if path.is_dir():
            raise ModelfileError(
                f"{what} {value} is a directory", "the harness creates models from GGUF files; name the file"
            )
        if path.is_file():
            raise ModelfileError(
                f"{what} {value} is a local file but no blob digest was given for it",
                "upload it first (OllamaClient.upload_blob) and pass {path: digest}",
            )
        if what == "ADAPTER" or _looks_like_path(value):
            raise ModelfileError(f"{what} {value}: no such file", f"check the path in the {what} line")
        return None

    def to_create_fields(
        self,
        blob_digest_by_path: Mapping[Any, str] | None = None,
        *,
        relative_dir: str | os.PathLike[str] | None = None,
    ) -> dict[str, Any]:
        """The structured /api/create body (Ollama >= 0.5.5) without `model`: `files` {basename: digest}
        when FROM is a local file (its digest from `blob_digest_by_path`), else `from`; then `adapters`,
        `template`, `system`, `parameters` (typed), `messages`, `license` when present.
        Relative paths are taken from `relative_dir` (default: the current directory)."""
        base = Path(relative_dir) if relative_dir is not None else Path.cwd()
        digests = {
            _expand(os.fspath(key), base): digest for key, digest in (blob_digest_by_path or {}).items()
        }
        unsupported = sorted(
            {c.name.upper() for c in self.commands if c.name in ("draft", "renderer", "parser")}
        )
        if unsupported:
            raise ModelfileError(
                f"{', '.join(unsupported)} is not supported by the harness's create",
                "remove that line from the Modelfile",
            )
        fields: dict[str, Any] = {}
        files = self._file_fields(self.from_, digests, base, "FROM")
        if files is None:
            fields["from"] = self.from_
        else:
            fields["files"] = files
        if self.adapter is not None:
            fields["adapters"] = self._file_fields(self.adapter, digests, base, "ADAPTER")
        for key, value in (("template", self.template), ("system", self.system)):
            if value is not None:
                fields[key] = value
        if self.parameters:
            fields["parameters"] = dict(self.parameters)
        if self.messages:
            fields["messages"] = self.messages
        if self.licenses:
            fields["license"] = self.licenses
        return fields

    def to_legacy_text(
        self,
        blob_digest_by_path: Mapping[Any, str] | None = None,
        *,
        relative_dir: str | os.PathLike[str] | None = None,
    ) -> str:
        """The Modelfile text for the old create form (Ollama <= 0.5.4, field `modelfile`): local FROM and
        ADAPTER files replaced by `@sha256:...` blob references, as Ollama's old CLI sent it."""
        base = Path(relative_dir) if relative_dir is not None else Path.cwd()
        digests = {
            _expand(os.fspath(key), base): digest for key, digest in (blob_digest_by_path or {}).items()
        }
        lines = []
        for command in self.commands:
            if command.name in ("model", "adapter"):
                files = self._file_fields(
                    command.args, digests, base, "FROM" if command.name == "model" else "ADAPTER"
                )
                if files is not None:
                    command = Command(command.name, "@" + next(iter(files.values())))
            lines.append(command.text())
        return "\n".join(lines) + "\n"

    def text(self) -> str:
        """The Modelfile written back out, one command per line."""
        return "\n".join(command.text() for command in self.commands) + "\n"


def parse_modelfile(text: str) -> Modelfile:
    """Parse Modelfile text with Ollama's grammar; raises ModelfileError with Ollama's error texts.

    PARAMETER values are typed here (Ollama's CLI does it when building the create request), so an unknown
    parameter or a bad value is reported at once; REQUIRES must be a semantic version.
    """
    commands = _parse_commands(text)
    pairs = [(c.name, c.args) for c in commands if c.name not in _VALID_COMMANDS and c.name != "model"]
    parameters = format_parameters(pairs)
    for command in commands:
        if command.name == "requires":
            version = command.args if command.args.startswith("v") else "v" + command.args
            if not _SEMVER.fullmatch(version):
                raise ModelfileError("requires must be a valid semver (e.g. 0.14.0)", "write REQUIRES 0.14.0")
    return Modelfile(tuple(commands), parameters)
