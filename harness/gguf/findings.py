"""What the GGUF checker says: the finding codes with their severities and meanings (`CODES`), the errors
llama.cpp still loads and why they stay errors (`LOADS_BUT_WRONG`), one `Finding`, and the `CheckReport` of a
file with its text, JSON and summary forms. `check.py` produces them; SARIF output is `sarif.py`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Severity = Literal["error", "warning", "info"]


@dataclass(frozen=True)
class CodeInfo:
    """A finding code: its default severity, its rank (lower = closer to the root cause), what it means."""

    severity: Severity
    rank: int
    description: str


CODES: dict[str, CodeInfo] = {
    # 0: the file's structure; nothing after such a problem can be trusted
    "empty-file": CodeInfo("error", 0, "the file has 0 bytes"),
    "bad-magic": CodeInfo("error", 0, "the file does not start with the bytes 'GGUF'"),
    "bad-version": CodeInfo("error", 0, "GGUF version is not 2 or 3 (or the file is big-endian)"),
    "truncated-header": CodeInfo(
        "error", 0, "the file ends inside the fixed header (magic, version, counts)"
    ),
    "bad-counts": CodeInfo("error", 0, "the header's tensor or key/value count cannot fit in the file"),
    "truncated-kv": CodeInfo("error", 0, "the file ends inside the key/value section"),
    "bad-kv": CodeInfo("error", 0, "a key/value pair has an invalid value type (or an array of arrays)"),
    "value-too-large": CodeInfo(
        "error", 0, "a value is beyond what any real model holds (the checker stops)"
    ),
    "truncated-tensor-info": CodeInfo("error", 0, "the file ends inside the tensor info section"),
    "bad-tensor-info": CodeInfo(
        "error", 0, "a tensor info has a bad name length, dimension count or dimension"
    ),
    "duplicate-key": CodeInfo("error", 0, "a metadata key appears more than once"),
    "invalid-utf8": CodeInfo("error", 0, "a key, string value, token or tensor name is not valid UTF-8"),
    # 1: where the tensor data is
    "data-beyond-eof": CodeInfo(
        "error", 1, "tensor data extends beyond the end of the file (file cut short)"
    ),
    "bad-alignment": CodeInfo(
        "error", 1, "general.alignment is not a power-of-two u32, or tensor offsets are misaligned/not packed"
    ),
    "duplicate-tensor": CodeInfo("error", 1, "two tensors have the same name"),
    "bad-tensor-type": CodeInfo("error", 1, "a tensor's ggml type is unknown or no longer supported"),
    "bad-row-length": CodeInfo(
        "error", 1, "a quantized tensor's row length is not a multiple of its block size"
    ),
    "trailing-bytes": CodeInfo("warning", 1, "the file goes on after the last tensor's data"),
    # 2: which architecture
    "missing-architecture": CodeInfo("error", 2, "general.architecture is missing"),
    "unknown-architecture": CodeInfo(
        "error", 2, "general.architecture names an architecture llama.cpp lacks"
    ),
    "no-arch-rules": CodeInfo(
        "info", 2, "llama.cpp knows the architecture; the checker only has generic rules"
    ),
    "arch-note": CodeInfo(
        "info", 2, "a remark about the architecture (e.g. only Ollama's own engine runs it)"
    ),
    # 3: keys
    "missing-key": CodeInfo("error", 3, "a key the architecture requires is missing"),
    "wrong-type": CodeInfo("error", 3, "a key has another GGUF type than llama.cpp reads (e.g. i32 for u32)"),
    # 4: hyperparameters
    "zero-blocks": CodeInfo("error", 4, "block_count is 0 or above 512 (llama.cpp aborts)"),
    "bad-head-count": CodeInfo("error", 4, "head counts are 0, do not divide the embedding or each other"),
    "bad-rope-dims": CodeInfo(
        "error", 4, "rope.dimension_count differs from the head size (llama: invalid n_rot)"
    ),
    "odd-head-dim": CodeInfo("error", 4, "the RoPE dimension is odd (llama.cpp aborts at the first decode)"),
    "bad-hparam": CodeInfo("error", 4, "a hyperparameter is out of range (zero embedding, bad RoPE base...)"),
    # 5: tokenizer
    "missing-tokenizer": CodeInfo("error", 5, "tokenizer.ggml.model or tokenizer.ggml.tokens is missing"),
    "unknown-tokenizer": CodeInfo("error", 5, "tokenizer.ggml.model names a tokenizer llama.cpp lacks"),
    "tokenizer-length-mismatch": CodeInfo(
        "error", 5, "scores or token_type is shorter (or longer) than tokens"
    ),
    "duplicate-token": CodeInfo("error", 5, "the same token string appears twice (llama.cpp aborts)"),
    "missing-byte-tokens": CodeInfo(
        "error", 5, "a SentencePiece ('llama') vocab lacks byte tokens <0x00>..<0xFF>"
    ),
    "missing-merges": CodeInfo("error", 5, "a BPE ('gpt2') tokenizer has no tokenizer.ggml.merges"),
    "tokenizer-mismatch": CodeInfo(
        "error", 5, "the vocabulary holds tokens the named tokenizer cannot decode (llama.cpp aborts)"
    ),
    "bad-special-token": CodeInfo("error", 5, "a special token id (bos, eos...) is outside the vocabulary"),
    # 6: tensors
    "vocab-size-mismatch": CodeInfo("error", 6, "the embedding/output rows differ from the number of tokens"),
    "missing-tensor": CodeInfo("error", 6, "a tensor the architecture needs is missing"),
    "wrong-shape": CodeInfo("error", 6, "a tensor's shape differs from the one the hyperparameters imply"),
    "unexpected-tensor": CodeInfo(
        "error", 6, "a tensor the architecture does not use (llama.cpp: wrong number)"
    ),
    # 7: tensor values (--deep)
    "non-finite-weights": CodeInfo("error", 7, "a tensor holds NaN or Inf values (--deep)"),
    "deep-skipped": CodeInfo(
        "info", 7, "--deep could not read some tensors' values (type without dequantizer)"
    ),
    # 8: the chat template (tokenizer.chat_template), rendered in a sandbox
    "template-error": CodeInfo(
        "error", 8, "the chat template does not parse or fails to render a standard conversation"
    ),
    "template-unsafe": CodeInfo(
        "error", 8, "the chat template reaches Python/Jinja internals (__class__, __globals__, cycler...)"
    ),
    "template-hidden-unicode": CodeInfo(
        "error", 8, "the chat template holds invisible or text-direction-changing Unicode characters"
    ),
    "template-unknown-token": CodeInfo(
        "warning", 8, "the chat template emits a special token that is not in the vocabulary"
    ),
    "template-mismatch": CodeInfo(
        "warning", 8, "the Modelfile's Go TEMPLATE and the chat template build different prompts"
    ),
}

# Errors llama.cpp does not refuse: the file loads and generates, yet the checker calls it an error, for the
# reason given. Keyed by code, or by "code:key" for one key only. The differential test
# (harness/gguf/differential.py) accepts a false alarm only when every error it raised is listed here.
LOADS_BUT_WRONG: dict[str, str] = {
    "bad-hparam": "a RoPE base that is zero, negative or not finite, or an infinite norm epsilon, loads and "
    "generates, but every position or activation becomes NaN/meaningless: the output is garbage",
    "missing-byte-tokens": "without any <0xXX> byte token, llama.cpp runs text made of vocabulary "
    "pieces only; the first character outside the vocabulary fails the request (_Map_base::at)",
    "bad-special-token": "llama.cpp replaces an out-of-range bos/eos/unk/pad id by its default and only "
    "warns; generation then starts or stops on a token the model was not trained for",
    "invalid-utf8": "GGUF strings are UTF-8 by specification; llama.cpp copies the bytes, but Ollama (Go) "
    "and every JSON consumer replace or reject them, and a token with bad bytes corrupts output text",
    "wrong-type:tokenizer.chat_template": "llama.cpp reads tokenizer.chat_template only when a chat "
    "request needs it: the raw completion works, chat templating (llama.cpp's and Ollama's) finds no "
    "usable template",
    "template-error": "llama-server only parses the chat template at start-up; a template that raises on a "
    "standard conversation, or leaves its messages out, fails or empties every chat request",
    "template-unsafe": "llama.cpp's raw completion never renders the chat template; a template that reaches "
    "interpreter internals is an attack on whatever renders it (transformers, Python servers)",
    "template-hidden-unicode": "invisible and bidirectional characters do not stop loading; they hide what "
    "the template really emits from a human reviewer (Trojan Source)",
}

MAX_FINDINGS_PER_CODE = 12


@dataclass(frozen=True)
class Finding:
    """One problem found: a stable `code`, its severity, a message with expected and actual, a hint."""

    code: str
    severity: Severity
    message: str
    hint: str
    key: str | None = None
    tensor: str | None = None
    offset: int | None = None  # byte offset in the file, where one is known

    def format(self) -> str:
        return f"{self.severity:<7} {self.code}: {self.message}\n        hint: {self.hint}"


@dataclass
class CheckReport:
    """What `check_gguf` found in one file, plus a summary of what the file is."""

    path: Path
    file_size: int
    findings: list[Finding]
    architecture: str | None = None
    version: int | None = None
    tensor_count: int | None = None
    kv_count: int | None = None
    model_name: str | None = None
    n_vocab: int | None = None
    hparams: dict[str, Any] = field(default_factory=dict)
    deep: bool = False

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def ok(self) -> bool:
        """True when no finding is an error (warnings and infos allowed)."""
        return not self.errors

    def codes(self) -> list[str]:
        """Codes of all findings, in report order (root cause first)."""
        return [f.code for f in self.findings]

    def summary_line(self) -> str:
        n_err, n_warn = len(self.errors), len(self.warnings)
        verdict = "OK" if self.ok else "FAIL"
        what = ", ".join(
            part
            for part in (
                f"arch {self.architecture}" if self.architecture else None,
                f"{self.tensor_count} tensors" if self.tensor_count is not None else None,
                f"{self.file_size:,} bytes",
            )
            if part
        )
        first = f"; first: {self.errors[0].code}" if self.errors else ""
        return f"{self.path}: {verdict}: {n_err} error(s), {n_warn} warning(s) ({what}){first}"

    def format_text(self) -> str:
        lines = [finding.format() for finding in self.findings]
        lines.append(self.summary_line())
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "ok": self.ok,
            "file_size": self.file_size,
            "version": self.version,
            "architecture": self.architecture,
            "model_name": self.model_name,
            "tensor_count": self.tensor_count,
            "kv_count": self.kv_count,
            "n_vocab": self.n_vocab,
            "hparams": self.hparams,
            "deep": self.deep,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "findings": [asdict(f) for f in self.findings],
            "summary": self.summary_line(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)


def loads_but_wrong(finding: Finding) -> str | None:
    """Why `finding` is an error although llama.cpp loads and runs such a file, if it is one of those."""
    return LOADS_BUT_WRONG.get(f"{finding.code}:{finding.key}") or LOADS_BUT_WRONG.get(finding.code)


def printable(text: str) -> str:
    """`text` without lone surrogates (undecodable bytes from the file become \\udcXX escapes)."""
    return text.encode("utf-8", errors="backslashreplace").decode("utf-8")


def short_repr(text: object, limit: int = 60) -> str:
    """A value as a finding shows it: its repr, cut at `limit` characters."""
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


class FindingSink:
    """Where the checker's rules put what they find (`findings`, through `add`)."""

    findings: list[Finding]

    def add(
        self,
        code: str,
        message: str,
        hint: str,
        *,
        key: str | None = None,
        tensor: str | None = None,
        severity: Severity | None = None,
        offset: int | None = None,
    ) -> None:
        """Record a finding; texts from the file are made printable, the severity defaults to the code's."""
        self.findings.append(
            Finding(
                code,
                severity or CODES[code].severity,
                printable(message),
                printable(hint),
                None if key is None else printable(key),
                None if tensor is None else printable(tensor),
                offset,
            )
        )
