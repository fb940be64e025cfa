"""harness.plugin.models: names, what a GGUF should show, and the --harness-gguf gate."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.gguf.broken import write_broken
from harness.gguf.build import build_cached
from harness.gguf.spec import load_profile
from harness.plugin.models import check_user_gguf, file_sha256, gguf_facts, unique_model_name


def test_unique_model_name_is_recognisable_and_valid() -> None:
    name = unique_model_name("Gemma3 270M_q4", "a5fd3b62230aa5ec", "20261125-231813-f53c86")
    assert name == "harness-gemma3-270m_q4-a5fd3b62-f53c86"


def test_gguf_facts_match_the_spec() -> None:
    spec = load_profile("oracle")
    built = build_cached(spec)
    facts = gguf_facts(built.path)
    assert facts == {"family": "llama", "context_length": spec.context_length, "quantization_level": "Q8_0"}
    assert file_sha256(built.path) == built.sha256 == hashlib.sha256(built.path.read_bytes()).hexdigest()


def test_check_user_gguf_lists_the_findings(tmp_path: Path) -> None:
    broken = write_broken("missing-context-length", load_profile("tiny"), tmp_path / "b.gguf")
    with pytest.raises(HarnessError) as caught:
        check_user_gguf(broken)
    assert "llama.context_length" in caught.value.message and "it would not load" in caught.value.message
    with pytest.raises(HarnessError, match="no such file"):
        check_user_gguf(tmp_path / "absent.gguf")
    assert check_user_gguf(build_cached(load_profile("tiny")).path).ok
