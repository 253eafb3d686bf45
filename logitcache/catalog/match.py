"""Match catalog entries against a corpus by content, the way a build would see it.

A corpus fingerprint is a hash of the tokenised documents and the packing settings, so
computing it means reading and tokenising the corpus (no teacher forward). It is computed once
per distinct (seq_len, packing, max_tokens, format, text_field) among the candidate entries.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

log = logging.getLogger(__name__)


def corpus_fingerprint(
    corpus: Sequence[str],
    *,
    teacher: str,
    seq_len: int,
    packing: str = "pack",
    max_tokens: int | None = None,
    format: str = "auto",
    text_field: str = "text",
    unit_tokens: int = 65536,
    storage_options: str | Mapping[str, Any] | None = None,
) -> tuple[str, dict[str, Any]]:
    """(fingerprint, tokenizer identity) of ``corpus`` as ``logitcache build`` would plan it."""
    from logitcache.capture.options import PackingOptions
    from logitcache.capture.plan import corpus_fingerprint as fingerprint_of
    from logitcache.teachers import TeacherConfig, load_tokenizer, tokenizer_identity

    tokenizer = load_tokenizer(TeacherConfig(teacher=teacher))
    packing_options = PackingOptions(
        seq_len=seq_len,
        mode=packing,
        max_tokens=max_tokens,
        format=format,
        text_field=text_field,
        unit_tokens=unit_tokens,
    )
    fingerprint = fingerprint_of(
        list(corpus), packing_options, tokenizer, storage_options=storage_options
    )
    return fingerprint, tokenizer_identity(tokenizer, len(tokenizer))


def filter_by_corpus(
    entries: list[dict[str, Any]],
    corpus: Sequence[str],
    *,
    teacher: str,
    storage_options: str | Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The entries whose tokenizer and corpus fingerprint match ``corpus`` read with ``teacher``."""
    memo: dict[tuple, tuple[str, dict[str, Any]]] = {}
    out = []
    for e in entries:
        params = (
            e.get("seq_len"),
            e.get("packing") or "pack",
            e.get("corpus_max_tokens"),
            e.get("corpus_format") or "auto",
            e.get("corpus_text_field") or "text",
            e.get("unit_tokens") or 65536,
        )
        if params[0] is None:
            continue
        if params not in memo:
            seq_len, packing, max_tokens, fmt, text_field, unit_tokens = params
            memo[params] = corpus_fingerprint(
                corpus,
                teacher=teacher,
                seq_len=int(seq_len),
                packing=packing,
                max_tokens=max_tokens,
                format=fmt,
                text_field=text_field,
                unit_tokens=int(unit_tokens),
                storage_options=storage_options,
            )
            log.info("corpus fingerprint for %s: %s", params, memo[params][0][:12])
        fingerprint, tok = memo[params]
        if e.get("vocab_sha256") not in (None, tok["vocab_sha256"]):
            continue
        if e.get("corpus_fingerprint") == fingerprint:
            out.append(e)
    return out


__all__ = ["corpus_fingerprint", "filter_by_corpus"]
