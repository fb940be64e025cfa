"""Specs, profiles and the SPM vocabulary (pure: no files written, no llama.cpp)."""

from __future__ import annotations

from pathlib import Path

import pytest
from gguf import TokenType

from harness.errors import SpecError
from harness.gguf.plan import plan_gguf, spec_vocab
from harness.gguf.spec import ModelSpec, OracleSpec, list_profiles, load_profile
from harness.gguf.vocab import SPACE, build_vocab
from harness.gguf.weights import oracle_chain


def test_the_three_profiles_exist_and_load() -> None:
    assert {"tiny", "so8t-lite", "oracle"} <= set(list_profiles())
    lite = load_profile("so8t-lite")
    assert (lite.n_embd, lite.n_layer, lite.n_head, lite.n_ff, lite.context_length) == (
        512,
        4,
        8,
        1024,
        32768,
    )
    assert len(plan_gguf(lite).vocab or ()) == 1000
    oracle = load_profile("oracle")
    assert oracle.weights == "oracle"
    assert oracle.oracle == OracleSpec(prompt="hello the", continuation=" is two one.")


def test_unknown_profile_lists_the_known_ones() -> None:
    with pytest.raises(SpecError) as caught:
        load_profile("no-such-profile")
    assert "tiny" in caught.value.hint and "oracle" in caught.value.hint


def test_profile_from_a_toml_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(
        "n_embd = 32\nn_layer = 1\nn_head = 2\nn_head_kv = 1\nn_ff = 64\ncontext_length = 128\n"
        'tensor_type = "q8_0"\n'
    )
    spec = load_profile(path)
    assert spec.name == "mine" and spec.tensor_type == "q8_0" and spec.head_dim == 16


def test_unknown_key_and_bad_toml_are_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("n_embd = 32\nn_layers = 2\n")
    with pytest.raises(SpecError, match="n_layers"):
        load_profile(path)
    path.write_text("n_embd = = 3\n")
    with pytest.raises(SpecError, match="not valid TOML"):
        load_profile(path)


def test_quantized_rows_must_be_multiples_of_32() -> None:
    spec = load_profile("tiny")
    with pytest.raises(SpecError) as caught:
        spec.replace(n_embd=48, n_head=4, tensor_type="q4_0")
    assert "multiple of 32" in caught.value.message and "64" in caught.value.hint
    assert spec.replace(n_embd=48, tensor_type="f16").n_embd == 48  # fine unquantized


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"n_head": 3}, "not divisible"),
        ({"n_embd": 36, "n_head": 4}, "odd"),
        ({"n_head_kv": 3}, "multiple of n_head_kv"),
        ({"tensor_type": "q4_k"}, "unknown tensor type"),
        ({"weights": "zeros"}, "unknown weight recipe"),
        ({"architecture": "so8t"}, "unsupported architecture"),
        ({"n_layer": 0}, "positive integer"),
    ],
)
def test_invalid_specs_raise_spec_error(changes: dict[str, object], needle: str) -> None:
    with pytest.raises(SpecError, match=needle):
        load_profile("tiny").replace(**changes)


def test_spec_hash_is_stable_and_sensitive() -> None:
    tiny = load_profile("tiny")
    assert tiny.spec_hash() == load_profile("tiny").spec_hash()
    assert tiny.spec_hash() != tiny.replace(tensor_type="f16").spec_hash()
    assert tiny.spec_hash() != tiny.replace(seed=1).spec_hash()
    assert len(tiny.spec_hash()) == 64


def test_oracle_weights_default_the_oracle_spec() -> None:
    spec = ModelSpec(
        name="o", n_embd=32, n_layer=1, n_head=2, n_head_kv=2, n_ff=64, context_length=64, weights="oracle"
    )
    assert spec.oracle == OracleSpec()


