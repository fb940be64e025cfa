"""A bounded, hostile-safe reader for the metadata part of a GGUF file.

It reads the header, the key/value section and the tensor infos, never the tensor data, and never trusts a
length it reads: each one is checked against the bytes left in the file before anything is allocated, and
big arrays are kept only up to fixed limits (`ReadLimits`). Where the structure is broken the reader stops and
records a `ReadProblem` (with one of the checker's finding codes) instead of raising; what was read before the
break is kept. Only a file that cannot be opened at all raises `GGUFReadError`.

`gguf.GGUFReader` is not used: it memory-maps the file and raises raw numpy errors on hostile input. Nor is
numpy or gguf-py imported at all (numeric arrays are `array.array`s): they would cost more start-up time than
the whole check of a small file.
"""

from __future__ import annotations

import array
import os
import stat
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from harness.errors import GGUFReadError
from harness.gguf.types import DEFAULT_ALIGNMENT as GGUF_DEFAULT_ALIGNMENT
from harness.gguf.types import GGML_TYPES
from harness.gguf.types import ValueType as GGUFValueType

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
MAX_TENSOR_DIMS = 4  # GGML_MAX_DIMS
MAX_TENSOR_NAME_BYTES = 63  # GGML_MAX_NAME is 64 including the terminating NUL
_CHUNK = 1 << 20
MAX_BAD_UTF8_KEPT = 12  # strings with invalid UTF-8 reported one by one; the rest are counted

_SCALAR_FORMATS: dict[GGUFValueType, str] = {
    GGUFValueType.UINT8: "B",
    GGUFValueType.INT8: "b",
    GGUFValueType.UINT16: "H",
    GGUFValueType.INT16: "h",
    GGUFValueType.UINT32: "I",
    GGUFValueType.INT32: "i",
    GGUFValueType.FLOAT32: "f",
    GGUFValueType.BOOL: "?",
    GGUFValueType.UINT64: "Q",
    GGUFValueType.INT64: "q",
    GGUFValueType.FLOAT64: "d",
}
# Smallest possible encodings, used to reject impossible counts before looping over them.
_MIN_KV_BYTES = 8 + 4 + 1  # key length, value type, one byte of value
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8  # name length, n_dims, type, offset

TYPE_NAMES: dict[int, str] = {
    GGUFValueType.UINT8: "u8",
    GGUFValueType.INT8: "i8",
    GGUFValueType.UINT16: "u16",
    GGUFValueType.INT16: "i16",
    GGUFValueType.UINT32: "u32",
    GGUFValueType.INT32: "i32",
    GGUFValueType.FLOAT32: "f32",
    GGUFValueType.BOOL: "bool",
    GGUFValueType.STRING: "str",
    GGUFValueType.ARRAY: "arr",
    GGUFValueType.UINT64: "u64",
    GGUFValueType.INT64: "i64",
    GGUFValueType.FLOAT64: "f64",
}


@dataclass(frozen=True)
class ReadLimits:
    """Caps on what the reader keeps in memory (beyond them values are summarised, not kept)."""

    max_string_bytes: int = 1 << 20  # longer strings keep this prefix only
    max_array_bytes: int = 16 << 20  # numeric arrays bigger than this keep only their length
    max_array_strings: int = 1 << 20  # string arrays longer than this keep only their length
    max_total_strings: int = 1 << 23  # strings walked in the whole file before the reader gives up
    max_tensors: int = 1 << 16  # real models have a few thousand at most
    max_kvs: int = 1 << 16  # real models have a few hundred at most


DEFAULT_LIMITS = ReadLimits()


@dataclass
class ArrayValue:
    """An array value: its element type, its length, and its items when they fit the limits."""

    item_type: GGUFValueType
    length: int
    items: list[str] | array.array | None  # None: too big, summarised (bools are bytes 0/1)

    def __len__(self) -> int:
        return self.length


