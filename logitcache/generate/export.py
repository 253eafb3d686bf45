"""Export a generated cache's text as JSONL, for plain sequence-level fine-tuning.

The text is decoded from the cache itself (``input_ids`` + ``loss_mask``) with the teacher's
tokenizer rather than kept in a sidecar: nothing can drift out of step with the shards, the
export works on any copy of the cache, and a resumed run needs no extra commit step. The
tokenizer is the one the manifest names, checked against the recorded vocabulary hash.

One line per sample, in cache order::

    {"sample_id": "...-0000", "prompt_id": "...", "index": 0,
     "prompt": "<rendered prompt, exactly what the teacher saw>", "response": "...",
     "prompt_tokens": 12, "response_tokens": 40}

``prompt`` keeps the chat template's markers; ``response`` drops special tokens (the
end-of-turn marker). Re-rendering ``{"role": "assistant", "content": response}`` after the
original messages reproduces the training text for chat SFT.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import fsspec
import numpy as np

from logitcache.errors import ManifestError, VocabularyMismatchError
from logitcache.generate.prompts import split_sample_id

log = logging.getLogger(__name__)


def _tokenizer(manifest, tokenizer):
    from logitcache.teachers import TeacherConfig, load_tokenizer, vocab_sha256

    if tokenizer is None:
        teacher = manifest.teacher
        tokenizer = load_tokenizer(
            TeacherConfig(
                teacher=str(teacher.get("name") or teacher.get("source")),
                revision=teacher.get("revision") if teacher.get("revision") else None,
            )
        )
    want = manifest.tokenizer.get("vocab_sha256")
    if want and vocab_sha256(tokenizer) != want:
        raise VocabularyMismatchError(
            "the tokenizer does not match the cache's vocabulary (vocab_sha256 differs); pass "
            "the teacher's own tokenizer to export_jsonl(..., tokenizer=...)"
        )
    return tokenizer


def iter_texts(
    cache_uri: str, *, storage_options: Any = None, tokenizer: Any = None
) -> Iterator[dict[str, Any]]:
    """The export records of a generated cache, in cache order."""
    from logitcache.format import open_cache

    cache = open_cache(cache_uri, storage_options=storage_options)
    if cache.manifest.capture.get("source") != "generate":
        raise ManifestError(
            f"{cache_uri} was not made by `logitcache generate` (no generation section); only "
            "generated caches have prompt/response structure to export"
        )
    tok = _tokenizer(cache.manifest, tokenizer)
    for s in cache.iter_samples():
        mask = np.asarray(s["loss_mask"], dtype=bool)
        ids = np.asarray(s["input_ids"])
        first = int(np.argmax(mask)) if mask.any() else len(ids) - 1
        prompt_len = first + 1
        key, index = split_sample_id(str(s["sample_id"]))
        yield {
            "sample_id": str(s["sample_id"]),
            "prompt_id": key,
            "index": index,
            "prompt": tok.decode(ids[:prompt_len].tolist(), skip_special_tokens=False),
            "response": tok.decode(ids[prompt_len:].tolist(), skip_special_tokens=True),
            "prompt_tokens": prompt_len,
            "response_tokens": int(len(ids) - prompt_len),
        }


def export_jsonl(
    cache_uri: str, out: str, *, storage_options: Any = None, tokenizer: Any = None
) -> int:
    """Write the cache's prompts and responses to ``out`` (local path or fsspec URI) as
    JSONL; returns the number of lines written."""
    count = 0
    with fsspec.open(out, "w", encoding="utf-8") as fh:
        for rec in iter_texts(cache_uri, storage_options=storage_options, tokenizer=tokenizer):
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
            count += 1
    log.info("exported %d prompt/response pairs to %s", count, out)
    return count
