"""The capture stages, as plain code that the local loop and the Ray actors both call.

read -> tokenize -> teacher top-k -> encode -> commit:

- :func:`tokenize_blob` (CPU task): documents -> token ids + target flags.
- :class:`Scorer` (one per teacher worker; loads the teacher once): a unit's rows -> per-row
  soft labels, batched by a token budget. Top-k, tail mass and draws are computed on the
  teacher's device by ``Teacher.score``; only k entries per position come back.
- :func:`write_unit` (CPU task): encode + compress + durable write of one shard; returns the
  :class:`ShardInfo` the driver commits.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from logitcache.capture.transport import pack_rows, unpack_rows
from logitcache.codecs import CodecContext, get_codec
from logitcache.format import ShardInfo, write_shard
from logitcache.format.shard import encode_table
from logitcache.storage import Store

log = logging.getLogger(__name__)


def row_seed(sample_id: str) -> int:
    """Seed of a row's sampled draws: from its id, so a resumed run redraws the same ids."""
    return int.from_bytes(hashlib.sha256(sample_id.encode()).digest()[:8], "little") >> 1


# -- tokenize ----------------------------------------------------------------------------------
def docs_to_json(docs) -> str:
    return json.dumps(
        [{"text": d.text, "messages": d.messages, "where": d.where} for d in docs],
        ensure_ascii=False,
    )


def tokenize_blob(tokenizer, docs_json: str) -> bytes:
    """A JSON list of documents -> packed ``ids``/``targets`` rows (one per document)."""
    from logitcache.corpus import Document, tokenize_documents

    docs = [
        Document(
            text=d["text"],
            messages=tuple(d["messages"]) if d["messages"] is not None else None,
            where=d["where"],
        )
        for d in json.loads(docs_json)
    ]
    toks = tokenize_documents(tokenizer, docs)
    return pack_rows(
        [{"sample_id": str(i), "ids": t.ids, "targets": t.targets} for i, t in enumerate(toks)]
    )


# -- teacher -----------------------------------------------------------------------------------
def token_batches(lengths: Sequence[int], batch_tokens: int) -> list[list[int]]:
    """Row indices grouped so each batch's padded size (rows x longest) stays within budget.

    Rows are taken longest first so that rows of similar length share a batch (less padding);
    a single row longer than the budget forms its own batch.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        new_longest = max(longest, lengths[i])
        if current and new_longest * (len(current) + 1) > batch_tokens:
            batches.append(current)
            current, new_longest = [], lengths[i]
        current.append(i)
        longest = new_longest
    if current:
        batches.append(current)
    return batches


class Scorer:
    """Holds one loaded teacher and scores units with it."""

    def __init__(
        self,
        teacher_config: Any,
        *,
        top_k: int,
        rs_samples: int,
        batch_tokens: int,
        threads: int | None = None,
        teacher: Any = None,
    ):
        if threads:
            import torch

            torch.set_num_threads(threads)
        if teacher is None:
            from logitcache.teachers import load_teacher

            teacher = load_teacher(teacher_config)
        self.teacher = teacher
        self.top_k = top_k
        self.rs_samples = rs_samples
        self.batch_tokens = batch_tokens
        self.busy_s = 0.0
        self.tokens = 0
        self.ready_at = time.time()  # wall clock, comparable across the machines of a cluster

    def score_rows(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Rows (sample_id, input_ids, loss_mask) -> the same rows with their soft labels."""
        t0 = time.perf_counter()
        out: list[dict[str, Any] | None] = [None] * len(rows)
        lengths = [len(r["input_ids"]) for r in rows]
        for idx in token_batches(lengths, self.batch_tokens):
            scored = self.teacher.score(
                [np.asarray(rows[i]["input_ids"], np.int32) for i in idx],
                top_k=self.top_k,
                rs_samples=self.rs_samples,
                seeds=[row_seed(rows[i]["sample_id"]) for i in idx],
            )
            for i, payload in zip(idx, scored):
                out[i] = {**rows[i], **payload}
        self.busy_s += time.perf_counter() - t0
        self.tokens += sum(lengths)
        return out  # type: ignore[return-value]

    def score_blob(self, blob: bytes) -> bytes:
        return pack_rows(self.score_rows(unpack_rows(blob)))


@dataclass(frozen=True, kw_only=True)
class ScoreStage:
    """Picklable recipe for the scorer of one teacher worker, so an executor can build it in
    this process or inside a Ray actor.

    ``factory`` is :class:`Scorer` for ``build``; ``generate`` passes its own scorer class,
    which takes the same arguments plus ``options`` (e.g. its generation parameters).
    """

    teacher: Any  # TeacherConfig
    top_k: int
    rs_samples: int
    batch_tokens: int
    threads: int | None = None
    factory: type = Scorer
    options: dict[str, Any] = field(default_factory=dict)

    def build(self, *, threads: int | None = None):
        """The scorer; ``threads`` overrides the stage's torch threads (an executor's share)."""
        return self.factory(
            self.teacher,
            top_k=self.top_k,
            rs_samples=self.rs_samples,
            batch_tokens=self.batch_tokens,
            threads=threads if threads is not None else self.threads,
            **self.options,
        )


# -- encode + write ----------------------------------------------------------------------------
def write_unit(
    store: Store, unit: str, samples: list[dict[str, Any]], codec_spec: str, ctx: CodecContext
) -> ShardInfo:
    """Encode and durably write one unit's shard (not yet visible: the driver commits it)."""
    codec = get_codec(codec_spec)
    table = encode_table(samples, codec, ctx)
    return write_shard(store, unit, table)


def write_blob(store: Store, unit: str, blob: bytes, codec_spec: str, ctx: CodecContext) -> str:
    """:func:`write_unit` on a transport blob; returns the ShardInfo as JSON (Ray-friendly)."""
    info = write_unit(store, unit, unpack_rows(blob), codec_spec, ctx)
    return json.dumps({**asdict(info), "pid": os.getpid()})


@dataclass(frozen=True)
class WriteStage:
    """Picklable recipe of the encode + write stage: where shards go and how they are coded."""

    store: Store
    codec_spec: str
    ctx: CodecContext

    def write(self, unit: str, samples: list[dict[str, Any]]) -> ShardInfo:
        return write_unit(self.store, unit, samples, self.codec_spec, self.ctx)

    def write_blob(self, unit: str, blob: bytes) -> str:
        return write_blob(self.store, unit, blob, self.codec_spec, self.ctx)