@dataclass
class KVEntry:
    """One key/value pair as stored: the value is a python scalar, a str, or an `ArrayValue`."""

    key: str
    type: GGUFValueType
    value: object
    offset: int
    truncated: bool = False  # a string longer than the limit: `value` is its prefix

    @property
    def type_name(self) -> str:
        """The type as llama.cpp names it: u32, f32, str, arr[str]..."""
        if isinstance(self.value, ArrayValue):
            return f"arr[{TYPE_NAMES.get(self.value.item_type, '?')}]"
        return TYPE_NAMES.get(self.type, str(int(self.type)))


@dataclass(frozen=True)
class TensorInfo:
    """One tensor info: `ne` in ggml order (ne[0] is the row length), `offset` from the data section."""

    name: str
    ne: tuple[int, ...]
    ggml_type: int
    offset: int
    info_offset: int

    @property
    def type_name(self) -> str:
        known = GGML_TYPES.get(self.ggml_type)
        return known.name if known else f"type {self.ggml_type}"

    @property
    def known_type(self) -> bool:
        return self.ggml_type in GGML_TYPES

    @property
    def n_elements(self) -> int:
        count = 1
        for dim in self.ne:
            count *= dim
        return count

    @property
    def block_size(self) -> int | None:
        known = GGML_TYPES.get(self.ggml_type)
        return known.block_size if known else None

    @property
    def nbytes(self) -> int | None:
        """Bytes of data, or None for an unknown type (python ints: no overflow on hostile shapes)."""
        known = GGML_TYPES.get(self.ggml_type)
        if known is None:
            return None
        return self.n_elements // known.block_size * known.type_size


@dataclass(frozen=True)
class ReadProblem:
    """A structural problem that stopped or disturbed reading; `code` is a checker finding code."""

    code: str
    message: str
    hint: str
    offset: int | None = None
    key: str | None = None
    tensor: str | None = None


@dataclass
class GGUFHeader:
    """Everything the reader could read from a GGUF file's metadata."""

    path: Path
    file_size: int
    version: int | None = None
    byte_order: str = "<"
    tensor_count: int | None = None
    kv_count: int | None = None
    kvs: dict[str, KVEntry] = field(default_factory=dict)
    tensors: list[TensorInfo] = field(default_factory=list)
    alignment: int = GGUF_DEFAULT_ALIGNMENT
    data_offset: int | None = None  # start of the tensor data section (None if not reached)
    kv_complete: bool = False  # the whole key/value section was read
    problems: list[ReadProblem] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """True when the whole metadata part was read (tensor infos included)."""
        return self.data_offset is not None

    def value(self, key: str) -> object:
        """The value stored under `key`, or None."""
        entry = self.kvs.get(key)
        return None if entry is None else entry.value


class _Stop(Exception):
    """Raised inside the parser to stop at a structural problem."""

    def __init__(self, problem: ReadProblem) -> None:
        super().__init__(problem.message)
        self.problem = problem


