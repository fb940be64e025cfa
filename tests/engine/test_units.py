"""The engine's pure parts: names, durations, hosts, options, digests, the GGUF header reader, cause lines."""

from __future__ import annotations

import asyncio
import hashlib
import math
import struct
from pathlib import Path

import gguf
import pytest

from harness.engine.config import EngineConfig, parse_go_duration, parse_host, parse_keep_alive
from harness.engine.ggufinfo import GGUFFormatError, file_type_name, read_gguf_info
from harness.engine.names import InvalidNameError, ModelName
from harness.engine.options import OptionError, completion_fields, merge_options
from harness.engine.runner import buffer_bytes, termination_message
from harness.engine.store import DigestMismatchError, InvalidDigestError, Store, normalize_digest
from harness.gguf.build import BuiltModel, write_gguf
from harness.gguf.llamacpp import ollama_cause_line
from harness.gguf.plan import KV, plan_gguf
from harness.gguf.spec import load_profile


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("tiny", "tiny:latest"),
        ("Tiny:V1", "Tiny:V1"),
        ("ns/model:tag", "ns/model:tag"),
        ("example.com:5000/ns/model:t", "example.com:5000/ns/model:t"),
        ("m_1.2-x", "m_1.2-x:latest"),
    ],
)
def test_valid_names(text: str, shown: str) -> None:
    assert str(ModelName.parse(text)) == shown


@pytest.mark.parametrize(
    "text",
    [
        "",
        "bad/../name",
        "../etc",
        "a/b/c/d",
        "model:",
        ":tag",
        ".hidden",
        "m:" + "t" * 81,
        "m" * 81,
        "a b",
        "ns.x/model",
        "model:cloud",
        "x/y:local",
        "m:-x",
    ],
)
def test_invalid_names(text: str) -> None:
    with pytest.raises(InvalidNameError):
        ModelName.parse(text)


def test_name_identity_is_case_insensitive() -> None:
    assert ModelName.parse("Tiny").key() == ModelName.parse("tiny:LATEST").key()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5m", 300), ("1h30m", 5400), ("10s", 10), ("1.5s", 1.5), ("250ms", 0.25), ("0", 0), ("-1s", -1)],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["5", "m", "5x", "", "1h 2m"])
def test_bad_go_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_go_duration(text)


def test_keep_alive_forms() -> None:
    assert parse_keep_alive(30) == 30
    assert parse_keep_alive("30") == 30
    assert parse_keep_alive("2m") == 120
    assert parse_keep_alive(-1) == math.inf
    assert parse_keep_alive("-5m") == math.inf
    with pytest.raises(ValueError):
        parse_keep_alive(True)


