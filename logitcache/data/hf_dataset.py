"""``to_hf_dataset``: a cache as a Hugging Face ``datasets.IterableDataset`` of decoded rows.

The shards' soft-label columns are the codec's (lc1 blobs are opaque to ``datasets``), so this
decodes them with the cache's own codec and streams one row per sequence. Columns:
``sample_id``, ``input_ids [T]``, ``loss_mask [T]``, ``topk_ids [T][k]``, ``topk_logprobs
[T][k]``, ``tail_logmass [T]`` and, when the cache holds draws, ``rs_ids`` / ``rs_counts
[T][U]``. The shard list is the generator's sharding key, so ``datasets`` splits the manifest's
shards across DataLoader workers and ``split_dataset_by_node`` ranks by shard.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from logitcache.data.split import split_mask
from logitcache.format import Cache, open_cache

_INT = "int32"
_FLOAT = "float32"


def _features(manifest):
    from datasets import Features, List, Value

    cols = {
        "sample_id": Value("string"),
        "input_ids": List(Value(_INT)),
        "loss_mask": List(Value("bool")),
        "topk_ids": List(List(Value(_INT))),
        "topk_logprobs": List(List(Value(_FLOAT))),
        "tail_logmass": List(Value(_FLOAT)),
    }
    if manifest.rs_samples > 0:
        cols["rs_ids"] = List(List(Value(_INT)))
        cols["rs_counts"] = List(List(Value(_INT)))
    return Features(cols)


def _rows(
    shards: list[int], uri: str, storage_options: Any, split: str | None, heldout_fraction: float
) -> Iterator[dict[str, Any]]:
    cache = open_cache(uri, storage_options)
    listed = cache.shards
    for i in shards:
        for table in cache.iter_row_groups(listed[i]):
            samples = list(cache.decode(table))
            keep = (
                np.ones(len(samples), bool)
                if split is None
                else split_mask([s["sample_id"] for s in samples], split, heldout_fraction)
            )
            for s, k in zip(samples, keep):
                if k:
                    yield {name: _plain(v) for name, v in s.items()}


def _plain(value: Any) -> Any:
    # nested Python lists: what ``datasets`` yields for List(List(...)) features either way
    return value if isinstance(value, str) else np.asarray(value).tolist()


def to_hf_dataset(
    cache_or_uri: str | Cache,
    split: str | None = None,
    *,
    storage_options: Any = None,
    heldout_fraction: float = 0.05,
):
    """The cache's decoded rows as a ``datasets.IterableDataset`` (``pip install datasets``).

    ``split``: None for every row, or ``"train"`` / ``"heldout"`` as in
    :class:`~logitcache.data.CacheDataset` (a hash of the sample id, ``heldout_fraction``).
    """
    from datasets import IterableDataset

    if split is not None and split not in ("train", "heldout", "all"):
        from logitcache.errors import ConfigError

        raise ConfigError(f"split must be None, 'all', 'train' or 'heldout'; got {split!r}")
    if isinstance(cache_or_uri, Cache):
        cache = cache_or_uri
        uri = cache.store.uri
    else:
        uri = str(cache_or_uri)
        cache = open_cache(uri, storage_options)
    return IterableDataset.from_generator(
        _rows,
        features=_features(cache.manifest),
        gen_kwargs={
            "shards": list(range(len(cache.shards))),
            "uri": uri,
            "storage_options": storage_options,
            "split": None if split == "all" else split,
            "heldout_fraction": heldout_fraction,
        },
    )
