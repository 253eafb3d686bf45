"""``lc1``: the compact codec. Per position it keeps the top-k as (rank-coded id, quantised
log-prob) pairs, the tail mass, and the sampled draws, as byte planes that Parquet's zstd packs.

Why this shape (measured on SmolLM2-135M over pydoc text, docs/benchmarks.md):

* Log-probs are quantised with a companding curve (:mod:`logitcache.codecs.quant`) and stored
  as level deltas in probability order: non-negative, mostly 0-2, about 1-2 bits each after
  zstd. With the tail mass stored, a 1/8-nat step adds only ~1e-4-1e-3 nat of KL.
* Ids are renumbered by a frequency-rank table (:mod:`logitcache.codecs.ranks`). Entries with
  the same quantised level are interchangeable in probability order, so within such a *tie
  group* they are sorted by rank and delta-coded; only the first id of each group is coded in
  full. Coarser levels for tiny probabilities make bigger groups, i.e. cheaper ids. The first
  entry (the teacher's argmax) is always a group of its own, so top-1 survives.
* Decoding is a few whole-array numpy passes (cumsum, table lookups), no per-token Python.

``step=0`` is the lossless setting: the exact float32 log-probs and tail in the order given,
with ids rank-coded in full.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from logitcache.codecs.base import Codec, CodecContext, PayloadBatch
from logitcache.codecs.planes import pack_rows, planes_for, unpack_rows
from logitcache.codecs.quant import LogQuantiser
from logitcache.codecs.ranks import DEFAULT_MAX_IDS, RankTable
from logitcache.codecs.util import row_offsets
from logitcache.errors import CodecError

_PREFIX = "lc1_"


def _as_float(name: str, value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise CodecError(f"lc1: {name}={value!r} is not a number") from None


class Lc1Codec(Codec):
    """Parameters: ``step`` (nats, 0 = lossless), ``knee``, ``ratio`` (see quant.py) and
    ``ranks`` (``id`` or a fitted table; see :meth:`calibrate`)."""

    name = "lc1"
    lossless = False  # class default; an instance with step=0 reports lossless=True

    def __init__(
        self,
        *,
        step: float = 0.125,
        knee: float = -5.0,
        ratio: float = 8.0,
        ranks: str = "id",
    ) -> None:
        step, knee, ratio = (
            _as_float(n, v) for n, v in (("step", step), ("knee", knee), ("ratio", ratio))
        )
        if not math.isfinite(step) or step < 0:
            raise CodecError(f"lc1: step={step!r} must be >= 0 nats (0 = lossless, e.g. 0.125)")
        self.quantiser = LogQuantiser(step=step, knee=knee, ratio=ratio) if step > 0 else None
        self.table = RankTable.from_text(ranks)
        self.lossless = step == 0
        super().__init__(step=step, knee=knee, ratio=ratio, ranks=self.table.to_text())

    # -- identity -------------------------------------------------------------------------------
    @property
    def spec(self) -> str:
        p = self.params
        return f"lc1:step={p['step']},knee={p['knee']},ratio={p['ratio']},ranks={p['ranks']}"

    def describe(self) -> dict[str, Any]:
        d = {
            "spec": self.spec,
            "name": self.name,
            "lossless": self.lossless,
            "step": self.params["step"],
            "knee": self.params["knee"],
            "ratio": self.params["ratio"],
            "ranks_listed": int(self.table.listed.size),
            "ranks_sha256": self.table.sha256,
        }
        if self.quantiser is not None:
            d["error_bound"] = (
                "|lp_hat - lp| <= step/2 / slope(min(lp, lp_hat)): step/2 above knee, "
                "ratio*step/2 below; tail as float16"
            )
        return d

    def calibrate(
        self,
        samples: Sequence[dict[str, Any]],
        ctx: CodecContext,
        *,
        max_ids: int = DEFAULT_MAX_IDS,
    ) -> Lc1Codec:
        """A copy whose rank table is fitted on ``samples`` (their top-k and sampled ids).

        Call once before the cache header is written, on a deterministic sample of the build
        (e.g. its first unit); a resumed build must reuse the spec from the manifest.
        """
        chunks = []
        for s in samples:
            if ctx.top_k > 0:
                chunks.append(np.asarray(s["topk_ids"]))
            if ctx.rs_samples > 0 and "rs_ids" in s:
                chunks.append(np.asarray(s["rs_ids"])[np.asarray(s["rs_counts"]) > 0])
        table = RankTable.fit(chunks, max_ids=max_ids)
        return Lc1Codec(
            step=self.params["step"],
            knee=self.params["knee"],
            ratio=self.params["ratio"],
            ranks=table.to_text(),
        )

    # -- layout ---------------------------------------------------------------------------------
    def fields(self, ctx: CodecContext) -> list[pa.Field]:
        names = []
        if ctx.top_k > 0:
            names += ["ids", "lp", "tail"]
        if ctx.rs_samples > 0:
            names += ["rs_n", "rs_ids", "rs_counts"]
        return [pa.field(_PREFIX + n, pa.large_binary(), nullable=False) for n in names]

    @staticmethod
    def _count_planes(ctx: CodecContext) -> int:
        return planes_for(ctx.rs_samples)

    # -- encode ---------------------------------------------------------------------------------
    def encode(self, batch: PayloadBatch, ctx: CodecContext) -> dict[str, pa.Array]:
        _check_ctx(ctx)
        pos = row_offsets(batch.lengths)
        rank_of, _ = self.table.maps(ctx.vocab_size)
        id_planes = planes_for(ctx.vocab_size - 1)
        out: dict[str, pa.Array] = {}
        if ctx.top_k > 0:
            k = ctx.top_k
            ids = np.asarray(batch.topk_ids)
            lps = np.asarray(batch.topk_logprobs, np.float32)
            n = batch.num_positions
            if ids.shape != (n, k) or lps.shape != (n, k):
                raise CodecError(
                    f"lc1: top-k arrays must be [{n}, {k}], got {ids.shape}, {lps.shape}"
                )
            ranks = rank_of[_check_ids(ids, ctx.vocab_size)]
            tail = np.asarray(batch.tail_logmass, np.float32)
            if self.quantiser is None:
                lp_vals, lp_planes = lps.view(np.uint32), 4
                tail_vals, tail_planes = tail.view(np.uint32), 4
                id_vals = ranks
            else:
                levels = self.quantiser.quantise(lps)
                id_vals, levels = _tie_group_code(ranks, levels)
                lp_vals = np.diff(levels, axis=1, prepend=np.uint16(0))  # wraps mod 2**16
                lp_planes = 2
                if np.isnan(tail).any():
                    raise CodecError("lc1: tail_logmass contains NaN")
                tail_vals, tail_planes = tail.astype(np.float16).view(np.uint16), 2
            out[_PREFIX + "ids"] = pack_rows(id_vals, pos * k, id_planes)
            out[_PREFIX + "lp"] = pack_rows(lp_vals, pos * k, lp_planes)
            out[_PREFIX + "tail"] = pack_rows(tail_vals, pos, tail_planes)
        if ctx.rs_samples > 0:
            nunique = np.asarray(batch.rs_nunique, np.int64)
            counts = np.asarray(batch.rs_counts, np.int64)
            rs_ids = _check_ids(np.asarray(batch.rs_ids), ctx.vocab_size)
            if (counts < 1).any() or (counts > ctx.rs_samples).any():
                raise CodecError(f"lc1: sampled counts must be in [1, {ctx.rs_samples}]")
            if (nunique < 0).any() or int(nunique.sum()) != len(rs_ids):
                raise CodecError("lc1: rs_nunique does not match the number of sampled ids")
            deltas, counts = _sorted_delta_code(rank_of[rs_ids], counts, nunique)
            draw_pos = row_offsets(nunique)[pos]
            cp = self._count_planes(ctx)
            out[_PREFIX + "rs_n"] = pack_rows(nunique, pos, cp)
            out[_PREFIX + "rs_ids"] = pack_rows(deltas, draw_pos, id_planes)
            out[_PREFIX + "rs_counts"] = pack_rows(counts, draw_pos, cp)
        return out

    # -- decode ---------------------------------------------------------------------------------
    def decode(
        self, columns: dict[str, pa.Array], lengths: np.ndarray, ctx: CodecContext
    ) -> PayloadBatch:
        _check_ctx(ctx)
        lengths = np.asarray(lengths, np.int64)
        n = int(lengths.sum())
        _, id_of = self.table.maps(ctx.vocab_size)
        id_planes = planes_for(ctx.vocab_size - 1)
        id_dtype = np.uint16 if id_planes <= 2 else np.uint32
        k = ctx.top_k
        if k > 0:
            raw_ids = unpack_rows(columns[_PREFIX + "ids"], lengths * k, id_planes, id_dtype)
            raw_ids = raw_ids.reshape(n, k)
            if self.quantiser is None:
                lps = unpack_rows(columns[_PREFIX + "lp"], lengths * k, 4, np.uint32)
                lps = lps.view(np.float32).reshape(n, k)
                tail = unpack_rows(columns[_PREFIX + "tail"], lengths, 4, np.uint32)
                tail = tail.view(np.float32)
                ranks = raw_ids
            else:
                dq = unpack_rows(columns[_PREFIX + "lp"], lengths * k, 2, np.uint16)
                levels = _row_cumsum(dq.reshape(n, k))
                lps = self.quantiser.dequantise(levels)
                tail = unpack_rows(columns[_PREFIX + "tail"], lengths, 2, np.uint16)
                tail = tail.view(np.float16).astype(np.float32)
                ranks = _tie_group_decode(raw_ids, levels)
            ids = _to_ids(ranks, id_of, ctx.vocab_size)
        else:
            ids = np.zeros((n, 0), np.int32)
            lps = np.zeros((n, 0), np.float32)
            tail = np.zeros(n, np.float32)
        batch = PayloadBatch(lengths=lengths, topk_ids=ids, topk_logprobs=lps, tail_logmass=tail)
        if ctx.rs_samples > 0:
            cp = self._count_planes(ctx)
            cdtype = np.uint8 if cp == 1 else np.uint32
            nunique = unpack_rows(columns[_PREFIX + "rs_n"], lengths, cp, cdtype).astype(np.int64)
            per_row = np.diff(row_offsets(nunique)[row_offsets(lengths)])
            deltas = unpack_rows(columns[_PREFIX + "rs_ids"], per_row, id_planes, id_dtype)
            counts = unpack_rows(columns[_PREFIX + "rs_counts"], per_row, cp, cdtype)
            starts = np.zeros(len(deltas), bool)
            starts[row_offsets(nunique)[:-1][nunique > 0]] = True
            ranks = _segmented_cumsum(deltas, starts)
            batch.rs_nunique = nunique
            batch.rs_ids = _to_ids(ranks, id_of, ctx.vocab_size)
            batch.rs_counts = counts.astype(np.int32)
        return batch


# -- helpers -----------------------------------------------------------------------------------
def _check_ctx(ctx: CodecContext) -> None:
    if ctx.vocab_size < 1 or ctx.vocab_size > 2**31 - 1:
        raise CodecError(f"lc1: vocab_size={ctx.vocab_size} must be in [1, 2**31)")
    if ctx.rs_samples > 0xFFFF:
        raise CodecError(f"lc1: rs_samples={ctx.rs_samples} must be <= 65535")
    if ctx.top_k < 0 or ctx.top_k > ctx.vocab_size:
        raise CodecError(f"lc1: top_k={ctx.top_k} must be in [0, vocab_size={ctx.vocab_size}]")


def _check_ids(ids: np.ndarray, vocab_size: int) -> np.ndarray:
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise CodecError(f"lc1: ids outside the vocabulary [0, {vocab_size})")
    return ids.astype(np.int64, copy=False)


def _to_ids(ranks: np.ndarray, id_of: np.ndarray, vocab_size: int) -> np.ndarray:
    if ranks.size and int(ranks.max()) >= vocab_size:
        raise CodecError(f"lc1: decoded id rank {int(ranks.max())} >= vocab_size {vocab_size}")
    return id_of[ranks]


def _tie_group_code(ranks: np.ndarray, levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order each position by (level, rank) with slot 0 pinned; delta-code ranks in groups.

    Returns the coded ids (rank at a group start, rank - previous rank inside a group) and the
    levels in the stored order.
    """
    n, k = ranks.shape
    key = (levels.astype(np.int64) << 32) | ranks.astype(np.int64)
    key[:, 0] = -1  # the argmax stays first, in a group of its own
    order = np.argsort(key, axis=1, kind="stable")
    r = np.take_along_axis(ranks, order, axis=1)
    lv = np.take_along_axis(levels, order, axis=1)
    coded = r.copy()
    if k > 2:
        inside = lv[:, 2:] == lv[:, 1:-1]
        coded[:, 2:] = np.where(inside, r[:, 2:] - r[:, 1:-1], r[:, 2:])
    return coded, lv


