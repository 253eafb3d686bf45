"""Token ids as the bytes they stand for, and the one-to-one map between two vocabularies.

Cross-tokenizer distillation works on text, and the cache holds only the teacher's token ids.
Their byte strings, concatenated, give back the text exactly for byte-level BPE tokenizers
(GPT-2, Llama 3, SmolLM2, Qwen: every piece is a run of raw bytes, possibly part of a UTF-8
character) and for SentencePiece-style ones with byte fallback (``▁`` is a space, ``<0xNN>``
one byte). So the cache needs no stored character offsets: the teacher's byte spans are a
function of ``input_ids`` and the vocabulary, which the manifest identifies by
``vocab_sha256``. :func:`token_bytes` builds the table once per tokenizer;
:func:`check_roundtrip` compares it with the tokenizer's own ``decode`` on real rows, so a
tokenizer whose pieces do not spell the text (a lowercasing normaliser, WordPiece's ``##``)
is refused instead of silently misaligned.

Special tokens (BOS, EOS, chat markers) are not text: they are kept apart and mapped to the
student's by role (eos to eos, ...) or by identical content.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from logitcache.errors import VocabularyMismatchError

log = logging.getLogger(__name__)

_BYTE_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
ROLES = ("eos", "bos", "pad", "unk")


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's reversible byte <-> printable-character table (the one every byte-level BPE
    uses): printable Latin-1 bytes map to themselves, the other 68 to U+0100 onwards."""
    keep = list(range(ord("!"), ord("~") + 1))
    keep += list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return {c: b for b, c in chars.items()}