def test_hosts_and_env() -> None:
    assert parse_host("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_host("0.0.0.0") == ("0.0.0.0", 11434)
    assert parse_host("http://example") == ("example", 80)
    assert parse_host("[::1]:9") == ("::1", 9)
    config = EngineConfig.from_env(
        {
            "OLLAMA_HOST": "127.0.0.1:9999",
            "OLLAMA_KEEP_ALIVE": "-1",
            "OLLAMA_NUM_PARALLEL": "2",
            "OLLAMA_MAX_QUEUE": "oops",
            "OLLAMA_CONTEXT_LENGTH": "1024",
            "OLLAMA_MODELS": "/tmp/m",
        }
    )
    assert (config.host, config.port, config.num_parallel, config.context_length) == (
        "127.0.0.1",
        9999,
        2,
        1024,
    )
    assert config.keep_alive_s == math.inf and config.max_queue == 512 and config.models_dir == Path("/tmp/m")
    assert EngineConfig.from_env({}).host == "127.0.0.1"


def test_options_merge_types_and_mapping() -> None:
    merged = merge_options({"temperature": 0.5, "stop": "x"}, {"num_predict": 7.0, "unknown": 1, "seed": 3})
    assert merged["temperature"] == 0.5 and merged["stop"] == ["x"] and merged["num_predict"] == 7
    assert "unknown" not in merged
    fields = completion_fields(merged, 2048)
    assert fields["n_predict"] == 7 and fields["seed"] == 3 and fields["min_p"] == 0.0
    unlimited = completion_fields(merge_options(), 128)
    assert "seed" not in unlimited and unlimited["n_predict"] == 1280  # Ollama's 10 x num_ctx
    for key, value, kind in [
        ("num_ctx", "big", "integer"),
        ("top_k", True, "integer"),
        ("temperature", "hot", "float"),
        ("stop", [1], "array of strings"),
    ]:
        with pytest.raises(OptionError, match=f'option "{key}" must be of type {kind}'):
            merge_options({key: value})


def test_digests_and_store_paths(tmp_path: Path) -> None:
    good = "sha256:" + "A" * 64
    assert normalize_digest(good) == "sha256:" + "a" * 64
    assert normalize_digest("sha256-" + "a" * 64) == "sha256:" + "a" * 64
    store = Store(tmp_path)
    for bad in ["sha256:../../x", "sha256:" + "a" * 63, "../" + "a" * 64, ""]:
        with pytest.raises(InvalidDigestError):
            store.blob_path(bad)
    assert store.blob_path(good).parent == tmp_path / "blobs"


def test_blob_writes_check_the_digest(tmp_path: Path) -> None:
    store = Store(tmp_path)

    async def chunks(data: bytes):  # type: ignore[no-untyped-def]
        yield data

    data = b"hello"
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    asyncio.run(store.write_blob(digest, chunks(data)))
    assert store.blob_path(digest).read_bytes() == data
    with pytest.raises(DigestMismatchError):
        asyncio.run(store.write_blob("sha256:" + "0" * 64, chunks(data)))
    assert sorted(p.name for p in (tmp_path / "blobs").iterdir()) == [f"sha256-{digest[7:]}"]


def test_gguf_header_reader(tiny_gguf: BuiltModel, tmp_path: Path) -> None:
    info = read_gguf_info(tiny_gguf.path)
    assert info.architecture == "llama" and info.context_length == 512 and info.parameter_count > 0
    assert info.file_type == "F32"  # the tiny profile's tensor_type
    shown = info.model_info()
    assert shown["general.parameter_count"] == info.parameter_count and "general.name" not in shown
    assert (
        shown["tokenizer.ggml.tokens"] == []
        and len(info.model_info(verbose=True)["tokenizer.ggml.tokens"]) > 5
    )
    assert info.tensors()[0] == {"name": "token_embd.weight", "type": "F32", "shape": [64, 593]}
    plan = plan_gguf(load_profile("tiny"))
    plan.kvs["general.alignment"] = KV(0, gguf.GGUFValueType.UINT32)
    write_gguf(plan, tmp_path / "zero-align.gguf")
    with pytest.raises(GGUFFormatError, match="invalid GGUF alignment: 0"):
        read_gguf_info(tmp_path / "zero-align.gguf")
    cut = tmp_path / "cut.gguf"
    data = tiny_gguf.path.read_bytes()
    cut.write_bytes(data[:-10])
    with pytest.raises(
        GGUFFormatError, match=rf"offset\+size \(\d+\) exceeds file size \({len(data) - 10}\)"
    ):
        read_gguf_info(cut)
    (tmp_path / "junk").write_bytes(b"NOPE" + bytes(100))
    with pytest.raises(GGUFFormatError, match="invalid file magic"):
        read_gguf_info(tmp_path / "junk")
    (tmp_path / "short").write_bytes(data[:40])
    with pytest.raises(GGUFFormatError, match="unexpected EOF"):
        read_gguf_info(tmp_path / "short")


def _gguf_bytes(kv_type: int = 4, n_dims: int = 1) -> bytes:
    """A hand-made GGUF: key `k` of value type `kv_type` (u32 = 4), f32 tensor `t` with `n_dims` dims."""
    head = (
        b"GGUF" + struct.pack("<IQQ", 3, 1, 1) + struct.pack("<Q", 1) + b"k" + struct.pack("<II", kv_type, 7)
    )
    tensor = struct.pack("<Q", 1) + b"t" + struct.pack("<I", n_dims) + struct.pack("<Q", 1) * n_dims
    return head + tensor + struct.pack("<IQ", 0, 0) + bytes(64)


def test_decoder_errors_use_ollamas_words(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(_gguf_bytes())
    assert read_gguf_info(path).header.value("k") == 7
    for data, message in (
        (_gguf_bytes(kv_type=99), "invalid type: 99"),
        (_gguf_bytes(n_dims=5), 'tensor "t" dimensions 5 exceeds maximum'),
        (b"", "unexpected EOF"),
    ):
        path.write_bytes(data)
        with pytest.raises(GGUFFormatError) as caught:
            read_gguf_info(path)
        assert str(caught.value) == message


def test_file_type_names_follow_ollama() -> None:
    assert [file_type_name(n) for n in (0, 1, 2, 7, 15, 32, 999)] == [
        "F32", "F16", "Q4_0", "Q8_0", "Q4_K_M", "BF16", "unknown",
    ]  # fmt: skip


def test_buffer_sizes_are_summed_like_ollamas_memory_parsing_writer() -> None:
    log = (
        "0.00.016.404 I load_tensors:   CPU_Mapped model buffer size =     0.50 MiB\n"
        "0.00.016.692 I llama_context:        CPU  output buffer size =     0.25 MiB\n"
        "0.00.016.770 I llama_kv_cache:        CPU KV buffer size =     3.00 MiB\n"
        "0.00.019.000 I sched_reserve:        CPU compute buffer size =     9.00 MiB\n"
        "0.00.019.272 I sched_reserve:        CPU compute buffer size =     1.25 MiB\n"  # replaces the 9.00
        "llama_model_load_from_file_impl: CUDA0 model buffer size = 2.00 MiB\n"
    )
    assert buffer_bytes(log) == int((0.5 + 0.25 + 3 + 1.25 + 2) * (1 << 20))
    assert buffer_bytes("E llama_model_load: error loading model\n") is None


def test_runner_failure_messages() -> None:
    stderr = (
        "E llama_model_load: error loading model: error loading model hyperparameters: "
        "key not found in model: llama.context_length\n"
        "E llama_model_load_from_file_impl: failed to load model\n"
    )
    assert ollama_cause_line(stderr).startswith("error loading model: error loading model hyperparameters")
    assert termination_message(1, stderr) == (
        "llama-server process has terminated: exit status 1: error loading model: error loading model "
        "hyperparameters: key not found in model: llama.context_length"
    )
    assert (
        termination_message(-6, "GGML_ASSERT(x) failed\n")
        == "llama-server process has terminated: GGML_ASSERT(x) failed"
    )
    assert termination_message(-9, "") == "llama-server process has terminated: signal: kill"
    verbose = "0.00.001.000 I gguf_init_from_file_impl: loaded meta data\n" + stderr
    assert ollama_cause_line(verbose).startswith("error loading model: error loading model hyperparameters")