class _Source:
    """Sequential reads over a file through one buffered window; every read is bounds-checked."""

    def __init__(self, handle: BinaryIO, size: int, byte_order: str = "<") -> None:
        self._handle = handle
        self.size = size
        self.pos = 0
        self.byte_order = byte_order
        self.section = "header"
        self._buf = b""
        self._base = 0
        self.bad_utf8: list[tuple[int, str]] = []  # (file offset of the first bad byte, what), the first few
        self.bad_utf8_count = 0

    def decode(self, data: bytes, offset: int, what: str, cut: bool = False) -> str:
        """`data` (read at file `offset`) as text; bytes that are not UTF-8 become \\udcXX escapes and the
        first bad byte is recorded (a string cut at the reader's limit may end inside a character)."""
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as error:
            if not (cut and error.reason == "unexpected end of data"):
                self.bad_utf8_count += 1
                if len(self.bad_utf8) < MAX_BAD_UTF8_KEPT:
                    self.bad_utf8.append((offset + error.start, what))
            return data.decode("utf-8", "surrogateescape")

    @property
    def remaining(self) -> int:
        return self.size - self.pos

    def short(self, needed: int, what: str) -> _Stop:
        code = {"header": "truncated-header", "kv": "truncated-kv"}.get(self.section, "truncated-tensor-info")
        return _Stop(
            ReadProblem(
                code,
                f"file ends inside the {_SECTION_NAMES[self.section]}: {what} needs {needed:,} bytes at "
                f"offset {self.pos:,}, only {max(self.remaining, 0):,} remain (file is {self.size:,} bytes)",
                "the file is cut short or corrupt: fetch it again and compare its size and checksum",
                offset=self.pos,
            )
        )

    def take(self, count: int, what: str) -> bytes:
        if count > self.remaining:
            raise self.short(count, what)
        start = self.pos - self._base
        if start < 0 or start + count > len(self._buf):
            self._handle.seek(self.pos)
            self._buf = self._handle.read(max(count, _CHUNK))
            self._base = self.pos
            start = 0
            if len(self._buf) < count:  # the file shrank while being read
                raise self.short(count, what)
        self.pos += count
        return self._buf[start : start + count]

    def skip(self, count: int, what: str) -> None:
        if count > self.remaining:
            raise self.short(count, what)
        self.pos += count

    def strings(self, count: int, what: str, limit: int, keep: bool) -> list[str]:
        """`count` length-prefixed strings (kept if `keep`): parsed straight from the buffered window,
        falling back to `string()` for one that crosses the window's end (or the file's)."""
        items: list[str] = []
        unpack_length = struct.Struct(self.byte_order + "Q").unpack_from
        done = 0
        while done < count:
            if not 0 <= self.pos - self._base <= len(self._buf) - 8:
                self._handle.seek(self.pos)
                self._buf = self._handle.read(_CHUNK)
                self._base = self.pos
            buf = self._buf
            end = len(buf)
            offset = self.pos - self._base
            while done < count and offset + 8 <= end:
                (length,) = unpack_length(buf, offset)
                if offset + 8 + length > end:
                    break
                if keep:
                    start = offset + 8
                    stop = start + length if length <= limit else start + limit
                    try:
                        items.append(buf[start:stop].decode("utf-8"))
                    except UnicodeDecodeError:
                        where = self._base + start
                        items.append(
                            self.decode(buf[start:stop], where, f"item {done} of {what}", length > limit)
                        )
                offset += 8 + length
                done += 1
            self.pos = self._base + offset
            if done < count:  # the next string crosses the window: the careful path
                text, _ = self.string(f"item {done} of {what}", limit)
                if keep:
                    items.append(text)
                done += 1
        return items

    def scalar(self, value_type: GGUFValueType, what: str) -> int | float | bool:
        fmt = self.byte_order + _SCALAR_FORMATS[value_type]
        value: int | float | bool = struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]
        return value

    def u32(self, what: str) -> int:
        return int(self.scalar(GGUFValueType.UINT32, what))

    def u64(self, what: str) -> int:
        return int(self.scalar(GGUFValueType.UINT64, what))

    def string(self, what: str, limit: int) -> tuple[str, bool]:
        """A length-prefixed string; keeps at most `limit` bytes, returns (text, was_cut)."""
        length = self.u64(f"length of {what}")
        if length > self.remaining:
            raise self.short(length, f"{what} ({length:,} bytes)")
        kept = min(length, limit)
        offset = self.pos
        data = self.take(kept, what)
        self.skip(length - kept, what)
        return self.decode(data, offset, what, kept < length), kept < length


_SECTION_NAMES = {"header": "header", "kv": "key/value section", "tensors": "tensor info section"}


def _stop(code: str, message: str, hint: str, **where: object) -> _Stop:
    return _Stop(ReadProblem(code, message, hint, **where))  # type: ignore[arg-type]


def _value_type(raw: int, what: str, offset: int) -> GGUFValueType:
    try:
        return GGUFValueType(raw)
    except ValueError:
        raise _stop(
            "bad-kv",
            f"{what} has value type {raw}, which is not a GGUF type (0-12)",
            "the key/value section is corrupt: rewrite the file with a GGUF writer",
            offset=offset,
        ) from None