def _row_cumsum(dq: np.ndarray) -> np.ndarray:
    """Per-position running sum (mod 2**16) via one flat cumsum: numpy's axis=1 cumsum is
    a strided loop and ~20x slower."""
    total = np.cumsum(dq.reshape(-1), dtype=np.uint16).reshape(dq.shape)
    if total.size:
        base = total[:, 0] - dq[:, 0]
        total -= base[:, None]
    return total


def _group_starts(levels: np.ndarray) -> np.ndarray:
    starts = np.ones(levels.shape, bool)
    if levels.shape[1] > 2:
        np.not_equal(levels[:, 2:], levels[:, 1:-1], out=starts[:, 2:])
    return starts


def _segmented_cumsum(deltas: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Cumulative sums that restart at every ``starts`` flag (flat, vectorised).

    The running total never decreases (deltas >= 0, uint64), so the total just before each
    group start can be carried forward with ``maximum.accumulate`` instead of a gather.
    """
    flat = deltas.reshape(-1).astype(np.uint64)
    total = np.cumsum(flat, dtype=np.uint64)
    st = starts.reshape(-1)
    before = np.where(st, total - flat, np.uint64(0))
    np.maximum.accumulate(before, out=before)
    total -= before
    return total.astype(np.uint32).reshape(deltas.shape)


def _tie_group_decode(coded: np.ndarray, levels: np.ndarray) -> np.ndarray:
    return _segmented_cumsum(coded, _group_starts(levels))


def _sorted_delta_code(
    ranks: np.ndarray, counts: np.ndarray, nunique: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per position, sort the sampled ids by rank and delta-code them (first one in full)."""
    if ranks.size == 0:
        return ranks.astype(np.uint32), counts
    owner = np.repeat(np.arange(len(nunique)), nunique)
    order = np.lexsort((ranks, owner))
    r = ranks[order]
    c = counts[order]
    first = np.zeros(len(r), bool)
    first[row_offsets(nunique)[:-1][nunique > 0]] = True
    prev = np.concatenate([[0], r[:-1]])
    return np.where(first, r, r - prev), c
