"""Tensor values for `check_gguf(deep=True)`: count NaN and Inf in a tensor's data, a chunk at a time."""

from __future__ import annotations

from typing import BinaryIO

import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize

from harness.gguf.reader import TensorInfo

CHUNK_ELEMENTS = 1 << 20


def count_non_finite(handle: BinaryIO, tensor: TensorInfo, data_offset: int) -> tuple[int, int] | None:
    """(NaN count, Inf count) in `tensor`'s data read from `handle`, or None when gguf-py has no
    dequantizer for its type."""
    qtype = GGMLQuantizationType(tensor.ggml_type)
    block, type_size = GGML_QUANT_SIZES[qtype]
    n_blocks = tensor.n_elements // block
    blocks_per_chunk = max(1, CHUNK_ELEMENTS // block)
    handle.seek(data_offset + tensor.offset)
    nan = inf = 0
    done = 0
    while done < n_blocks:
        count = min(blocks_per_chunk, n_blocks - done)
        raw = handle.read(count * type_size)
        if len(raw) < count * type_size:
            break
        data = np.frombuffer(raw, dtype=np.uint8).reshape(1, -1)
        try:
            with np.errstate(all="ignore"):  # NaN/Inf in the scales is what we are counting
                values = dequantize(data, qtype)
        except NotImplementedError:
            return None
        nan += int(np.count_nonzero(np.isnan(values)))
        inf += int(np.count_nonzero(np.isinf(values)))
        done += count
    return nan, inf
