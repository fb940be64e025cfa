"""The GGUF builder: real files, read back with gguf-py and loaded by llama.cpp (in a child process)."""

from __future__ import annotations

import errno
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType

from harness.cli import main as cli_main
from harness.errors import BuildError, DiskFullError, SpecError
from harness.gguf import llamacpp
from harness.gguf.build import build_cached, build_gguf, write_gguf
from harness.gguf.plan import TensorPlan, plan_gguf, spec_vocab
from harness.gguf.spec import OracleSpec, list_profiles, load_profile
from harness.gguf.weights import oracle_margins

TYPES = ("f32", "f16", "q8_0", "q4_0")
FILE_TYPE = {"f32": 0, "f16": 1, "q4_0": 2, "q8_0": 7}


@pytest.fixture(scope="module")
def built_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("built")


def _field(reader: GGUFReader, key: str) -> tuple[object, GGUFValueType]:
    field = reader.get_field(key)
    assert field is not None, f"missing key {key}"
    return field.contents(), field.types[0]


@pytest.mark.parametrize("tensor_type", TYPES)
def test_keys_types_and_shapes(tmp_path: Path, tensor_type: str) -> None:
    spec = load_profile("tiny").replace(tensor_type=tensor_type)
    built = build_gguf(spec, tmp_path / "tiny.gguf")
    assert built.size == built.path.stat().st_size == plan_gguf(spec).file_size()
    reader = GGUFReader(built.path)
    u32, f32 = GGUFValueType.UINT32, GGUFValueType.FLOAT32
    expected = {
        "general.architecture": ("llama", GGUFValueType.STRING),
        "general.name": ("tiny", GGUFValueType.STRING),
        "general.file_type": (FILE_TYPE[tensor_type], u32),
        "llama.context_length": (512, u32),
        "llama.embedding_length": (64, u32),
        "llama.block_count": (2, u32),
        "llama.feed_forward_length": (128, u32),
        "llama.attention.head_count": (4, u32),
        "llama.attention.head_count_kv": (2, u32),
        "llama.rope.dimension_count": (16, u32),
        "llama.rope.freq_base": (10000.0, f32),
        "tokenizer.ggml.model": ("llama", GGUFValueType.STRING),
        "tokenizer.ggml.bos_token_id": (1, u32),
        "tokenizer.ggml.eos_token_id": (2, u32),
        "tokenizer.ggml.unknown_token_id": (0, u32),
        "tokenizer.ggml.add_bos_token": (True, GGUFValueType.BOOL),
        "tokenizer.ggml.add_eos_token": (False, GGUFValueType.BOOL),
    }
    for key, (value, vtype) in expected.items():
        assert _field(reader, key) == (value, vtype), key
    eps, eps_type = _field(reader, "llama.attention.layer_norm_rms_epsilon")
    assert eps_type == f32 and eps == pytest.approx(1e-5)
    template, _ = _field(reader, "tokenizer.chat_template")
    assert "messages" in str(template)
    tokens = reader.get_field("tokenizer.ggml.tokens")
    assert tokens is not None and tokens.types == [GGUFValueType.ARRAY, GGUFValueType.STRING]
    n_vocab = len(tokens.contents())
    shapes = {t.name: (tuple(int(d) for d in t.shape), t.tensor_type) for t in reader.tensors}
    weight = GGMLQuantizationType[tensor_type.upper()]
    assert shapes["token_embd.weight"] == ((64, n_vocab), weight)  # ggml ne order
    assert shapes["output.weight"] == ((64, n_vocab), weight)
    assert shapes["output_norm.weight"] == ((64,), GGMLQuantizationType.F32)
    for i in range(2):
        assert shapes[f"blk.{i}.attn_q.weight"] == ((64, 64), weight)
        assert shapes[f"blk.{i}.attn_k.weight"] == ((64, 32), weight)
        assert shapes[f"blk.{i}.attn_v.weight"] == ((64, 32), weight)
        assert shapes[f"blk.{i}.attn_output.weight"] == ((64, 64), weight)
        assert shapes[f"blk.{i}.ffn_gate.weight"] == ((64, 128), weight)
        assert shapes[f"blk.{i}.ffn_up.weight"] == ((64, 128), weight)
        assert shapes[f"blk.{i}.ffn_down.weight"] == ((128, 64), weight)
        assert shapes[f"blk.{i}.attn_norm.weight"] == ((64,), GGMLQuantizationType.F32)
        assert shapes[f"blk.{i}.ffn_norm.weight"] == ((64,), GGMLQuantizationType.F32)
    assert len(shapes) == 3 + 9 * 2


