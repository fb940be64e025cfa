"""Hugging Face tensor names -> GGUF tensor names, through gguf-py's own `TensorNameMap`.

`model.layers.3.self_attn.q_proj.weight` -> `blk.3.attn_q.weight`, `model.embed_tokens.weight` ->
`token_embd.weight`, `lm_head.weight` -> `output.weight`... for every architecture gguf-py knows. Names
that already are GGUF names map to themselves.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

import gguf
from gguf.constants import MODEL_ARCH, MODEL_ARCH_NAMES

_ARCH_BY_NAME: dict[str, MODEL_ARCH] = {name: arch for arch, name in MODEL_ARCH_NAMES.items()}
_SUFFIXES = (".weight", ".bias", ".scale")
_BLOCK_INDEX = re.compile(r"\.(\d+)\.")


@functools.lru_cache(maxsize=16)
def _name_map(architecture: str, n_blocks: int) -> gguf.TensorNameMap | None:
    arch = _ARCH_BY_NAME.get(architecture)
    return None if arch is None else gguf.get_tensor_name_map(arch, n_blocks)


def block_count_in_names(names: Iterable[str]) -> int:
    """One more than the highest block index found in any name (`layers.N.`, `blk.N.`), at least 1."""
    highest = -1
    for name in names:
        match = _BLOCK_INDEX.search(name)
        if match:
            highest = max(highest, int(match.group(1)))
    return highest + 1 if highest >= 0 else 1


def gguf_tensor_name(architecture: str, name: str, n_blocks: int) -> str | None:
    """The GGUF name of tensor `name` for `architecture`, or None if gguf-py does not know either."""
    name_map = _name_map(architecture, n_blocks)
    return None if name_map is None else name_map.get_name(name, try_suffixes=_SUFFIXES)


def hf_renames(architecture: str, names: Iterable[str]) -> dict[str, str]:
    """{old: new} for each tensor name that gguf-py maps to a different GGUF name for `architecture`."""
    listed = list(names)
    n_blocks = block_count_in_names(listed)
    renames: dict[str, str] = {}
    for name in listed:
        mapped = gguf_tensor_name(architecture, name, n_blocks)
        if mapped is not None and mapped != name:
            renames[name] = mapped
    return renames
