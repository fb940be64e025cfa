"""A SentencePiece-style `llama` vocabulary and a tokenizer that matches llama.cpp's SPM tokenizer on it.

Layout: `<unk> <s> </s>`, the 256 byte tokens `<0x00>`..`<0xFF>` (type BYTE, for byte fallback), single
characters, then word pieces. Every word is added with its whole prefix chain (`▁h`, `▁he`, ... `▁hello`)
because SPM only merges adjacent pieces whose concatenation is itself a piece; a piece's score is its
length, so longer pieces merge first and whole words win over letters. Verbatim pieces (`{"name": `,
`<tool_call>`: punctuation and spaces inside one token) are added the same way, with their prefix chain
and their characters.
"""

from __future__ import annotations

import heapq
import itertools
import re
import string
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from gguf import TokenType

from harness.errors import SpecError

SPACE = "▁"  # U+2581, SentencePiece's visible space
UNK, BOS, EOS = "<unk>", "<s>", "</s>"
BASE_CHARACTERS = SPACE + string.ascii_lowercase + string.ascii_uppercase + string.digits + ".,!?'\"-:;()"

_UNIT = re.compile(rf"{SPACE}?[^\W_]+|{SPACE}?[^\w{SPACE}]|{SPACE}?_|{SPACE}")


@dataclass(frozen=True)
class Vocab:
    """Token strings, scores and types, as written to `tokenizer.ggml.*`."""

    tokens: tuple[str, ...]
    scores: tuple[float, ...]
    token_types: tuple[int, ...]
    bos_id: int = 1
    eos_id: int = 2
    unk_id: int = 0

    _ids: dict[str, int] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_ids", {token: i for i, token in enumerate(self.tokens)})
        if len(self._ids) != len(self.tokens):
            raise SpecError("duplicate token in vocabulary", "llama.cpp aborts on duplicate tokens")

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def ids(self) -> dict[str, int]:
        return self._ids

    def byte_token(self, byte: int) -> int:
        return self.ids[f"<0x{byte:02X}>"]

    def tokenize(self, text: str, *, add_bos: bool = False, add_space_prefix: bool = True) -> list[int]:
        """Token ids of `text` as llama.cpp's SPM tokenizer gives them (raw text, specials not parsed)."""
        escaped = ((" " if add_space_prefix else "") + text).replace(" ", SPACE)
        return ([self.bos_id] if add_bos else []) + (self._spm(escaped) if escaped else [])

    def detokenize(self, ids: Iterable[int]) -> str:
        """Text of the pieces (spaces restored, bytes decoded, control tokens dropped)."""
        out = bytearray()
        for token_id in ids:
            kind, piece = self.token_types[token_id], self.tokens[token_id]
            if kind == TokenType.BYTE:
                out.append(int(piece[3:5], 16))
            elif kind == TokenType.NORMAL:
                out += piece.replace(SPACE, " ").encode()
        return out.decode("utf-8", errors="replace")

    def _spm(self, text: str) -> list[int]:
        # llama.cpp llm_tokenizer_spm_session::tokenize: start from UTF-8 characters, repeatedly merge the
        # adjacent pair whose concatenation is a token with the highest score (ties: leftmost), then map each
        # symbol to its token or, failing that, to byte tokens.
        symbols = list(text)
        nxt = [*range(1, len(symbols)), -1]
        prv = list(range(-1, len(symbols) - 1))
        queue: list[tuple[float, int, int, str]] = []

        def try_add(left: int, right: int) -> None:
            if left < 0 or right < 0:
                return
            merged = symbols[left] + symbols[right]
            token_id = self.ids.get(merged)
            if token_id is not None:
                heapq.heappush(queue, (-self.scores[token_id], left, right, merged))

        for i in range(1, len(symbols)):
            try_add(i - 1, i)
        while queue:
            _, left, right, merged = heapq.heappop(queue)
            if not symbols[left] or not symbols[right] or symbols[left] + symbols[right] != merged:
                continue
            symbols[left], symbols[right] = merged, ""
            nxt[left] = nxt[right]
            if nxt[right] >= 0:
                prv[nxt[right]] = left
            try_add(prv[left], left)
            try_add(left, nxt[left])
        out: list[int] = []
        i = 0
        while i != -1:
            token_id = self.ids.get(symbols[i])
            if token_id is not None:
                out.append(token_id)
            else:
                out.extend(self.byte_token(b) for b in symbols[i].encode())
            i = nxt[i]
        return out


def text_units(text: str, *, add_space_prefix: bool = False) -> list[str]:
    """The pieces a text should tokenize into: `▁`-prefixed words and single punctuation marks."""
    escaped = ((" " if add_space_prefix else "") + text).replace(" ", SPACE)
    return _UNIT.findall(escaped)


def word_pieces(word: str) -> list[str]:
    """The piece for one vocabulary word and its whole prefix chain (so SPM can merge up to it).

    A word starting with a letter or digit gets the `▁` prefix (a word after a space); punctuation stays bare.
    """
    piece = word if word.startswith(SPACE) or not word[0].isalnum() else SPACE + word
    return [piece[:n] for n in range(2, len(piece) + 1)]


def _filler_pieces() -> Iterator[str]:
    """Endless, deterministic extra pieces (`▁ab`, `▁ac`, ... then three letters) to reach a vocab size."""
    for length in itertools.count(2):
        for letters in itertools.product(string.ascii_lowercase, repeat=length):
            yield SPACE + "".join(letters)


def verbatim_pieces(text: str) -> list[str]:
    """A verbatim token (spaces as `▁`) with its whole prefix chain, so SPM can merge up to it."""
    piece = text.replace(" ", SPACE)
    return [piece[:n] for n in range(2, len(piece) + 1)]


def build_vocab(words: Iterable[str], *, size: int | None = None, verbatim: Iterable[str] = ()) -> Vocab:
    """Specials + 256 bytes + base characters + the words' pieces + the `verbatim` tokens (each with its
    prefix chain and characters), filled up to `size` tokens if given."""
    pieces: dict[str, None] = dict.fromkeys(BASE_CHARACTERS)
    for word in words:
        for unit in text_units(word) or [word]:
            pieces.update(dict.fromkeys(word_pieces(unit)))
            pieces.update(dict.fromkeys(c for c in unit if c != SPACE))
    for text in verbatim:
        pieces.update(dict.fromkeys(c for c in text.replace(" ", SPACE)))
        pieces.update(dict.fromkeys(verbatim_pieces(text)))
    n_fixed = 3 + 256
    if size is not None:
        if n_fixed + len(pieces) > size:
            raise SpecError(
                f"vocab_size {size} is too small: specials, bytes, characters and words need "
                f"{n_fixed + len(pieces)} tokens",
                "raise vocab_size or remove words",
            )
        filler = (p for p in _filler_pieces() if p not in pieces)
        for piece in filler:
            if n_fixed + len(pieces) >= size:
                break
            # keep every filler's prefix chain complete so it is reachable by SPM merges
            for prefix in word_pieces(piece):
                if n_fixed + len(pieces) < size:
                    pieces.setdefault(prefix, None)
    tokens = [UNK, BOS, EOS] + [f"<0x{b:02X}>" for b in range(256)] + list(pieces)
    types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL] + [TokenType.BYTE] * 256
    types += [TokenType.NORMAL] * len(pieces)
    scores = [0.0] * n_fixed + [float(len(p)) for p in pieces]
    return Vocab(tokens=tuple(tokens), scores=tuple(scores), token_types=tuple(int(t) for t in types))
