"""llama.cpp's own quantizers, called through ctypes in the xllamacpp wheel's shared library.

Ollama quantizes at create with ggml's `ggml_quantize_chunk` (ml/backend/ggml/quantization.go), and so does
this module: the same C function from the same library family, so the k-quants (Q4_K, Q5_K, Q6_K) and the
fallback types come out as Ollama writes them. The xllamacpp wheel exports the function; loading its
library with ctypes does not start llama.cpp (no model, no threads).
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from harness.errors import HarnessError

MIN_VALUES_PER_THREAD = 1 << 18  # below this a thread costs more than it saves
_init_lock = threading.Lock()
_initialized: set[int] = set()


@cache
def _library() -> ctypes.CDLL:
    """The xllamacpp extension's shared library, with the ggml functions used here typed."""
    spec = importlib.util.find_spec("xllamacpp")
    folders = list(spec.submodule_search_locations or []) if spec else []
    found = [path for folder in folders for path in sorted(Path(folder).glob("xllamacpp*.so"))]
    if not found:
        raise HarnessError(
            "llama.cpp's quantizers were not found: the xllamacpp package is not installed",
            "install the harness with its dependencies (scripts/setup-venv.sh), which include xllamacpp",
        )
    library = ctypes.CDLL(str(found[0]))
    library.ggml_quantize_init.argtypes = [ctypes.c_int]
    library.ggml_quantize_init.restype = None
    library.ggml_quantize_requires_imatrix.argtypes = [ctypes.c_int]
    library.ggml_quantize_requires_imatrix.restype = ctypes.c_bool
    library.ggml_quantize_chunk.argtypes = [
        ctypes.c_int,  # enum ggml_type
        ctypes.c_void_p,  # const float * src
        ctypes.c_void_p,  # void * dst
        ctypes.c_int64,  # start (an element index, a multiple of n_per_row)
        ctypes.c_int64,  # nrows
        ctypes.c_int64,  # n_per_row
        ctypes.c_void_p,  # const float * imatrix (none)
    ]
    library.ggml_quantize_chunk.restype = ctypes.c_size_t
    return library


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity where the OS has one)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity else os.cpu_count() or 1


def quantize_rows(
    values: np.ndarray, qtype: GGMLQuantizationType, *, threads: int | None = None
) -> np.ndarray:
    """`values` (rows x n_per_row, any float dtype) in `qtype`, as ggml_quantize_chunk writes them: a uint8
    array of rows x row bytes. F32, F16 and BF16 are conversions; the rest need rows of whole blocks.

    Rows are independent, so a large array is split into `threads` runs of rows (default: the CPUs this
    process may use) quantized at once; ctypes lets go of the GIL during each call. The bytes are the same.
    """
    rows = np.ascontiguousarray(values, dtype=np.float32)
    if rows.ndim != 2:
        raise ValueError(f"expected a 2D array of rows, got shape {rows.shape}")
    n_rows, n_per_row = rows.shape
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    if n_per_row % block_size:
        raise ValueError(f"rows of {n_per_row} values do not split into {qtype.name} blocks of {block_size}")
    library = _library()
    with _init_lock:
        if int(qtype) not in _initialized:
            if library.ggml_quantize_requires_imatrix(int(qtype)):
                raise ValueError(f"{qtype.name} needs an importance matrix")
            library.ggml_quantize_init(int(qtype))
            _initialized.add(int(qtype))
    out = np.empty((n_rows, n_per_row // block_size * type_size), dtype=np.uint8)
    workers = min(threads or usable_cpus(), max(1, rows.size // MIN_VALUES_PER_THREAD), n_rows)
    bounds = [n_rows * i // workers for i in range(workers + 1)]

    def run(first: int, last: int) -> None:
        part = out[first:last]
        written = library.ggml_quantize_chunk(
            int(qtype), rows[first:last].ctypes.data, part.ctypes.data, 0, last - first, n_per_row, None
        )
        if written != part.nbytes:
            raise RuntimeError(
                f"ggml_quantize_chunk wrote {written} bytes of {qtype.name}, not {part.nbytes}"
            )

    if workers == 1:
        run(0, n_rows)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(run, bounds[:-1], bounds[1:]))
    return out