class _Parser:
    def __init__(self, source: _Source, header: GGUFHeader, limits: ReadLimits) -> None:
        self.src = source
        self.header = header
        self.limits = limits
        self.strings_walked = 0

    def run(self) -> None:
        self._read_fixed_header()
        self.src.section = "kv"
        self._read_kvs()
        self.header.kv_complete = True
        self.src.section = "tensors"
        self._read_tensor_infos()
        self.header.alignment = self._alignment()
        padding = -self.src.pos % self.header.alignment
        self.header.data_offset = self.src.pos + padding

    def _read_fixed_header(self) -> None:
        src, header = self.src, self.header
        if header.file_size == 0:
            raise _stop(
                "empty-file",
                "the file is empty (0 bytes)",
                "the download or copy failed: fetch the file again",
            )
        magic = src.take(4, "the magic 'GGUF'")
        if magic != GGUF_MAGIC:
            raise _stop(
                "bad-magic",
                f"bad magic: the file starts with {magic!r}, expected b'GGUF'",
                "this is not a GGUF file (or it is corrupt); convert the model to GGUF with llama.cpp's "
                "convert_hf_to_gguf.py",
                offset=0,
            )
        raw_version = src.take(4, "the version")
        version = struct.unpack("<I", raw_version)[0]
        if version not in SUPPORTED_VERSIONS and struct.unpack(">I", raw_version)[0] in SUPPORTED_VERSIONS:
            src.byte_order = header.byte_order = ">"
            version = struct.unpack(">I", raw_version)[0]
            header.problems.append(
                ReadProblem(
                    "bad-version",
                    f"the file is big-endian GGUF version {version}; llama.cpp reads little-endian only",
                    "convert it with `gguf-convert-endian FILE little`",
                    offset=4,
                )
            )
        header.version = version
        if version not in SUPPORTED_VERSIONS:
            detail = "GGUFv1 is no longer supported" if version == 1 else "only versions 2 and 3 exist"
            raise _stop(
                "bad-version",
                f"GGUF version is {version}, expected 2 or 3 ({detail})",
                "reconvert the model with a current llama.cpp (convert_hf_to_gguf.py writes version 3)",
                offset=4,
            )
        header.tensor_count = src.u64("the tensor count")
        header.kv_count = src.u64("the key/value count")
        # A count that cannot fit in the file AND is beyond any real model is a corrupt header; a plausible
        # count that does not fit is a file cut short, which the section readers report where it happens.
        self._check_count("key/value pairs", header.kv_count, _MIN_KV_BYTES, self.limits.max_kvs, 16)
        self._check_count("tensors", header.tensor_count, _MIN_TENSOR_INFO_BYTES, self.limits.max_tensors, 8)

    def _check_count(self, what: str, count: int, min_bytes: int, limit: int, offset: int) -> None:
        """Stop on a header count that cannot be real.

        A count that cannot fit in the file AND is beyond any real model is a corrupt header; a plausible
        count that does not fit is a file cut short, which the section readers report where it happens.
        """
        fits = self.src.remaining // min_bytes
        if count > max(fits, limit):
            raise _stop(
                "bad-counts",
                f"the header declares {count:,} {what}, but the {self.src.remaining:,} bytes after the "
                f"header can hold at most {fits:,}",
                "the header is corrupt: fetch or convert the file again",
                offset=offset,
            )
        if count > limit:
            raise _stop(
                "value-too-large",
                f"the header declares {count:,} {what}; the checker reads at most {limit:,}",
                f"no real model has this many {what}: the file is probably corrupt",
                offset=offset,
            )

    def _read_kvs(self) -> None:
        assert self.header.kv_count is not None
        for index in range(self.header.kv_count):
            offset = self.src.pos
            key, _ = self.src.string(f"the key of key/value pair #{index}", 1 << 16)
            raw_type = self.src.u32(f"the value type of key '{key}'")
            value_type = _value_type(raw_type, f"key '{key}'", offset)
            value, truncated = self._read_value(key, value_type)
            if key in self.header.kvs:
                self.header.problems.append(
                    ReadProblem(
                        "duplicate-key",
                        f"key '{key}' appears twice (llama.cpp refuses the file: duplicate key)",
                        "rewrite the file with each key once (gguf-new-metadata --remove-metadata)",
                        offset=offset,
                        key=key,
                    )
                )
                continue
            self.header.kvs[key] = KVEntry(key, value_type, value, offset, truncated)

    def _read_value(self, key: str, value_type: GGUFValueType) -> tuple[object, bool]:
        src = self.src
        if value_type == GGUFValueType.STRING:
            return src.string(f"the value of key '{key}'", self.limits.max_string_bytes)
        if value_type != GGUFValueType.ARRAY:
            return src.scalar(value_type, f"the value of key '{key}'"), False
        item_type = _value_type(src.u32(f"the item type of array '{key}'"), f"array '{key}'", src.pos - 4)
        length = src.u64(f"the length of array '{key}'")
        if item_type == GGUFValueType.ARRAY:
            raise _stop(
                "bad-kv",
                f"key '{key}' is an array of arrays, which GGUF does not allow",
                "the key/value section is corrupt: rewrite the file with a GGUF writer",
                key=key,
            )
        if item_type == GGUFValueType.STRING:
            return self._read_string_array(key, length), False
        fmt = _SCALAR_FORMATS[item_type]
        item_size = struct.calcsize(fmt)
        if length * item_size > src.remaining:
            raise src.short(length * item_size, f"array '{key}' ({length:,} x {TYPE_NAMES[item_type]})")
        if length * item_size > self.limits.max_array_bytes:
            src.skip(length * item_size, f"array '{key}'")
            return ArrayValue(item_type, length, None), False
        data = src.take(length * item_size, f"array '{key}'")
        return ArrayValue(item_type, length, _numbers(data, fmt, self.src.byte_order)), False

    def _read_string_array(self, key: str, length: int) -> ArrayValue:
        src = self.src
        if length * 8 > src.remaining:
            raise src.short(length * 8, f"array '{key}' ({length:,} strings)")
        self.strings_walked += length
        if self.strings_walked > self.limits.max_total_strings:
            raise _stop(
                "value-too-large",
                f"array '{key}' holds {length:,} strings; the checker reads at most "
                f"{self.limits.max_total_strings:,} strings per file",
                "no real model has a vocabulary this big: the file is probably corrupt",
                key=key,
            )
        keep = length <= self.limits.max_array_strings
        items = src.strings(length, f"array '{key}'", self.limits.max_string_bytes, keep)
        return ArrayValue(GGUFValueType.STRING, length, items if keep else None)

    def _read_tensor_infos(self) -> None:
        assert self.header.tensor_count is not None
        src = self.src
        for index in range(self.header.tensor_count):
            info_offset = src.pos
            name, cut = src.string(f"the name of tensor #{index}", 256)
            if cut or len(name.encode("utf-8", errors="surrogateescape")) > MAX_TENSOR_NAME_BYTES:
                raise _stop(
                    "bad-tensor-info",
                    f"tensor #{index} has a name over {MAX_TENSOR_NAME_BYTES} bytes ({name[:80]!r}...)",
                    "llama.cpp limits tensor names to 63 bytes; the tensor info section is corrupt",
                    offset=info_offset,
                    tensor=name[:80],
                )
            n_dims = src.u32(f"n_dims of tensor '{name}'")
            if n_dims > MAX_TENSOR_DIMS:
                raise _stop(
                    "bad-tensor-info",
                    f"tensor '{name}' has {n_dims:,} dimensions, at most {MAX_TENSOR_DIMS} are allowed",
                    "the tensor info section is corrupt: rewrite the file with a GGUF writer",
                    offset=info_offset,
                    tensor=name,
                )
            ne = tuple(src.u64(f"dimension {d} of tensor '{name}'") for d in range(n_dims))
            if any(dim >= 1 << 63 for dim in ne):
                raise _stop(
                    "bad-tensor-info",
                    f"tensor '{name}' has a negative dimension (ne = {list(ne)} read as signed 64-bit)",
                    "the tensor info section is corrupt: rewrite the file with a GGUF writer",
                    offset=info_offset,
                    tensor=name,
                )
            ggml_type = src.u32(f"the type of tensor '{name}'")
            offset = src.u64(f"the data offset of tensor '{name}'")
            self.header.tensors.append(TensorInfo(name, ne, ggml_type, offset, info_offset))

    def _alignment(self) -> int:
        entry = self.header.kvs.get("general.alignment")
        if entry is None:
            return GGUF_DEFAULT_ALIGNMENT
        value = entry.value
        if entry.type != GGUFValueType.UINT32:
            self.header.problems.append(
                ReadProblem(
                    "bad-alignment",
                    f"general.alignment has type {entry.type_name}, expected u32",
                    "store general.alignment as u32 (GGUFWriter.add_custom_alignment does)",
                    key="general.alignment",
                )
            )
            return GGUF_DEFAULT_ALIGNMENT
        assert isinstance(value, int)
        if value <= 0 or value & (value - 1):
            self.header.problems.append(
                ReadProblem(
                    "bad-alignment",
                    f"general.alignment is {value}, expected a power of two (default 32)",
                    "set general.alignment to a power of two such as 32, or remove it",
                    key="general.alignment",
                )
            )
            return GGUF_DEFAULT_ALIGNMENT
        return value


