"""The cache as a Ray Dataset, for Ray Train users.

``ray.data.read_parquet`` reads exactly the shards the manifest lists (never a directory
listing, which could include uncommitted files), and ``map_batches`` applies the cache's codec,
so rows come out as the same per-sample arrays :class:`~logitcache.data.CacheDataset` yields.
Decoded top-k arrays are ragged across rows (``[T, k]``), which Ray stores as variable-shaped
tensor columns.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from logitcache.codecs import CodecContext, get_codec
from logitcache.format import open_cache
from logitcache.format.shard import decode_table

_ARRAY_FIELDS = (
    "input_ids",
    "loss_mask",
    "topk_ids",
    "topk_logprobs",
    "tail_logmass",
    "rs_ids",
    "rs_counts",
)


def _ragged(arrays: list[np.ndarray]) -> np.ndarray:
    out = np.empty(len(arrays), dtype=object)
    out[:] = arrays
    return out


class _Decode:
    """Picklable batch decoder: pyarrow table of shard rows -> columns of per-sample arrays."""

    def __init__(self, codec_spec: str, ctx: CodecContext):
        self.codec = get_codec(codec_spec)
        self.ctx = ctx

    def __call__(self, table: pa.Table) -> dict[str, Any]:
        samples = list(decode_table(table, self.codec, self.ctx))
        out: dict[str, Any] = {"sample_id": np.array([s["sample_id"] for s in samples])}
        for name in _ARRAY_FIELDS:
            if samples and name in samples[0]:
                out[name] = _ragged([np.ascontiguousarray(s[name]) for s in samples])
        return out


def ray_dataset(
    uri: str,
    *,
    storage_options: str | dict[str, Any] | None = None,
    decode: bool = True,
    batch_size: int = 16,
    **read_parquet_args: Any,
):
    """A ``ray.data.Dataset`` over a cache's committed shards, decoded unless ``decode=False``.

    Extra keyword arguments go to ``ray.data.read_parquet`` (e.g. ``override_num_blocks``).
    """
    import ray.data
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    cache = open_cache(uri, storage_options)
    store = cache.store
    paths = [store.path(s.path) for s in cache.shards]
    fs = PyFileSystem(FSSpecHandler(store.fs))
    ds = ray.data.read_parquet(paths, filesystem=fs, **read_parquet_args)
    if not decode:
        return ds
    return ds.map_batches(
        _Decode(cache.codec.spec, cache.ctx),
        batch_format="pyarrow",
        batch_size=batch_size,
        zero_copy_batch=True,
    )
