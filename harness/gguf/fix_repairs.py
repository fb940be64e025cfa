"""The repairs `harness gguf fix` plans, applied to an in-memory copy of a file's metadata.

`Repairs(header, options)` starts from the file's keys and tensor names; `rename()` renames the architecture
(moving its keys) and the tensors, `repair()` then sets, retypes, fills from config.json, derives from tensor
shapes and copies a donor's tokenizer. Each step records a `Change` (what and why) or a note.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from gguf import GGMLQuantizationType, GGUFValueType

from harness.errors import GGUFReadError
from harness.gguf import archs
from harness.gguf.build import TensorLayout
from harness.gguf.findings import Finding
from harness.gguf.fix_values import (
    HF_CONFIG_KEYS,
    TYPES_BY_NAME,
    FixOptionError,
    close_floats,
    kv_from_entry,
    kv_type_name,
    load_hf_config,
    show,
    typed_kv,
)
from harness.gguf.hf_names import block_count_in_names, gguf_tensor_name, hf_renames
from harness.gguf.plan import KV
from harness.gguf.reader import GGUFHeader, ReadLimits, TensorInfo, read_gguf_header

# The fixer copies every value, so it reads whole vocabularies and templates (the checker's caps are lower).
FIX_LIMITS = ReadLimits(
    max_string_bytes=64 << 20, max_array_bytes=1 << 30, max_array_strings=1 << 23, max_total_strings=1 << 24
)


@dataclass(frozen=True)
class FixOptions:
    """What the user asked for; everything else the plan derives from the file."""

    set_values: tuple[str, ...] = ()  # "KEY[:TYPE]=VALUE"
    arch: str | None = None
    config: Path | None = None  # a Hugging Face config.json (or the folder holding it)
    tokenizer_from: Path | None = None  # a donor GGUF
    rename_tensors: tuple[str, ...] = ()  # "OLD=NEW"
    hf_names: bool = True  # map Hugging Face tensor names to GGUF names
    derive: bool = True  # derive missing hyperparameters from tensor shapes


@dataclass(frozen=True)
class Change:
    """One repair: what changes, why (the option, config field or tensor it came from), what it touches."""

    what: str
    why: str
    keys: tuple[str, ...] = ()
    tensors: tuple[str, ...] = ()
    codes: tuple[str, ...] = ()  # finding codes it addresses

    def addresses(self, finding: Finding) -> bool:
        if finding.key is not None and finding.key in self.keys:
            return True
        if finding.tensor is not None and finding.tensor in self.tensors:
            return True
        return finding.code in self.codes


@dataclass(frozen=True)
class TensorCopy:
    """A tensor of the input and the name it gets in the output."""

    source: TensorInfo
    name: str

    @property
    def layout(self) -> TensorLayout:
        nbytes = self.source.nbytes
        assert nbytes is not None
        shape = tuple(reversed(self.source.ne))
        return TensorLayout(self.name, shape, nbytes, GGMLQuantizationType(self.source.ggml_type))


def read_for_fix(path: str | os.PathLike[str]) -> GGUFHeader:
    """The whole metadata of `path`; `GGUFReadError` (exit 2) when its structure is too broken to copy."""
    header = read_gguf_header(path, FIX_LIMITS)
    fatal = [p for p in header.problems if p.code != "duplicate-key"]
    if fatal or not header.complete:
        problem = fatal[0] if fatal else None
        raise GGUFReadError(
            f"{path} cannot be repaired: "
            + (f"{problem.code}: {problem.message}" if problem else "its metadata is incomplete"),
            problem.hint if problem else "fetch or convert the file again",
        )
    if header.byte_order != "<":
        raise GGUFReadError(
            f"{path} is big-endian", "convert it with `gguf-convert-endian FILE little` first"
        )
    return header


class Repairs:
    """The file's keys and tensor names, changed step by step; `changes` and `notes` say what and why."""

    def __init__(self, header: GGUFHeader, options: FixOptions) -> None:
        self.header = header
        self.options = options
        self.kvs: dict[str, KV] = {key: kv_from_entry(entry) for key, entry in header.kvs.items()}
        self.tensors = [TensorCopy(t, t.name) for t in header.tensors]
        self.changes: list[Change] = []
        self.notes: list[str] = []
        arch = header.value("general.architecture")
        self.arch = arch if isinstance(arch, str) else ""

    def change(self, what: str, why: str, **touches: tuple[str, ...]) -> None:
        self.changes.append(Change(what, why, **touches))

    def rename(self) -> None:
        """The renames (architecture, tensors), after which the checker sees the whole file."""
        if any(p.code == "duplicate-key" for p in self.header.problems):
            self.change(
                "kept the first value of each duplicated key",
                "llama.cpp refuses duplicates",
                codes=("duplicate-key",),
            )
        self.rename_architecture()
        self.rename_tensors()

    def repair(self) -> None:
        """The repairs of values, after `rename`."""
        self.set_values()
        if self.arch in archs.KNOWN_ARCHITECTURES:
            self.retype_keys()
            self.fill_from_config()
            if self.options.derive:
                self.derive_from_tensors()
        else:
            self.notes.append(
                f"keys of the unknown architecture {self.arch!r} were not repaired: give --arch first"
            )
        self.copy_tokenizer()

    # ------------------------------------------------------------------------------------ key table
    def key_types(self) -> dict[str, tuple[str, ...]]:
        """Accepted types of every key the architecture table lists (arch keys formatted)."""
        rule = archs.rules_for(self.arch)
        table = {r.key: r.types for r in archs.GENERAL_KEYS}
        if rule.llm_keys:
            table.update({r.key.format(arch=self.arch): r.types for r in archs.COMMON_KEYS})
        table.update({r.key.format(arch=self.arch): r.types for r in rule.keys})
        return table

    def tensor(self, name: str) -> TensorInfo | None:
        return next((t.source for t in self.tensors if t.name == name), None)

    # ----------------------------------------------------------------------------------- repairs
    def rename_architecture(self) -> None:
        new = self.options.arch
        if new is None:
            if (
                self.arch not in archs.KNOWN_ARCHITECTURES
                and self.tensors
                and all(
                    gguf_tensor_name("llama", t.name, block_count_in_names([t.name])) for t in self.tensors
                )
            ):
                self.notes.append("the tensor names are those of a llama model: try --arch llama")
            return
        if new not in archs.KNOWN_ARCHITECTURES:
            raise FixOptionError(
                f"--arch {new}: llama.cpp does not know architecture {new!r}",
                "use an architecture llama.cpp knows, e.g. llama, qwen2, gemma3",
            )
        old = self.arch
        if old == new:
            self.notes.append(f"general.architecture is already {new!r}")
            return
        moved: list[str] = []
        kvs: dict[str, KV] = {}
        prefix = f"{old}." if old else None
        for key, kv in self.kvs.items():
            if prefix and key.startswith(prefix):
                target = new + "." + key[len(prefix) :]
                if target in self.kvs:
                    self.notes.append(f"kept {target} already in the file; dropped {key}")
                    continue
                moved.append(key)
                key = target
            kvs[key] = kv
        kvs["general.architecture"] = KV(new, GGUFValueType.STRING)
        if "general.architecture" not in self.kvs:
            kvs = {"general.architecture": kvs.pop("general.architecture"), **kvs}
        self.kvs = kvs
        self.arch = new
        what = f"general.architecture {old!r} -> {new!r}"
        if moved:
            what += f", moved {len(moved)} key(s) {old}.* -> {new}.*"
        self.change(
            what,
            "--arch",
            keys=("general.architecture", *moved),
            codes=("unknown-architecture", "missing-architecture"),
        )

    def rename_tensors(self) -> None:
        names = [t.name for t in self.tensors]
        renames: dict[str, str] = {}
        for item in self.options.rename_tensors:
            old, sep, new = item.partition("=")
            if not sep or not old or not new:
                raise FixOptionError(
                    f"--rename-tensor {item!r}: expected OLD=NEW", "e.g. lm_head.weight=output.weight"
                )
            if old not in names:
                raise FixOptionError(
                    f"--rename-tensor {item!r}: the file has no tensor {old!r}", "check the name"
                )
            renames[old] = new
        for old, new in renames.items():
            self.change(f"tensor {old} -> {new}", "--rename-tensor", tensors=(old, new))
        if self.options.hf_names and self.arch:
            pending = [n for n in names if n not in renames]
            mapped = hf_renames(self.arch, pending)
            if mapped:
                renames.update(mapped)
                example = next(iter(mapped.items()))
                self.change(
                    f"renamed {len(mapped)} Hugging Face tensor name(s) to GGUF names "
                    f"(e.g. {example[0]} -> {example[1]})",
                    f"gguf-py's tensor name map for {self.arch}",
                    tensors=tuple(mapped) + tuple(mapped.values()),
                )
                self.notes.append(
                    "renaming does not permute attn_q/attn_k rows: a llama file converted without "
                    "convert_hf_to_gguf.py's permutation loads but may generate nonsense"
                )
        final = [renames.get(n, n) for n in names]
        if len(set(final)) != len(final):
            raise FixOptionError(
                "the tensor renames give two tensors the same name", "check --rename-tensor against the file"
            )
        self.tensors = [TensorCopy(t.source, renames.get(t.name, t.name)) for t in self.tensors]

    def set_values(self) -> None:
        table = self.key_types()
        for item in self.options.set_values:
            spec, sep, raw = item.partition("=")
            key, _, type_name = spec.partition(":")
            if not sep or not key:
                raise FixOptionError(
                    f"--set {item!r}: expected KEY[:TYPE]=VALUE", "e.g. llama.context_length=4096"
                )
            if not type_name:
                if key in table:
                    type_name = table[key][0]
                elif key in self.kvs:
                    type_name = kv_type_name(self.kvs[key])
                else:
                    raise FixOptionError(
                        f"--set {item!r}: {key} is not in the architecture table, so its type is unknown",
                        f"give the type: --set {key}:u32={raw} (u32, i32, f32, bool, str...)",
                    )
            if type_name.startswith("arr") or type_name not in TYPES_BY_NAME:
                raise FixOptionError(
                    f"--set {item!r}: type {type_name!r} cannot be set", "use u32, i32, f32, f64, bool or str"
                )
            try:
                kv = typed_kv(raw, type_name)
            except ValueError as error:
                raise FixOptionError(f"--set {item!r}: {error}", f"give a {type_name} value") from None
            self.kvs[key] = kv
            self.change(f"set {key} = {show(kv.value)} ({type_name})", "--set", keys=(key,))

    def retype_keys(self) -> None:
        for key, types in self.key_types().items():
            kv = self.kvs.get(key)
            if kv is None or kv_type_name(kv) in types:
                continue
            old = kv_type_name(kv)
            try:
                self.kvs[key] = typed_kv(kv.value, types[0])
            except ValueError as error:
                self.notes.append(f"cannot retype {key} from {old} to {types[0]}: {error}; --set it")
                continue
            self.change(
                f"retyped {key} {old} -> {types[0]} (value {show(self.kvs[key].value)})",
                f"llama.cpp reads it as {types[0]}",
                keys=(key,),
            )

    def fill_from_config(self) -> None:
        if self.options.config is None:
            return
        config = load_hf_config(self.options.config)
        table = self.key_types()
        for field_name, suffix in HF_CONFIG_KEYS:
            value = config.get(field_name)
            key = f"{self.arch}.{suffix}"
            if value is None or key not in table:
                continue
            try:
                kv = typed_kv(value, table[key][0])
            except ValueError as error:
                self.notes.append(f"config.json {field_name} = {value!r} not used: {error}")
                continue
            existing = self.kvs.get(key)
            if existing is not None:
                if existing.value != kv.value and not close_floats(existing.value, kv.value):
                    self.notes.append(
                        f"kept {key} = {show(existing.value)} from the file (config.json {field_name} says "
                        f"{show(value)}; --set it to override)"
                    )
                continue
            self.kvs[key] = kv
            self.change(
                f"set {key} = {show(kv.value)} ({table[key][0]})", f"config.json {field_name}", keys=(key,)
            )

    def derive_from_tensors(self) -> None:
        if not self.arch or not archs.rules_for(self.arch).llm_keys:
            return
        for suffix, (value, source) in self.derivable().items():
            key = f"{self.arch}.{suffix}"
            if key in self.kvs:
                continue
            self.kvs[key] = KV(value, GGUFValueType.UINT32)
            self.change(f"set {key} = {value} (u32)", f"derived from {source}", keys=(key,))
        ctx = f"{self.arch}.context_length"
        if ctx not in self.kvs:
            self.notes.append(f"{ctx} cannot be derived from the tensors: pass --set {ctx}=N or --config")

    def derivable(self) -> dict[str, tuple[int, str]]:
        """Hyperparameters the tensor shapes give unambiguously: key suffix -> (value, where from)."""
        found: dict[str, tuple[int, str]] = {}
        embd = self.tensor("token_embd.weight")
        if embd is not None and len(embd.ne) == 2:
            found["embedding_length"] = (embd.ne[0], "token_embd.weight ne[0]")
        blocks = {
            int(t.name.split(".")[1])
            for t in self.tensors
            if t.name.split(".")[0] == "blk" and t.name.split(".")[1].isdigit()
        }
        if blocks and blocks == set(range(max(blocks) + 1)):
            found["block_count"] = (len(blocks), f"the blk.0..blk.{max(blocks)} tensor groups")
        elif blocks:
            self.notes.append("block_count not derived: the blk.N tensor groups are not numbered 0..N-1")
        up = self.tensor("blk.0.ffn_up.weight")
        if up is not None and len(up.ne) == 2:
            found["feed_forward_length"] = (up.ne[1], "blk.0.ffn_up.weight ne[1]")
        head_dim = self.head_dim()
        if head_dim is not None:
            size, source = head_dim
            for suffix, tensor_name in (
                ("attention.head_count", "blk.0.attn_q.weight"),
                ("attention.head_count_kv", "blk.0.attn_k.weight"),
            ):
                tensor = self.tensor(tensor_name)
                if tensor is not None and len(tensor.ne) == 2 and tensor.ne[1] % size == 0:
                    found[suffix] = (
                        tensor.ne[1] // size,
                        f"{tensor_name} ne[1] / head size {size} ({source})",
                    )
        return found

    def head_dim(self) -> tuple[int, str] | None:
        for suffix in ("attention.key_length", "rope.dimension_count"):
            kv = self.kvs.get(f"{self.arch}.{suffix}")
            if kv is not None and isinstance(kv.value, int) and kv.value > 0:
                return kv.value, f"{self.arch}.{suffix}"
        norm = self.tensor("blk.0.attn_q_norm.weight")
        if norm is not None and len(norm.ne) == 1:
            return norm.ne[0], "blk.0.attn_q_norm.weight"
        return None

    def copy_tokenizer(self) -> None:
        donor_path = self.options.tokenizer_from
        if donor_path is None:
            return
        donor = read_for_fix(donor_path)
        donor_keys = {k: kv_from_entry(e) for k, e in donor.kvs.items() if k.startswith("tokenizer.")}
        has_tokenizer = "tokenizer.ggml.model" in self.kvs and "tokenizer.ggml.tokens" in self.kvs
        if not has_tokenizer:
            if "tokenizer.ggml.model" not in donor_keys:
                raise FixOptionError(
                    f"--tokenizer-from {donor_path}: the donor has no tokenizer", "use another donor"
                )
            tokens = donor_keys.get("tokenizer.ggml.tokens")
            n_tokens = len(tokens.value) if tokens is not None else 0  # type: ignore[arg-type]
            embd = self.tensor("token_embd.weight")
            if embd is not None and len(embd.ne) == 2 and embd.ne[1] != n_tokens:
                self.notes.append(
                    f"tokenizer not copied: the donor has {n_tokens} tokens, token_embd.weight has "
                    f"{embd.ne[1]} rows (not the same vocabulary)"
                )
                return
            self.kvs = {k: v for k, v in self.kvs.items() if not k.startswith("tokenizer.")}
            self.kvs.update(donor_keys)
            self.change(
                f"copied the tokenizer ({len(donor_keys)} tokenizer.* keys, {n_tokens} tokens"
                + (", chat template" if "tokenizer.chat_template" in donor_keys else "")
                + ")",
                f"from {donor_path}",
                keys=tuple(donor_keys),
                codes=("missing-tokenizer",),
            )
        elif "tokenizer.chat_template" not in self.kvs and "tokenizer.chat_template" in donor_keys:
            self.kvs["tokenizer.chat_template"] = donor_keys["tokenizer.chat_template"]
            self.change("copied the chat template", f"from {donor_path}", keys=("tokenizer.chat_template",))
        else:
            self.notes.append(
                f"the file has a tokenizer and a chat template: nothing copied from {donor_path}"
            )