@pytest.mark.parametrize("profile", ["tiny", "so8t-lite"])
@pytest.mark.parametrize("tensor_type", TYPES)
def test_every_profile_and_type_loads_and_generates(built_dir: Path, profile: str, tensor_type: str) -> None:
    built = build_gguf(
        load_profile(profile).replace(tensor_type=tensor_type), built_dir / f"{profile}-{tensor_type}.gguf"
    )
    result = llamacpp.generate(built.path, "hello the", n_predict=8, timeout=60)
    assert result.n_tokens == 8  # random weights never pick EOS (its output row is zero)
    assert result.text.strip()


@pytest.mark.parametrize("tensor_type", TYPES)
def test_oracle_generates_exactly_the_continuation(built_dir: Path, tensor_type: str) -> None:
    spec = load_profile("oracle").replace(tensor_type=tensor_type)
    built = build_gguf(spec, built_dir / f"oracle-{tensor_type}.gguf")
    result = llamacpp.generate(built.path, "hello the", n_predict=16, timeout=60)
    assert result.text == " is two one."
    assert result.n_tokens < 16  # stopped at EOS, not at the limit


def test_vocab_tokenizes_like_llama_cpp(built_dir: Path) -> None:
    spec = load_profile("tiny")
    built = build_gguf(spec, built_dir / "tiny-tokenize.gguf")
    text = "hello the world, is two one. Hello xyzzy! 42 naïve"
    assert llamacpp.tokenize(built.path, text) == spec_vocab(spec).tokenize(text)


def test_same_spec_gives_identical_bytes(tmp_path: Path) -> None:
    spec = load_profile("tiny").replace(tensor_type="q4_0")
    first = build_gguf(spec, tmp_path / "a.gguf")
    second = build_gguf(spec, tmp_path / "b.gguf")
    assert first.sha256 == second.sha256 and first.spec_hash == second.spec_hash
    assert first.path.read_bytes() == second.path.read_bytes()
    other = build_gguf(spec.replace(seed=1), tmp_path / "c.gguf")
    assert other.sha256 != first.sha256


def test_chunked_production_matches_whole_tensors() -> None:
    plan = plan_gguf(load_profile("so8t-lite").replace(tensor_type="q8_0"))
    tensor = plan.tensor("output.weight")
    assert np.array_equal(np.concatenate(list(tensor.iter_data())), tensor.produce())
    assert tensor.produce().nbytes == tensor.nbytes


def test_build_cached_does_not_rebuild(tmp_path: Path) -> None:
    spec = load_profile("tiny")
    first = build_cached(spec, tmp_path)
    mtime = first.path.stat().st_mtime_ns
    second = build_cached(spec, tmp_path)
    assert second == first and second.path.stat().st_mtime_ns == mtime
    assert second.from_cache and not first.from_cache
    assert first.path.with_suffix(".json").is_file()
    # a damaged cached file (wrong size) is rebuilt
    with open(first.path, "r+b") as handle:
        handle.truncate(100)
    third = build_cached(spec, tmp_path)
    assert third.sha256 == first.sha256 and third.size == first.size


