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
* Sampled draws: per position the distinct ids in rank order (first in full, then gaps) and
  their counts minus one. No per-position count is stored: a position ends where its counts
  reach N, which saved ~0.6 B/token at N=50 (23.3 B/token on SmolLM2).
* Encoding and decoding run as compiled loops (:mod:`logitcache.codecs.kernels`): one pass
  per stream and row group, ~2-5 ns per top-k entry, where whole-array numpy needed ~10 passes.

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
from logitcache.codecs.planes import blob_parts, check_blobs, pack_rows, planes_for, unpack_rows
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

    @property
    def fitted(self) -> bool:
        return bool(self.table.listed.size)

    def calibrate(
        self,
        samples: Sequence[dict[str, Any]],
        ctx: CodecContext,
        *,
        max_ids: int = DEFAULT_MAX_IDS,
    ) -> Lc1Codec:
        """A copy whose rank table is fitted on ``samples`` (their top-k and sampled ids).

        Call once, on a deterministic sample of the build (its first unit), before any shard
        is encoded; a resumed build must reuse the spec from the manifest.
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
            names += ["rs_ids", "rs_counts"]
        return [pa.field(_PREFIX + n, pa.large_binary(), nullable=False) for n in names]

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
            ranks = np.take(rank_of, _check_ids(ids, ctx.vocab_size))
            tail = np.asarray(batch.tail_logmass, np.float32)
            if self.quantiser is None:
                lp_vals, lp_planes = lps.view(np.uint32), 4
                tail_vals, tail_planes = tail.view(np.uint32), 4
                id_vals = ranks
            else:
                levels = self.quantiser.quantise(lps)
                id_vals = np.empty((n, k), np.uint32)
                lp_vals = np.empty((n, k), np.uint16)
                _kernels().encode_topk(ranks, levels, id_vals, lp_vals)
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
            _check_draws(nunique, counts, len(rs_ids), ctx.rs_samples)
            deltas, counts = _sorted_delta_code(np.take(rank_of, rs_ids), counts, nunique)
            draw_pos = row_offsets(nunique)[pos]
            out[_PREFIX + "rs_ids"] = pack_rows(deltas, draw_pos, id_planes)
            out[_PREFIX + "rs_counts"] = pack_rows(counts - 1, draw_pos, _count_planes(ctx))
        return out

    # -- decode ---------------------------------------------------------------------------------
    def decode(
        self, columns: dict[str, pa.Array], lengths: np.ndarray, ctx: CodecContext
    ) -> PayloadBatch:
        _check_ctx(ctx)
        lengths = np.ascontiguousarray(lengths, np.int64)
        n = int(lengths.sum())
        _, id_of = self.table.maps(ctx.vocab_size)
        id_planes = planes_for(ctx.vocab_size - 1)
        k = ctx.top_k
        if k > 0 and self.quantiser is not None:
            ids, lps = self._decode_topk(columns, lengths, k, id_planes, id_of)
            tail = unpack_rows(columns[_PREFIX + "tail"], lengths, 2, np.uint16)
            tail = tail.view(np.float16).astype(np.float32)
        elif k > 0:
            ranks = unpack_rows(columns[_PREFIX + "ids"], lengths * k, id_planes, np.uint32)
            ids = _to_ids(ranks, id_of).reshape(n, k)
            lps = unpack_rows(columns[_PREFIX + "lp"], lengths * k, 4, np.uint32)
            lps = lps.view(np.float32).reshape(n, k)
            tail = unpack_rows(columns[_PREFIX + "tail"], lengths, 4, np.uint32).view(np.float32)
        else:
            ids = np.zeros((n, 0), np.int32)
            lps = np.zeros((n, 0), np.float32)
            tail = np.zeros(n, np.float32)
        batch = PayloadBatch(lengths=lengths, topk_ids=ids, topk_logprobs=lps, tail_logmass=tail)
        if ctx.rs_samples > 0:
            self._decode_sampled(columns, lengths, ctx, id_planes, id_of, batch)
        return batch

    def _decode_topk(self, columns, lengths, k, id_planes, id_of):
        id_offs, id_data = blob_parts(columns[_PREFIX + "ids"])
        lp_offs, lp_data = blob_parts(columns[_PREFIX + "lp"])
        check_blobs(id_offs, lengths * k, id_planes)
        check_blobs(lp_offs, lengths * k, 2)
        n = int(lengths.sum())
        ids = np.empty((n, k), np.int32)
        lps = np.empty((n, k), np.float32)
        status = _kernels().decode_topk(
            id_data,
            np.ascontiguousarray(id_offs),
            id_planes,
            lp_data,
            np.ascontiguousarray(lp_offs),
            lengths,
            k,
            id_of,
            self.quantiser.lut,
            ids.reshape(-1),
            lps.reshape(-1),
        )
        _raise_status(status, len(id_of))
        return ids, lps

    def _decode_sampled(self, columns, lengths, ctx, id_planes, id_of, batch) -> None:
        id_offs, id_data = blob_parts(columns[_PREFIX + "rs_ids"])
        c_offs, c_data = blob_parts(columns[_PREFIX + "rs_counts"])
        cp = _count_planes(ctx)
        sizes = np.diff(id_offs)
        if len(sizes) != len(lengths) or (sizes % id_planes).any():
            raise CodecError(
                f"lc1_rs_ids: expected {len(lengths)} rows of whole {id_planes}-byte entries"
            )
        entries = sizes // id_planes
        check_blobs(c_offs, entries, cp)
        m = int(entries.sum())
        nunique = np.empty(int(lengths.sum()), np.int64)
        rs_ids = np.empty(m, np.int32)
        rs_counts = np.empty(m, np.int32)
        status = _kernels().decode_sampled(
            id_data,
            np.ascontiguousarray(id_offs),
            id_planes,
            c_data,
            np.ascontiguousarray(c_offs),
            cp,
            entries,
            lengths,
            ctx.rs_samples,
            id_of,
            nunique,
            rs_ids,
            rs_counts,
        )
        _raise_status(status, len(id_of))
        batch.rs_nunique, batch.rs_ids, batch.rs_counts = nunique, rs_ids, rs_counts


# -- helpers -----------------------------------------------------------------------------------
def _check_ctx(ctx: CodecContext) -> None:
    if ctx.vocab_size < 1 or ctx.vocab_size > 2**31 - 1:
        raise CodecError(f"lc1: vocab_size={ctx.vocab_size} must be in [1, 2**31)")
    if ctx.rs_samples > 0xFFFF:
        raise CodecError(f"lc1: rs_samples={ctx.rs_samples} must be <= 65535")
    from logitcache.teachers.config import check_label_counts

    check_label_counts(ctx.top_k, ctx.rs_samples, ctx.vocab_size, error=CodecError)


def _kernels():
    from logitcache.codecs import kernels  # numba: imported on first use, not at CLI start

    return kernels


def _count_planes(ctx: CodecContext) -> int:
    return planes_for(ctx.rs_samples - 1)  # counts are stored minus one


def _check_ids(ids: np.ndarray, vocab_size: int) -> np.ndarray:
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise CodecError(f"lc1: ids outside the vocabulary [0, {vocab_size})")
    return ids.astype(np.int64, copy=False)


def _check_draws(nunique: np.ndarray, counts: np.ndarray, num_ids: int, n_draws: int) -> None:
    """Every position holds >= 1 distinct id and its counts sum to N: the decoder relies on
    the sums to find where a position ends."""
    if (nunique < 1).any() or int(nunique.sum()) != num_ids or len(counts) != num_ids:
        raise CodecError("lc1: rs_nunique must be >= 1 per position and match the sampled ids")
    if (counts < 1).any():
        raise CodecError(f"lc1: sampled counts must be in [1, {n_draws}]")
    if len(nunique) and (np.add.reduceat(counts, row_offsets(nunique)[:-1]) != n_draws).any():
        raise CodecError(f"lc1: each position's sampled counts must sum to rs_samples={n_draws}")


def _to_ids(ranks: np.ndarray, id_of: np.ndarray) -> np.ndarray:
    if ranks.size and int(ranks.max()) >= len(id_of):
        _raise_status(_kernels().BAD_RANK, len(id_of))
    return np.take(id_of, ranks)


def _raise_status(status: int, vocab_size: int) -> None:
    k = _kernels()
    if status == k.OK:
        return
    if status == k.BAD_RANK:
        raise CodecError(f"lc1: a decoded id rank is >= vocab_size {vocab_size}; corrupt data")
    if status == k.BAD_SUM:
        raise CodecError("lc1: sampled counts overshoot rs_samples at a position; corrupt data")
    raise CodecError("lc1: sampled entries do not match the row's positions; corrupt data")


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