def _numbers(data: bytes, fmt: str, byte_order: str) -> array.array:
    """The numbers packed in `data` (struct format `fmt`, one item type, `byte_order` '<' or '>')."""
    if fmt == "?":
        fmt = "B"
    items = array.array(fmt)
    if items.itemsize != struct.calcsize(fmt):  # a platform where array's C types differ from struct's
        return array.array(fmt, struct.unpack(f"{byte_order}{len(data) // struct.calcsize(fmt)}{fmt}", data))
    items.frombytes(data)
    if (byte_order == ">") != (sys.byteorder == "big"):
        items.byteswap()
    return items


def open_regular_file(path: str | os.PathLike[str]) -> tuple[BinaryIO, int]:
    """Open `path` for reading; raises `GGUFReadError` if it is missing, not a regular file, or unreadable."""
    where = Path(path)
    try:
        info = os.stat(where)
    except FileNotFoundError:
        raise GGUFReadError(f"no such file: {where}", "check the path") from None
    except OSError as error:
        raise GGUFReadError(
            f"cannot read {where}: {error.strerror}", "check the path and its permissions"
        ) from None
    if stat.S_ISDIR(info.st_mode):
        raise GGUFReadError(f"{where} is a directory, not a GGUF file", "give the path of the .gguf file")
    if not stat.S_ISREG(info.st_mode):
        raise GGUFReadError(f"{where} is not a regular file", "give the path of a .gguf file on disk")
    try:
        handle = open(where, "rb")  # noqa: SIM115 - returned to the caller, who closes it
    except OSError as error:
        raise GGUFReadError(
            f"cannot open {where}: {error.strerror}", "check the file's permissions"
        ) from None
    return handle, info.st_size