def test_vocab_layout() -> None:
    vocab = build_vocab(["hello", "world"])
    assert vocab.tokens[:3] == ("<unk>", "<s>", "</s>")
    assert (vocab.unk_id, vocab.bos_id, vocab.eos_id) == (0, 1, 2)
    assert vocab.tokens[3] == "<0x00>" and vocab.tokens[258] == "<0xFF>"
    assert all(t == TokenType.BYTE for t in vocab.token_types[3:259])
    assert vocab.token_types[:3] == (TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL)
    assert len(set(vocab.tokens)) == len(vocab.tokens)
    assert vocab.scores[vocab.ids[SPACE + "hello"]] > vocab.scores[vocab.ids["h"]]


def test_whole_words_win_and_unknown_text_falls_back() -> None:
    vocab = build_vocab(["hello", "the", "is", "two", "one", "."])
    pieces = [vocab.tokens[i] for i in vocab.tokenize("hello the", add_bos=True)]
    assert pieces == ["<s>", "▁hello", "▁the"]
    continuation = vocab.tokenize(" is two one.", add_space_prefix=False)
    assert [vocab.tokens[i] for i in continuation] == ["▁is", "▁two", "▁one", "."]
    assert vocab.detokenize(continuation) == " is two one."
    # characters not in the vocab become byte tokens (UTF-8 bytes)
    assert [vocab.tokens[i] for i in vocab.tokenize("é", add_space_prefix=False)] == ["<0xC3>", "<0xA9>"]


def test_vocab_size_is_filled_exactly_or_refused() -> None:
    assert len(build_vocab(["hello"], size=700)) == 700
    with pytest.raises(SpecError, match="too small"):
        build_vocab(["hello"], size=300)


def test_verbatim_pieces_are_single_tokens_with_their_punctuation_and_spaces() -> None:
    vocab = build_vocab(["hello"], verbatim=['{"name": ', "<tool_call>", "}}"])
    text = '<tool_call>{"name": }}'
    pieces = [vocab.tokens[i] for i in vocab.tokenize(text, add_space_prefix=False)]
    assert pieces == ["<tool_call>", '{"name":▁', "}}"]
    assert vocab.detokenize(vocab.tokenize(text, add_space_prefix=False)) == text


def test_more_oracle_pairs_join_the_chain_and_must_not_clash() -> None:
    base = load_profile("oracle")
    spec = base.replace(
        oracle=OracleSpec(
            prompt="hello the", continuation=" is two one.", more=(("hello world", " cats sang!"),)
        )
    )
    vocab = spec_vocab(spec)
    chain = oracle_chain(spec, vocab)
    assert [vocab.tokens[t] for t in chain.sources] == [
        "▁the",
        "▁is",
        "▁two",
        "▁one",
        ".",
        "▁world",
        "▁cats",
        "▁sang",
        "!",
    ]
    clash = base.replace(oracle=OracleSpec(more=(("say two", " is it"),)))  # "▁two" -> "▁one", and -> "▁is"
    with pytest.raises(SpecError, match="two different successors"):
        oracle_chain(clash, spec_vocab(clash))


def test_specs_without_pieces_or_more_pairs_keep_their_hash_inputs() -> None:
    data = load_profile("oracle").to_dict()
    assert "pieces" not in data and "more" not in data["oracle"]
    tools = load_profile("oracle-tools").to_dict()
    assert tools["pieces"][0] == "<tool_call>" and len(tools["oracle"]["more"]) == 2


@pytest.mark.parametrize(
    ("oracle", "problem"),
    [
        ({"more": "hello"}, "list of \\[prompt, continuation\\] pairs"),
        ({"more": [["only a prompt"]]}, "list of \\[prompt, continuation\\] pairs"),
        ({"more": [["", " text."]]}, "empty prompt or continuation"),
    ],
)
def test_bad_more_pairs_are_spec_errors(oracle: dict[str, object], problem: str) -> None:
    with pytest.raises(SpecError, match=problem):
        OracleSpec(**oracle)  # type: ignore[arg-type]


def test_bad_pieces_are_spec_errors() -> None:
    with pytest.raises(SpecError, match="bad piece"):
        load_profile("oracle").replace(pieces=(" leading space",))
    with pytest.raises(SpecError, match="bad piece"):
        load_profile("oracle").replace(pieces=("x",))
