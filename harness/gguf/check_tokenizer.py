"""The checker's tokenizer rules: the tokenizer model, token arrays, byte tokens, token strings and special
token ids against llama.cpp's `llama_vocab::load` (src/llama-vocab.cpp). Mixed into the checker
(`check.py`), whose state (header, architecture and rule, findings) they read and add to."""

from __future__ import annotations

from harness.gguf import archs
from harness.gguf.archs import ArchRule, HParams
from harness.gguf.findings import FindingSink, short_repr
from harness.gguf.reader import (
    ArrayValue,
    GGUFHeader,
)

_BYTE_TOKEN_TYPE = 6  # llama_token_type LLAMA_TOKEN_TYPE_BYTE


class TokenizerChecks(FindingSink):
    """The tokenizer part of the checker; `check._Checker` provides the state."""

    header: GGUFHeader
    arch: str | None
    rule: ArchRule | None
    hparams: HParams

    def check_tokenizer(self) -> None:
        kvs = self.header.kvs
        has_tokenizer_keys = any(k.startswith("tokenizer.ggml.") for k in kvs)
        if (self.rule is not None and not self.rule.needs_tokenizer) and not has_tokenizer_keys:
            return
        model_entry = kvs.get("tokenizer.ggml.model")
        tokens_entry = kvs.get("tokenizer.ggml.tokens")
        if model_entry is None:
            self.add(
                "missing-tokenizer",
                "tokenizer.ggml.model is missing: the file has no tokenizer "
                "(llama.cpp: key not found in model: tokenizer.ggml.model)",
                "convert the model together with its tokenizer (convert_hf_to_gguf.py reads "
                "tokenizer.model or tokenizer.json); a SentencePiece vocab needs model 'llama', "
                "tokens, scores, "
                "token_type",
                key="tokenizer.ggml.model",
            )
            return
        model = model_entry.value
        if not isinstance(model, str):
            return
        tokenizer = archs.TOKENIZER_RULES.get(model)
        if tokenizer is None:
            self.add(
                "unknown-tokenizer",
                f"tokenizer.ggml.model is {model!r}, which llama.cpp does not know "
                f"(llama.cpp: unknown tokenizer: '{model}')",
                f"use one of {', '.join(sorted(archs.TOKENIZER_RULES))} "
                "('llama' for SentencePiece, 'gpt2' for BPE)",
                key="tokenizer.ggml.model",
            )
            return
        if not tokenizer.has_vocab:
            if self.rule is not None and self.rule.needs_tokenizer:
                self.add(
                    "missing-tokenizer",
                    f"tokenizer.ggml.model is {model!r}: the model has no vocabulary, so llama.cpp cannot "
                    "tokenize a prompt (it aborts: Tokenizer not initialized)",
                    "convert the model together with its tokenizer, or name the tokenizer its vocab needs "
                    "('llama' for SentencePiece, 'gpt2' for BPE)",
                    key="tokenizer.ggml.model",
                )
            return
        if tokens_entry is None or not isinstance(tokens_entry.value, ArrayValue):
            if tokens_entry is None:
                self.add(
                    "missing-tokenizer",
                    "tokenizer.ggml.tokens is missing (llama.cpp: cannot find tokenizer vocab in model file)",
                    "write the token list as tokenizer.ggml.tokens (array of strings)",
                    key="tokenizer.ggml.tokens",
                )
            return
        tokens = tokens_entry.value
        self._check_token_arrays(tokens.length)
        if isinstance(tokens.items, list):
            self._check_token_strings(tokens.items, tokenizer)
        if tokenizer.needs_merges and "tokenizer.ggml.merges" not in kvs:
            self.add(
                "missing-merges",
                f"tokenizer.ggml.model is '{model}' (BPE) but tokenizer.ggml.merges is missing "
                "(llama.cpp: cannot find tokenizer merges in model file)",
                "write the BPE merges from tokenizer.json as tokenizer.ggml.merges",
                key="tokenizer.ggml.merges",
            )
        if not tokenizer.decodes_byte_tokens:
            self._check_byte_token_types(model)
        self._check_special_ids(tokens.length)
        vocab_size = self.hparams.values.get("vocab_size_key")
        if isinstance(vocab_size, int) and vocab_size != tokens.length:
            self.add(
                "vocab-size-mismatch",
                f"{self.arch}.vocab_size is {vocab_size} but tokenizer.ggml.tokens has "
                f"{tokens.length} tokens",
                f"set {self.arch}.vocab_size to {tokens.length} or remove it",
                key=f"{self.arch}.vocab_size",
                severity="warning",
            )

    def _check_token_arrays(self, n_tokens: int) -> None:
        for key, name in (("tokenizer.ggml.scores", "scores"), ("tokenizer.ggml.token_type", "token_type")):
            entry = self.header.kvs.get(key)
            if entry is None or not isinstance(entry.value, ArrayValue) or entry.value.length == n_tokens:
                continue
            length = entry.value.length
            shorter = length < n_tokens
            self.add(
                "tokenizer-length-mismatch",
                f"{key} has {length} entries but tokenizer.ggml.tokens has {n_tokens}"
                + (
                    f" (llama.cpp: Index out of array bounds for {name} ({length} < {n_tokens}))"
                    if shorter
                    else ""
                ),
                f"write exactly one {name} entry per token",
                key=key,
                severity="error" if shorter else "warning",
            )

    def _check_byte_token_types(self, model: str) -> None:
        types = self.header.value("tokenizer.ggml.token_type")
        if not isinstance(types, ArrayValue) or types.items is None:
            return
        count = sum(1 for t in types.items if t == _BYTE_TOKEN_TYPE)
        if count:
            self.add(
                "tokenizer-mismatch",
                f"tokenizer.ggml.model is {model!r}, but {count} token(s) have token_type BYTE (6), which "
                "only SentencePiece ('llama') and Unigram ('t5') vocabularies decode; llama.cpp aborts while "
                "loading the vocab (token_to_byte: fatal error)",
                "set tokenizer.ggml.model to the tokenizer the vocab was made for (byte tokens <0xXX>: "
                "'llama'), or reconvert the model",
                key="tokenizer.ggml.model",
            )

    def _check_token_strings(self, tokens: list[str], tokenizer: archs.TokenizerRule) -> None:
        distinct = set(tokens)
        distinct.discard("")  # llama.cpp renames empty tokens to [EMPTY_i]
        duplicates: list[tuple[str, int, int]] = []
        if len(distinct) != len(tokens) - tokens.count(""):
            first_id: dict[str, int] = {}
            for index, token in enumerate(tokens):
                previous = first_id.setdefault(token, index) if token else index
                if previous != index:
                    duplicates.append((token, previous, index))
        if duplicates:
            shown = ", ".join(f"{short_repr(tok, 30)} at ids {a} and {b}" for tok, a, b in duplicates[:5])
            self.add(
                "duplicate-token",
                f"tokenizer.ggml.tokens has {len(duplicates)} duplicate token(s): {shown} "
                "(llama.cpp aborts: GGML_ASSERT(id_to_token.size() == token_to_id.size()))",
                "make every token string unique (rename or drop the duplicates, and the matching rows of "
                "token_embd/output)",
                key="tokenizer.ggml.tokens",
            )
        if tokenizer.byte_tokens:
            missing = [b for b in range(256) if f"<0x{b:02X}>" not in distinct]
            if missing:
                self.add(
                    "missing-byte-tokens",
                    f"the SentencePiece vocab lacks {len(missing)} of the 256 byte tokens <0x00>..<0xFF> "
                    f"(first missing: <0x{missing[0]:02X}>); text with characters outside the vocab fails at "
                    "request time in llama.cpp (_Map_base::at)",
                    "add all 256 byte tokens '<0xXX>' with token_type BYTE (6)",
                    key="tokenizer.ggml.tokens",
                    severity="error" if len(missing) == 256 else "warning",
                )

    def _check_special_ids(self, n_tokens: int) -> None:
        for key in archs.SPECIAL_TOKEN_KEYS:
            value = self.header.value(key)
            if isinstance(value, int) and not isinstance(value, bool) and value >= n_tokens:
                self.add(
                    "bad-special-token",
                    f"{key} is {value}, outside the vocabulary of {n_tokens} tokens (llama.cpp: bad special "
                    "token; it falls back to its default id, a token the model was not trained to use)",
                    f"set {key} to the id of that token in tokenizer.ggml.tokens",
                    key=key,
                )

    # --------------------------------------------------------------------------------------- tensors
