"""The GGUF preflight checker: say what is wrong with a GGUF file before llama.cpp or Ollama does.

`check_gguf(path, deep=False)` reads any GGUF file's metadata (never its tensor data, unless `deep`) with the
bounded reader in `reader.py`, applies the architecture rules in `archs.py`, and returns a `CheckReport` of
`Finding`s, root causes first (a file cut short before the keys it lost, an unknown architecture before its
keys...). Every finding has a stable code, listed in `CODES` below with its default severity and meaning.

Codes (see `CODES` for the full descriptions):
  file structure:  empty-file, bad-magic, bad-version, truncated-header, bad-counts, truncated-kv, bad-kv,
                   value-too-large, truncated-tensor-info, bad-tensor-info, duplicate-key, invalid-utf8
  data layout:     data-beyond-eof, bad-alignment, duplicate-tensor, bad-tensor-type, bad-row-length,
                   trailing-bytes
  architecture:    missing-architecture, unknown-architecture, no-arch-rules, arch-note
  keys:            missing-key, wrong-type
  hyperparameters: zero-blocks, bad-head-count, bad-rope-dims, odd-head-dim, bad-hparam
  tokenizer:       missing-tokenizer, unknown-tokenizer, tokenizer-length-mismatch, duplicate-token,
                   missing-byte-tokens, missing-merges, tokenizer-mismatch, bad-special-token
  tensors:         vocab-size-mismatch, missing-tensor, wrong-shape, unexpected-tensor
  data (--deep):   non-finite-weights, deep-skipped
  chat template:   template-error, template-unsafe, template-hidden-unicode, template-unknown-token,
                   template-mismatch (with a Modelfile's Go TEMPLATE)

Whether a file the checker passes really loads is tested against llama.cpp itself:
harness/gguf/differential.py judges structured mutants of valid fixtures both ways; errors llama.cpp does
not refuse are listed, with the reason, in `LOADS_BUT_WRONG`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness.gguf import archs
from harness.gguf.archs import ArchRule, HParams, KeyRule, Unknown
from harness.gguf.reader import (
    DEFAULT_LIMITS,
    ArrayValue,
    GGUFHeader,
    ReadLimits,
    TensorInfo,
    open_regular_file,
    read_gguf_header,
)
from harness.gguf.types import F32 as F32_TYPE
from harness.gguf.types import GGML_TYPES

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
_BYTE_TOKEN_TYPE = 6  # llama_token_type LLAMA_TOKEN_TYPE_BYTE


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


@dataclass(frozen=True)
class GoTemplate:
    """The prompt Ollama builds from a Modelfile's TEMPLATE (and SYSTEM) for the chat template audit's
    standard conversation (`chat_template.STANDARD_CONVERSATION`), or why it could not build one."""

    prompt: str | None
    error: str | None = None


def check_gguf(
    path: str | os.PathLike[str],
    *,
    deep: bool = False,
    limits: ReadLimits = DEFAULT_LIMITS,
    go_template: GoTemplate | None = None,
) -> CheckReport:
    """Check the GGUF file at `path`; raises `GGUFReadError` only when it cannot be opened at all.
    With `go_template`, the chat template's prompt is compared with the one Ollama builds from it."""
    header = read_gguf_header(path, limits)
    return _Checker(header, deep, go_template).run()


# ------------------------------------------------------------------------------------------- internals


def _pad(n: int, alignment: int) -> int:
    return (n + alignment - 1) // alignment * alignment


def _printable(text: str) -> str:
    """`text` without lone surrogates (undecodable bytes from the file become \\udcXX escapes)."""
    return text.encode("utf-8", errors="backslashreplace").decode("utf-8")


def _short(text: object, limit: int = 60) -> str:
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


class _SafeFormat(dict[str, object]):
    def __missing__(self, name: str) -> str:
        return "?"