def test_build_cached_from_two_processes_at_once(tmp_path: Path) -> None:
    code = (
        "import sys; from harness.gguf.build import build_cached; from harness.gguf.spec import load_profile;"
        "b = build_cached(load_profile('so8t-lite').replace(tensor_type='f32'), sys.argv[1]); print(b.sha256)"
    )
    children = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [child.communicate(timeout=120)[0].strip() for child in children]
    assert all(child.returncode == 0 for child in children)
    assert outputs[0] == outputs[1] and len(outputs[0]) == 64
    assert len(list(tmp_path.glob("*.gguf"))) == 1
    assert not list(tmp_path.glob("*.partial"))


def test_missing_folder_is_a_build_error(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="does not exist"):
        build_gguf(load_profile("tiny"), tmp_path / "nope" / "x.gguf")
    assert list(tmp_path.iterdir()) == []


def _explode_after_first_block(plan_tensor: TensorPlan, error: BaseException) -> TensorPlan:
    def chunks() -> Iterator[np.ndarray]:
        yield from plan_tensor.iter_data()
        raise error

    return TensorPlan(plan_tensor.name, plan_tensor.shape, plan_tensor.ggml_type, plan_tensor.produce, chunks)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (KeyboardInterrupt(), KeyboardInterrupt),
        (OSError(errno.ENOSPC, "No space left on device"), DiskFullError),
    ],
)
def test_no_partial_file_after_a_failure(tmp_path: Path, error: BaseException, expected: type) -> None:
    # Injected at the data layer: the tensor stream fails after its first block.
    plan = plan_gguf(load_profile("tiny"))
    plan.tensors[5] = _explode_after_first_block(plan.tensors[5], error)
    with pytest.raises(expected):
        write_gguf(plan, tmp_path / "x.gguf")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB tmpfs (needs root; skipped where mounting is not allowed)."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)


def test_disk_full_is_refused_before_writing(small_filesystem: Path) -> None:
    with pytest.raises(DiskFullError) as caught:
        build_gguf(load_profile("so8t-lite"), small_filesystem / "lite.gguf")
    assert caught.value.needed == plan_gguf(load_profile("so8t-lite")).file_size()
    assert caught.value.free <= 1 << 20
    assert list(small_filesystem.iterdir()) == []