def read_gguf_header(path: str | os.PathLike[str], limits: ReadLimits = DEFAULT_LIMITS) -> GGUFHeader:
    """Read the metadata of the GGUF file at `path`; structural problems end up in `.problems`."""
    handle, size = open_regular_file(path)
    with handle:
        header = GGUFHeader(path=Path(path), file_size=size)
        parser = _Parser(_Source(handle, size), header, limits)
        try:
            parser.run()
        except _Stop as stop:
            header.problems.append(stop.problem)
        except OSError as error:
            raise GGUFReadError(
                f"reading {path} failed: {error.strerror or error}", "check the disk and the file"
            ) from None
        header.problems.extend(_bad_utf8_problems(parser.src))
    return header


def _bad_utf8_problems(src: _Source) -> list[ReadProblem]:
    hint = "GGUF strings must be UTF-8: rewrite the string (a converter bug, or the file is corrupt)"
    problems = [
        ReadProblem(
            "invalid-utf8",
            f"{what} is not valid UTF-8: first bad byte at file offset {offset:,} (0x{offset:x})",
            hint,
            offset=offset,
        )
        for offset, what in src.bad_utf8
    ]
    if src.bad_utf8_count > len(src.bad_utf8):
        more = src.bad_utf8_count - len(src.bad_utf8)
        problems.append(
            ReadProblem("invalid-utf8", f"... and {more:,} more strings that are not UTF-8", hint)
        )
    return problems
