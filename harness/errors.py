"""One error hierarchy for the whole harness.

Every error a user can cause is a `HarnessError`: it carries a message that names the problem and a
hint that names the fix. The CLI maps them to exit codes and prints them without a traceback; the pytest
plugin turns them into clean failures.
"""

from __future__ import annotations


class HarnessError(Exception):
    """Base class: a problem the user can act on.

    `exit_code` is what the CLI exits with (2 = unusable input, by convention).
    """

    exit_code = 2

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


class SpecError(HarnessError):
    """A model spec or profile is invalid (bad dims, unknown tensor type, unknown profile...)."""


class BuildError(HarnessError):
    """Writing a GGUF file failed (no space, unwritable folder, an oracle margin that does not survive...)."""


class DiskFullError(BuildError):
    """Not enough free space to write a file: carries the bytes needed and the bytes free."""

    def __init__(self, path: str, needed: int, free: int) -> None:
        super().__init__(
            f"not enough disk space to write {path}: needs {needed:,} bytes, {free:,} bytes free",
            "free some space on that filesystem or choose another output folder",
        )
        self.needed = needed
        self.free = free


class GGUFReadError(HarnessError):
    """A GGUF file cannot be read at all (missing, not a file, permission)."""


class ModelfileError(HarnessError):
    """A Modelfile template failed to render or a Modelfile failed to parse."""


class ServerError(HarnessError):
    """The Ollama server (or the embedded engine) is unreachable, hung, died, or answered with an error."""


class RunRecordError(HarnessError):
    """A run folder is missing, incomplete, corrupt or of another schema version."""


class SuiteDataError(HarnessError):
    """A suite data file (prompts, references, grading rules) is missing, malformed or inconsistent."""