class _Checker:
    def __init__(self, header: GGUFHeader, deep: bool, go_template: GoTemplate | None = None) -> None:
        self.header = header
        self.deep = deep
        self.go_template = go_template
        self.findings: list[Finding] = []
        self.hparams = HParams()
        self.arch: str | None = None
        self.rule: ArchRule | None = None
        self.n_vocab: int | None = None

    # ----------------------------------------------------------------------------------------- helpers
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
        self.findings.append(
            Finding(
                code,
                severity or CODES[code].severity,
                _printable(message),
                _printable(hint),
                None if key is None else _printable(key),
                None if tensor is None else _printable(tensor),
                offset,
            )
        )

    def fmt(self, template: str) -> str:
        values = _SafeFormat(self.hparams.values)
        values["arch"] = self.arch or "?"
        return template.format_map(values)

    # ------------------------------------------------------------------------------------------ driver
    def run(self) -> CheckReport:
        header = self.header
        for problem in header.problems:
            self.add(
                problem.code,
                problem.message,
                problem.hint,
                key=problem.key,
                tensor=problem.tensor,
                offset=problem.offset,
            )
        if header.complete:
            self.check_layout()
        if header.kv_complete:
            self.check_architecture()
            self.check_keys()
            self.check_hparams()
            self.check_tokenizer()
            if header.complete:
                self.check_tensors()
        if self.deep and header.complete:
            self.check_values()
        if header.kv_complete:
            self.check_chat_template()
        return self.report()

    def report(self) -> CheckReport:
        ordered = sorted(enumerate(self.findings), key=lambda item: (CODES[item[1].code].rank, item[0]))
        findings: list[Finding] = []
        per_code: Counter[str] = Counter()
        for _, finding in ordered:
            per_code[finding.code] += 1
            if per_code[finding.code] <= MAX_FINDINGS_PER_CODE:
                findings.append(finding)
        for code, count in per_code.items():
            if count > MAX_FINDINGS_PER_CODE:
                last = max(i for i, f in enumerate(findings) if f.code == code)
                extra = count - MAX_FINDINGS_PER_CODE
                first = findings[last]
                findings.insert(
                    last + 1,
                    Finding(code, first.severity, f"... and {extra} more {code} finding(s)", first.hint),
                )
        header = self.header
        name = header.value("general.name")
        summary = {k: v for k, v in self.hparams.values.items() if isinstance(v, (int, float))}
        return CheckReport(
            path=header.path,
            file_size=header.file_size,
            findings=findings,
            architecture=self.arch,
            version=header.version,
            tensor_count=header.tensor_count,
            kv_count=header.kv_count,
            model_name=name if isinstance(name, str) else None,
            n_vocab=self.n_vocab,
            hparams=summary,
            deep=self.deep,
        )

    # ------------------------------------------------------------------------------------- data layout
    def check_layout(self) -> None:
        header = self.header
        assert header.data_offset is not None
        seen: set[str] = set()
        expected_offset = 0
        offsets_ok = True
        beyond: list[tuple[TensorInfo, int]] = []
        for tensor in header.tensors:
            if tensor.name in seen:
                self.add(
                    "duplicate-tensor",
                    f"tensor '{tensor.name}' appears more than once (llama.cpp: duplicate tensor name)",
                    "rewrite the file with each tensor once",
                    tensor=tensor.name,
                )
            seen.add(tensor.name)
            nbytes = tensor.nbytes
            if nbytes is None:
                self.add(
                    "bad-tensor-type",
                    f"tensor '{tensor.name}' has ggml type {tensor.ggml_type}, which this llama.cpp does "
                    "not know (or no longer supports)",
                    "requantize the model with a current llama.cpp (llama-quantize)",
                    tensor=tensor.name,
                )
                offsets_ok = False
                continue
            block = tensor.block_size or 1
            if tensor.ne and tensor.ne[0] % block:
                self.add(
                    "bad-row-length",
                    f"tensor '{tensor.name}' of type {tensor.type_name} has {tensor.ne[0]} elements per row, "
                    f"not a multiple of its block size {block}",
                    "use a tensor type whose block size divides the row length (e.g. F16 or F32)",
                    tensor=tensor.name,
                )
            if offsets_ok:
                if tensor.offset % header.alignment:
                    self.add(
                        "bad-alignment",
                        f"tensor '{tensor.name}' has data offset {tensor.offset:,}, not a multiple of the "
                        f"alignment {header.alignment}",
                        "rewrite the file with a GGUF writer (each tensor's data padded to the alignment)",
                        tensor=tensor.name,
                    )
                    offsets_ok = False
                elif tensor.offset != expected_offset:
                    self.add(
                        "bad-alignment",
                        f"tensor '{tensor.name}' has offset {tensor.offset:,}, expected {expected_offset:,} "
                        "(llama.cpp requires tensors packed in file order, each padded to the alignment)",
                        "rewrite the file with a GGUF writer; do not reorder tensor infos by hand",
                        tensor=tensor.name,
                    )
                    offsets_ok = False
            expected_offset += _pad(nbytes, header.alignment)
            end = header.data_offset + tensor.offset + nbytes
            if end > header.file_size:
                beyond.append((tensor, end))
        if offsets_ok and not beyond:
            self._check_trailing_bytes(header.data_offset + expected_offset)
        if beyond:
            first, first_end = beyond[0]
            needed = max(end for _, end in beyond)
            start = header.data_offset + first.offset
            self.add(
                "data-beyond-eof",
                f"tensor '{first.name}' data is not within the file bounds: it spans bytes "
                f"{start:,}-{first_end:,} but the file has {header.file_size:,} bytes; the tensors need "
                f"at least {needed:,} bytes "
                f"({needed - header.file_size:,} missing, {len(beyond)} tensor(s) affected)",
                "the file is cut short (interrupted download or copy, full disk): fetch or build it again",
                tensor=first.name,
            )

    def _check_trailing_bytes(self, data_end: int) -> None:
        """`data_end`: where the last tensor's data ends, padded to the alignment."""
        header = self.header
        extra = header.file_size - data_end
        if extra > 0:
            self.add(
                "trailing-bytes",
                f"the file has {extra:,} bytes after the end of the last tensor's data (offset "
                f"{data_end:,}); llama.cpp ignores them",
                "the file was appended to or concatenated with another one: rebuild it, or cut it at "
                f"{data_end:,} bytes if the extra bytes are known garbage",
                offset=data_end,
            )

    # ------------------------------------------------------------------------------------ architecture
    def check_architecture(self) -> None:
        entry = self.header.kvs.get("general.architecture")
        if entry is None:
            self.add(
                "missing-architecture",
                "general.architecture is missing (llama.cpp: unknown model architecture: '')",
                "add general.architecture (e.g. 'llama'); GGUFWriter(path, arch) writes it",
                key="general.architecture",
            )
            return
        if not isinstance(entry.value, str):
            return  # reported as wrong-type by check_keys
        arch = entry.value
        if arch not in archs.KNOWN_ARCHITECTURES:
            prefixed = sorted(k for k in self.header.kvs if k.startswith(f"{arch}."))
            where = f"; the file's {len(prefixed)} '{arch}.*' keys are unread" if prefixed else ""
            self.add(
                "unknown-architecture",
                f"general.architecture is {arch!r}, which llama.cpp does not know "
                f"(llama.cpp: unknown model architecture: '{arch}'){where}",
                "set general.architecture to the architecture the weights follow (a Llama-style model: "
                f"'llama') and rename its keys to that prefix: {arch}.context_length -> llama.context_length",
                key="general.architecture",
            )
            return
        self.arch = arch
        self.rule = archs.rules_for(arch)
        if arch not in archs.ARCH_RULES:
            self.add(
                "no-arch-rules",
                f"architecture '{arch}' is known to llama.cpp; the checker has no detailed rules for it and "
                "checked its structure, common keys and tokenizer only",
                "a trial load in llama.cpp (harness.gguf.llamacpp.trial_load) checks the rest",
                key="general.architecture",
            )
        if self.rule.note:
            self.add(
                "arch-note",
                self.rule.note,
                "run it through Ollama, not plain llama.cpp",
                key="general.architecture",
            )

    # -------------------------------------------------------------------------------------------- keys
    def key_rules(self) -> list[KeyRule]:
        rules: dict[str, KeyRule] = {rule.key: rule for rule in archs.GENERAL_KEYS}
        if self.rule is not None and self.arch is not None:
            arch_keys = (*archs.COMMON_KEYS, *self.rule.keys) if self.rule.llm_keys else self.rule.keys
            for rule in arch_keys:
                key = rule.key.format(arch=self.arch)
                rules[key] = dataclasses.replace(rule, key=key)
        return list(rules.values())

    def check_keys(self) -> None:
        kvs = self.header.kvs
        wrong_typed: set[str] = set()
        for rule in self.key_rules():
            entry = kvs.get(rule.key)
            if entry is None:
                if rule.required and rule.key != "general.architecture":
                    if "not found" in rule.why:
                        consequence = f" (llama.cpp: key not found in model: {rule.key})"
                    else:
                        consequence = f" ({rule.why})" if rule.why else ""
                    self.add(
                        "missing-key",
                        f"required key {rule.key} is missing{consequence}",
                        f"add {rule.key} as {rule.types[0]} (the converter or GGUFWriter's typed adders do)",
                        key=rule.key,
                    )
                continue
            if entry.type_name not in rule.types:
                wrong_typed.add(rule.key)
                expected = " or ".join(rule.types)
                self.add(
                    "wrong-type",
                    f"key {rule.key} has type {entry.type_name}, expected {expected} "
                    f"(llama.cpp: key {rule.key} has wrong type {entry.type_name} but expected type "
                    f"{rule.types[0]})",
                    f"store {rule.key} as {rule.types[0]} (gguf's typed adders: add_uint32, add_float32...)",
                    key=rule.key,
                    severity=None if rule.read_by_llamacpp else "warning",
                )
        self._collect_hparams(wrong_typed)

    def _collect_hparams(self, wrong_typed: set[str]) -> None:
        hp = self.hparams
        kvs = self.header.kvs
        for rule in self.key_rules():
            if rule.hparam is None:
                continue
            entry = kvs.get(rule.key)
            if entry is not None:
                hp.given.add(rule.hparam)
                if rule.key in wrong_typed:
                    continue
                value = entry.value
                if isinstance(value, ArrayValue):
                    items = value.items
                    if items is not None and len(items) and all(x == items[0] for x in items):
                        hp.values[rule.hparam] = int(items[0])
                elif isinstance(value, (int, float)):
                    hp.values[rule.hparam] = value
            elif rule.default is not None:
                with contextlib.suppress(Unknown):
                    hp.values[rule.hparam] = hp.eval(rule.default)
        tokens = kvs.get("tokenizer.ggml.tokens")
        if tokens is not None and isinstance(tokens.value, ArrayValue):
            self.n_vocab = tokens.value.length
        elif isinstance(hp.values.get("vocab_size_key"), int):
            self.n_vocab = int(hp.values["vocab_size_key"])  # type: ignore[call-overload]
        if self.n_vocab is not None:
            hp.values["n_vocab"] = self.n_vocab
        if self.rule is not None:
            for name, expression in self.rule.derived:
                with contextlib.suppress(Unknown):
                    hp.values[name] = hp.eval(expression)

    # ------------------------------------------------------------------------------- hyperparameters
    def check_hparams(self) -> None:
        if self.rule is None:
            return
        for check in self.rule.checks:
            try:
                holds = self.hparams.eval(check.condition)
            except Unknown:
                continue
            if not holds:
                self.add(
                    check.code,
                    self.fmt(check.message),
                    self.fmt(check.hint),
                    severity=check.severity,  # type: ignore[arg-type]
                )
        for key in ("rope_freq_base", "norm_rms_eps", "norm_eps"):
            value = self.hparams.values.get(key)
            if isinstance(value, float) and not math.isfinite(value):
                self.add("bad-hparam", f"{key} is {value}, not a finite number", "store a finite value")

    # ------------------------------------------------------------------------------------- tokenizer
    def check_tokenizer(self) -> None:
        kvs = self.header.kvs
        has_tokenizer_keys = any(k.startswith("tokenizer.ggml.") for k in kvs)
        if (self.rule is not None and not self.rule.needs_tokenizer) and not has_tokenizer_keys:
            return
        model_entry = kvs.get("tokenizer.ggml.model")
        tokens_entry = kvs.get("tokenizer.ggml.tokens")
        if model_entry is None:
            self.add(
                "missing-tokenizer",
                "tokenizer.ggml.model is missing: the file has no tokenizer "
                "(llama.cpp: key not found in model: tokenizer.ggml.model)",
                "convert the model together with its tokenizer (convert_hf_to_gguf.py reads "
                "tokenizer.model or tokenizer.json); a SentencePiece vocab needs model 'llama', "
                "tokens, scores, "
                "token_type",
                key="tokenizer.ggml.model",
            )
            return
        model = model_entry.value
        if not isinstance(model, str):
            return
        tokenizer = archs.TOKENIZER_RULES.get(model)
        if tokenizer is None:
            self.add(
                "unknown-tokenizer",
                f"tokenizer.ggml.model is {model!r}, which llama.cpp does not know "
                f"(llama.cpp: unknown tokenizer: '{model}')",
                f"use one of {', '.join(sorted(archs.TOKENIZER_RULES))} "
                "('llama' for SentencePiece, 'gpt2' for BPE)",
                key="tokenizer.ggml.model",
            )
            return
        if not tokenizer.has_vocab:
            if self.rule is not None and self.rule.needs_tokenizer:
                self.add(
                    "missing-tokenizer",
                    f"tokenizer.ggml.model is {model!r}: the model has no vocabulary, so llama.cpp cannot "
                    "tokenize a prompt (it aborts: Tokenizer not initialized)",
                    "convert the model together with its tokenizer, or name the tokenizer its vocab needs "
                    "('llama' for SentencePiece, 'gpt2' for BPE)",
                    key="tokenizer.ggml.model",
                )
            return
        if tokens_entry is None or not isinstance(tokens_entry.value, ArrayValue):
            if tokens_entry is None:
                self.add(
                    "missing-tokenizer",
                    "tokenizer.ggml.tokens is missing (llama.cpp: cannot find tokenizer vocab in model file)",
                    "write the token list as tokenizer.ggml.tokens (array of strings)",
                    key="tokenizer.ggml.tokens",
                )
            return
        tokens = tokens_entry.value
        self._check_token_arrays(tokens.length)
        if isinstance(tokens.items, list):
            self._check_token_strings(tokens.items, tokenizer)
        if tokenizer.needs_merges and "tokenizer.ggml.merges" not in kvs:
            self.add(
                "missing-merges",
                f"tokenizer.ggml.model is '{model}' (BPE) but tokenizer.ggml.merges is missing "
                "(llama.cpp: cannot find tokenizer merges in model file)",
                "write the BPE merges from tokenizer.json as tokenizer.ggml.merges",
                key="tokenizer.ggml.merges",
            )
        if not tokenizer.decodes_byte_tokens:
            self._check_byte_token_types(model)
        self._check_special_ids(tokens.length)
        vocab_size = self.hparams.values.get("vocab_size_key")
        if isinstance(vocab_size, int) and vocab_size != tokens.length:
            self.add(
                "vocab-size-mismatch",
                f"{self.arch}.vocab_size is {vocab_size} but tokenizer.ggml.tokens has "
                f"{tokens.length} tokens",
                f"set {self.arch}.vocab_size to {tokens.length} or remove it",
                key=f"{self.arch}.vocab_size",
                severity="warning",
            )

    def _check_token_arrays(self, n_tokens: int) -> None:
        for key, name in (("tokenizer.ggml.scores", "scores"), ("tokenizer.ggml.token_type", "token_type")):
            entry = self.header.kvs.get(key)
            if entry is None or not isinstance(entry.value, ArrayValue) or entry.value.length == n_tokens:
                continue
            length = entry.value.length
            shorter = length < n_tokens
            self.add(
                "tokenizer-length-mismatch",
                f"{key} has {length} entries but tokenizer.ggml.tokens has {n_tokens}"
                + (
                    f" (llama.cpp: Index out of array bounds for {name} ({length} < {n_tokens}))"
                    if shorter
                    else ""
                ),
                f"write exactly one {name} entry per token",
                key=key,
                severity="error" if shorter else "warning",
            )

    def _check_byte_token_types(self, model: str) -> None:
        types = self.header.value("tokenizer.ggml.token_type")
        if not isinstance(types, ArrayValue) or types.items is None:
            return
        count = sum(1 for t in types.items if t == _BYTE_TOKEN_TYPE)
        if count:
            self.add(
                "tokenizer-mismatch",
                f"tokenizer.ggml.model is {model!r}, but {count} token(s) have token_type BYTE (6), which "
                "only SentencePiece ('llama') and Unigram ('t5') vocabularies decode; llama.cpp aborts while "
                "loading the vocab (token_to_byte: fatal error)",
                "set tokenizer.ggml.model to the tokenizer the vocab was made for (byte tokens <0xXX>: "
                "'llama'), or reconvert the model",
                key="tokenizer.ggml.model",
            )

    def _check_token_strings(self, tokens: list[str], tokenizer: archs.TokenizerRule) -> None:
        distinct = set(tokens)
        distinct.discard("")  # llama.cpp renames empty tokens to [EMPTY_i]
        duplicates: list[tuple[str, int, int]] = []
        if len(distinct) != len(tokens) - tokens.count(""):
            first_id: dict[str, int] = {}
            for index, token in enumerate(tokens):
                previous = first_id.setdefault(token, index) if token else index
                if previous != index:
                    duplicates.append((token, previous, index))
        if duplicates:
            shown = ", ".join(f"{_short(tok, 30)} at ids {a} and {b}" for tok, a, b in duplicates[:5])
            self.add(
                "duplicate-token",
                f"tokenizer.ggml.tokens has {len(duplicates)} duplicate token(s): {shown} "
                "(llama.cpp aborts: GGML_ASSERT(id_to_token.size() == token_to_id.size()))",
                "make every token string unique (rename or drop the duplicates, and the matching rows of "
                "token_embd/output)",
                key="tokenizer.ggml.tokens",
            )
        if tokenizer.byte_tokens:
            missing = [b for b in range(256) if f"<0x{b:02X}>" not in distinct]
            if missing:
                self.add(
                    "missing-byte-tokens",
                    f"the SentencePiece vocab lacks {len(missing)} of the 256 byte tokens <0x00>..<0xFF> "
                    f"(first missing: <0x{missing[0]:02X}>); text with characters outside the vocab fails at "
                    "request time in llama.cpp (_Map_base::at)",
                    "add all 256 byte tokens '<0xXX>' with token_type BYTE (6)",
                    key="tokenizer.ggml.tokens",
                    severity="error" if len(missing) == 256 else "warning",
                )

    def _check_special_ids(self, n_tokens: int) -> None:
        for key in archs.SPECIAL_TOKEN_KEYS:
            value = self.header.value(key)
            if isinstance(value, int) and not isinstance(value, bool) and value >= n_tokens:
                self.add(
                    "bad-special-token",
                    f"{key} is {value}, outside the vocabulary of {n_tokens} tokens (llama.cpp: bad special "
                    "token; it falls back to its default id, a token the model was not trained to use)",
                    f"set {key} to the id of that token in tokenizer.ggml.tokens",
                    key=key,
                )

    # --------------------------------------------------------------------------------------- tensors
    def check_tensors(self) -> None:
        rule = self.rule
        if rule is None:
            return
        if rule.llm_keys:
            self._check_tensor_types()
        if rule.tensors is None:
            if rule.llm_keys and self.arch in archs.LLAMACPP_ARCHITECTURES:
                self._check_tensor_names_from_gguf_py()
            if rule.shapes is not None:
                self._check_tensor_rules(rule.shapes, complete=False)
            return
        self._check_tensor_rules(rule.tensors, complete=True)

    def _check_tensor_rules(self, rules: tuple[archs.TensorRule, ...], *, complete: bool) -> None:
        """Shapes of the tensors `rules` name; when the rules are `complete`, also missing and unexpected
        tensors."""
        n_layer = self.hparams.values.get("n_layer")
        if not isinstance(n_layer, int) or not 1 <= n_layer <= archs.LLAMA_MAX_LAYERS:
            return  # reported as zero-blocks / missing-key; per-block names cannot be listed
        by_name = {t.name: t for t in self.header.tensors}
        allowed: set[str] = set()
        for tensor_rule in rules:
            layers: Iterable[int | None] = range(n_layer) if "{i}" in tensor_rule.name else (None,)
            for layer in layers:
                name = tensor_rule.name.format(i=layer)
                try:
                    applies = bool(self.hparams.eval(tensor_rule.when))
                except Unknown:
                    allowed.add(name)
                    continue
                if not applies:
                    continue
                allowed.add(name)
                tensor = by_name.get(name)
                if tensor is None and not complete:
                    continue
                if tensor is None:
                    alternative = tensor_rule.unless.format(i=layer) if tensor_rule.unless else None
                    if tensor_rule.required and not (alternative and alternative in by_name):
                        self.add(
                            "missing-tensor",
                            f"tensor '{name}' is missing "
                            f"(llama.cpp: check_tensor_dims: tensor '{name}' not found)",
                            "the file is incomplete or was converted for another architecture: reconvert it",
                            tensor=name,
                        )
                    continue
                self._check_shape(tensor, tensor_rule.shape)
        if complete:
            self._report_unexpected(lambda name: name in allowed)

    def _check_tensor_names_from_gguf_py(self) -> None:
        """For an architecture without tensor rules here: every tensor must be one gguf-py lists for it."""
        assert self.arch is not None
        known = archs.gguf_py_tensor_names(self.arch)
        if known is not None:
            self._report_unexpected(lambda name: archs.tensor_base_name(name) in known)

    def _report_unexpected(self, allowed: Callable[[str], bool]) -> None:
        towers = 0
        for tensor in self.header.tensors:
            if allowed(tensor.name):
                continue
            if tensor.name.startswith(archs.EMBEDDED_TOWER_PREFIXES):
                towers += 1
            else:
                self.add(
                    "unexpected-tensor",
                    f"tensor '{tensor.name}' is not used by architecture '{self.arch}' "
                    "(llama.cpp: done_getting_tensors: wrong number of tensors)",
                    "remove the tensor, or fix general.architecture / block_count if they are wrong",
                    tensor=tensor.name,
                )
        if towers:
            self.add(
                "unexpected-tensor",
                f"{towers} tensor(s) of an embedded vision/audio tower (v.*, mm.*, a.*): Ollama's own engine "
                "uses them, llama.cpp refuses the file (wrong number of tensors)",
                "for llama.cpp, split the tower into a separate mmproj GGUF; for Ollama this is fine",
                severity="warning",
            )

    def _check_tensor_types(self) -> None:
        for tensor in self.header.tensors:
            known = GGML_TYPES.get(tensor.ggml_type)
            if known is None:
                continue  # reported as bad-tensor-type by check_layout
            if known.is_integer:
                self.add(
                    "bad-tensor-type",
                    f"tensor '{tensor.name}' has integer type {known.name}; model weights are float or "
                    "quantized (llama.cpp fails to load it or crashes in the first matrix product)",
                    "reconvert or requantize the model (llama-quantize); integer types hold no weights",
                    tensor=tensor.name,
                )
            elif len(tensor.ne) == 1 and "norm" in tensor.name and known is not F32_TYPE:
                self.add(
                    "bad-tensor-type",
                    f"norm tensor '{tensor.name}' has type {known.name}; llama.cpp multiplies by norm "
                    "weights in F32 only (it aborts at the first decode)",
                    "store 1-D tensors as F32 (convert_hf_to_gguf.py and llama-quantize do)",
                    tensor=tensor.name,
                )

    def _check_shape(self, tensor: TensorInfo, shape: tuple[str, ...]) -> None:
        try:
            expected = [int(self.hparams.eval(dim)) for dim in shape]  # type: ignore[call-overload]
        except Unknown:
            return
        padded_expected = expected + [1] * (4 - len(expected))
        actual = list(tensor.ne) + [1] * (4 - len(tensor.ne))
        if padded_expected == actual:
            return
        wrong_dims = [i for i in range(4) if padded_expected[i] != actual[i]]
        if all(i < len(shape) and shape[i] == "n_vocab" for i in wrong_dims):
            i = wrong_dims[0]
            self.add(
                "vocab-size-mismatch",
                f"tensor '{tensor.name}' has {actual[i]} rows but tokenizer.ggml.tokens has "
                f"{expected[i]} tokens (llama.cpp: tensor '{tensor.name}' has wrong shape; "
                f"expected {expected}, got {list(tensor.ne)})",
                "the token list and the embedding must have one entry per token: reconvert with the "
                "matching tokenizer",
                tensor=tensor.name,
            )
            return
        self.add(
            "wrong-shape",
            f"tensor '{tensor.name}' has shape {list(tensor.ne)}, expected {expected} "
            f"(ggml ne order, row length first: {', '.join(shape)}) "
            f"(llama.cpp: check_tensor_dims: tensor '{tensor.name}' has wrong shape)",
            "the hyperparameter keys and the tensors disagree: fix the keys or reconvert the model",
            tensor=tensor.name,
        )

    # ---------------------------------------------------------------------------------- chat template
    def check_chat_template(self) -> None:
        template = self.header.value("tokenizer.chat_template")
        if not isinstance(template, str) or not template:
            return
        # jinja2 is imported only for files that carry a chat template (start-up time of a plain check).
        from harness.gguf.chat_template import audit_chat_template, compare_with_go_template

        tokens = self.header.value("tokenizer.ggml.tokens")
        items = tokens.items if isinstance(tokens, ArrayValue) else None
        vocab = items if isinstance(items, list) else None
        specials = {"bos_token": "", "eos_token": ""}
        for name, key in (
            ("bos_token", "tokenizer.ggml.bos_token_id"),
            ("eos_token", "tokenizer.ggml.eos_token_id"),
        ):
            token_id = self.header.value(key)
            if vocab is not None and isinstance(token_id, int) and 0 <= token_id < len(vocab):
                specials[name] = vocab[token_id]
        vocab_set = frozenset(vocab) if vocab is not None else None
        for finding in audit_chat_template(template, vocab_set, **specials):
            self.add(finding.code, finding.message, finding.hint, key="tokenizer.chat_template")
        if self.go_template is not None:
            mismatch = compare_with_go_template(
                template, self.go_template.prompt, go_error=self.go_template.error, **specials
            )
            if mismatch is not None:
                self.add(mismatch.code, mismatch.message, mismatch.hint, key="tokenizer.chat_template")

    # ----------------------------------------------------------------------------------- values (deep)
    def check_values(self) -> None:
        header = self.header
        assert header.data_offset is not None
        if header.byte_order != "<":
            return
        from harness.gguf.values import count_non_finite  # numpy and gguf-py: imported for --deep only

        skipped: set[str] = set()
        handle, _ = open_regular_file(header.path)
        with handle:
            for tensor in header.tensors:
                nbytes = tensor.nbytes
                if nbytes is None or header.data_offset + tensor.offset + nbytes > header.file_size:
                    continue
                if GGML_TYPES[tensor.ggml_type].is_integer:
                    continue  # integer tensors cannot hold NaN
                counts = count_non_finite(handle, tensor, header.data_offset)
                if counts is None:
                    skipped.add(tensor.type_name)
                    continue
                nan, inf = counts
                if nan or inf:
                    self.add(
                        "non-finite-weights",
                        f"tensor '{tensor.name}' holds {nan:,} NaN and {inf:,} Inf values out of "
                        f"{tensor.n_elements:,} (llama.cpp loads it, then generates empty or garbage text)",
                        "the weights are corrupt or overflowed in conversion/quantization: reconvert from "
                        "the original weights (F16 overflow: use BF16 or F32)",
                        tensor=tensor.name,
                    )
        if skipped:
            self.add(
                "deep-skipped",
                f"--deep could not dequantize tensor type(s) {', '.join(sorted(skipped))}; their values were "
                "not checked",
                "gguf-py has no dequantizer for these types",
            )
