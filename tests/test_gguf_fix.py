"""`harness gguf fix`: each repair on a file broken that way, ending in a file that passes the checker,
loads in llama.cpp and answers through the embedded engine (official ollama client)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import ollama
import pytest
from gguf import GGUFValueType

from harness.cli import main
from harness.engine import EmbeddedEngine
from harness.errors import BuildError
from harness.gguf import fix_write
from harness.gguf.broken import write_broken
from harness.gguf.build import write_gguf
from harness.gguf.check import check_gguf
from harness.gguf.fix import FixOptions, fix_gguf, plan_fix, write_fix
from harness.gguf.fix_values import kv_from_entry
from harness.gguf.llamacpp import generate, trial_load
from harness.gguf.plan import KV, GGUFPlan, TensorPlan, plan_gguf
from harness.gguf.reader import read_gguf_header
from harness.gguf.spec import load_profile
from harness.testing.helpers import edited, story_breakage

ORACLE_PROMPT = "hello the"
ORACLE_REPLY = " is two one."
GREEDY = {"temperature": 0, "top_k": 1, "seed": 1}
HF_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def same_model(a: Path, b: Path) -> bool:
    """Same keys (values and types, any order), same tensor infos, same tensor data."""
    header_a, header_b = read_gguf_header(a), read_gguf_header(b)
    kvs_a = {k: kv_from_entry(e) for k, e in header_a.kvs.items()}
    kvs_b = {k: kv_from_entry(e) for k, e in header_b.kvs.items()}
    assert header_a.data_offset is not None and header_b.data_offset is not None
    data_a = a.read_bytes()[header_a.data_offset :]
    data_b = b.read_bytes()[header_b.data_offset :]
    infos_a = [(t.name, t.ne, t.ggml_type, t.offset) for t in header_a.tensors]
    infos_b = [(t.name, t.ne, t.ggml_type, t.offset) for t in header_b.tensors]
    return kvs_a == kvs_b and infos_a == infos_b and data_a == data_b


def hf_named(plan: GGUFPlan) -> None:
    """Tensors renamed to their Hugging Face names (model.layers.N.self_attn.q_proj.weight...)."""

    def hf(name: str) -> str:
        parts = name.split(".")
        if parts[0] == "blk":
            return f"model.layers.{parts[1]}.{HF_NAMES[parts[2]]}.{parts[3]}"
        return f"{HF_NAMES[parts[0]]}.{parts[1]}"

    plan.tensors = [TensorPlan(hf(t.name), t.shape, t.ggml_type, t.produce, t.chunks) for t in plan.tensors]


def drop_keys(*suffixes: str) -> object:
    def edit(plan: GGUFPlan) -> None:
        for suffix in suffixes:
            del plan.kvs[f"llama.{suffix}"]

    return edit


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fix")


@pytest.fixture(scope="module")
def oracle(folder: Path) -> Path:
    return write_gguf(plan_gguf(load_profile("oracle")), folder / "oracle.gguf").path


@pytest.fixture(scope="module")
def tiny(folder: Path) -> Path:
    return write_gguf(plan_gguf(load_profile("tiny")), folder / "tiny.gguf").path


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedEngine]:
    models = tmp_path_factory.mktemp("models")
    with EmbeddedEngine(models, env={"HARNESS_NUM_THREAD": "1"}, log_path=models / "engine.log") as running:
        yield running


# ------------------------------------------------------------------------------------ the story, end to end


def test_story_file_is_repaired_and_answers_through_the_engine(
    folder: Path, oracle: Path, engine: EmbeddedEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = edited("oracle", folder / "story.gguf", story_breakage)
    before = sha256(broken)
    assert check_gguf(broken).codes()[:2] == ["unknown-architecture", "missing-tokenizer"]
    assert not trial_load(broken).ok

    args = ["gguf", "fix", str(broken), "--arch", "llama", "--set", "llama.context_length=512"]
    args += ["--tokenizer-from", str(oracle)]
    assert main([*args, "--plan"]) == 0
    plan_text = capsys.readouterr().out
    for expected in (
        "fix: general.architecture 'so8t' -> 'llama', moved 8 key(s) so8t.* -> llama.*",
        "missing-key: required key llama.embedding_length is missing",
        "fix: set llama.embedding_length = 64 (u32) (derived from token_embd.weight ne[0])",
        "fix: set llama.context_length = 512 (u32) (--set)",
        "fix: retyped llama.rope.freq_base f64 -> f32 (value 10000.0)",
        "fix: copied the tokenizer (10 tokenizer.* keys, 372 tokens, chat template)",
        "the output would pass the checker",
    ):
        assert expected in plan_text
    assert not (folder / "story-fixed.gguf").exists()

    fixed = folder / "story-fixed.gguf"
    assert main([*args, "-o", str(fixed)]) == 0
    assert "story-fixed.gguf: OK: 0 error(s)" in capsys.readouterr().out
    assert sha256(broken) == before  # the input is never touched
    assert check_gguf(fixed).ok
    header = read_gguf_header(fixed)
    assert header.kvs["llama.rope.freq_base"].type == GGUFValueType.FLOAT32
    assert header.value("llama.context_length") == 512
    assert generate(fixed, ORACLE_PROMPT, n_predict=8).text == ORACLE_REPLY

    client = ollama.Client(host=engine.url, timeout=60)
    client.create(model="story-fixed", files={"model.gguf": client.create_blob(fixed)})
    reply = client.generate(model="story-fixed", prompt=ORACLE_PROMPT, raw=True, options=GREEDY)
    assert reply.response == ORACLE_REPLY


# ------------------------------------------------------------------------------------------- each repair


def test_config_json_fills_missing_hyperparameters(folder: Path, tiny: Path) -> None:
    missing = ("context_length", "embedding_length", "attention.head_count", "feed_forward_length")
    broken = edited(
        "tiny", folder / "no-hparams.gguf", drop_keys(*missing, "attention.layer_norm_rms_epsilon")
    )
    config = folder / "config.json"
    config.write_text(
        json.dumps(
            {
                "max_position_embeddings": 512,
                "hidden_size": 64,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "intermediate_size": 128,
                "rms_norm_eps": 1e-5,
                "rope_theta": 500000.0,  # differs from the file's: kept, with a note
                "num_hidden_layers": 2,
            }
        )
    )
    plan, result = fix_gguf(broken, folder / "from-config.gguf", FixOptions(config=config, derive=False))
    assert result.report.ok
    whys = {change.what: change.why for change in plan.changes}
    assert whys["set llama.context_length = 512 (u32)"] == "config.json max_position_embeddings"
    assert whys["set llama.attention.layer_norm_rms_epsilon = 1e-05 (f32)"] == "config.json rms_norm_eps"
    assert any("kept llama.rope.freq_base = 10000.0" in note for note in plan.notes)
    assert same_model(result.path, tiny)  # the original keys, values and types (new keys come last)
    assert trial_load(result.path).ok


def test_hyperparameters_are_derived_from_tensor_shapes(folder: Path) -> None:
    missing = ("embedding_length", "block_count", "attention.head_count", "attention.head_count_kv")
    broken = edited("tiny", folder / "no-shapes.gguf", drop_keys(*missing, "feed_forward_length"))
    plan = plan_fix(broken, FixOptions(set_values=("llama.context_length=512",)))
    derived = {c.keys[0]: c for c in plan.changes if c.why.startswith("derived from")}
    assert set(derived) == {f"llama.{s}" for s in (*missing, "feed_forward_length")}
    assert derived["llama.block_count"].what == "set llama.block_count = 2 (u32)"
    assert derived["llama.attention.head_count"].why == (
        "derived from blk.0.attn_q.weight ne[1] / head size 16 (llama.rope.dimension_count)"
    )
    assert derived["llama.attention.head_count_kv"].what == "set llama.attention.head_count_kv = 2 (u32)"
    assert plan.ok
    result = write_fix(plan, folder / "derived.gguf")
    assert generate(result.path, "the", n_predict=4).n_tokens == 4


@pytest.mark.parametrize("kind", ["context-length-i32", "rope-freq-base-f64"])
def test_wrongly_typed_keys_are_retyped(folder: Path, tiny: Path, kind: str) -> None:
    broken = write_broken(kind, load_profile("tiny"), folder / f"{kind}.gguf")
    assert main(["gguf", "fix", str(broken), "-o", str(folder / f"{kind}-fixed.gguf")]) == 0
    assert sha256(folder / f"{kind}-fixed.gguf") == sha256(tiny)


def test_set_takes_the_type_from_the_architecture_table(folder: Path, tiny: Path) -> None:
    plan = plan_fix(tiny, FixOptions(set_values=("llama.rope.freq_base=500000", "general.name=renamed")))
    assert plan.kvs["llama.rope.freq_base"] == KV(500000.0, GGUFValueType.FLOAT32)
    assert plan.kvs["general.name"] == KV("renamed", GGUFValueType.STRING)
    custom = plan_fix(tiny, FixOptions(set_values=("my.count:u16=7",)))
    assert custom.kvs["my.count"] == KV(7, GGUFValueType.UINT16)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("my.count=7", "its type is unknown"),
        ("llama.context_length=-1", "outside the range of u32"),
        ("llama.context_length", "expected KEY[:TYPE]=VALUE"),
    ],
)
def test_bad_set_is_exit_2(
    tiny: Path, folder: Path, option: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["gguf", "fix", str(tiny), "--set", option, "-o", str(folder / "never.gguf")]) == 2
    assert message in capsys.readouterr().err
    assert not (folder / "never.gguf").exists()


def test_hugging_face_tensor_names_are_mapped(folder: Path, tiny: Path) -> None:
    broken = edited("tiny", folder / "hf-names.gguf", hf_named)
    assert "missing-tensor" in check_gguf(broken).codes()
    plan, result = fix_gguf(broken, folder / "hf-fixed.gguf", FixOptions())
    assert plan.changes[0].what.startswith("renamed 21 Hugging Face tensor name(s) to GGUF names")
    assert sha256(result.path) == sha256(tiny)


def test_rename_tensor_by_mapping(folder: Path, tiny: Path) -> None:
    def rename(plan: GGUFPlan) -> None:
        plan.tensors = [
            dataclasses.replace(t, name="wq0") if t.name == "blk.0.attn_q.weight" else t for t in plan.tensors
        ]

    broken = edited("tiny", folder / "renamed.gguf", rename)
    out = folder / "renamed-fixed.gguf"
    assert (
        main(["gguf", "fix", str(broken), "--rename-tensor", "wq0=blk.0.attn_q.weight", "-o", str(out)]) == 0
    )
    assert sha256(out) == sha256(tiny)


def test_missing_chat_template_is_copied_from_the_donor(folder: Path, oracle: Path) -> None:
    def no_template(plan: GGUFPlan) -> None:
        del plan.kvs["tokenizer.chat_template"]

    broken = edited("oracle", folder / "no-template.gguf", no_template)
    plan = plan_fix(broken, FixOptions(tokenizer_from=oracle))
    assert [c.what for c in plan.changes] == ["copied the chat template"]
    assert plan.kvs["tokenizer.chat_template"] == KV(
        read_gguf_header(oracle).value("tokenizer.chat_template"), GGUFValueType.STRING
    )


def test_a_donor_with_another_vocabulary_is_refused(folder: Path, tiny: Path) -> None:
    broken = write_broken("missing-tokenizer", load_profile("oracle"), folder / "oracle-no-tok.gguf")
    plan = plan_fix(broken, FixOptions(tokenizer_from=tiny))
    assert not plan.ok and not plan.changes
    assert any("not the same vocabulary" in note for note in plan.notes)
    assert "missing-tokenizer" in [f.code for f in plan.unfixed()]


# ------------------------------------------------------------------------------- what cannot be fixed


def test_missing_weights_are_reported_not_invented(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = write_broken("missing-tensor", load_profile("tiny"), folder / "missing-tensor.gguf")
    out = folder / "missing-tensor-fixed.gguf"
    assert main(["gguf", "fix", str(broken), "--plan"]) == 1
    text = capsys.readouterr().out
    assert "cannot fix:" in text and "missing weights cannot be invented" in text
    assert main(["gguf", "fix", str(broken), "-o", str(out)]) == 1
    assert not out.exists() and not list(folder.glob("*.partial"))
    assert main(["gguf", "fix", str(broken), "-o", str(out), "--force"]) == 1
    assert check_gguf(out).codes() == ["missing-tensor"]


def test_cut_short_file_cannot_be_fixed(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = write_broken("truncated-data", load_profile("tiny"), folder / "cut.gguf")
    assert main(["gguf", "fix", str(broken), "-o", str(folder / "cut-fixed.gguf"), "--force"]) == 1
    assert "missing weights cannot be invented" in capsys.readouterr().out
    assert not (folder / "cut-fixed.gguf").exists()


@pytest.mark.parametrize("kind", ["bad-magic", "kv-truncated", "empty-file"])
def test_unusable_input_is_exit_2(folder: Path, kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    broken = write_broken(kind, load_profile("tiny"), folder / f"{kind}.gguf")
    assert main(["gguf", "fix", str(broken), "-o", str(folder / f"{kind}-fixed.gguf")]) == 2
    assert "cannot be repaired" in capsys.readouterr().err
    assert not (folder / f"{kind}-fixed.gguf").exists()


# ------------------------------------------------------------------------------------- writing safely


def test_in_place_replaces_only_with_a_passing_copy(folder: Path, tiny: Path) -> None:
    fixable = write_broken("rope-freq-base-f64", load_profile("tiny"), folder / "inplace.gguf")
    assert main(["gguf", "fix", str(fixable), "--in-place"]) == 0
    assert sha256(fixable) == sha256(tiny)

    def no_tensor_and_f64_rope(plan: GGUFPlan) -> None:
        plan.tensors = [t for t in plan.tensors if t.name != "blk.1.ffn_down.weight"]
        plan.kvs["llama.rope.freq_base"] = KV(10000.0, GGUFValueType.FLOAT64)

    unfixable = edited("tiny", folder / "inplace-bad.gguf", no_tensor_and_f64_rope)
    assert plan_fix(unfixable, FixOptions()).changes  # something to change, but not everything
    before = sha256(unfixable)
    assert main(["gguf", "fix", str(unfixable), "--in-place", "--force"]) == 1
    assert sha256(unfixable) == before
    assert main(["gguf", "fix", str(tiny), "-o", str(tiny)]) == 2  # output == input without --in-place


def test_input_shrinking_mid_copy_leaves_no_output(folder: Path) -> None:
    source = write_broken("rope-freq-base-f64", load_profile("tiny"), folder / "shrinks.gguf")
    plan = plan_fix(source, FixOptions())
    os.truncate(source, source.stat().st_size - 100)
    with pytest.raises(BuildError, match="the input ended inside tensor"):
        write_fix(plan, folder / "shrinks-fixed.gguf")
    assert not (folder / "shrinks-fixed.gguf").exists() and not list(folder.glob(".shrinks*"))


def test_tensor_data_is_streamed_in_bounded_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = load_profile("so8t-lite").replace(tensor_type="f32")
    source = write_gguf(plan_gguf(spec), tmp_path / "lite.gguf").path
    broken = write_broken("rope-freq-base-f64", spec, tmp_path / "lite-broken.gguf")
    assert source.stat().st_size > 20 << 20
    monkeypatch.setattr(fix_write, "COPY_CHUNK_BYTES", 1 << 20)
    plan = plan_fix(broken, FixOptions())
    tracemalloc.start()
    try:
        write_fix(plan, tmp_path / "lite-fixed.gguf")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"peak {peak:,} bytes while copying a {source.stat().st_size:,}-byte file"
    assert sha256(tmp_path / "lite-fixed.gguf") == sha256(source)
