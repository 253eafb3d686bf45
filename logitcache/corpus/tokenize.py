"""Turn documents into token ids plus a per-token *target* flag.

``targets[j]`` says whether token j should be predicted in training: every token of plain text,
only assistant tokens of a chat (the rendered assistant turn including its end-of-turn marker).
Packing shifts this by one to the per-position ``loss_mask`` of the ALIGNMENT contract.

Chat masks come from character spans: each assistant turn's span is the difference between the
chat template rendered up to the turn (with the generation prompt) and rendered through it,
less trailing whitespace (so content plus end-of-turn marker, as ``{% generation %}`` marks); tokens
are mapped to characters with the fast tokenizer's offsets. Templates that are not prefix-stable
fall back to locating the turn's content in the rendered text.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from logitcache.corpus.readers import Document
from logitcache.errors import CorpusError

log = logging.getLogger(__name__)


@dataclass
class TokenizedDoc:
    """Token ids (int32) and per-token target flags (bool) of one document."""

    ids: np.ndarray
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


def _render(tokenizer, messages, **kwargs) -> str:
    return tokenizer.apply_chat_template(list(messages), tokenize=False, **kwargs)


def assistant_spans(tokenizer, messages: Sequence[dict[str, str]], where: str) -> tuple[str, list]:
    """The rendered chat and the character spans ``[start, end)`` of its assistant turns."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise CorpusError(
            f"{where}: chat data needs a tokenizer with a chat template, and the teacher's "
            "tokenizer has none; render the chats to text yourself and use --format jsonl"
        )
    full = _render(tokenizer, messages)
    spans: list[tuple[int, int]] = []
    cursor = 0
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        span = None
        if i > 0:
            try:
                before = _render(tokenizer, messages[:i], add_generation_prompt=True)
                through = _render(tokenizer, messages[: i + 1])
            except Exception:  # noqa: BLE001 - a template may reject partial chats
                before = through = ""
            if before and full.startswith(through) and through.startswith(before):
                span = (len(before), len(through))
        if span is None:  # not prefix-stable: find the content after the previous turn
            pos = full.find(m["content"], cursor)
            if pos < 0:
                raise CorpusError(
                    f"{where}: cannot locate assistant turn {i} in the rendered chat; the chat "
                    "template rewrites message content"
                )
            span = (pos, pos + len(m["content"]))
        start, end = span
        while end > start and full[end - 1].isspace():  # the newline after end-of-turn
            end -= 1
        spans.append((start, end))
        span = (start, end)
        cursor = span[1]
    return full, spans


def tokenize_chat(tokenizer, doc: Document) -> TokenizedDoc:
    if not getattr(tokenizer, "is_fast", False):
        raise CorpusError(
            f"{doc.where}: chat loss masks need a fast tokenizer (offsets); this teacher's "
            "tokenizer is a slow one"
        )
    text, spans = assistant_spans(tokenizer, doc.messages, doc.where)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    ids = np.asarray(enc["input_ids"], dtype=np.int32)
    starts = np.asarray([s for s, _ in enc["offset_mapping"]], dtype=np.int64)
    targets = np.zeros(len(ids), dtype=np.bool_)
    for a, b in spans:
        targets |= (starts >= a) & (starts < b)
    if not targets.any():
        log.debug("%s: chat has no assistant tokens; it adds context only", doc.where)
    return TokenizedDoc(ids=ids, targets=targets)


# Plain texts longer than this are tokenised piece by piece (cut before a whitespace, where
# byte-level pre-tokenisers split anyway): one 10 MB document would otherwise hold per-token
# Python objects and offsets for millions of tokens at once (gigabytes of peak memory).
LONG_DOC_CHARS = 1 << 18


def split_long_text(text: str, limit: int = LONG_DOC_CHARS) -> list[str]:
    """``text`` in pieces of at most ~``limit`` characters, each cut just before whitespace."""
    pieces, start = [], 0
    while len(text) - start > limit:
        cut = start + limit
        ws = max(
            text.rfind(" ", start + limit // 2, cut), text.rfind("\n", start + limit // 2, cut)
        )
        cut = ws if ws > start else cut
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces


def _tokenize_plain(tokenizer, text: str) -> np.ndarray:
    parts = [
        np.asarray(tokenizer(piece, add_special_tokens=False, verbose=False)["input_ids"], np.int32)
        for piece in split_long_text(text)
    ]
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


def tokenize_documents(tokenizer, docs: Sequence[Document]) -> list[TokenizedDoc]:
    """Tokenise a batch (plain texts in one fast batched call). No special tokens are added:
    packing inserts EOS between documents, chat templates bring their own markers."""
    out: list[TokenizedDoc | None] = [None] * len(docs)
    plain = [i for i, d in enumerate(docs) if d.messages is None]
    short = [i for i in plain if len(docs[i].text) <= LONG_DOC_CHARS]
    if short:
        enc = tokenizer([docs[i].text for i in short], add_special_tokens=False, verbose=False)
        for i, ids in zip(short, enc["input_ids"]):
            arr = np.asarray(ids, dtype=np.int32)
            out[i] = TokenizedDoc(ids=arr, targets=np.ones(len(arr), dtype=np.bool_))
    for i in plain:
        if out[i] is None:
            arr = _tokenize_plain(tokenizer, docs[i].text)
            out[i] = TokenizedDoc(ids=arr, targets=np.ones(len(arr), dtype=np.bool_))
    for i, d in enumerate(docs):
        if d.messages is not None:
            out[i] = tokenize_chat(tokenizer, d)
    return out  # type: ignore[return-value]