def test_real_enospc_mid_write_leaves_nothing(
    small_filesystem: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Defeat the free-space pre-check so the write itself runs out of space on the real 1 MiB filesystem.
    import harness.gguf.build as build_module

    real_usage = build_module.shutil.disk_usage
    monkeypatch.setattr(build_module.shutil, "disk_usage", lambda p: real_usage(p)._replace(free=1 << 40))
    with pytest.raises(DiskFullError) as caught:
        build_gguf(load_profile("so8t-lite"), small_filesystem / "lite.gguf")
    assert caught.value.needed > 1 << 20
    assert list(small_filesystem.iterdir()) == []


def test_oracle_margin_too_small_is_refused() -> None:
    spec = load_profile("oracle").replace(oracle=OracleSpec(target_logit=0.05, min_margin=0.5))
    with pytest.raises(BuildError, match=r"oracle step 0 \('▁the' -> '▁is'\): logit margin"):
        plan_gguf(spec)


def test_oracle_margin_check_depends_on_the_tensor_type() -> None:
    # Find a seed where q4_0 rounding costs margin; demand a margin between the two: f32 passes, q4_0 fails.
    base = load_profile("oracle").replace(oracle=OracleSpec(target_logit=1.0, min_margin=0.0))
    for seed in range(20):
        f32 = base.replace(seed=seed, tensor_type="f32")
        q4 = base.replace(seed=seed, tensor_type="q4_0")
        f32_margin, q4_margin = (
            min(oracle_margins(f32, spec_vocab(f32))),
            min(oracle_margins(q4, spec_vocab(q4))),
        )
        if q4_margin < f32_margin - 1e-3:
            break
    else:
        pytest.fail("no seed where q4_0 lowers the margin")
    demand = OracleSpec(target_logit=1.0, min_margin=(f32_margin + q4_margin) / 2)
    plan_gguf(f32.replace(oracle=demand))
    with pytest.raises(BuildError, match="in q4_0"):
        plan_gguf(q4.replace(oracle=demand))


def test_repeated_token_with_two_successors_is_a_spec_error() -> None:
    spec = load_profile("oracle").replace(
        oracle=OracleSpec(prompt="hello the", continuation=" is the one the two")
    )
    with pytest.raises(SpecError, match="two different successors"):
        plan_gguf(spec)


def test_cli_build_prints_path_size_sha_and_hash(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o.gguf"
    assert (
        cli_main(["gguf", "build", "--profile", "oracle", "--type", "q4_0", "--seed", "3", "-o", str(out)])
        == 0
    )
    lines = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines())
    spec = load_profile("oracle").replace(tensor_type="q4_0", seed=3)
    assert lines["path"] == str(out) and int(lines["size"]) == out.stat().st_size
    assert lines["spec_hash"] == spec.spec_hash() and len(lines["sha256"]) == 64
    assert cli_main(["gguf", "build", "--profile", "nope", "-o", str(out)]) == 2
    assert "known profiles" in capsys.readouterr().err


def test_profiles_listed_by_the_cli_help_are_the_fixture_files() -> None:
    assert set(list_profiles()) == {p.stem for p in (Path(__file__).parents[1] / "fixtures").glob("*.toml")}


def test_random_model_never_scores_byte_or_control_tokens() -> None:
    spec = load_profile("tiny")
    plan = plan_gguf(spec)
    vocab = plan.vocab
    assert vocab is not None
    output = plan.tensor("output.weight").produce()
    silent = np.array([t != 1 for t in vocab.token_types])
    assert not output[silent].any() and output[~silent].any()


def test_progress_bar_when_asked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_gguf(plan_gguf(load_profile("tiny")), tmp_path / "t.gguf", progress=True)
    assert "building t.gguf" in capsys.readouterr().err
    write_gguf(plan_gguf(load_profile("tiny")), tmp_path / "u.gguf")  # small build, not a terminal: no bar
    assert capsys.readouterr().err == ""


def test_oracle_words_join_the_vocab_automatically(tmp_path: Path) -> None:
    oracle = OracleSpec(prompt="Once upon a time", continuation=" cats sang loudly, twice!")
    spec = load_profile("oracle").replace(words=(), oracle=oracle, tensor_type="q4_0")
    vocab = spec_vocab(spec)
    assert {"▁Once", "▁time", "▁cats", "▁loudly", ",", "!"} <= set(vocab.tokens)
    built = build_gguf(spec, tmp_path / "cats.gguf")
    assert llamacpp.generate(built.path, oracle.prompt, n_predict=16, timeout=60).text == oracle.continuation


def test_the_tool_oracle_spells_each_of_its_three_answers_in_llama_cpp(built_dir: Path) -> None:
    """oracle-tools: the first chat turn (ends in a newline) -> one tool call, the turn after a tool result
    (ends in "Answer:") -> the final sentence, a raw "... JSON" prompt -> the JSON document."""
    spec = load_profile("oracle-tools")
    assert spec.oracle is not None
    built = build_gguf(spec, built_dir / "oracle-tools.gguf")
    vocab = spec_vocab(spec)
    for prompt, continuation in spec.oracle.pairs:
        result = llamacpp.generate(built.path, f"<|im_start|>user\nhi<|im_end|>\n{prompt}", n_predict=32)
        assert result.text == continuation
        pieces = vocab.tokenize(continuation, add_space_prefix=False)
        assert len(pieces) <= result.n_tokens <= len(pieces) + 1  # each piece one token, then EOS
    call = spec.oracle.continuation
    assert [vocab.tokens[t] for t in vocab.tokenize(call, add_space_prefix=False)] == [
        piece.replace(" ", "▁") for piece in spec.pieces[:8]
    ]
    assert llamacpp.tokenize(built.path, call) == vocab.tokenize(call)  # our tokenizer is llama.cpp's