def _decoder_kinds(tokenizer: Any) -> set[str]:
    """Names of the decoder components of a fast tokenizer (``ByteLevel``, ``Metaspace``, ...)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or backend.decoder is None:
        return set()
    text = repr(backend.decoder)
    return {
        name for name in ("ByteLevel", "Metaspace", "ByteFallback", "WordPiece") if name in text
    }


def _piece_bytes(piece: str, kinds: set[str], byte_decoder: dict[str, int]) -> bytes | None:
    if "ByteLevel" in kinds:
        try:
            return bytes(byte_decoder[c] for c in piece)
        except KeyError:
            return None  # not a byte-level piece
    m = _BYTE_FALLBACK.match(piece)
    if m:
        return bytes([int(m.group(1), 16)])
    if "Metaspace" in kinds or "▁" in piece:
        return piece.replace("▁", " ").encode("utf-8")
    return None


@dataclass(frozen=True)
class TokenTable:
    """Per id: its bytes (``b""`` for special tokens) and whether it is special."""

    pieces: tuple[bytes, ...]
    special: np.ndarray  # bool [len(tokenizer)]
    lengths: np.ndarray  # int64 [len(tokenizer)]: len(pieces[i])
    special_ids: dict[str, int]  # role -> id, for the roles the tokenizer defines
    special_content: dict[str, int]  # content string -> id, for every special token

    def __len__(self) -> int:
        return len(self.pieces)


def special_token_ids(tokenizer: Any) -> dict[int, str]:
    """id -> content of every token the tokenizer treats as special (never text)."""
    out: dict[int, str] = {}
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    for idx, tok in decoder.items():
        if getattr(tok, "special", False):
            out[int(idx)] = str(tok.content if hasattr(tok, "content") else tok)
    for tok, idx in zip(
        getattr(tokenizer, "all_special_tokens", []), getattr(tokenizer, "all_special_ids", [])
    ):
        if idx is not None:
            out[int(idx)] = str(tok)
    return out


def token_bytes(tokenizer: Any) -> TokenTable:
    """The byte table of ``tokenizer`` (one entry per id up to ``len(tokenizer)``).

    Pieces that are neither byte-level nor SentencePiece-like fall back to
    ``decode([id])``; :func:`check_roundtrip` then says whether the table spells the text.
    """
    size = len(tokenizer)
    kinds = _decoder_kinds(tokenizer)
    specials = special_token_ids(tokenizer)
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    byte_decoder = _byte_decoder()
    pieces: list[bytes] = [b""] * size
    special = np.zeros(size, bool)
    fallback = 0
    for piece, idx in tokenizer.get_vocab().items():
        if idx >= size:
            continue
        if idx in specials:
            special[idx] = True
            continue
        if idx in added:  # a non-special added token is literal text
            pieces[idx] = str(getattr(added[idx], "content", piece)).encode("utf-8")
            continue
        got = _piece_bytes(piece, kinds, byte_decoder)
        if got is None:
            got = tokenizer.decode([idx], clean_up_tokenization_spaces=False).encode("utf-8")
            fallback += 1
        pieces[idx] = got
    if fallback:
        log.info("%d token pieces decoded one by one (not byte-level / SentencePiece)", fallback)
    roles = {}
    for role in ROLES:
        idx = getattr(tokenizer, f"{role}_token_id", None)
        if isinstance(idx, int) and 0 <= idx < size:
            roles[role] = idx
            special[idx] = True
            pieces[idx] = b""
    return TokenTable(
        pieces=tuple(pieces),
        special=special,
        lengths=np.fromiter((len(p) for p in pieces), np.int64, count=size),
        special_ids=roles,
        special_content={content: idx for idx, content in specials.items() if idx < size},
    )


def check_roundtrip(tokenizer: Any, table: TokenTable, rows: Sequence[np.ndarray], *, name: str):
    """Refuse a tokenizer whose byte table does not spell what its ``decode`` gives.

    Compared on text runs between special tokens (decode's own handling of specials and of
    a leading-space ``Strip`` is not text). Raises :class:`VocabularyMismatchError`.
    """
    checked = 0
    for row in rows:
        row = np.asarray(row, np.int64)
        if row.size and int(row.max()) >= len(table):
            raise VocabularyMismatchError(
                f"{name}: token id {int(row.max())} is outside its tokenizer "
                f"({len(table)} ids); the cache was built with another tokenizer. Pass the "
                "teacher's own tokenizer (--teacher-tokenizer)."
            )
        cuts = np.flatnonzero(table.special[row])
        for seg in np.split(row, cuts):
            seg = seg[~table.special[seg]] if seg.size else seg
            if seg.size == 0:
                continue
            ours = b"".join(table.pieces[i] for i in seg).decode("utf-8", "replace")
            theirs = tokenizer.decode(
                seg.tolist(), skip_special_tokens=False, clean_up_tokenization_spaces=False
            )
            if ours != theirs and ours.lstrip(" ") != theirs.lstrip(" "):
                raise VocabularyMismatchError(
                    f"{name}: its tokens do not spell the text its decode() gives "
                    f"({ours[:40]!r} vs {theirs[:40]!r}); cross-tokenizer alignment needs a "
                    "byte-level BPE or SentencePiece tokenizer without a text-changing "
                    "normaliser. Use a same-tokenizer student (docs/cross-tokenizer.md)."
                )
            checked += 1
    return checked


def vocabulary_map(teacher: TokenTable, student: TokenTable) -> np.ndarray:
    """Teacher id -> student id where the two strings map one-to-one, else -1.

    A teacher piece matches a student piece when their bytes are equal and each byte string
    occurs once in its own vocabulary; special tokens match by role (eos to eos, bos to bos,
    ...) and then by identical content. This is the map GOLD's exact-KL term uses.
    """
    out = np.full(len(teacher), -1, np.int64)

    def unique_index(table: TokenTable) -> dict[bytes, int]:
        seen: dict[bytes, int] = {}
        dup: set[bytes] = set()
        for idx, piece in enumerate(table.pieces):
            if table.special[idx] or not piece:
                continue
            if piece in seen:
                dup.add(piece)
            seen[piece] = idx
        return {p: i for p, i in seen.items() if p not in dup}

    s_index = unique_index(student)
    for piece, t_id in unique_index(teacher).items():
        s_id = s_index.get(piece)
        if s_id is not None:
            out[t_id] = s_id
    for t_id, s_id in special_map(teacher, student).items():
        out[t_id] = s_id
    return out


def special_map(teacher: TokenTable, student: TokenTable) -> dict[int, int]:
    """Teacher special id -> student special id: by role first, then by identical content."""
    out: dict[int, int] = {}
    for content, t_id in teacher.special_content.items():
        if content in student.special_content:
            out[t_id] = student.special_content[content]
    for role in ROLES:
        t_id, s_id = teacher.special_ids.get(role), student.special_ids.get(role)
        if (
            t_id is not None
            and s_id is not None
            and t_id not in _claimed_by_earlier_role(teacher, role)
        ):
            out[t_id] = s_id
    return out


def _claimed_by_earlier_role(table: TokenTable, role: str) -> set[int]:
    """Ids already mapped by a role listed before ``role`` (SmolLM2's pad is its eos)."""
    earlier = ROLES[: ROLES.index(role)]
    return {table.special_ids[r] for r in earlier if r in table.special_ids}
