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
import math
import os
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from harness.gguf import archs
from harness.gguf.archs import ArchRule, HParams, KeyRule, Unknown
from harness.gguf.check_tokenizer import TokenizerChecks
from harness.gguf.findings import (
    CODES,
    MAX_FINDINGS_PER_CODE,
    CheckReport,
    Finding,
)
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

_BYTE_TOKEN_TYPE = 6  # llama_token_type LLAMA_TOKEN_TYPE_BYTE


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


class _SafeFormat(dict[str, object]):
    def __missing__(self, name: str) -> str:
        return "?"


class _Checker(TokenizerChecks):
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
