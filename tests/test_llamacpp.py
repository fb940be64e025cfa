"""llamacpp: real llama.cpp (xllamacpp) in a child process, on real good and broken GGUF files."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest
from gguf import GGUFValueType

from harness.errors import BuildError
from harness.gguf import llamacpp
from harness.gguf.build import write_gguf
from harness.gguf.plan import KV, GGUFPlan, plan_gguf
from harness.gguf.spec import load_profile

pytestmark = pytest.mark.timeout(120)


def _tiny_plan() -> GGUFPlan:
    return plan_gguf(load_profile("tiny").replace(n_layer=1))


@pytest.fixture(scope="module")
def good_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_gguf(_tiny_plan(), tmp_path_factory.mktemp("good") / "tiny.gguf").path


@pytest.mark.parametrize(
    ("stderr", "cause"),
    [
        (
            "0.00.1 E llama_model_load: error loading model: error loading model hyperparameters: "
            "key not found in model: llama.context_length\n"
            "E llama_model_load_from_file_impl: failed to load model\n",
            "key not found in model: llama.context_length",
        ),
        (
            "E gguf_init_from_reader: failed to read key-value pairs\n"
            "E llama_model_load: error loading model: llama_model_loader: failed to load model from x.gguf\n",
            "failed to read key-value pairs",
        ),
        (
            "E llama_model_load: error loading model: "
            "check_tensor_dims: tensor 'blk.1.ffn_down.weight' not found\n",
            "check_tensor_dims: tensor 'blk.1.ffn_down.weight' not found",
        ),
        (
            "/src/llama-vocab.cpp:2155: GGML_ASSERT(id_to_token.size() == token_to_id.size()) failed\n",
            "GGML_ASSERT(id_to_token.size() == token_to_id.size()) failed",
        ),
        ("all fine\n", None),
    ],
)
def test_extract_cause(stderr: str, cause: str | None) -> None:
    assert llamacpp.extract_cause(stderr) == cause


def test_good_model_loads(good_model: Path) -> None:
    result = llamacpp.trial_load(good_model, timeout=60)
    assert result.ok and result.cause is None and result.returncode == 0


def test_missing_key_gives_llama_cpp_cause(tmp_path: Path) -> None:
    plan = _tiny_plan()
    del plan.kvs["llama.context_length"]
    path = write_gguf(plan, tmp_path / "no-ctx.gguf").path
    result = llamacpp.trial_load(path, timeout=60)
    assert not result.ok
    assert result.cause == "key not found in model: llama.context_length"
    assert "error loading model" in result.stderr


def test_wrong_key_type_gives_llama_cpp_cause(tmp_path: Path) -> None:
    plan = _tiny_plan()
    plan.kvs["llama.context_length"] = KV(512, GGUFValueType.INT32)
    result = llamacpp.trial_load(write_gguf(plan, tmp_path / "i32.gguf").path, timeout=60)
    assert result.cause == "key llama.context_length has wrong type i32 but expected type u32"


def test_abort_is_survived_and_reported(tmp_path: Path) -> None:
    plan = _tiny_plan()
    plan.kvs["llama.block_count"] = KV(0, GGUFValueType.UINT32)
    result = llamacpp.trial_load(write_gguf(plan, tmp_path / "zero-blocks.gguf").path, timeout=60)
    assert not result.ok
    assert result.returncode is not None and result.returncode < 0  # SIGABRT
    assert result.cause is not None and "GGML_ASSERT" in result.cause


def test_garbage_and_missing_files(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"xxxx" * 1024)
    result = llamacpp.trial_load(garbage, timeout=60)
    assert result.cause == "invalid magic characters: 'xxxx', expected 'GGUF'"
    missing = llamacpp.trial_load(tmp_path / "missing.gguf", timeout=60)
    assert not missing.ok and missing.cause is not None and "missing.gguf" in missing.cause


def test_timeout_kills_the_child(good_model: Path) -> None:
    result = llamacpp.trial_load(good_model, timeout=0.05)
    assert not result.ok and result.cause is not None and "timed out" in result.cause
    leftovers = [
        p
        for p in psutil.process_iter(["cmdline"])
        if "harness.gguf.llamacpp" in " ".join(p.info["cmdline"] or [])
        and str(good_model) in " ".join(p.info["cmdline"] or [])
    ]
    assert leftovers == []


def test_generate_raises_with_the_cause(tmp_path: Path) -> None:
    plan = _tiny_plan()
    del plan.kvs["llama.embedding_length"]
    path = write_gguf(plan, tmp_path / "no-embd.gguf").path
    with pytest.raises(BuildError, match=r"key not found in model: llama\.embedding_length"):
        llamacpp.generate(path, "hello", n_predict=4, timeout=60)


def test_generate_is_greedy_and_repeatable(good_model: Path) -> None:
    first = llamacpp.generate(good_model, "hello the", n_predict=6, timeout=60)
    second = llamacpp.generate(good_model, "hello the", n_predict=6, timeout=60)
    assert first == second and first.n_tokens == 6


def test_judge_files_survives_an_abort_in_the_middle_of_a_batch(good_model: Path, tmp_path: Path) -> None:
    plan = _tiny_plan()
    plan.kvs["llama.block_count"] = KV(0, GGUFValueType.UINT32)
    aborts = write_gguf(plan, tmp_path / "zero-blocks.gguf").path
    plan = _tiny_plan()
    del plan.kvs["llama.context_length"]
    refused = write_gguf(plan, tmp_path / "no-ctx.gguf").path
    paths = [good_model, aborts, good_model, refused, tmp_path / "missing.gguf", good_model]
    verdicts = llamacpp.judge_files(paths, batch=10, timeout=60)
    assert [v.path for v in verdicts] == [str(p) for p in paths]
    assert [v.ok for v in verdicts] == [True, False, True, False, False, True]
    assert verdicts[0].text == verdicts[2].text == verdicts[5].text  # greedy, whatever came before
    assert verdicts[1].cause is not None and "GGML_ASSERT" in verdicts[1].cause
    assert verdicts[3].cause == "key not found in model: llama.context_length"


def test_judge_files_kills_a_hung_child(good_model: Path) -> None:
    verdicts = llamacpp.judge_files([good_model, good_model], batch=2, timeout=0.01)
    assert verdicts[0].cause is not None and "timed out" in verdicts[0].cause
    assert len(verdicts) == 2
