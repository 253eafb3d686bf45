"""One shard = one Parquet file, one row per sequence.

Plain columns (every codec): ``sample_id`` string, ``num_tokens`` int32, ``input_ids``
list<int32>, ``loss_mask`` list<bool>. The codec adds its soft-label columns. Samples travel
through the library as dicts of numpy arrays (see :func:`batch_to_samples`); shards are written
with zstd page compression and page checksums, so a flipped byte fails loudly on read.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from logitcache.codecs import Codec, CodecContext, PayloadBatch
from logitcache.codecs.util import flat_list, list_values, row_offsets
from logitcache.errors import ConfigError

BASE_FIELDS = [
    pa.field("sample_id", pa.string(), nullable=False),
    pa.field("num_tokens", pa.int32(), nullable=False),
    pa.field("input_ids", pa.list_(pa.int32())),
    pa.field("loss_mask", pa.list_(pa.bool_())),
]
ROW_GROUP_TOKENS = 256 * 1024  # ~row group size in positions; a loader's unit of work
PARQUET_COMPRESSION = "zstd"
PARQUET_COMPRESSION_LEVEL = 3


def shard_schema(codec: Codec, ctx: CodecContext) -> pa.Schema:
    return pa.schema(BASE_FIELDS + codec.fields(ctx))


def samples_to_batch(samples: Sequence[dict[str, Any]], ctx: CodecContext) -> PayloadBatch:
    """Flatten per-sequence dicts into one :class:`PayloadBatch` (checks shapes on the way)."""
    lengths = np.array([len(s["input_ids"]) for s in samples], dtype=np.int64)
    k = ctx.top_k
    n = int(lengths.sum())
    if k > 0:
        for s, t in zip(samples, lengths):
            if np.shape(s["topk_ids"]) != (t, k) or np.shape(s["topk_logprobs"]) != (t, k):
                raise ConfigError(
                    f"sample {s['sample_id']!r}: topk arrays must be [{t}, {k}], got "
                    f"{np.shape(s['topk_ids'])} and {np.shape(s['topk_logprobs'])}"
                )
        ids = np.concatenate([np.asarray(s["topk_ids"], np.int64) for s in samples])
        lps = np.concatenate([np.asarray(s["topk_logprobs"], np.float32) for s in samples])
        tail = np.concatenate([np.asarray(s["tail_logmass"], np.float32) for s in samples])
    else:
        ids = np.zeros((n, 0), np.int64)
        lps = np.zeros((n, 0), np.float32)
        tail = np.zeros(n, np.float32)
    batch = PayloadBatch(lengths=lengths, topk_ids=ids, topk_logprobs=lps, tail_logmass=tail)
    if ctx.rs_samples > 0:
        nunique, rs_ids, rs_counts = [], [], []
        for s in samples:
            counts = np.asarray(s["rs_counts"])
            ids_ = np.asarray(s["rs_ids"])
            keep = counts > 0
            nunique.append(keep.sum(axis=1))
            rs_ids.append(ids_[keep])
            rs_counts.append(counts[keep])
        batch.rs_nunique = np.concatenate(nunique).astype(np.int64)
        batch.rs_ids = np.concatenate(rs_ids).astype(np.int64)
        batch.rs_counts = np.concatenate(rs_counts).astype(np.int64)
    return batch


def _pad_ragged(nunique: np.ndarray, values: np.ndarray, fill: int) -> np.ndarray:
    """Ragged ``values`` (``nunique[i]`` per position) to a dense ``[N, max]`` array."""
    n = len(nunique)
    width = int(nunique.max()) if n else 0
    out = np.full((n, width), fill, dtype=values.dtype)
    if width:
        mask = np.arange(width)[None, :] < nunique[:, None]
        out[mask] = values
    return out


def batch_to_samples(
    sample_ids: Sequence[str],
    input_ids: np.ndarray,
    loss_mask: np.ndarray,
    batch: PayloadBatch,
) -> Iterator[dict[str, np.ndarray]]:
    """Split a decoded batch back into per-sequence dicts (views, no copies of top-k data)."""
    pos = row_offsets(batch.lengths)
    if batch.has_sampled:
        draw_off = row_offsets(batch.rs_nunique)
    for r, sid in enumerate(sample_ids):
        a, b = int(pos[r]), int(pos[r + 1])
        sample = {
            "sample_id": sid,
            "input_ids": input_ids[a:b],
            "loss_mask": loss_mask[a:b],
            "topk_ids": batch.topk_ids[a:b],
            "topk_logprobs": batch.topk_logprobs[a:b],
            "tail_logmass": batch.tail_logmass[a:b],
        }
        if batch.has_sampled:
            nu = batch.rs_nunique[a:b]
            d0, d1 = int(draw_off[a]), int(draw_off[b])
            sample["rs_ids"] = _pad_ragged(nu, batch.rs_ids[d0:d1].astype(np.int32), 0)
            sample["rs_counts"] = _pad_ragged(nu, batch.rs_counts[d0:d1].astype(np.int32), 0)
        yield sample


def encode_table(samples: Sequence[dict[str, Any]], codec: Codec, ctx: CodecContext) -> pa.Table:
    """Per-sequence dicts -> one arrow table with the shard schema."""
    if not samples:
        raise ConfigError("cannot encode an empty shard")
    batch = samples_to_batch(samples, ctx)
    pos = row_offsets(batch.lengths)
    input_ids = np.concatenate([np.asarray(s["input_ids"], np.int32) for s in samples])
    loss_mask = np.concatenate([np.asarray(s["loss_mask"], np.bool_) for s in samples])
    if input_ids.size and (input_ids.min() < 0 or input_ids.max() >= ctx.vocab_size):
        raise ConfigError(f"input ids outside the vocabulary [0, {ctx.vocab_size})")
    columns: dict[str, pa.Array] = {
        "sample_id": pa.array([str(s["sample_id"]) for s in samples], pa.string()),
        "num_tokens": pa.array(batch.lengths.astype(np.int32)),
        "input_ids": flat_list(input_ids, pos),
        "loss_mask": flat_list(loss_mask, pos),
    }
    columns.update(codec.encode(batch, ctx))
    schema = shard_schema(codec, ctx)
    return pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema)


def decode_table(
    table: pa.Table, codec: Codec, ctx: CodecContext
) -> Iterator[dict[str, np.ndarray]]:
    """Arrow table (a shard, a row group, or a slice) -> per-sequence dicts."""
    lengths = table.column("num_tokens").to_numpy().astype(np.int64)
    input_ids = list_values(table.column("input_ids"), np.int32)
    loss_mask = list_values(table.column("loss_mask"), np.bool_)
    codec_cols = {f.name: table.column(f.name) for f in codec.fields(ctx)}
    batch = codec.decode(codec_cols, lengths, ctx)
    sample_ids = table.column("sample_id").to_pylist()
    yield from batch_to_samples(sample_ids, input_ids, loss_mask, batch)


def table_to_parquet_bytes(table: pa.Table) -> bytes:
    tokens_per_row = max(1, int(table.column("num_tokens").to_numpy().mean())) if len(table) else 1
    sink = io.BytesIO()
    pq.write_table(
        table,
        sink,
        compression=PARQUET_COMPRESSION,
        compression_level=PARQUET_COMPRESSION_LEVEL,
        row_group_size=max(1, ROW_GROUP_TOKENS // tokens_per_row),
        write_page_checksum=True,
        use_dictionary=["sample_id"],
    )
    return sink.getvalue()
